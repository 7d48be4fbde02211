"""Seeded synthetic markets with OHLCV bars, for tests and benchmarks.

* :func:`gbm_market` — correlated geometric Brownian motion (one common factor).
* :func:`regime_switching_market` — a hidden Markov chain of regimes, each with its own drift
  and volatility, plus Merton jumps.

Both return :class:`~marketarena.envs.data.MarketData` on a business-day calendar. Bars are
consistent (``low <= open, close <= high``); the open gaps from the previous close. The same
arguments and ``seed`` give identical data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from marketarena.envs.data import MarketData

_DT = 1.0 / 252.0


def _symbols(n_assets: int) -> tuple[str, ...]:
    width = len(str(n_assets - 1))
    return tuple(f"SYN{i:0{width}d}" for i in range(n_assets))


def _correlated_normals(
    rng: np.random.Generator, n_periods: int, n_assets: int, correlation: float
) -> np.ndarray:
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"correlation must be in [0, 1), got {correlation}")
    common = rng.standard_normal((n_periods, 1))
    own = rng.standard_normal((n_periods, n_assets))
    return np.sqrt(correlation) * common + np.sqrt(1.0 - correlation) * own


def _bars_from_log_returns(
    rng: np.random.Generator,
    log_returns: np.ndarray,
    daily_vol: np.ndarray,
    *,
    start_price: float,
    start_date: str,
    name: str,
) -> MarketData:
    """Close path from log returns; open/high/low/volume around it, all consistent."""
    n_periods, n_assets = log_returns.shape
    close = start_price * np.exp(np.cumsum(log_returns, axis=0))
    prev_close = np.vstack([np.full((1, n_assets), start_price), close[:-1]])
    # the overnight gap takes a share of the day's move plus its own noise
    gap = 0.3 * log_returns + 0.2 * daily_vol * rng.standard_normal((n_periods, n_assets))
    open_ = prev_close * np.exp(gap)
    wick = np.abs(rng.standard_normal((2, n_periods, n_assets))) * 0.5 * daily_vol
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    base_volume = rng.uniform(2e5, 5e6, size=n_assets)
    volume = np.round(
        base_volume
        * np.exp(0.3 * rng.standard_normal((n_periods, n_assets)) + 8 * np.abs(log_returns))
    )
    dates = pd.bdate_range(start=start_date, periods=n_periods).to_numpy().astype("datetime64[D]")
    return MarketData(
        dates=dates,
        symbols=_symbols(n_assets),
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        name=name,
    )


def gbm_market(
    n_assets: int = 10,
    n_periods: int = 1000,
    *,
    seed: int = 0,
    mu: float | Sequence[float] = 0.08,
    sigma: float | Sequence[float] = 0.25,
    correlation: float = 0.3,
    start_price: float = 100.0,
    start_date: str = "2000-01-03",
) -> MarketData:
    """Correlated GBM: annual drift ``mu`` and volatility ``sigma`` (scalars or per asset)."""
    if n_assets < 1 or n_periods < 2:
        raise ValueError("need n_assets >= 1 and n_periods >= 2")
    rng = np.random.default_rng(seed)
    mu_arr = np.broadcast_to(np.asarray(mu, dtype=float), (n_assets,))
    sigma_arr = np.broadcast_to(np.asarray(sigma, dtype=float), (n_assets,))
    if np.any(sigma_arr < 0):
        raise ValueError("sigma must be >= 0")
    z = _correlated_normals(rng, n_periods, n_assets, correlation)
    daily_vol = sigma_arr * np.sqrt(_DT)
    log_returns = (mu_arr - 0.5 * sigma_arr**2) * _DT + daily_vol * z
    return _bars_from_log_returns(
        rng,
        log_returns,
        np.broadcast_to(daily_vol, log_returns.shape),
        start_price=start_price,
        start_date=start_date,
        name=f"gbm(n={n_assets},seed={seed})",
    )


def regime_switching_market(
    n_assets: int = 10,
    n_periods: int = 1000,
    *,
    seed: int = 0,
    regime_mu: Sequence[float] = (0.15, -0.25),
    regime_sigma: Sequence[float] = (0.12, 0.35),
    transition: Sequence[Sequence[float]] = ((0.99, 0.01), (0.03, 0.97)),
    jump_intensity: float = 5.0,
    jump_mean: float = -0.02,
    jump_std: float = 0.05,
    correlation: float = 0.4,
    start_price: float = 100.0,
    start_date: str = "2000-01-03",
) -> MarketData:
    """Markov regime switching (shared by all assets) with Merton jumps.

    Args:
        regime_mu, regime_sigma: annual drift and volatility per regime.
        transition: row-stochastic daily transition matrix between regimes.
        jump_intensity: expected jumps per asset per year (Poisson).
        jump_mean, jump_std: normal log-jump size.
    """
    if n_assets < 1 or n_periods < 2:
        raise ValueError("need n_assets >= 1 and n_periods >= 2")
    mu = np.asarray(regime_mu, dtype=float)
    sig = np.asarray(regime_sigma, dtype=float)
    p = np.asarray(transition, dtype=float)
    k = len(mu)
    if sig.shape != (k,) or p.shape != (k, k):
        raise ValueError(f"{k} regimes need {k} sigmas and a {k}x{k} transition matrix")
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0):
        raise ValueError("transition rows must be probabilities summing to 1")
    if np.any(sig < 0):
        raise ValueError("regime_sigma must be >= 0")
    if jump_intensity < 0 or jump_std < 0:
        raise ValueError("jump_intensity and jump_std must be >= 0")
    rng = np.random.default_rng(seed)
    # simulate the regime path by inverse-CDF on uniform draws (sequential, at load time only)
    u = rng.random(n_periods)
    cdf = np.cumsum(p, axis=1)
    regimes = np.empty(n_periods, dtype=np.int64)
    state = 0
    for i in range(n_periods):
        regimes[i] = state
        state = min(int(np.searchsorted(cdf[state], u[i], side="right")), k - 1)
    z = _correlated_normals(rng, n_periods, n_assets, correlation)
    drift = (mu[regimes] - 0.5 * sig[regimes] ** 2)[:, None] * _DT
    daily_vol = np.repeat((sig[regimes] * np.sqrt(_DT))[:, None], n_assets, axis=1)
    n_jumps = rng.poisson(jump_intensity * _DT, size=(n_periods, n_assets))
    jumps = n_jumps * jump_mean + np.sqrt(n_jumps) * jump_std * rng.standard_normal(
        (n_periods, n_assets)
    )
    log_returns = drift + daily_vol * z + jumps
    return _bars_from_log_returns(
        rng,
        log_returns,
        daily_vol,
        start_price=start_price,
        start_date=start_date,
        name=f"regime(n={n_assets},seed={seed})",
    )
