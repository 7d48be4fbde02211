"""Interactive tearsheet charts for ``report.html``, drawn with plotly.

Equity curves (with the benchmark), drawdowns, a monthly-returns heatmap and a daily-return
histogram per agent, rolling volatility and rolling beta to the benchmark, and stacked weights.
:func:`render` turns the figures into HTML fragments with plotly.js inlined once: the page
fetches nothing. plotly is imported lazily.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from marketarena.evaluation import metrics
from marketarena.evaluation.runner import BacktestResult

ROLLING_WINDOW = 63  # about a quarter of daily bars
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def monthly_returns_table(dates: ArrayLike, returns: ArrayLike) -> pd.DataFrame:
    """Compounded returns per calendar month: one row per year, columns 1..12 (NaN where a
    month has no returns). ``dates[i]`` is the date at the end of period ``i``."""
    series = pd.Series(np.asarray(returns, dtype=float), index=pd.DatetimeIndex(np.asarray(dates)))
    months = series.groupby([series.index.year, series.index.month])
    # compounded in log space by metrics.total_return: a 1e300 bar does not overflow a month
    grouped = months.agg(lambda month: float(metrics.total_return(month.to_numpy())))
    table = grouped.unstack()
    table = table.reindex(columns=range(1, 13))
    table.index.name, table.columns.name = "year", "month"
    return table


def rolling_volatility(
    returns: ArrayLike,
    window: int = ROLLING_WINDOW,
    periods_per_year: int = metrics.PERIODS_PER_YEAR,
) -> np.ndarray:
    """Annualised standard deviation (ddof 1) over a trailing window; NaN before it fills."""
    r = pd.Series(np.asarray(returns, dtype=float))
    return (r.rolling(window).std() * np.sqrt(periods_per_year)).to_numpy()


def rolling_beta(
    returns: ArrayLike, benchmark_returns: ArrayLike, window: int = ROLLING_WINDOW
) -> np.ndarray:
    """Covariance with the benchmark over its variance, over a trailing window."""
    r = pd.Series(np.asarray(returns, dtype=float))
    b = pd.Series(np.asarray(benchmark_returns, dtype=float))
    return (r.rolling(window).cov(b) / b.rolling(window).var()).to_numpy()


def _go() -> Any:
    """plotly's graph objects, imported on first use (plotly ships no type information)."""
    import plotly.graph_objects as go  # type: ignore[import-untyped]

    return go


def _benchmark(results: Sequence[BacktestResult]) -> BacktestResult | None:
    return next((r for r in results if r.benchmark is not None), None)


def _dates(values: np.ndarray) -> list[str]:
    return [str(d) for d in pd.DatetimeIndex(values).strftime("%Y-%m-%d")]


def _layout(fig: Any, title: str, yaxis: str, *, percent: bool = False) -> Any:
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        hovermode="x unified",
        legend={"font": {"size": 10}},
    )
    fig.update_yaxes(title_text=yaxis, tickformat=".0%" if percent else None)
    return fig


def equity_figure(results: Sequence[BacktestResult]) -> Any:
    go = _go()
    fig = go.Figure()
    for res in results:
        fig.add_trace(go.Scatter(x=_dates(res.dates), y=res.nav / res.nav[0], name=res.agent))
    bench = _benchmark(results)
    if bench is not None and bench.benchmark is not None:
        fig.add_trace(
            go.Scatter(
                x=_dates(bench.dates),
                y=bench.benchmark / bench.benchmark[0],
                name=f"benchmark: {bench.benchmark_name}",
                line={"color": "black", "dash": "dash"},
            )
        )
    fig.update_xaxes(rangeslider_visible=True)
    return _layout(fig, "Equity curves (growth of 1, after costs)", "growth of 1")


def drawdown_figure(results: Sequence[BacktestResult]) -> Any:
    go = _go()
    fig = go.Figure()
    for res in results:
        dd = np.r_[0.0, metrics.drawdown_series(res.returns)]
        fig.add_trace(go.Scatter(x=_dates(res.dates), y=dd, name=res.agent, fill="tozeroy"))
    return _layout(fig, "Drawdowns from the running peak", "drawdown", percent=True)


def monthly_heatmap(result: BacktestResult) -> Any:
    go = _go()
    table = monthly_returns_table(result.dates[1:], result.returns)
    z = table.to_numpy()
    text = [["" if np.isnan(v) else f"{v:.2%}" for v in row] for row in z]
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 0.01
    fig = go.Figure(
        go.Heatmap(
            # plain lists (None for a month without returns): readable in the page's JSON
            z=[[None if np.isnan(v) else float(v) for v in row] for row in z],
            x=list(MONTHS),
            y=[str(y) for y in table.index],
            text=text,
            texttemplate="%{text}",
            colorscale="RdYlGn",
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            name=result.agent,
            hovertemplate="%{y} %{x}: %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(type="category", autorange="reversed")
    fig = _layout(fig, f"Monthly returns: {result.agent}", "year")
    fig.update_layout(height=max(200, 80 + 40 * len(table)), hovermode="closest")
    return fig


def distribution_figure(results: Sequence[BacktestResult]) -> Any:
    go = _go()
    fig = go.Figure()
    for res in results:
        fig.add_trace(go.Histogram(x=res.returns, name=res.agent, opacity=0.6, nbinsx=60))
    bench = _benchmark(results)
    if bench is not None and bench.benchmark_returns is not None:
        fig.add_trace(
            go.Histogram(
                x=bench.benchmark_returns,
                name=f"benchmark: {bench.benchmark_name}",
                opacity=0.4,
                nbinsx=60,
                marker={"color": "black"},
            )
        )
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(tickformat=".1%", title_text="daily return")
    fig = _layout(fig, "Distribution of daily returns", "days")
    fig.update_layout(hovermode="closest")
    return fig


def rolling_volatility_figure(
    results: Sequence[BacktestResult],
    window: int = ROLLING_WINDOW,
    periods_per_year: int = metrics.PERIODS_PER_YEAR,
) -> Any:
    go = _go()
    fig = go.Figure()
    for res in results:
        vol = rolling_volatility(res.returns, window, periods_per_year)
        fig.add_trace(go.Scatter(x=_dates(res.dates[1:]), y=vol, name=res.agent))
    bench = _benchmark(results)
    if bench is not None and bench.benchmark_returns is not None:
        vol = rolling_volatility(bench.benchmark_returns, window, periods_per_year)
        fig.add_trace(
            go.Scatter(
                x=_dates(bench.dates[1:]),
                y=vol,
                name=f"benchmark: {bench.benchmark_name}",
                line={"color": "black", "dash": "dash"},
            )
        )
    title = f"Rolling {window}-day volatility (annualised)"
    return _layout(fig, title, "volatility", percent=True)


def rolling_beta_figure(results: Sequence[BacktestResult], window: int = ROLLING_WINDOW) -> Any:
    go = _go()
    fig = go.Figure()
    for res in results:
        if res.benchmark_returns is None:
            continue
        beta = rolling_beta(res.returns, res.benchmark_returns, window)
        fig.add_trace(go.Scatter(x=_dates(res.dates[1:]), y=beta, name=res.agent))
    fig.add_hline(y=1.0, line={"color": "black", "width": 0.6, "dash": "dot"})
    return _layout(fig, f"Rolling {window}-day beta to the benchmark", "beta")


def weights_figure(result: BacktestResult, top: int = 8) -> Any:
    """Stacked weights: the ``top`` assets by average weight, the rest as "other", and cash."""
    go = _go()
    w = np.asarray(result.weights, dtype=float)
    assets = w[:, :-1]
    order = np.argsort(assets.mean(axis=0))[::-1]
    layers = [(result.symbols[j], assets[:, j]) for j in order[:top]]
    if len(order) > top:
        layers.append(("other", assets[:, order[top:]].sum(axis=1)))
    layers.append(("cash", w[:, -1]))
    x = _dates(result.dates)
    fig = go.Figure()
    for name, values in layers:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=np.clip(values, 0.0, None),
                name=name,
                stackgroup="weights",
                mode="lines",
                line={"width": 0.5},
                hovertemplate="%{y:.1%}",
            )
        )
    fig.update_yaxes(range=[0, max(1.0, float(np.clip(w, 0, None).sum(axis=1).max()))])
    return _layout(fig, f"Weights: {result.agent}", "weight", percent=True)


def exposure_figure(results: Sequence[BacktestResult]) -> Any:
    """Gross exposure (sum of absolute asset weights) per agent over time, with a marker on
    each decision the risk layer changed (hover: which rules, how much weight they moved)."""
    go = _go()
    fig = go.Figure()
    for res in results:
        gross = np.abs(np.asarray(res.weights, dtype=float)[:, :-1]).sum(axis=1)
        fig.add_trace(
            go.Scatter(x=_dates(res.dates), y=gross.tolist(), name=res.agent, mode="lines")
        )
        by_date: dict[str, list[str]] = {}
        for record in res.interventions:
            by_date.setdefault(record["date"], []).append(
                f"{record['rule']} {record['amount']:.1%}"
            )
        if by_date:
            index = {d: i for i, d in enumerate(_dates(res.dates))}
            dates = [d for d in by_date if d in index]
            fig.add_trace(
                go.Scatter(
                    x=dates,
                    y=[float(gross[index[d]]) for d in dates],
                    name=f"risk rules: {res.agent}",
                    mode="markers",
                    marker={"size": 5, "symbol": "x"},
                    text=[", ".join(by_date[d]) for d in dates],
                    hovertemplate="%{x}: %{text}<extra></extra>",
                )
            )
    return _layout(
        fig, "Gross exposure (markers: risk-layer interventions)", "exposure", percent=True
    )


def sleeve_figures(result: BacktestResult, window: int = ROLLING_WINDOW) -> list[tuple[str, Any]]:
    """A multi-strategy allocator's sleeves (its ``diagnostics["sleeve_returns"]``): the
    correlation matrix of their returns over the whole run as a heatmap, and each pair's
    rolling ``window``-session correlation. Empty for other agents."""
    history = result.diagnostics.get("sleeve_returns")
    members = result.diagnostics.get("members")
    if not history or not members or len(history["returns"]) < 3:
        return []
    go = _go()
    returns = pd.DataFrame(history["returns"], index=history["dates"], columns=list(members))
    corr = returns.corr().fillna(0.0)
    heat = go.Figure(
        go.Heatmap(
            z=corr.to_numpy().tolist(),
            x=list(members),
            y=list(members),
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            text=[[f"{v:.2f}" for v in row] for row in corr.to_numpy()],
            texttemplate="%{text}",
        )
    )
    heat.update_yaxes(autorange="reversed")
    heat = _layout(heat, f"Sleeve correlation: {result.agent}", "")
    heat.update_layout(hovermode="closest")
    rolling = go.Figure()
    for i, a in enumerate(members):
        for b in members[i + 1 :]:
            values = returns[a].rolling(window).corr(returns[b])
            rolling.add_trace(
                go.Scatter(x=list(returns.index), y=values.tolist(), name=f"{a} ~ {b}")
            )
    rolling = _layout(
        rolling, f"Rolling {window}-session sleeve correlation: {result.agent}", "correlation"
    )
    return [
        (f"sleeve correlation: {result.agent}", heat),
        (f"rolling sleeve correlation: {result.agent}", rolling),
    ]


def figures(
    results: Sequence[BacktestResult],
    window: int = ROLLING_WINDOW,
    periods_per_year: int = metrics.PERIODS_PER_YEAR,
) -> list[tuple[str, Any]]:
    """``(name, figure)`` for every chart of the tearsheet, in page order."""
    out: list[tuple[str, Any]] = [
        ("equity", equity_figure(results)),
        ("drawdown", drawdown_figure(results)),
        ("distribution", distribution_figure(results)),
        ("rolling volatility", rolling_volatility_figure(results, window, periods_per_year)),
    ]
    if _benchmark(results) is not None:
        out.append(("rolling beta", rolling_beta_figure(results, window)))
    if any(res.interventions for res in results):  # risk rules were on
        out.append(("exposure", exposure_figure(results)))
    out += [(f"monthly returns: {res.agent}", monthly_heatmap(res)) for res in results]
    out += [(f"weights: {res.agent}", weights_figure(res)) for res in results]
    for res in results:
        out += sleeve_figures(res, window)
    return out


def render(named: Sequence[tuple[str, Any]]) -> str:
    """HTML fragments of the figures; plotly.js inlined once (in the first), never fetched."""
    parts = []
    for i, (name, fig) in enumerate(named):
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=i == 0,
            config={"responsive": True, "displaylogo": False},
        )
        parts.append(f'<figure class="chart" data-name="{_attr(name)}">{div}</figure>')
    return "\n".join(parts)


def _attr(text: str) -> str:
    return html.escape(text, quote=True)
