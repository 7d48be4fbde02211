"""``marketarena bench``: agents x diagnostic tasks x seeds (see ``marketarena.training.bench``)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from marketarena.agents.registry import SPEC_HELP
from marketarena.cli.common import (
    EXIT_OK,
    add_backend_options,
    add_llm_options,
    backend_line,
    backend_options,
    llm_options,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    be = subparsers.add_parser(
        "bench",
        help="agents x diagnostic tasks x seeds, normalised scores with intervals",
        description="Train RL agents on each diagnostic task's train split (selected on its "
        "validation split), score every agent on the test split (0 = the task's baseline, "
        "1 = its reference, after costs), and aggregate over the planted tasks: IQM with "
        "stratified-bootstrap intervals, probability of improvement, turnover and costs.",
    )
    be.add_argument(
        "--agent",
        action="append",
        metavar="SPEC",
        help="repeatable (default ppo): ppo, a2c, sac, td3 (configs/bench/<algo>.yaml), "
        "<algo>:path/to/config.yaml, untrained:<algo>, or an agent spec: "
        + SPEC_HELP
        + "; each task's reference and baseline are always scored, as reference and baseline",
    )
    be.add_argument(
        "--task",
        action="append",
        metavar="TASK",
        help="repeatable: a task name (Momentum) or id (marketarena/Momentum-v0), 'planted' "
        "(the default: the six tasks with a known optimum) or 'all' (with SP500)",
    )
    be.add_argument("--seeds", type=int, default=5, help="seeds per agent and task (0..N-1)")
    be.add_argument("--timesteps", type=int, help="training steps (default: each config's)")
    be.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    be.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="where jobs are scored: test (default; nothing tunes on it) or validation (to "
        "compare settings without looking at the test split; optimistic for RL agents, whose "
        "model is selected there)",
    )
    add_backend_options(be, "every (agent, task, seed) job a Ray task, the report the same")
    add_llm_options(be)
    be.add_argument("--output", default="reports/bench", help="report and training runs folder")
    be.add_argument("--mlflow", action="store_true", help="a parent run, a nested run per job")
    be.add_argument("--experiment", default="marketarena-bench")
    be.set_defaults(handler=handle_bench)


def handle_bench(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from marketarena.evaluation.tracking import tracking_uri, ui_command
    from marketarena.training.bench import BenchConfig, run_bench

    config = BenchConfig(
        agents=tuple(args.agent or ("ppo",)),
        tasks=tuple(args.task or ("planted",)),
        seeds=args.seeds,
        timesteps=args.timesteps,
        output=args.output,
        mlflow=args.mlflow,
        reps=args.reps,
        experiment=args.experiment,
        llm=llm_options(args),
        split=args.split,
        backend=backend_options(args),
    )
    config.validate()  # bad input is one line, before any progress bar
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("bench", total=None)

        def update(done: int, total: int, description: str) -> None:
            progress.update(task, completed=done, total=total, description=description)

        report = run_bench(config, progress=update)
    rows = report.table()
    table = Table(
        title=f"normalised score on the {args.split} split (0 = baseline, "
        "1 = reference), after costs",
        title_justify="left",
    )
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("agent", "task") else "right")
    for row in rows:
        table.add_row(*(escape(v) for v in row.values()))
    console.print(table)
    for line in report.lines():
        console.print(escape(line), highlight=False)
    where = backend_line(report.settings.get("backend"))
    if where:
        console.print(where, highlight=False)
    console.print(
        f"wrote {args.output}: results.json, results.csv, aggregates.json, "
        "performance_profiles.png, report.html",
        highlight=False,
    )
    if report.settings["mlflow_run_id"]:
        console.print(
            f"MLflow run {report.settings['mlflow_run_id']} in {tracking_uri()}; view it: "
            f"{ui_command()}",
            highlight=False,
        )
    return EXIT_OK
