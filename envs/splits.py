"""Date splits: train / validation / test ranges and walk-forward folds.

Splits are by date, never shuffled: validation follows training and the test range follows
validation, with no overlap. Each range is inclusive and names real trading dates of the data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, DataError, UnknownNameError


def iso_date(value: str | dt.date | np.datetime64, what: str = "date") -> str:
    """``value`` as a ``YYYY-MM-DD`` string: an ISO date string (``2018-01-02``,
    ``20180102``), a ``datetime.date`` (which YAML makes of an unquoted date), a ``datetime``
    at any time of day, or a numpy date. A string or numpy value with a time of day (an
    intraday bar's end, ``2024-03-05T14:35``) is kept as ``YYYY-MM-DDTHH:MM:SS`` in UTC
    (converted when it has a zone, read as UTC when naive).

    A value that is not a real date (``2018-13-45``, ``13/01/2020``, ``abc``) is a
    :class:`~marketarena.envs.errors.ConfigError` naming ``what`` (e.g. ``--start``); dates
    are compared as dates from here on, never as the strings they were given as.
    """
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.datetime64) and not np.isnat(value):
        seconds = value.astype("datetime64[s]")
        if seconds != seconds.astype("datetime64[D]"):  # an intraday bar's end
            return str(seconds)
        return str(value.astype("datetime64[D]"))
    if isinstance(value, int) and not isinstance(value, bool):  # YAML reads 20180102 so
        value = str(value)
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
        try:  # a time of day (intraday bars): UTC when naive, converted to UTC otherwise
            stamp = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            if stamp.tzinfo is not None:
                stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
            return stamp.isoformat(timespec="seconds")
    raise ConfigError(f"{what} {value!r} is not a date: write it as YYYY-MM-DD")


@dataclass(frozen=True)
class DateRange:
    """An inclusive range of trading dates, as ISO strings."""

    start: str
    end: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", iso_date(self.start, "DateRange start"))
        object.__setattr__(self, "end", iso_date(self.end, "DateRange end"))
        if dt.date.fromisoformat(self.end) < dt.date.fromisoformat(self.start):
            raise ConfigError(f"DateRange end {self.end} is before start {self.start}")

    def as_kwargs(self) -> dict[str, str]:
        """``{"start": ..., "end": ...}`` for :class:`~marketarena.envs.PortfolioEnv`."""
        return {"start": self.start, "end": self.end}


@dataclass(frozen=True)
class DateSplits:
    train: DateRange
    validation: DateRange
    test: DateRange

    def __getitem__(self, name: str) -> DateRange:
        if name not in ("train", "validation", "test"):
            raise UnknownNameError(f"unknown split {name!r}; choose train, validation or test")
        return getattr(self, name)


def _range(data: MarketData, lo: int, hi: int) -> DateRange:
    return DateRange(str(data.dates[lo]), str(data.dates[hi]))


def split_by_dates(data: MarketData, validation_start: str, test_start: str) -> DateSplits:
    """Train before ``validation_start``, validation until ``test_start``, test after."""
    validation_start = iso_date(validation_start, "validation_start")
    test_start = iso_date(test_start, "test_start")
    v = data.index_of(validation_start, "left")
    s = data.index_of(test_start, "left")
    if not 0 < v < s < data.n_periods:
        raise ConfigError(
            f"{data.name}: need data start < validation_start ({validation_start}) < "
            f"test_start ({test_start}) <= data end ({data.dates[-1]})"
        )
    return DateSplits(
        train=_range(data, 0, v - 1),
        validation=_range(data, v, s - 1),
        test=_range(data, s, data.n_periods - 1),
    )


def split_by_fractions(
    data: MarketData, train: float = 0.7, validation: float = 0.15
) -> DateSplits:
    """Chronological split by fractions of the dates; the test range gets the rest."""
    if not (train > 0 and validation > 0 and train + validation < 1):
        raise ConfigError(f"fractions train={train}, validation={validation} must be > 0, sum < 1")
    n = data.n_periods
    v = round(n * train)
    s = round(n * (train + validation))
    if not 0 < v < s < n:
        raise DataError(f"{data.name}: {n} dates are too few for these fractions")
    return split_by_dates(data, str(data.dates[v]), str(data.dates[s]))


def walk_forward(
    data: MarketData,
    *,
    train_periods: int,
    validation_periods: int,
    n_folds: int | None = None,
    step: int | None = None,
    expanding: bool = False,
    start: str | None = None,
    end: str | None = None,
) -> list[tuple[DateRange, DateRange]]:
    """Walk-forward folds ``[(train, validation), ...]`` in date order.

    Fold ``k``'s validation range starts right after its training range; successive folds move
    forward by ``step`` dates (default ``validation_periods``). With ``expanding=True`` every
    training range starts at the beginning. ``n_folds`` limits the count (the latest folds are
    kept when more fit).
    """
    if train_periods < 2 or validation_periods < 2:
        raise ConfigError("train_periods and validation_periods must be >= 2")
    if step is not None and step < 1:
        raise ConfigError(f"step must be >= 1, got {step}")
    step = step or validation_periods
    lo, hi = data.date_range_indices(start, end)
    folds = []
    train_start = lo
    while True:
        train_end = train_start + train_periods - 1
        val_end = train_end + validation_periods
        if val_end > hi:
            break
        folds.append(
            (
                _range(data, lo if expanding else train_start, train_end),
                _range(data, train_end + 1, val_end),
            )
        )
        train_start += step
    if not folds:
        raise DataError(
            f"{data.name}: {hi - lo + 1} dates cannot hold one fold of {train_periods} training "
            f"and {validation_periods} validation dates"
        )
    if n_folds is not None:
        if n_folds < 1:
            raise ConfigError("n_folds must be >= 1")
        folds = folds[-n_folds:]
    return folds
