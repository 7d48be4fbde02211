"""``marketarena paper``: an agent trading a live (or replayed) feed, recorded in a run store
like a backtest; ``--resume`` continues a paper run after a crash, Ctrl-C or a feed's end."""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from marketarena.agents.registry import SPEC_HELP
from marketarena.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RISK_HELP,
    add_llm_options,
    llm_options,
    parse_date,
    parse_risk,
    parse_rules,
    shell_path,
)
from marketarena.cli.runs import STORE_HELP
from marketarena.envs.errors import ConfigError, MarketArenaError

if TYPE_CHECKING:
    from marketarena.evaluation.saved_runs.paper import PaperBar, PaperSession
    from marketarena.evaluation.saved_runs.store import RunStore


def register(subparsers: argparse._SubParsersAction) -> None:
    from marketarena.evaluation.saved_runs.paper import FEED_HELP

    p = subparsers.add_parser(
        "paper",
        help="paper trading: an agent on each new bar of a live or replayed feed",
        description="Run an agent on each new bar set of a feed under the backtest's rules "
        "(decide after the bar's close, fill at the next bar), recording every bar in the run "
        "store like `backtest` (positions, leaderboard and the API read it). The run starts "
        "all cash after --data's history up to --start. Ctrl-C stops it; --resume continues "
        "it from its last recorded bar. Daily bars, or the intraday bars (--interval 5min, ...) "
        "of an intraday --data; bar sets outside the --calendar's sessions (for intraday "
        "bars: its trading hours) are ignored and counted.",
    )
    p.add_argument("--agent", metavar="SPEC", help=f"a new run's agent: {SPEC_HELP}")
    p.add_argument("--resume", metavar="RUN", help="continue a paper run from its last bar")
    p.add_argument("--run", help="name of a new run (default: paper:AGENT@START)")
    p.add_argument("--feed", required=True, action="append", help=FEED_HELP)
    p.add_argument("--data", help="a new run's history: bundled name or path (default sp500_20)")
    p.add_argument(
        "--start", help="a new run's first mark, all cash (default: the history's last date)"
    )
    p.add_argument(
        "--interval",
        default="1d",
        help="bar interval: 1d (default) or --data's intraday one (1min, 5min, 15min, 1h)",
    )
    p.add_argument(
        "--calendar", default="XNYS", help="exchange calendar of sessions (exchange_calendars)"
    )
    p.add_argument(
        "--speed", type=float, default=5.0, help="replay:DATA: bar sets a second (default 5)"
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="stop when the feed brings no bar for this long (default: wait for more)",
    )
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--until", help="the last session to trade: stop after its bar set")
    stop.add_argument("--bars", type=int, help="stop after recording this many bars")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rule", action="append", metavar="KEY=VALUE", help="trading rule, e.g. commission_bps=10"
    )
    p.add_argument("--risk", action="append", metavar="KEY=VALUE", help=RISK_HELP)
    p.add_argument("--window", type=int, help="observation window (default: the env's)")
    p.add_argument("--store", default="runs.sqlite", help=STORE_HELP)
    add_llm_options(p)
    p.set_defaults(handler=handle_paper)


def handle_paper(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.saved_runs import paper
    from marketarena.evaluation.saved_runs.store import RunStore
    from marketarena.evaluation.tracking import tracking_uri

    if bool(args.agent) == bool(args.resume):
        raise ConfigError("give one of --agent (a new paper run) or --resume RUN")
    if args.resume:
        given = [
            flag
            for flag, value in (
                ("--data", args.data),
                ("--start", args.start),
                ("--rule", args.rule),
                ("--risk", args.risk),
                ("--window", args.window),
                ("--run", args.run),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"--resume continues run {args.resume!r} with the settings it began with: "
                f"drop {', '.join(given)}"
            )
    for feed_spec in args.feed:
        paper.check_feed(feed_spec)
    start = parse_date(args.start, "--start")
    until = parse_date(args.until, "--until")
    if args.bars is not None and args.bars < 1:
        raise ConfigError(f"--bars must be >= 1, got {args.bars}")
    if args.idle_timeout is not None and not args.idle_timeout > 0:
        raise ConfigError(f"--idle-timeout must be > 0 seconds, got {args.idle_timeout}")
    if not args.speed > 0:
        raise ConfigError(f"--speed must be > 0 bar sets a second, got {args.speed}")
    store = RunStore(args.store, create=bool(args.agent))
    if args.resume:
        opened = paper.resume_paper(store, args.resume, llm=llm_options(args))
        run_id = args.resume
    else:
        run_id = args.run or f"paper:{args.agent}@{start or 'latest'}"
        window = {} if args.window is None else {"window": args.window}
        opened = paper.start_paper(
            store,
            run_id,
            args.agent,
            args.data or "sp500_20",
            start=start,
            interval=args.interval,
            calendar=args.calendar,
            seed=args.seed,
            rules=parse_rules(args.rule),
            risk=parse_risk(args.risk),
            llm=llm_options(args),
            tracking_uri=tracking_uri(),
            **window,
        )
    hint = (
        f"marketarena paper --resume {shlex.quote(run_id)} --store {_where(store, args.store)} "
        + " ".join(f"--feed {shlex.quote(f)}" for f in args.feed)
    )
    with opened as session:
        console.print(
            f"paper run {run_id}: {session.spec['agent']} on {len(session.symbols)} symbols, "
            f"{session.spec['paper']['interval']} bars, {session.calendar_name} sessions "
            f"(times in UTC and {session.timezone}); last recorded bar {session.last_date}",
            highlight=False,
            soft_wrap=True,
        )
        with paper.open_feed(
            args.feed, session, speed=args.speed, idle_timeout=args.idle_timeout, until=until
        ) as feed:
            try:
                paper.run_paper(
                    session,
                    feed,
                    until=until,
                    bars=args.bars,
                    on_bar=lambda bar: _print_bar(bar, session, console),
                )
            except MarketArenaError as exc:  # an outage, an invalid bar, a refused key
                problem = " ".join(str(exc).split())  # one line, a list of problems included
                console.print(
                    f"[red]error:[/red] {escape(problem)}; the run is kept up to "
                    f"{session.last_date}: resume with {hint}",
                    highlight=False,
                    soft_wrap=True,
                )
                return EXIT_ERROR
            except BaseException as exc:
                # Ctrl-C inside the feed's event loop can surface as another error raised
                # while the feed winds down (the cancelled read, its closing generator)
                if not _interrupted(exc):
                    raise
                console.print(
                    f"interrupted after bar {session.last_date}: resume with {hint}",
                    highlight=False,
                    soft_wrap=True,
                )
                return EXIT_INTERRUPTED
            finally:
                _print_counts(session, feed.stats.as_dict(), console)
    console.print(
        f"run {run_id} stored in {store.path} ({session.step} bars, last {session.last_date}); "
        f"continue it with {hint}",
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_OK


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, or an error raised while handling it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__context__
    return False


def _where(store: RunStore, location: str) -> str:
    """The store as a command to paste names it (a URL without its password)."""
    from marketarena.evaluation.saved_runs.store import is_url

    return shlex.quote(store.url) if is_url(location) else shell_path(location)


def _print_bar(bar: PaperBar, session: PaperSession, console: Console) -> None:
    local = bar.end.tz_convert(session.timezone)
    console.print(
        f"{bar.date} close {bar.end:%H:%M} UTC ({local:%H:%M %Z})  decided {bar.decided}  "
        f"NAV {bar.nav:,.2f}  turnover {bar.turnover:.3f}  costs {bar.costs:,.2f}  "
        f"fills {bar.fills}",
        highlight=False,
        soft_wrap=True,
    )


def _print_counts(session: PaperSession, stats: dict[str, object], console: Console) -> None:
    counts = session.counts
    console.print(f"paper: {counts.line()}", highlight=False, soft_wrap=True)
    for problem in counts.problems[-5:]:
        console.print(f"  rejected: {problem}", highlight=False, soft_wrap=True)
    shown = {k: v for k, v in stats.items() if k not in ("events", "gap_spans") and v}
    console.print(
        "feed: " + (", ".join(f"{k} {v}" for k, v in shown.items()) or "nothing received"),
        highlight=False,
        soft_wrap=True,
    )
