"""Compounding metrics computed in log space: huge, tiny and wiped-out wealth.

A return of ``1e300`` (or years of doubling) overflows ``prod(1 + r)``; the metrics sum
``log1p(r)`` instead, so drawdowns stay exact and annual rates stay finite where they are.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from marketarena.evaluation import metrics as m

COMPOUNDING = (
    m.total_return,
    m.annualized_return,
    m.drawdown_series,
    m.max_drawdown,
    m.calmar_ratio,
    m.drawdown_periods,
)


def _quiet(fn, *args, **kwargs):
    """Call ``fn`` with every warning raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------ one 1e300 return

HUGE = np.array([0.01, -0.5, 1e300, -0.5, 0.2, -0.25])


def test_one_huge_return_keeps_drawdowns_exact():
    # wealth: 1.01, 0.505, ~5.05e299 (peak), ~2.525e299, ~3.03e299, ~2.2725e299
    dd = _quiet(m.drawdown_series, HUGE)
    expected = [0.0, -0.5, 0.0, -0.5, 0.5 * 1.2 - 1.0, 0.5 * 1.2 * 0.75 - 1.0]
    assert np.all(np.isfinite(dd))
    np.testing.assert_allclose(dd, expected, rtol=1e-12, atol=1e-15)
    assert _quiet(m.max_drawdown, HUGE) == pytest.approx(-0.55, rel=1e-12)

    [deep, shallow] = _quiet(m.drawdown_periods, HUGE)
    assert (deep.peak, deep.trough, deep.recovery) == (3, 6, None)
    assert deep.depth == pytest.approx(-0.55, rel=1e-12)
    assert (shallow.peak, shallow.trough, shallow.recovery) == (1, 2, 3)
    assert shallow.depth == pytest.approx(-0.5, rel=1e-12)


def test_one_huge_return_total_and_annual_rates():
    growth_log = math.log1p(0.01) + 2 * math.log(0.5) + math.log(1e300) + math.log(0.9)
    # the total return, ~2.27e299, is representable: finite and exact
    total = _quiet(m.total_return, HUGE)
    assert math.isfinite(total)
    assert total == pytest.approx(math.expm1(growth_log), rel=1e-12)
    # 252 / 6 = 42 years' worth of that growth exceeds the float range: inf, no warning
    assert _quiet(m.annualized_return, HUGE) == math.inf
    # over a year's worth of periods, the annual rate is the (finite) total return
    monthly = _quiet(m.annualized_return, HUGE, periods_per_year=6)
    assert monthly == pytest.approx(total, rel=1e-12)
    # Calmar with an infinite CAGR is undefined (NaN), as for any non-finite ratio
    assert math.isnan(_quiet(m.calmar_ratio, HUGE))
    assert _quiet(m.calmar_ratio, HUGE, periods_per_year=6) == pytest.approx(total / 0.55)


def test_total_return_beyond_the_float_range_is_inf_without_warning():
    r = np.array([1e300, 1e300])  # wealth ~1e600
    assert _quiet(m.total_return, r) == math.inf
    # its annual rate with 1 period a year, ~1e600 ** (1 / 2) = 1e300, is representable
    assert _quiet(m.annualized_return, r, periods_per_year=1) == pytest.approx(1e300, rel=1e-12)
    assert _quiet(m.annualized_return, r, periods_per_year=252 * 2) == math.inf
    assert _quiet(m.annualized_return, np.concatenate([r, np.zeros(2518)])) == pytest.approx(
        math.expm1(2 * math.log(1e300) * 252 / 2520), rel=1e-12
    )
    np.testing.assert_array_equal(_quiet(m.drawdown_series, r), [0.0, 0.0])
    assert _quiet(m.max_drawdown, r) == 0.0


def test_huge_return_in_one_column_of_many():
    r = np.column_stack([HUGE, np.full(6, 0.01)])
    np.testing.assert_allclose(_quiet(m.max_drawdown, r), [-0.55, 0.0], rtol=1e-12)
    totals = _quiet(m.total_return, r)
    assert totals[1] == pytest.approx(1.01**6 - 1, rel=1e-12)
    assert np.isfinite(totals).all()


# --------------------------------------------------------- 2000 days of doubling


def test_years_of_doubling_do_not_overflow():
    r = np.ones(2000)  # +100% a day: wealth 2 ** 2000, far past the float range
    with np.errstate(over="ignore"):
        assert np.prod(1.0 + r) == math.inf  # the product overflows
    assert _quiet(m.max_drawdown, r) == 0.0
    np.testing.assert_array_equal(_quiet(m.drawdown_series, r), np.zeros(2000))
    assert _quiet(m.drawdown_periods, r) == []
    assert _quiet(m.total_return, r) == math.inf
    # the annual rate, 2 ** 252 - 1 (~7e75), is representable: finite and exact
    assert _quiet(m.annualized_return, r) == pytest.approx(2.0**252 - 1, rel=1e-12)
    # with a year of 4 periods the true rate 2 ** 4 - 1 = 15 is finite and exact
    assert _quiet(m.annualized_return, r, periods_per_year=4) == pytest.approx(15.0, rel=1e-12)
    # no drawdown: Calmar is NaN, not inf / 0
    assert math.isnan(_quiet(m.calmar_ratio, r, periods_per_year=4))


def test_a_crash_after_years_of_doubling_is_measured():
    r = np.concatenate([np.ones(2000), [-0.3, 0.1]])
    assert _quiet(m.max_drawdown, r) == pytest.approx(-0.3, rel=1e-12)
    np.testing.assert_allclose(_quiet(m.drawdown_series, r)[-2:], [-0.3, 0.7 * 1.1 - 1], rtol=1e-12)
    cagr = _quiet(m.annualized_return, r, periods_per_year=4)
    expected = math.expm1((2000 * math.log(2) + math.log(0.7 * 1.1)) * 4 / 2002)
    assert cagr == pytest.approx(expected, rel=1e-12)
    assert _quiet(m.calmar_ratio, r, periods_per_year=4) == pytest.approx(expected / 0.3)
    [episode] = _quiet(m.drawdown_periods, r)
    assert (episode.peak, episode.trough, episode.recovery) == (2000, 2001, None)
    assert episode.depth == pytest.approx(-0.3, rel=1e-12)


def test_years_of_halving_do_not_underflow_to_a_wipeout():
    r = np.full(1200, -0.5)  # wealth 2 ** -1200 underflows the product to 0
    # 2 ** -1200 - 1 rounds to -1, but the annual rate is not a wipeout: with one period
    # a year it is the -50% of every period (the product gives 0 ** (1 / 1200) - 1 = -1)
    assert _quiet(m.total_return, r) == -1.0
    assert _quiet(m.max_drawdown, r) == -1.0
    np.testing.assert_allclose(_quiet(m.drawdown_series, r)[:3], [-0.5, -0.75, -0.875])
    assert _quiet(m.annualized_return, r, periods_per_year=1) == pytest.approx(-0.5, rel=1e-12)


# --------------------------------------------- identical to the product formulas


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_product_formulas_on_ordinary_returns(seed):
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0004, 0.015, size=(750, 3))
    r[rng.random(r.shape) < 0.02] = np.nan
    filled = np.nan_to_num(r, nan=0.0)
    growth = np.prod(1.0 + filled, axis=0)
    n = np.sum(~np.isnan(r), axis=0)
    wealth = np.cumprod(1.0 + filled, axis=0)
    peak = np.maximum.accumulate(np.vstack([np.ones((1, 3)), wealth]), axis=0)[1:]
    dd = wealth / peak - 1.0
    cagr = growth ** (252 / n) - 1.0

    np.testing.assert_allclose(_quiet(m.total_return, r), growth - 1.0, rtol=1e-12)
    np.testing.assert_allclose(_quiet(m.annualized_return, r), cagr, rtol=1e-12)
    np.testing.assert_allclose(_quiet(m.drawdown_series, r), dd, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(_quiet(m.max_drawdown, r), dd.min(axis=0), rtol=1e-12)
    np.testing.assert_allclose(_quiet(m.calmar_ratio, r), cagr / np.abs(dd.min(axis=0)), rtol=1e-12)
    col = r[:, 0]
    [deepest] = _quiet(m.drawdown_periods, col, top=1)
    assert deepest.depth == pytest.approx(dd[:, 0].min(), rel=1e-12)
    assert deepest.trough == int(np.argmin(dd[:, 0])) + 1


# --------------------------------------------------------------------- a wipeout


def test_a_wipeout_is_total_and_silent():
    r = np.array([0.1, -1.0, 0.5, np.nan, 0.2])
    assert _quiet(m.total_return, r) == -1.0
    assert _quiet(m.annualized_return, r) == -1.0
    np.testing.assert_array_equal(_quiet(m.drawdown_series, r), [0.0, -1.0, -1.0, -1.0, -1.0])
    assert _quiet(m.max_drawdown, r) == -1.0
    assert _quiet(m.calmar_ratio, r) == -1.0
    [episode] = _quiet(m.drawdown_periods, r)
    assert (episode.peak, episode.trough, episode.recovery) == (1, 2, None)
    assert episode.depth == -1.0
    summary = _quiet(m.summary, r)
    assert summary["total_return"] == -1.0 and summary["max_drawdown"] == -1.0


def test_wipeout_in_one_column_leaves_the_other_alone():
    r = np.column_stack([[0.1, -1.0, 0.5], [0.1, -0.1, 0.05]])
    np.testing.assert_allclose(_quiet(m.total_return, r), [-1.0, 1.1 * 0.9 * 1.05 - 1], rtol=1e-12)
    np.testing.assert_allclose(_quiet(m.max_drawdown, r), [-1.0, -0.1], rtol=1e-12)


def test_returns_below_minus_one_keep_the_product():
    # wealth turns negative: no log exists, so the direct product is kept as before
    r = np.array([0.1, -1.5, 0.2])
    growth = 1.1 * -0.5 * 1.2
    assert m.total_return(r) == pytest.approx(growth - 1.0)
    wealth = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
    np.testing.assert_allclose(m.drawdown_series(r), wealth / peak - 1.0)
    assert m.max_drawdown(r) == pytest.approx(float(np.min(wealth / peak - 1.0)))
    [episode] = m.drawdown_periods(r)
    assert episode.depth == pytest.approx(float(np.min(wealth / peak - 1.0)))


@pytest.mark.parametrize("fn", COMPOUNDING)
def test_empty_and_all_missing_stay_quiet(fn):
    for r in (np.array([]), np.array([np.nan, np.nan])):
        _quiet(fn, r)
