"""Train an SB3 agent on ``PortfolioVectorEnv`` from a :class:`~marketarena.training.config.Config`.

One run reads top to bottom: seed, data and splits, envs, model, then ``learn`` with three
callbacks — validation on the validation split every ``eval_every`` steps (the evaluation
module's backtest and metrics, best-model saving, early stopping), checkpoints every
``checkpoint_every`` steps (model, VecNormalize statistics, replay buffer for off-policy
algorithms, counters, the MLflow run id, and what :meth:`Trainer.resume_state` lists), and a
progress bar. The test split is never built.

A run lives in ``{output_dir}/{name}__{algo}__{seed}__{time}/``::

    config.yaml       the resolved config          manifest.json   data hash, splits, seeds, git SHA
    model/            the final model              best/           the best model on validation
    checkpoints/      the latest two checkpoints   validation/     report of the best model
    state.json        where training stands (copied into each checkpoint)

``train(config)`` and ``marketarena train`` return the same :class:`TrainResult`;
``train(resume=run_dir)`` continues an interrupted run from its last checkpoint.

A resumed run is the uninterrupted run: the same parameters and optimizer state bit for bit,
the same evaluations and the same logged ``train/`` and ``rollout/`` metrics. Checkpoints are
taken between updates (the first rollout boundary at or after each ``checkpoint_every``
steps), so no collected step is lost, and each holds the training env's state and every RNG
(``training_state.pkl``, see :meth:`Trainer.resume_state`); steps trained after the last
checkpoint are trained again, and evaluations after it are repeated (MLflow then holds both
the killed process's values and the repeat's, at the same steps). Bitwise equality holds on
CPU with the same ``algo.torch_threads`` (1 by default: a thread count changes the order of
float sums); on a GPU, non-deterministic kernels may make a resumed run differ in the last
bits, as two uninterrupted GPU runs do.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import pickle
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marketarena.agents.sb3_agent import SB3Agent, algorithm_class, write_agent_metadata
from marketarena.envs.core import ActionSpec
from marketarena.envs.data import MarketData, resolve_data
from marketarena.envs.errors import ConfigError, DataError, MissingFileError
from marketarena.envs.sb3_vec_env import SB3PortfolioVecEnv
from marketarena.envs.vector_env import PortfolioVectorEnv
from marketarena.evaluation import tracking
from marketarena.evaluation.evaluate import EvaluationConfig, evaluate
from marketarena.evaluation.runner import BacktestResult, run_backtest
from marketarena.training.callbacks import (
    EveryNTimesteps,
    MlflowOutputFormat,
    RestoreLogValues,
    RichProgress,
)
from marketarena.training.config import ON_POLICY, Config, load_config

CHECKPOINTS_KEPT = 2
#: the file in a checkpoint folder that holds :meth:`Trainer.resume_state`
RESUME_STATE = "training_state.pkl"
#: the model's attributes that carry one rollout into the next (the observation SB3 acts on
#: next, ...): SB3's ``set_env`` and ``load`` drop them, and a resume restores them
LOOP_ATTRIBUTES = ("_last_obs", "_last_episode_starts", "_last_original_obs", "_last_lstm_states")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run that has a folder: ``train(resume=run_dir)`` (``marketarena train
    --resume RUN_DIR``) continues it from ``checkpoint``, or from the start when it has none.
    Nothing of the run is deleted."""

    def __init__(self, run_dir: Path, checkpoint: Path | None) -> None:
        super().__init__(f"training interrupted: resume with marketarena train --resume {run_dir}")
        self.run_dir = run_dir
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    model_path: Path
    best_model_path: Path | None
    run_id: str | None
    best_validation: dict[str, float]
    timesteps: int
    stopped_early: bool
    evaluations: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model_path": str(self.model_path),
            "best_model_path": str(self.best_model_path) if self.best_model_path else None,
            "run_id": self.run_id,
            "best_validation": self.best_validation,
            "timesteps": self.timesteps,
            "stopped_early": self.stopped_early,
        }


# ------------------------------------------------------------------------ data, envs
def load_universe(config: Config) -> MarketData:
    data = resolve_data(config.env.data)
    if config.env.universe:
        data = data.select(config.env.universe)
    return data


def split_ranges(config: Config, data: MarketData) -> dict[str, tuple[str, str]]:
    """Inclusive ``(start, end)`` dates of the train, validation and test splits."""
    s = config.env.splits
    first, last = data.date_range_indices(s.start, s.end)
    v = data.index_of(s.validation_start, "left")
    t = data.index_of(s.test_start, "left")
    if not first < v < t <= last:
        raise ConfigError(
            f"env.splits: {data.name} covers {data.dates[first]}..{data.dates[last]}; need "
            f"start < validation_start ({s.validation_start}) < test_start ({s.test_start}) "
            "within it"
        )
    d = data.dates
    return {
        "train": (str(d[first]), str(d[v - 1])),
        "validation": (str(d[v]), str(d[t - 1])),
        "test": (str(d[t]), str(d[last])),
    }


def action_spec(config: Config) -> ActionSpec:
    """The action interface the config's env gives its model."""
    return ActionSpec.from_settings(config.env.to_settings())


def make_training_env(config: Config, data: MarketData, split: tuple[str, str]) -> Any:
    from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

    settings = config.env.to_settings()
    length = settings.episode_length
    available = data.index_of(split[1], "right") - data.index_of(split[0]) - settings.window
    if length is not None and length > available:
        raise ConfigError(
            f"env.episode_length={length} does not fit the train split {split[0]}..{split[1]}"
        )
    venv = PortfolioVectorEnv(
        config.algo.n_envs, data, settings, start=split[0], end=split[1], copy=False
    )
    env: VecEnv = VecMonitor(SB3PortfolioVecEnv(venv))
    norm = config.algo.normalize
    if norm.observations or norm.rewards:
        gamma = float(config.algo.hyperparameters.get("gamma", 0.99))
        env = VecNormalize(
            env,
            norm_obs=norm.observations,
            norm_reward=norm.rewards,
            clip_obs=norm.clip_obs,
            gamma=gamma,
        )
    return env


def make_model(config: Config, env: Any) -> Any:
    import torch

    from marketarena.agents.policies import POLICIES

    algo = config.algo
    activation = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[algo.activation]
    policy_kwargs = {"net_arch": list(algo.net_arch), "activation_fn": activation}
    policy: Any = algo.policy
    if policy in POLICIES:
        policy = POLICIES[policy]
        policy_kwargs["n_features"] = len(config.env.features)
    policy_kwargs.update(algo.policy_kwargs)
    try:
        return algorithm_class(algo.name)(
            policy,
            env,
            seed=config.seed,
            device=algo.device,
            verbose=0,
            policy_kwargs=policy_kwargs,
            **algo.hyperparameters,
        )
    except (AssertionError, TypeError, ValueError) as exc:  # SB3's checks of the settings
        raise ConfigError(
            f"algo: {algo.name} cannot be built with these settings (algo.hyperparameters, "
            f"algo.policy_kwargs, algo.n_envs): {exc or type(exc).__name__}"
        ) from exc


def env_layers(env: Any) -> tuple[Any, Any, PortfolioVectorEnv]:
    """The ``VecNormalize`` (or None), the ``VecMonitor`` and the :class:`PortfolioVectorEnv`
    of a training env built by :func:`make_training_env`."""
    from stable_baselines3.common.vec_env import VecNormalize

    norm = env if isinstance(env, VecNormalize) else None
    monitor = env.venv if norm is not None else env
    return norm, monitor, monitor.venv.venv


def steps_learn_will_take(model: Any, timesteps: int) -> int:
    """How many steps ``model.learn(timesteps)`` collects: PPO and A2C collect whole rollouts
    of ``n_steps`` x ``n_envs``, SAC and TD3 one step of every env at a time."""
    if timesteps <= 0:
        return 0
    chunk = model.n_envs * getattr(model, "n_steps", 1)
    return -(-timesteps // chunk) * chunk


# ---------------------------------------------------------------------------- trainer
class Trainer:
    """One run: builds everything, owns the callbacks' state, writes the run folder.

    ``on_evaluation(step, score)`` is called after every validation (e.g. to report to an
    Optuna trial); it may raise to abort the run, or return False to stop it early.
    """

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        state: dict[str, Any] | None = None,
        on_evaluation: Callable[[int, float], bool] | None = None,
    ):
        self.config = config
        self.on_evaluation = on_evaluation
        self.run_dir = run_dir
        self.state = state or {
            "num_timesteps": 0,
            "best_score": None,
            "best_metrics": {},
            "evals_without_improvement": 0,
            "stopped_early": False,
            "mlflow_run_id": None,
            "next_eval": config.training.eval_every,
            "next_checkpoint": config.training.checkpoint_every,
            "evaluations": [],
        }
        self.data = load_universe(config)
        self.ranges = split_ranges(config, self.data)
        self.spec = action_spec(config)
        self.model: Any = None
        self.env: Any = None
        self._stage = 0  # the curriculum stage self.env belongs to
        self._log_values: dict[str, Any] | None = None  # for RestoreLogValues on a resume
        # best/score.json of a model saved after the checkpoint this run resumes from
        self.unrecorded_best: dict[str, Any] | None = None
        self._progress: RichProgress | None = None

    # -------------------------------------------------------------- run folder
    def write_run_files(self) -> None:
        c = self.config
        (self.run_dir / "config.yaml").write_text(c.to_yaml())
        manifest = {
            "data": self.data.manifest(),
            "splits": {k: {"start": a, "end": b} for k, (a, b) in self.ranges.items()},
            "seed": c.seed,
            "algorithm": c.algo.name,
            "git_sha": tracking.git_sha(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (self.run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))

    def save_model(self, folder: Path) -> Path:
        """model.zip, vecnormalize.pkl (if used) and agent.json into ``folder``."""
        from stable_baselines3.common.vec_env import VecNormalize

        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "model.zip")
        if isinstance(self.env, VecNormalize):
            self.env.save(str(folder / "vecnormalize.pkl"))
        write_agent_metadata(
            folder,
            algorithm=self.config.algo.name,
            name=self.config.name,
            action_spec=self.spec.__dict__,
            symbols=list(self.data.symbols),
            **self.config.env.to_settings().observation(),
        )
        return folder / "model.zip"

    # ---------------------------------------------------------------- validation
    def current_agent(self) -> SB3Agent:
        from stable_baselines3.common.vec_env import VecNormalize

        normalizer = self.env.normalize_obs if isinstance(self.env, VecNormalize) else None
        return SB3Agent(
            self.model,
            f"{self.config.algo.name}:{self.config.name}",
            obs_normalizer=normalizer,
            action_spec=self.spec,
        )

    def validation_backtest(
        self, agent: Any, progress: Callable[[int, int], None] | None = None
    ) -> BacktestResult:
        # agents return target weights, and apply their own band to them
        settings = self.config.env.to_settings().replace(
            action_mapping="normalize", rebalance_band=0.0, relative_band=0.0
        )
        # no seed: SB3Agent.reset(seed) calls model.set_random_seed, which would reseed the
        # global RNGs, the action space and the training env in the middle of training (the
        # backtest env and the deterministic policy need no seed)
        start, end = self.ranges["validation"]
        spec = {"data": self.data, "settings": settings}
        return run_backtest(agent, spec, start, end, progress=progress)

    def validate(self, step: int) -> bool:
        bar = self._progress
        result = self.validation_backtest(
            self.current_agent(), bar.validation if bar is not None else None
        )
        table = result.metrics()
        chosen = self.config.training.selection_metric
        keep = (
            "sharpe",
            "sortino",
            "calmar",
            "total_return",
            "cagr",
            "max_drawdown",
            "volatility",
            "annual_turnover",
        )
        record = {k: table[k] for k in keep} | {"step": step}
        self.state["evaluations"].append(record)
        mlflow = tracking.active_mlflow()
        if mlflow is not None:
            finite = {f"eval/{k}": v for k, v in record.items() if k != "step" and np.isfinite(v)}
            mlflow.log_metrics(finite, step=step)
        score = table[chosen]
        best = self.state["best_score"]
        min_delta = self.config.training.early_stopping_min_delta
        if np.isfinite(score) and (best is None or score > best + min_delta):
            self.state.update(best_score=score, best_metrics=record, evals_without_improvement=0)
            best_dir = self.run_dir / "best"
            self.save_model(best_dir)
            # the score travels with the model: a resume from an older checkpoint keeps both
            (best_dir / "score.json").write_text(json.dumps({"score": score, "metrics": record}))
            self.unrecorded_best = None
        else:
            self.state["evals_without_improvement"] += 1
        if self.unrecorded_best is not None and step >= self.unrecorded_best["metrics"]["step"]:
            self.adopt_unrecorded_best()
        patience = self.config.training.early_stopping_patience
        if patience is not None and self.state["evals_without_improvement"] >= patience:
            self.state["stopped_early"] = True
            return False
        if self.on_evaluation is not None and not self.on_evaluation(step, float(score)):
            self.state["stopped_early"] = True
            return False
        return True

    def adopt_unrecorded_best(self) -> None:
        """Record ``best/``, saved after the checkpoint this run resumed from, as the run's
        best. The resumed run evaluates those steps again and rewrites ``best/`` exactly as
        the interrupted one did, with the same early-stopping count; only when it did not
        by the step that saved ``best/`` (a non-deterministic GPU, a checkpoint edited by
        hand) is ``best/`` adopted as it is, so that it and the recorded best agree."""
        best = self.unrecorded_best
        if best is not None:
            self.state.update(best_score=best["score"], best_metrics=best["metrics"])
            self.unrecorded_best = None

    # --------------------------------------------------------------- checkpoints
    def checkpoint(self, step: int) -> bool:
        folder = self.run_dir / "checkpoints" / f"step_{step:012d}"
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.save_model(tmp)
        if self.config.algo.name not in ON_POLICY:
            self.model.save_replay_buffer(tmp / "replay_buffer.pkl")
        self.state["num_timesteps"] = step
        self.state["next_eval"] = self._eval_cb.next_at
        self.state["next_checkpoint"] = self._ckpt_cb.next_at
        (tmp / "state.json").write_text(json.dumps(self.state, indent=2))
        with (tmp / RESUME_STATE).open("wb") as file:
            pickle.dump(self.resume_state(), file, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, folder)  # a checkpoint folder appears whole or not at all
        for old in sorted((self.run_dir / "checkpoints").glob("step_*[0-9]"))[:-CHECKPOINTS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
        return True

    def resume_state(self) -> dict[str, Any]:
        """What a checkpoint holds besides ``model.zip`` (weights, optimizer state, SB3's
        counters, the learning-rate progress, the episode statistics), ``vecnormalize.pkl``
        and ``state.json`` for a resumed run to continue bit for bit: the curriculum stage of
        the training env; the global RNGs (Python, numpy, torch; SB3 samples actions with
        torch's and shuffles minibatches with numpy's) and the action space's (SAC and TD3's
        random first steps); the training env's state (:meth:`PortfolioVectorEnv.get_state`:
        portfolios, episodes, each env's RNG; ``VecMonitor``'s running episode sums;
        ``VecNormalize``'s discounted returns, which its own file leaves out); the model's
        :data:`LOOP_ATTRIBUTES`; and what SB3's logger has yet to write
        (:class:`~marketarena.training.callbacks.RestoreLogValues`). Valid between updates
        only (see
        :class:`~marketarena.training.callbacks.EveryNTimesteps`)."""
        import torch

        norm, monitor, venv = env_layers(self.env)
        model = self.model
        return {
            "stage": self._stage,
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),  # noqa: NPY002 (SB3 draws from the global one)
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                "action_space": model.action_space.np_random.bit_generator.state,
            },
            "model": {
                name: getattr(model, name) for name in LOOP_ATTRIBUTES if hasattr(model, name)
            },
            "env": {
                "vector_env": venv.get_state(),
                "episode_returns": monitor.episode_returns,
                "episode_lengths": monitor.episode_lengths,
                "episode_count": monitor.episode_count,
                "returns": None if norm is None else norm.returns,
            },
            "log": RestoreLogValues.values_to_restore(model.logger),
        }

    def restore_resume_state(self, saved: dict[str, Any]) -> None:
        """Put :meth:`resume_state` back into the loaded model and the rebuilt training env.
        A checkpoint that ended a curriculum stage leaves the next stage's env to start
        fresh, as :meth:`switch_stage` does in the uninterrupted run."""
        import torch

        if saved["stage"] == self._stage:
            norm, monitor, venv = env_layers(self.env)
            env = saved["env"]
            venv.set_state(env["vector_env"])
            monitor.episode_returns = env["episode_returns"]
            monitor.episode_lengths = env["episode_lengths"]
            monitor.episode_count = env["episode_count"]
            if norm is not None:
                norm.returns = env["returns"]
            for name, value in saved["model"].items():
                setattr(self.model, name, value)  # learn() then continues without a reset
            self._log_values = saved["log"]
        elif self.config.mlflow.enabled:
            # our MLflow logger outlives a stage's learn(); SB3's own is made anew by each
            self._log_values = saved["log"]
        rng = saved["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])  # noqa: NPY002
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.model.action_space.np_random.bit_generator.state = rng["action_space"]

    # ----------------------------------------------------------------------- run
    @contextmanager
    def _torch_threads(self) -> Iterator[None]:
        """``algo.torch_threads`` torch threads for the block; the caller's afterwards."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.algo.torch_threads)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def build(self, resume_from: Path | None = None) -> None:
        """The training env and the model: new, or from ``resume_from``'s checkpoint. A config
        the algorithm refuses fails here (``train`` builds before it makes the run folder)."""
        from stable_baselines3.common.vec_env import VecNormalize

        c = self.config
        with self._torch_threads():
            if resume_from is None:
                self.env = self.stage_training_env(0)
                self.model = make_model(c, self.env)
                return
            # (load() reseeds the global RNGs: the saved states are restored last)
            self.model = algorithm_class(c.algo.name).load(
                resume_from / "model.zip", device=c.algo.device
            )
            self._stage = self.stage_at(self.state["num_timesteps"])
            self.env = self.stage_training_env(self._stage)
            if isinstance(self.env, VecNormalize):
                self.env = VecNormalize.load(str(resume_from / "vecnormalize.pkl"), self.env.venv)
            self.model.set_env(self.env)
            if c.algo.name not in ON_POLICY:
                self.model.load_replay_buffer(resume_from / "replay_buffer.pkl")
            saved = resume_from / RESUME_STATE
            if saved.exists():  # (a checkpoint written before it existed resumes inexactly)
                self.restore_resume_state(read_resume_state(saved))

    def run(self, resume_from: Path | None = None) -> TrainResult:
        """Train (from ``resume_from``'s checkpoint if given; built first unless
        :meth:`build` was called) with ``algo.torch_threads`` torch threads; the caller's
        thread count is restored afterwards."""
        if self.model is None:
            self.build(resume_from)
        with self._torch_threads():
            return self._run(resume_from)

    def _run(self, resume_from: Path | None) -> TrainResult:
        from stable_baselines3.common.logger import Logger

        c = self.config
        done = self.state["num_timesteps"]
        stage = 0 if resume_from is None else self.stage_at(done)
        if c.mlflow.enabled:
            self.model.set_logger(Logger(folder=None, output_formats=[MlflowOutputFormat()]))
        self._eval_cb = EveryNTimesteps(
            c.training.eval_every, self.validate, self.state["next_eval"]
        )
        self._ckpt_cb = EveryNTimesteps(
            c.training.checkpoint_every,
            self.checkpoint,
            self.state["next_checkpoint"],
            between_updates=True,
        )
        callbacks: list[Any] = [self._eval_cb, self._ckpt_cb]
        if self._log_values is not None:
            callbacks.append(RestoreLogValues(self._log_values))
        ends = self.stage_ends()
        progress = None
        if c.training.progress_bar:
            total = max(done, ends[-1])
            progress = RichProgress(total, done, f"{c.algo.name} {c.name}")
            callbacks.append(progress)
        self._progress = progress
        fresh = resume_from is None
        try:
            for i in range(stage, len(ends)):
                if self.state["stopped_early"]:
                    break
                if i != stage:
                    self.switch_stage(i)
                remaining = ends[i] - (0 if fresh else int(self.model.num_timesteps))
                if remaining > 0:
                    self.model.learn(remaining, callback=callbacks, reset_num_timesteps=fresh)
                    fresh = False
        finally:
            self._progress = None
            if progress is not None:
                progress.close()
        self.state["num_timesteps"] = int(self.model.num_timesteps)
        final = self.save_model(self.run_dir / "model")
        evaluated = [e["step"] for e in self.state["evaluations"]]
        if self.state["num_timesteps"] not in evaluated:  # the final model is a candidate too
            self.validate(self.state["num_timesteps"])
        self.adopt_unrecorded_best()
        (self.run_dir / "state.json").write_text(json.dumps(self.state, indent=2))
        best = self.run_dir / "best" / "model.zip"
        report_dir = None
        if c.training.validation_report:
            report_dir = self.validation_report(best if best.exists() else final)
        mlflow = tracking.active_mlflow()
        if mlflow is not None:
            for name in ("config.yaml", "manifest.json", "state.json"):
                mlflow.log_artifact(str(self.run_dir / name))
            mlflow.log_artifacts(str(self.run_dir / "model"), artifact_path="final_model")
            if best.exists():
                mlflow.log_artifacts(str(best.parent), artifact_path="best_model")
            if report_dir is not None:
                mlflow.log_artifacts(str(report_dir), artifact_path="validation")
            log_pyfunc_model(
                best.parent if best.exists() else final.parent, c.mlflow.registered_model
            )
        return TrainResult(
            run_dir=self.run_dir,
            model_path=final,
            best_model_path=best if best.exists() else None,
            run_id=self.state["mlflow_run_id"],
            best_validation=self.state["best_metrics"],
            timesteps=self.state["num_timesteps"],
            stopped_early=self.state["stopped_early"],
            evaluations=self.state["evaluations"],
        )

    # ---------------------------------------------------------------- curriculum
    def stage_ends(self) -> list[int]:
        """The step at which each curriculum stage ends, then the run's own env's end
        (``total_timesteps``): every stage is whole rollouts, so a resume lands in the same
        stage as the uninterrupted run."""
        ends, at = [], 0
        for stage in self.config.training.curriculum:
            at += steps_learn_will_take(self.model, stage.steps)
            ends.append(at)
        total = at + steps_learn_will_take(self.model, self.config.algo.total_timesteps - at)
        return [*ends, total]

    def stage_at(self, step: int) -> int:
        """The stage (``len(curriculum)``: the run's own env) that trains at ``step``."""
        ends = self.stage_ends()
        return next((i for i, end in enumerate(ends) if step < end), len(ends) - 1)

    def stage_training_env(self, index: int) -> Any:
        """The training env of stage ``index`` (the last index: the run's own env), seeded
        ``seed + index`` so that each stage sees its own episode starts."""
        c = self.config
        if index >= len(c.training.curriculum):
            env = make_training_env(c, self.data, self.ranges["train"])
        else:
            staged = c.model_copy(update={"env": c.stage_env(index)})
            data = load_universe(staged)
            env = make_training_env(staged, data, split_ranges(staged, data)["train"])
            if data.n_assets != self.data.n_assets:
                raise ConfigError(
                    f"training.curriculum.{index}.env: {data.name} has {data.n_assets} assets, "
                    f"the run's data {self.data.name} {self.data.n_assets}; a stage keeps the "
                    "universe size"
                )
        if index > 0:  # (stage 0's env is seeded by the model, with the run's seed)
            env.seed(c.seed + index)
        return env

    def switch_stage(self, index: int) -> None:
        """Train on stage ``index``'s env from here on, keeping the normalisation statistics
        (observation and return running moments) learned so far."""
        from stable_baselines3.common.vec_env import VecNormalize

        env = self.stage_training_env(index)
        if isinstance(env, VecNormalize) and isinstance(self.env, VecNormalize):
            if env.norm_obs:  # (without it VecNormalize has no observation moments)
                env.obs_rms = copy.deepcopy(self.env.obs_rms)
            env.ret_rms = copy.deepcopy(self.env.ret_rms)
        self.env.close()
        self.env, self._stage = env, index
        self.model.set_env(env)  # the next learn() resets it

    def validation_report(self, model_path: Path) -> Path:
        """The best model against the baselines over the validation split, written out."""
        c = self.config
        start, end = self.ranges["validation"]
        report = evaluate(
            EvaluationConfig(
                agents=(str(model_path.parent),),
                data=c.env.data,
                start=start,
                end=end,
                benchmark=None,
                rules=c.env.rules,
                window=c.env.window,
                features=c.env.features,
                universe=c.env.universe,
                title=f"{c.name}: best model on validation {start} to {end}",
            )
        )
        out = self.run_dir / "validation"
        report.write(out, results=False)
        return out


def read_resume_state(path: Path) -> dict[str, Any]:
    """A checkpoint's :data:`RESUME_STATE`; a damaged file is a :class:`DataError` naming it
    (checkpoints are written whole, so this is a file changed or truncated by hand)."""
    try:
        with path.open("rb") as file:
            state = pickle.load(file)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
        raise DataError(
            f"{path}: not a readable training state ({type(exc).__name__}); delete this "
            "checkpoint folder to resume from the one before it"
        ) from None
    if not isinstance(state, dict) or "rng" not in state:
        raise DataError(f"{path}: not a training state written by marketarena train")
    return state


def log_pyfunc_model(model_dir: Path, registered_model: str | None = None) -> None:
    """Log ``model_dir`` as an MLflow pyfunc model named ``model`` in the active run, and
    register it as a new version of ``registered_model`` when given."""
    import mlflow

    with warnings.catch_warnings():
        # MLflow nudges towards typed predict() signatures; ours takes arrays, by design
        warnings.filterwarnings("ignore", message=".*[Tt]ype hint", category=UserWarning)
        from marketarena.training import mlflow_model

        mlflow.pyfunc.log_model(
            name="model",
            python_model=mlflow_model.__file__,
            artifacts={"model_dir": str(model_dir)},
            pip_requirements=["stable-baselines3", "torch", "numpy"],
            registered_model_name=registered_model,
        )


def _free_run_dir(config: Config) -> Path:
    """``{output_dir}/{name}__{algo}__{seed}__{time}`` (``-1``, ``-2``, ... when taken)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = (
        Path(config.training.output_dir)
        / f"{config.name}__{config.algo.name}__{config.seed}__{stamp}"
    )
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path.resolve()


def _new_run_dir(config: Config) -> Path:
    """A new, empty run folder, named by :func:`_free_run_dir`."""
    while True:
        path = _free_run_dir(config)
        try:
            path.mkdir(parents=True)
        except FileExistsError:  # another run took the name in between
            continue
        return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*[0-9]"))
    return checkpoints[-1] if checkpoints else None


def train(
    config: Config | None = None,
    *,
    resume: str | Path | None = None,
    on_evaluation: Callable[[int, float], bool] | None = None,
    mlflow_parent_run_id: str | None = None,
) -> TrainResult:
    """Train from ``config``, or continue the run in folder ``resume`` from its last
    checkpoint (same config, same MLflow run).

    A new run's env and model are built before its folder is made, so a config the algorithm
    refuses leaves nothing behind; a new run that fails before its first checkpoint and its
    first validation has its folder removed. Ctrl-C removes nothing: it raises
    :class:`TrainingInterrupted`, which names the folder to resume.

    ``on_evaluation``: see :class:`Trainer`. ``mlflow_parent_run_id``: log this run nested
    under that one (a tuning study's run).
    """
    from stable_baselines3.common.utils import set_random_seed

    if (config is None) == (resume is None):
        raise ConfigError("give either a config or a run folder to resume")
    state, ckpt, unrecorded_best = None, None, None
    if resume is not None:
        run_dir = Path(resume).resolve()
        if not (run_dir / "config.yaml").exists():
            raise MissingFileError(f"{run_dir} is not a training run folder (no config.yaml)")
        config = load_config(run_dir / "config.yaml")
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            state = json.loads((ckpt / "state.json").read_text())
            best_file = run_dir / "best" / "score.json"
            if best_file.exists():  # a better model saved after the checkpoint
                best = json.loads(best_file.read_text())
                if state["best_score"] is None or best["metrics"]["step"] > state[
                    "best_metrics"
                ].get("step", -1):
                    unrecorded_best = best
        elif (run_dir / "state.json").exists():
            state = json.loads((run_dir / "state.json").read_text())
            state["num_timesteps"] = 0  # finished before its first checkpoint: start over
    else:
        # the folder is made once the env and the model are built: a config the algorithm
        # refuses fails before it exists
        assert config is not None
        run_dir = _free_run_dir(config)
    assert config is not None
    set_random_seed(config.seed)
    trainer = Trainer(config, run_dir, state, on_evaluation)
    trainer.unrecorded_best = unrecorded_best
    if resume is None:
        trainer.build()
        run_dir = trainer.run_dir = _new_run_dir(config)
        trainer.write_run_files()
    try:
        return _run_tracked(trainer, ckpt, mlflow_parent_run_id)
    except KeyboardInterrupt:
        raise TrainingInterrupted(run_dir, latest_checkpoint(run_dir)) from None
    except Exception:
        nothing_kept = latest_checkpoint(run_dir) is None and not trainer.state["evaluations"]
        if resume is None and nothing_kept:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run_tracked(
    trainer: Trainer, ckpt: Path | None, mlflow_parent_run_id: str | None
) -> TrainResult:
    """``trainer.run(ckpt)`` in the run's MLflow run (new, or the one it resumes) when
    tracking is on (MLflow is imported only then: a second a process otherwise)."""
    config, run_dir = trainer.config, trainer.run_dir
    if not config.mlflow.enabled:
        return trainer.run(ckpt)
    import mlflow

    tags = {
        "kind": "training",
        "algo": config.algo.name,
        "env_id": "marketarena/Portfolio-v0",
        "data": trainer.data.name,
        "data_sha256": trainer.data.content_hash(),
    }
    run_id = trainer.state["mlflow_run_id"]
    nesting = (
        {"nested": True, "parent_run_id": mlflow_parent_run_id} if mlflow_parent_run_id else {}
    )
    with tracking.mlflow_run(
        config.mlflow.experiment, run_dir.name, tags, run_id=run_id, **nesting
    ) as run:
        if run_id is None:
            trainer.state["mlflow_run_id"] = run.info.run_id
            mlflow.log_params(tracking.flatten(config.to_dict()))
            for split, (a, b) in trainer.ranges.items():
                mlflow.log_params({f"split.{split}.start": a, f"split.{split}.end": b})
        return trainer.run(ckpt)
