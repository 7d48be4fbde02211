"""The ``marketarena`` command line. Parses arguments and calls library functions.

``main(argv)`` returns the exit code, so tests drive it in-process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from marketarena.envs.data import (
    BUNDLED,
    DataValidationError,
    bundled_path,
    coverage_report,
    load_file,
    read_raw,
)

EXIT_OK, EXIT_ERROR, EXIT_INVALID_DATA = 0, 1, 2


def _data_path(spec: str) -> str:
    return str(bundled_path(spec)) if spec in BUNDLED else spec


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.demo import DemoConfig, run_demo
    from marketarena.evaluation.report import print_table, summary_table

    config = DemoConfig(start=args.start, end=args.end, seed=args.seed)
    console.print(
        f"[bold]marketarena demo[/bold]: {config.data} from {config.start} to {config.end}, "
        f"decisions after each close, fills at the next close, "
        f"{config.commission_bps:g} bps commission + {config.slippage_bps:g} bps slippage"
    )
    results = run_demo(config)
    print_table(summary_table(results, title="Baselines, test period"), console)
    return EXIT_OK


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

    demo = sub.add_parser("demo", help="baselines on the bundled 20-stock panel")
    demo.add_argument("--start", default="2018-01-02", help="first decision date")
    demo.add_argument("--end", default="2022-12-28", help="last mark date")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_cmd_demo)

    data = sub.add_parser("data", help="inspect and validate market data files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, text in (
        ("coverage", "per-symbol first/last date, rows and gaps"),
        ("validate", "coverage, then load with validation; exit 2 when invalid"),
    ):
        p = data_sub.add_parser(name, help=text)
        p.add_argument("path", help=f"CSV/Parquet file, or a bundled name: {sorted(BUNDLED)}")
        p.add_argument(
            "--missing", choices=["error", "drop_symbol", "ffill"], default="error",
            help="policy for ragged coverage (validate only)",
        )  # fmt: skip
        p.set_defaults(handler=_cmd_data)
    return parser


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if console is None:
        console = Console()
        if not console.is_terminal:  # pipes and CI logs: don't squeeze tables into 80 columns
            console = Console(width=160)
    try:
        return args.handler(args, console)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
