"""``marketarena train --resume`` after a real process was killed is the uninterrupted run.

One uninterrupted run in this process is the reference. ``marketarena train`` then runs in a
subprocess, is killed (SIGKILL; or interrupted with SIGINT, as Ctrl-C does) once a
checkpoint past the first exists, and ``marketarena train --resume`` finishes it here. The
final model's parameters and optimizer state are equal bit for bit, so are the evaluations
in ``state.json``, and every ``train/`` and ``rollout/`` metric the resumed run logs equals
the reference's at the same step.

The config checkpoints every rollout (4 envs x 64 steps) and validates at steps that are not
rollout boundaries, normalises observations and rewards, and draws random episode starts:
every piece of state a checkpoint keeps (``Trainer.resume_state``) is in use.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from marketarena.agents.sb3_agent import algorithm_class
from marketarena.cli import main
from marketarena.envs.vector_env import PortfolioVectorEnv
from marketarena.training.config import Config, load_config
from marketarena.training.train import RESUME_STATE, Trainer, TrainResult, train

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
ROLLOUT = 256  # configs/smoke.yaml: 4 envs x n_steps 64
TOTAL = 2048
OVERRIDES = (
    "training.progress_bar=false",
    "mlflow.enabled=false",
    f"algo.total_timesteps={TOTAL}",
    "training.eval_every=384",  # half-way through every other rollout
    f"training.checkpoint_every={ROLLOUT}",
    "algo.normalize={observations: true, rewards: true}",
)
#: what the ``marketarena`` console script runs
CLI = "from marketarena.cli import main; raise SystemExit(main())"
POLL_DEADLINE_S = 120.0

pytestmark = pytest.mark.slow


def smoke() -> Config:
    return load_config(SMOKE, OVERRIDES)


@contextlib.contextmanager
def logged_metrics() -> Iterator[dict[int, dict[str, Any]]]:
    """Every SB3 logger write in this process, by step: what MLflow would receive, without
    ``time/`` (wall-clock speeds, and ``time/iterations`` counts the ``learn`` call's
    rollouts). Skips the end-of-run validation report (plots, bootstrap intervals)."""
    from stable_baselines3.common.logger import Logger

    seen: dict[int, dict[str, Any]] = {}
    dump = Logger.dump

    def recording(self, step: int = 0) -> None:
        assert step not in seen, f"step {step} logged twice"
        seen[step] = {k: v for k, v in self.name_to_value.items() if not k.startswith("time/")}
        dump(self, step)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Logger, "dump", recording)
        patch.setattr(Trainer, "validation_report", lambda self, model: self.run_dir)
        yield seen


@dataclass
class Reference:
    result: TrainResult
    state: dict[str, Any]
    logged: dict[int, dict[str, Any]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """The uninterrupted run."""
    root = tmp_path_factory.mktemp("uninterrupted")
    with logged_metrics() as logged:
        result = train(load_config(SMOKE, (*OVERRIDES, f"training.output_dir={root}")))
    state = json.loads((result.run_dir / "state.json").read_text())
    return Reference(result, state, logged)


def tensors_equal(a: Any, b: Any) -> bool:
    """``a == b`` for nested state dicts, tensors compared with ``torch.equal``."""
    import torch

    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def start_training(folder: Path) -> tuple[subprocess.Popen, Path]:
    log = folder / "train.log"
    command = [sys.executable, "-c", CLI, "train", "--config", str(SMOKE)]
    command += [arg for item in OVERRIDES for arg in ("--set", item)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return process, log


def stop_past_the_first_checkpoint(folder: Path, how: signal.Signals) -> tuple[int, str]:
    """``marketarena train`` in ``folder``, sent ``how`` once its second checkpoint exists;
    its exit code and output."""
    process, log = start_training(folder)
    second = f"runs/*/checkpoints/step_{2 * ROLLOUT:012d}"
    try:
        deadline = time.monotonic() + POLL_DEADLINE_S
        while not list(folder.glob(second)):
            assert process.poll() is None, f"training ended early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint:\n{log.read_text()[-3000:]}"
            time.sleep(0.02)
        process.send_signal(how)
        code = process.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=30)
    return code, log.read_text()


def resume_and_compare(run_dir: Path, reference: Reference) -> None:
    """``marketarena train --resume run_dir`` here; then everything equals the reference."""
    assert not (run_dir / "model").exists(), "the run finished before it was stopped"
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*[0-9]"))
    for checkpoint in checkpoints:  # taken between updates, each whole
        assert int(checkpoint.name.removeprefix("step_")) % ROLLOUT == 0, checkpoint.name
        assert (checkpoint / RESUME_STATE).is_file()
    resumed_from = int(checkpoints[-1].name.removeprefix("step_"))
    assert ROLLOUT < resumed_from < TOTAL

    console = Console(record=True, width=300)
    with logged_metrics() as logged:
        code = main(["train", "--resume", str(run_dir)], console=console)
    assert code == 0, console.export_text()
    assert f"trained {TOTAL:,} timesteps" in console.export_text()

    # the model: every parameter and the optimizer's state (Adam's moments and step counts)
    ppo = algorithm_class("ppo")
    expected = ppo.load(reference.result.model_path, device="cpu")
    got = ppo.load(run_dir / "model" / "model.zip", device="cpu")
    assert tensors_equal(got.get_parameters(), expected.get_parameters())
    assert got.num_timesteps == expected.num_timesteps == TOTAL
    assert got._n_updates == expected._n_updates
    # the evaluations, the best of them and the early-stopping count
    state = json.loads((run_dir / "state.json").read_text())
    for key in ("evaluations", "best_score", "best_metrics", "evals_without_improvement"):
        assert state[key] == reference.state[key], key
    assert [e["step"] for e in state["evaluations"]] == [*range(384, TOTAL, 384), TOTAL]
    best = ppo.load(run_dir / "best" / "model.zip", device="cpu")
    expected_best = ppo.load(reference.result.run_dir / "best" / "model.zip", device="cpu")
    assert tensors_equal(best.get_parameters(), expected_best.get_parameters())
    # what SB3 logs after the checkpoint, the first write with the update the killed
    # process made but did not log
    assert sorted(logged) == list(range(resumed_from + ROLLOUT, TOTAL + 1, ROLLOUT))
    assert any(key.startswith("train/") for key in logged[resumed_from + ROLLOUT])
    for step, metrics in logged.items():
        assert metrics == reference.logged[step], step


def test_a_killed_run_resumes_into_the_uninterrupted_run(reference, tmp_path):
    code, output = stop_past_the_first_checkpoint(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL, output
    (run_dir,) = (tmp_path / "runs").iterdir()
    resume_and_compare(run_dir, reference)


def test_ctrl_c_says_how_to_resume_into_the_uninterrupted_run(reference, tmp_path):
    """SIGINT (what Ctrl-C sends) lands wherever training is, then the command it prints
    resumes the run exactly."""
    code, output = stop_past_the_first_checkpoint(tmp_path, signal.SIGINT)
    assert code == 130, output
    (run_dir,) = (tmp_path / "runs").iterdir()
    command = f"marketarena train --resume runs/{run_dir.name}"
    assert output.strip() == f"interrupted: resume with {command}"
    resume_and_compare(run_dir, reference)


@pytest.mark.parametrize("reward", ["log_return", "differential_sharpe"])
def test_the_vector_env_state_restores_bit_for_bit(reward):
    """What a checkpoint keeps of the training env: a vector env put into a stepped one's
    state (in another episode) steps on exactly as the stepped one does, random episode
    restarts included."""
    import pickle

    settings = {"episode_length": 16, "window": 5, "reward": reward}
    rng = np.random.default_rng(0)
    stepped = PortfolioVectorEnv(4, "sp500_20", **settings)
    stepped.reset(seed=3)
    actions = [rng.normal(size=stepped.action_space.shape) for _ in range(60)]
    for action in actions[:25]:
        obs, *_ = stepped.step(action)
    restored = PortfolioVectorEnv(4, "sp500_20", **settings)
    restored.reset(seed=99)
    again, _ = restored.set_state(pickle.loads(pickle.dumps(stepped.get_state())))
    assert np.array_equal(again, obs)
    for action in actions[25:]:  # (episodes of 16 steps: each env restarts twice)
        for a, b in zip(stepped.step(action)[:4], restored.step(action)[:4], strict=True):
            assert np.array_equal(a, b)
