"""Technical indicators: a plugin API, named parameters, on-disk caching and a standard set.

An indicator is a vectorised function over ``(T, N)`` float arrays (dates along axis 0,
symbols along axis 1), registered with :func:`indicator`::

    @indicator("rsi", inputs=("close",), params={"period": 14}, lookback=lambda p: p["period"])
    def rsi(close, *, period):
        \"\"\"Relative strength index (Wilder's smoothing), in [0, 100].\"\"\"
        ...  # -> (T, N)

Timing: the value at row ``t`` uses rows ``<= t`` only (the perturb-the-future test of every
standard indicator checks it), and the first ``lookback`` rows are NaN (the framework sets them
NaN whatever the function returns, so the declared lookback is the truth). After the lookback
a standard indicator is finite, also on flat prices (each documents its convention), as the
env's features must be.

Names carry parameters: the base name, then the values in their declared order, joined by
``_``: ``rsi_14``, ``macd_hist_12_26_9``, ``bb_pctb_20_2``. The bare base name takes the
defaults, and trailing parameters may be left out (``bb_pctb_20`` is ``bb_pctb_20_2``). Base
names may contain ``_``: a name is read with the longest registered base name it starts with.
An integer parameter (its default is an ``int``) must be written as a whole number; every
parameter must be positive.

Plugins: installed packages declare entry points in the group ``marketarena.indicators``, each
naming a module (importing it registers its decorated indicators) or a function (a decorated
indicator, registered by importing its module; any other function is called with no arguments
to register its indicators). They are loaded lazily, once, the first time an indicator is
looked up or listed; a plugin that fails to load is a :class:`PluginWarning` naming the entry
point, and the others still load.

Caching: :func:`compute_indicator` stores results with :func:`marketarena.envs.cache.cached_array`
(kind ``"indicator"``) keyed by the data's content hash, the resolved parameters and the
function's source, so a second run reuses them and an edit to the function recomputes them.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from marketarena.envs.cache import cached_array, source_hash
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, UnknownNameError

__all__ = [
    "ENTRY_POINT_GROUP",
    "INPUTS",
    "IndicatorSpec",
    "PluginWarning",
    "ResolvedIndicator",
    "available_indicators",
    "compute_indicator",
    "compute_indicator_cached",
    "describe_params",
    "indicator",
    "load_plugins",
    "resolve_indicator",
]

ENTRY_POINT_GROUP = "marketarena.indicators"
#: the price fields an indicator may take as inputs, passed positionally in declared order
INPUTS = ("open", "high", "low", "close", "volume")
BUILTIN_SOURCE = "marketarena"

ParamValue = int | float
IndicatorFunction = Callable[..., np.ndarray]
Lookback = Callable[[Mapping[str, ParamValue]], int]

_BASE_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*$")


class PluginWarning(UserWarning):
    """An indicator plugin (an entry point) could not be loaded."""


@dataclass(frozen=True)
class IndicatorSpec:
    """A registered indicator.

    Attributes:
        name: the base name (``"rsi"``).
        function: the vectorised function, called as ``function(*inputs, **params)``.
        inputs: the price fields it takes, in order (from :data:`INPUTS`).
        defaults: parameter names and default values, in declared order.
        lookback: rows before the first defined value, as a function of the parameters.
        source: where it came from: ``"marketarena"``, or the plugin's distribution and
            entry point.
    """

    name: str
    function: IndicatorFunction
    inputs: tuple[str, ...]
    defaults: tuple[tuple[str, ParamValue], ...]
    lookback: Lookback
    source: str

    @property
    def doc(self) -> str:
        """The first line of the function's docstring."""
        text = (self.function.__doc__ or "").strip()
        return text.splitlines()[0] if text else ""


@dataclass(frozen=True)
class ResolvedIndicator:
    """An indicator with its parameters resolved: what one name (``rsi_14``) means."""

    spec: IndicatorSpec
    params: dict[str, ParamValue]

    @property
    def name(self) -> str:
        """The canonical name: the base name and every parameter (``rsi_14``)."""
        return "_".join([self.spec.name, *(_format(v) for v in self.params.values())])

    @property
    def lookback(self) -> int:
        return int(self.spec.lookback(self.params))


_REGISTRY: dict[str, IndicatorSpec] = {}
_plugins_loaded = False
_loading_source: str | None = None


def _format(value: ParamValue) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def indicator(
    name: str,
    *,
    inputs: tuple[str, ...] = ("close",),
    params: Mapping[str, ParamValue] | None = None,
    lookback: Lookback | int = 0,
) -> Callable[[IndicatorFunction], IndicatorFunction]:
    """Decorator registering a vectorised indicator under the base name ``name``.

    Args:
        name: lowercase words joined by ``_`` (no word may start with a digit: digits after
            an ``_`` are parameters).
        inputs: price fields passed positionally (default: the close only).
        params: parameter names and defaults, in the order names write them (default: none).
            An ``int`` default makes the parameter an integer.
        lookback: rows before the first defined value, or a function of the parameters.

    The function returns a ``(T, N)`` array; the value at row ``t`` must use rows ``<= t``.
    Registering a second function under a taken name is a ``ValueError`` (re-importing the
    same function's module replaces it).
    """
    if not _BASE_NAME.match(name):
        raise ValueError(
            f"indicator name {name!r}: use lowercase words joined by '_', none starting "
            "with a digit (digits after '_' are read as parameters)"
        )
    bad_inputs = [i for i in inputs if i not in INPUTS]
    if bad_inputs or not inputs:
        raise ValueError(f"indicator {name!r}: inputs must be among {INPUTS}, got {inputs}")
    defaults = tuple((params or {}).items())
    for key, value in defaults:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"indicator {name!r}: parameter {key!r} needs a numeric default")
    lookback_fn: Lookback = (lambda _p: lookback) if isinstance(lookback, int) else lookback

    def decorator(fn: IndicatorFunction) -> IndicatorFunction:
        old = _REGISTRY.get(name)
        if old is not None and not _same_function(old.function, fn):
            raise ValueError(
                f"indicator {name!r} is already registered (by {old.source}: "
                f"{old.function.__module__}.{old.function.__qualname__})"
            )
        _REGISTRY[name] = IndicatorSpec(
            name=name,
            function=fn,
            inputs=tuple(inputs),
            defaults=defaults,
            lookback=lookback_fn,
            source=_loading_source or _source_of(fn),
        )
        return fn

    return decorator


def _same_function(a: IndicatorFunction, b: IndicatorFunction) -> bool:
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _source_of(fn: IndicatorFunction) -> str:
    module = getattr(fn, "__module__", "") or ""
    return BUILTIN_SOURCE if module.startswith("marketarena.") else module.split(".")[0]


# ----------------------------------------------------------------------------- plugins
@contextlib.contextmanager
def _source(label: str) -> Iterator[None]:
    global _loading_source
    previous, _loading_source = _loading_source, label
    try:
        yield
    finally:
        _loading_source = previous


def load_plugins(*, reload: bool = False) -> None:
    """Load the indicator plugins of the installed packages (entry point group
    ``marketarena.indicators``), once; ``reload=True`` looks again (after installing one).

    A plugin that raises while loading is a :class:`PluginWarning` naming its entry point.
    """
    global _plugins_loaded
    if _plugins_loaded and not reload:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        label = f"{dist} (entry point {ep.name})"
        try:
            with _source(label):
                target = ep.load()
                if callable(target) and not any(
                    _same_function(s.function, target) for s in _REGISTRY.values()
                ):
                    target()  # a registration hook, not an indicator itself
        except Exception as exc:  # a broken plugin must not take the library down
            warnings.warn(
                f"indicator plugin {ep.name!r} = {ep.value!r} from {dist} failed to load "
                f"({type(exc).__name__}: {exc}); its indicators are unavailable",
                PluginWarning,
                stacklevel=2,
            )


def available_indicators() -> list[IndicatorSpec]:
    """Every registered indicator (plugins loaded), sorted by name."""
    load_plugins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


# --------------------------------------------------------------------------- names
def resolve_indicator(name: str) -> ResolvedIndicator:
    """What ``name`` means: the longest registered base name it starts with, then the
    parameters (trailing ones default).

    Raises:
        UnknownNameError: no registered base name starts it (the message lists them).
        ConfigError: too many parameters, a value that is not a number of the right kind, or
            one that is not positive.
    """
    load_plugins()
    parts = name.split("_")
    for cut in range(len(parts), 0, -1):
        base = "_".join(parts[:cut])
        if base in _REGISTRY:
            return ResolvedIndicator(
                _REGISTRY[base], _parse_params(name, _REGISTRY[base], parts[cut:])
            )
    raise UnknownNameError(
        f"unknown indicator {name!r}; registered: {sorted(_REGISTRY)} "
        "(write parameters after the name, e.g. rsi_14)"
    )


def _parse_params(name: str, spec: IndicatorSpec, texts: list[str]) -> dict[str, ParamValue]:
    usage = "_".join([spec.name, *(f"<{k}>" for k, _ in spec.defaults)])
    if len(texts) > len(spec.defaults):
        raise ConfigError(
            f"indicator {name!r}: {spec.name} takes {len(spec.defaults)} parameter(s) "
            f"({usage}), got {len(texts)}"
        )
    params = dict(spec.defaults)
    for (key, default), text in zip(spec.defaults, texts, strict=False):
        value: ParamValue
        try:
            value = int(text) if isinstance(default, int) else float(text)
        except ValueError:
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise ConfigError(
                f"indicator {name!r}: {key} must be {kind}, got {text!r} ({usage})"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"indicator {name!r}: {key} must be positive, got {text!r}")
        params[key] = value
    return params


# ----------------------------------------------------------------------- computing
def compute_indicator(data: MarketData, name: str) -> np.ndarray:
    """The ``(T, N)`` float64 values of the indicator ``name`` on ``data`` (through the cache);
    NaN before its lookback. See :func:`compute_indicator_cached`."""
    return compute_indicator_cached(data, name)[0]


def compute_indicator_cached(data: MarketData, name: str) -> tuple[np.ndarray, bool]:
    """The values of ``name`` on ``data`` and whether they came from the on-disk cache.

    The cache key is the data's content hash, the canonical name's base and parameters, the
    inputs, the lookback and the function's source hash.

    Raises:
        UnknownNameError, ConfigError: a bad name (see :func:`resolve_indicator`).
        ConfigError: an input the data lacks (close-only data and an OHLCV indicator), or a
            lookback that leaves no row of the data defined.
        ValueError: the function returned the wrong shape (a plugin's bug).
    """
    resolved = resolve_indicator(name)
    spec = resolved.spec
    lookback = resolved.lookback
    if lookback < 0:
        raise ValueError(
            f"indicator {resolved.name!r} ({spec.source}) declares a negative lookback"
        )
    if lookback >= data.n_periods:
        raise ConfigError(
            f"indicator {resolved.name!r} has a lookback of {lookback} rows, but {data.name} "
            f"has only {data.n_periods} rows: no value would be defined; use more data or a "
            "shorter period"
        )
    arrays = []
    for field in spec.inputs:
        values = getattr(data, field)
        if values is None:
            raise ConfigError(
                f"indicator {resolved.name!r} needs {field} prices, but {data.name} has "
                f"only {list(data.fields)}"
            )
        arrays.append(values)

    def compute() -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.array(spec.function(*arrays, **resolved.params), dtype=np.float64)
        if out.shape != (data.n_periods, data.n_assets):
            raise ValueError(
                f"indicator {resolved.name!r} ({spec.source}) returned shape {out.shape}, "
                f"expected {(data.n_periods, data.n_assets)}"
            )
        out[:lookback] = np.nan
        return out

    key = {
        "data": data.content_hash(),
        "indicator": spec.name,
        "params": resolved.params,
        "inputs": list(spec.inputs),
        "lookback": lookback,
        "source": source_hash(spec.function),
    }
    return cached_array("indicator", key, compute)


# ---------------------------------------------------------------------- building blocks
def _rolling(x: np.ndarray, window: int) -> np.ndarray:
    """Windows of rows ``t-window+1..t`` for ``t >= window-1``: ``(T-window+1, N, window)``."""
    return sliding_window_view(x, window, axis=0)


def _rolling_mean_std(x: np.ndarray, window: int, ddof: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean and standard deviation (two-pass per window), NaN before row window-1."""
    mean, std = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    if x.shape[0] >= window:
        view = _rolling(x, window)
        mean[window - 1 :] = view.mean(axis=-1)
        std[window - 1 :] = view.std(axis=-1, ddof=ddof) if window > ddof else np.nan
    return mean, std


def _ema_from(x: np.ndarray, period: int, start: int) -> np.ndarray:
    """EMA with ``k = 2 / (period + 1)`` whose first value, at row ``start``, is the mean of
    rows ``start-period+1..start`` (TA-Lib's seeding); NaN before."""
    out = np.full(x.shape, np.nan)
    if start >= x.shape[0]:
        return out
    k = 2.0 / (period + 1)
    prev = x[start - period + 1 : start + 1].mean(axis=0)
    out[start] = prev
    # a loop over dates, vectorised over symbols: the recursion is sequential in time
    for t in range(start + 1, x.shape[0]):
        prev = (x[t] - prev) * k + prev
        out[t] = prev
    return out


def _wilder(values: np.ndarray, period: int, first: int) -> np.ndarray:
    """Wilder's smoothing of ``values`` (defined from row ``first``): the mean of rows
    ``first..first+period-1`` at row ``first+period-1``, then
    ``s_t = (s_{t-1} * (period - 1) + v_t) / period``; NaN before."""
    out = np.full(values.shape, np.nan)
    seed_row = first + period - 1
    if seed_row >= values.shape[0]:
        return out
    prev = values[first : seed_row + 1].mean(axis=0)
    out[seed_row] = prev
    for t in range(seed_row + 1, values.shape[0]):
        prev = (prev * (period - 1) + values[t]) / period
        out[t] = prev
    return out


def _ratio_or(num: np.ndarray, den: np.ndarray, flat: float) -> np.ndarray:
    """``num / den`` where ``den > 0``, ``flat`` where ``den == 0`` (nothing moved), NaN where
    ``den`` is NaN (not yet defined)."""
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), flat)
    out[np.isnan(den)] = np.nan
    return out


# ------------------------------------------------------------------- the standard set
@indicator("rsi", params={"period": 14}, lookback=lambda p: int(p["period"]))
def rsi(close: np.ndarray, *, period: int) -> np.ndarray:
    """Relative strength index with Wilder's smoothing, in [0, 100]; 50 where nothing moved.

    Average gain and loss of the one-bar changes: their means over the first ``period``
    changes, then Wilder's smoothing; ``100 * gain / (gain + loss)``. First value at row
    ``period``. TA-Lib gives 0 where gain and loss are both 0; 50 (neutral) is ours.
    """
    change = np.full(close.shape, np.nan)
    change[1:] = np.diff(close, axis=0)
    gain = _wilder(np.clip(change, 0.0, None), period, first=1)
    loss = _wilder(np.clip(-change, 0.0, None), period, first=1)
    return _ratio_or(100.0 * gain, gain + loss, 50.0)


def _macd_parts(close: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, ...]:
    if fast >= slow:
        raise ConfigError(f"macd: the fast period ({fast}) must be shorter than the slow ({slow})")
    start = slow - 1
    line = _ema_from(close, fast, start) - _ema_from(close, slow, start)
    sig = np.full(close.shape, np.nan)
    if close.shape[0] > start:
        sig[start:] = _ema_from(line[start:], signal, signal - 1)
    return line, sig, line - sig


_MACD_PARAMS = {"fast": 12, "slow": 26, "signal": 9}


@indicator("macd", params=_MACD_PARAMS, lookback=lambda p: int(p["slow"]) - 1)
def macd(close: np.ndarray, *, fast: int, slow: int, signal: int) -> np.ndarray:
    """MACD line: fast EMA minus slow EMA of the close (TA-Lib's seeding), from row slow-1.

    Both EMAs start at row ``slow-1``, each seeded with the mean of its last ``period`` closes
    (as TA-Lib's MACD does; a standalone fast EMA would start at row ``fast-1``).
    """
    return _macd_parts(close, fast, slow, signal)[0]


@indicator(
    "macd_signal", params=_MACD_PARAMS, lookback=lambda p: int(p["slow"]) + int(p["signal"]) - 2
)
def macd_signal(close: np.ndarray, *, fast: int, slow: int, signal: int) -> np.ndarray:
    """MACD signal line: the ``signal``-bar EMA of the MACD line, from row slow+signal-2."""
    return _macd_parts(close, fast, slow, signal)[1]


@indicator(
    "macd_hist", params=_MACD_PARAMS, lookback=lambda p: int(p["slow"]) + int(p["signal"]) - 2
)
def macd_hist(close: np.ndarray, *, fast: int, slow: int, signal: int) -> np.ndarray:
    """MACD histogram: the MACD line minus its signal line, from row slow+signal-2."""
    return _macd_parts(close, fast, slow, signal)[2]


_BB_PARAMS: dict[str, ParamValue] = {"period": 20, "k": 2.0}


def _bands(close: np.ndarray, period: int, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Middle (SMA), upper and lower Bollinger bands; population standard deviation (TA-Lib)."""
    middle, std = _rolling_mean_std(close, period, ddof=0)
    return middle, middle + k * std, middle - k * std


def _bb_lookback(p: Mapping[str, ParamValue]) -> int:
    return int(p["period"]) - 1


@indicator("bb_upper", params=_BB_PARAMS, lookback=_bb_lookback)
def bb_upper(close: np.ndarray, *, period: int, k: float) -> np.ndarray:
    """Upper Bollinger band: SMA + k standard deviations (population) of the last ``period``."""
    return _bands(close, period, k)[1]


@indicator("bb_lower", params=_BB_PARAMS, lookback=_bb_lookback)
def bb_lower(close: np.ndarray, *, period: int, k: float) -> np.ndarray:
    """Lower Bollinger band: SMA - k standard deviations (population) of the last ``period``."""
    return _bands(close, period, k)[2]


@indicator("bb_pctb", params=_BB_PARAMS, lookback=_bb_lookback)
def bb_pctb(close: np.ndarray, *, period: int, k: float) -> np.ndarray:
    """Bollinger %b: (close - lower) / (upper - lower); 0.5 where the bands have no width."""
    _, upper, lower = _bands(close, period, k)
    return _ratio_or(close - lower, upper - lower, 0.5)


@indicator("bb_width", params=_BB_PARAMS, lookback=_bb_lookback)
def bb_width(close: np.ndarray, *, period: int, k: float) -> np.ndarray:
    """Bollinger bandwidth: (upper - lower) / middle (0 on a flat stretch)."""
    middle, upper, lower = _bands(close, period, k)
    return (upper - lower) / middle


@indicator(
    "atr",
    inputs=("high", "low", "close"),
    params={"period": 14},
    lookback=lambda p: int(p["period"]),
)
def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, *, period: int) -> np.ndarray:
    """Average true range with Wilder's smoothing (TA-Lib's), from row ``period``.

    True range ``max(high - low, |high - prev close|, |low - prev close|)`` from row 1; the
    mean of the first ``period`` of them, then Wilder's smoothing.
    """
    prev = np.full(close.shape, np.nan)
    prev[1:] = close[:-1]
    true_range = np.maximum(high - low, np.maximum(np.abs(high - prev), np.abs(low - prev)))
    return _wilder(true_range, period, first=1)


@indicator("obv", inputs=("close", "volume"))
def obv(close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """On-balance volume: the first bar's volume, then + volume on an up close, - on a down one.

    A running total from the data's first row (as TA-Lib), so its level depends on where the
    data starts; its changes do not.
    """
    direction = np.zeros(close.shape)
    direction[1:] = np.sign(np.diff(close, axis=0))
    direction[0] = 1.0
    return np.cumsum(direction * volume, axis=0)


@indicator("zscore", params={"window": 20}, lookback=lambda p: int(p["window"]) - 1)
def zscore(close: np.ndarray, *, window: int) -> np.ndarray:
    """Rolling z-score of the close: (close - mean) / std over the last ``window`` closes
    (sample std, ``ddof=1``, as pandas); 0 where the window is flat."""
    if window < 2:
        raise ConfigError(f"zscore: the window must be at least 2, got {window}")
    mean, std = _rolling_mean_std(close, window, ddof=1)
    return _ratio_or(close - mean, std, 0.0)


_RANK_CHUNK_ELEMENTS = 4_000_000


def _cross_sectional_rank(x: np.ndarray) -> np.ndarray:
    """Average rank of each entry among its row (ties share their mean rank), scaled to
    ``[0, 1]``; 0.5 for a single symbol. NaN rows stay NaN."""
    n = x.shape[1]
    out = np.full(x.shape, np.nan)
    if n == 1:
        out[np.isfinite(x)] = 0.5
        return out
    rows = max(1, _RANK_CHUNK_ELEMENTS // (n * n))
    for lo in range(0, x.shape[0], rows):
        block = x[lo : lo + rows]
        below = (block[:, :, None] > block[:, None, :]).sum(axis=2)
        equal = (block[:, :, None] == block[:, None, :]).sum(axis=2)
        out[lo : lo + rows] = (below + (equal - 1) / 2.0) / (n - 1)
    out[~np.isfinite(x)] = np.nan
    return out


@indicator("xs_rank", params={"period": 20}, lookback=lambda p: int(p["period"]))
def xs_rank(close: np.ndarray, *, period: int) -> np.ndarray:
    """Cross-sectional rank of the ``period``-bar return among the symbols each day, in [0, 1]
    (0 the worst, 1 the best; ties share their mean rank; 0.5 for a single symbol)."""
    trailing = np.full(close.shape, np.nan)
    trailing[period:] = close[period:] / close[:-period] - 1.0
    return _cross_sectional_rank(trailing)


def describe_params(params: Mapping[str, ParamValue]) -> str:
    """``period=20, k=2`` style text of parameter values, written as names write them
    (empty when there are none)."""
    return ", ".join(f"{k}={_format(v)}" for k, v in params.items())
