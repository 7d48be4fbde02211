"""Point-in-time features, computed once per panel, vectorised over dates and symbols.

A feature is a function ``MarketData -> (T, N) array`` whose value at row ``t`` uses only rows
``<= t`` (NaN where it is not yet defined, e.g. the first return). Environments stack the
requested features into one ``(T, N, F)`` float32 array at construction and slice windows out of
it in ``step``; nothing is recomputed per step.

Features supplied with the data (``MarketData.features``, e.g. extra CSV columns loaded with
``feature_columns=``) are available by their names too, and take precedence over a registered
feature of the same name.

Any other name is looked up among the indicators (:mod:`marketarena.envs.indicators`), with its
parameters in the name: ``features: [log_return, rsi_14, bb_pctb_20_2]``.

Extend the registry with :func:`register_feature`::

    @register_feature("log_return_5")
    def log_return_5(data):
        c = data.close
        out = np.full_like(c, np.nan)
        out[5:] = np.log(c[5:] / c[:-5])
        return out
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, DataError, UnknownNameError
from marketarena.envs.indicators import available_indicators, compute_indicator, resolve_indicator
from marketarena.envs.regimes import (
    regime_hmm_p_high_feature,
    regime_trend_feature,
    regime_vol_feature,
)
from marketarena.envs.settings import EnvSettings

FeatureFunction = Callable[[MarketData], np.ndarray]

_REGISTRY: dict[str, FeatureFunction] = {}


def register_feature(name: str) -> Callable[[FeatureFunction], FeatureFunction]:
    """Decorator registering a point-in-time feature under ``name``."""

    def decorator(fn: FeatureFunction) -> FeatureFunction:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"feature {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorator


def available_features() -> list[str]:
    return sorted(_REGISTRY)


def _lagged_log_ratio(x: np.ndarray, lag: int = 1) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    out[lag:] = np.log(x[lag:] / x[:-lag])
    return out


def _trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of rows ``t-window+1..t`` (NaN for the first ``window-1`` rows)."""
    out = np.full(x.shape, np.nan)
    csum = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x]), axis=0)
    out[window - 1 :] = (csum[window:] - csum[:-window]) / window
    return out


def _require(data: MarketData, field: str, feature: str) -> np.ndarray:
    values = getattr(data, field)
    if values is None:
        raise ConfigError(
            f"feature {feature!r} needs {field} prices, but {data.name} is close-only; "
            "use features that need close only (e.g. 'log_return')"
        )
    return values


@register_feature("log_return")
def log_return(data: MarketData) -> np.ndarray:
    """``log(close_t / close_{t-1})``."""
    return _lagged_log_ratio(data.close)


@register_feature("log_return_5")
def log_return_5(data: MarketData) -> np.ndarray:
    """Five-bar log return ``log(close_t / close_{t-5})``."""
    return _lagged_log_ratio(data.close, 5)


@register_feature("price_to_sma_20")
def price_to_sma_20(data: MarketData) -> np.ndarray:
    """``log(close_t / mean(close_{t-19..t}))``: distance from the 20-bar moving average."""
    return np.log(data.close / _trailing_mean(data.close, 20))


@register_feature("volatility_20")
def volatility_20(data: MarketData) -> np.ndarray:
    """Standard deviation of the last 20 one-bar log returns."""
    r = _lagged_log_ratio(data.close)
    r0 = np.nan_to_num(r)
    mean = _trailing_mean(r0, 20)
    var = _trailing_mean(r0**2, 20) - mean**2
    out = np.sqrt(np.clip(var, 0.0, None))
    out[:20] = np.nan  # the first window includes the undefined first return
    return out


#: bars of one-bar returns that seed the trailing volatility, and its EWMA half-life in bars
_VOL_SEED_BARS = 20
_VOL_HALF_LIFE = 20.0
#: smallest variance a z-score divides by: a flat stretch gives 0 (or +-5), never NaN or inf
_MIN_VARIANCE = 1e-20
_Z_CLIP = 5.0


def _trailing_variance(r: np.ndarray) -> np.ndarray:
    """EWMA variance of one-bar log returns ``r`` (row 0 NaN), using rows ``<= t`` at row ``t``.

    Seeded at the 20th return (row 20) with the sample variance (``ddof=1``) of returns 1..20,
    then ``v_t = lam * v_{t-1} + (1 - lam) * r_t**2`` with ``lam = 0.5 ** (1 / 20)`` (half-life
    20 bars; squared returns, no mean: daily means are noise next to daily volatility). NaN
    before row 20.
    """
    out = np.full(r.shape, np.nan)
    n = _VOL_SEED_BARS
    if r.shape[0] <= n:
        return out
    out[n] = np.var(r[1 : n + 1], axis=0, ddof=1)
    lam = 0.5 ** (1.0 / _VOL_HALF_LIFE)
    r2 = r * r
    # a loop over dates, vectorised over symbols: the recursion is sequential in time
    for t in range(n + 1, r.shape[0]):
        out[t] = lam * out[t - 1] + (1.0 - lam) * r2[t]
    return out


def _previous_bar_volatility(r: np.ndarray) -> np.ndarray:
    """Trailing one-bar volatility known before bar ``t`` (returns up to ``t-1``) at row ``t``."""
    var = np.full(r.shape, np.nan)
    var[1:] = _trailing_variance(r)[:-1]
    return np.sqrt(np.maximum(var, _MIN_VARIANCE))  # NaN stays NaN


def _trailing_rms(r: np.ndarray, window: int) -> np.ndarray:
    """Root mean square of rows ``t-window+1..t`` of ``r`` (NaN until ``window`` returns)."""
    out = np.sqrt(np.clip(_trailing_mean(np.nan_to_num(r) ** 2, window), 0.0, None))
    out[:window] = np.nan  # the first full window would include the undefined first return
    return out


@register_feature("log_return_z")
def log_return_z(data: MarketData) -> np.ndarray:
    """One-bar log return over the trailing volatility before it, clipped to ``[-5, 5]``.

    ``r_t / sigma_{t-1}`` with ``sigma`` the EWMA volatility of one-bar log returns (half-life
    20 bars, seeded with the sample variance of the first 20 returns) using returns up to
    ``t-1`` only, so a shock is measured against the regime before it. Unitless, so symbols with
    different volatilities share a scale. Defined from row 21.
    """
    r = _lagged_log_ratio(data.close)
    return np.clip(r / _previous_bar_volatility(r), -_Z_CLIP, _Z_CLIP)


@register_feature("momentum_z_20")
def momentum_z_20(data: MarketData) -> np.ndarray:
    """20-bar log return over ``sqrt(20)`` times the trailing one-bar volatility, in ``[-5, 5]``.

    The volatility is that of ``log_return_z`` (returns up to ``t-1``): the momentum in units of
    its own typical 20-bar move. Defined from row 21.
    """
    r = _lagged_log_ratio(data.close)
    sigma_20 = _previous_bar_volatility(r) * np.sqrt(20.0)
    return np.clip(_lagged_log_ratio(data.close, 20) / sigma_20, -_Z_CLIP, _Z_CLIP)


@register_feature("volatility_ratio")
def volatility_ratio(data: MarketData) -> np.ndarray:
    """10-bar over 60-bar realised volatility, minus 1, clipped to ``[-1, 5]``: a regime feature.

    Realised volatility is the root mean square of the one-bar log returns in the window
    (rows ``t-k+1..t``). Positive when the recent bars move more than the longer window; 0 when
    the longer window is flat (no move, no regime change). The 10 bars lie inside the 60, so the
    value never exceeds ``sqrt(6) - 1`` (about 1.45); the upper clip is only a guard. Defined
    from row 60.
    """
    r = _lagged_log_ratio(data.close)
    short, long = _trailing_rms(r, 10), _trailing_rms(r, 60)
    ratio = np.where(long > 0, short / np.where(long > 0, long, 1.0), 1.0)
    ratio[np.isnan(long)] = np.nan
    return np.clip(ratio - 1.0, -1.0, 5.0)


@register_feature("log_volatility_20")
def log_volatility_20(data: MarketData) -> np.ndarray:
    """``log`` of the 20-bar realised volatility, annualised (``sqrt(252)``): the volatility
    level on a scale that reads the same for any asset (-2.3 at 10% a year, -0.5 at 60%)."""
    vol = volatility_20(data) * np.sqrt(252.0)
    return np.log(np.maximum(vol, 1e-4))  # a flat window is a very calm one, not undefined


@register_feature("high_low_range")
def high_low_range(data: MarketData) -> np.ndarray:
    """``log(high_t / low_t)``: the bar's range."""
    return np.log(
        _require(data, "high", "high_low_range") / _require(data, "low", "high_low_range")
    )


@register_feature("close_to_open")
def close_to_open(data: MarketData) -> np.ndarray:
    """``log(close_t / open_t)``: the intraday move."""
    return np.log(data.close / _require(data, "open", "close_to_open"))


@register_feature("log_volume_change")
def log_volume_change(data: MarketData) -> np.ndarray:
    """``log((volume_t + 1) / (volume_{t-1} + 1))``."""
    return _lagged_log_ratio(_require(data, "volume", "log_volume_change") + 1.0)


# market regimes (envs/regimes.py) on the panel's equal-weighted index: market-wide, the same
# value broadcast to every symbol
register_feature("regime_trend")(regime_trend_feature)
register_feature("regime_vol")(regime_vol_feature)
register_feature("regime_hmm_p_high")(regime_hmm_p_high_feature)


def _is_known(data: MarketData, name: str) -> bool:
    if name in _REGISTRY or name in data.feature_names:
        return True
    try:
        resolve_indicator(name)  # a known indicator with bad parameters raises ConfigError
    except UnknownNameError:
        return False
    return True


def feature_values(data: MarketData, name: str) -> np.ndarray:
    """The ``(T, N)`` values of one feature: the data's own column of that name, else a
    registered feature, else an indicator (``rsi_14``: :mod:`marketarena.envs.indicators`,
    cached on disk)."""
    if data.features is not None and name in data.feature_names:
        return np.asarray(data.features[:, :, data.feature_names.index(name)])
    if name in _REGISTRY:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(_REGISTRY[name](data), dtype=np.float64)
    return compute_indicator(data, name)


def compute_features(
    data: MarketData, names: Sequence[str] | None = None
) -> tuple[np.ndarray, int]:
    """Stack features into a C-contiguous ``(T, N, F)`` float32 array (``names``: the env's
    default features when None).

    Returns the array and the first row at which every feature is defined for every symbol.
    Undefined entries before that row are zero; after it, a NaN or inf is an error naming the
    feature, symbol and date (a feature must never go undefined mid-panel).
    """
    if names is None:
        names = EnvSettings().features
    if not names:
        raise ConfigError("at least one feature is required")
    unknown = [n for n in names if not _is_known(data, n)]
    if unknown:
        raise UnknownNameError(
            f"unknown feature(s) {unknown}; registered: {available_features()}; "
            f"indicators: {[s.name for s in available_indicators()]} (with parameters, e.g. "
            f"rsi_14); in {data.name}: {list(data.feature_names)}"
        )
    out = np.empty((data.n_periods, data.n_assets, len(names)), dtype=np.float32)
    first_valid = 0
    for k, name in enumerate(names):
        values = feature_values(data, name)
        if values.shape != (data.n_periods, data.n_assets):
            raise ValueError(
                f"feature {name!r} returned shape {values.shape}, expected "
                f"{(data.n_periods, data.n_assets)}"
            )
        finite_rows = np.isfinite(values).all(axis=1)
        start = int(np.argmax(finite_rows)) if finite_rows.any() else data.n_periods
        bad_after = ~np.isfinite(values[start:])
        if bad_after.any():
            t, j = np.argwhere(bad_after)[0]
            raise DataError(
                f"feature {name!r} is undefined for {data.symbols[j]} on "
                f"{data.dates[start + t]} after being defined earlier"
            )
        first_valid = max(first_valid, start)
        out[:, :, k] = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return out, first_valid
