"""An agent's performance split by market regime, and the report's regime and sector charts.

The regime of a period ``t -> t+1`` (one return of a :class:`BacktestResult`) is the label known
at ``t``, the decision time: the detector's label on the last row of its series on or before
the period's first date (:meth:`~marketarena.envs.regimes.Regimes.labels_at`). A regime's
metrics are those of its periods' returns concatenated in time order, as if the agent had
traded only on those days: days, total and annualised return, Sharpe ratio, maximum drawdown
(within the concatenated returns, not the run's), and the share of the agent's PnL (the sum of
its NAV changes in the regime over the run's total NAV change: negative when the regime lost
money, above 1 when the others lost; NaN when the run made exactly nothing).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table

from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.regimes import REGIME_KINDS, UNKNOWN, Regimes, detect_regimes, sector_rotation
from marketarena.evaluation import metrics
from marketarena.evaluation.runner import BacktestResult

#: the per-regime metrics, in table order (keys ``regime_<kind>_<regime>_<metric>``)
REGIME_METRICS = (
    "days",
    "total_return",
    "annualized_return",
    "sharpe",
    "max_drawdown",
    "pnl_share",
)
#: window of the sector relative strength in the report (rows; a quarter of sessions)
SECTOR_WINDOW = 63
#: shading colours of the regime chart, by regime name (grey for others, e.g. unknown)
_COLOURS = {
    "bull": "rgba(44, 160, 44, 0.2)",
    "calm": "rgba(44, 160, 44, 0.2)",
    "low": "rgba(44, 160, 44, 0.2)",
    "sideways": "rgba(255, 191, 0, 0.25)",
    "normal": "rgba(255, 191, 0, 0.25)",
    "bear": "rgba(214, 39, 40, 0.2)",
    "turbulent": "rgba(214, 39, 40, 0.2)",
    "high": "rgba(214, 39, 40, 0.2)",
}
_GREY = "rgba(127, 127, 127, 0.15)"


@dataclass(frozen=True)
class RegimeStats:
    """One regime's share of one run (see the module docstring)."""

    regime: str
    days: int
    total_return: float
    annualized_return: float
    sharpe: float
    max_drawdown: float
    pnl_share: float


def check_kinds(kinds: Sequence[str]) -> None:
    """A :class:`ConfigError` naming any kind that is not a detector."""
    unknown = [k for k in kinds if k not in REGIME_KINDS]
    if unknown:
        raise ConfigError(f"unknown regime kind(s) {unknown}; the kinds are: {list(REGIME_KINDS)}")


def period_labels(result: BacktestResult, regimes: Regimes) -> np.ndarray:
    """The label of each of ``result``'s periods: the one known at its first date."""
    return regimes.labels_at(result.dates[:-1])


def split_by_regime(
    result: BacktestResult,
    regimes: Regimes,
    *,
    periods_per_year: int = metrics.PERIODS_PER_YEAR,
    risk_free: float = 0.0,
) -> list[RegimeStats]:
    """Per regime (every named one, then ``unknown`` if a period had no label yet): the
    metrics of the run's returns in it. A regime without a day has NaN metrics."""
    labels = period_labels(result, regimes)
    returns = result.returns
    pnl = np.diff(result.nav)
    total_pnl = float(pnl.sum())
    codes = list(range(len(regimes.names))) + ([UNKNOWN] if (labels == UNKNOWN).any() else [])
    out = []
    for code in codes:
        mask = labels == code
        r = returns[mask]
        days = int(mask.sum())
        out.append(
            RegimeStats(
                regime=regimes.name(code),
                days=days,
                total_return=float(metrics.total_return(r)) if days else math.nan,
                annualized_return=float(metrics.annualized_return(r, periods_per_year))
                if days
                else math.nan,
                sharpe=float(
                    metrics.sharpe_ratio(r, risk_free=risk_free, periods_per_year=periods_per_year)
                )
                if days
                else math.nan,
                max_drawdown=float(metrics.max_drawdown(r)) if days else math.nan,
                pnl_share=float(pnl[mask].sum()) / total_pnl if total_pnl != 0 else math.nan,
            )
        )
    return out


def flat_regime_metrics(kind: str, stats: Sequence[RegimeStats]) -> dict[str, float]:
    """``regime_<kind>_<regime>_<metric>`` for metrics.json, metrics.csv and MLflow."""
    out: dict[str, float] = {}
    for s in stats:
        values = asdict(s)
        for metric in REGIME_METRICS:
            out[f"regime_{kind}_{s.regime}_{metric}"] = float(values[metric])
    return out


def clip_regimes(regimes: Regimes, start: np.datetime64, end: np.datetime64) -> Regimes:
    """Rows from the last one on or before ``start`` (whose label the first period takes)
    through ``end``."""
    first = max(int(np.searchsorted(regimes.dates, start, side="right")) - 1, 0)
    last = int(np.searchsorted(regimes.dates, end, side="right"))
    probs = regimes.probabilities
    return Regimes(
        kind=regimes.kind,
        dates=regimes.dates[first:last],
        prices=regimes.prices[first:last],
        labels=regimes.labels[first:last],
        names=regimes.names,
        probabilities=None if probs is None else probs[first:last],
        source=regimes.source,
        params=regimes.params,
    )


def evaluation_regimes(
    kinds: Sequence[str], data: MarketData, start: str | None, end: str | None
) -> dict[str, Regimes]:
    """Each kind's regimes (defaults) on ``data``'s equal-weighted index, detected on the
    data up to ``end`` and kept from the last row on or before ``start`` (the evaluation's
    requested dates; ``None``: the data's ends)."""
    check_kinds(kinds)
    lo = data.dates[0] if start is None else np.datetime64(start, "D")
    hi = data.dates[-1] if end is None else np.datetime64(end, "D")
    return {
        kind: clip_regimes(detect_regimes(kind, data, end=hi), lo, hi)
        for kind in dict.fromkeys(kinds)
    }


def evaluation_sector_rotation(
    data: MarketData, start: str, end: str, window: int = SECTOR_WINDOW
) -> tuple[pd.DataFrame | None, str]:
    """The sector relative strength over the evaluation's dates, or None and why not (the
    sector map does not cover the universe, or the data is too short)."""
    try:
        frame, leader = sector_rotation(data, window=window)
    except DataError as exc:
        return None, f"Sector rotation not shown: {exc}."
    frame = frame.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    counts = leader.loc[frame.index].value_counts()
    if counts.empty:
        return frame, "Sector rotation: no date of the evaluation has a full window yet."
    top = ", ".join(f"{sector} {n}" for sector, n in counts.items())
    return frame, (
        f"Sector rotation ({window}-session return of each sector's equal-weighted members "
        f"minus the universe's): days as the leading sector: {top}."
    )


# --------------------------------------------------------------------------- tables
def _cell(value: float, kind: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "pct":
        return f"{value:+.2%}"
    return f"{value:.2f}"


_KINDS = {
    "days": "int",
    "total_return": "pct",
    "annualized_return": "pct",
    "sharpe": "num",
    "max_drawdown": "pct",
    "pnl_share": "pct",
}
_HEADERS = {
    "days": "days",
    "total_return": "return",
    "annualized_return": "CAGR",
    "sharpe": "Sharpe",
    "max_drawdown": "max DD",
    "pnl_share": "PnL share",
}


def regime_table(regimes: Regimes, rows: Sequence[tuple[str, Sequence[RegimeStats]]]) -> Table:
    """The terminal table of one kind: a line per agent and regime."""
    table = Table(
        title=f"By {regimes.kind} regime ({regimes.source}; the label known at each decision)",
        title_justify="left",
        caption="a regime's returns concatenated; max DD within them; PnL share of the run's",
        caption_justify="left",
    )
    table.add_column("agent", no_wrap=True)
    table.add_column("regime", no_wrap=True)
    for metric in REGIME_METRICS:
        table.add_column(_HEADERS[metric], justify="right", no_wrap=True)
    for agent, stats in rows:
        for s in stats:
            values = asdict(s)
            table.add_row(
                escape(agent),
                s.regime,
                *(_cell(float(values[m]), _KINDS[m]) for m in REGIME_METRICS),
            )
    return table


def regime_html(regimes: Regimes, rows: Sequence[tuple[str, Sequence[RegimeStats]]]) -> str:
    """The same table as HTML."""
    head = "".join(f"<th>{h}</th>" for h in ["agent", "regime", *_HEADERS.values()])
    body = ""
    for agent, stats in rows:
        for s in stats:
            values = asdict(s)
            cells = "".join(
                f"<td>{_cell(float(values[m]), _KINDS[m])}</td>" for m in REGIME_METRICS
            )
            body += f"<tr><td>{html.escape(agent)}</td><td>{s.regime}</td>{cells}</tr>"
    return (
        f'<table class="regimes" data-kind="{regimes.kind}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


# --------------------------------------------------------------------------- charts
def _go() -> Any:
    import plotly.graph_objects as go  # type: ignore[import-untyped]

    return go


def _dates(values: np.ndarray) -> list[str]:
    return [str(d) for d in np.asarray(values).astype("datetime64[D]")]


def regime_figure(regimes: Regimes) -> Any:
    """The series the regimes were detected on (1 at its first row), its background shaded
    by regime: each row's band spans the period from that row to the next (one day for the
    last), coloured by its label (green calm/bull/low, amber, red turbulent/bear/high)."""
    go = _go()
    dates = np.asarray(regimes.dates).astype("datetime64[D]")
    x = _dates(dates)
    level = regimes.prices / regimes.prices[0]
    low, high = float(level.min()), float(level.max())
    pad = 0.05 * (high - low or high)
    bottom, top = low - pad, high + pad
    days = np.r_[np.diff(dates).astype(np.int64), 1]
    widths = days * 86_400_000  # a date axis measures bar widths in milliseconds
    fig = go.Figure()
    for code in [*range(len(regimes.names)), UNKNOWN]:
        here = np.flatnonzero(regimes.labels == code)
        if not here.size:
            continue
        name = regimes.name(code)
        fig.add_trace(
            go.Bar(
                x=[x[i] for i in here],
                y=[top - bottom] * here.size,
                base=bottom,
                width=widths[here].tolist(),
                offset=0,
                name=name,
                marker={"color": _COLOURS.get(name, _GREY), "line": {"width": 0}},
                hoverinfo="skip",
            )
        )
    fig.add_trace(
        go.Scatter(x=x, y=level.tolist(), name=regimes.source, line={"color": "black", "width": 1})
    )
    fig.update_yaxes(range=[bottom, top], title_text="level (1 at the start)")
    fig.update_layout(
        title=f"{regimes.source}, shaded by {regimes.kind} regime",
        template="plotly_white",
        height=380,
        barmode="overlay",
        bargap=0,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        hovermode="x unified",
        legend={"font": {"size": 10}},
    )
    return fig


def sector_figure(frame: pd.DataFrame, window: int = SECTOR_WINDOW) -> Any:
    """Each sector's relative strength over time (one line per sector)."""
    go = _go()
    fig = go.Figure()
    x = _dates(frame.index.to_numpy())
    for sector in frame.columns:
        values = frame[sector].to_numpy()
        y = [None if not np.isfinite(v) else float(v) for v in values]
        fig.add_trace(go.Scatter(x=x, y=y, name=str(sector)))
    fig.add_hline(y=0.0, line={"color": "black", "width": 0.6, "dash": "dot"})
    fig.update_yaxes(tickformat=".0%", title_text="return minus the universe's")
    fig.update_layout(
        title=f"Sector relative strength ({window}-session return minus the universe's)",
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        hovermode="x unified",
        legend={"font": {"size": 10}},
    )
    return fig


def figure_html(name: str, fig: Any) -> str:
    """One chart for a page that already inlined plotly.js (the tearsheet's first chart)."""
    div = fig.to_html(
        full_html=False, include_plotlyjs=False, config={"responsive": True, "displaylogo": False}
    )
    return f'<figure class="chart" data-name="{html.escape(name, quote=True)}">{div}</figure>'


def sector_frame_to_dict(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "dates": _dates(frame.index.to_numpy()),
        "sectors": [str(c) for c in frame.columns],
        "values": [
            [None if not np.isfinite(v) else float(v) for v in row] for row in frame.to_numpy()
        ],
    }


def sector_frame_from_dict(value: dict[str, Any]) -> pd.DataFrame:
    values = np.array(
        [[np.nan if v is None else v for v in row] for row in value["values"]], dtype=float
    ).reshape(len(value["dates"]), len(value["sectors"]))
    return pd.DataFrame(
        values,
        index=pd.DatetimeIndex(np.asarray(value["dates"], dtype="datetime64[D]"), name="date"),
        columns=value["sectors"],
    )
