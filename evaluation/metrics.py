"""Risk and performance metrics: pure functions on simple per-period returns.

Conventions, shared by every function here:

* ``returns`` are simple returns per period (``NAV_t / NAV_{t-1} - 1``), never prices.
  1-D input gives a float; 2-D input ``(T, K)`` gives one value per column. A few functions
  are 1-D only and say so (:func:`drawdown_periods`, :func:`bootstrap_confidence_interval`,
  :func:`summary`).
* NaN entries are missing periods and are ignored; inputs are never modified. Functions that
  compare two series (:func:`beta`, :func:`alpha`, :func:`information_ratio`,
  :func:`tracking_error`) drop a period when either series is missing it.
* Too little data gives NaN: fewer than 1 valid return for return metrics, fewer than 2 for
  anything that needs a standard deviation (3 for :func:`skewness`, 4 for :func:`kurtosis`).
  A ratio whose denominator is zero (a flat line's Sharpe ratio) is NaN too, except
  :func:`profit_factor`, which is ``inf`` for gains without losses. Totals of nothing
  (:func:`total_costs`, :func:`number_of_trades`) are 0.
* ``periods_per_year`` (252 for daily bars) annualises; ``risk_free`` is an **annual** rate,
  converted to a per-period rate as ``(1 + risk_free) ** (1 / periods_per_year) - 1``.
  Every Sharpe ratio passed in (``benchmark_sharpe``, ``trials_sharpe_variance``) is
  annualised too.

Only numpy is needed: the normal distribution comes from the standard library
(``math.erfc``, ``statistics.NormalDist``).

Relation to empyrical (``empyrical-reloaded``), which
``tests/evaluation/test_metrics_reference.py`` checks us against on real data: the formulas
agree (total return, CAGR, volatility, Sharpe, Sortino, max drawdown, Calmar, beta, alpha,
VaR, CVaR, tail ratio; :func:`profit_factor` is its ``omega_ratio`` at a zero threshold),
with these differences in convention:

* ``risk_free`` is annual here and per period in empyrical.
* :func:`annualized_return` counts valid periods; empyrical counts NaNs as periods too.
* A ratio over a zero denominator is NaN here: :func:`sharpe_ratio` of a constant series,
  :func:`sortino_ratio` without downside, :func:`tail_ratio` with a zero 5th percentile
  (empyrical gives ``inf`` for these). NaN says "undefined for this data" and keeps such
  values out of averages and rankings, where ``inf`` would dominate them.
* :func:`value_at_risk` and :func:`conditional_value_at_risk` ignore NaNs (empyrical's VaR
  returns NaN), and CVaR averages every return at or below the VaR, so with ties at the VaR
  it can average a few more returns than empyrical's fixed ``floor((n - 1) * (1 - level)) +
  1`` lowest ones; without ties the two are identical.
* :func:`information_ratio` is empyrical's ``excess_sharpe`` annualised by
  ``sqrt(periods_per_year)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "PERIODS_PER_YEAR",
    "DrawdownPeriod",
    "alpha",
    "annualized_return",
    "annualized_volatility",
    "average_holding_period",
    "average_loss",
    "average_win",
    "beta",
    "bootstrap_confidence_interval",
    "calmar_ratio",
    "conditional_value_at_risk",
    "deflated_sharpe_ratio",
    "drawdown_periods",
    "drawdown_series",
    "holding_spells",
    "information_ratio",
    "kurtosis",
    "max_drawdown",
    "number_of_trades",
    "probabilistic_sharpe_ratio",
    "profit_factor",
    "sharpe_ratio",
    "skewness",
    "sortino_ratio",
    "summary",
    "tail_ratio",
    "total_costs",
    "total_return",
    "tracking_error",
    "turnover",
    "value_at_risk",
    "win_rate",
]

PERIODS_PER_YEAR = 252
EULER_MASCHERONI = 0.5772156649015329

# ---------------------------------------------------------------------------- helpers


def _as_2d(returns: ArrayLike, name: str = "returns") -> tuple[np.ndarray, bool]:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        return r[:, None], True
    if r.ndim == 2:
        return r, False
    raise ValueError(f"{name} must be 1-D (T,) or 2-D (T, K), got shape {r.shape}")


def _as_1d(returns: ArrayLike, function: str, name: str = "returns") -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(
            f"{function} takes a 1-D {name} series, got shape {r.shape}; call it once per column"
        )
    return r


def _out(values: np.ndarray, squeeze: bool) -> float | np.ndarray:
    return float(values[0]) if squeeze else values


def _per_period(rate: float, periods_per_year: int) -> float:
    if periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
    if rate <= -1.0:
        raise ValueError(f"risk_free is an annual rate and must be > -1, got {rate}")
    return (1.0 + rate) ** (1.0 / periods_per_year) - 1.0


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1 (e.g. 0.95), got {level}")


def _count(r: np.ndarray) -> np.ndarray:
    return np.sum(~np.isnan(r), axis=0)


def _mean(r: np.ndarray) -> np.ndarray:
    """Column means over valid entries; NaN for a column without any."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(r, axis=0) / _count(r)


def _deviations(r: np.ndarray) -> np.ndarray:
    """Deviations from the column mean, 0 where the entry is missing."""
    return np.where(np.isnan(r), 0.0, r - _mean(r))


def _constant(r: np.ndarray) -> np.ndarray:
    """Columns whose valid entries are all equal.

    Such a column has zero dispersion, but the floating-point mean it is centred on can
    differ from its values in the last bit; testing equality avoids dividing by that residue.
    """
    valid = ~np.isnan(r)
    hi = np.max(np.where(valid, r, -np.inf), axis=0, initial=-np.inf)
    lo = np.min(np.where(valid, r, np.inf), axis=0, initial=np.inf)
    return hi == lo


def _std(r: np.ndarray, ddof: int = 1) -> np.ndarray:
    """Column standard deviations over valid entries; NaN with ``ddof`` or fewer of them."""
    n = _count(r)
    d = _deviations(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.sum(d * d, axis=0) / (n - ddof)
    var = np.where(_constant(r), 0.0, var)
    return np.where(n > ddof, np.sqrt(var), np.nan)


def _norm_cdf(z: float) -> float:
    # erfc keeps precision in the lower tail, where 1 + erf(x) would round to 0
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _log_growth(r: np.ndarray) -> np.ndarray:
    """``log(1 + r)`` elementwise: ``-inf`` for a wipeout (``r == -1``), NaN stays NaN.

    Compounding sums these instead of multiplying ``1 + r``, so wealth that outgrows (or
    shrinks below) the float range does not overflow to ``inf`` (or underflow to 0).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log1p(r)


def _below_total_loss(r: np.ndarray) -> np.ndarray:
    """Columns with a return below -1 (wealth turning negative), which have no log.

    Such columns keep the direct product ``prod(1 + r)``: wealth changes sign there and the
    compounding cannot be written in log space.
    """
    with np.errstate(invalid="ignore"):
        return np.any(r < -1.0, axis=0)


def _log_wealth(r: np.ndarray) -> np.ndarray:
    """Cumulative log wealth after each period (wealth starting at 1); NaN periods add 0."""
    return np.cumsum(_log_growth(np.nan_to_num(r, nan=0.0)), axis=0)


def _columns(r: np.ndarray, fn: Callable[[np.ndarray], float], min_periods: int) -> np.ndarray:
    """Apply ``fn`` to the valid entries of each column (NaN below ``min_periods``)."""
    out = np.full(r.shape[1], np.nan)
    for k in range(r.shape[1]):
        col = r[:, k]
        col = col[~np.isnan(col)]
        if len(col) >= min_periods:
            out[k] = fn(col)
    return out


# ------------------------------------------------------------------------ return & risk


def total_return(returns: ArrayLike) -> float | np.ndarray:
    """Compounded return over the whole series: ``prod(1 + r) - 1``.

    Computed in log space as ``expm1(sum(log1p(r)))``, so a period of ``-1`` gives ``-1``
    and the compounding never overflows on the way. When the true total return exceeds
    the largest float (about ``1.8e308``) the result is ``inf``, without a warning.
    """
    r, squeeze = _as_2d(returns)
    with np.errstate(over="ignore"):
        out = np.expm1(np.nansum(_log_growth(r), axis=0))
    legacy = _below_total_loss(r)
    if legacy.any():
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.where(legacy, np.nanprod(1.0 + r, axis=0) - 1.0, out)
    out = np.where(_count(r) >= 1, out, np.nan)
    return _out(out, squeeze)


def annualized_return(
    returns: ArrayLike, periods_per_year: int = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """Compound annual growth rate (CAGR).

    ``(1 + total_return) ** (periods_per_year / n) - 1`` with ``n`` the number of *valid*
    periods (empyrical counts missing periods as well), computed in log space as
    ``expm1(sum(log1p(r)) * periods_per_year / n)``: finite whenever the annual rate itself
    is (even when the total return overflows), ``inf`` only when it exceeds the largest
    float, and ``-1`` after a period of ``-1``.
    """
    r, squeeze = _as_2d(returns)
    n = _count(r)
    exponent = periods_per_year / np.maximum(n, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.expm1(np.nansum(_log_growth(r), axis=0) * exponent)
    legacy = _below_total_loss(r)
    if legacy.any():
        growth = np.nanprod(1.0 + r, axis=0)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            out = np.where(legacy, growth**exponent - 1.0, out)
    out = np.where(n >= 1, out, np.nan)
    return _out(out, squeeze)


def annualized_volatility(
    returns: ArrayLike, periods_per_year: int = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """Sample standard deviation (``ddof=1``) times ``sqrt(periods_per_year)``."""
    r, squeeze = _as_2d(returns)
    return _out(_std(r) * np.sqrt(periods_per_year), squeeze)


def sharpe_ratio(
    returns: ArrayLike, risk_free: float = 0.0, periods_per_year: int = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """Annualised Sharpe ratio: ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods_per_year)``.

    ``rf`` is the per-period rate of the annual ``risk_free``. NaN when the excess returns
    have zero variance or fewer than 2 valid periods.
    """
    r, squeeze = _as_2d(returns)
    excess = r - _per_period(risk_free, periods_per_year)
    std = _std(excess)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = _mean(excess) / std * np.sqrt(periods_per_year)
    return _out(np.where(std > 0, ratio, np.nan), squeeze)


def sortino_ratio(
    returns: ArrayLike, risk_free: float = 0.0, periods_per_year: int = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """Annualised Sortino ratio: ``mean(e) / downside_deviation(e) * sqrt(periods_per_year)``.

    ``e = r - rf`` are the excess returns over the per-period risk-free rate, and the downside
    deviation is ``sqrt(mean(min(e, 0) ** 2))`` over **all** valid periods (periods above the
    target count as zeros; this is the target downside deviation of Sortino & Price, and
    empyrical's). NaN with fewer than 2 valid periods or when no period is below the target
    (empyrical returns ``inf`` there).
    """
    r, squeeze = _as_2d(returns)
    excess = r - _per_period(risk_free, periods_per_year)
    n = _count(r)
    downside = np.minimum(np.nan_to_num(excess, nan=0.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        deviation = np.sqrt(np.sum(downside * downside, axis=0) / n)
        ratio = _mean(excess) / deviation * np.sqrt(periods_per_year)
    return _out(np.where((n >= 2) & (deviation > 0), ratio, np.nan), squeeze)


def drawdown_series(returns: ArrayLike) -> np.ndarray:
    """Drawdown after each period, ``wealth / running peak - 1`` (<= 0), wealth starting at 1.

    Same shape as ``returns``; a missing period leaves the wealth unchanged. Computed from
    the cumulative log wealth, ``expm1(log_wealth - running max)``, so wealth beyond the
    float range does not break it; a period of ``-1`` gives ``-1`` from there on.
    """
    r, squeeze = _as_2d(returns)
    log_wealth = _log_wealth(r)
    start = np.zeros((1, r.shape[1]))
    log_peak = np.maximum.accumulate(np.vstack([start, log_wealth]), axis=0)[1:]
    with np.errstate(invalid="ignore"):
        dd = np.expm1(log_wealth - log_peak)
    legacy = _below_total_loss(r)
    if legacy.any():
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            wealth = np.cumprod(1.0 + np.nan_to_num(r, nan=0.0), axis=0)
            peak = np.maximum.accumulate(np.vstack([start + 1.0, wealth]), axis=0)[1:]
            dd = np.where(legacy, wealth / peak - 1.0, dd)
    return dd[:, 0] if squeeze else dd


def max_drawdown(returns: ArrayLike) -> float | np.ndarray:
    """Largest peak-to-trough loss as a negative fraction (``-0.25`` is a 25% drawdown).

    The starting wealth counts as a peak, so a first-period loss is a drawdown. 0 when the
    wealth never falls below its running peak.
    """
    r, squeeze = _as_2d(returns)
    if r.shape[0] == 0:
        return _out(np.full(r.shape[1], np.nan), squeeze)
    dd = drawdown_series(r)
    out = np.where(_count(r) >= 1, np.min(dd, axis=0), np.nan)
    return _out(out, squeeze)


def calmar_ratio(
    returns: ArrayLike, periods_per_year: int = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """Calmar ratio: ``annualized_return / abs(max_drawdown)``.

    Over the whole series (not the trailing 36 months of the original definition). NaN when
    there is no drawdown.
    """
    r, squeeze = _as_2d(returns)
    cagr = np.asarray(annualized_return(r, periods_per_year))
    mdd = np.asarray(max_drawdown(r))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = cagr / np.abs(mdd)
    return _out(np.where((mdd < 0) & np.isfinite(ratio), ratio, np.nan), squeeze)


@dataclass(frozen=True)
class DrawdownPeriod:
    """One episode below a previous wealth peak, from :func:`drawdown_periods`.

    Attributes:
        peak: where the wealth last stood at its running maximum before the fall.
        trough: where the wealth was lowest within the episode (the first such point).
        recovery: the first point back at (or above) the peak's wealth; ``None`` when the
            series ends under water.
        depth: ``trough wealth / peak wealth - 1``, a negative fraction.
        duration: periods from the peak to the recovery, or to the last point when not
            recovered.
        recovery_periods: periods from the trough to the recovery; ``None`` when not
            recovered.

    ``peak``, ``trough`` and ``recovery`` are wealth positions (``int``, 0 = the start, ``i +
    1`` = after period ``i``) or dates, as :func:`drawdown_periods` explains.
    """

    peak: Any
    trough: Any
    recovery: Any
    depth: float
    duration: int
    recovery_periods: int | None


def drawdown_periods(
    returns: ArrayLike,
    dates: ArrayLike | None = None,
    top: int | None = 5,
    *,
    start_date: Any = None,
) -> list[DrawdownPeriod]:
    """The ``top`` deepest drawdown episodes, deepest first (ties: earliest first).

    Wealth starts at 1 before the first period and is marked after each one, so there are
    ``T + 1`` wealth points, numbered 0 (the start) to ``T``; point ``i + 1`` is the wealth
    after period ``i``. A missing (NaN) period leaves the wealth unchanged, so positions stay
    aligned with ``dates``.

    Args:
        returns: 1-D simple returns.
        dates: optional labels aligned with ``returns``: ``dates[i]`` is the date at the
            *end* of period ``i`` (the date of wealth point ``i + 1``). When given, ``peak``,
            ``trough`` and ``recovery`` are elements of ``dates`` instead of positions.
        top: how many episodes to return; ``None`` for all.
        start_date: the date of the initial wealth point (for a backtest, the date of the
            starting NAV: ``result.dates[0]`` when ``dates=result.dates[1:]``). Only used
            with ``dates``; when it is not given, a drawdown that starts at the initial point
            has ``peak=None``.

    Returns:
        A list of :class:`DrawdownPeriod`, empty when the wealth never falls below its peak.

    Raises:
        ValueError: ``returns`` is not 1-D, ``dates`` has a different length, or ``top`` is
            negative.
    """
    r = _as_1d(returns, "drawdown_periods")
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0 or None, got {top}")
    labels: list[Any] | None = None
    if dates is not None:
        date_array = np.asarray(dates)
        if date_array.shape != r.shape:
            raise ValueError(
                f"dates must be aligned with returns (dates[i] = end of period i): got "
                f"{len(date_array)} dates for {len(r)} returns"
            )
        labels = [start_date, *date_array]

    # log wealth, so that compounding beyond the float range neither overflows nor underflows
    legacy = bool(_below_total_loss(r[:, None])[0])
    if legacy:  # negative wealth has no log: keep the product
        with np.errstate(over="ignore", invalid="ignore"):
            wealth = np.concatenate([[1.0], np.cumprod(1.0 + np.nan_to_num(r, nan=0.0))])
    else:
        wealth = np.concatenate([[0.0], _log_wealth(r[:, None])[:, 0]])
    peak_wealth = np.maximum.accumulate(wealth)
    under = wealth < peak_wealth
    # episodes are maximal runs of under-water points; pad so every run has a start and end
    edges = np.diff(np.concatenate([[False], under, [False]]).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # one past the last under-water point

    last = len(wealth) - 1
    episodes = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):  # int positions
        peak = a - 1
        trough = a + int(np.argmin(wealth[a:b]))
        recovered = b <= last
        if legacy:
            depth = float(wealth[trough] / wealth[peak] - 1.0)
        else:
            depth = float(np.expm1(wealth[trough] - wealth[peak]))
        episodes.append((depth, peak, trough, b if recovered else None))
    episodes.sort(key=lambda e: (e[0], e[1]))
    if top is not None:
        episodes = episodes[:top]

    def label(position: int | None) -> Any:
        if position is None:
            return None
        return position if labels is None else labels[position]

    return [
        DrawdownPeriod(
            peak=label(peak),
            trough=label(trough),
            recovery=label(recovery),
            depth=depth,
            duration=int((recovery if recovery is not None else last) - peak),
            recovery_periods=None if recovery is None else int(recovery - trough),
        )
        for depth, peak, trough, recovery in episodes
    ]


# ------------------------------------------------------------------- period statistics


def win_rate(returns: ArrayLike) -> float | np.ndarray:
    """Share of valid periods with a positive return (``r > 0``; a zero return is no win)."""
    r, squeeze = _as_2d(returns)
    n = _count(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sum(r > 0, axis=0) / n
    return _out(np.where(n >= 1, out, np.nan), squeeze)


def _masked_mean(r: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = np.sum(mask, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sum(np.where(mask, r, 0.0), axis=0) / count
    return np.where(count > 0, out, np.nan)


def average_win(returns: ArrayLike) -> float | np.ndarray:
    """Mean of the positive returns; NaN when there is none."""
    r, squeeze = _as_2d(returns)
    return _out(_masked_mean(r, r > 0), squeeze)


def average_loss(returns: ArrayLike) -> float | np.ndarray:
    """Mean of the negative returns (a negative number); NaN when there is none."""
    r, squeeze = _as_2d(returns)
    return _out(_masked_mean(r, r < 0), squeeze)


def profit_factor(returns: ArrayLike) -> float | np.ndarray:
    """Sum of gains over the absolute sum of losses: ``sum(r[r > 0]) / |sum(r[r < 0])|``.

    ``inf`` when there are gains but no losses; NaN when there are neither.
    """
    r, squeeze = _as_2d(returns)
    gains = np.sum(np.where(r > 0, r, 0.0), axis=0)
    losses = -np.sum(np.where(r < 0, r, 0.0), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = gains / losses
    out = np.where(losses > 0, ratio, np.where(gains > 0, np.inf, np.nan))
    return _out(out, squeeze)


def value_at_risk(returns: ArrayLike, level: float = 0.95) -> float | np.ndarray:
    """Historical value at risk: the ``1 - level`` quantile of the returns.

    A negative number for a loss (``-0.02``: in the worst ``1 - level`` of periods the return
    was -2% or lower). The quantile interpolates linearly between order statistics (numpy's
    default ``method="linear"``, Hyndman & Fan type 7, as empyrical's ``np.percentile``).
    """
    _check_level(level)
    r, squeeze = _as_2d(returns)
    return _out(_columns(r, lambda x: float(np.quantile(x, 1.0 - level)), 1), squeeze)


def conditional_value_at_risk(returns: ArrayLike, level: float = 0.95) -> float | np.ndarray:
    """Historical expected shortfall: the mean of the returns at or below :func:`value_at_risk`.

    Always ``<= value_at_risk(returns, level)``.
    """
    _check_level(level)
    r, squeeze = _as_2d(returns)

    def shortfall(x: np.ndarray) -> float:
        var = np.quantile(x, 1.0 - level)
        return float(np.mean(x[x <= var]))

    return _out(_columns(r, shortfall, 1), squeeze)


def tail_ratio(returns: ArrayLike) -> float | np.ndarray:
    """``|95th percentile| / |5th percentile|`` of the returns (linear interpolation).

    Above 1 when the right tail is fatter than the left. NaN when the 5th percentile is 0.
    """
    r, squeeze = _as_2d(returns)

    def ratio(x: np.ndarray) -> float:
        lo, hi = np.quantile(x, [0.05, 0.95])
        return float(abs(hi) / abs(lo)) if lo != 0 else math.nan

    return _out(_columns(r, ratio, 1), squeeze)


def _standard_moments(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n``, and the population skewness ``m3 / m2**1.5`` and kurtosis ``m4 / m2**2``.

    ``m_k`` are the central moments with divisor ``n``; NaN for constant columns.
    """
    n = _count(r)
    d = _deviations(r)
    d2 = d * d
    with np.errstate(invalid="ignore", divide="ignore"):
        m2 = np.sum(d2, axis=0) / n
        g1 = np.sum(d2 * d, axis=0) / n / m2**1.5
        g2 = np.sum(d2 * d2, axis=0) / n / (m2 * m2)
    constant = _constant(r)
    return n, np.where(constant, np.nan, g1), np.where(constant, np.nan, g2)


def skewness(returns: ArrayLike) -> float | np.ndarray:
    """Bias-corrected sample skewness (as pandas' ``Series.skew``).

    ``G1 = sqrt(n (n - 1)) / (n - 2) * m3 / m2 ** 1.5`` with ``m_k`` the central moments
    (divisor ``n``). NaN below 3 valid periods or for a constant series.
    """
    r, squeeze = _as_2d(returns)
    n, g1, _ = _standard_moments(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(n * (n - 1.0)) / (n - 2.0) * g1
    return _out(np.where(n >= 3, out, np.nan), squeeze)


def kurtosis(returns: ArrayLike) -> float | np.ndarray:
    """Bias-corrected sample **excess** kurtosis (as pandas' ``Series.kurt``; 0 for a normal).

    ``G2 = (n - 1) / ((n - 2) (n - 3)) * ((n + 1) * (m4 / m2 ** 2 - 3) + 6)``. NaN below 4
    valid periods or for a constant series.
    """
    r, squeeze = _as_2d(returns)
    n, _, g2 = _standard_moments(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (n - 1.0) / ((n - 2.0) * (n - 3.0)) * ((n + 1.0) * (g2 - 3.0) + 6.0)
    return _out(np.where(n >= 4, out, np.nan), squeeze)


# ---------------------------------------------------------------- relative to a benchmark


def _paired(
    returns: ArrayLike, benchmark_returns: ArrayLike
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Both series as ``(T, K)``, each NaN wherever either one is missing."""
    r, squeeze = _as_2d(returns)
    b = np.asarray(benchmark_returns, dtype=np.float64)
    if b.ndim not in (1, 2):
        raise ValueError(f"benchmark_returns must be 1-D or 2-D, got shape {b.shape}")
    if len(b) != len(r):
        raise ValueError(
            f"returns and benchmark_returns must cover the same periods: returns has "
            f"{len(r)} periods, benchmark_returns has {len(b)}"
        )
    if b.ndim == 1:
        b = b[:, None]
    if b.shape[1] not in (1, r.shape[1]):
        raise ValueError(
            f"benchmark_returns has {b.shape[1]} columns; returns has {r.shape[1]} "
            "(give one benchmark column, or one per returns column)"
        )
    b = np.broadcast_to(b, r.shape)
    missing = np.isnan(r) | np.isnan(b)
    return np.where(missing, np.nan, r), np.where(missing, np.nan, b), squeeze


def _beta(r: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = _count(r)
    db = _deviations(b)
    cov = np.sum(db * _deviations(r), axis=0)
    var = np.sum(db * db, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = cov / var
    return np.where((n >= 2) & ~_constant(b), out, np.nan)


def beta(returns: ArrayLike, benchmark_returns: ArrayLike) -> float | np.ndarray:
    """``cov(r, b) / var(b)`` over the periods where both series are present.

    ``benchmark_returns`` is ``(T,)`` (one benchmark for every column of ``returns``) or has
    the same shape as ``returns``. NaN with fewer than 2 common periods or a flat benchmark.

    Raises:
        ValueError: the two series have different lengths.
    """
    r, b, squeeze = _paired(returns, benchmark_returns)
    return _out(_beta(r, b), squeeze)


def alpha(
    returns: ArrayLike,
    benchmark_returns: ArrayLike,
    risk_free: float = 0.0,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> float | np.ndarray:
    """Jensen's alpha, annualised by compounding as empyrical does.

    ``(1 + mean((r - rf) - beta * (b - rf))) ** periods_per_year - 1``, with ``rf`` the
    per-period rate of the annual ``risk_free`` and :func:`beta` on the common periods.
    Compounding (rather than ``mean * periods_per_year``) makes alpha a rate comparable
    with :func:`annualized_return`, and matches empyrical's ``alpha`` exactly.

    Raises:
        ValueError: the two series have different lengths.
    """
    r, b, squeeze = _paired(returns, benchmark_returns)
    rf = _per_period(risk_free, periods_per_year)
    residual = (r - rf) - _beta(r, b) * (b - rf)
    with np.errstate(invalid="ignore"):
        out = (1.0 + _mean(residual)) ** periods_per_year - 1.0
    return _out(out, squeeze)


def information_ratio(
    returns: ArrayLike,
    benchmark_returns: ArrayLike,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> float | np.ndarray:
    """``mean(a) / std(a, ddof=1) * sqrt(periods_per_year)`` of the active returns ``a = r - b``.

    NaN with fewer than 2 common periods or when the active return is constant.

    Raises:
        ValueError: the two series have different lengths.
    """
    r, b, squeeze = _paired(returns, benchmark_returns)
    active = r - b
    std = _std(active)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _mean(active) / std * np.sqrt(periods_per_year)
    return _out(np.where(std > 0, out, np.nan), squeeze)


def tracking_error(
    returns: ArrayLike,
    benchmark_returns: ArrayLike,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> float | np.ndarray:
    """Annualised tracking error: ``std(r - b, ddof=1) * sqrt(periods_per_year)``.

    Raises:
        ValueError: the two series have different lengths.
    """
    r, b, squeeze = _paired(returns, benchmark_returns)
    return _out(_std(r - b) * np.sqrt(periods_per_year), squeeze)


# ---------------------------------------------------------------------- trading activity


def _turnover(turnover_per_period: ArrayLike, periods_per_year: int) -> float | np.ndarray:
    t, squeeze = _as_2d(turnover_per_period, "turnover_per_period")
    return _out(_mean(t) * periods_per_year, squeeze)


def turnover(
    turnover_per_period: ArrayLike, periods_per_year: int = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """Annualised turnover: the mean per-period turnover times ``periods_per_year``.

    The env's per-step turnover is the traded notional over the NAV before trading, so buying
    a full book from cash is 1.0 and swapping one full book for another is 2.0; an annual
    turnover of 12 means trading about six full books a year.
    """
    return _turnover(turnover_per_period, periods_per_year)


def holding_spells(positions: ArrayLike, min_position: float = 1e-9) -> list[np.ndarray]:
    """The one definition of a holding period: per asset, the lengths of its holding spells.

    A *holding spell* is a maximal run of consecutive periods in which the asset is held,
    that is ``|position| > min_position`` (long or short; NaN counts as not held). Its length
    is its number of periods. A spell cut off by the start or end of the series counts with
    the length seen. :func:`average_holding_period` is the mean over every spell of every
    asset; a persisted run's holding-periods table
    (:func:`~marketarena.evaluation.saved_runs.persisted.holding_periods`) lists them per
    symbol.

    Args:
        positions: ``(T, N)`` per period and asset (or ``(T,)`` for one asset), in any unit
            whose zero means "not held": weights (without the cash column) or shares.
        min_position: the largest ``|position|`` that still counts as not held.

    Returns:
        ``N`` integer arrays of spell lengths, in time order (empty for an asset never held).
    """
    p, _ = _as_2d(positions, "positions")
    held = np.abs(np.nan_to_num(p, nan=0.0)) > min_position
    pad = np.zeros((1, p.shape[1]), dtype=np.int8)
    edges = np.diff(np.vstack([pad, held.astype(np.int8), pad]), axis=0)
    spells = []
    for j in range(p.shape[1]):
        starts, ends = np.flatnonzero(edges[:, j] == 1), np.flatnonzero(edges[:, j] == -1)
        spells.append(ends - starts)
    return spells


def average_holding_period(weights: ArrayLike, min_weight: float = 1e-9) -> float:
    """Mean length, in periods, of the holding spells of every asset (:func:`holding_spells`).

    Args:
        weights: ``(T, N)`` asset weights per period (or ``(T,)`` for one asset), without
            the cash column (``result.weights[1:, :-1]`` for a :class:`BacktestResult`).
        min_weight: an asset counts as held when ``|w| > min_weight`` (long or short);
            missing (NaN) weights count as not held.

    Returns:
        The mean over every spell of every asset (so an asset held in more spells weighs
        more), NaN when nothing is ever held. A spell cut off by the start or end of the
        series counts with the length seen, so this is a lower bound for positions open at
        either edge.
    """
    lengths = np.concatenate([np.zeros(0, dtype=np.int64), *holding_spells(weights, min_weight)])
    return float(lengths.mean()) if lengths.size else math.nan


def number_of_trades(trades: ArrayLike) -> int:
    """Count of the non-zero, non-missing entries of ``trades``.

    One signature for both records a backtest keeps: a 1-D array with one entry per fill
    (e.g. ``SimulationHistory.fill_shares``) counts fills, and a ``(T, N)`` array of traded
    shares per period and asset (e.g. ``np.diff(history.shares, axis=0)``) counts the
    asset-periods with a trade. Pass traded quantities, not weight changes: weights drift
    with prices, so nearly every weight difference is non-zero.
    """
    t = np.asarray(trades, dtype=np.float64)
    return int(np.sum(np.nan_to_num(t, nan=0.0) != 0.0))


def total_costs(costs_per_period: ArrayLike) -> float | np.ndarray:
    """Sum of the per-period costs (missing periods count as no cost; empty gives 0)."""
    c, squeeze = _as_2d(costs_per_period, "costs_per_period")
    return _out(np.nansum(c, axis=0), squeeze)


# ------------------------------------------------------------- Sharpe-ratio inference


def _sharpe_inference(
    r: np.ndarray, risk_free: float, periods_per_year: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n``, the per-period Sharpe ratio, and ``1 - g3 SR + (g4 - 1) / 4 SR**2``.

    NaN columns where the Sharpe ratio is undefined. The skewness ``g3`` and (non-excess)
    kurtosis ``g4`` are the plain moment estimators of the paper: they satisfy Pearson's
    inequality ``g4 >= 1 + g3**2``, which keeps the variance term ``>= (1 - g3 SR / 2)**2 >=
    0``; the bias-corrected :func:`skewness` and :func:`kurtosis` do not guarantee that.
    """
    excess = r - _per_period(risk_free, periods_per_year)
    std = _std(excess)
    with np.errstate(invalid="ignore", divide="ignore"):
        sr = np.where(std > 0, _mean(excess) / std, np.nan)
    n, g3, g4 = _standard_moments(excess)
    variance_term = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    return n, sr, variance_term


def _psr(n: np.ndarray, sr: np.ndarray, term: np.ndarray, sr_star: np.ndarray) -> np.ndarray:
    out = np.full(len(n), np.nan)
    for k in range(len(n)):
        if n[k] >= 2 and term[k] > 0 and np.isfinite(sr[k]) and np.isfinite(sr_star[k]):
            z = (sr[k] - sr_star[k]) * math.sqrt(n[k] - 1.0) / math.sqrt(term[k])
            out[k] = _norm_cdf(z)
    return out


def probabilistic_sharpe_ratio(
    returns: ArrayLike,
    benchmark_sharpe: float = 0.0,
    periods_per_year: int = PERIODS_PER_YEAR,
    *,
    risk_free: float = 0.0,
) -> float | np.ndarray:
    """Probabilistic Sharpe ratio (Bailey & López de Prado, 2012).

    The probability that the true Sharpe ratio exceeds ``benchmark_sharpe``, given the
    sample's length, skewness and fat tails::

        PSR = Φ((SR - SR*) * sqrt(n - 1) / sqrt(1 - γ3 SR + (γ4 - 1) / 4 SR²))

    ``SR`` is the **per-period** (not annualised) Sharpe ratio of the excess returns
    (``ddof=1``, as :func:`sharpe_ratio`), ``γ3`` and ``γ4`` their skewness and
    **non-excess** kurtosis (plain moment estimators, as in the paper), ``n`` the valid
    periods. ``benchmark_sharpe`` is **annualised** and converted as ``SR* =
    benchmark_sharpe / sqrt(periods_per_year)``.

    Returns:
        A probability in ``[0, 1]``; NaN with fewer than 2 valid periods or zero variance.
    """
    r, squeeze = _as_2d(returns)
    n, sr, term = _sharpe_inference(r, risk_free, periods_per_year)
    sr_star = np.full(len(n), benchmark_sharpe / math.sqrt(periods_per_year))
    return _out(_psr(n, sr, term, sr_star), squeeze)


def deflated_sharpe_ratio(
    returns: ArrayLike,
    n_trials: int,
    trials_sharpe_variance: float | None = None,
    periods_per_year: int = PERIODS_PER_YEAR,
    *,
    risk_free: float = 0.0,
) -> float | np.ndarray:
    """Deflated Sharpe ratio (Bailey & López de Prado, 2014).

    :func:`probabilistic_sharpe_ratio` against the Sharpe ratio that the best of
    ``n_trials`` unskilled strategies is expected to reach::

        SR0 = sqrt(V) * ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)))

    with ``γ`` the Euler–Mascheroni constant, ``N = n_trials`` and ``V`` the variance of the
    per-period Sharpe ratios across the trials. With one trial ``SR0 = 0`` and the DSR is
    ``PSR(0)``; more trials raise ``SR0`` and lower the DSR.

    Args:
        returns: the selected strategy's returns.
        n_trials: how many (independent) configurations were tried, ``>= 1``.
        trials_sharpe_variance: the variance of the trials' **annualised** Sharpe ratios
            (as :func:`sharpe_ratio` gives them), converted to per-period units by dividing
            by ``periods_per_year``. When ``None``, ``V`` is approximated by the variance of
            the Sharpe estimator of this series itself, ``(1 + SR²/2 - γ3 SR + (γ4 - 3)/4
            SR²) / (n - 1)`` — the spread that sampling noise alone would produce, which
            understates ``V`` when the trials really differ.
        periods_per_year: periods per year of ``returns``.
        risk_free: annual risk-free rate for the excess returns.

    Returns:
        A probability in ``[0, 1]``; NaN where :func:`probabilistic_sharpe_ratio` is NaN.
    """
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be a whole number >= 1, got {n_trials!r}")
    if trials_sharpe_variance is not None and not trials_sharpe_variance >= 0:
        raise ValueError(f"trials_sharpe_variance must be >= 0, got {trials_sharpe_variance}")
    r, squeeze = _as_2d(returns)
    n, sr, term = _sharpe_inference(r, risk_free, periods_per_year)
    if n_trials == 1:
        sr0 = np.zeros(len(n))
    else:
        if trials_sharpe_variance is None:
            # 1 + SR²/2 - γ3 SR + (γ4 - 3)/4 SR² is the same expression as `term`
            with np.errstate(invalid="ignore", divide="ignore"):
                variance = term / (n - 1.0)
        else:
            variance = np.full(len(n), trials_sharpe_variance / periods_per_year)
        unit = NormalDist()
        expected_max = (1.0 - EULER_MASCHERONI) * unit.inv_cdf(
            1.0 - 1.0 / n_trials
        ) + EULER_MASCHERONI * unit.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
        with np.errstate(invalid="ignore"):
            sr0 = np.sqrt(variance) * expected_max
    return _out(_psr(n, sr, term, sr0), squeeze)


# ------------------------------------------------------------------------ uncertainty


def _stationary_indices(
    rng: np.random.Generator, n: int, n_resamples: int, block_length: float
) -> np.ndarray:
    """Politis & Romano (1994) stationary-bootstrap indices, ``(n_resamples, n)``.

    Each position starts a new block with probability ``1 / block_length`` (so block lengths
    are geometric with that mean) at a uniform random index, and otherwise continues the
    previous block, wrapping around the end of the series.
    """
    positions = np.arange(n)
    new_block = rng.random((n_resamples, n)) < 1.0 / block_length
    new_block[:, 0] = True
    starts = rng.integers(0, n, size=(n_resamples, n))
    block_begin = np.maximum.accumulate(np.where(new_block, positions, 0), axis=1)
    begin_index = np.take_along_axis(starts, block_begin, axis=1)
    return (begin_index + positions - block_begin) % n


def bootstrap_confidence_interval(
    returns: ArrayLike,
    statistic: Callable[..., float | np.ndarray],
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    block_length: int | None = None,
    **statistic_kwargs: Any,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval for ``statistic(returns, **statistic_kwargs)``.

    Missing periods are dropped first. Each resample has the length of the series; the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (linear
    interpolation) of the statistic over the resamples. Resamples on which the statistic is
    NaN (e.g. a Sharpe ratio of a constant resample) are left out.

    Args:
        returns: 1-D simple returns.
        statistic: a function of a 1-D array returning a float (or a 0-d array), e.g.
            :func:`sharpe_ratio`.
        n_resamples: number of bootstrap resamples.
        level: coverage of the interval.
        seed: seeds ``np.random.default_rng``; the same seed gives the same interval.
        block_length: ``None`` resamples periods independently (iid bootstrap), which
            ignores serial dependence such as volatility clustering. An integer uses the
            stationary bootstrap of Politis & Romano (1994): blocks of consecutive periods
            with geometric lengths of this mean, wrapping around the end, which keeps
            short-range dependence. A common choice is about ``n ** (1/3)`` — 10 to 20 for a
            few years of daily data.
        **statistic_kwargs: passed to ``statistic`` (e.g. ``periods_per_year=12``).

    Returns:
        ``(low, high)``; ``(nan, nan)`` with fewer than 2 valid periods or when the statistic
        is NaN on every resample.
    """
    _check_level(level)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if block_length is not None and block_length < 1:
        raise ValueError(f"block_length must be >= 1 or None, got {block_length}")
    r = _as_1d(returns, "bootstrap_confidence_interval")
    x = r[~np.isnan(r)]
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if block_length is None:
        indices = rng.integers(0, n, size=(n_resamples, n))
    else:
        indices = _stationary_indices(rng, n, n_resamples, block_length)
    if statistic in _COLUMNWISE:
        # one call on every resample at once, a column each; x[indices].T keeps each
        # resample contiguous in memory, so every column sums in the same order as the 1-D
        # call would and the values are bit-identical to the loop below (a test pins it)
        values = np.asarray(statistic(x[indices].T, **statistic_kwargs), dtype=float)
    else:
        values = np.array([float(statistic(x[i], **statistic_kwargs)) for i in indices])
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan
    low, high = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


#: statistics that take a 2-D array and return one value per column, as they would for each
#: column alone: the bootstrap evaluates every resample in one call
_COLUMNWISE: frozenset[Callable[..., Any]] = frozenset(
    {
        total_return,
        annualized_return,
        annualized_volatility,
        sharpe_ratio,
        sortino_ratio,
        max_drawdown,
        calmar_ratio,
    }
)


# ---------------------------------------------------------------------------- summary


def summary(
    returns: ArrayLike,
    benchmark_returns: ArrayLike | None = None,
    risk_free: float = 0.0,
    periods_per_year: int = PERIODS_PER_YEAR,
    turnover: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    costs: ArrayLike | None = None,
) -> dict[str, float]:
    """The standard metric table of one return series.

    Always: ``total_return``, ``cagr``, ``volatility``, ``sharpe``, ``sortino``, ``calmar``,
    ``max_drawdown``, ``skewness``, ``kurtosis``, ``var_95``, ``cvar_95``, ``tail_ratio``,
    ``win_rate``, ``average_win``, ``average_loss``, ``profit_factor`` and
    ``probabilistic_sharpe`` (against a Sharpe ratio of 0). With ``benchmark_returns``:
    ``beta``, ``alpha``, ``information_ratio``, ``tracking_error``. With ``turnover`` (per
    period): ``annual_turnover``; with ``weights`` (``(T, N)`` asset weights):
    ``average_holding_period``; with ``costs`` (per period): ``total_costs``.

    The keys depend only on which inputs are given, never on the values; a metric that is
    undefined for the data is NaN.

    Raises:
        ValueError: ``returns`` is not 1-D, or ``benchmark_returns`` has another length.
    """
    r = _as_1d(returns, "summary")
    table = {
        "total_return": total_return(r),
        "cagr": annualized_return(r, periods_per_year),
        "volatility": annualized_volatility(r, periods_per_year),
        "sharpe": sharpe_ratio(r, risk_free, periods_per_year),
        "sortino": sortino_ratio(r, risk_free, periods_per_year),
        "calmar": calmar_ratio(r, periods_per_year),
        "max_drawdown": max_drawdown(r),
        "skewness": skewness(r),
        "kurtosis": kurtosis(r),
        "var_95": value_at_risk(r, 0.95),
        "cvar_95": conditional_value_at_risk(r, 0.95),
        "tail_ratio": tail_ratio(r),
        "win_rate": win_rate(r),
        "average_win": average_win(r),
        "average_loss": average_loss(r),
        "profit_factor": profit_factor(r),
        "probabilistic_sharpe": probabilistic_sharpe_ratio(
            r, 0.0, periods_per_year, risk_free=risk_free
        ),
    }
    if benchmark_returns is not None:
        b = _as_1d(benchmark_returns, "summary", "benchmark_returns")
        table["beta"] = beta(r, b)
        table["alpha"] = alpha(r, b, risk_free, periods_per_year)
        table["information_ratio"] = information_ratio(r, b, periods_per_year)
        table["tracking_error"] = tracking_error(r, b, periods_per_year)
    if turnover is not None:
        table["annual_turnover"] = _turnover(
            _as_1d(turnover, "summary", "turnover"), periods_per_year
        )
    if weights is not None:
        table["average_holding_period"] = average_holding_period(weights)
    if costs is not None:
        table["total_costs"] = total_costs(_as_1d(costs, "summary", "costs"))
    return {key: float(value) for key, value in table.items()}
