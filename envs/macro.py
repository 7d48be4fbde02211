"""Economic indicators with release dates, aligned point-in-time and vintage-aware (like ALFRED).

File format: a CSV with the header ``series,observation_date,release_date,value``, one row per
*vintage*: the value published for ``observation_date`` (the period it measures, e.g.
``2020-01-01`` for January) on ``release_date``. A revision is another row for the same series
and observation with a later ``release_date``. ALFRED's "all vintages" download has this shape
once melted to long format; FRED/ALFRED data is not shipped here (no download, and its licence
varies by series): ``tests/fixtures/altdata/macro.csv`` is a small, clearly synthetic example.

* ``series``: letters, digits and ``_`` (it names the feature ``macro_<series>``).
* ``observation_date``: ``YYYY-MM-DD``.
* ``release_date``: ``YYYY-MM-DD``, released during that day, before the close (most US
  releases come out at 8:30 or 10:00 New York time): visible from that day's session on, or
  the next session's when the day is not one. A release after the close should carry the next
  day, or an exact time: an ISO 8601 time **with** an offset (``2020-02-13T16:30:00-05:00``)
  is compared with each session's close (:func:`~marketarena.envs.news.session_closes`:
  ``exchange_calendars``, early closes included; 16:00 New York where the calendar has no
  session). A time without an offset is an error.
* ``value``: a finite number; FRED's missing-value marker ``.`` marks a vintage without a
  value, skipped and counted in the data's notes.

A release before its observation date (swapped columns?), a repeated
``(series, observation_date, release_date)``, a bad date or value, or a missing or unknown
column is an error naming the file and line.

Alignment: at decision row ``t`` (after the close of session ``t``) a series' value is that of
the latest observation with a release visible by then, in the latest vintage visible by then;
a revision released after ``t`` is invisible at ``t``. NaN before the series' first release
(:func:`~marketarena.envs.features.compute_features` starts the env where every feature is
defined). ``change=True`` adds ``macro_<series>_change``: the latest observation's value minus
the previous observation's, both as known at ``t`` (NaN until two observations are known).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from marketarena.envs.data import MarketData, require_daily
from marketarena.envs.errors import DataError, MissingFileError, UnknownNameError
from marketarena.envs.news import DEFAULT_CALENDAR, add_feature_columns, session_closes

__all__ = [
    "MACRO_COLUMNS",
    "MacroSeries",
    "MacroVintages",
    "load_macro",
    "macro_values",
    "with_macro",
]

MACRO_COLUMNS = ("series", "observation_date", "release_date", "value")
#: FRED's marker for a vintage without a value
MISSING_VALUE = "."
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_NAT_D = np.datetime64("NaT", "D")
_NAT_NS = np.datetime64("NaT", "ns")


@dataclass(frozen=True, eq=False)
class MacroSeries:
    """The vintages of one series, in file order.

    Attributes:
        observation: ``(K,)`` ``datetime64[D]``, the period each value measures.
        release_day: ``(K,)`` ``datetime64[D]``, the release day; NaT where an exact time is given.
        release_time: ``(K,)`` ``datetime64[ns]`` in UTC; NaT where only a day is given.
        value: ``(K,)`` float.
        lines: ``(K,)`` the line of each vintage in the file.
    """

    observation: np.ndarray
    release_day: np.ndarray
    release_time: np.ndarray
    value: np.ndarray
    lines: np.ndarray


@dataclass(frozen=True, eq=False)
class MacroVintages:
    """Every series of a macro file (:func:`load_macro`).

    Attributes:
        source: the file.
        series: name -> its vintages, names sorted.
        skipped: vintages without a value (``.``), skipped.
    """

    source: str
    series: Mapping[str, MacroSeries]
    skipped: int = 0


def _day(text: str, column: str, where: str) -> np.datetime64:
    try:
        return np.datetime64(dt.date.fromisoformat(text), "D")
    except ValueError:
        raise DataError(f"{where}: {column} {text!r} is not a date (YYYY-MM-DD)") from None


def _release(text: str, where: str) -> tuple[np.datetime64, np.datetime64]:
    if len(text) == 10:
        return _day(text, "release_date", where), _NAT_NS
    try:
        stamp = pd.Timestamp(text)
    except (TypeError, ValueError):
        stamp = pd.NaT
    if pd.isna(stamp):
        raise DataError(
            f"{where}: release_date {text!r} is neither a date (YYYY-MM-DD) nor an ISO 8601 time"
        )
    if stamp.tzinfo is None:
        raise DataError(
            f"{where}: release_date {text!r} has a time but no timezone; give the offset "
            "(2020-02-13T16:30:00-05:00) or the date only"
        )
    return _NAT_D, stamp.tz_convert("UTC").tz_localize(None).as_unit("ns").to_datetime64()


def load_macro(path: str | Path) -> MacroVintages:
    """Read a vintage file (module docstring: format)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"macro file not found: {path}")
    rows: dict[str, list[tuple[np.datetime64, np.datetime64, np.datetime64, float, int]]] = {}
    seen: dict[tuple[str, str, str], int] = {}
    skipped = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            if sorted(columns) != sorted(MACRO_COLUMNS):
                raise DataError(
                    f"{path}:1: columns {columns}; a macro file has exactly {list(MACRO_COLUMNS)}"
                )
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if None in row or any(v is None for v in row.values()):
                    raise DataError(f"{where}: expected {len(MACRO_COLUMNS)} fields")
                name = row["series"].strip()
                if not _NAME.match(name):
                    raise DataError(
                        f"{where}: series {name!r} must be letters, digits and _ "
                        "(it names the feature macro_<series>)"
                    )
                observed = _day(row["observation_date"].strip(), "observation_date", where)
                day, time = _release(row["release_date"].strip(), where)
                released = day if not np.isnat(day) else time.astype("datetime64[D]")
                if released < observed:
                    raise DataError(
                        f"{where}: released {row['release_date'].strip()} before its "
                        f"observation date {observed} (are the two columns swapped?)"
                    )
                key = (name, str(observed), row["release_date"].strip())
                if key in seen:
                    raise DataError(
                        f"{where}: {name} {observed} released {key[2]} again "
                        f"(first on line {seen[key]})"
                    )
                seen[key] = reader.line_num
                text = row["value"].strip()
                if text == MISSING_VALUE:
                    skipped += 1
                    continue
                try:
                    value = float(text)
                except ValueError:
                    value = float("nan")
                if not np.isfinite(value):
                    raise DataError(f"{where}: value {text!r} is not a finite number")
                rows.setdefault(name, []).append((observed, day, time, value, reader.line_num))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not rows:
        raise DataError(f"{path}: no vintages with a value")
    series = {
        name: MacroSeries(
            observation=np.asarray([r[0] for r in vs], dtype="datetime64[D]"),
            release_day=np.asarray([r[1] for r in vs], dtype="datetime64[D]"),
            release_time=np.asarray([r[2] for r in vs], dtype="datetime64[ns]"),
            value=np.asarray([r[3] for r in vs], dtype=np.float64),
            lines=np.asarray([r[4] for r in vs], dtype=np.int64),
        )
        for name, vs in sorted(rows.items())
    }
    return MacroVintages(source=str(path), series=series, skipped=skipped)


def _visible_rows(s: MacroSeries, dates: np.ndarray, closes: np.ndarray | None) -> np.ndarray:
    """The first row at which each vintage is visible (``T``: never, within the data)."""
    rows = np.searchsorted(dates, s.release_day, side="left")
    timed = np.isnat(s.release_day)
    if timed.any():
        assert closes is not None
        rows[timed] = np.searchsorted(closes, s.release_time[timed], side="left")
    return rows


def macro_values(
    data: MarketData,
    vintages: MacroVintages,
    *,
    calendar: str | None = DEFAULT_CALENDAR,
    series: Sequence[str] | None = None,
    change: bool = False,
) -> dict[str, np.ndarray]:
    """Each series' point-in-time value at every row of ``data``, ``(T,)`` arrays named
    ``macro_<series>`` (and ``macro_<series>_change`` with ``change``); module docstring:
    alignment.

    Args:
        calendar: the exchange calendar of the close times, for releases given as exact times.
        series: the series to use (default: all in the file, sorted).

    Intraday data is a :class:`DataError`: releases align on session closes.
    """
    require_daily(data, "macro series")
    names = list(vintages.series) if series is None else list(series)
    unknown = [n for n in names if n not in vintages.series]
    if unknown:
        raise UnknownNameError(
            f"series {unknown} not in {vintages.source}; it has {list(vintages.series)}"
        )
    needs_closes = any(np.isnat(vintages.series[n].release_day).any() for n in names)
    closes = session_closes(data.dates, calendar) if needs_closes else None
    n_rows = data.n_periods
    out: dict[str, np.ndarray] = {}
    for name in names:
        s = vintages.series[name]
        rows = _visible_rows(s, data.dates, closes)
        released = np.where(np.isnat(s.release_day), s.release_time, s.release_day)
        # by the row it becomes visible, then release time, then file line: later wins
        order = np.lexsort((s.lines, released.astype("datetime64[ns]"), rows))
        known: dict[np.datetime64, float] = {}
        change_rows: list[int] = []
        levels: list[float] = []
        changes: list[float] = []
        for rank, k in enumerate(order):
            if rows[k] >= n_rows:
                break
            known[s.observation[k]] = float(s.value[k])
            if rank + 1 < len(order) and rows[order[rank + 1]] == rows[k]:
                continue  # the rest of this row's releases first
            observed = sorted(known)
            change_rows.append(int(rows[k]))
            levels.append(known[observed[-1]])
            changes.append(
                known[observed[-1]] - known[observed[-2]] if len(observed) > 1 else np.nan
            )
        at = np.searchsorted(np.asarray(change_rows, dtype=np.int64), np.arange(n_rows), "right")
        level = np.full(n_rows, np.nan)
        delta = np.full(n_rows, np.nan)
        defined = at > 0
        level[defined] = np.asarray(levels)[at[defined] - 1]
        delta[defined] = np.asarray(changes)[at[defined] - 1]
        out[f"macro_{name}"] = level
        if change:
            out[f"macro_{name}_change"] = delta
    return out


def with_macro(
    data: MarketData,
    vintages: MacroVintages | str | Path,
    *,
    calendar: str | None = DEFAULT_CALENDAR,
    series: Sequence[str] | None = None,
    change: bool = False,
) -> MarketData:
    """``data`` with each series of :func:`macro_values` as a market-wide feature column (the
    same value for every symbol). ``vintages`` may be a path (read with :func:`load_macro`)."""
    if not isinstance(vintages, MacroVintages):
        vintages = load_macro(vintages)
    values = macro_values(data, vintages, calendar=calendar, series=series, change=change)
    shape = (data.n_periods, data.n_assets)
    columns = {name: np.broadcast_to(v[:, None], shape).copy() for name, v in values.items()}
    skipped = f"; {vintages.skipped} '.' values skipped" if vintages.skipped else ""
    note = f"macro: {', '.join(values)} from {vintages.source}{skipped}"
    return add_feature_columns(data, columns, note)
