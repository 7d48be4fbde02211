"""``marketarena bench`` on a tiny budget: the anchors score 1 and 0, the files parse, the
command prints its table, MLflow holds a parent run with a nested run per job, and bad input
is one clear line.

The main bench (one PPO from a tiny config, 2,048 steps, plus baselines and the anchors, on
Momentum x 2 seeds, MLflow on a SQLite file) runs once per module in a temporary folder.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from marketarena.cli import main
from marketarena.envs.tasks import get_task
from marketarena.evaluation.task_scores import growth, normalised_score, run_on_split
from marketarena.training import bench
from marketarena.training.bench import PLANTED, BenchConfig, run_bench
from marketarena.training.config import load_config

TINY = """\
name: tiny
env:
  window: 8
  episode_length: 64
algo:
  name: ppo
  total_timesteps: 100000
  n_envs: 2
  net_arch: [16]
  hyperparameters: {n_steps: 64, batch_size: 64, n_epochs: 2}
training:
  eval_every: 1024
  checkpoint_every: 1024
"""
TIMESTEPS = 2048
SEEDS = (0, 1)
pytestmark = pytest.mark.usefixtures("reset_mlflow_uri")


def run_cli(*args: str) -> tuple[int, str]:
    console = Console(record=True, width=400)  # wide: one line stays one line
    code = main(list(args), console=console)
    return code, console.export_text()


@dataclass
class TinyBench:
    out: Path
    tiny: Path
    uri: str
    code: int
    text: str


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> TinyBench:
    import mlflow

    root = tmp_path_factory.mktemp("bench")
    tiny = root / "tiny.yaml"
    tiny.write_text(TINY)
    out = root / "out"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        try:
            code, text = run_cli(
                "bench",
                "--agent",
                "reference:Momentum",
                "--agent",
                "baseline:Momentum",
                "--agent",
                "random",
                "--agent",
                f"ppo:{tiny}",
                "--task",
                "Momentum",
                "--seeds",
                str(len(SEEDS)),
                "--timesteps",
                str(TIMESTEPS),
                "--reps",
                "200",
                "--output",
                str(out),
                "--mlflow",
            )
        finally:
            mlflow.set_tracking_uri(None)  # the bench sets it process-wide
    return TinyBench(out, tiny, uri, code, text)


def rows_of(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["rows"]


AGENTS = ["reference:Momentum", "baseline:Momentum", "random", "ppo:tiny", "reference", "baseline"]


# ------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_command_prints_the_table_and_exits_0(tiny_bench):
    assert tiny_bench.code == 0, tiny_bench.text
    text = tiny_bench.text
    for header in (
        "score (median)",
        "IQM 95% interval",
        "turnover/yr",
        "reference turnover/yr",
        "costs/yr",
    ):
        assert header in text
    for agent in AGENTS:
        assert f"{agent}: IQM " in text, agent
    assert "P(random > ppo:tiny) = " in text
    assert "P(reference > baseline) = 1.00 [1.00, 1.00]" in text
    assert f"wrote {tiny_bench.out}" in text and "MLflow run " in text


@pytest.mark.slow
def test_anchors_score_one_and_zero(tiny_bench):
    rows = rows_of(tiny_bench.out)
    assert [r["agent"] for r in rows[:: len(SEEDS)]] == AGENTS
    for row in rows:
        if row["agent"] in ("reference", "reference:Momentum"):
            assert row["score"] == 1.0, row
        if row["agent"] in ("baseline", "baseline:Momentum"):
            assert row["score"] == 0.0, row
    # the same numbers as a fresh backtest of the spec on the test split
    random_rows = [r for r in rows if r["agent"] == "random"]
    for row in random_rows:
        fresh = growth(run_on_split("random", "Momentum", row["seed"]))
        assert row["growth"] == pytest.approx(fresh, rel=1e-12)
        assert row["score"] == pytest.approx(normalised_score("Momentum", fresh), rel=1e-12)
    assert random_rows[0]["growth"] != random_rows[1]["growth"]  # the seed reaches the agent


@pytest.mark.slow
def test_files_are_written_and_parse(tiny_bench):
    out = tiny_bench.out
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert settings["seeds"] == list(SEEDS)
    assert settings["config"]["tasks"] == ["Momentum"]
    assert settings["config"]["timesteps"] == TIMESTEPS
    assert len(settings["git_sha"]) in (40, len("unknown"))
    task = get_task("Momentum")
    assert settings["tasks"]["Momentum"]["data_sha256"] == task.market().content_hash()
    assert settings["tasks"]["Momentum"]["splits"]["test"] == list(task.splits()["test"])
    assert settings["mlflow_run_id"]
    assert results["anchors"]["Momentum"]["reference"]["spec"] == "signal:Momentum"
    rows = results["rows"]
    assert len(rows) == len(AGENTS) * len(SEEDS)
    for row in rows:
        for key in bench.ROW_METRICS:
            assert row[key] is not None and np.isfinite(row[key]), (row["agent"], key)
        assert row["annual_costs"] >= 0 and row["max_drawdown"] <= 0
    with (out / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["agent"] for r in table] == [r["agent"] for r in rows]
    assert float(table[0]["score"]) == rows[0]["score"]
    aggregates = json.loads((out / "aggregates.json").read_text())
    assert aggregates["scored_tasks"] == ["Momentum"]
    assert set(aggregates["agents"]) == set(AGENTS)
    reference = aggregates["agents"]["reference"]
    assert reference["iqm"] == reference["iqm_low"] == reference["iqm_high"] == 1.0
    assert aggregates["agents"]["baseline"]["optimality_gap"] == 1.0
    ref_turnover = results["anchors"]["Momentum"]["reference"]["annual_turnover"]
    assert reference["annual_turnover"] == ref_turnover  # turnover beside the score
    per_task = aggregates["per_task"]["random"]["Momentum"]
    assert per_task["iqm_low"] <= per_task["iqm"] <= per_task["iqm_high"]
    assert per_task["reference_turnover"] == ref_turnover
    pairs = {(p["x"], p["y"]) for p in aggregates["probability_of_improvement"]}
    assert len(pairs) == len(AGENTS) * (len(AGENTS) - 1)
    assert (out / "performance_profiles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "ppo:tiny" in page and "<table>" in page


@pytest.mark.slow
def test_rl_agent_trains_on_the_task_and_is_scored_on_test(tiny_bench):
    rows = [r for r in rows_of(tiny_bench.out) if r["agent"] == "ppo:tiny"]
    assert [r["seed"] for r in rows] == list(SEEDS)
    for row in rows:
        assert row["kind"] == "rl" and row["timesteps"] == TIMESTEPS
        model = Path(row["model"])
        assert model.is_relative_to(tiny_bench.out / "runs") and (model / "model.zip").is_file()
        run_dir = model.parent
        config = load_config(run_dir / "config.yaml")
        assert config.env.data == "marketarena/Momentum-v0" and config.seed == row["seed"]
        assert config.algo.total_timesteps == TIMESTEPS and config.env.window == 8
        manifest = json.loads((run_dir / "manifest.json").read_text())
        splits = get_task("Momentum").splits()
        for name in ("train", "validation"):
            assert tuple(manifest["splits"][name].values()) == splits[name]


@pytest.mark.slow
def test_mlflow_parent_run_with_a_nested_run_per_job(tiny_bench):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tiny_bench.uri)
    experiment = client.get_experiment_by_name("marketarena-bench")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("kind") == "bench"]
    assert len(parents) == 1 and parents[0].info.run_name == "bench"
    parent = parents[0]
    assert (
        parent.info.run_id
        == json.loads((tiny_bench.out / "results.json").read_text())["settings"]["mlflow_run_id"]
    )
    assert parent.data.metrics["bench/reference/iqm"] == 1.0
    jobs = [r for r in runs if r.data.tags.get("kind") == "bench_job"]
    assert len(jobs) == len(AGENTS) * len(SEEDS)
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert {(r.data.params["agent"], r.data.params["seed"]) for r in jobs} == {
        (a, str(s)) for a in AGENTS for s in SEEDS
    }
    for job in jobs:
        assert job.data.params["task"] == "Momentum"
        assert {"test/score", "test/growth", "test/annual_turnover"} <= set(job.data.metrics)
    # each PPO training run is nested under its job's run
    trainings = [r for r in runs if r.data.tags.get("kind") == "training"]
    ppo_jobs = {r.info.run_id for r in jobs if r.data.params["agent"] == "ppo:tiny"}
    assert len(trainings) == len(SEEDS)
    assert {r.data.tags["mlflow.parentRunId"] for r in trainings} == ppo_jobs


# ----------------------------------------------------------------------- the library
@pytest.mark.slow
def test_two_tasks_untrained_policy_and_progress(tmp_path, monkeypatch):
    """Without MLflow nothing is logged; aggregates span the planted tasks; the progress
    callback counts every job; ``untrained:ppo`` comes from configs/bench/ppo.yaml."""
    monkeypatch.chdir(tmp_path)
    calls = []
    config = BenchConfig(
        agents=("untrained:ppo", "equal_weight"),
        tasks=("Momentum", "SP500"),
        seeds=2,
        reps=100,
        output=tmp_path / "out",
    )
    report = run_bench(config, progress=lambda *a: calls.append(a))
    n_jobs = 4 * 2 * 2  # (2 agents + 2 anchors) x 2 tasks x 2 seeds
    assert [c[0] for c in calls] == list(range(n_jobs + 1))
    assert {c[1] for c in calls} == {n_jobs}
    assert calls[0][2] == "untrained:ppo on Momentum, seed 0"
    assert not (tmp_path / "mlflow.db").exists()
    assert report.scored_tasks == ("Momentum",)  # SP500 has no known optimum
    assert report.score_matrix("equal_weight").shape == (2, 1)
    assert report.per_task["reference"]["SP500"]["median"] == 1.0  # equal weight vs cash
    assert report.per_task["equal_weight"]["SP500"]["median"] == 1.0
    untrained = [r for r in report.rows if r["agent"] == "untrained:ppo"]
    assert {r["timesteps"] for r in untrained} == {0}
    assert all(np.isfinite(r["score"]) for r in untrained)
    assert len(report.table()) == 4 * 2 and report.lines()[0].startswith("untrained:ppo: IQM")


def test_task_groups_and_seeds():
    assert BenchConfig().task_names() == PLANTED and len(PLANTED) == 6
    assert BenchConfig(tasks="all").task_names() == (*PLANTED, "SP500")
    assert BenchConfig(tasks=("marketarena/Noise-v0", "LeadLag")).task_names() == (
        "Noise",
        "LeadLag",
    )
    assert BenchConfig().seed_list() == (0, 1, 2, 3, 4)
    assert BenchConfig(seeds=(3, 7)).seed_list() == (3, 7)


def test_bench_agent_kinds(tmp_path):
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY)
    ppo = bench.resolve_agent("ppo")
    assert (ppo.kind, ppo.algo, ppo.config_path.name) == ("rl", "ppo", "ppo.yaml")
    assert ppo.config_path.parent.parts[-2:] == ("configs", "bench")
    for algo in ("a2c", "sac", "td3"):
        assert load_config(bench.resolve_agent(algo).config_path).algo.name == algo
    assert bench.resolve_agent(f"ppo:{tiny}").name == "ppo:tiny"
    assert bench.resolve_agent("untrained:sac").kind == "untrained"
    assert bench.resolve_agent("equal_weight:5").kind == "spec"
    assert bench.resolve_agent("signal:LeadLag").task == "LeadLag"
    mismatch = BenchConfig(agents=(f"a2c:{tiny}",), tasks=("Momentum",), seeds=1)
    with pytest.raises(ValueError, match="trains ppo, not a2c"):
        mismatch.validate()


def test_missing_bench_config_names_the_files(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench, "BENCH_CONFIGS", Path("configs") / "nowhere")
    with pytest.raises(FileNotFoundError) as info:
        bench.resolve_agent("ppo")
    message = str(info.value)
    assert str(tmp_path / "configs" / "nowhere" / "ppo.yaml") in message
    assert "ppo:path/to/config.yaml" in message


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--task", "Nope"), "unknown task 'Nope'; the tasks are: marketarena/Momentum-v0"),
        (("--seeds", "0"), "seeds must be >= 1, got 0"),
        (("--agent", "nope"), "unknown agent 'nope'; use ppo, a2c, sac, td3, recurrent_ppo, "),
        (("--agent", "ppo:missing.yaml"), "config file not found: missing.yaml"),
        (("--agent", "untrained:dqn"), "expected untrained:<algo>"),
        (("--agent", "signal:Momentum", "--task", "LeadLag"), "belongs to task Momentum"),
        (("--timesteps", "0"), "timesteps must be >= 1"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = run_cli("bench", *args, "--output", str(tmp_path / "out"))
    assert code == 1
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], text
    assert not (tmp_path / "out").exists()  # nothing ran


def test_validation_split_scores_against_validation_anchors(tmp_path, monkeypatch):
    """``--split validation``: every job runs over the validation split and is scored
    against the anchors there, so settings can be compared without touching the test split."""
    monkeypatch.chdir(tmp_path)
    args = ("--agent", "equal_weight", "--task", "Momentum", "--seeds", "1", "--reps", "50")
    code, text = run_cli("bench", *args, "--split", "validation", "--output", "out")
    assert code == 0, text
    assert "normalised score on the validation split" in text
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["settings"]["config"]["split"] == "validation"
    assert results["anchors"]["Momentum"]["split"] == "validation"
    rows = {r["agent"]: r for r in results["rows"]}
    assert rows["reference"]["score"] == 1.0 and rows["baseline"]["score"] == 0.0
    fresh = growth(run_on_split("equal_weight", "Momentum", 0, "validation"))
    assert rows["equal_weight"]["growth"] == pytest.approx(fresh, rel=1e-12)
    assert fresh != growth(run_on_split("equal_weight", "Momentum", 0))  # not the test split
    assert "validation" in (tmp_path / "out" / "report.html").read_text()


def test_an_unknown_split_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        run_cli("bench", "--split", "train", "--output", "out")
    assert info.value.code == 2 and "invalid choice: 'train'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="split must be one of"):
        BenchConfig(split="train").validate()
