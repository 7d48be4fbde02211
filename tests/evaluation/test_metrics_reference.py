"""Our metrics against independent references, on real daily returns.

The references: empyrical-reloaded (import name ``empyrical``; a dev extra), pandas for skewness
and kurtosis, and a direct scipy transcription of the probabilistic and deflated Sharpe ratios.
The data: the bundled ``sp500_20`` closes (1990-2022) as simple daily returns of a few stocks
and of the daily-rebalanced equal-weight average, and the ``sp500_index`` benchmark on the same
dates.

Where the conventions differ (see the module docstring of ``metrics``) the test computes the
conversion or pins the documented difference:

* ``risk_free``: ours is an annual rate, empyrical's a per-period one:
  ``(1 + rf) ** (1 / 252) - 1``.
* ``information_ratio`` is empyrical's ``excess_sharpe`` times ``sqrt(252)``.
* ``profit_factor`` is empyrical's ``omega_ratio`` with a zero threshold.
* With missing periods, our CAGR and VaR use the valid periods; empyrical's CAGR counts the
  missing ones and its VaR is NaN.
* With ties at the VaR, our CVaR averages every return at or below it; empyrical averages a
  fixed count of the lowest returns.
* With no downside, our Sortino ratio (like any zero-denominator ratio) is NaN; empyrical's is
  ``inf``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from marketarena.envs import load_dataset
from marketarena.evaluation import metrics as m

ep = pytest.importorskip("empyrical", reason="pip install empyrical-reloaded (a dev extra)")
stats = pytest.importorskip("scipy.stats")

PPY = 252
RTOL = 1e-9


def _returns(close: np.ndarray) -> np.ndarray:
    return close[1:] / close[:-1] - 1.0


_STOCKS = load_dataset("sp500_20")
_INDEX = load_dataset("sp500_index")
STOCK_RETURNS = _returns(_STOCKS.close)
BENCHMARK = _returns(_INDEX.close)[:, 0]
SERIES = {
    "AAPL": STOCK_RETURNS[:, _STOCKS.symbols.index("AAPL")],
    "JNJ": STOCK_RETURNS[:, _STOCKS.symbols.index("JNJ")],
    "RRC": STOCK_RETURNS[:, _STOCKS.symbols.index("RRC")],  # many zero days, deep drawdowns
    "equal_weight": STOCK_RETURNS.mean(axis=1),
    "equal_weight_2008": STOCK_RETURNS.mean(axis=1)[4500:4800],  # a short, falling window
}
SLICE_2008 = slice(4500, 4800)


def test_the_data_is_aligned():
    assert np.array_equal(_STOCKS.dates, _INDEX.dates)
    assert STOCK_RETURNS.shape == (len(_STOCKS.dates) - 1, 20)
    assert not np.isnan(STOCK_RETURNS).any()


def _benchmark_for(name: str) -> np.ndarray:
    return BENCHMARK[SLICE_2008] if name.endswith("2008") else BENCHMARK


def _per_period(rf: float) -> float:
    return (1 + rf) ** (1 / PPY) - 1


@pytest.mark.parametrize("name", list(SERIES))
def test_return_and_drawdown_metrics_match_empyrical(name):
    r = SERIES[name]
    assert m.total_return(r) == pytest.approx(ep.cum_returns_final(r), rel=RTOL)
    assert m.annualized_return(r) == pytest.approx(ep.annual_return(r), rel=RTOL)
    assert m.annualized_return(r) == pytest.approx(ep.cagr(r), rel=RTOL)
    assert m.annualized_volatility(r) == pytest.approx(ep.annual_volatility(r), rel=RTOL)
    assert m.max_drawdown(r) == pytest.approx(ep.max_drawdown(r), rel=RTOL)
    np.testing.assert_allclose(
        m.drawdown_series(r), ep.stats.drawdown_series(r), rtol=RTOL, atol=1e-15
    )
    assert m.calmar_ratio(r) == pytest.approx(ep.calmar_ratio(r), rel=RTOL)
    # monthly annualisation goes through the same way
    assert m.annualized_return(r, 12) == pytest.approx(ep.annual_return(r, "monthly"), rel=RTOL)
    assert m.calmar_ratio(r, 12) == pytest.approx(ep.calmar_ratio(r, "monthly"), rel=RTOL)


@pytest.mark.parametrize("rf", [0.0, 0.03])
@pytest.mark.parametrize("name", list(SERIES))
def test_risk_adjusted_ratios_match_empyrical(name, rf):
    r = SERIES[name]
    b = _benchmark_for(name)
    rf_day = _per_period(rf)
    assert m.sharpe_ratio(r, rf) == pytest.approx(ep.sharpe_ratio(r, rf_day), rel=RTOL)
    # same downside deviation: sqrt(mean(min(r - rf, 0)²)) over every period
    assert m.sortino_ratio(r, rf) == pytest.approx(ep.sortino_ratio(r, rf_day), rel=RTOL)
    assert m.beta(r, b) == pytest.approx(ep.beta(r, b, rf_day), rel=RTOL)
    # Jensen's alpha compounded: (1 + mean((r - rf) - beta (b - rf))) ** 252 - 1
    assert m.alpha(r, b, rf) == pytest.approx(ep.alpha(r, b, rf_day), rel=RTOL)
    alpha_, beta_ = ep.alpha_beta(r, b, rf_day)
    assert (m.alpha(r, b, rf), m.beta(r, b)) == (
        pytest.approx(alpha_, rel=RTOL),
        pytest.approx(beta_, rel=RTOL),
    )


@pytest.mark.parametrize("name", list(SERIES))
def test_benchmark_relative_and_tail_metrics_match_empyrical(name):
    r = SERIES[name]
    b = _benchmark_for(name)
    assert m.information_ratio(r, b) == pytest.approx(
        ep.excess_sharpe(r, b) * math.sqrt(PPY), rel=RTOL
    )
    assert m.tracking_error(r, b) == pytest.approx(np.std(r - b, ddof=1) * math.sqrt(PPY))
    for level in (0.95, 0.99):
        cutoff = 1 - level
        var = ep.value_at_risk(r, cutoff)
        assert m.value_at_risk(r, level) == pytest.approx(var, rel=RTOL)
        tail = r[r <= var]
        assert m.conditional_value_at_risk(r, level) == pytest.approx(tail.mean(), rel=RTOL)
        if len(tail) == int((len(r) - 1) * cutoff) + 1:  # no ties at the VaR: same tail
            assert m.conditional_value_at_risk(r, level) == pytest.approx(
                ep.conditional_value_at_risk(r, cutoff), rel=RTOL
            )
    assert m.tail_ratio(r) == pytest.approx(ep.tail_ratio(r), rel=RTOL)
    assert m.profit_factor(r) == pytest.approx(ep.omega_ratio(r, 0.0, 0.0), rel=RTOL)


def test_two_dimensional_input_matches_empyrical():
    r = STOCK_RETURNS[:, :6]
    np.testing.assert_allclose(m.sharpe_ratio(r, 0.02), ep.sharpe_ratio(r, _per_period(0.02)))
    np.testing.assert_allclose(m.sortino_ratio(r), ep.sortino_ratio(r))
    np.testing.assert_allclose(m.annualized_volatility(r), ep.annual_volatility(r))
    np.testing.assert_allclose(m.max_drawdown(r), ep.max_drawdown(r))
    np.testing.assert_allclose(m.beta(r, BENCHMARK), ep.beta(r, BENCHMARK))
    wide_benchmark = np.column_stack([BENCHMARK] * 6)  # empyrical's alpha does not broadcast
    np.testing.assert_allclose(
        m.alpha(r, BENCHMARK, 0.02), ep.alpha(r, wide_benchmark, _per_period(0.02))
    )


def test_missing_periods_where_conventions_differ():
    r = SERIES["AAPL"][:1000].copy()
    r[[10, 500, 777]] = np.nan
    valid = r[~np.isnan(r)]
    # both ignore NaN in the moments and the drawdown
    assert m.sharpe_ratio(r) == pytest.approx(ep.sharpe_ratio(r), rel=RTOL)
    assert m.sortino_ratio(r) == pytest.approx(ep.sortino_ratio(r), rel=RTOL)
    assert m.max_drawdown(r) == pytest.approx(ep.max_drawdown(r), rel=RTOL)
    assert m.conditional_value_at_risk(r) == pytest.approx(
        ep.conditional_value_at_risk(r), rel=RTOL
    )
    # CAGR: we annualise over the 997 valid periods, empyrical over all 1000
    assert m.annualized_return(r) == pytest.approx(ep.annual_return(valid), rel=RTOL)
    growth = np.nanprod(1 + r)
    assert ep.annual_return(r) == pytest.approx(growth ** (PPY / 1000) - 1, rel=RTOL)
    assert m.annualized_return(r) != pytest.approx(ep.annual_return(r), rel=1e-6)
    # VaR: we skip missing periods, empyrical's np.percentile returns NaN
    assert m.value_at_risk(r) == pytest.approx(ep.value_at_risk(valid), rel=RTOL)
    assert math.isnan(ep.value_at_risk(r))
    # beta/alpha drop the pair when either series is missing
    b = BENCHMARK[:1000].copy()
    b[[20, 500]] = np.nan
    both = ~np.isnan(r) & ~np.isnan(b)
    assert m.beta(r, b) == pytest.approx(ep.beta(r[both], b[both]), rel=RTOL)
    assert m.alpha(r, b) == pytest.approx(ep.alpha(r[both], b[both]), rel=RTOL)


def test_cvar_with_ties_at_the_var_and_sortino_without_downside():
    # real ties: RRC fell by the same -10.007% on several days, at its 1% VaR
    r = SERIES["RRC"]
    var = m.value_at_risk(r, 0.99)
    assert np.sum(r == var) >= 2
    assert np.sum(r <= var) == 86  # ours averages all 86 returns at or below the VaR ...
    assert int((len(r) - 1) * 0.01) + 1 == 84  # ... empyrical the lowest 84
    assert m.conditional_value_at_risk(r, 0.99) > ep.conditional_value_at_risk(r, 0.01)
    x = np.array([-0.02, -0.01, -0.01, 0.0, 0.01])
    # the 25% quantile sits exactly on order statistic 1: VaR = -0.01 in both
    assert m.value_at_risk(x, 0.75) == pytest.approx(ep.value_at_risk(x, 0.25))
    # ours averages every return <= -0.01 (three of them); empyrical the lowest
    # int((5 - 1) * 0.25) + 1 = 2
    assert m.conditional_value_at_risk(x, 0.75) == pytest.approx(-0.04 / 3)
    assert ep.conditional_value_at_risk(x, 0.25) == pytest.approx(-0.015)
    up = np.array([0.01, 0.02, 0.005])
    assert math.isnan(m.sortino_ratio(up))
    assert ep.sortino_ratio(up) == math.inf
    assert math.isnan(m.sharpe_ratio(np.full(5, 0.01)))
    assert ep.sharpe_ratio(np.full(5, 0.01)) == math.inf


def test_skewness_and_kurtosis_match_pandas():
    frame = pd.DataFrame(STOCK_RETURNS[:, :8]).copy()
    frame.iloc[[3, 50, 900], 2] = np.nan
    np.testing.assert_allclose(m.skewness(frame.to_numpy()), frame.skew().to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(m.kurtosis(frame.to_numpy()), frame.kurt().to_numpy(), rtol=1e-9)
    for name, r in SERIES.items():
        assert m.skewness(r) == pytest.approx(pd.Series(r).skew(), rel=1e-9), name
        assert m.kurtosis(r) == pytest.approx(pd.Series(r).kurt(), rel=1e-9), name
    short = STOCK_RETURNS[:4, 0]
    assert m.kurtosis(short) == pytest.approx(pd.Series(short).kurt(), rel=1e-9)
    assert m.skewness(short[:3]) == pytest.approx(pd.Series(short[:3]).skew(), rel=1e-9)
    assert math.isnan(m.kurtosis(short[:3])) and math.isnan(pd.Series(short[:3]).kurt())


def _scipy_psr(r, sr_star_annual, rf=0.0):
    """Bailey & López de Prado (2012), transcribed with scipy's moment estimators."""
    x = r - _per_period(rf)
    n = len(x)
    sr = x.mean() / x.std(ddof=1)
    g3 = stats.skew(x)  # biased (moment) estimators, as in the paper
    g4 = stats.kurtosis(x, fisher=False)
    sr_star = sr_star_annual / math.sqrt(PPY)
    z = (sr - sr_star) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return stats.norm.cdf(z), sr, g3, g4


@pytest.mark.parametrize("name", list(SERIES))
def test_probabilistic_and_deflated_sharpe_match_scipy(name):
    r = SERIES[name][-750:]  # three years: PSR well inside (0, 1)
    for sr_star in (0.0, 0.5, 1.0):
        for rf in (0.0, 0.03):
            expected, *_ = _scipy_psr(r, sr_star, rf)
            assert m.probabilistic_sharpe_ratio(r, sr_star, risk_free=rf) == pytest.approx(
                expected, rel=1e-9, abs=1e-14
            )
    psr0, sr, g3, g4 = _scipy_psr(r, 0.0)
    assert m.deflated_sharpe_ratio(r, 1) == pytest.approx(psr0, rel=1e-9)
    gamma = np.euler_gamma
    n = len(r)
    for n_trials, variance in ((10, None), (100, None), (50, 1.5)):
        v = (
            (1 + sr**2 / 2 - g3 * sr + (g4 - 3) / 4 * sr**2) / (n - 1)
            if variance is None
            else variance / PPY
        )
        sr0 = math.sqrt(v) * (
            (1 - gamma) * stats.norm.ppf(1 - 1 / n_trials)
            + gamma * stats.norm.ppf(1 - 1 / (n_trials * math.e))
        )
        expected, *_ = _scipy_psr(r, sr0 * math.sqrt(PPY))
        assert m.deflated_sharpe_ratio(r, n_trials, variance) == pytest.approx(
            expected, rel=1e-9, abs=1e-14
        )
