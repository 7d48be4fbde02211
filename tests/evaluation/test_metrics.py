"""Metrics pinned on hand-computed fixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marketarena.evaluation import metrics as m

MIXED = np.array([0.1, -0.05, 0.02])


def test_total_and_annualized_return():
    assert m.total_return(MIXED) == pytest.approx(1.1 * 0.95 * 1.02 - 1)
    assert m.annualized_return(MIXED) == pytest.approx((1.1 * 0.95 * 1.02) ** (252 / 3) - 1)
    assert m.annualized_return(MIXED, periods_per_year=12) == pytest.approx(
        (1.1 * 0.95 * 1.02) ** 4 - 1
    )


def test_volatility_and_sharpe():
    sd = np.std(MIXED, ddof=1)
    assert m.annualized_volatility(MIXED) == pytest.approx(sd * math.sqrt(252))
    assert m.sharpe_ratio(MIXED) == pytest.approx(MIXED.mean() / sd * math.sqrt(252))
    rf = 0.05
    excess = MIXED - ((1 + rf) ** (1 / 252) - 1)
    assert m.sharpe_ratio(MIXED, risk_free=rf) == pytest.approx(
        excess.mean() / excess.std(ddof=1) * math.sqrt(252)
    )


def test_max_drawdown_counts_the_start_as_a_peak():
    assert m.max_drawdown(np.array([0.1, -0.5, 0.2])) == pytest.approx(-0.5)
    assert m.max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(-0.1)
    assert m.max_drawdown(np.array([0.01, 0.02])) == 0.0
    np.testing.assert_allclose(m.drawdown_series(np.array([0.1, -0.5, 0.2])), [0, -0.5, -0.4])


def test_nan_is_missing_and_short_input_is_nan():
    with_nan = np.array([0.1, np.nan, -0.05, 0.02])
    assert m.total_return(with_nan) == pytest.approx(m.total_return(MIXED))
    assert m.sharpe_ratio(with_nan) == pytest.approx(m.sharpe_ratio(MIXED))
    empty = np.array([])
    for fn in (
        m.total_return,
        m.annualized_return,
        m.annualized_volatility,
        m.sharpe_ratio,
        m.max_drawdown,
    ):
        assert math.isnan(fn(empty))
    assert math.isnan(m.annualized_volatility(np.array([0.01])))
    assert math.isnan(m.sharpe_ratio(np.array([0.01, 0.01, 0.01])))  # flat: zero variance


def test_two_dimensional_is_column_wise_and_input_untouched():
    rng = np.random.default_rng(0)
    r = rng.normal(0.0005, 0.01, size=(100, 3))
    r[5, 1] = np.nan
    copy = r.copy()
    for fn in (
        m.total_return,
        m.annualized_return,
        m.annualized_volatility,
        m.sharpe_ratio,
        m.max_drawdown,
    ):
        cols = fn(r)
        assert cols.shape == (3,)
        for k in range(3):
            assert cols[k] == pytest.approx(fn(r[:, k]))
    np.testing.assert_array_equal(r, copy)
