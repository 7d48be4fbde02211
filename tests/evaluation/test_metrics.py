"""Metrics pinned on hand-computed fixtures, and their properties.

Fixtures (valid periods in brackets):

* ``MIXED`` = [0.04, NaN, -0.02, 0.01, -0.01] → [0.04, -0.02, 0.01, -0.01], n = 4.
  mean = 0.02 / 4 = 0.005; deviations d = [0.035, -0.025, 0.005, -0.015];
  sum d² = 0.001225 + 0.000625 + 0.000025 + 0.000225 = 0.0021 → var (ddof=1) = 0.0007,
  m2 = 0.0021 / 4 = 0.000525;
  sum d³ = 4.2875e-5 - 1.5625e-5 + 1.25e-7 - 3.375e-6 = 2.4e-5 → m3 = 6e-6;
  sum d⁴ = 1.500625e-6 + 3.90625e-7 + 6.25e-10 + 5.0625e-8 = 1.9425e-6 → m4 = 4.85625e-7.
* ``FLAT`` = five zeros; ``ONE`` = [0.05]; ``EMPTY`` = []; ``NEGATIVE`` = [-0.01, -0.02, -0.03].
"""

from __future__ import annotations

import inspect
import math
from statistics import NormalDist

import numpy as np
import pytest

from marketarena.evaluation import metrics as m

MIXED = np.array([0.04, np.nan, -0.02, 0.01, -0.01])
FLAT = np.zeros(5)
ONE = np.array([0.05])
EMPTY = np.array([])
NEGATIVE = np.array([-0.01, -0.02, -0.03])
# benchmark for MIXED; its period 1 is dropped with MIXED's NaN → [0.02, -0.01, 0.0, -0.01]
BENCH = np.array([0.02, 0.01, -0.01, 0.0, -0.01])

PHI = NormalDist().cdf
ROOT_252 = math.sqrt(252)

# 1-D or 2-D, one value per column
COLUMN_WISE = (
    m.total_return,
    m.annualized_return,
    m.annualized_volatility,
    m.sharpe_ratio,
    m.sortino_ratio,
    m.max_drawdown,
    m.calmar_ratio,
    m.win_rate,
    m.average_win,
    m.average_loss,
    m.profit_factor,
    m.value_at_risk,
    m.conditional_value_at_risk,
    m.tail_ratio,
    m.skewness,
    m.kurtosis,
    m.probabilistic_sharpe_ratio,
    m.total_costs,
    m.turnover,
)
RELATIVE = (m.beta, m.alpha, m.information_ratio, m.tracking_error)


def _nan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _strictly_decreasing(values: list[float]) -> bool:
    return bool(np.all(np.diff(values) < 0))


# ------------------------------------------------------------------------------ MIXED


def test_mixed_returns_and_risk():
    growth = 1.04 * 0.98 * 1.01 * 0.99  # = 1.01909808, the NaN period is skipped
    assert m.total_return(MIXED) == pytest.approx(0.01909808, rel=1e-12)
    assert m.total_return(MIXED) == pytest.approx(growth - 1, rel=1e-12)
    # CAGR over the 4 valid periods
    assert m.annualized_return(MIXED) == pytest.approx(growth ** (252 / 4) - 1, rel=1e-12)
    assert m.annualized_return(MIXED, 12) == pytest.approx(growth**3 - 1, rel=1e-12)
    assert m.annualized_volatility(MIXED) == pytest.approx(math.sqrt(0.0007) * ROOT_252)
    assert m.sharpe_ratio(MIXED) == pytest.approx(0.005 / math.sqrt(0.0007) * ROOT_252)
    # downside: min(r, 0) = [0, -0.02, 0, -0.01] → mean of squares over all 4 = 0.0005 / 4
    assert m.sortino_ratio(MIXED) == pytest.approx(0.005 / math.sqrt(0.000125) * ROOT_252)


def test_mixed_risk_free_is_annual_and_converted_per_period():
    rf = 0.05
    rf_day = 1.05 ** (1 / 252) - 1
    excess = np.array([0.04, -0.02, 0.01, -0.01]) - rf_day
    assert m.sharpe_ratio(MIXED, risk_free=rf) == pytest.approx(
        excess.mean() / excess.std(ddof=1) * ROOT_252
    )
    downside = np.minimum(excess, 0)
    assert m.sortino_ratio(MIXED, risk_free=rf) == pytest.approx(
        excess.mean() / math.sqrt(np.mean(downside**2)) * ROOT_252
    )
    assert m.sharpe_ratio(MIXED, risk_free=rf) < m.sharpe_ratio(MIXED)
    with pytest.raises(ValueError, match="risk_free"):
        m.sharpe_ratio(MIXED, risk_free=-1.5)


def test_mixed_drawdowns():
    # wealth 1.04, 1.04 (NaN), 1.0192, 1.029392, 1.01909808 against the peak 1.04:
    # 0.98 - 1, 0.98 * 1.01 - 1 = -0.0102, 0.98 * 1.01 * 0.99 - 1 = -0.020098
    np.testing.assert_allclose(
        m.drawdown_series(MIXED), [0, 0, -0.02, -0.0102, -0.020098], atol=1e-14
    )
    assert m.max_drawdown(MIXED) == pytest.approx(-0.020098)
    assert m.calmar_ratio(MIXED) == pytest.approx((1.01909808**63 - 1) / 0.020098, rel=1e-12)


def test_mixed_period_statistics():
    assert m.win_rate(MIXED) == 0.5  # 0.04 and 0.01 out of 4 valid periods
    assert m.average_win(MIXED) == pytest.approx(0.025)
    assert m.average_loss(MIXED) == pytest.approx(-0.015)
    assert m.profit_factor(MIXED) == pytest.approx(0.05 / 0.03)
    # sorted [-0.02, -0.01, 0.01, 0.04]; the 5% quantile sits at position 3 * 0.05 = 0.15
    assert m.value_at_risk(MIXED) == pytest.approx(-0.02 + 0.15 * 0.01)
    assert m.conditional_value_at_risk(MIXED) == pytest.approx(-0.02)  # only -0.02 <= -0.0185
    # the median (position 1.5) is 0.0; the returns at or below it average -0.015
    assert m.value_at_risk(MIXED, level=0.5) == pytest.approx(0.0)
    assert m.conditional_value_at_risk(MIXED, level=0.5) == pytest.approx(-0.015)
    # 95% quantile at position 2.85: 0.01 + 0.85 * 0.03 = 0.0355
    assert m.tail_ratio(MIXED) == pytest.approx(0.0355 / 0.0185)


def test_mixed_moments():
    n, m2, m3, m4 = 4, 0.000525, 6e-6, 4.85625e-7
    g1 = m3 / m2**1.5
    g2 = m4 / m2**2
    assert m.skewness(MIXED) == pytest.approx(math.sqrt(n * (n - 1)) / (n - 2) * g1)
    assert m.kurtosis(MIXED) == pytest.approx(
        (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (g2 - 3) + 6)
    )


def test_mixed_probabilistic_and_deflated_sharpe():
    sr = 0.005 / math.sqrt(0.0007)  # per period
    g3 = 6e-6 / 0.000525**1.5
    g4 = 4.85625e-7 / 0.000525**2
    term = 1 - g3 * sr + (g4 - 1) / 4 * sr**2
    assert m.probabilistic_sharpe_ratio(MIXED) == pytest.approx(
        PHI(sr * math.sqrt(3) / math.sqrt(term))
    )
    # an annualised benchmark Sharpe of 1 is 1 / sqrt(252) per period
    star = 1 / ROOT_252
    assert m.probabilistic_sharpe_ratio(MIXED, benchmark_sharpe=1.0) == pytest.approx(
        PHI((sr - star) * math.sqrt(3) / math.sqrt(term))
    )
    assert m.deflated_sharpe_ratio(MIXED, n_trials=1) == pytest.approx(
        m.probabilistic_sharpe_ratio(MIXED)
    )
    gamma = 0.5772156649015329
    inv = NormalDist().inv_cdf
    expected_max = (1 - gamma) * inv(1 - 1 / 10) + gamma * inv(1 - 1 / (10 * math.e))
    # given: the variance of 10 trials' annualised Sharpe ratios, 0.5 → 0.5 / 252 per period
    sr0 = math.sqrt(0.5 / 252) * expected_max
    assert m.deflated_sharpe_ratio(MIXED, 10, trials_sharpe_variance=0.5) == pytest.approx(
        PHI((sr - sr0) * math.sqrt(3) / math.sqrt(term))
    )
    # not given: the Sharpe estimator's own variance (1 + SR²/2 - g3 SR + (g4 - 3)/4 SR²)/(n-1)
    v = (1 + sr**2 / 2 - g3 * sr + (g4 - 3) / 4 * sr**2) / 3
    sr0 = math.sqrt(v) * expected_max
    assert m.deflated_sharpe_ratio(MIXED, 10) == pytest.approx(
        PHI((sr - sr0) * math.sqrt(3) / math.sqrt(term))
    )


def test_mixed_against_a_benchmark():
    # common periods: r = [0.04, -0.02, 0.01, -0.01], b = [0.02, -0.01, 0.0, -0.01] (mean 0)
    # cov sum = 0.02*0.035 + 0.01*0.025 + 0 + 0.01*0.015 = 0.0011; var sum = 0.0006
    assert m.beta(MIXED, BENCH) == pytest.approx(0.0011 / 0.0006)
    # mean(r - beta * b) = 0.005 - beta * 0 → compounded over 252 periods
    assert m.alpha(MIXED, BENCH) == pytest.approx(1.005**252 - 1)
    rf = 0.03
    rf_day = 1.03 ** (1 / 252) - 1
    residual = 0.005 - rf_day - 0.0011 / 0.0006 * (0.0 - rf_day)
    assert m.alpha(MIXED, BENCH, risk_free=rf) == pytest.approx((1 + residual) ** 252 - 1)
    # active = [0.02, -0.01, 0.01, 0.0]: mean 0.005, sum of squared deviations 0.0005
    assert m.tracking_error(MIXED, BENCH) == pytest.approx(math.sqrt(0.0005 / 3) * ROOT_252)
    assert m.information_ratio(MIXED, BENCH) == pytest.approx(
        0.005 / math.sqrt(0.0005 / 3) * ROOT_252
    )


def test_relative_metrics_drop_periods_pairwise_and_check_lengths():
    r = np.array([0.01, 0.02, np.nan, -0.01, 0.03, -0.02])
    b = np.array([0.005, np.nan, 0.01, -0.02, 0.01, -0.01])
    keep = [0, 3, 4, 5]
    for fn in RELATIVE:
        assert fn(r, b) == pytest.approx(fn(r[keep], b[keep]))
    with pytest.raises(ValueError, match=r"returns has 6 periods, benchmark_returns has 5"):
        m.beta(r, b[:5])
    for fn in RELATIVE:
        with pytest.raises(ValueError, match=r"6 periods.*has 5"):
            fn(r, b[:5])
    # a flat benchmark has no beta; 0.1 * 6 / 6 != 0.1 in floating point, so this also checks
    # that a constant is recognised as such rather than divided by a 1e-17 residue
    steady = np.array([0.01, 0.02, 0.005, -0.01, 0.03, -0.02])
    assert _nan(m.beta(steady, np.full(6, 0.1)))
    assert _nan(m.beta(ONE, ONE))


# ------------------------------------------------------------------ degenerate inputs


def test_flat_line():
    assert m.total_return(FLAT) == 0.0
    assert m.annualized_return(FLAT) == 0.0
    assert m.annualized_volatility(FLAT) == 0.0
    assert m.max_drawdown(FLAT) == 0.0
    assert m.win_rate(FLAT) == 0.0  # a zero return is not a win
    assert m.value_at_risk(FLAT) == 0.0
    assert m.conditional_value_at_risk(FLAT) == 0.0
    assert m.drawdown_periods(FLAT) == []
    assert _nan(m.tail_ratio(np.array([0.0, 0.0, 0.0, 0.01])))  # 5th percentile 0, not inf
    for fn in (
        m.sharpe_ratio,  # zero variance
        m.sortino_ratio,  # no downside
        m.calmar_ratio,  # no drawdown
        m.average_win,
        m.average_loss,
        m.profit_factor,  # neither gains nor losses
        m.tail_ratio,  # 5th percentile is 0
        m.skewness,
        m.kurtosis,
        m.probabilistic_sharpe_ratio,
    ):
        assert _nan(fn(FLAT)), fn.__name__
    # a constant non-zero line: equal values, not a tiny floating-point spread (the mean of
    # six 0.1s is 0.1 + 1.4e-17)
    assert _nan(m.sharpe_ratio(np.full(6, 0.1)))
    assert _nan(m.sharpe_ratio(np.full(7, 0.001), risk_free=0.02))
    assert m.annualized_volatility(np.full(6, 0.1)) == 0.0
    assert _nan(m.skewness(np.full(6, 0.1)))
    assert _nan(m.information_ratio(np.full(6, 0.1), np.zeros(6)))
    assert m.tracking_error(np.full(6, 0.1), np.zeros(6)) == 0.0


def test_one_return():
    assert m.total_return(ONE) == pytest.approx(0.05)
    assert m.annualized_return(ONE) == pytest.approx(1.05**252 - 1)
    assert m.max_drawdown(ONE) == 0.0
    assert m.win_rate(ONE) == 1.0
    assert m.average_win(ONE) == pytest.approx(0.05)
    assert m.profit_factor(ONE) == math.inf  # gains, no losses
    assert m.value_at_risk(ONE) == pytest.approx(0.05)
    assert m.conditional_value_at_risk(ONE) == pytest.approx(0.05)
    assert m.tail_ratio(ONE) == pytest.approx(1.0)
    for fn in (
        m.annualized_volatility,
        m.sharpe_ratio,
        m.sortino_ratio,
        m.calmar_ratio,
        m.average_loss,
        m.skewness,
        m.kurtosis,
        m.probabilistic_sharpe_ratio,
    ):
        assert _nan(fn(ONE)), fn.__name__
    assert _nan(m.deflated_sharpe_ratio(ONE, 5))
    low, high = m.bootstrap_confidence_interval(ONE, np.mean)
    assert _nan(low) and _nan(high)


def test_empty_gives_nan_and_totals_of_nothing_are_zero():
    for fn in COLUMN_WISE:
        if fn is m.total_costs:
            continue
        assert _nan(fn(EMPTY)), fn.__name__
    for fn in RELATIVE:
        assert _nan(fn(EMPTY, EMPTY)), fn.__name__
    assert _nan(m.deflated_sharpe_ratio(EMPTY, 3))
    assert m.drawdown_series(EMPTY).shape == (0,)
    assert m.drawdown_periods(EMPTY) == []
    assert m.total_costs(EMPTY) == 0.0
    assert m.number_of_trades(EMPTY) == 0
    assert _nan(m.average_holding_period(np.zeros((0, 3))))
    low, high = m.bootstrap_confidence_interval(EMPTY, np.mean)
    assert _nan(low) and _nan(high)
    all_missing = np.full(4, np.nan)
    assert _nan(m.total_return(all_missing))
    assert _nan(m.value_at_risk(all_missing))


def test_all_negative():
    # wealth 0.99 * 0.98 * 0.97 = 0.941094; mean -0.02, deviations [0.01, 0, -0.01]
    assert m.total_return(NEGATIVE) == pytest.approx(-0.058906)
    assert m.annualized_return(NEGATIVE) == pytest.approx(0.941094**84 - 1)
    assert m.annualized_volatility(NEGATIVE) == pytest.approx(0.01 * ROOT_252)
    assert m.sharpe_ratio(NEGATIVE) == pytest.approx(-2 * ROOT_252)
    # every period is downside: sqrt((1e-4 + 4e-4 + 9e-4) / 3)
    assert m.sortino_ratio(NEGATIVE) == pytest.approx(-0.02 / math.sqrt(0.0014 / 3) * ROOT_252)
    assert m.max_drawdown(NEGATIVE) == pytest.approx(-0.058906)
    assert m.calmar_ratio(NEGATIVE) == pytest.approx((0.941094**84 - 1) / 0.058906)
    assert m.win_rate(NEGATIVE) == 0.0
    assert _nan(m.average_win(NEGATIVE))
    assert m.average_loss(NEGATIVE) == pytest.approx(-0.02)
    assert m.profit_factor(NEGATIVE) == 0.0
    # 5% quantile at position 0.1: -0.03 + 0.1 * 0.01; 95% at 1.9: -0.02 + 0.9 * 0.01
    assert m.value_at_risk(NEGATIVE) == pytest.approx(-0.029)
    assert m.conditional_value_at_risk(NEGATIVE) == pytest.approx(-0.03)
    assert m.tail_ratio(NEGATIVE) == pytest.approx(0.011 / 0.029)
    assert m.skewness(NEGATIVE) == pytest.approx(0.0, abs=1e-12)  # symmetric
    assert _nan(m.kurtosis(NEGATIVE))  # needs 4 periods
    # SR = -2 per period, g3 = 0, g4 = (2e-8 / 3) / (2e-4 / 3)**2 = 1.5 → term = 1 + 0.5 = 1.5
    assert m.probabilistic_sharpe_ratio(NEGATIVE) == pytest.approx(
        PHI(-2 * math.sqrt(2) / math.sqrt(1.5))
    )
    [episode] = m.drawdown_periods(NEGATIVE)
    assert (episode.peak, episode.trough, episode.recovery) == (0, 3, None)
    assert episode.duration == 3


# ----------------------------------------------------------------------- drawdown periods

# wealth: 1, 1.1, 0.99, 0.891, 1.11375, 1.1694375, 0.93555, 1.029105
DD_RETURNS = np.array([0.10, -0.10, -0.10, 0.25, 0.05, -0.20, 0.10])
DD_DATES = np.array(
    [
        "2024-01-02",
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
        "2024-01-08",
        "2024-01-09",
        "2024-01-10",
    ],
    dtype="datetime64[D]",
)


def test_drawdown_periods_with_dates():
    deep, shallow = m.drawdown_periods(DD_RETURNS, DD_DATES, start_date=np.datetime64("2024-01-01"))
    # the last episode: peak after period 4 (1.1694375), trough after period 5 (0.93555 = -20%),
    # never recovered; 2 periods from the peak to the end
    assert deep.peak == np.datetime64("2024-01-08")
    assert deep.trough == np.datetime64("2024-01-09")
    assert deep.recovery is None and deep.recovery_periods is None
    assert deep.depth == pytest.approx(-0.2)
    assert deep.duration == 2
    # the first: peak 1.1 after period 0, trough 0.891 (-19%) after period 2, back above 1.1
    # (1.11375) after period 3: 3 periods peak → recovery, 1 period trough → recovery
    assert shallow.peak == np.datetime64("2024-01-02")
    assert shallow.trough == np.datetime64("2024-01-04")
    assert shallow.recovery == np.datetime64("2024-01-05")
    assert shallow.depth == pytest.approx(-0.19)
    assert (shallow.duration, shallow.recovery_periods) == (3, 1)
    assert deep.depth == pytest.approx(m.max_drawdown(DD_RETURNS))
    assert m.drawdown_periods(DD_RETURNS, DD_DATES, top=1) == [deep]
    assert m.drawdown_periods(DD_RETURNS, top=0) == []
    with pytest.raises(AttributeError):
        deep.depth = 0.0  # frozen


def test_drawdown_periods_positions_and_the_start_as_a_peak():
    # without dates: wealth positions, 0 = start, i + 1 = after period i
    deep, shallow = m.drawdown_periods(DD_RETURNS)
    assert (deep.peak, deep.trough, deep.recovery) == (5, 6, None)
    assert (shallow.peak, shallow.trough, shallow.recovery) == (1, 3, 4)
    # a first-period loss falls from the starting wealth: its peak is the start
    r = np.array([-0.05, 0.10, np.nan, 0.01])  # wealth 1, 0.95, 1.045, 1.045, 1.05545
    dates = DD_DATES[:4]
    [first] = m.drawdown_periods(r)
    assert (first.peak, first.trough, first.recovery, first.duration) == (0, 1, 2, 2)
    [first] = m.drawdown_periods(r, dates)
    assert first.peak is None  # the start has no date unless start_date is given
    [first] = m.drawdown_periods(r, dates, start_date="2023-12-29")
    assert first.peak == "2023-12-29"
    assert first.trough == np.datetime64("2024-01-02")
    assert first.recovery == np.datetime64("2024-01-03")
    with pytest.raises(ValueError, match="3 dates for 4 returns"):
        m.drawdown_periods(r, dates[:3])
    with pytest.raises(ValueError, match="1-D"):
        m.drawdown_periods(np.zeros((4, 2)))


# --------------------------------------------------------------------- trading activity


def test_trading_metrics():
    # mean of the 4 valid periods: (1.0 + 0 + 0.2 + 0) / 4 = 0.3 per day
    assert m.turnover(np.array([1.0, 0.0, 0.2, np.nan, 0.0])) == pytest.approx(0.3 * 252)
    assert m.turnover(np.array([0.5, 0.1]), periods_per_year=12) == pytest.approx(3.6)
    weights = np.array([[0.5, 0.0], [0.5, -0.5], [0.0, -0.5], [0.4, 0.0], [0.6, 0.0], [0.5, 1e-12]])
    # A held in runs of 2 and 3; B (short) in one run of 2; 1e-12 counts as not held
    assert m.average_holding_period(weights) == pytest.approx(7 / 3)
    assert m.average_holding_period(weights[:, 0]) == pytest.approx(2.5)
    assert _nan(m.average_holding_period(np.zeros((4, 3))))
    # the spells behind it: A 2 and 3 periods, B (short) 2; (2 + 3 + 2) / 3 = 7 / 3
    assert [s.tolist() for s in m.holding_spells(weights)] == [[2, 3], [2]]
    assert [s.tolist() for s in m.holding_spells(np.array([np.nan, 1.0, 1.0]))] == [[2]]
    assert [s.tolist() for s in m.holding_spells(np.zeros((0, 2)))] == [[], []]
    traded_shares = np.array([[10.0, 0.0], [0.0, -5.0], [0.0, 0.0], [3.0, np.nan]])
    assert m.number_of_trades(traded_shares) == 3
    assert m.number_of_trades(np.array([10.0, -5.0, 3.0])) == 3  # one entry per fill
    assert m.total_costs(np.array([1.5, np.nan, 0.5])) == pytest.approx(2.0)


# ---------------------------------------------------------------------------- properties

RNG_RETURNS = np.random.default_rng(7).normal(0.0005, 0.01, size=500)


def test_sharpe_is_scale_invariant_and_rises_with_a_constant():
    r = RNG_RETURNS
    for c in (0.5, 3.0):
        assert m.sharpe_ratio(c * r) == pytest.approx(m.sharpe_ratio(r))
        assert m.sortino_ratio(c * r) == pytest.approx(m.sortino_ratio(r))
    assert m.sharpe_ratio(r + 0.001) > m.sharpe_ratio(r)
    assert m.sortino_ratio(r + 0.001) > m.sortino_ratio(r)


def test_more_noise_lowers_sharpe():
    noise = np.random.default_rng(3).standard_normal(1000)
    sharpes = [m.sharpe_ratio(0.001 + s * noise) for s in (0.005, 0.01, 0.02, 0.04)]
    assert _strictly_decreasing(sharpes)
    psrs = [m.probabilistic_sharpe_ratio(0.001 + s * noise) for s in (0.005, 0.01, 0.02, 0.04)]
    assert _strictly_decreasing(psrs)


def test_monotone_series_has_no_drawdown():
    r = np.linspace(0.0, 0.02, 50)
    assert m.max_drawdown(r) == 0.0
    assert m.drawdown_periods(r) == []
    assert _nan(m.calmar_ratio(r))


def test_cvar_is_at_most_var_and_profit_factor_mirrors():
    r = np.random.default_rng(11).standard_t(3, size=(400, 3)) * 0.01
    for level in (0.5, 0.9, 0.95, 0.99):
        assert np.all(m.conditional_value_at_risk(r, level) <= m.value_at_risk(r, level))
    assert m.profit_factor(-RNG_RETURNS) == pytest.approx(1 / m.profit_factor(RNG_RETURNS))
    with pytest.raises(ValueError, match="level"):
        m.value_at_risk(RNG_RETURNS, level=95)


def test_psr_is_a_probability_rising_with_sharpe():
    base = RNG_RETURNS - RNG_RETURNS.mean()  # Sharpe 0 → PSR(0) = 1/2
    assert m.probabilistic_sharpe_ratio(base) == pytest.approx(0.5)
    values = [m.probabilistic_sharpe_ratio(base + mu) for mu in (-0.001, 0.0002, 0.0005, 0.001)]
    assert all(0 < v < 1 for v in values)
    assert _strictly_decreasing(values[::-1])
    r = base + 0.0005
    against = [m.probabilistic_sharpe_ratio(r, benchmark_sharpe=s) for s in (0.0, 0.5, 1.0)]
    assert _strictly_decreasing(against)


def test_dsr_falls_with_the_number_of_trials():
    r = RNG_RETURNS
    values = [m.deflated_sharpe_ratio(r, n) for n in (1, 2, 10, 100, 1000)]
    assert values[0] == pytest.approx(m.probabilistic_sharpe_ratio(r))
    assert _strictly_decreasing(values)
    given = [m.deflated_sharpe_ratio(r, 10, trials_sharpe_variance=v) for v in (0.1, 0.5, 2.0)]
    assert _strictly_decreasing(given)
    with pytest.raises(ValueError, match="n_trials"):
        m.deflated_sharpe_ratio(r, 0)


def _lag1(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


def _share_consecutive(x: np.ndarray) -> float:
    step = np.diff(x) % len(x)  # a block wraps from n - 1 to 0
    return float(np.mean(step == 1))


# exactly the statistics the bootstrap calls once on every resample
@pytest.mark.parametrize("statistic", sorted(m._COLUMNWISE, key=lambda f: f.__name__))
@pytest.mark.parametrize("block", [None, 11])
def test_the_bootstrap_on_all_resamples_at_once_equals_one_call_per_resample(statistic, block):
    """The statistics that work column by column are called once on every resample; the
    interval is bit-identical to one call per resample, as any other statistic gets."""
    x = np.random.default_rng(3).normal(0.0005, 0.012, size=700)
    x[[10, 200]] = np.nan  # dropped first, by both
    # a keyword reaches the statistic on both paths, where it takes one
    annualised = "periods_per_year" in inspect.signature(statistic).parameters
    kwargs = {"periods_per_year": 12} if annualised else {}
    fast = m.bootstrap_confidence_interval(
        x, statistic, n_resamples=300, block_length=block, **kwargs
    )
    slow = m.bootstrap_confidence_interval(
        x, lambda r, **kw: statistic(r, **kw), n_resamples=300, block_length=block, **kwargs
    )
    assert fast == slow
    assert np.isfinite(fast).all()


def test_bootstrap_interval():
    data = np.random.default_rng(5).normal(0.001, 0.01, size=2000)
    short = data[:100]
    for block in (None, 10):
        low, high = m.bootstrap_confidence_interval(short, m.sharpe_ratio, block_length=block)
        assert low < m.sharpe_ratio(short) < high
        again = m.bootstrap_confidence_interval(short, m.sharpe_ratio, block_length=block)
        assert again == (low, high)
        other = m.bootstrap_confidence_interval(short, m.sharpe_ratio, seed=1, block_length=block)
        assert other != (low, high)
        low_long, high_long = m.bootstrap_confidence_interval(
            data, np.mean, n_resamples=300, block_length=block
        )
        low_short, high_short = m.bootstrap_confidence_interval(
            short, np.mean, n_resamples=300, block_length=block
        )
        assert high_long - low_long < (high_short - low_short) / 2
    # keyword arguments reach the statistic; a wider level gives a wider interval
    monthly = m.bootstrap_confidence_interval(short, m.sharpe_ratio, periods_per_year=12)
    assert monthly[1] == pytest.approx(
        m.bootstrap_confidence_interval(short, m.sharpe_ratio)[1] * math.sqrt(12 / 252)
    )
    # blocks keep serial dependence: an AR(1) with phi = 0.9 keeps its lag-1 autocorrelation
    # under the stationary bootstrap and loses it under iid resampling
    shocks = np.random.default_rng(2).standard_normal(600)
    ar = np.zeros(600)
    for t in range(1, 600):
        ar[t] = 0.9 * ar[t - 1] + shocks[t]
    assert m.bootstrap_confidence_interval(ar, _lag1, n_resamples=200, block_length=50)[0] > 0.6
    assert m.bootstrap_confidence_interval(ar, _lag1, n_resamples=200)[1] < 0.2
    # resampling positions 0..n-1 shows the blocks: within a block each index follows the
    # previous one, and a new block starts with probability 1 / block_length
    positions = np.arange(400.0)
    low, high = m.bootstrap_confidence_interval(positions, _share_consecutive, block_length=10)
    assert 0.85 < low < 0.9 < high < 0.95
    assert m.bootstrap_confidence_interval(positions, _share_consecutive)[1] < 0.02
    # resamples on which the statistic is undefined are left out
    lumpy = np.array([0.01, 0.01, 0.01, 0.02])  # a third of the resamples are constant
    low, high = m.bootstrap_confidence_interval(lumpy, m.sharpe_ratio, n_resamples=200)
    assert math.isfinite(low) and math.isfinite(high)
    narrow = m.bootstrap_confidence_interval(short, np.mean, level=0.5)
    wide = m.bootstrap_confidence_interval(short, np.mean, level=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_two_dimensional_is_column_by_column():
    rng = np.random.default_rng(0)
    r = rng.normal(0.0005, 0.01, size=(100, 3))
    r[5, 1] = np.nan
    r[:, 2] = np.where(np.arange(100) % 3 == 0, 0.0, r[:, 2])
    bench = rng.normal(0.0003, 0.008, size=100)
    bench[9] = np.nan
    for fn in COLUMN_WISE:
        cols = fn(r)
        assert cols.shape == (3,), fn.__name__
        for k in range(3):
            assert cols[k] == pytest.approx(fn(r[:, k]), nan_ok=True), fn.__name__
    for fn in RELATIVE:
        cols = fn(r, bench)
        per_column_bench = fn(r, np.column_stack([bench] * 3))
        for k in range(3):
            assert cols[k] == pytest.approx(fn(r[:, k], bench)), fn.__name__
            assert per_column_bench[k] == pytest.approx(cols[k]), fn.__name__
    dsr = m.deflated_sharpe_ratio(r, 20)
    for k in range(3):
        assert dsr[k] == pytest.approx(m.deflated_sharpe_ratio(r[:, k], 20))
    np.testing.assert_allclose(m.drawdown_series(r)[:, 1], m.drawdown_series(r[:, 1]))
    with pytest.raises(ValueError, match="1-D"):
        m.summary(r)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(1)
    r = rng.normal(0.0005, 0.01, size=(60, 2))
    r[3, 0] = np.nan
    b = rng.normal(0.0, 0.01, size=60)
    w = np.abs(rng.normal(size=(60, 2)))
    copies = (r.copy(), b.copy(), w.copy())
    for fn in (*COLUMN_WISE, m.drawdown_series):
        fn(r)
    for fn in RELATIVE:
        fn(r, b)
    m.deflated_sharpe_ratio(r, 5)
    m.drawdown_periods(r[:, 0], np.arange(60))
    m.bootstrap_confidence_interval(r[:, 0], m.sharpe_ratio, n_resamples=20, block_length=5)
    m.average_holding_period(w)
    m.number_of_trades(w)
    m.summary(r[:, 0], b, 0.02, turnover=w[:, 0], weights=w, costs=w[:, 1])
    for original, copy in zip((r, b, w), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_summary_table():
    table = m.summary(
        MIXED,
        BENCH,
        risk_free=0.02,
        turnover=[0.5, 0.1],
        costs=[1.0, 2.0],
        weights=[[0.5, 0.0], [0.5, 0.2]],
    )
    assert list(table) == [
        "total_return",
        "cagr",
        "volatility",
        "sharpe",
        "sortino",
        "calmar",
        "max_drawdown",
        "skewness",
        "kurtosis",
        "var_95",
        "cvar_95",
        "tail_ratio",
        "win_rate",
        "average_win",
        "average_loss",
        "profit_factor",
        "probabilistic_sharpe",
        "beta",
        "alpha",
        "information_ratio",
        "tracking_error",
        "annual_turnover",
        "average_holding_period",
        "total_costs",
    ]
    assert all(type(v) is float for v in table.values())
    assert table["sharpe"] == pytest.approx(m.sharpe_ratio(MIXED, risk_free=0.02))
    assert table["alpha"] == pytest.approx(m.alpha(MIXED, BENCH, risk_free=0.02))
    assert table["probabilistic_sharpe"] == pytest.approx(
        m.probabilistic_sharpe_ratio(MIXED, risk_free=0.02)
    )
    assert table["annual_turnover"] == pytest.approx(0.3 * 252)
    assert table["average_holding_period"] == pytest.approx(1.5)  # runs of 2 and 1
    assert table["total_costs"] == 3.0
    # keys depend on the inputs given, not on the values
    bare = m.summary(EMPTY)
    assert list(bare) == list(table)[:17]
    assert all(math.isnan(v) for v in bare.values())
