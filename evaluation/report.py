"""Terminal reports: rich tables of backtest summaries and data coverage."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from marketarena.envs.data import SymbolCoverage
from marketarena.evaluation.runner import BacktestResult


def _pct(x: float) -> str:
    return "nan" if x != x else f"{x:+.2%}"


def summary_table(results: Sequence[BacktestResult], title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left")
    table.add_column("agent", no_wrap=True)
    for col in ("NAV", "return", "CAGR", "vol", "Sharpe", "max DD", "costs"):
        table.add_column(col, justify="right", no_wrap=True)
    for res in results:
        s = res.summary()
        table.add_row(
            escape(res.agent),
            f"{s['final_nav']:,.2f}",
            _pct(s["total_return"]),
            _pct(s["cagr"]),
            "nan" if s["volatility"] != s["volatility"] else f"{s['volatility']:.2%}",
            "nan" if s["sharpe"] != s["sharpe"] else f"{s['sharpe']:.2f}",
            _pct(s["max_drawdown"]),
            f"{s['total_costs']:,.2f}",
        )
    return table


def coverage_table(rows: Sequence[SymbolCoverage], title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left")
    for col in ("symbol", "first date", "last date", "rows", "gaps"):
        table.add_column(col, justify="right" if col in ("rows", "gaps") else "left")
    for r in rows:
        table.add_row(escape(r.symbol), r.first_date, r.last_date, str(r.rows), str(r.gaps))
    return table


def print_table(table: Table, console: Console | None = None) -> None:
    (console or Console()).print(table)
