"""``marketarena tune --backend ray`` on the two-node Ray cluster (``ray_cluster`` in
tests/conftest.py): a tiny study on Ray Tune, Optuna's sampler and ASHA, the same search
space, objective and MLflow nesting as the Optuna path."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from marketarena.training.config import load_config
from marketarena.training.search_spaces import SPACES

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
# tiny trials (two rollouts, validated twice) over a narrowed space, as in test_tune.py
FAST = (
    "algo.total_timesteps=256",
    "training.eval_every=128",
    "training.checkpoint_every=1000000",
    "training.progress_bar=false",
    "tuning.search={n_steps_exp: 5, batch_size_exp: 5, n_epochs: 1, window: 8, net_arch: tiny}",
)


def test_tiny_study_on_ray_tune(ray_cluster, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = ray_cluster.cli(*_tune_args(tmp_path, 3), cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    out = proc.stdout
    complete, pruned = _summary(out, 3)

    # the best config trains as it stands, with the fixed parameters and the best's values
    best_path = tmp_path / "out" / "smoke" / "best_config.yaml"
    best = load_config(best_path)
    assert best.env.window == 8 and list(best.algo.net_arch) == [32]
    assert best.algo.hyperparameters["n_steps"] == 32
    header = best_path.read_text().splitlines()[0]
    assert header.startswith(f"# best of {complete} complete trials of study smoke: sharpe ")
    sampled = yaml.safe_load(best_path.read_text())["algo"]["hyperparameters"]
    space = SPACES["ppo"]["learning_rate"]
    assert space.low <= sampled["learning_rate"] <= space.high

    # MLflow: the study's run, every trial's training nested under it, none left running
    client = mlflow.MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "marketarena-training"]
    runs = client.search_runs([experiment.experiment_id])
    (study,) = [r for r in runs if r.data.tags.get("kind") == "tuning"]
    assert study.data.tags["backend"] == "ray"
    assert study.data.metrics["trials/complete"] == complete
    assert study.data.metrics["trials/pruned"] == pruned
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    assert len(nested) == 3
    assert all(r.info.run_name.startswith("smoke-t") for r in nested)
    # none left running; a trial ASHA stopped: its training run KILLED, tagged why
    assert {r.info.status for r in nested} <= {"FINISHED", "KILLED"}
    killed = [r for r in nested if r.info.status == "KILLED"]
    assert len(killed) == pruned, (out, [r.data.tags for r in nested])  # no NaN here
    assert all(r.data.tags["stopped"] == "pruned: stopped by ASHA" for r in killed)
    assert {r.data.params["env.window"] for r in nested} == {"8"}


def test_storage_is_the_optuna_backends(tmp_path):
    """--storage with --backend ray: one line (Ray Tune keeps its own state)."""
    from rich.console import Console

    from marketarena.cli import main

    pytest.importorskip("ray")
    console = Console(record=True, width=300)
    code = main(
        [
            "tune",
            "--config",
            str(SMOKE),
            "--storage",
            str(tmp_path / "j.journal"),
            "--backend",
            "ray",
            "--output",
            str(tmp_path),
        ],
        console=console,
    )
    assert code == 1
    assert console.export_text().strip() == (
        "error: tuning.storage (--storage) is the Optuna backend's: Ray Tune keeps a study's "
        "state under its output folder; leave it out with --backend ray"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [("{not json", "Expecting property name"), ('{"experiments": ["ray"]}', "'finished'")],
)
def test_a_malformed_ray_study_record_is_one_line(tmp_path, monkeypatch, text, why):
    """A study folder whose ray_study.json is broken: one line naming the file and what is
    wrong, before Ray starts or an MLflow run is made; the file is left as it was."""
    from rich.console import Console

    from marketarena.cli import main

    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)  # where the default MLflow store would be made
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    record = tmp_path / "smoke" / "ray_study.json"
    record.parent.mkdir()
    record.write_text(text)
    console = Console(record=True, width=300)
    args = ["tune", "--config", str(SMOKE), "--backend", "ray", "--output", str(tmp_path)]
    code = main(args, console=console)
    out = console.export_text().strip()
    assert code == 1 and "Traceback" not in out
    assert out.startswith(f"error: {record} is not a Ray Tune study's record: "), out
    assert why in out
    assert record.read_text() == text
    assert not (tmp_path / "mlflow.db").exists()


def _tune_args(tmp_path: Path, n_trials: int) -> list[str]:
    args = ["tune", "--config", str(SMOKE), "--n-trials", str(n_trials)]
    args += ["--output", str(tmp_path / "out")]
    for override in FAST:
        args += ["--set", override]
    return args


def _summary(out: str, n: int) -> tuple[int, int]:
    """The study's printed summary: ``n`` trials numbered 0 to n-1, each complete or pruned,
    at least one complete, none failed; returns (complete, pruned)."""
    counts = re.search(rf": {n} trials \((\d) complete, (\d) pruned, (\d) failed\)", out)
    assert counts, out
    complete, pruned, failed = map(int, counts.groups())
    assert complete >= 1 and complete + pruned == n and failed == 0, out
    trials = re.findall(r"^trial (\d): (complete|pruned) ", out, flags=re.MULTILINE)
    assert [int(k) for k, _ in trials] == list(range(n)), out
    return complete, pruned


def test_a_finished_ray_study_runs_more_trials(ray_cluster, tmp_path):
    """Rerunning a finished study adds ``n_trials`` more trials, as the Optuna path does: a
    second experiment (``ray-2``) whose sampler is warm-started with the first's trials; the
    summary, the best config and the one MLflow study run cover all of them, numbered in
    order. (Ray Tune runs trials asynchronously, so the sampled values are not those of one
    4-trial run: what is guaranteed is the count, the numbering and the single study run.)"""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = ray_cluster.cli(*_tune_args(tmp_path, 2), cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    assert re.search(r": 2 trials \(", first.stdout), first.stdout
    second = ray_cluster.cli(*_tune_args(tmp_path, 2), cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    out = second.stdout
    complete, _ = _summary(out, 4)
    study_dir = tmp_path / "out" / "smoke"
    record = json.loads((study_dir / "ray_study.json").read_text())
    assert record["experiments"] == ["ray", "ray-2"] and record["finished"]
    ids = [r["ray_trial_id"] for r in record["trials"]]
    assert len(set(ids)) == 4 and None not in ids
    header = (study_dir / "best_config.yaml").read_text().splitlines()[0]
    assert header.startswith(f"# best of {complete} complete trials of study smoke: sharpe ")

    client = mlflow.MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "marketarena-training"]
    runs = client.search_runs([experiment.experiment_id])
    (study,) = [r for r in runs if r.data.tags.get("kind") == "tuning"]
    assert study.info.run_id == record["mlflow_run_id"]
    assert study.data.metrics["trials/complete"] == complete
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    assert len(nested) == 4
    assert {r.info.status for r in nested} <= {"FINISHED", "KILLED"}


def test_an_interrupted_ray_study_resumes(ray_cluster, tmp_path):
    """Ctrl-C while Ray Tune runs: exit 130 and one line saying how to resume; the same
    command then restores the experiment (``Tuner.restore``): trials that had finished keep
    their results, the others run again, and the study has exactly ``n_trials`` trials, none
    lost or doubled. Ray Tune's trials run asynchronously, so a resumed Ray study is NOT
    bit-identical to an uninterrupted one (the Optuna journal path with n_jobs=1 is)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # 4 trials on 2 CPUs: two rounds, so that the first trial's results come out while
    # others still run (Ray Tune writes a trial's result.json as it reports, or at its end)
    argv = [ray_cluster.python, "-m", "marketarena.cli", *_tune_args(tmp_path, 4)]
    argv += ["--backend", "ray", "--address", ray_cluster.address]
    driver = subprocess.Popen(
        ray_cluster.command(*argv),
        cwd=tmp_path,
        env=ray_cluster.environment(MLFLOW_TRACKING_URI=uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    experiment = tmp_path / "out" / "smoke" / "ray"
    deadline = time.monotonic() + 120
    try:
        # the first trial has reported a validation score
        while not any(p.stat().st_size for p in experiment.glob("*/result.json")):
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no trial reported within 120 s"
            time.sleep(0.2)
        driver.send_signal(signal.SIGINT)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, (stdout, stderr)
    assert stdout.strip().splitlines()[-1] == (
        "interrupted: the study is saved; run the same command again to resume"
    )
    assert "Traceback" not in stdout + stderr, stderr
    assert "Tuner.restore" not in stderr, stderr  # Ray Tune's hint: not the CLI's way
    finished_before = {}
    for path in experiment.glob("*/result.json"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("final"):
                finished_before[row["trial_id"]] = row["score"]

    resumed = ray_cluster.cli(*_tune_args(tmp_path, 4), cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    out = resumed.stdout
    _summary(out, 4)
    record = json.loads((tmp_path / "out" / "smoke" / "ray_study.json").read_text())
    assert record["experiments"] == ["ray"] and record["finished"]
    ids = [r["ray_trial_id"] for r in record["trials"]]
    assert len(set(ids)) == 4 and None not in ids
    values = {r["ray_trial_id"]: r["value"] for r in record["trials"]}
    for trial_id, score in finished_before.items():  # kept, not run again
        assert values[trial_id] == pytest.approx(score)
