"""``marketarena data coverage|validate``: inspect and validate market data files."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from marketarena.cli.common import EXIT_INVALID_DATA, EXIT_OK
from marketarena.envs.data import (
    BUNDLED,
    DataValidationError,
    bundled_path,
    coverage_report,
    load_path,
    read_raw,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect and validate market data files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, text in (
        ("coverage", "per-symbol first/last date, rows and gaps"),
        ("validate", "coverage, then load with validation; exit 2 when invalid"),
    ):
        p = data_sub.add_parser(name, help=text)
        p.add_argument(
            "path",
            help="CSV/Parquet file, AI-Trader prices (merged.jsonl or a folder of "
            f"daily_prices_*.json), or a bundled name: {sorted(BUNDLED)}",
        )
        p.add_argument(
            "--date-format",
            metavar="FORMAT",
            help="how the file writes its dates, e.g. %%d/%%m/%%Y (default: YYYY-MM-DD only)",
        )
        p.add_argument(
            "--missing",
            choices=["error", "drop_symbol", "ffill", "point_in_time"],
            default="error",
            help="policy for ragged coverage (validate only)",
        )
        p.set_defaults(handler=handle_data)


def _data_path(spec: str) -> str:
    return str(bundled_path(spec)) if spec in BUNDLED else spec


def handle_data(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.report import coverage_table, print_table

    path = _data_path(args.path)
    try:
        rows = coverage_report(read_raw(path), source=path, date_format=args.date_format)
    except (DataValidationError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_INVALID_DATA
    print_table(coverage_table(rows, title=f"coverage of {escape(args.path)}"), console)
    if args.data_command == "coverage":
        return EXIT_OK
    try:
        data = load_path(path, missing=args.missing, date_format=args.date_format)
    except DataValidationError as exc:
        console.print(f"[red]invalid:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_INVALID_DATA
    console.print(f"[green]valid:[/green] {escape(repr(data))}", highlight=False)
    for note in data.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    return EXIT_OK
