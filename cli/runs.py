"""``marketarena backtest``, ``positions``, ``leaderboard`` and ``runs upgrade``: persisted runs
in a run store (a SQLite file or a PostgreSQL URL)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from marketarena.agents.registry import SPEC_HELP
from marketarena.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RISK_HELP,
    add_llm_options,
    add_yes_option,
    confirm_llm_requests,
    llm_options,
    parse_date,
    parse_risk,
    parse_rules,
    print_report,
    shell_path,
)
from marketarena.envs.errors import ConfigError

if TYPE_CHECKING:
    from marketarena.evaluation.runner import BacktestResult
    from marketarena.evaluation.saved_runs.persisted import Positions
    from marketarena.evaluation.saved_runs.store import RunStore

STORE_HELP = "the runs database: a SQLite file or a postgresql://user:password@host/db URL"


def register(subparsers: argparse._SubParsersAction) -> None:
    bt = subparsers.add_parser(
        "backtest",
        help="a persisted backtest: start, --resume after a crash, --continue with new data",
        description="Backtest one agent, recording every completed day in SQLite; --resume "
        "continues an interrupted run from its last completed day with identical results; "
        "--continue extends a finished run to a later --end without recomputing its days.",
    )
    bt.add_argument("--agent", metavar="SPEC", help=f"a new run's agent: {SPEC_HELP}")
    bt.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    bt.add_argument(
        "--continue", dest="continue_run", metavar="RUN", help="extend a finished run to --end"
    )
    bt.add_argument("--run", help="name of a new run (default: AGENT@START)")
    bt.add_argument(
        "--data",
        help="bundled name or path (default sp500_20; with --continue: "
        "newer data whose earlier dates are unchanged)",
    )
    bt.add_argument("--start")
    bt.add_argument("--end")
    bt.add_argument("--seed", type=int, default=0)
    add_yes_option(bt)
    bt.add_argument(
        "--rule",
        action="append",
        metavar="KEY=VALUE",
        help="trading rule, e.g. --rule preset=aitrader",
    )
    bt.add_argument("--risk", action="append", metavar="KEY=VALUE", help=RISK_HELP)
    bt.add_argument("--window", type=int, help="observation window (default: the env's)")
    bt.add_argument("--store", default="runs.sqlite", help=STORE_HELP)
    add_llm_options(bt)
    bt.set_defaults(handler=handle_backtest)

    pos = subparsers.add_parser(
        "positions", help="fills, holdings, turnover and holding periods of a run or an agent"
    )
    which = pos.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="one run")
    which.add_argument("--agent", metavar="SPEC", help="every run of this agent spec")
    pos.add_argument("--store", default="runs.sqlite", help=STORE_HELP)
    pos.add_argument("--start")
    pos.add_argument("--end")
    pos.add_argument("--symbol")
    pos.add_argument("--limit", type=int, default=20, help="latest fills to print")
    pos.add_argument("--output", help="folder for holdings.csv, fills.csv, holding_periods.csv")
    pos.set_defaults(handler=handle_positions)

    lb = subparsers.add_parser("leaderboard", help="finished runs over the same dates, ranked")
    lb.add_argument("runs", nargs="*", help="run names (default: every finished run)")
    lb.add_argument("--store", default="runs.sqlite", help=STORE_HELP)
    lb.add_argument("--output", help="folder for the report")
    lb.set_defaults(handler=handle_leaderboard)

    maintain = subparsers.add_parser("runs", help="maintain a run store")
    maintain_sub = maintain.add_subparsers(dest="runs_command", required=True)
    upgrade = maintain_sub.add_parser(
        "upgrade",
        help="rewrite the pickled checkpoints an older marketarena stored in the safe format",
        description="Unpickle each checkpoint an older marketarena wrote and store it again in "
        "the safe JSON format, so that its runs can be resumed and continued. Unpickling can "
        "run code: only for a store you trust, said with --trust.",
    )
    upgrade.add_argument("store", help=STORE_HELP)
    upgrade.add_argument(
        "--trust", action="store_true", help="I trust this store's pickles (required)"
    )
    upgrade.set_defaults(handler=handle_runs_upgrade)


def handle_backtest(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.saved_runs import persisted
    from marketarena.evaluation.saved_runs.store import RunStore

    modes = [bool(args.resume), bool(args.continue_run), bool(args.agent)]
    if sum(modes) != 1:
        raise ConfigError("give one of --agent (a new run), --resume RUN or --continue RUN")
    start, end = parse_date(args.start, "--start"), parse_date(args.end, "--end")
    # only a new run creates the database; resuming or continuing needs the one it is in
    store = RunStore(args.store, create=bool(args.agent))
    run_id = args.resume or args.continue_run or args.run or f"{args.agent}@{start}"
    try:
        result = _backtest(args, store, run_id, start, end, console)
    except KeyboardInterrupt:
        console.print(
            _resume_backtest_hint(store, run_id, args.store), highlight=False, soft_wrap=True
        )
        return EXIT_INTERRUPTED
    print_report(persisted.run_report(result), console)
    console.print(
        f"run {result.settings['run_id']} stored in {store.path} ({len(result.nav) - 1} days)",
        highlight=False,
    )
    return EXIT_OK


def _resume_backtest_hint(store: RunStore, run_id: str, store_path: str) -> str:
    """What Ctrl-C prints: how to resume ``run_id`` when the store has it unfinished."""
    from marketarena.evaluation.saved_runs.store import RunNotFound, is_url

    try:
        info = store.run(run_id)
    except RunNotFound:  # stopped before the run was created: nothing to resume
        return "interrupted before the run started: nothing was stored"
    if info.status == "finished":
        return f"interrupted: run {run_id} is finished"
    # a URL without its password: the hint is printed
    where = shlex.quote(store.url) if is_url(store_path) else shell_path(store_path)
    return (
        f"interrupted after {info.days} completed day(s): resume with marketarena backtest "
        f"--resume {shlex.quote(run_id)} --store {where}"
    )


def _backtest(
    args: argparse.Namespace,
    store: RunStore,
    run_id: str,
    start: str | None,
    end: str | None,
    console: Console,
) -> BacktestResult:
    """Run ``run_id`` as ``args`` ask: a new run, a resumed one or a continued one."""
    from rich.progress import Progress

    from marketarena.evaluation.saved_runs import persisted
    from marketarena.evaluation.tracking import tracking_uri

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("backtest", total=1.0)

        def update(date: str, fraction: float) -> None:
            progress.update(task, completed=min(fraction, 1.0), description=date)

        if args.resume:
            result = persisted.resume_backtest(
                store, run_id, progress=update, llm=llm_options(args)
            )
        elif args.continue_run:
            if not end:
                raise ConfigError("--continue needs --end NEW_DATE")
            result = persisted.continue_backtest(
                store, run_id, end, data=args.data, progress=update, llm=llm_options(args)
            )
        else:
            if not (start and end):
                raise ConfigError("a new run needs --start and --end")
            rules = parse_rules(args.rule)
            risk = parse_risk(args.risk)
            window = {} if args.window is None else {"window": args.window}
            from marketarena.evaluation.evaluate import EvaluationConfig, llm_request_estimates

            planned = EvaluationConfig(
                agents=(args.agent,),
                data=args.data or "sp500_20",
                start=start,
                end=end,
                llm=llm_options(args),
            )
            confirm_llm_requests(llm_request_estimates(planned), args.yes, console)
            result = persisted.start_backtest(
                store,
                run_id,
                args.agent,
                args.data or "sp500_20",
                start,
                end,
                seed=args.seed,
                rules=rules,
                risk=risk,
                llm=llm_options(args),
                tracking_uri=tracking_uri(),
                progress=update,
                **window,
            )
    return result


def handle_positions(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.saved_runs.persisted import load_positions
    from marketarena.evaluation.saved_runs.store import RunStore

    start, end = parse_date(args.start, "--start"), parse_date(args.end, "--end")
    store = RunStore(args.store, create=False)
    runs = [store.run(args.run)] if args.run else store.runs_of(args.agent)
    shown = 0
    for info in runs:
        positions = load_positions(store, info.run_id, start, end, args.symbol)
        if positions.days.empty:
            console.print(
                f"run {info.run_id} has no completed day from {args.start or 'its start'} to "
                f"{args.end or 'its end'} (its last completed day: {info.last_date or 'none'})",
                highlight=False,
            )
            continue
        out = Path(args.output) / info.run_id if args.output and len(runs) > 1 else args.output
        _print_positions(positions, args.limit, out, console)
        shown += 1
    return EXIT_OK if shown else EXIT_ERROR


def _print_positions(
    positions: Positions, limit: int, output: str | Path | None, console: Console
) -> None:
    from rich.table import Table

    held = Table(
        title=f"holdings of {positions.info.run_id} on {positions.last_date}", title_justify="left"
    )
    for col in ("symbol", "shares", "weight"):
        held.add_column(col, justify="left" if col == "symbol" else "right")
    for row in positions.holdings().itertuples():
        held.add_row(row.symbol, f"{row.shares:,.4g}", f"{row.weight:.1%}")
    held.add_row("CASH", f"{positions.cash:,.2f}", f"{positions.cash_weight:.1%}")
    console.print(held)
    fills = positions.fills
    trades = Table(title=f"fills ({len(fills)})", title_justify="left")
    for col in ("date", "symbol", "side", "shares", "price", "cost"):
        trades.add_column(col, justify="left" if col in ("date", "symbol", "side") else "right")
    for row in fills.tail(limit).itertuples():
        trades.add_row(
            row.date,
            row.symbol,
            row.side,
            f"{row.shares:,.4g}",
            f"{row.price:,.2f}",
            f"{row.cost:,.2f}",
        )
    console.print(trades)
    console.print(positions.summary(), highlight=False)
    if output:
        out = positions.write(output)
        console.print(f"wrote {out}: holdings.csv, fills.csv, holding_periods.csv", highlight=False)


def handle_leaderboard(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.saved_runs.persisted import leaderboard
    from marketarena.evaluation.saved_runs.store import RunStore

    store = RunStore(args.store, create=False)
    report = leaderboard(store, args.runs)
    print_report(report, console)
    if args.output:
        report.write(args.output)
        console.print(f"wrote {args.output}", highlight=False)
    return EXIT_OK


def handle_runs_upgrade(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.saved_runs.store import RunStore

    store = RunStore(args.store, create=False)
    try:
        converted = store.upgrade_checkpoints(trust=args.trust)
    finally:
        store.close()
    if not converted:
        console.print(f"{store.path}: no pickled checkpoints, nothing to upgrade", highlight=False)
    for run_id in converted:
        console.print(f"run {run_id}: checkpoint rewritten in the safe format", highlight=False)
    return EXIT_OK
