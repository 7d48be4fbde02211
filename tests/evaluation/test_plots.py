"""PNG plots: every function writes a PNG, and neither importing the module nor calling it
changes matplotlib's backend or leaves a pyplot figure open (a notebook's backend stays)."""

from __future__ import annotations

import importlib

import matplotlib
import numpy as np
import pytest

from marketarena.evaluation import plots
from marketarena.evaluation.runner import BacktestResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _result(agent: str, n: int = 80, seed: int = 0) -> BacktestResult:
    rng = np.random.default_rng(seed)
    nav = 10_000.0 * np.cumprod(np.r_[1.0, 1.0 + rng.normal(0.0005, 0.01, n - 1)])
    w = rng.dirichlet(np.ones(4), size=n)  # three assets and cash
    return BacktestResult(
        agent=agent,
        data_name="hand",
        symbols=("A", "B", "C"),
        dates=np.datetime64("2024-01-01") + np.arange(n),
        nav=nav,
        weights=w,
        turnover=np.zeros(n - 1),
        costs=np.zeros(n - 1),
        benchmark=np.linspace(100.0, 110.0, n),
        benchmark_name="line",
    )


@pytest.fixture
def svg_backend():
    """A backend that is not the default, as a notebook or a GUI would have; restored after."""
    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    yield "svg"
    matplotlib.use(previous)


def test_plots_leave_the_backend_and_pyplot_alone(svg_backend, tmp_path):
    import matplotlib.pyplot as plt

    open_figures = plt.get_fignums()
    importlib.reload(plots)  # what importing the module does
    results = [_result("one"), _result("two", seed=1)]
    paths = [
        plots.equity_curves(results, tmp_path / "equity.png"),
        plots.drawdowns(results, tmp_path / "drawdown.png"),
        plots.rolling_sharpe(results, tmp_path / "sharpe.png", window=21),
        plots.weights(results[0], tmp_path / "weights.png", top=2),
    ]
    assert matplotlib.get_backend() == svg_backend
    assert plt.get_fignums() == open_figures
    for path in paths:
        assert path.read_bytes().startswith(PNG_SIGNATURE), path
