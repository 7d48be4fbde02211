"""Live bars: the :class:`Bar`, the complete :class:`BarSet`, the :class:`Feed` protocol and
the one validator every feed shares (:class:`BarAssembler`).

Timing
------
A bar is stamped with its END: ``Bar.end`` is a tz-aware UTC timestamp, the instant the bar
closed. An intraday bar of interval ``5min`` ending 14:35 UTC covers (14:30, 14:35]. A daily
bar ends at its session's close (``exchange_calendars``, ``XNYS`` by default, early closes
included; 16:00 America/New_York for a date that is not a session of the calendar), so a
daily bar set is known after that close and a decision made on it fills at the next bar, as
in a backtest. Every time here is tz-aware; a naive time is refused.

Bar sets
--------
A feed yields, in time order, one :class:`BarSet` per interval end: one bar per symbol of its
universe. Bars of one end arriving for only part of the universe wait up to ``grace`` seconds
(default 5) after the first of them; then (or as soon as a later end completes first) the set
is emitted with each missing symbol **forward-filled** from its last emitted bar (open = high
= low = close = that close, volume 0), flagged in ``Bar.filled`` and ``BarSet.filled`` and
counted (``stats.filled``). A set whose missing symbol has no earlier bar to fill from is
dropped and counted (``stats.dropped_sets``).

The policy for irregular bars (applied by :class:`BarAssembler`, counted in
:class:`FeedStats`)
--------------------------------------------------------------------------------------------
* **invalid** (a price NaN, infinite or <= 0, high < low, high below open or close, low above
  open or close, negative volume, a naive time, another interval): a
  :class:`~marketarena.envs.data.DataValidationError` naming the symbol and the bar's end;
  the feed stops, as a load of such historical data would.
* **foreign** (a symbol outside the universe): dropped, counted (``foreign``).
* **duplicate** (a symbol and end already received, pending or in the last emitted set):
  dropped and counted (``duplicates``) when identical; a :class:`DataValidationError` when its
  values differ (two versions of one bar: which one is right cannot be known).
* **late / out of order** (an end at or before the last emitted set's that is not an
  identical duplicate of it, e.g. a bar arriving after its set was emitted forward-filled):
  dropped, counted (``late``); emitted sets are never revised.
* **gap** (interval ends in trading hours between two emitted sets for which no bar came at
  all): counted (``gaps``, one per missing interval) and reported (``gap_spans``: the first
  and last missing end of each gap); nothing is invented for them.
* **already delivered** (an end at or before ``after``, the resume point): skipped silently,
  counted (``skipped``): a resumed consumer or a :class:`FallbackFeed` switching feeds gets
  no set twice.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from marketarena.envs.data import DataValidationError, MarketData
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.news import DEFAULT_CALENDAR, _calendar, session_closes

__all__ = [
    "DEFAULT_GRACE",
    "INTERVALS",
    "Bar",
    "BarAssembler",
    "BarSet",
    "Feed",
    "FeedStats",
    "bar_sets_to_market_data",
    "check_interval",
    "daily_bar_end",
    "interval_of",
    "to_utc",
    "utc_naive",
]

#: the intervals a feed delivers, and their lengths
INTERVALS: dict[str, pd.Timedelta] = {
    "1min": pd.Timedelta(minutes=1),
    "5min": pd.Timedelta(minutes=5),
    "15min": pd.Timedelta(minutes=15),
    "1h": pd.Timedelta(hours=1),
    "1d": pd.Timedelta(days=1),
}
#: seconds a partly received bar set waits for its missing symbols before forward-filling
DEFAULT_GRACE = 5.0
_MAX_SPANS = 100


def check_interval(interval: str) -> str:
    """``interval`` when it is one of :data:`INTERVALS`, else a :class:`ConfigError`."""
    if interval not in INTERVALS:
        raise ConfigError(f"interval {interval!r}: use one of {list(INTERVALS)}")
    return interval


def to_utc(value: Any, what: str = "time") -> pd.Timestamp:
    """``value`` (a timestamp or ISO string WITH a time zone) as a UTC :class:`pd.Timestamp`;
    a naive or unparseable time is a :class:`DataError` naming ``what``."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(f"{what}: {value!r} is not a time") from None
    if stamp is pd.NaT or pd.isna(stamp):
        raise DataError(f"{what}: {value!r} is not a time")
    if stamp.tzinfo is None:
        raise DataError(f"{what}: {value!r} has no time zone (give e.g. +00:00 or Z)")
    return stamp.tz_convert("UTC")


def daily_bar_end(date: Any, calendar: str | None = DEFAULT_CALENDAR) -> pd.Timestamp:
    """The end of the daily bar of ``date`` (a day): its session's close in UTC
    (``calendar``, early closes included; 16:00 America/New_York when ``date`` is not a
    session or ``calendar`` is None)."""
    day = np.datetime64(pd.Timestamp(date).date(), "D")
    return pd.Timestamp(session_closes([day], calendar)[0]).tz_localize("UTC")


# --------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Bar:
    """One symbol's bar of one interval, stamped with its END (a tz-aware UTC time).

    ``open``, ``high``, ``low`` and ``volume`` are None for close-only data. ``filled`` is
    True for a bar forward-filled by the feed because none arrived in time (see the module
    docstring); such a bar is never a real print.
    """

    symbol: str
    end: pd.Timestamp
    interval: str
    close: float
    open: float | None = None
    high: float | None = None
    low: float | None = None
    volume: float | None = None
    filled: bool = False

    def values(self) -> tuple[float | None, ...]:
        """The prices and volume, to compare two versions of one bar."""
        return (self.open, self.high, self.low, self.close, self.volume)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (``end`` as ISO 8601 with ``+00:00``); floats round-trip exactly."""
        out = asdict(self)
        out["end"] = self.end.isoformat()
        return out

    @classmethod
    def from_json(cls, message: dict[str, Any]) -> Bar:
        """The bar of :meth:`to_json`'s dict; a field missing or of the wrong type is a
        :class:`DataError`."""
        try:
            return cls(
                symbol=str(message["symbol"]),
                end=to_utc(message["end"], f"bar of {message.get('symbol')!r}"),
                interval=str(message["interval"]),
                close=_number(message["close"]),
                open=_optional(message.get("open")),
                high=_optional(message.get("high")),
                low=_optional(message.get("low")),
                volume=_optional(message.get("volume")),
                filled=bool(message.get("filled", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a bar: {type(exc).__name__}: {exc}") from None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _optional(value: Any) -> float | None:
    return None if value is None else _number(value)


@dataclass(frozen=True)
class BarSet:
    """The bars of every symbol of a universe for one interval end.

    Attributes:
        end: the interval's end (tz-aware UTC); for daily bars the session close.
        interval: one of :data:`INTERVALS`.
        date: the exchange-local date of ``end`` (ISO ``YYYY-MM-DD``): the row of a daily
            :class:`~marketarena.envs.data.MarketData` this set is.
        bars: symbol -> :class:`Bar`, in the universe's order.
        filled: the symbols whose bar was forward-filled (none arrived within the grace
            period), in universe order.
    """

    end: pd.Timestamp
    interval: str
    date: str
    bars: dict[str, Bar]
    filled: tuple[str, ...] = ()

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.bars)


@dataclass
class FeedStats:
    """What a feed received and did, counted since it was made (see the module docstring for
    the policy behind each count). ``events`` lists notable events in words (reconnects,
    rate limits, switches, truncations), the latest 200."""

    bars_received: int = 0
    sets_emitted: int = 0
    duplicates: int = 0
    late: int = 0
    foreign: int = 0
    skipped: int = 0
    filled: int = 0
    dropped_sets: int = 0
    gaps: int = 0
    gap_spans: list[tuple[str, str]] = field(default_factory=list)
    garbage: int = 0
    reconnects: int = 0
    rate_limited: int = 0
    switches: int = 0
    truncations: int = 0
    events: list[str] = field(default_factory=list)

    def event(self, text: str) -> None:
        """Record a notable event (kept: the latest 200)."""
        self.events.append(text)
        del self.events[:-200]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- protocol
@runtime_checkable
class Feed(Protocol):
    """A source of complete bar sets for a universe and an interval.

    Iterating yields :class:`BarSet` in strictly increasing ``end`` order, blocking until
    the next set is complete (or its grace period has passed); the iteration ends when the
    source ends (a replay's last bar, ``until`` reached, an idle timeout, :meth:`close`).
    ``stats`` counts what the feed received and did. ``close()`` releases connections and
    files and makes a running iteration end at its next wake-up; it may be called from
    another thread and more than once.
    """

    name: str
    symbols: tuple[str, ...]
    interval: str
    stats: FeedStats

    def __iter__(self) -> Iterator[BarSet]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- validator
def bar_problems(bar: Bar) -> list[str]:
    """What is wrong with ``bar``'s values, in words (empty when it is valid)."""
    problems = []
    prices = {"open": bar.open, "high": bar.high, "low": bar.low, "close": bar.close}
    for name, value in prices.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(f"{name} {value!r} is not a positive price")
    if bar.volume is not None and not (math.isfinite(bar.volume) and bar.volume >= 0):
        problems.append(f"volume {bar.volume!r} is negative or not finite")
    if problems:
        return problems
    given = {k: v for k, v in prices.items() if v is not None}
    high, low = given.get("high"), given.get("low")
    if high is not None and low is not None and high < low:
        problems.append(f"high {high} < low {low}")
    for name in ("open", "close"):
        value = given.get(name)
        if value is None:
            continue
        if high is not None and value > high:
            problems.append(f"{name} {value} above high {high}")
        if low is not None and value < low:
            problems.append(f"{name} {value} below low {low}")
    return problems


class BarAssembler:
    """The validator every feed shares: takes bars in arrival order, applies the policy of
    the module docstring, and returns the bar sets that became complete, in time order.

    Args:
        symbols: the universe, in the order sets list their bars.
        interval: one of :data:`INTERVALS`.
        source: a name for errors and events (the feed's).
        calendar: the exchange calendar (``exchange_calendars`` name, default ``XNYS``) for
            the trading hours and sessions behind gap counts and set dates; None: 16:00
            America/New_York closes, every weekday a session, intraday gaps counted around
            the clock.
        grace: seconds a partial set waits for its missing symbols (default 5).
        after: the resume point: sets ending at or before it are skipped (default None).
        clock: seconds (default :func:`time.monotonic`), for the grace period.
        stats: the counters to update (default: new ones).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        interval: str,
        *,
        source: str = "feed",
        calendar: str | None = DEFAULT_CALENDAR,
        grace: float = DEFAULT_GRACE,
        after: Any = None,
        clock: Callable[[], float] = time.monotonic,
        stats: FeedStats | None = None,
    ) -> None:
        self.symbols = tuple(dict.fromkeys(str(s) for s in symbols))
        if not self.symbols:
            raise ConfigError(f"{source}: no symbols given")
        self.interval = check_interval(interval)
        if not grace >= 0:
            raise ConfigError(f"{source}: grace {grace!r} seconds must be >= 0")
        self.source = source
        self.calendar = calendar
        self.grace = float(grace)
        self.clock = clock
        self.stats = stats if stats is not None else FeedStats()
        self.last_end: pd.Timestamp | None = (
            None if after is None else to_utc(after, f"{source}: after")
        )
        self._last_emitted: dict[str, Bar] = {}  # the latest emitted bar of each symbol
        self._last_set: dict[str, Bar] = {}
        self._pending: dict[pd.Timestamp, dict[str, Bar]] = {}
        self._first_seen: dict[pd.Timestamp, float] = {}
        self._universe = set(self.symbols)
        self._lock = threading.Lock()
        self._cal: Any = None
        self._cal_span: tuple[pd.Timestamp, pd.Timestamp] | None = None

    # ---------------------------------------------------------------- input
    def add(self, bar: Bar) -> list[BarSet]:
        """Take one bar; return the sets it completed (with any earlier pending set, filled)."""
        with self._lock:
            self.stats.bars_received += 1
            self._check(bar)
            if bar.symbol not in self._universe:
                self.stats.foreign += 1
                return []
            if self.last_end is not None and bar.end <= self.last_end:
                emitted = self._last_set.get(bar.symbol)
                if bar.end == self.last_end and emitted is not None and not emitted.filled:
                    self._duplicate(bar, emitted)
                elif not self._last_set and bar.end <= self.last_end:
                    self.stats.skipped += 1  # before the resume point
                else:
                    self.stats.late += 1
                return []
            pending = self._pending.setdefault(bar.end, {})
            if bar.symbol in pending:
                self._duplicate(bar, pending[bar.symbol])
                return []
            pending[bar.symbol] = bar
            self._first_seen.setdefault(bar.end, self.clock())
            if len(pending) < len(self.symbols):
                return []
            return self._emit_through(bar.end)

    def poll(self) -> list[BarSet]:
        """The pending sets whose grace period has passed, emitted (forward-filled)."""
        with self._lock:
            now = self.clock()
            due = [e for e, t in self._first_seen.items() if now - t >= self.grace]
            return self._emit_through(max(due)) if due else []

    def flush(self) -> list[BarSet]:
        """Emit every pending set (forward-filled): the source has ended."""
        with self._lock:
            return self._emit_through(max(self._pending)) if self._pending else []

    # ---------------------------------------------------------------- checks
    def _where(self, bar: Bar) -> str:
        return f"{bar.symbol} at {bar.end.isoformat()}"

    def _check(self, bar: Bar) -> None:
        end = bar.end
        if not isinstance(end, pd.Timestamp) or end.tzinfo is None:
            raise DataValidationError(
                self.source, [f"{bar.symbol} at {end!r}: the end time has no time zone"]
            )
        if bar.interval != self.interval:
            raise DataValidationError(
                self.source,
                [f"{self._where(bar)}: a {bar.interval!r} bar in a {self.interval!r} feed"],
            )
        problems = bar_problems(bar)
        if problems:
            raise DataValidationError(self.source, [f"{self._where(bar)}: {p}" for p in problems])

    def _duplicate(self, bar: Bar, earlier: Bar) -> None:
        if bar.values() == earlier.values():
            self.stats.duplicates += 1
            return
        raise DataValidationError(
            self.source,
            [
                f"{self._where(bar)}: two different bars (first {earlier.values()}, then "
                f"{bar.values()}; open, high, low, close, volume)"
            ],
        )

    # ---------------------------------------------------------------- output
    def _emit_through(self, end: pd.Timestamp) -> list[BarSet]:
        out = []
        for e in sorted(k for k in self._pending if k <= end):
            bars = self._pending.pop(e)
            self._first_seen.pop(e, None)
            made = self._complete(e, bars)
            if made is not None:
                out.append(made)
        return out

    def _complete(self, end: pd.Timestamp, got: dict[str, Bar]) -> BarSet | None:
        bars: dict[str, Bar] = {}
        filled = []
        for s in self.symbols:
            if s in got:
                bars[s] = got[s]
                continue
            last = self._last_emitted.get(s)
            if last is None:
                self.stats.dropped_sets += 1
                self.stats.event(
                    f"{self.source}: dropped the set ending {end.isoformat()}: no bar for "
                    f"{s} and none earlier to fill from"
                )
                return None
            bars[s] = _filled(last, end)
            filled.append(s)
        self._count_gap(end)
        self.stats.filled += len(filled)
        self.stats.sets_emitted += 1
        self.last_end = end
        self._last_set = bars
        self._last_emitted.update(bars)
        return BarSet(end, self.interval, self._local_date(end), bars, tuple(filled))

    # ---------------------------------------------------------------- calendar
    def _calendar_for(self, start: pd.Timestamp, end: pd.Timestamp) -> Any:
        lo, hi = start.tz_localize(None).normalize(), end.tz_localize(None).normalize()
        span = self._cal_span
        if self._cal is None or span is None or lo < span[0] or hi > span[1]:
            span = (lo - pd.Timedelta(days=30), hi + pd.Timedelta(days=400))
            self._cal = _calendar(self.calendar, *span)
            self._cal_span = span
        return self._cal

    def _local_date(self, end: pd.Timestamp) -> str:
        zone = "America/New_York"
        if self.calendar is not None:
            zone = str(self._calendar_for(end, end).tz)
        return str(end.tz_convert(zone).date())

    def _count_gap(self, end: pd.Timestamp) -> None:
        last = self.last_end
        if last is None or not self._last_set:
            return
        missing = self._missing_ends(last, end)
        if missing:
            self.stats.gaps += len(missing)
            self.stats.gap_spans.append((missing[0].isoformat(), missing[-1].isoformat()))
            del self.stats.gap_spans[:-_MAX_SPANS]
            self.stats.event(
                f"{self.source}: gap of {len(missing)} {self.interval} bar(s) from "
                f"{missing[0].isoformat()} to {missing[-1].isoformat()}"
            )

    def _missing_ends(self, last: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
        """The interval ends in trading hours strictly between ``last`` and ``end``."""
        if self.interval == "1d":
            first, final = last.tz_convert(None).normalize(), end.tz_convert(None).normalize()
            if self.calendar is None:
                days = pd.bdate_range(first, final)
            else:
                cal = self._calendar_for(last, end)
                days = cal.sessions[(cal.sessions >= first) & (cal.sessions <= final)]
            inner = [d for d in days if first < d < final]
            return [daily_bar_end(d, self.calendar) for d in inner]
        step = INTERVALS[self.interval]
        if end - last <= step:
            return []
        if self.calendar is None:
            ends = pd.date_range(last + step, end - step, freq=step)
            return list(ends)
        cal = self._calendar_for(last, end)
        minute = pd.Timedelta(minutes=1)
        with warnings.catch_warnings():
            # exchange_calendars 4.13 reads DatetimeIndex.values of tz-aware times, which
            # pandas 3.1 deprecates: its warning, not ours
            warnings.filterwarnings("ignore", ".*values returning an ndarray")
            # a bar ending at e is in trading hours when its last minute (e - 1 min) is
            trading = cal.minutes_in_range(last + step - minute, end - step - minute)
        ends = pd.DatetimeIndex(trading).tz_convert("UTC") + minute
        on_grid = ((ends - last) % step) == pd.Timedelta(0)
        return list(ends[on_grid])


def _filled(last: Bar, end: pd.Timestamp) -> Bar:
    price = last.close
    has_ohlc = last.open is not None
    return replace(
        last,
        end=end,
        open=price if has_ohlc else None,
        high=price if has_ohlc else None,
        low=price if has_ohlc else None,
        volume=None if last.volume is None else 0.0,
        filled=True,
    )


def bar_sets_to_market_data(sets: Sequence[BarSet], name: str = "feed") -> MarketData:
    """Bar sets of one interval as a :class:`MarketData` (columns = the first set's symbols;
    open/high/low/volume when every bar has them), validated as any load is. A daily set's
    row is its ``BarSet.date``; an intraday set's row is its ``end`` (``datetime64[s]``, UTC:
    the intraday :class:`MarketData` convention). Forward-filled bars enter as they were
    emitted. Sets of several intervals are a :class:`ConfigError`."""
    if not sets:
        raise DataError(f"{name}: no bar sets")
    intervals = sorted({s.interval for s in sets})
    if len(intervals) > 1:
        raise ConfigError(f"{name}: bar sets of several intervals {intervals} make no MarketData")
    symbols = sets[0].symbols
    columns: dict[str, Any] = {}
    for f in ("open", "high", "low", "close", "volume"):
        values = np.array(
            [[getattr(s.bars[sym], f) for sym in symbols] for s in sets], dtype=object
        )
        if f == "close" or not any(v is None for v in values.ravel()):
            columns[f] = values.astype(np.float64)
    if intervals == ["1d"]:
        dates = np.array([s.date for s in sets], dtype="datetime64[D]")
    else:
        dates = np.array([utc_naive(s.end) for s in sets], dtype="datetime64[s]")
    return MarketData(dates=dates, symbols=symbols, name=name, **columns)


def utc_naive(end: pd.Timestamp) -> np.datetime64:
    """A bar's end (tz-aware) as the naive UTC ``datetime64[s]`` of an intraday
    :class:`MarketData` row."""
    return np.datetime64(to_utc(end, "bar end").tz_localize(None).to_datetime64(), "s")


def interval_of(data: MarketData) -> str:
    """The :data:`INTERVALS` name of ``data``'s bars (``"1d"`` for daily data); an intraday
    bar length that is none of them is a :class:`ConfigError`."""
    step = data.bar_interval
    if not data.intraday:
        return "1d"
    for key, length in INTERVALS.items():
        if key != "1d" and step == length:
            return key
    raise ConfigError(
        f"{data.name}: intraday bars of {step} are none of the feed intervals {list(INTERVALS)}"
    )
