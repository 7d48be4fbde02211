"""``marketarena indicators list|show``: the registered indicators, and one on a dataset."""

from __future__ import annotations

import argparse
import inspect

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from marketarena.cli.common import EXIT_OK
from marketarena.envs.cache import cache_dir
from marketarena.envs.data import BUNDLED, resolve_data
from marketarena.envs.errors import ConfigError
from marketarena.envs.indicators import (
    available_indicators,
    compute_indicator_cached,
    describe_params,
    resolve_indicator,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "indicators", help="list the technical indicators, or show one on a dataset"
    )
    sub = group.add_subparsers(dest="indicators_command", required=True)
    listing = sub.add_parser(
        "list", help="every indicator: parameters, lookback, inputs, source, description"
    )
    listing.set_defaults(handler=handle_list)
    show = sub.add_parser(
        "show", help="an indicator's description and parameters, and its last values on data"
    )
    show.add_argument("name", help="an indicator name with its parameters, e.g. rsi_14")
    show.add_argument(
        "--data",
        default="sp500_20",
        help=f"a bundled dataset ({', '.join(sorted(BUNDLED))}) or a file (default: sp500_20)",
    )
    show.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="default: all of them")
    show.add_argument("--last", type=int, default=5, metavar="N", help="dates to show (default: 5)")
    show.set_defaults(handler=handle_show)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:,.4f}"


def handle_list(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="indicators (write parameters after the name: rsi_14, bb_pctb_20_2)")
    for column in ("name", "parameters (defaults)", "lookback", "inputs", "source", "description"):
        table.add_column(column)
    for spec in available_indicators():
        defaults = dict(spec.defaults)
        table.add_row(
            spec.name,
            describe_params(defaults) or "-",
            str(spec.lookback(defaults)),
            ", ".join(spec.inputs),
            escape(spec.source),
            escape(spec.doc),
        )
    console.print(table)
    return EXIT_OK


def handle_show(args: argparse.Namespace, console: Console) -> int:
    if args.last < 1:
        raise ConfigError(f"--last must be at least 1, got {args.last}")
    resolved = resolve_indicator(args.name)
    data = resolve_data(args.data)
    if args.symbols:
        data = data.select(args.symbols)
    values, hit = compute_indicator_cached(data, args.name)
    spec = resolved.spec
    params = describe_params(resolved.params) or "none"
    folder = cache_dir()
    if folder is None:
        cache = "off (MARKETARENA_CACHE_DIR=off): computed"
    else:
        cache = "hit (read from" if hit else "miss (computed and stored in"
        cache = f"{cache} {folder / 'indicator'})"
    doc = inspect.cleandoc(spec.function.__doc__ or "")
    console.print(f"[bold]{resolved.name}[/bold]  ({escape(spec.source)})", highlight=False)
    if doc:
        console.print(escape(doc), highlight=False)
    console.print(
        f"parameters: {params}\nlookback: {resolved.lookback} rows (NaN before)\n"
        f"inputs: {', '.join(spec.inputs)}\ndata: {escape(data.name)}, {data.n_periods} rows, "
        f"{data.dates[0]}..{data.dates[-1]}\ncache: {escape(cache)}",
        highlight=False,
    )
    rows = slice(max(0, data.n_periods - args.last), data.n_periods)
    table = Table(title=f"{resolved.name}, last {rows.stop - rows.start} dates")
    table.add_column("symbol")
    for date in data.dates[rows]:
        table.add_column(str(date), justify="right")
    for j, symbol in enumerate(data.symbols):
        table.add_row(symbol, *(_number(v) for v in values[rows, j]))
    console.print(table)
    return EXIT_OK
