"""Scheduled simulations: continue stored runs and paper runs on a timetable from a YAML file.

The file
--------
::

    store: runs.sqlite              # default run store of the entries (a path or a URL)
    timezone: America/New_York      # default time zone of the entries
    misfire_grace: 1h               # default grace time of a late or missed firing
    history: nightly.history.jsonl  # default: <file stem>.history.jsonl beside the file
    entries:
      - name: nightly
        after_close: true           # each XNYS session's close (early closes too) ...
        offset: 30min               # ... plus this (default 0)
        action: continue
        run: momentum@2024-01-02
        data: data                  # the data folder (default: the run's own data)
        download: {providers: [local]}   # refresh the folder first (symbols: its own)
      - name: weekdays
        cron: "30 16 * * mon-fri"   # minute hour day month day-of-week, in `timezone`
        timezone: America/New_York
        trading_days_only: true     # skip the dates that are not sessions of `calendar`
        action: continue
        run: equal_weight@2024-01-02
      - name: paper
        after_close: true
        offset: 15min
        action: paper               # a paper run: trade the folder's new bars
        run: paper:equal_weight@latest
        data: data
        download: {providers: [local]}
      - name: intraday
        interval: 15min             # every 15 minutes (anchored at midnight 2000-01-01)
        market_hours: true          # only from a session's open to its close
        action: continue
        run: equal_weight@2024-01-02

Keys of an entry: ``name`` (unique), one trigger (``cron``, ``after_close: true`` or
``interval``), ``action`` (``continue`` a backtest or ``paper``), ``run``, and optionally
``timezone``, ``calendar`` (an exchange_calendars name, default ``XNYS``), ``offset``
(after_close only), ``trading_days_only`` (cron only), ``market_hours`` (interval only),
``store``, ``data``, ``download`` (``providers``: the fallback order; ``symbols``: default the
folder's) and ``misfire_grace``. Durations are seconds or ``90s``, ``30min``, ``1h``,
``2d``. An interval counts elapsed time (a ``1d`` interval is an hour off its local time
across a DST change): for a time of day, use ``cron``.
:func:`load_schedule` checks everything before anything runs: an error names the file, the
entry and the key (a bad cron expression, an unknown time zone or calendar, a run that is not
in its store).

Timing
------
Firing times come from APScheduler 3.x triggers (:class:`CronTrigger`,
:class:`IntervalTrigger`, and this module's three built on its :class:`BaseTrigger`),
computed in the entry's time zone, so a 16:30 New York entry fires at 21:30 UTC in winter and
20:30 UTC in summer. An action works up to the last session of ``calendar`` that has closed
at the firing's instant (the firing's own date from its close on, the session before during
it): a bar that is not complete is never downloaded or traded. The ``continue`` action
extends the run to that date (``marketarena backtest --continue RUN --end <that date>``);
each decision is made after a bar's close and fills at the next bar, as in every backtest. A
run left unfinished (a firing stopped mid-way) is resumed first. The ``paper`` action resumes
a paper run and trades the bar sets of its data folder after its last recorded bar, up to
that session (``marketarena paper --resume RUN --feed replay:DATA --until <that date>``,
replayed without waiting). Both actions first download into the folder (``data``) when the
entry says ``download``.

Misfires and overlaps
---------------------
:class:`Scheduler` dispatches the firings (its clock is injectable, so tests step through
months without sleeping). Each entry runs in a worker thread, at most one at a time: a firing
that comes while the entry's last one still runs is skipped and logged, and so is one whose
run (the same run in the same store) another entry's firing is running. Firings due together
(the process slept) are coalesced into the latest one. A firing later than ``misfire_grace``
is not run, and logged. On start, the firings missed while the scheduler was down (after the
entry's last firing in the history) run once, now, when the latest is within the grace time;
otherwise they are logged as missed.

History
-------
Every event is logged (logger ``marketarena.service.schedule``) and appended as a JSON line to
the history file: ``{"time", "entry", "event", "scheduled", "detail"}`` with ``event`` one of
``fired``, ``skipped`` (the entry still ran), ``missed`` (too late, or coalesced into a later
firing), ``succeeded`` and ``failed`` (the error, naming the entry); times are ISO 8601 in UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from math import nan
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import yaml
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from marketarena.envs.errors import ConfigError, MarketArenaError, MissingFileError

__all__ = [
    "AfterCloseTrigger",
    "Schedule",
    "ScheduleEntry",
    "ScheduleEvent",
    "Scheduler",
    "TradingDaysTrigger",
    "TradingHoursTrigger",
    "load_schedule",
    "run_continue",
    "run_paper",
    "sessions",
    "utc_now",
]

log = logging.getLogger(__name__)
UTC = dt.UTC
#: an action's progress: the date just done and the fraction of the run done (NaN: unknown)
Progress = Callable[[str, float], None]
_TICK = dt.timedelta(microseconds=1)
#: an interval entry counts its firings from this local midnight (so 15min fires at :00, :15...)
INTERVAL_ANCHOR = dt.datetime(2000, 1, 1)
#: firings looked at, at most, when counting missed ones (a long-stopped 1-minute entry)
MAX_COUNTED = 100_000
ACTIONS = ("continue", "paper")
ENTRY_KEYS = {
    "name",
    "cron",
    "after_close",
    "interval",
    "offset",
    "trading_days_only",
    "market_hours",
    "timezone",
    "calendar",
    "action",
    "run",
    "store",
    "data",
    "download",
    "misfire_grace",
}
TOP_KEYS = {"store", "timezone", "misfire_grace", "history", "entries"}
_UNITS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Sessions:
    """An exchange calendar's sessions: their dates (ISO) and their opens and closes (UTC,
    nanoseconds, sorted), early closes included."""

    days: frozenset[str]
    dates: tuple[str, ...]
    opens: np.ndarray
    closes: np.ndarray

    def is_session(self, moment: dt.datetime, zone: dt.tzinfo) -> bool:
        return moment.astimezone(zone).date().isoformat() in self.days

    def first_close_from(self, moment: dt.datetime) -> dt.datetime | None:
        """The first close at or after ``moment`` (None past the calendar's end)."""
        i = int(np.searchsorted(self.closes, _ns(moment), side="left"))
        return _from_ns(self.closes[i]) if i < len(self.closes) else None

    def last_closed(self, moment: dt.datetime) -> str | None:
        """The date of the last session whose close is at or before ``moment``."""
        i = int(np.searchsorted(self.closes, _ns(moment), side="right")) - 1
        return self.dates[i] if i >= 0 else None

    def is_open(self, moment: dt.datetime) -> bool:
        """Whether ``moment`` is within a session, from its open to its close (both in)."""
        i = int(np.searchsorted(self.opens, _ns(moment), side="right")) - 1
        return i >= 0 and _ns(moment) <= self.closes[i]

    def next_open(self, moment: dt.datetime) -> dt.datetime | None:
        """The first open after ``moment``."""
        i = int(np.searchsorted(self.opens, _ns(moment), side="right"))
        return _from_ns(self.opens[i]) if i < len(self.opens) else None


def _ns(moment: dt.datetime) -> int:
    return int(pd.Timestamp(moment).value)


def _from_ns(value: np.int64) -> dt.datetime:
    return pd.Timestamp(int(value), tz="UTC").to_pydatetime()


@cache
def sessions(calendar: str) -> Sessions:
    """The sessions of ``calendar`` (an exchange_calendars name) over its default range
    (about 20 years back to a year ahead), built once."""
    import exchange_calendars as xcals

    with warnings.catch_warnings():
        # exchange_calendars 4.13 reads .values of tz-aware times, which pandas deprecates:
        # its warning, not ours, on every calendar built
        warnings.filterwarnings("ignore", r"(Series|DatetimeIndex)\.values returning an ndarray")
        cal = xcals.get_calendar(calendar)
        return Sessions(
            days=frozenset(cal.sessions.strftime("%Y-%m-%d")),
            dates=tuple(cal.sessions.strftime("%Y-%m-%d")),
            opens=pd.DatetimeIndex(cal.opens).asi8.copy(),
            closes=pd.DatetimeIndex(cal.closes).asi8.copy(),
        )


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC)


# ---------------------------------------------------------------------------- triggers
class TradingDaysTrigger(BaseTrigger):
    """``trigger``'s firings on the sessions of ``calendar`` only: a firing whose date in
    ``timezone`` is a weekend or holiday is passed over."""

    def __init__(self, trigger: BaseTrigger, calendar: str, timezone: dt.tzinfo) -> None:
        self.trigger = trigger
        self.calendar = calendar
        self.timezone = timezone

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        known = sessions(self.calendar)
        fire = self.trigger.get_next_fire_time(previous_fire_time, now)
        for _ in range(MAX_COUNTED):
            if fire is None or known.is_session(fire, self.timezone):
                return fire
            fire = self.trigger.get_next_fire_time(fire, fire + _TICK)
        return None


class TradingHoursTrigger(BaseTrigger):
    """``trigger``'s firings inside a session of ``calendar`` only (open to close, both
    included): outside them the next firing is the first one from the next open."""

    def __init__(self, trigger: BaseTrigger, calendar: str) -> None:
        self.trigger = trigger
        self.calendar = calendar

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        known = sessions(self.calendar)
        fire = self.trigger.get_next_fire_time(previous_fire_time, now)
        for _ in range(MAX_COUNTED):
            if fire is None or known.is_open(fire):
                return fire
            opens = known.next_open(fire)
            if opens is None:
                return None
            fire = self.trigger.get_next_fire_time(None, opens)
        return None


class AfterCloseTrigger(BaseTrigger):
    """``offset`` after each close of ``calendar``'s sessions: early closes included (13:00
    New York time the day after Thanksgiving), holidays and weekends skipped."""

    def __init__(self, calendar: str, offset: dt.timedelta) -> None:
        self.calendar = calendar
        self.offset = offset

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        since = now if previous_fire_time is None else max(now, previous_fire_time + _TICK)
        close = sessions(self.calendar).first_close_from(since - self.offset)
        return None if close is None else close + self.offset


# ----------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class ScheduleEntry:
    """One scheduled action, as :func:`load_schedule` validated it (see the module docstring
    for the keys). ``trigger`` is the APScheduler trigger of its firings."""

    name: str
    trigger: BaseTrigger
    timezone: ZoneInfo
    when: str
    calendar: str
    action: str
    run: str
    store: str
    data: str | None = None
    download: tuple[str, ...] = ()
    download_symbols: tuple[str, ...] | None = None
    misfire_grace: dt.timedelta = dt.timedelta(hours=1)

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        """The first firing strictly after ``moment``."""
        return self.trigger.get_next_fire_time(moment, moment + _TICK)

    def first_from(self, moment: dt.datetime) -> dt.datetime | None:
        """The first firing at or after ``moment``."""
        return self.trigger.get_next_fire_time(None, moment)

    def next_firings(self, moment: dt.datetime, count: int) -> list[dt.datetime]:
        """The ``count`` firings from ``moment`` on, in the entry's time zone."""
        out: list[dt.datetime] = []
        fire = self.first_from(moment)
        while fire is not None and len(out) < count:
            out.append(fire.astimezone(self.timezone))
            fire = self.next_after(fire)
        return out


@dataclass(frozen=True)
class Schedule:
    """A validated schedule file: its entries and where its history goes."""

    path: Path
    entries: tuple[ScheduleEntry, ...]
    history: Path


def parse_duration(value: Any, where: str) -> dt.timedelta:
    """Seconds (a number) or a number with a unit (``s``, ``min``, ``h``, ``d``)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a duration (e.g. 90s, 30min, 1h, 2d)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", str(value))
        if not found or found.group(2) not in _UNITS:
            raise ConfigError(f"{where}: {value!r} is not a duration (e.g. 90s, 30min, 1h, 2d)")
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if seconds < 0:
        raise ConfigError(f"{where}: {value!r} is negative")
    return dt.timedelta(seconds=seconds)


def _zone(value: Any, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: unknown time zone {value!r} (an IANA name such as America/New_York)"
        ) from None


def _calendar_name(value: Any, where: str) -> str:
    import exchange_calendars as xcals

    name = str(value)
    if name not in xcals.get_calendar_names():
        raise ConfigError(f"{where}: unknown exchange calendar {name!r} (e.g. XNYS, XLON)")
    return name


def _bool(raw: Mapping[str, Any], key: str, where: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key}: expected true or false, got {value!r}")
    return value


def _trigger(raw: Mapping[str, Any], zone: ZoneInfo, where: str) -> tuple[BaseTrigger, str]:
    kinds = [k for k in ("cron", "after_close", "interval") if raw.get(k) not in (None, False)]
    if len(kinds) != 1:
        raise ConfigError(
            f"{where}: give exactly one of cron, after_close: true or interval (got "
            f"{kinds or 'none'})"
        )
    kind = kinds[0]
    calendar = _calendar_name(raw.get("calendar", "XNYS"), f"{where}: calendar")
    wrong = [
        key
        for key, allowed in (
            ("offset", "after_close"),
            ("trading_days_only", "cron"),
            ("market_hours", "interval"),
        )
        if key in raw and kind != allowed
    ]
    if wrong:
        raise ConfigError(f"{where}: {wrong[0]}: not an option of {kind} entries")
    if kind == "cron":
        expression = raw["cron"]
        try:
            cron = CronTrigger.from_crontab(str(expression), timezone=zone)
        except ValueError as exc:
            raise ConfigError(
                f"{where}: cron: {expression!r} is not a cron expression (minute hour day "
                f"month day-of-week): {exc}"
            ) from None
        if _bool(raw, "trading_days_only", where):
            return TradingDaysTrigger(cron, calendar, zone), f"cron {expression} ({calendar} days)"
        return cron, f"cron {expression}"
    if kind == "after_close":
        if raw["after_close"] is not True:
            raise ConfigError(f"{where}: after_close: expected true, got {raw['after_close']!r}")
        offset = parse_duration(raw.get("offset", 0), f"{where}: offset")
        return AfterCloseTrigger(calendar, offset), f"{calendar} close + {offset}"
    every = parse_duration(raw["interval"], f"{where}: interval")
    if every < dt.timedelta(seconds=1):
        raise ConfigError(f"{where}: interval: {raw['interval']!r} is under a second")
    interval = IntervalTrigger(
        seconds=every.total_seconds(),
        start_date=INTERVAL_ANCHOR.replace(tzinfo=zone),
        timezone=zone,
    )
    if _bool(raw, "market_hours", where):
        return TradingHoursTrigger(interval, calendar), f"every {every} ({calendar} hours)"
    return interval, f"every {every}"


def _entry(raw: Any, index: int, defaults: Mapping[str, Any], source: str) -> ScheduleEntry:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: entry {index + 1}: expected a mapping of keys, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{source}: entry {index + 1}: name: a non-empty name is required")
    where = f"{source}: entry {name!r}"
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (keys: {sorted(ENTRY_KEYS)})")
    zone = _zone(raw.get("timezone", defaults["timezone"]), f"{where}: timezone")
    trigger, when = _trigger(raw, zone, where)
    action = raw.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"{where}: action: {action!r} is not one of {list(ACTIONS)}")
    run = raw.get("run")
    if not isinstance(run, str) or not run:
        raise ConfigError(f"{where}: run: the name of a stored run is required")
    download = raw.get("download")
    providers: tuple[str, ...] = ()
    symbols: tuple[str, ...] | None = None
    if download is not None:
        if not isinstance(download, Mapping) or not download.get("providers"):
            raise ConfigError(f"{where}: download: expected {{providers: [NAME, ...]}}")
        extra = sorted(set(download) - {"providers", "symbols"})
        if extra:
            raise ConfigError(f"{where}: download: unknown key {extra[0]!r}")
        providers = tuple(str(p) for p in download["providers"])
        if download.get("symbols") is not None:
            symbols = tuple(str(s) for s in download["symbols"])
        if raw.get("data") is None:
            raise ConfigError(f"{where}: download: needs data: the folder to download into")
    return ScheduleEntry(
        name=name,
        trigger=trigger,
        timezone=zone,
        when=when,
        calendar=_calendar_name(raw.get("calendar", "XNYS"), f"{where}: calendar"),
        action=str(action),
        run=run,
        store=str(raw.get("store", defaults["store"])),
        data=None if raw.get("data") is None else str(raw["data"]),
        download=providers,
        download_symbols=symbols,
        misfire_grace=parse_duration(
            raw.get("misfire_grace", defaults["misfire_grace"]), f"{where}: misfire_grace"
        ),
    )


def _check_runs(entries: tuple[ScheduleEntry, ...], source: str) -> None:
    """Each entry's run is in its store, its data folder exists, its providers are known."""
    from marketarena.envs.providers import available_providers
    from marketarena.evaluation.saved_runs.store import RunNotFound, RunStore

    known = available_providers()
    for entry in entries:
        where = f"{source}: entry {entry.name!r}"
        bad = [p for p in entry.download if p not in known]
        if bad:
            raise ConfigError(
                f"{where}: download: no provider {bad[0]!r}; providers: {sorted(known)}"
            )
        if entry.download and entry.data is not None and not Path(entry.data).is_dir():
            raise ConfigError(f"{where}: data: {entry.data} is not a folder of per-symbol CSVs")
        try:
            store = RunStore(entry.store, create=False)
        except MarketArenaError as exc:
            raise ConfigError(f"{where}: store: {exc}") from None
        try:
            is_paper = "paper" in store.run(entry.run).spec
        except RunNotFound:
            raise ConfigError(f"{where}: run: no run {entry.run!r} in {store.path}") from None
        finally:
            store.close()
        if is_paper != (entry.action == "paper"):
            kind = "a paper run" if is_paper else "a backtest"
            raise ConfigError(
                f"{where}: run: {entry.run!r} is {kind}: use action: "
                f"{'paper' if is_paper else 'continue'}"
            )


def load_schedule(path: str | Path, *, check_runs: bool = True) -> Schedule:
    """The schedule in the YAML file at ``path``, every entry validated (see the module
    docstring); with ``check_runs`` (the default) each run must be in its store. Relative
    paths in the file are taken as they are (from the working directory), as on the CLI."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"schedule file {path}: not found")
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping with an 'entries' list")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (keys: {sorted(TOP_KEYS)})")
    items = raw.get("entries")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: entries: a non-empty list of entries is required")
    defaults = {
        "store": raw.get("store", "runs.sqlite"),
        "timezone": raw.get("timezone", "UTC"),
        "misfire_grace": raw.get("misfire_grace", "1h"),
    }
    entries = tuple(_entry(item, i, defaults, source) for i, item in enumerate(items))
    names = [e.name for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{source}: entry {twice[0]!r}: name: used by more than one entry")
    if check_runs:
        _check_runs(entries, source)
    history = Path(raw.get("history") or path.with_name(f"{path.stem}.history.jsonl"))
    return Schedule(path, entries, history)


# ----------------------------------------------------------------------------- actions
def _last_closed(entry: ScheduleEntry, fired: dt.datetime) -> dt.date:
    """The last session of the entry's calendar closed at ``fired``: what an action may use."""
    last = sessions(entry.calendar).last_closed(fired)
    if last is None:
        raise ConfigError(f"entry {entry.name!r}: no {entry.calendar} session closed by {fired}")
    return dt.date.fromisoformat(last)


def _refresh(entry: ScheduleEntry, today: dt.date) -> list[str]:
    """Download the days after the data folder's last date up to ``today`` when the entry
    downloads (its symbols: the folder's unless it names them); what was done, as notes."""
    from marketarena.envs.providers import DataDir, Downloader

    if not entry.download or entry.data is None:
        return []
    folder = DataDir(entry.data)
    last = folder.status()["last_date"]
    start = dt.date.fromisoformat(last) + dt.timedelta(days=1) if last else today
    if start > today:
        return []
    symbols = entry.download_symbols or tuple(folder.symbols())
    report = Downloader().download(
        folder, symbols, start.isoformat(), today.isoformat(), entry.download
    )
    notes = [f"downloaded {sum(report.added.values())} row(s)"]
    if report.missing:
        notes.append(f"no provider had {report.missing}")
    return notes


def run_continue(entry: ScheduleEntry, fired: dt.datetime, progress: Progress | None = None) -> str:
    """The ``continue`` action: refresh the data folder when the entry downloads, then extend
    the run to the last session closed at the firing (a run left unfinished is resumed
    first). ``progress`` sees each completed day and the run's fraction done. Returns what it
    did, in one line."""
    from marketarena.envs.data import resolve_data
    from marketarena.evaluation.saved_runs import persisted
    from marketarena.evaluation.saved_runs.store import RunStore

    today = _last_closed(entry, fired)
    notes = _refresh(entry, today)
    store = RunStore(entry.store, create=False)
    try:
        info = store.run(entry.run)
        if info.status != "finished":
            persisted.resume_backtest(store, entry.run, progress)
            notes.append("resumed the unfinished run")
            info = store.run(entry.run)
        spec = info.spec
        source = entry.data or spec["data"]
        market = resolve_data(source)
        if spec.get("universe"):
            market = market.select(spec["universe"])
        upto = min(market.dates[-1], np.datetime64(today.isoformat()))
        if upto <= np.datetime64(spec["end"]):
            notes.append(f"run {entry.run} is up to date: no data after {spec['end']}")
            return "; ".join(notes)
        before = info.days
        persisted.continue_backtest(
            store, entry.run, today.isoformat(), data=source, progress=progress
        )
        after = store.run(entry.run)
        notes.append(
            f"run {entry.run} continued from {spec['end']} to {after.spec['end']} "
            f"(+{after.days - before} days)"
        )
        return "; ".join(notes)
    finally:
        store.close()


def run_paper(entry: ScheduleEntry, fired: dt.datetime, progress: Progress | None = None) -> str:
    """The ``paper`` action: refresh the data folder when the entry downloads, then resume
    the paper run and trade the bar sets the folder (``data``, default the run's own) holds
    after its last recorded bar, up to the last session closed at the firing, replayed
    without waiting (``marketarena paper --resume RUN --feed replay:DATA --until DATE``).
    ``progress`` sees each recorded bar's date (its fraction: NaN). Returns what it did, in
    one line."""
    from marketarena.evaluation.saved_runs import paper
    from marketarena.evaluation.saved_runs.store import RunStore

    today = _last_closed(entry, fired)
    notes = _refresh(entry, today)
    store = RunStore(entry.store, create=False)
    try:
        with paper.resume_paper(store, entry.run) as session:
            before = session.last_date
            source = entry.data or session.spec["data"]
            with paper.open_feed(f"replay:{source}", session) as feed:
                counts = paper.run_paper(
                    session,
                    feed,
                    until=today.isoformat(),
                    on_bar=None if progress is None else lambda bar: progress(bar.date, nan),
                )
            notes.append(
                f"paper run {entry.run} traded from {before} to {session.last_date} "
                f"({counts.line()})"
            )
        return "; ".join(notes)
    finally:
        store.close()


Action = Callable[[ScheduleEntry, dt.datetime, Progress], str]
ACTION_FUNCTIONS: Mapping[str, Action] = {"continue": run_continue, "paper": run_paper}


# --------------------------------------------------------------------------- scheduler
@dataclass(frozen=True)
class ScheduleEvent:
    """One line of the history: ``event`` happened at ``time`` to ``entry``'s firing
    ``scheduled`` (UTC)."""

    time: dt.datetime
    entry: str
    event: str
    scheduled: dt.datetime
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "time": self.time.isoformat(),
                "entry": self.entry,
                "event": self.event,
                "scheduled": self.scheduled.isoformat(),
                "detail": self.detail,
            }
        )


def read_history(path: Path) -> list[ScheduleEvent]:
    """The events recorded in a history file (none when it does not exist)."""
    if not path.is_file():
        return []
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            events.append(
                ScheduleEvent(
                    dt.datetime.fromisoformat(row["time"]),
                    row["entry"],
                    row["event"],
                    dt.datetime.fromisoformat(row["scheduled"]),
                    row.get("detail", ""),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"history file {path}, line {number}: not a history record ({exc})"
            ) from None
    return events


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


@dataclass
class Scheduler:
    """Runs a :class:`Schedule`'s entries at their firings (see the module docstring).

    ``clock`` gives the time (aware, default: now); :meth:`start` handles what was missed
    while the scheduler was down, :meth:`tick` runs what is due at the clock's time, and
    :meth:`run` loops until ``stop`` is set. ``actions`` maps an action name to its function
    (default: :data:`ACTION_FUNCTIONS`; one is called with the entry, the firing and a
    :data:`Progress`); ``report`` sees every event as it is recorded, ``progress`` each day a
    firing completes (entry, date, fraction of the run done).
    """

    schedule: Schedule
    clock: Callable[[], dt.datetime] = utc_now
    actions: Mapping[str, Action] = field(default_factory=lambda: dict(ACTION_FUNCTIONS))
    report: Callable[[ScheduleEvent], None] | None = None
    progress: Callable[[str, str, float], None] | None = None
    _next: dict[str, dt.datetime | None] = field(default_factory=dict, init=False)
    _workers: dict[str, threading.Thread] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def record(self, entry: str, event: str, scheduled: dt.datetime, detail: str = "") -> None:
        """Log, append to the history file and report one event."""
        made = ScheduleEvent(_as_utc(self.clock()), entry, event, _as_utc(scheduled), detail)
        level = logging.ERROR if event == "failed" else logging.INFO
        log.log(level, "%s %s (firing of %s) %s", entry, event, made.scheduled, detail)
        with self._lock:
            self.schedule.history.parent.mkdir(parents=True, exist_ok=True)
            with self.schedule.history.open("a") as fh:
                fh.write(made.to_json() + "\n")
        if self.report is not None:
            self.report(made)

    def start(self) -> None:
        """Set each entry's next firing from the clock's time, first running once (now) the
        latest firing missed since the entry's last recorded one when it is within the grace
        time; the missed ones beyond it are recorded as ``missed``."""
        now = self.clock()
        last: dict[str, dt.datetime] = {}
        for event in read_history(self.schedule.history):
            last[event.entry] = max(last.get(event.entry, event.scheduled), event.scheduled)
        for entry in self.schedule.entries:
            self._next[entry.name] = entry.first_from(now)
            if entry.name not in last:
                continue
            missed = self._due(entry, entry.next_after(last[entry.name]), now, strictly=True)
            if missed:
                self._handle(entry, missed, now, "while the scheduler was down")

    def _due(
        self, entry: ScheduleEntry, fire: dt.datetime | None, now: dt.datetime, strictly: bool
    ) -> list[dt.datetime]:
        due = []
        while fire is not None and (fire < now or (fire == now and not strictly)):
            due.append(fire)
            if len(due) >= MAX_COUNTED:
                break
            fire = entry.next_after(fire)
        return due

    def next_firing(self, name: str) -> dt.datetime | None:
        """The entry's next firing (after :meth:`start`)."""
        return self._next[name]

    def tick(self) -> None:
        """Run each entry whose next firing is due at the clock's time."""
        now = self.clock()
        for entry in self.schedule.entries:
            due = self._due(entry, self._next[entry.name], now, strictly=False)
            if due:
                self._next[entry.name] = entry.next_after(due[-1])
                self._handle(entry, due, now, "late")

    def _handle(
        self, entry: ScheduleEntry, due: list[dt.datetime], now: dt.datetime, why: str
    ) -> None:
        latest = due[-1]
        if len(due) > 1:
            self.record(
                entry.name,
                "missed",
                due[-2],
                f"{len(due) - 1} firing(s) {why} from {_as_utc(due[0]).isoformat()} "
                f"coalesced into the latest",
            )
        if now - latest > entry.misfire_grace:
            self.record(
                entry.name,
                "missed",
                latest,
                f"{why}: {now - latest} after its time, beyond the grace time "
                f"{entry.misfire_grace}",
            )
            return
        running = self._workers.get(entry.name)
        if running is not None and running.is_alive():
            self.record(entry.name, "skipped", latest, "its previous firing is still running")
            return
        busy = [
            other.name
            for other in self.schedule.entries
            if (other.store, other.run) == (entry.store, entry.run) and other.name in self.running()
        ]
        if busy:
            self.record(
                entry.name, "skipped", latest, f"run {entry.run} is being run by entry {busy[0]!r}"
            )
            return
        self.record(entry.name, "fired", latest, f"{entry.action} {entry.run}")
        worker = threading.Thread(
            target=self._execute, args=(entry, latest), name=f"schedule:{entry.name}", daemon=True
        )
        self._workers[entry.name] = worker
        worker.start()

    def _progress_of(self, name: str) -> Progress:
        def progress(date: str, fraction: float) -> None:
            if self.progress is not None:
                self.progress(name, date, fraction)

        return progress

    def _execute(self, entry: ScheduleEntry, fired: dt.datetime) -> None:
        try:
            detail = self.actions[entry.action](entry, fired, self._progress_of(entry.name))
        except Exception as exc:  # a failed firing is recorded; the schedule goes on
            text = " ".join(str(exc).split())
            self.record(
                entry.name, "failed", fired, f"entry {entry.name!r}: {type(exc).__name__}: {text}"
            )
            return
        self.record(entry.name, "succeeded", fired, detail)

    def running(self) -> list[str]:
        """The entries whose firing is running now."""
        return [name for name, w in self._workers.items() if w.is_alive()]

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running firings to end."""
        for worker in list(self._workers.values()):
            worker.join(timeout)

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """:meth:`start`, then :meth:`tick` at each firing (checking at least every
        ``poll_s`` seconds, so a changed system clock is noticed) until ``stop`` is set."""
        self.start()
        while not stop.is_set():
            self.tick()
            upcoming = [t for t in self._next.values() if t is not None]
            wait = poll_s
            if upcoming:
                wait = min(poll_s, max(0.0, (min(upcoming) - self.clock()).total_seconds()))
            stop.wait(wait)
