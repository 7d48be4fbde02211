"""Downloaded market data: a data directory, the providers that fill it, their rate limits.

The data directory
------------------
One CSV file per symbol, ``<data_dir>/<SYMBOL>.csv``, in the long format the loaders read
(:func:`~marketarena.envs.data.from_long_frame`): columns ``date, symbol, open, high, low,
close, volume`` (``close`` required; the others as the provider gives them), one row per
date, ISO dates, sorted. ``<data_dir>/downloads.json`` records the last download of each
provider. The folder loads as one :class:`~marketarena.envs.data.MarketData`
(:func:`load_data_dir`, and :func:`~marketarena.envs.data.resolve_data` given its path, so
``--data <dir>`` and a run's ``data`` can name it); its symbols must then share their dates
(``missing="error"``), as a run needs.

Providers
---------
A :class:`Provider` has a ``name`` and ``fetch(symbols, start, end)`` returning a long frame
of daily bars. Besides the built-in :class:`LocalProvider` (the bundled datasets: no network,
no file paths, no URLs), providers are plug-ins: an installed package names a class (or any
callable returning a provider) under the entry point group ``marketarena.providers``.

:class:`Downloader` tries the providers in a fallback order: each provider is asked for the
symbols the ones before it could not give; a provider that raises, returns bars that fail
validation (each problem naming symbol and date), or has spent its rate limit (a
:class:`TokenBucket` of requests per minute) is skipped to the next, and each such failure is
reported. What is fetched merges into the data directory without duplicating dates: dates
already there are kept as they are (delete a range first to fetch it again).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from marketarena.envs.data import (
    OHLCV_FIELDS,
    DataValidationError,
    MarketData,
    MissingPolicy,
    SymbolCoverage,
    coverage_report,
    from_long_frame,
    load_dataset,
)
from marketarena.envs.errors import ConfigError, DataError, UnknownNameError

__all__ = [
    "ENTRY_POINT_GROUP",
    "DataDir",
    "DownloadReport",
    "Downloader",
    "LocalProvider",
    "Provider",
    "TokenBucket",
    "available_providers",
    "is_data_dir",
    "load_data_dir",
    "make_provider",
    "validate_bars",
]

ENTRY_POINT_GROUP = "marketarena.providers"
MANIFEST = "downloads.json"
#: a symbol is a file name in the data directory: letters, digits and ``. - _ ^ =`` only
SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9._^=-]{0,31}$")


def check_symbol(symbol: str) -> str:
    """``symbol`` when it can name a file of the data directory, else a :class:`ConfigError`
    (no path separators, no leading dot, at most 32 characters)."""
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        raise ConfigError(
            f"symbol {symbol!r}: use 1-32 letters, digits or '.-_^=' (starting with a letter, "
            "digit or '^')"
        )
    return symbol


def _day(value: str, what: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(value).normalize()
    except (ValueError, TypeError):
        raise ConfigError(f"{what} {value!r} is not a date (YYYY-MM-DD)") from None


# ----------------------------------------------------------------------------- providers
@runtime_checkable
class Provider(Protocol):
    """A source of daily bars.

    ``fetch`` returns a long frame (``date, symbol, close`` and optionally ``open, high, low,
    volume``) of the ``symbols`` it has between ``start`` and ``end`` (ISO dates, inclusive);
    a symbol it does not have is simply absent. It raises on failure (network, quota): the
    :class:`Downloader` reports the error and falls back to the next provider. One call is
    one request for rate limiting. A provider may set ``requests_per_minute`` (a float) as
    its default limit.
    """

    name: str

    def fetch(self, symbols: Sequence[str], start: str, end: str) -> pd.DataFrame: ...


class LocalProvider:
    """The bundled datasets as a provider, for tests and offline use: no file paths, no URLs.

    A symbol of ``sp500_ohlcv_30`` comes with open/high/low/close/volume (2009-08-21 to
    2010-08-20); any other symbol of ``sp500_20`` with closes only (1990-2022).
    """

    name = "local"
    requests_per_minute: float | None = None

    def fetch(self, symbols: Sequence[str], start: str, end: str) -> pd.DataFrame:
        """The bundled bars of ``symbols`` in ``[start, end]``; symbols it lacks are absent."""
        frames = []
        lo, hi = _day(start, "start"), _day(end, "end")
        served: set[str] = set()
        for dataset in ("sp500_ohlcv_30", "sp500_20"):
            data = load_dataset(dataset)
            chosen = [s for s in symbols if s in data.symbols and s not in served]
            if not chosen:
                continue
            served.update(chosen)
            frames.append(_long_frame(data.select(chosen), lo, hi))
        columns = ["date", "symbol", *OHLCV_FIELDS]
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)


def _long_frame(data: MarketData, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
    dates = pd.DatetimeIndex(data.dates.astype("datetime64[ns]"))
    keep = (dates >= lo) & (dates <= hi)
    frames = []
    for j, symbol in enumerate(data.symbols):
        columns: dict[str, Any] = {"date": dates[keep].strftime("%Y-%m-%d"), "symbol": symbol}
        for f in data.fields:
            columns[f] = getattr(data, f)[keep, j]
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True)


BUILTIN_PROVIDERS: Mapping[str, Callable[[], Provider]] = {"local": LocalProvider}


def available_providers() -> dict[str, str]:
    """Every provider name and where it comes from: the built-ins, then the plug-ins of the
    installed packages (entry point group ``marketarena.providers``), looked up each call."""
    found = {name: "marketarena" for name in BUILTIN_PROVIDERS}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep.dist.name if ep.dist is not None else ep.value
    return found


def make_provider(name: str) -> Provider:
    """A new provider by name (built-in or plug-in). An unknown name is an
    :class:`UnknownNameError` listing the providers; a plug-in that fails to load or does not
    make a :class:`Provider` is a :class:`ConfigError` naming its entry point."""
    if name in BUILTIN_PROVIDERS:
        return BUILTIN_PROVIDERS[name]()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            made = ep.load()()
        except Exception as exc:  # a broken plug-in is one provider failing, not the service
            raise ConfigError(
                f"provider plug-in {name!r} = {ep.value!r} failed to load "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(made, Provider):
            raise ConfigError(
                f"provider plug-in {name!r} = {ep.value!r} made {type(made).__name__}, which "
                "has no name and fetch(symbols, start, end)"
            )
        return made
    raise UnknownNameError(f"no provider {name!r}; providers: {sorted(available_providers())}")


def validate_bars(
    frame: pd.DataFrame, symbols: Sequence[str], start: str, end: str, source: str
) -> pd.DataFrame:
    """``frame`` checked as the loaders check data, one symbol at a time (NaN or non-positive
    prices, high < low, duplicate dates...: :class:`DataValidationError` naming symbol and
    date; a column empty for a symbol is one it lacks), and that it holds only requested
    ``symbols`` within ``[start, end]``. Returns it with canonical columns and ISO dates."""
    if frame is None or len(frame) == 0:
        return pd.DataFrame(columns=["date", "symbol", "close"])
    if "symbol" not in frame.columns or "date" not in frame.columns:
        raise DataValidationError(source, [f"no date or symbol column: {list(frame.columns)}"])
    extra = sorted({str(s) for s in frame["symbol"]} - set(symbols))
    if extra:
        raise DataValidationError(source, [f"symbol(s) not asked for: {extra}"])
    lo, hi = _day(start, "start"), _day(end, "end")
    out = []
    for symbol, rows in frame.groupby("symbol", sort=True):
        # a close-only symbol beside OHLCV ones: its price columns are empty, not missing
        given = rows.dropna(axis=1, how="all").reset_index(drop=True)
        data = from_long_frame(given, name=source)
        dates = pd.DatetimeIndex(data.dates.astype("datetime64[ns]"))
        outside = dates[(dates < lo) | (dates > hi)]
        if len(outside):
            raise DataValidationError(
                source, [f"{symbol}: bar on {outside[0].date()} outside {start}..{end}"]
            )
        out.append(_long_frame(data, lo, hi))
    return pd.concat(out, ignore_index=True)


class TokenBucket:
    """A rate limit of ``per_minute`` requests, in bursts of at most ``capacity`` (default:
    one minute's worth, at least 1); ``clock`` (seconds, default :func:`time.monotonic`) is
    injectable for tests. Thread-safe."""

    def __init__(
        self,
        per_minute: float,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not per_minute > 0:
            raise ConfigError(f"rate limit {per_minute!r} requests/minute: must be > 0")
        self.rate = per_minute / 60.0
        self.capacity = float(capacity) if capacity is not None else max(1.0, float(per_minute))
        self.clock = clock
        self.tokens = self.capacity
        self.stamp = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is available."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate


# --------------------------------------------------------------------------- the folder
def is_data_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding per-symbol CSV files (a data directory)."""
    path = Path(path)
    return path.is_dir() and any(path.glob("*.csv"))


def load_data_dir(path: str | Path, *, missing: MissingPolicy = "error") -> MarketData:
    """The data directory at ``path`` as one :class:`MarketData` (named after the folder);
    ``missing`` is the loaders' ragged-coverage policy (default ``"error"``)."""
    return DataDir(path).load(missing=missing)


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


@dataclass(frozen=True)
class RangeRows:
    """The rows of one symbol inside a date range: how many, and their first and last date."""

    symbol: str
    rows: int
    first_date: str | None
    last_date: str | None


class DataDir:
    """A data directory (see the module docstring). Writes are atomic (a new file renamed
    over the old) and serialised per folder within the process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = _lock_for(self.path.resolve())

    def _file(self, symbol: str) -> Path:
        return self.path / f"{check_symbol(symbol)}.csv"

    def symbols(self) -> list[str]:
        """The symbols with a file, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.stem for p in self.path.glob("*.csv"))

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """Each file's name, size and modification time (ns): it changes when the folder's
        data does (every write replaces a file), so it keys answers computed from it."""
        if not self.path.is_dir():
            return ()
        found = []
        for entry in os.scandir(self.path):
            if entry.name.endswith(".csv") or entry.name == MANIFEST:
                info = entry.stat()
                found.append((entry.name, info.st_size, info.st_mtime_ns))
        return tuple(sorted(found))

    def read(self, symbol: str) -> pd.DataFrame:
        """One symbol's rows as stored (empty when it has no file)."""
        path = self._file(symbol)
        if not path.is_file():
            return pd.DataFrame(columns=["date", "symbol", "close"])
        return pd.read_csv(path, dtype={"date": str, "symbol": str})

    def frame(self, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        """The long frame of ``symbols`` (default: all), as stored."""
        chosen = self.symbols() if symbols is None else list(symbols)
        frames = [self.read(s) for s in chosen]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=["date", "symbol", "close"])
        return pd.concat(frames, ignore_index=True)

    def load(self, *, missing: MissingPolicy = "error") -> MarketData:
        """All symbols as one validated :class:`MarketData`."""
        frame = self.frame()
        if len(frame) == 0:
            raise DataError(f"data directory {self.path} holds no bars")
        return from_long_frame(frame, name=self.path.name or str(self.path), missing=missing)

    def coverage(self, symbols: Sequence[str] | None = None) -> list[SymbolCoverage]:
        """Per symbol: first and last date, rows, and gaps (dates inside its span on which
        other symbols of the folder have bars and it has none), as ``marketarena data
        coverage`` reports them; computed over the whole folder, then filtered."""
        frame = self.frame()
        if len(frame) == 0:
            return []
        report = coverage_report(frame, source=str(self.path))
        return [c for c in report if symbols is None or c.symbol in symbols]

    def manifest(self) -> dict[str, Any]:
        """The last download of each provider (``{provider: {last_download, symbols,
        rows_added}}``); empty before the first."""
        path = self.path / MANIFEST
        if not path.is_file():
            return {}
        found: dict[str, Any] = json.loads(path.read_text())
        return found

    def status(self) -> dict[str, Any]:
        """Symbols, the date span, rows, the bytes on disk, and the last download per
        provider."""
        frame = self.frame()
        dates = sorted(frame["date"]) if len(frame) else []
        files = [self.path / f"{s}.csv" for s in self.symbols()]
        return {
            "data_dir": str(self.path),
            "symbols": self.symbols(),
            "first_date": dates[0] if dates else None,
            "last_date": dates[-1] if dates else None,
            "rows": len(frame),
            "size_bytes": sum(p.stat().st_size for p in files),
            "downloads": self.manifest(),
        }

    def rows_in_range(
        self, symbols: Sequence[str], start: str | None, end: str | None
    ) -> list[RangeRows]:
        """For each symbol, its stored rows with a date in ``[start, end]`` (either end
        open when None)."""
        out = []
        for symbol in symbols:
            frame = self.read(symbol)
            inside = _in_range(frame, start, end)
            dates = sorted(frame.loc[inside, "date"])
            first, last = (dates[0], dates[-1]) if dates else (None, None)
            out.append(RangeRows(symbol, len(dates), first, last))
        return out

    def frame_without(
        self, symbols: Sequence[str], start: str | None, end: str | None
    ) -> pd.DataFrame:
        """The folder's long frame as :meth:`delete_range` would leave it (nothing is
        written): to check what a deletion would change before making it."""
        frames = []
        for symbol in self.symbols():
            frame = self.read(symbol)
            if symbol in symbols:
                frame = frame.loc[~_in_range(frame, start, end)]
            if len(frame):
                frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["date", "symbol", "close"])
        return pd.concat(frames, ignore_index=True)

    def delete_range(
        self, symbols: Sequence[str], start: str | None, end: str | None
    ) -> dict[str, int]:
        """Delete each symbol's rows dated in ``[start, end]``; a symbol left with no rows
        loses its file. Returns the rows deleted per symbol."""
        deleted: dict[str, int] = {}
        with self._lock:
            for symbol in symbols:
                frame = self.read(symbol)
                inside = _in_range(frame, start, end)
                deleted[symbol] = int(inside.sum())
                if not deleted[symbol]:
                    continue
                kept = frame.loc[~inside]
                if len(kept):
                    self._write(symbol, kept)
                else:
                    self._file(symbol).unlink()
        return deleted

    def merge(self, frame: pd.DataFrame, provider: str) -> dict[str, int]:
        """Add ``frame``'s bars (validated, canonical: see :func:`validate_bars`), keeping the
        dates already stored; record the download in the manifest. Returns the rows added per
        symbol."""
        added: dict[str, int] = {}
        with self._lock:
            self.path.mkdir(parents=True, exist_ok=True)
            for symbol, rows in frame.groupby("symbol", sort=True):
                old = self.read(str(symbol))
                new = rows[~rows["date"].isin(set(old["date"]))]
                added[str(symbol)] = len(new)
                if len(new):
                    both = pd.concat([old, new], ignore_index=True) if len(old) else new
                    self._write(str(symbol), both.sort_values("date"))
            manifest = self.manifest()
            manifest[provider] = {
                "last_download": datetime.now(UTC).isoformat(timespec="seconds"),
                "symbols": sorted(added),
                "rows_added": sum(added.values()),
            }
            _write_atomic(self.path / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        return added

    def _write(self, symbol: str, frame: pd.DataFrame) -> None:
        columns = [c for c in ("date", "symbol", *OHLCV_FIELDS) if c in frame.columns]
        _write_atomic(self._file(symbol), frame[columns].to_csv(index=False))


def _in_range(frame: pd.DataFrame, start: str | None, end: str | None) -> pd.Series:
    inside = pd.Series(True, index=frame.index)
    if start is not None:
        inside &= frame["date"] >= str(_day(start, "start").date())
    if end is not None:
        inside &= frame["date"] <= str(_day(end, "end").date())
    return inside


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    shutil.move(tmp, path)


# --------------------------------------------------------------------------- downloads
@dataclass
class DownloadReport:
    """What a download did: rows added and the provider of each symbol, every failure
    (``{"provider", "error"}``, in order), and the symbols no provider had."""

    added: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class Downloader:
    """Downloads through providers in a fallback order, each under its rate limit.

    ``limits`` maps a provider name to requests per minute (over the provider's own
    ``requests_per_minute``; a provider with neither is not limited); ``make`` builds a
    provider by name (default :func:`make_provider`); ``clock`` drives the rate limits. One
    downloader keeps its buckets across downloads (the service holds one).
    """

    def __init__(
        self,
        limits: Mapping[str, float] | None = None,
        *,
        make: Callable[[str], Provider] = make_provider,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = dict(limits or {})
        self.make = make
        self.clock = clock
        self._buckets: dict[str, TokenBucket | None] = {}
        self._guard = threading.Lock()

    def _bucket(self, name: str, provider: Provider) -> TokenBucket | None:
        with self._guard:
            if name not in self._buckets:
                rate = self.limits.get(name, getattr(provider, "requests_per_minute", None))
                self._buckets[name] = TokenBucket(rate, clock=self.clock) if rate else None
            return self._buckets[name]

    def download(
        self,
        data_dir: DataDir,
        symbols: Sequence[str],
        start: str,
        end: str,
        order: Sequence[str],
    ) -> DownloadReport:
        """Fetch ``symbols`` over ``[start, end]`` trying the providers of ``order`` in turn
        (each gets the symbols still missing), and merge each provider's valid bars into
        ``data_dir``. Unknown provider names are refused before any request."""
        for s in symbols:
            check_symbol(s)
        if _day(start, "start") > _day(end, "end"):
            raise ConfigError(f"start {start} is after end {end}")
        if not order:
            raise ConfigError("no providers given")
        known = available_providers()
        unknown = [p for p in order if p not in known]
        if unknown:
            raise UnknownNameError(f"no provider {unknown[0]!r}; providers: {sorted(known)}")
        report = DownloadReport()
        remaining = list(dict.fromkeys(symbols))
        for name in order:
            if not remaining:
                break
            try:
                bars = self._fetch(name, remaining, start, end)
            except Exception as exc:  # any provider failure falls back to the next one
                report.failures.append({"provider": name, "error": _one_line(exc)})
                continue
            got = sorted(set(bars["symbol"])) if len(bars) else []
            if got:
                for symbol, n in data_dir.merge(bars, name).items():
                    report.added[symbol] = n
                    report.sources[symbol] = name
            lacking = [s for s in remaining if s not in got]
            if lacking:
                report.failures.append(
                    {"provider": name, "error": f"no bars for {lacking} in {start}..{end}"}
                )
            remaining = lacking
        report.missing = remaining
        return report

    def _fetch(self, name: str, symbols: list[str], start: str, end: str) -> pd.DataFrame:
        provider = self.make(name)
        bucket = self._bucket(name, provider)
        if bucket is not None:
            wait = bucket.try_acquire()
            if wait > 0:
                raise DataError(f"rate limited: next request in {wait:.1f} s")
        frame = provider.fetch(list(symbols), start, end)
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"fetch returned {type(frame).__name__}, not a DataFrame")
        return validate_bars(frame, symbols, start, end, f"provider {name!r}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
