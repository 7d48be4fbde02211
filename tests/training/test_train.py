"""Training end to end on configs/smoke.yaml: every algorithm, the run folder, the validation
score cross-checked by a fresh backtest, the untouched test split, determinism, early stopping,
checkpoints, resuming a killed run, the ``marketarena train`` command and MLflow.

Every run happens in a temporary folder with MLflow either off or on a SQLite file there.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from marketarena.agents.registry import make_agent
from marketarena.agents.sb3_agent import SB3Agent, algorithm_class
from marketarena.cli import main
from marketarena.envs.core import PortfolioCore
from marketarena.envs.data import resolve_data
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.envs.vector_env import PortfolioVectorEnv
from marketarena.evaluation.runner import run_backtest
from marketarena.training.config import Config, load_config
from marketarena.training.train import (
    Trainer,
    TrainingInterrupted,
    TrainResult,
    load_universe,
    make_model,
    make_training_env,
    split_ranges,
    steps_learn_will_take,
    train,
)

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
# configs/smoke.yaml's splits, as the bundled calendar resolves them
TRAIN = ("2010-01-04", "2013-12-31")
VALIDATION = ("2014-01-02", "2015-12-31")
TEST_START = "2016-01-04"
QUIET = ("training.progress_bar=false",)
NO_MLFLOW = (*QUIET, "mlflow.enabled=false")
OFF_POLICY = "algo.hyperparameters={learning_starts: 64, batch_size: 32, buffer_size: 4000}"
ALGORITHMS = {
    "ppo": (),
    "a2c": ("env.action_mapping=discrete", "algo.hyperparameters={n_steps: 16}"),
    "sac": (OFF_POLICY,),
    "td3": (OFF_POLICY,),
}
METRICS = ("sharpe", "sortino", "total_return", "max_drawdown", "volatility", "annual_turnover")
POLL_DEADLINE_S = 120.0
# what the ``marketarena`` console script runs
CLI = "from marketarena.cli import main; raise SystemExit(main())"
pytestmark = pytest.mark.usefixtures("reset_mlflow_uri")


def smoke(*overrides: str) -> Config:
    return load_config(SMOKE, overrides)


def state_dict(model_path: Path, algo: str) -> dict:
    return algorithm_class(algo).load(model_path, device="cpu").policy.state_dict()


def same_parameters(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created once: creating one runs MLflow's schema
    migrations (seconds); tests copy it (:func:`fresh_store`) to get a store of their own."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    assert path.is_file()
    return path


def fresh_store(template: Path, folder: Path) -> str:
    """A copy of the empty store in ``folder``; returns its tracking URI."""
    shutil.copyfile(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def no_report(monkeypatch):
    """Skip the validation report at the end of a run (plots and bootstrap intervals take
    seconds) in tests about something else; the report itself is checked for every
    algorithm."""
    monkeypatch.setattr(Trainer, "validation_report", lambda self, model: self.run_dir)


def fresh_validation_metrics(run_dir: Path, seed: int = 0) -> dict[str, float]:
    """The best model, loaded from disk, backtested over the validation dates recorded in the
    run's manifest with the env settings of its config.yaml: nothing shared with the trainer."""
    config = load_config(run_dir / "config.yaml")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    split = manifest["splits"]["validation"]
    data = resolve_data(config.env.data)
    if config.env.universe:
        data = data.select(config.env.universe)
    spec = {
        "data": data,
        "window": config.env.window,
        "features": config.env.features,
        "rules": config.env.rules,
    }
    agent = SB3Agent.from_file(run_dir / "best")
    return run_backtest(agent, spec, split["start"], split["end"], seed=seed).metrics()


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step_*"))


@dataclass
class PpoRun:
    """The shared PPO run: MLflow on (SQLite in ``root``), a secret in the environment, and
    every env built during training recorded."""

    result: TrainResult
    config: Config
    root: Path
    uri: str
    secret: str
    built: list[tuple[str, str | None, str | None]]


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory, mlflow_db) -> PpoRun:
    import mlflow

    root = tmp_path_factory.mktemp("ppo")
    uri = fresh_store(mlflow_db, root)
    secret = f"sk-test-{uuid.uuid4().hex}"
    built: list[tuple[str, str | None, str | None]] = []

    def recording(cls):
        original = cls.__init__

        def init(self, *args, **kwargs):
            built.append((cls.__name__, kwargs.get("start"), kwargs.get("end")))
            original(self, *args, **kwargs)

        return init

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("OPENAI_API_KEY", secret)
        for cls in (PortfolioEnv, PortfolioVectorEnv, PortfolioCore):
            mp.setattr(cls, "__init__", recording(cls))
        # an absolute output_dir: the result's paths stay valid after the chdir is undone
        config = smoke(
            *QUIET,
            "algo.total_timesteps=512",
            "training.eval_every=128",
            "training.checkpoint_every=128",
            f"training.output_dir={root / 'runs'}",
            "mlflow.registered_model=smoke-ppo",
        )
        try:
            result = train(config)
        finally:
            mlflow.set_tracking_uri(None)  # training sets it process-wide
    return PpoRun(result, config, root, uri, secret, built)


# ------------------------------------------------------------------ every algorithm
def check_run(result: TrainResult, config: Config) -> None:
    run = result.run_dir
    algo = config.algo.name
    assert result.timesteps == config.algo.total_timesteps
    assert not result.stopped_early
    # the run folder
    assert load_config(run / "config.yaml") == config
    manifest = json.loads((run / "manifest.json").read_text())
    data = resolve_data(config.env.data).select(config.env.universe)
    assert manifest["data"]["sha256"] == data.content_hash()
    assert len(manifest["data"]["sha256"]) == 64
    assert manifest["seed"] == config.seed
    assert manifest["algorithm"] == algo
    assert manifest["splits"]["train"] == {"start": TRAIN[0], "end": TRAIN[1]}
    assert manifest["splits"]["validation"] == {"start": VALIDATION[0], "end": VALIDATION[1]}
    assert manifest["splits"]["test"]["start"] == TEST_START
    assert result.model_path == run / "model" / "model.zip"
    assert result.best_model_path == run / "best" / "model.zip"
    for folder in ("model", "best"):
        for name in ("model.zip", "agent.json", "vecnormalize.pkl"):
            assert (run / folder / name).is_file(), f"{folder}/{name}"
    assert json.loads((run / "best" / "agent.json").read_text())["algorithm"] == algo
    assert "<html" in (run / "validation" / "report.html").read_text().lower()
    # checkpoints: the latest two, each complete
    folders = checkpoint_dirs(run)
    assert 1 <= len(folders) <= 2
    assert not list((run / "checkpoints").glob("*.tmp"))
    for folder in folders:
        names = {p.name for p in folder.iterdir()}
        assert {"model.zip", "vecnormalize.pkl", "state.json"} <= names, folder
        assert ("replay_buffer.pkl" in names) == (algo in ("sac", "td3")), folder
        state = json.loads((folder / "state.json").read_text())
        assert state["num_timesteps"] == int(folder.name.removeprefix("step_"))
    # the evaluations and the best of them
    evaluations = result.evaluations
    steps = [e["step"] for e in evaluations]
    assert steps == list(
        range(
            config.training.eval_every, config.algo.total_timesteps + 1, config.training.eval_every
        )
    )
    first_best = max(evaluations, key=lambda e: e["sharpe"])
    assert result.best_validation == first_best
    # the agent loads from disk and the best score is what a fresh backtest gives
    agent = SB3Agent.from_file(result.best_model_path)
    assert agent.observation["window"] == config.env.window
    assert agent.observation["symbols"] == list(config.env.universe)
    fresh = fresh_validation_metrics(result.run_dir)
    for key in METRICS:
        assert fresh[key] == pytest.approx(result.best_validation[key], rel=1e-9, abs=1e-12), key


@pytest.mark.slow
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_each_algorithm_trains(algo, request, tmp_path, monkeypatch):
    if algo == "ppo":  # the shared run (MLflow on)
        run = request.getfixturevalue("ppo_run")
        check_run(run.result, run.config)
        return
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = smoke(
        *NO_MLFLOW,
        f"algo.name={algo}",
        *ALGORITHMS[algo],
        "algo.total_timesteps=512",
        "training.eval_every=256",
        "training.checkpoint_every=128",
    )
    result = train(config)
    assert result.run_id is None
    assert result.run_dir.resolve().parent == tmp_path.resolve() / "runs"
    check_run(result, config)
    assert not (tmp_path / "mlflow.db").exists()  # MLflow off means off


def test_the_validation_report_is_written_unless_switched_off(ppo_run, tmp_path, monkeypatch):
    """On by default (the shared run has one); training.validation_report=false (bench runs,
    tuning trials, the demo) leaves it out and changes nothing else the run records."""
    assert (ppo_run.result.run_dir / "validation" / "report.html").exists()
    monkeypatch.chdir(tmp_path)
    config = smoke(
        *NO_MLFLOW,
        "algo.total_timesteps=256",
        "training.eval_every=128",
        "training.validation_report=false",
    )
    result = train(config)
    assert not (result.run_dir / "validation").exists()
    assert result.best_model_path is not None and result.best_validation["step"] in (128, 256)


@pytest.mark.parametrize(
    ("algo", "overrides", "asked", "expected"),
    [
        ("ppo", ("algo.hyperparameters={n_steps: 16, batch_size: 32}",), 70, 128),  # 2 x 4 x 16
        ("a2c", ("algo.hyperparameters={n_steps: 5}",), 41, 60),  # 3 rollouts of 4 x 5
        ("sac", ("algo.hyperparameters={learning_starts: 100}",), 10, 12),  # 3 steps of 4 envs
    ],
)
def test_progress_total_is_what_learn_collects(algo, overrides, asked, expected):
    """The progress bar's total: SB3 rounds up to whole rollouts (on-policy) or to whole
    steps of every env (off-policy); pinned against what ``learn`` really does."""
    config = smoke(*NO_MLFLOW, f"algo.name={algo}", "algo.n_envs=4", *overrides)
    data = load_universe(config)
    model = make_model(config, make_training_env(config, data, split_ranges(config, data)["train"]))
    assert steps_learn_will_take(model, asked) == expected
    assert steps_learn_will_take(model, 0) == 0
    model.learn(asked)
    assert model.num_timesteps == expected


def test_checkpoints_keep_the_latest_two(ppo_run):
    folders = checkpoint_dirs(ppo_run.result.run_dir)
    # checkpoint_every=128, but checkpoints are taken between updates: one per rollout (256)
    assert [f.name for f in folders] == ["step_000000000256", "step_000000000512"]
    last = json.loads((folders[-1] / "state.json").read_text())
    assert last["mlflow_run_id"] == ppo_run.result.run_id
    assert [e["step"] for e in last["evaluations"]] == [128, 256, 384, 512]


def test_test_split_is_never_built(ppo_run):
    built = ppo_run.built
    kinds = {kind for kind, _, _ in built}
    # the recording saw the training envs and the validation backtests (not a vacuous pass)
    assert {"PortfolioEnv", "PortfolioVectorEnv", "PortfolioCore"} <= kinds
    assert ("PortfolioVectorEnv", *TRAIN) in built
    assert ("PortfolioEnv", *VALIDATION) in built
    for kind, start, end in built:
        assert start is not None and end is not None, (kind, start, end)  # None = to the end
        assert end < TEST_START, (kind, start, end)
        assert start <= end


# ------------------------------------------------------------------------ determinism
@pytest.mark.slow
def test_same_seed_same_run_other_seed_other_run(tmp_path, monkeypatch, no_report):
    monkeypatch.chdir(tmp_path)
    common = (
        *NO_MLFLOW,
        "algo.total_timesteps=256",
        "training.eval_every=128",
        "training.checkpoint_every=1000000",
    )
    a = train(smoke(*common))
    b = train(smoke(*common))
    other = train(smoke(*common, "seed=1"))
    assert a.run_dir != b.run_dir
    assert len(a.evaluations) == 2
    assert a.evaluations == b.evaluations  # exactly: every metric at every step
    assert same_parameters(state_dict(a.model_path, "ppo"), state_dict(b.model_path, "ppo"))
    assert [e["sharpe"] for e in other.evaluations] != [e["sharpe"] for e in a.evaluations]
    assert not same_parameters(state_dict(a.model_path, "ppo"), state_dict(other.model_path, "ppo"))


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_validation_and_checkpoints_do_not_change_training(algo, tmp_path, monkeypatch, no_report):
    """Evaluating (which backtests the live model) and checkpointing are read-only: the
    model trained with them every 64 steps equals the model trained without them."""
    monkeypatch.chdir(tmp_path)
    common = (*NO_MLFLOW, f"algo.name={algo}", *ALGORITHMS[algo], "algo.total_timesteps=256")
    often = train(smoke(*common, "training.eval_every=64", "training.checkpoint_every=64"))
    never = train(
        smoke(*common, "training.eval_every=1000000", "training.checkpoint_every=1000000")
    )
    assert len(often.evaluations) == 4 and len(never.evaluations) == 1  # one at the end
    assert same_parameters(state_dict(often.model_path, algo), state_dict(never.model_path, algo))


# ---------------------------------------------------------------------- early stopping
def test_early_stopping(tmp_path, monkeypatch, no_report):
    monkeypatch.chdir(tmp_path)
    config = smoke(
        *NO_MLFLOW,
        "algo.total_timesteps=2048",
        "training.eval_every=128",
        "training.checkpoint_every=1000000",
        "training.early_stopping_patience=1",
        "training.early_stopping_min_delta=1e9",
    )
    result = train(config)
    assert result.stopped_early
    assert [e["step"] for e in result.evaluations] == [128, 256]  # stopped after the second
    assert result.timesteps == 256 < config.algo.total_timesteps
    assert result.best_validation == result.evaluations[0]  # the first is the only "best"
    state = json.loads((result.run_dir / "state.json").read_text())
    assert state["stopped_early"] and state["num_timesteps"] == 256
    assert result.model_path.is_file()


def test_patience_without_a_stall_trains_to_the_end(tmp_path, monkeypatch, no_report):
    monkeypatch.chdir(tmp_path)
    config = smoke(
        *NO_MLFLOW,
        "algo.total_timesteps=256",
        "training.eval_every=128",
        "training.checkpoint_every=1000000",
        "training.early_stopping_patience=1",
        "training.early_stopping_min_delta=-1e9",
    )
    # (min_delta < 0: every evaluation "improves")
    result = train(config)
    assert not result.stopped_early and result.timesteps == 256
    assert result.best_validation == result.evaluations[-1]


def test_training_restores_the_callers_torch_threads(tmp_path, monkeypatch, no_report):
    import torch
    from stable_baselines3 import PPO

    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    asked = 2 if before != 2 else 1
    seen = []
    learn = PPO.learn

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return learn(self, *args, **kwargs)

    monkeypatch.setattr(PPO, "learn", spy)
    train(smoke(*NO_MLFLOW, "algo.total_timesteps=128", f"algo.torch_threads={asked}"))
    assert seen == [asked]  # training ran with the config's threads
    assert torch.get_num_threads() == before  # and the caller has its own back


# ------------------------------------------------------------------ resume after a kill
@pytest.mark.slow
def test_resume_after_kill(tmp_path, monkeypatch, mlflow_db):
    """``marketarena train`` in a subprocess, SIGKILLed after its first checkpoint, then
    ``marketarena train --resume`` in-process: same run folder, same MLflow run, the
    schedule and SB3's counters continue, the full budget is trained."""
    from mlflow.tracking import MlflowClient

    uri = fresh_store(mlflow_db, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    command = [
        sys.executable,
        "-c",
        CLI,
        "train",
        "--config",
        str(SMOKE),
        "--set",
        "algo.total_timesteps=4096",
        "--set",
        "training.eval_every=512",
        "--set",
        "training.checkpoint_every=512",
        "--set",
        "training.progress_bar=false",
    ]
    log = tmp_path / "train.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + POLL_DEADLINE_S
        while not list(tmp_path.glob("runs/*/checkpoints/step_*[0-9]")):
            assert process.poll() is None, f"training ended early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint:\n{log.read_text()[-3000:]}"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=30)

    (run_dir,) = tmp_path.glob("runs/*")
    assert not (run_dir / "model").exists(), "the run finished before it was killed"
    ckpt = checkpoint_dirs(run_dir)[-1]
    state = json.loads((ckpt / "state.json").read_text())
    resumed_from = state["num_timesteps"]
    assert 512 <= resumed_from < 4096
    run_id = state["mlflow_run_id"]
    assert run_id
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # killed: never ended
    before_kill = client.get_metric_history(run_id, "eval/sharpe")
    assert before_kill, "the killed process logged no evaluation"
    assert min(m.step for m in before_kill) == 512
    rollouts_before = client.get_metric_history(run_id, "rollout/ep_rew_mean")

    code, text = run_cli("train", "--resume", str(run_dir))

    assert code == 0, text
    assert "trained 4,096 timesteps" in text
    assert f"model: {run_dir / 'best' / 'model.zip'}" in text
    assert f"MLflow run {run_id} in {uri}" in text  # the same run as before the kill
    final = json.loads((run_dir / "state.json").read_text())
    assert final["num_timesteps"] == 4096 and final["mlflow_run_id"] == run_id
    assert (run_dir / "model" / "model.zip").is_file()
    # the evaluations up to the checkpoint are kept, later ones appended in order
    kept = state["evaluations"]
    assert kept and final["evaluations"][: len(kept)] == kept
    steps = [e["step"] for e in final["evaluations"]]
    assert steps == list(range(512, 4097, 512))  # the schedule went on where it was
    # SB3's own step counter continued from the checkpoint (a restart would log from 256)
    seen = {(m.step, m.timestamp) for m in rollouts_before}
    rollouts_after = [
        m
        for m in client.get_metric_history(run_id, "rollout/ep_rew_mean")
        if (m.step, m.timestamp) not in seen
    ]
    assert rollouts_after and min(m.step for m in rollouts_after) > resumed_from
    assert max(m.step for m in rollouts_after) == 4096
    # one MLflow run, with evaluations logged before and after the kill
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    after = client.get_metric_history(run_id, "eval/sharpe")
    old = {(m.step, m.value, m.timestamp) for m in before_kill}
    assert old <= {(m.step, m.value, m.timestamp) for m in after}
    new_steps = {m.step for m in after if (m.step, m.value, m.timestamp) not in old}
    assert max(new_steps) == 4096 and min(new_steps) > resumed_from
    # the best model and its recorded score still agree
    fresh = fresh_validation_metrics(run_dir)
    assert fresh["sharpe"] == pytest.approx(final["best_metrics"]["sharpe"], rel=1e-9)


def test_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training run folder"):
        train(resume=tmp_path)
    with pytest.raises(ValueError, match="either a config or a run folder"):
        train(smoke(*NO_MLFLOW), resume=tmp_path)
    with pytest.raises(ValueError, match="either a config or a run folder"):
        train()


@pytest.mark.parametrize("damage", [b"", b"not a pickle", b"\x80\x05K\x01."])
def test_a_damaged_training_state_is_named(tmp_path, monkeypatch, damage):
    """A checkpoint's training_state.pkl truncated, overwritten, or holding something else:
    one error naming the file and what to do, not a traceback from pickle."""
    monkeypatch.chdir(tmp_path)
    config = smoke(
        *NO_MLFLOW,
        "algo.total_timesteps=256",
        "training.eval_every=256",
        "training.checkpoint_every=128",
        "training.validation_report=false",
    )
    run = train(config).run_dir
    (last,) = sorted((run / "checkpoints").glob("step_*"))[-1:]
    (last / "training_state.pkl").write_bytes(damage)  # b"\x80\x05K\x01.": the int 1
    code, text = run_cli("train", "--resume", str(run))
    assert code == 1
    assert "training_state.pkl: not a" in text and "Traceback" not in text


# ------------------------------------------------------------------------- the command
def run_cli(*args: str) -> tuple[int, str]:
    console = Console(record=True, width=300)
    code = main(list(args), console=console)
    return code, console.export_text()


def test_train_command_prints_the_result(tmp_path, monkeypatch, no_report):
    # (the MLflow run id it prints is checked in test_resume_after_kill)
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(
        "train",
        "--config",
        str(SMOKE),
        "--set",
        "algo.total_timesteps=256",
        "--set",
        "training.eval_every=1000000",
        "--set",
        "training.checkpoint_every=1000000",
        "--set",
        "name=cli",
        "--set",
        "training.progress_bar=false",
        "--set",
        "mlflow.enabled=false",
    )
    assert code == 0, text
    (run_dir,) = (tmp_path / "runs").glob("cli__ppo__0__*")
    best = run_dir.resolve() / "best" / "model.zip"  # absolute: valid after a chdir
    assert f"model: {best}" in text and best.is_file()
    assert f"run folder: {run_dir.resolve()}" in text
    assert "trained 256 timesteps" in text
    state = json.loads((run_dir / "state.json").read_text())
    assert (
        "best on validation (step 256): Sharpe {:.2f}".format(state["best_metrics"]["sharpe"])
        in text
    )
    assert "MLflow" not in text  # off
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --config"),
        (("--resume", "runs/x", "--config", str(SMOKE)), "--resume continues a run"),
        (("--resume", "runs/x", "--set", "seed=1"), "--resume continues a run"),
        (("--resume", "nowhere"), "not a training run folder"),
        (("--config", "missing.yaml"), "missing.yaml"),
        (("--config", str(SMOKE), "--set", "env.windw=3"), "env.windw"),
        (("--config", str(SMOKE), "--set", "foo"), "'foo'"),
        # refused by the config or by SB3 itself: before a run folder or MLflow run exists
        (
            ("--config", str(SMOKE), "--set", "algo.hyperparameters.learning_rate=abc"),
            "learning_rate='abc': ppo expects float",
        ),
        (
            (
                "--config",
                str(SMOKE),
                "--set",
                "algo.n_envs=1",
                "--set",
                "algo.hyperparameters.n_steps=1",
            ),
            "`n_steps * n_envs` must be greater than 1",
        ),
    ],
)
def test_train_command_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, text = run_cli("train", *args)
    assert code == 1
    assert "error:" in text and message in text.replace("\n", "")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------- failures and Ctrl-C
SHORT = (
    *NO_MLFLOW,
    "algo.total_timesteps=512",
    "training.eval_every=256",
    "training.checkpoint_every=256",
)


def stop_after_checkpoint(monkeypatch, error: type[BaseException]) -> None:
    """Make the first checkpoint raise ``error`` once it is written."""
    checkpoint = Trainer.checkpoint

    def then_stop(self, step):
        checkpoint(self, step)
        raise error("stopped")

    monkeypatch.setattr(Trainer, "checkpoint", then_stop)


#: the first validation and checkpoint come after PPO's first rollout (256 steps) and update
LATE = (*SHORT, "training.eval_every=512", "training.checkpoint_every=512")


def fail_in_training(monkeypatch, error: type[BaseException]) -> None:
    """Make PPO's first update raise ``error``: with :data:`LATE`, before the first
    validation and checkpoint."""

    def failing(self):
        raise error("diverged")

    monkeypatch.setattr(algorithm_class("ppo"), "train", failing)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fail_in_training(monkeypatch, RuntimeError)
    with pytest.raises(RuntimeError, match="diverged"):
        train(smoke(*LATE))
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_run_that_fails_after_a_checkpoint_is_kept(tmp_path, monkeypatch, no_report):
    monkeypatch.chdir(tmp_path)
    stop_after_checkpoint(monkeypatch, RuntimeError)
    with pytest.raises(RuntimeError, match="stopped"):
        train(smoke(*SHORT))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step_000000000256"]


def test_ctrl_c_prints_how_to_resume_and_that_resumes(tmp_path, monkeypatch, no_report):
    monkeypatch.chdir(tmp_path)
    overrides = [arg for item in SHORT for arg in ("--set", item)]
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, KeyboardInterrupt)
        code, text = run_cli("train", "--config", str(SMOKE), *overrides)
    assert code == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    command = f"marketarena train --resume runs/{run_dir.name}"
    assert text.strip() == f"interrupted: resume with {command}"
    assert checkpoint_dirs(run_dir)  # nothing was removed
    code, text = run_cli(*command.split()[1:])
    assert code == 0, text
    assert "trained 512 timesteps" in text


def test_ctrl_c_before_the_first_checkpoint_keeps_the_run_to_start_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fail_in_training(monkeypatch, KeyboardInterrupt)
    with pytest.raises(TrainingInterrupted) as info:
        train(smoke(*LATE))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert info.value.run_dir == run_dir.resolve() and info.value.checkpoint is None
    assert isinstance(info.value, KeyboardInterrupt)  # what callers caught before
    assert (run_dir / "config.yaml").is_file()
    code, text = run_cli("train", "--config", str(SMOKE), *[f"--set={o}" for o in LATE])
    assert code == 130
    hint = "interrupted before the first checkpoint: marketarena train --resume runs/smoke__"
    assert text.strip().startswith(hint) and text.strip().endswith(" starts the run again")


# ----------------------------------------------------------------------------- MLflow
def walk_artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out += walk_artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def test_mlflow_params_metrics_tags_artifacts(ppo_run):
    from mlflow.tracking import MlflowClient

    result = ppo_run.result
    client = MlflowClient(tracking_uri=ppo_run.uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == result.run_dir.name
    params = run.data.params
    assert params["algo.name"] == "ppo"
    assert params["env.window"] == "8"
    assert params["algo.total_timesteps"] == "512"
    assert params["algo.hyperparameters.n_steps"] == "64"
    assert params["env.splits.test_start"] == TEST_START
    assert params["split.validation.start"] == VALIDATION[0]
    assert params["split.validation.end"] == VALIDATION[1]
    metrics = set(run.data.metrics)
    for prefix in ("train/", "rollout/", "eval/"):
        assert any(m.startswith(prefix) for m in metrics), prefix
    history = client.get_metric_history(result.run_id, "eval/sharpe")
    assert [m.step for m in history] == [128, 256, 384, 512]
    assert [m.value for m in history] == pytest.approx([e["sharpe"] for e in result.evaluations])
    tags = run.data.tags
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert tags["algo"] == "ppo"
    assert tags["data"] == "sp500_20"
    assert tags["git_sha"] == manifest["git_sha"]
    assert tags["data_sha256"] == manifest["data"]["sha256"]
    artifacts = set(walk_artifacts(client, result.run_id))
    assert {
        "config.yaml",
        "manifest.json",
        "best_model/model.zip",
        "validation/report.html",
    } <= artifacts
    (logged,) = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{result.run_id}'"
    )
    assert logged.name == "model"


def test_mlflow_pyfunc_model_acts_like_the_best_model(ppo_run):
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(ppo_run.uri)  # reset after the test (reset_mlflow_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{ppo_run.result.run_id}/model")
    agent = SB3Agent.from_file(ppo_run.result.best_model_path)
    data = resolve_data("sp500_20").select(ppo_run.config.env.universe)
    env = PortfolioEnv(
        data,
        start=VALIDATION[0],
        end=VALIDATION[1],
        window=8,
        random_start=False,
        episode_length=None,
    )
    obs, info = env.reset(seed=0)
    rows = [obs]
    for _ in range(3):
        obs, *_ = env.step(agent.act(obs, info))
        rows.append(obs)
    predicted = np.asarray(model.predict([r.tolist() for r in rows]))
    expected = np.stack([agent.act(r, {}) for r in rows])
    assert predicted.shape == (4, 6)
    np.testing.assert_allclose(predicted, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, atol=1e-9)


def test_the_best_model_is_registered_so_models_uris_resolve(ppo_run):
    """mlflow.registered_model: the run's pyfunc model becomes version 1 of that name, and
    models:/smoke-ppo/1 predicts what the run's best model does."""
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(ppo_run.uri)  # reset after the test (reset_mlflow_uri)
    (version,) = MlflowClient().search_model_versions("name = 'smoke-ppo'")
    assert (str(version.version), version.run_id) == ("1", ppo_run.result.run_id)
    registered = mlflow.pyfunc.load_model("models:/smoke-ppo/1")
    agent = SB3Agent.from_file(ppo_run.result.best_model_path)
    size = int(np.prod(agent.model.observation_space.shape))
    rows = np.random.default_rng(0).normal(size=(3, size))
    expected = np.stack([agent.act(r, {}) for r in rows])
    np.testing.assert_allclose(registered.predict(rows.tolist()), expected, rtol=1e-6, atol=1e-9)


def test_secrets_in_the_environment_are_never_logged(ppo_run, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", ppo_run.uri)

    secret = ppo_run.secret
    client = MlflowClient(tracking_uri=ppo_run.uri)
    run = client.get_run(ppo_run.result.run_id)
    assert run.data.params and run.data.tags
    for key, value in (*run.data.params.items(), *run.data.tags.items()):
        assert secret not in key and secret not in value, key
    run_files = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "run")))
    model_files = Path(
        mlflow.artifacts.download_artifacts(
            f"runs:/{run.info.run_id}/model",
            dst_path=str(tmp_path / "model"),
            tracking_uri=ppo_run.uri,
        )
    )
    scanned = 0
    for folder in (run_files, model_files, ppo_run.result.run_dir):
        for path in folder.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
                scanned += 1
    assert scanned > 20
    assert (run_files / "config.yaml").is_file() and (model_files / "MLmodel").is_file()


# --------------------------------------------------------------- evaluate the MLflow run
@pytest.mark.slow
def test_evaluate_the_mlflow_model_over_validation(ppo_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ppo_run.uri)
    run_id = ppo_run.result.run_id
    out = tmp_path / "evaluation"
    # no --window and no universe given: both come from the model's agent.json
    code, text = run_cli(
        "evaluate",
        "--agent",
        f"runs:/{run_id}/model",
        "--start",
        VALIDATION[0],
        "--end",
        VALIDATION[1],
        "--no-baselines",
        "--benchmark",
        "none",
        "--output",
        str(out),
    )
    assert code == 0, text
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["settings"]["window"] == 8
    assert doc["settings"]["data"]["symbols"] == list(ppo_run.config.env.universe)
    assert (doc["settings"]["start"], doc["settings"]["end"]) == VALIDATION
    (row,) = doc["agents"]
    assert row["agent"].endswith(f"@run:{run_id[:8]}")
    best = ppo_run.result.best_validation
    for key in ("sharpe", "total_return", "max_drawdown"):
        assert row[key] == pytest.approx(best[key], rel=1e-9), key


def test_make_agent_reads_runs_uris_from_the_given_store(ppo_run, tmp_path, monkeypatch):
    """``make_agent(uri, tracking_uri=...)`` looks in that store, not in the default one."""
    import mlflow

    monkeypatch.chdir(tmp_path)  # the default store would be ./mlflow.db here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    agent = make_agent(f"runs:/{ppo_run.result.run_id}/model", tracking_uri=ppo_run.uri)
    assert agent.name.endswith(f"@run:{ppo_run.result.run_id[:8]}")
    assert agent.observation["window"] == 8
    assert not mlflow.is_tracking_uri_set()  # the global URI is left as it was
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(ValueError, match="MLflow could not find it"):
        make_agent(f"runs:/{'0' * 32}/model", tracking_uri=ppo_run.uri)


@pytest.mark.slow
def test_resume_keeps_a_best_model_saved_after_the_last_checkpoint(
    tmp_path, monkeypatch, no_report
):
    monkeypatch.chdir(tmp_path)
    result = train(
        smoke(
            *NO_MLFLOW,
            "algo.total_timesteps=512",
            "training.eval_every=256",
            "training.checkpoint_every=256",
        )
    )
    run = result.run_dir
    (ckpt,) = [c for c in checkpoint_dirs(run) if c.name.endswith("512")]
    # as if killed after a validation saved best/ but before the checkpoint recorded it
    state = json.loads((ckpt / "state.json").read_text())
    state.update(best_score=-99.0, best_metrics={"step": 0, "sharpe": -99.0})
    (ckpt / "state.json").write_text(json.dumps(state))
    best = json.loads((run / "best" / "score.json").read_text())
    resumed = train(resume=run)
    assert resumed.best_validation == best["metrics"]
    assert resumed.best_validation["step"] > 0
