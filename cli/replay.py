"""``marketarena replay``: AI-Trader trade logs through the simulator, as a leaderboard."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from marketarena.cli.common import EXIT_ERROR, EXIT_OK, RISK_HELP, parse_risk, print_report


def register(subparsers: argparse._SubParsersAction) -> None:
    rp = subparsers.add_parser(
        "replay",
        help="replay AI-Trader trade logs through the simulator",
        description="Replay AI-Trader position.jsonl logs under its rules (whole shares, no "
        "costs, fills at the open) and print a leaderboard with full risk metrics; every day "
        "where a log and the simulator disagree is reported.",
    )
    rp.add_argument(
        "--prices",
        required=True,
        help="AI-Trader prices: merged.jsonl or a folder of daily_prices_*.json",
    )
    rp.add_argument("--log", action="append", required=True, help="a position.jsonl; repeatable")
    rp.add_argument("--benchmark", help="a series in AI-Trader's format, e.g. QQQ's json")
    rp.add_argument("--rules", default="aitrader", help="rules preset (default aitrader)")
    rp.add_argument(
        "--risk",
        action="append",
        metavar="KEY=VALUE",
        help=RISK_HELP + "; the log's book is the target the rules trim, and the differences "
        "then show what they changed",
    )
    rp.add_argument("--show-differences", type=int, default=10, help="differences to list per log")
    rp.add_argument("--strict", action="store_true", help="exit 1 when any log differs")
    rp.add_argument("--output", help="folder for the report and differences.csv")
    rp.set_defaults(handler=handle_replay)


def handle_replay(args: argparse.Namespace, console: Console) -> int:
    from marketarena.envs.aitrader import load_aitrader, load_benchmark_series
    from marketarena.evaluation.saved_runs.replay import (
        differences_frame,
        replay_logs,
        replay_report,
    )

    risk = parse_risk(args.risk)
    data = load_aitrader(args.prices)
    benchmark = load_benchmark_series(args.benchmark) if args.benchmark else None
    replays = replay_logs(args.log, data, rules=args.rules, benchmark=benchmark, risk=risk)
    report = replay_report(replays, data, args.log)
    print_report(report, console)
    for r in replays:
        console.print(f"{r.name}: {r.summary}", highlight=False)
        for d in r.differences[: args.show_differences]:
            console.print(f"  {d}", highlight=False)
    if args.output:
        files = report.write(args.output)
        differences_frame(replays).to_csv(Path(args.output) / "differences.csv", index=False)
        console.print(
            f"wrote {args.output}: {files['html'].name}, differences.csv", highlight=False
        )
    return EXIT_OK if not any(r.differences for r in replays) or not args.strict else EXIT_ERROR
