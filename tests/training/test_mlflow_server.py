"""Training against a real MLflow tracking server (``mlflow server`` on 127.0.0.1).

The server runs in a subprocess with a SQLite backend and proxied artifacts, both in a temp
folder. A smoke run trains with ``MLFLOW_TRACKING_URI`` pointing at it; the test reads the run
back through the REST API (params, metric histories, tags, artifacts), registers the logged
pyfunc model and evaluates it in-process as ``models:/...`` and as ``runs:/...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from marketarena.cli import main
from marketarena.training.config import load_config
from marketarena.training.train import TrainResult, train

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 10.0
MODEL_NAME = "marketarena-smoke"
VALIDATION = ("2014-01-02", "2015-12-31")  # configs/smoke.yaml's validation split
OVERRIDES = (
    "algo.total_timesteps=1024",
    "training.eval_every=512",
    "training.checkpoint_every=1024",
    "training.progress_bar=false",
    "mlflow.experiment=server-test",
)


@dataclass
class Server:
    uri: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the CLI and its uvicorn child); SIGKILL to
    whatever of the group is left after the deadline."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_DEADLINE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_DEADLINE_S)


def _start_server(root: Path) -> Server:
    """``mlflow server`` on a free port; returns once ``/health`` answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # no background job runner (huey consumers): not needed, and they outlive the CLI
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    for attempt in range(3):  # another process may take the port between probe and bind
        port = _free_port()
        log = root / f"server-{attempt}.log"
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        server = Server(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline and process.poll() is None:
            if _healthy(server.uri):
                return server
            time.sleep(0.2)
        _stop(process)
        if "address already in use" not in server.log_tail().lower():
            break
    pytest.fail(f"mlflow server did not answer on {server.uri}:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    import mlflow

    running = _start_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", running.uri)
            try:
                yield running
            finally:
                # mlflow.set_tracking_uri (called by training) keeps the URI process-wide
                mlflow.set_tracking_uri(None)
    finally:
        _stop(running.process)


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory) -> TrainResult:
    out = tmp_path_factory.mktemp("runs")
    config = load_config(
        ROOT / "configs" / "smoke.yaml", [*OVERRIDES, f"training.output_dir={out}"]
    )
    result = train(config)
    assert result.run_id, "an MLflow run was expected"
    return result


def _evaluate(agent: str, output: Path) -> dict:
    console = Console(record=True, width=250)
    code = main(
        [
            "evaluate",
            "--agent",
            agent,
            "--start",
            VALIDATION[0],
            "--end",
            VALIDATION[1],
            "--no-baselines",
            "--benchmark",
            "none",
            "--output",
            str(output),
        ],
        console=console,
    )
    assert code == 0, console.export_text()
    (row,) = json.loads((output / "metrics.json").read_text())["agents"]
    return row


@pytest.mark.slow
def test_training_run_is_logged_to_the_server(server, trained):
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server.uri)
    run = client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "server-test"

    # params: the resolved config, flattened, and the split dates
    params = run.data.params
    assert params["algo.name"] == "ppo"
    assert params["algo.total_timesteps"] == "1024"
    assert params["algo.n_envs"] == "4"
    assert params["env.window"] == "8"
    assert params["env.splits.validation_start"] == "2014-01-02"
    assert params["training.eval_every"] == "512"
    assert params["seed"] == "0"
    assert params["split.validation.start"] == "2014-01-02"

    # metrics: validation every 512 steps, SB3's rollout/ and train/ values every iteration
    def steps(key: str) -> list[int]:
        return [m.step for m in client.get_metric_history(trained.run_id, key)]

    assert steps("eval/sharpe") == [512, 1024]
    history = client.get_metric_history(trained.run_id, "eval/sharpe")
    assert [m.value for m in history] == pytest.approx([e["sharpe"] for e in trained.evaluations])
    assert steps("rollout/ep_rew_mean") == [256, 512, 768, 1024]
    assert steps("train/loss") == [512, 768, 1024]  # an update is logged with the next rollout
    assert {
        "train/policy_gradient_loss",
        "train/value_loss",
        "train/approx_kl",
        "eval/total_return",
        "eval/max_drawdown",
    } <= set(run.data.metrics)

    # tags
    tags = run.data.tags
    assert tags["algo"] == "ppo"
    assert tags["data"] == "sp500_20"
    assert tags["kind"] == "training"
    assert len(tags["git_sha"]) == 40 or tags["git_sha"] == "unknown"

    # artifacts, listed and downloaded through the server
    def listed(path: str | None = None) -> set[str]:
        return {a.path for a in client.list_artifacts(trained.run_id, path)}

    assert {"config.yaml", "manifest.json", "state.json"} <= listed()
    assert "best_model/model.zip" in listed("best_model")
    assert "validation/report.html" in listed("validation")
    local = Path(client.download_artifacts(trained.run_id, "config.yaml", str(server.log.parent)))
    assert local.read_text() == (trained.run_dir / "config.yaml").read_text()
    # MLflow 3 keeps the pyfunc model as a logged model linked to the run, not under the
    # run's artifacts; runs:/<id>/model resolves to it
    (logged,) = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{trained.run_id}'"
    )
    assert logged.name == "model"
    mlmodel = Path(
        mlflow.artifacts.download_artifacts(
            f"runs:/{trained.run_id}/model/MLmodel", tracking_uri=server.uri
        )
    )
    assert "python_function" in mlmodel.read_text()
    assert logged.model_id in mlmodel.read_text()
    manifest = json.loads((trained.run_dir / "manifest.json").read_text())
    assert tags["git_sha"] == manifest["git_sha"]


@pytest.mark.slow
def test_registered_model_and_run_uri_evaluate_the_same(server, trained, tmp_path):
    import mlflow

    version = mlflow.register_model(f"runs:/{trained.run_id}/model", MODEL_NAME)
    assert version.version == "1" and version.run_id == trained.run_id
    by_name = _evaluate(f"models:/{MODEL_NAME}/1", tmp_path / "registered")
    by_run = _evaluate(f"runs:/{trained.run_id}/model", tmp_path / "run")
    local = _evaluate(str(trained.best_model_path.parent), tmp_path / "local")
    assert by_name["agent"].endswith(f"@models:/{MODEL_NAME}/1")
    assert by_run["agent"].endswith(f"@run:{trained.run_id[:8]}")
    for key in ("sharpe", "total_return", "max_drawdown", "volatility", "annual_turnover"):
        assert by_name[key] == by_run[key] == local[key], key
    # and the same as the best model's validation score during training
    assert by_run["sharpe"] == pytest.approx(trained.best_validation["sharpe"])
