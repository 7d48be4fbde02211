"""Risk and performance metrics: pure functions on simple per-period returns.

Conventions, shared by every function here:

* ``returns`` are simple returns per period (``NAV_t / NAV_{t-1} - 1``), never prices.
  1-D input gives a float; 2-D input ``(T, K)`` gives one value per column.
* NaN entries are missing periods and are ignored; inputs are never modified.
* Too little data gives NaN: fewer than 1 valid return for return metrics, fewer than 2 for
  anything that needs a standard deviation.
* ``periods_per_year`` (252 for daily bars) annualises; ``risk_free`` is an **annual** rate,
  converted to a per-period rate as ``(1 + risk_free) ** (1 / periods_per_year) - 1``.
"""

from __future__ import annotations

import numpy as np

PERIODS_PER_YEAR = 252


def _as_2d(returns: np.ndarray) -> tuple[np.ndarray, bool]:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        return r[:, None], True
    if r.ndim == 2:
        return r, False
    raise ValueError(f"returns must be 1-D or 2-D, got shape {r.shape}")


def _out(values: np.ndarray, squeeze: bool) -> float | np.ndarray:
    return float(values[0]) if squeeze else values


def _per_period(rate: float, periods_per_year: int) -> float:
    return (1.0 + rate) ** (1.0 / periods_per_year) - 1.0


def _valid_count(r: np.ndarray) -> np.ndarray:
    return np.sum(~np.isnan(r), axis=0)


def total_return(returns: np.ndarray) -> float | np.ndarray:
    """Compounded return over the whole series: ``prod(1 + r) - 1``."""
    r, squeeze = _as_2d(returns)
    out = np.nanprod(1.0 + r, axis=0) - 1.0
    out = np.where(_valid_count(r) >= 1, out, np.nan)
    return _out(out, squeeze)


def annualized_return(
    returns: np.ndarray, periods_per_year: int = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """CAGR: ``(1 + total_return) ** (periods_per_year / n) - 1``, ``n`` = valid periods."""
    r, squeeze = _as_2d(returns)
    n = _valid_count(r)
    growth = np.nanprod(1.0 + r, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(n >= 1, growth ** (periods_per_year / np.maximum(n, 1)) - 1.0, np.nan)
    return _out(out, squeeze)


def annualized_volatility(
    returns: np.ndarray, periods_per_year: int = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """Sample standard deviation (``ddof=1``) times ``sqrt(periods_per_year)``."""
    r, squeeze = _as_2d(returns)
    n = _valid_count(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.nanstd(r, axis=0, ddof=1) if r.shape[0] > 1 else np.full(r.shape[1], np.nan)
    out = np.where(n >= 2, std * np.sqrt(periods_per_year), np.nan)
    return _out(out, squeeze)


def sharpe_ratio(
    returns: np.ndarray, risk_free: float = 0.0, periods_per_year: int = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """Annualised Sharpe ratio: ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods_per_year)``.

    NaN when the excess returns have zero variance or fewer than 2 valid periods.
    """
    r, squeeze = _as_2d(returns)
    excess = r - _per_period(risk_free, periods_per_year)
    n = _valid_count(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(excess, axis=0) if r.shape[0] else np.full(r.shape[1], np.nan)
        std = np.nanstd(excess, axis=0, ddof=1) if r.shape[0] > 1 else np.full(r.shape[1], np.nan)
        ratio = mean / std * np.sqrt(periods_per_year)
    out = np.where((n >= 2) & (std > 0), ratio, np.nan)
    return _out(out, squeeze)


def drawdown_series(returns: np.ndarray) -> np.ndarray:
    """Drawdown after each period, ``wealth / running peak - 1`` (<= 0), wealth starting at 1."""
    r, squeeze = _as_2d(returns)
    wealth = np.cumprod(1.0 + np.nan_to_num(r, nan=0.0), axis=0)
    peak = np.maximum.accumulate(np.vstack([np.ones((1, r.shape[1])), wealth]), axis=0)[1:]
    dd = wealth / peak - 1.0
    return dd[:, 0] if squeeze else dd


def max_drawdown(returns: np.ndarray) -> float | np.ndarray:
    """Largest peak-to-trough loss as a negative fraction (``-0.25`` is a 25% drawdown).

    The starting wealth counts as a peak, so a first-period loss is a drawdown.
    """
    r, squeeze = _as_2d(returns)
    if r.shape[0] == 0:
        return _out(np.full(r.shape[1], np.nan), squeeze)
    dd = drawdown_series(r)
    out = np.where(_valid_count(r) >= 1, np.min(dd, axis=0), np.nan)
    return _out(out, squeeze)
