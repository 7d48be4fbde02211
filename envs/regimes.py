"""Point-in-time market regimes: trend, volatility bands, a filtered Gaussian HMM, sector rotation.

Every detector reads a price series (a market index) and labels each row with an integer regime
whose value at row ``t`` uses only rows ``<= t``: it is what a trader knows after the close of
``t``, the decision time. Rows before a detector's lookback are :data:`UNKNOWN` (``-1``).

The series is by default the equal-weighted index of a panel's symbols
(:func:`market_index`), or any one-column series such as ``load_dataset("sp500_index")``
(:func:`detect_regimes`'s ``index``).

Detectors (each documents its exact rules and defaults):

* :func:`trend_regimes`: bear / sideways / bull from a trailing moving average, its slope and
  the drawdown from the trailing peak.
* :func:`volatility_regimes`: low / normal / high trailing realised volatility against fixed
  annualised levels or quantiles of the volatility history up to ``t``.
* :func:`hmm_volatility_regimes`: a two- (or three-) state Gaussian HMM (hmmlearn) on daily log
  returns, refitted every ``refit_every`` rows on returns up to the refit row only and
  *filtered* forward (:func:`forward_filter`): never smoothed, never Viterbi.
* :func:`sector_rotation`: each sector's trailing return minus the universe's, and the leading
  sector per date.

The env features ``regime_trend``, ``regime_vol`` and ``regime_hmm_p_high`` (registered in
:mod:`marketarena.envs.features`) are these detectors on the panel's equal-weighted index,
market-wide: the same value broadcast to every symbol.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from marketarena.envs.cache import cached_array, source_hash
from marketarena.envs.data import MarketData, require_daily
from marketarena.envs.errors import ConfigError, DataError, UnknownNameError

#: the label of a row before a detector's lookback
UNKNOWN = -1
TREND_NAMES = ("bear", "sideways", "bull")
VOLATILITY_NAMES = {1: ("low", "high"), 2: ("low", "normal", "high")}
HMM_NAMES = {2: ("calm", "turbulent"), 3: ("calm", "normal", "turbulent")}
#: the detectors :func:`detect_regimes` knows, by kind
REGIME_KINDS = ("trend", "volatility", "hmm")


@dataclass(frozen=True)
class Regimes:
    """Labels of one detector over a price series.

    Attributes:
        kind: ``"trend"``, ``"volatility"`` or ``"hmm"``.
        dates: ``(T,)`` dates of the series.
        prices: ``(T,)`` the series the labels were detected on.
        labels: ``(T,)`` int, ``names[label]``; :data:`UNKNOWN` before the lookback.
        names: the regimes' names, by label.
        probabilities: ``(T, K)`` filtered state probabilities (HMM only; NaN before the
            first fit).
        source: what the series is (``"equal-weighted index of sp500_20"``, ``"SP500"``).
    """

    kind: str
    dates: np.ndarray
    prices: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    probabilities: np.ndarray | None = None
    source: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def name(self, label: int) -> str:
        return "unknown" if label == UNKNOWN else self.names[label]

    def labels_at(self, dates: ArrayLike) -> np.ndarray:
        """The label known on each of ``dates``: that of the last row on or before it
        (:data:`UNKNOWN` before the series starts)."""
        d = np.asarray(dates).astype("datetime64[D]")
        pos = np.searchsorted(self.dates, d, side="right") - 1
        return np.where(pos >= 0, self.labels[np.maximum(pos, 0)], UNKNOWN)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, for JSON (see :meth:`from_dict`)."""
        return {
            "kind": self.kind,
            "dates": [str(d) for d in self.dates],
            "prices": self.prices.tolist(),
            "labels": self.labels.tolist(),
            "names": list(self.names),
            "probabilities": None if self.probabilities is None else self.probabilities.tolist(),
            "source": self.source,
            "params": self.params,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Regimes:
        probabilities = value.get("probabilities")
        return cls(
            kind=value["kind"],
            dates=np.asarray(value["dates"], dtype="datetime64[D]"),
            prices=np.asarray(value["prices"], dtype=float),
            labels=np.asarray(value["labels"], dtype=np.int64),
            names=tuple(value["names"]),
            probabilities=None if probabilities is None else np.asarray(probabilities, dtype=float),
            source=value.get("source", ""),
            params=dict(value.get("params", {})),
        )


# ----------------------------------------------------------------------------- the series
def market_index(data: MarketData) -> np.ndarray:
    """The equal-weighted index of ``data``'s symbols: 1.0 at row 0, then compounded by the
    mean simple return of the symbols priced on both rows (rebalanced every row).

    Row ``t`` uses closes up to ``t``. A row where no symbol has a return is a
    :class:`DataError` naming its date.
    """
    close = np.asarray(data.close, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = close[1:] / close[:-1] - 1.0
    counts = np.isfinite(r).sum(axis=1)
    if (counts == 0).any():
        t = int(np.argmax(counts == 0)) + 1
        raise DataError(f"{data.name}: no symbol has a return on {data.dates[t]}")
    mean = np.nansum(np.where(np.isfinite(r), r, 0.0), axis=1) / counts
    return np.r_[1.0, np.cumprod(1.0 + mean)]


def _prices(prices: ArrayLike, where: str) -> np.ndarray:
    p = np.asarray(prices, dtype=float)
    if p.ndim != 1:
        raise DataError(f"{where}: expected one price series (1-D), got shape {p.shape}")
    bad = ~np.isfinite(p) | (p <= 0)
    if bad.any():
        raise DataError(f"{where}: price at row {int(np.argmax(bad))} is {p[bad][0]}: not positive")
    return p


def _need_rows(p: np.ndarray, rows: int, where: str, what: str) -> None:
    if len(p) < rows:
        raise DataError(
            f"{where} need at least {rows} rows ({what}), but the series has {len(p)}; "
            "use a shorter lookback or more data"
        )


def _positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _log_returns(p: np.ndarray) -> np.ndarray:
    """``log(p_t / p_{t-1})``; row 0 NaN."""
    return np.r_[np.nan, np.diff(np.log(p))]


# ---------------------------------------------------------------------------------- trend
def trend_regimes(
    prices: ArrayLike,
    *,
    sma_window: int = 200,
    slope_window: int = 20,
    drawdown_threshold: float = 0.20,
    peak_window: int | None = 252,
) -> np.ndarray:
    """Bear (0) / sideways (1) / bull (2) per row (:data:`TREND_NAMES`).

    With ``P_t`` the price, ``SMA_t`` the mean of ``P`` over rows ``t-sma_window+1..t``,
    ``slope_t = SMA_t / SMA_{t-slope_window} - 1`` and ``dd_t = P_t / peak_t - 1`` the
    drawdown from the highest price of rows ``t-peak_window+1..t`` (all rows so far with
    ``peak_window=None``), the rules, in order:

    1. ``dd_t <= -drawdown_threshold``: **bear** (a 20% fall from the one-year high, the
       conventional bear market, by default);
    2. ``P_t > SMA_t`` and ``slope_t > 0``: **bull**;
    3. ``P_t < SMA_t`` and ``slope_t < 0``: **bear**;
    4. otherwise **sideways** (price and average slope disagree, or are flat).

    Defaults: 200-row average, 20-row slope, 20% drawdown from the 252-row peak. Rows before
    ``sma_window - 1 + slope_window`` are :data:`UNKNOWN`; a series shorter than
    ``sma_window + slope_window`` rows is a :class:`DataError`.
    """
    p = _prices(prices, "trend regimes")
    n = _positive_int(sma_window, "sma_window")
    s = _positive_int(slope_window, "slope_window")
    if not 0 < drawdown_threshold < 1:
        raise ConfigError(f"drawdown_threshold must be in (0, 1), got {drawdown_threshold}")
    _need_rows(p, n + s, "trend regimes", f"a {n}-row average and its {s}-row slope")
    sma = np.full(len(p), np.nan)
    sma[n - 1 :] = np.lib.stride_tricks.sliding_window_view(p, n).mean(axis=1)
    slope = np.full(len(p), np.nan)
    slope[s:] = sma[s:] / sma[:-s] - 1.0
    if peak_window is None:
        peak = np.maximum.accumulate(p)
    else:
        w = _positive_int(peak_window, "peak_window")
        padded = np.r_[np.full(w - 1, -np.inf), p]
        peak = np.lib.stride_tricks.sliding_window_view(padded, w).max(axis=1)
    dd = p / peak - 1.0
    labels = np.full(len(p), 1, dtype=np.int64)
    labels[(p < sma) & (slope < 0)] = 0
    labels[(p > sma) & (slope > 0)] = 2
    labels[dd <= -drawdown_threshold] = 0
    labels[: n - 1 + s] = UNKNOWN
    return labels


# ----------------------------------------------------------------------------- volatility
def realised_volatility(
    prices: ArrayLike, window: int = 21, periods_per_year: int = 252
) -> np.ndarray:
    """Annualised sample standard deviation (``ddof=1``) of the last ``window`` daily log
    returns (rows ``t-window+1..t``), times ``sqrt(periods_per_year)``; NaN before row
    ``window``."""
    p = _prices(prices, "realised volatility")
    w = _positive_int(window, "window", 2)
    r = _log_returns(p)
    out = np.full(len(p), np.nan)
    if len(p) > w:
        windows = np.lib.stride_tricks.sliding_window_view(r[1:], w)
        out[w:] = windows.std(axis=1, ddof=1) * np.sqrt(periods_per_year)
    return out


def volatility_regimes(
    prices: ArrayLike,
    *,
    window: int = 21,
    levels: Sequence[float] | None = None,
    quantiles: Sequence[float] = (1 / 3, 2 / 3),
    min_history: int = 252,
    periods_per_year: int = 252,
) -> np.ndarray:
    """Volatility bands per row: low (0) / normal (1) / high (2) with two thresholds, low /
    high with one (:data:`VOLATILITY_NAMES`).

    The trailing volatility ``v_t`` is :func:`realised_volatility` (``window`` rows,
    annualised). Its label is the number of thresholds ``<= v_t``. The thresholds are
    ``levels`` (fixed annualised volatilities, e.g. ``(0.12, 0.25)``) when given; otherwise
    the ``quantiles`` (linear interpolation) of ``v_0..v_t``, the volatility history up to
    ``t`` (``v_t`` included), which needs ``min_history`` values first.

    Defaults: 21-row volatility, terciles of the history after 252 values. Rows before the
    volatility (and, for quantiles, its history) exists are :data:`UNKNOWN`; a series too
    short for any label is a :class:`DataError`.
    """
    p = _prices(prices, "volatility regimes")
    w = _positive_int(window, "window", 2)
    thresholds = tuple(levels) if levels is not None else tuple(quantiles)
    if len(thresholds) not in VOLATILITY_NAMES or list(thresholds) != sorted(set(thresholds)):
        raise ConfigError(
            f"volatility regimes take one or two increasing thresholds, got {thresholds}"
        )
    vol = realised_volatility(p, w, periods_per_year)
    if levels is not None:
        if min(thresholds) <= 0:
            raise ConfigError(f"volatility levels must be positive, got {thresholds}")
        _need_rows(p, w + 1, "volatility regimes", f"a {w}-row volatility")
        bounds = np.broadcast_to(np.asarray(thresholds, dtype=float), (len(p), len(thresholds)))
        defined = np.isfinite(vol)
    else:
        if not all(0 < q < 1 for q in thresholds):
            raise ConfigError(f"volatility quantiles must be in (0, 1), got {thresholds}")
        m = _positive_int(min_history, "min_history")
        _need_rows(
            p, w + m, "volatility regimes", f"a {w}-row volatility and {m} values of its history"
        )
        series = pd.Series(vol[w:])
        bounds = np.full((len(p), len(thresholds)), np.nan)
        for k, q in enumerate(thresholds):
            bounds[w:, k] = series.expanding(min_periods=m).quantile(q).to_numpy()
        defined = np.isfinite(bounds).all(axis=1)
    labels = (vol[:, None] >= bounds).sum(axis=1).astype(np.int64)
    labels[~defined] = UNKNOWN
    return labels


# ------------------------------------------------------------------------------------ HMM
def forward_filter(
    observations: ArrayLike,
    startprob: ArrayLike,
    transmat: ArrayLike,
    means: ArrayLike,
    variances: ArrayLike,
) -> np.ndarray:
    """Filtered state probabilities ``P(state_t | x_0..x_t)`` of a one-dimensional Gaussian
    HMM, ``(L, K)``: the forward algorithm, normalised at every row.

    ``alpha_0 ∝ startprob * b(x_0)``, ``alpha_t ∝ (alpha_{t-1} @ transmat) * b(x_t)``, with
    ``b`` the normal densities (scipy.stats) of ``means`` and ``variances``. Row ``t`` uses
    ``x_0..x_t`` only. The densities are scaled per row by their largest (in log space), which
    the normalisation cancels, so a far outlier does not underflow to 0/0.
    """
    from scipy.stats import norm  # type: ignore[import-untyped]

    x = np.asarray(observations, dtype=float).reshape(-1)
    a = np.asarray(transmat, dtype=float)
    log_b = norm.logpdf(
        x[:, None],
        loc=np.asarray(means, dtype=float).reshape(1, -1),
        scale=np.sqrt(np.asarray(variances, dtype=float)).reshape(1, -1),
    )
    b = np.exp(log_b - log_b.max(axis=1, keepdims=True))
    out = np.empty_like(b)
    alpha = np.asarray(startprob, dtype=float) * b[0]
    out[0] = alpha = alpha / alpha.sum()
    for t in range(1, len(x)):
        alpha = (alpha @ a) * b[t]
        out[t] = alpha = alpha / alpha.sum()
    return out


@dataclass(frozen=True)
class HMMParameters:
    """One fit, states ordered by variance (state 0 the calmest)."""

    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    variances: np.ndarray


def fit_hmm(
    observations: ArrayLike,
    n_states: int = 2,
    *,
    n_iter: int = 100,
    random_state: int = 0,
    previous: HMMParameters | None = None,
) -> HMMParameters:
    """A hmmlearn ``GaussianHMM`` fitted on ``observations`` (1-D), its states sorted by
    variance so that labels mean the same after every refit. ``previous`` (an earlier fit)
    is the starting point of EM when given (a warm start: fewer iterations, stabler
    states); otherwise hmmlearn's seeded k-means start (``random_state``)."""
    from hmmlearn.hmm import GaussianHMM

    x = np.asarray(observations, dtype=float).reshape(-1, 1)
    model = GaussianHMM(
        n_components=n_states,
        covariance_type="diag",
        n_iter=n_iter,
        random_state=random_state,
        init_params="" if previous is not None else "stmc",
    )
    if previous is not None:
        model.startprob_ = previous.startprob
        model.transmat_ = previous.transmat
        model.means_ = previous.means.reshape(-1, 1)
        model.covars_ = previous.variances.reshape(-1, 1)
    model.fit(x)
    variances = np.asarray(model.covars_, dtype=float).reshape(n_states)
    order = np.argsort(variances, kind="stable")
    return HMMParameters(
        startprob=np.asarray(model.startprob_, dtype=float)[order],
        transmat=np.asarray(model.transmat_, dtype=float)[np.ix_(order, order)],
        means=np.asarray(model.means_, dtype=float).reshape(n_states)[order],
        variances=variances[order],
    )


def _hmm_filtered(
    p: np.ndarray,
    n_states: int,
    refit_every: int,
    min_history: int,
    window: int | None,
    n_iter: int,
    random_state: int,
) -> np.ndarray:
    """``(T, K)`` filtered probabilities (NaN before the first refit); see
    :func:`hmm_volatility_regimes`."""
    x = _log_returns(p) * 100.0  # percent: variances near 1, well above hmmlearn's min_covar
    out = np.full((len(p), n_states), np.nan)
    previous: HMMParameters | None = None
    for s in range(min_history, len(p), refit_every):
        first = 1 if window is None else max(1, s - window + 1)
        params = fit_hmm(
            x[first : s + 1], n_states, n_iter=n_iter, random_state=random_state, previous=previous
        )
        end = min(s + refit_every, len(p))
        filtered = forward_filter(
            x[first:end], params.startprob, params.transmat, params.means, params.variances
        )
        out[s:end] = filtered[s - first :]
        previous = params
    return out


def hmm_volatility_regimes(
    prices: ArrayLike,
    *,
    n_states: int = 2,
    refit_every: int = 126,
    min_history: int = 504,
    window: int | None = 1260,
    n_iter: int = 100,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Volatility states of a Gaussian HMM on daily log returns (in percent), point-in-time.

    Returns ``(labels, probabilities)``: ``probabilities[t, k] = P(state_t = k | r..r_t)``,
    the forward-filtered posterior (:func:`forward_filter`), and ``labels[t]`` its most
    probable state (:data:`HMM_NAMES`: ``calm`` / ``turbulent``, or ``calm`` / ``normal`` /
    ``turbulent`` with three states; states sorted by variance).

    Refits: at row ``s = min_history`` and every ``refit_every`` rows after it, the HMM
    (:func:`fit_hmm`, warm-started from the previous fit) is fitted on the returns of rows
    ``s-window+1..s`` (rows ``1..s`` with ``window=None``: expanding), data known at the
    close of ``s``. Rows ``s..s+refit_every-1`` are filtered with that fit, the filter
    starting at the first row of its fit window, so the probability at ``t`` conditions on
    the returns from there to ``t`` only: never hmmlearn's ``predict``/``predict_proba``
    over rows after ``t`` (those smooth with the future).

    Defaults: two states, refit every 126 rows (half a year), first fit after 504 returns,
    a 1260-row (five-year) rolling window, 100 EM iterations, seed 0. Rows before
    ``min_history`` are :data:`UNKNOWN` (probabilities NaN); a series of ``min_history``
    rows or fewer is a :class:`DataError`.

    The result is cached on disk (:mod:`marketarena.envs.cache`), keyed by the prices, the
    parameters and the source of the functions that compute it.
    """
    p = _prices(prices, "HMM regimes")
    if n_states not in HMM_NAMES:
        raise ConfigError(f"n_states must be 2 or 3, got {n_states!r}")
    every = _positive_int(refit_every, "refit_every")
    m = _positive_int(min_history, "min_history", 2 * n_states)
    w = None if window is None else _positive_int(window, "window", m)
    iters = _positive_int(n_iter, "n_iter")
    _need_rows(p, m + 1, "HMM regimes", f"{m} returns before the first fit")
    key = {
        "prices": hashlib.sha256(np.ascontiguousarray(p).tobytes()).hexdigest(),
        "params": [n_states, every, m, w, iters, int(random_state)],
        "source": [source_hash(f) for f in (_hmm_filtered, fit_hmm, forward_filter)],
    }
    probs, _ = cached_array(
        "regime_hmm", key, lambda: _hmm_filtered(p, n_states, every, m, w, iters, random_state)
    )
    labels = np.where(
        np.isfinite(probs).all(axis=1), np.argmax(np.nan_to_num(probs), axis=1), UNKNOWN
    ).astype(np.int64)
    return labels, probs


# ------------------------------------------------------------------------------ dispatch
def detect_regimes(
    kind: str,
    data: MarketData,
    *,
    index: MarketData | None = None,
    end: str | np.datetime64 | None = None,
    **params: Any,
) -> Regimes:
    """One detector's :class:`Regimes` over ``index`` (a one-column series) or, by default,
    the equal-weighted index of ``data`` (:func:`market_index`).

    ``end``: rows after this date are left out (they cannot change the labels up to it, and
    the HMM's refits after it cost time). ``params`` go to the detector. Intraday data is a
    :class:`DataError`: regimes are labelled per trading day.
    """
    if kind not in REGIME_KINDS:
        raise UnknownNameError(f"unknown regime kind {kind!r}; the kinds are: {list(REGIME_KINDS)}")
    if index is not None:
        if index.n_assets != 1:
            raise DataError(f"regime index {index.name} has {index.n_assets} columns; give one")
        dates, prices, source = index.dates, np.asarray(index.close[:, 0]), index.symbols[0]
    else:
        require_daily(data, "regimes")
        dates, prices = data.dates, market_index(data)
        source = f"equal-weighted index of {data.name}"
    if end is not None:
        last = int(np.searchsorted(dates, np.asarray(end, dtype="datetime64[D]"), side="right"))
        dates, prices = dates[:last], prices[:last]
    probabilities = None
    names: tuple[str, ...]
    if kind == "trend":
        labels, names = trend_regimes(prices, **params), TREND_NAMES
    elif kind == "volatility":
        labels = volatility_regimes(prices, **params)
        n = len(params["levels"]) if params.get("levels") is not None else None
        names = VOLATILITY_NAMES[n or len(params.get("quantiles", (1 / 3, 2 / 3)))]
    else:
        labels, probabilities = hmm_volatility_regimes(prices, **params)
        names = HMM_NAMES[params.get("n_states", 2)]
    return Regimes(
        kind=kind,
        dates=np.asarray(dates),
        prices=np.asarray(prices, dtype=float),
        labels=labels,
        names=names,
        probabilities=probabilities,
        source=source,
        params=dict(params),
    )


# ------------------------------------------------------------------------------ features
def _broadcast(values: np.ndarray, data: MarketData) -> np.ndarray:
    return np.repeat(values.astype(float)[:, None], data.n_assets, axis=1)


#: rows each feature needs for its first value (with the detectors' defaults); a shorter
#: panel gets an all-NaN feature (the env then names its first usable date) rather than an error
FEATURE_ROWS = {"regime_trend": 220, "regime_vol": 273, "regime_hmm_p_high": 505}


def regime_trend_feature(data: MarketData) -> np.ndarray:
    """``regime_trend``: :func:`trend_regimes` (defaults) of the equal-weighted index as
    -1 (bear), 0 (sideways), +1 (bull), broadcast to every symbol; NaN before row 219 (all NaN
    on fewer than 220 rows)."""
    if data.n_periods < FEATURE_ROWS["regime_trend"]:
        return np.full(data.close.shape, np.nan)
    labels = trend_regimes(market_index(data))
    return _broadcast(np.where(labels == UNKNOWN, np.nan, labels - 1.0), data)


def regime_vol_feature(data: MarketData) -> np.ndarray:
    """``regime_vol``: :func:`volatility_regimes` (defaults: terciles of the 21-row
    volatility's history) of the equal-weighted index, 0 (low), 1 (normal), 2 (high),
    broadcast to every symbol; NaN before row 272 (all NaN on fewer than 273 rows)."""
    if data.n_periods < FEATURE_ROWS["regime_vol"]:
        return np.full(data.close.shape, np.nan)
    labels = volatility_regimes(market_index(data))
    return _broadcast(np.where(labels == UNKNOWN, np.nan, labels), data)


def regime_hmm_p_high_feature(data: MarketData) -> np.ndarray:
    """``regime_hmm_p_high``: the filtered probability of the turbulent state of
    :func:`hmm_volatility_regimes` (defaults) on the equal-weighted index, broadcast to
    every symbol; NaN before row 504 (all NaN on fewer than 505 rows). Cached on disk."""
    if data.n_periods < FEATURE_ROWS["regime_hmm_p_high"]:
        return np.full(data.close.shape, np.nan)
    _, probs = hmm_volatility_regimes(market_index(data))
    return _broadcast(probs[:, -1], data)


# ------------------------------------------------------------------------ sector rotation
def sector_members(
    symbols: Sequence[str], sectors: Mapping[str, str]
) -> tuple[dict[str, list[int]], list[str]]:
    """Column indices of ``symbols`` per sector, and the symbols the map does not cover."""
    members: dict[str, list[int]] = {}
    missing = []
    for j, symbol in enumerate(symbols):
        if symbol in sectors:
            members.setdefault(sectors[symbol], []).append(j)
        else:
            missing.append(symbol)
    return dict(sorted(members.items())), missing


def sector_rotation(
    data: MarketData, sectors: Mapping[str, str] | None = None, window: int = 63
) -> tuple[pd.DataFrame, pd.Series]:
    """Relative strength of sectors over time, point-in-time.

    Each symbol's trailing return over ``window`` rows is ``close_t / close_{t-window} - 1``;
    a sector's is the mean over its symbols, the universe's the mean over all symbols, and a
    sector's relative strength is its return minus the universe's. Returns the frame
    (dates x sectors, NaN before row ``window``) and the leading sector per date (the
    largest relative strength; None before row ``window``).

    ``sectors``: ``symbol -> sector``; by default the data's own ``sectors``, else the bundled
    map (:func:`marketarena.envs.risk.load_sectors`). A symbol the map lacks is a
    :class:`DataError` naming it; fewer than ``window + 1`` rows is one too. Default window:
    63 rows (a quarter).
    """
    w = _positive_int(window, "window")
    if sectors is None:
        if data.sectors is not None:
            sectors = dict(zip(data.symbols, data.sectors, strict=True))
        else:
            from marketarena.envs.risk import BUNDLED_SECTORS, load_sectors

            sectors = load_sectors(BUNDLED_SECTORS)
    members, missing = sector_members(data.symbols, sectors)
    if missing:
        raise DataError(f"{data.name}: the sector map has no sector for {missing}")
    if data.n_periods <= w:
        raise DataError(
            f"sector rotation needs more than {w} rows (its window), but {data.name} has "
            f"{data.n_periods}; use a shorter window or more data"
        )
    close = np.asarray(data.close, dtype=float)
    trailing = np.full(close.shape, np.nan)
    trailing[w:] = close[w:] / close[:-w] - 1.0
    universe = trailing.mean(axis=1)
    frame = pd.DataFrame(
        {sector: trailing[:, cols].mean(axis=1) - universe for sector, cols in members.items()},
        index=pd.DatetimeIndex(data.dates, name="date"),
    )
    values = frame.to_numpy()
    ready = np.isfinite(values).all(axis=1)
    best = np.argmax(np.where(np.isfinite(values), values, -np.inf), axis=1)
    leader = pd.Series(
        [frame.columns[k] if ok else None for k, ok in zip(best, ready, strict=True)],
        index=frame.index,
        name="leading_sector",
        dtype=object,
    )
    return frame, leader
