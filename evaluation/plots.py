"""PNG plots of backtest results: equity curves, drawdowns, rolling Sharpe, weights.

Figures are built with matplotlib's object-oriented API (``Figure``, rendered by Agg), never
through pyplot: nothing here needs a display or changes the caller's backend or open figures.
matplotlib is imported lazily. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marketarena.evaluation import metrics
from marketarena.evaluation.runner import BacktestResult

ROLLING_WINDOW = 63  # about a quarter of daily bars


def _figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure and its one axes, outside pyplot (so never shown, and no need to close it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def equity_curves(results: Sequence[BacktestResult], path: Path) -> Path:
    """Growth of 1 for every result (and the benchmark of the first that has one)."""
    fig, ax = _figure((10, 4.5))
    for res in results:
        ax.plot(res.dates, res.nav / res.nav[0], lw=1.2, label=res.agent)
    bench = next((r for r in results if r.benchmark is not None), None)
    if bench is not None and bench.benchmark is not None:
        ax.plot(
            bench.dates,
            bench.benchmark / bench.benchmark[0],
            "k--",
            lw=1.0,
            label=f"benchmark: {bench.benchmark_name}",
        )
    ax.set_ylabel("growth of 1 (after costs)")
    ax.set_title("Equity curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, path)


def drawdowns(results: Sequence[BacktestResult], path: Path) -> Path:
    fig, ax = _figure((10, 3.5))
    for res in results:
        dd = np.r_[0.0, metrics.drawdown_series(res.returns)]
        ax.plot(res.dates, dd * 100, lw=1.0, label=res.agent)
    ax.set_ylabel("drawdown (%)")
    ax.set_title("Drawdowns from the running peak")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, path)


def rolling_sharpe(
    results: Sequence[BacktestResult],
    path: Path,
    window: int = ROLLING_WINDOW,
    periods_per_year: int = metrics.PERIODS_PER_YEAR,
) -> Path:
    """Annualised Sharpe over a trailing window of ``window`` periods."""
    fig, ax = _figure((10, 3.5))
    for res in results:
        r = res.returns
        if len(r) < window:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(r, window)
        values = metrics.sharpe_ratio(windows.T, periods_per_year=periods_per_year)
        ax.plot(res.dates[window:], values, lw=1.0, label=res.agent)
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_ylabel(f"Sharpe ({window}-period)")
    ax.set_title("Rolling Sharpe ratio")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8)
    else:  # every run is shorter than the window
        ax.text(
            0.5,
            0.5,
            f"fewer than {window} periods: no rolling Sharpe",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    fig.autofmt_xdate()
    return _save(fig, path)


def weights(result: BacktestResult, path: Path, top: int = 8) -> Path:
    """Stacked weights: the ``top`` assets by average weight, the rest together, and cash."""
    w = result.weights
    assets = w[:, :-1]
    order = np.argsort(assets.mean(axis=0))[::-1]
    shown = order[:top]
    layers = [assets[:, j] for j in shown]
    labels = [result.symbols[j] for j in shown]
    if len(order) > top:
        layers.append(assets[:, order[top:]].sum(axis=1))
        labels.append("others")
    layers.append(w[:, -1])
    labels.append("cash")
    fig, ax = _figure((10, 3.5))
    ax.stackplot(result.dates, np.clip(np.vstack(layers), 0, None), labels=labels, lw=0)
    ax.set_ylim(0, max(1.0, float(np.clip(w, 0, None).sum(axis=1).max())))
    ax.set_ylabel("weight")
    ax.set_title(f"Weights: {result.agent}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.autofmt_xdate()
    return _save(fig, path)
