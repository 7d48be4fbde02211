"""``marketarena tune --backend ray`` on the two-node Ray cluster (``ray_cluster`` in
tests/conftest.py): a tiny study on Ray Tune, Optuna's sampler and ASHA, the same search
space, objective and MLflow nesting as the Optuna path."""

from __future__ import annotations

import re
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
    args = ["tune", "--config", str(SMOKE), "--n-trials", "3", "--output", str(tmp_path / "out")]
    for override in FAST:
        args += ["--set", override]
    proc = ray_cluster.cli(*args, cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    out = proc.stdout
    counts = re.search(r"3 trials \((\d) complete, (\d) pruned, (\d) failed\)", out)
    assert counts, out
    complete, pruned, failed = map(int, counts.groups())
    assert complete >= 1 and complete + pruned == 3 and failed == 0, out
    trials = re.findall(r"^trial (\d): (complete|pruned) ", out, flags=re.MULTILINE)
    assert [n for n, _ in trials] == ["0", "1", "2"]

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
