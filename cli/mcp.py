"""``marketarena mcp serve``: a backtest that an outside MCP client trades, tool call by tool
call (:mod:`marketarena.service.mcp_server`, :mod:`marketarena.evaluation.mcp_session`)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
from typing import Any

from rich.console import Console

from marketarena.cli.common import (
    EXIT_OK,
    RISK_HELP,
    parse_date,
    parse_risk,
    parse_rules,
)
from marketarena.cli.runs import STORE_HELP
from marketarena.envs.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("mcp", help="serve a backtest to MCP clients")
    sub = group.add_subparsers(dest="mcp_command", required=True)
    sv = sub.add_parser(
        "serve",
        help="a persisted backtest whose decisions an MCP client makes with the toolbox",
        description="Start (or resume) a persisted backtest at its first open decision and "
        "serve the point-in-time toolbox over MCP: prices, indicators, news, portfolio, "
        "rules, a calculator and set_target_weights, which fills the decision at the next bar "
        "and moves to the next one; or, with --tools aitrader, AI-Trader's tools, whose buy and "
        "sell orders fill when finish_session ends the trading session. Every day is stored "
        "like a backtest's (marketarena positions, leaderboard); run the same command again "
        "after a crash to resume. Tool "
        "calls are serialised: one client trades a run.",
    )
    sv.add_argument("--data", help="bundled name or path (default sp500_20)")
    sv.add_argument("--start", help="first decision date of a new run")
    sv.add_argument("--end", help="last date of a new run")
    sv.add_argument(
        "--run", help="the run's name (default mcp@START); an unfinished run of it resumes"
    )
    sv.add_argument("--store", default="runs.sqlite", help=STORE_HELP)
    sv.add_argument("--seed", type=int, help="the env's seed (default 0)")
    sv.add_argument("--rule", action="append", metavar="KEY=VALUE", help="trading rule")
    sv.add_argument("--risk", action="append", metavar="KEY=VALUE", help=RISK_HELP)
    sv.add_argument("--window", type=int, help="observation window (default: the env's)")
    sv.add_argument(
        "--news",
        metavar="FILE",
        help="a news file for the get_news tool (get_information with --tools aitrader)",
    )
    sv.add_argument(
        "--tools",
        choices=("marketarena", "aitrader"),
        help="the tool set: marketarena (default for a new run: the point-in-time toolbox) or "
        "aitrader (AI-Trader's buy, sell, get_price_local, add, multiply, get_information, "
        "plus finish_session, which ends each trading session); a resumed run keeps its own",
    )
    sv.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default: the client starts this command) or streamable HTTP at /mcp",
    )
    sv.add_argument(
        "--host", default="127.0.0.1", help="HTTP address, loopback only (default 127.0.0.1)"
    )
    sv.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    sv.set_defaults(handler=handle_serve)


def handle_serve(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.mcp_session import DrivenBacktest
    from marketarena.evaluation.saved_runs.store import RunNotFound, RunStore
    from marketarena.service.mcp_server import build_server, serve_http, serve_stdio

    start, end = parse_date(args.start, "--start"), parse_date(args.end, "--end")
    options: dict[str, Any] = {
        "data": args.data,
        "start": start,
        "end": end,
        "seed": args.seed,
        "rules": parse_rules(args.rule) if args.rule else None,
        "risk": parse_risk(args.risk) if args.risk else None,
        "window": args.window,
        "news": args.news,
        "tools": args.tools,
    }
    if args.run is None and start is None:
        raise ConfigError("give --run NAME (to resume a run) or --start and --end (a new run)")
    run_id = args.run or f"mcp@{start}"
    if args.transport == "http":
        _check_address(args.host, args.port)
    log = Console(stderr=True, highlight=False, soft_wrap=True)  # stdout may be the protocol

    def progress(date: str, fraction: float) -> None:
        log.print(f"run {run_id}: {date} done ({fraction:.0%})")

    store = RunStore(args.store)
    try:
        info = store.run(run_id)
    except RunNotFound:
        info = None
    if info is not None:
        session = DrivenBacktest.resume(store, run_id, progress, options)
        how = f"resumed after {info.days} stored day(s)"
    else:
        if not (start and end):
            raise ConfigError("a new run needs --start and --end")
        session = DrivenBacktest.start(
            store,
            run_id,
            args.data or "sp500_20",
            start,
            end,
            seed=args.seed or 0,
            news=args.news,
            tools=args.tools or "marketarena",
            progress=progress,
            options={k: v for k, v in options.items() if v is not None},
            rules=options["rules"] or {},
            risk=options["risk"] or {},
            **({} if args.window is None else {"window": args.window}),
        )
        how = "new"
    session.open()
    where = "stdio" if args.transport == "stdio" else f"http://{args.host}:{args.port}/mcp"
    now = "over" if session.toolbox is None else f"deciding {session.toolbox.date}"
    log.print(f"run {run_id} ({how}) in {store.path}: {now}; serving MCP on {where}")
    server = build_server(session)
    try:
        if args.transport == "stdio":
            serve_stdio(server)
        else:
            serve_http(server, args.host, args.port)
    finally:
        session.close()
        done = store.run(run_id)
        log.print(
            f"run {run_id}: {done.status}, {done.days} day(s) stored in {store.path}"
            + ("" if done.status == "finished" else "; the same command resumes it")
        )
    return EXIT_OK


def _check_address(host: str, port: int) -> None:
    """Refuse, before any run is created, an address that is not this machine's loopback
    (the MCP server has no authentication) and a port that cannot be bound."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name: what it resolves to (localhost: 127.0.0.1)
        try:
            address = ipaddress.ip_address(socket.gethostbyname(host))
        except OSError:
            address = None
    if address is None or not address.is_loopback:
        raise ConfigError(
            f"--host {host}: the MCP server has no authentication, so it binds a loopback "
            "address only (127.0.0.1, localhost)"
        )
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"--host/--port: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
