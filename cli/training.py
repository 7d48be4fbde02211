"""``marketarena train`` and ``tune``: SB3 training from a YAML config, Optuna studies."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from marketarena.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_backend_options,
    backend_options,
    shell_path,
)
from marketarena.envs.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    tr = subparsers.add_parser(
        "train",
        help="train an SB3 agent from a YAML config",
        description="Train PPO, A2C, SAC or TD3 on PortfolioVectorEnv; evaluates on the "
        "validation split, checkpoints, logs to MLflow.",
    )
    tr.add_argument("--config", help="YAML config (see configs/)")
    tr.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set algo.total_timesteps=5000 --set seed=1",
    )
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    tr.set_defaults(handler=handle_train)

    tu = subparsers.add_parser(
        "tune",
        help="tune hyperparameters with Optuna",
        description="Optuna search on validation data only; trials share a study in a local "
        "journal file or an RDB (PostgreSQL) storage, so many workers can join.",
    )
    tu.add_argument("--config", required=True, help="base YAML config (with a tuning section)")
    tu.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    tu.add_argument("--n-trials", type=int, help="trials for this worker to run")
    tu.add_argument("--timeout", type=float, help="seconds for this worker")
    tu.add_argument(
        "--n-jobs", "--jobs", dest="n_jobs", type=int, help="trials in parallel threads"
    )
    tu.add_argument("--storage", help="default optuna.journal; or postgresql://..., sqlite:///...")
    tu.add_argument("--study", help="study name (default: the config's name)")
    tu.add_argument("--sampler", choices=["tpe", "random"])
    tu.add_argument("--pruner", choices=["median", "halving", "none"])
    tu.add_argument(
        "--retrain",
        action="store_true",
        help="retrain the best config and evaluate it once on the test split",
    )
    tu.add_argument("--output", default="tuning", help="folder for trials and results")
    add_backend_options(
        tu, "the trials on Ray Tune (Optuna's sampler, ASHA early stopping; no --storage)"
    )
    tu.set_defaults(handler=handle_tune)


def handle_train(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.tracking import tracking_uri, ui_command
    from marketarena.training.config import load_config
    from marketarena.training.train import TrainingInterrupted, train

    try:
        if args.resume:
            if args.config or args.set:
                raise ConfigError(
                    "--resume continues a run as it was configured: no --config/--set"
                )
            result = train(resume=args.resume)
        else:
            if not args.config and not args.set:
                raise ConfigError("give --config FILE (see configs/) and/or --set key=value")
            result = train(load_config(args.config, args.set or ()))
    except TrainingInterrupted as stop:
        console.print(
            resume_training_hint(stop.run_dir, stop.checkpoint), highlight=False, soft_wrap=True
        )
        return EXIT_INTERRUPTED
    best = result.best_validation
    console.print(
        f"[bold]trained[/bold] {result.timesteps:,} timesteps"
        + (" (stopped early)" if result.stopped_early else ""),
        highlight=False,
    )
    if best:
        console.print(
            "best on validation (step {step:,}): Sharpe {sharpe:.2f}, return {total_return:+.2%}, "
            "max drawdown {max_drawdown:+.2%}".format(**best),
            highlight=False,
        )
    console.print(f"model: {result.best_model_path or result.model_path}", highlight=False)
    console.print(f"run folder: {result.run_dir}", highlight=False)
    if result.run_id:
        console.print(
            f"MLflow run {result.run_id} in {tracking_uri()}; view it: {ui_command()}",
            highlight=False,
        )
    return EXIT_OK


def resume_training_hint(run_dir: Path, checkpoint: Path | None) -> str:
    """The line Ctrl-C prints: the command that resumes the run in ``run_dir``."""
    command = f"marketarena train --resume {shell_path(run_dir)}"
    if checkpoint is None:
        return f"interrupted before the first checkpoint: {command} starts the run again"
    return f"interrupted: resume with {command}"


def handle_tune(args: argparse.Namespace, console: Console) -> int:
    from marketarena.training.config import load_config
    from marketarena.training.tune import tune

    overrides = list(args.set or ())
    for flag, key in (
        ("n_trials", "n_trials"),
        ("timeout", "timeout"),
        ("n_jobs", "n_jobs"),
        ("storage", "storage"),
        ("study", "study"),
        ("sampler", "sampler"),
        ("pruner", "pruner"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"tuning.{key}={value}")
    if args.retrain:
        overrides.append("tuning.retrain=true")
    config = load_config(args.config, overrides)
    backend = backend_options(args)

    def on_trial(trial) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        console.print(f"trial {trial.number}: {trial.state.name.lower()} {value}", highlight=False)

    try:
        result = tune(config, out_dir=args.output, on_trial=on_trial, backend=backend)
    except KeyboardInterrupt:
        console.print(
            "interrupted: the study is saved; run the same command again to resume", highlight=False
        )
        return EXIT_INTERRUPTED
    console.print(
        f"study {result.study_name} in {result.storage}: {result.n_trials} trials "
        f"({result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed)",
        highlight=False,
    )
    if result.best_value is not None:
        console.print(
            f"best {config.tuning.objective}: {result.best_value:.4f} with {result.best_params}",
            highlight=False,
        )
        console.print(
            f"best config: {result.best_config_path}  (marketarena train --config "
            f"{result.best_config_path})",
            highlight=False,
        )
    if result.test:
        t = result.test
        console.print(
            f"test split, once: Sharpe {t['sharpe']:.2f}, deflated Sharpe "
            f"{t['deflated_sharpe']:.2f} over {int(t['n_trials'])} trials",
            highlight=False,
        )
    return EXIT_OK
