"""Scheduled runs (``marketarena.service.schedule``, ``marketarena schedule``).

Timing is checked with a fake clock: the scheduler's ``clock`` is set to each instant by
hand, so months pass without sleeping. Firing instants are pinned by hand from the New York
rules (EST = UTC-5 until 2024-03-10 02:00, EDT = UTC-4 after) and the NYSE calendar (the
2024-11-29 early close at 13:00, the 2024-11-28 and 2024-07-04 holidays, 2010-01-18).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from marketarena.cli import main
from marketarena.envs.errors import ConfigError
from marketarena.envs.providers import DataDir, Downloader
from marketarena.evaluation.saved_runs import paper
from marketarena.evaluation.saved_runs.persisted import load_result, start_backtest
from marketarena.evaluation.saved_runs.store import RunStore
from marketarena.service.schedule import (
    Schedule,
    ScheduleEntry,
    Scheduler,
    load_schedule,
    read_history,
)

UTC = dt.UTC


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def write(tmp_path: Path, text: str, name: str = "schedule.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def recording_scheduler(
    schedule: Schedule, clock: FakeClock, action=None
) -> tuple[Scheduler, list[tuple[str, dt.datetime]]]:
    """A scheduler whose ``continue`` action only records (entry, firing)."""
    ran: list[tuple[str, dt.datetime]] = []

    def record(entry: ScheduleEntry, fired: dt.datetime, progress) -> str:
        ran.append((entry.name, fired))
        return "recorded"

    return Scheduler(schedule, clock=clock, actions={"continue": action or record}), ran


def fire_through(scheduler: Scheduler, clock: FakeClock, name: str, until: dt.datetime) -> None:
    """Step the clock to each firing of ``name`` before ``until``, ticking at each."""
    scheduler.start()
    while (fire := scheduler.next_firing(name)) is not None and fire < until:
        clock.now = fire
        scheduler.tick()
        scheduler.join()


def one_entry(tmp_path: Path, entry: str, **top: str) -> Schedule:
    head = "".join(f"{k}: {v}\n" for k, v in top.items())
    body = textwrap.indent(textwrap.dedent(entry).strip(), "    ")
    text = f"{head}entries:\n  - name: job\n    action: continue\n    run: r\n{body}\n"
    return load_schedule(write(tmp_path, text), check_runs=False)


# ------------------------------------------------------------------------------ timing
def test_a_1630_new_york_cron_entry_fires_at_2130_utc_before_the_dst_change_and_2030_after(
    tmp_path,
):
    schedule = one_entry(tmp_path, 'cron: "30 16 * * *"\ntimezone: America/New_York')
    clock = FakeClock(utc(2024, 3, 7, 12))
    scheduler, ran = recording_scheduler(schedule, clock)
    fire_through(scheduler, clock, "job", utc(2024, 3, 12))
    assert [fired for _, fired in ran] == [
        utc(2024, 3, 7, 21, 30),
        utc(2024, 3, 8, 21, 30),
        utc(2024, 3, 9, 21, 30),
        utc(2024, 3, 10, 20, 30),  # EDT from 2024-03-10 02:00
        utc(2024, 3, 11, 20, 30),
    ]
    fired = [e for e in read_history(schedule.history) if e.event == "fired"]
    assert [e.scheduled for e in fired] == [f for _, f in ran]
    assert all(e.time == e.scheduled for e in fired)  # fired at its instant, not late
    assert len([e for e in read_history(schedule.history) if e.event == "succeeded"]) == 5


def test_trading_days_only_skips_the_weekend_and_a_holiday(tmp_path):
    schedule = one_entry(
        tmp_path, 'cron: "30 16 * * *"\ntimezone: America/New_York\ntrading_days_only: true'
    )
    clock = FakeClock(utc(2024, 7, 2, 12))
    scheduler, ran = recording_scheduler(schedule, clock)
    fire_through(scheduler, clock, "job", utc(2024, 7, 10))
    # 2024-07-04 (Independence Day) and the weekend of the 6th and 7th are not sessions
    assert [fired for _, fired in ran] == [
        utc(2024, 7, 2, 20, 30),
        utc(2024, 7, 3, 20, 30),
        utc(2024, 7, 5, 20, 30),
        utc(2024, 7, 8, 20, 30),
        utc(2024, 7, 9, 20, 30),
    ]


def test_after_close_fires_after_the_early_close_and_not_on_the_holiday(tmp_path):
    schedule = one_entry(tmp_path, "after_close: true\noffset: 30min\ntimezone: America/New_York")
    clock = FakeClock(utc(2024, 11, 26, 12))
    scheduler, ran = recording_scheduler(schedule, clock)
    fire_through(scheduler, clock, "job", utc(2024, 12, 3))
    local = [f.astimezone(schedule.entries[0].timezone) for _, f in ran]
    assert [str(t) for t in local] == [
        "2024-11-26 16:30:00-05:00",
        "2024-11-27 16:30:00-05:00",
        # Thanksgiving (28th) closed; the 29th closes at 13:00
        "2024-11-29 13:30:00-05:00",
        "2024-12-02 16:30:00-05:00",
    ]


def test_after_close_across_the_dst_change_follows_the_local_close(tmp_path):
    schedule = one_entry(tmp_path, "after_close: true\ntimezone: America/New_York")
    clock = FakeClock(utc(2024, 3, 7, 12))
    scheduler, ran = recording_scheduler(schedule, clock)
    fire_through(scheduler, clock, "job", utc(2024, 3, 13))
    assert [fired for _, fired in ran] == [
        utc(2024, 3, 7, 21),
        utc(2024, 3, 8, 21),
        utc(2024, 3, 11, 20),
        utc(2024, 3, 12, 20),
    ]


def test_an_interval_within_market_hours_stops_at_the_close_and_restarts_at_the_open(
    tmp_path,
):
    schedule = one_entry(
        tmp_path, "interval: 30min\nmarket_hours: true\ntimezone: America/New_York"
    )
    clock = FakeClock(utc(2024, 11, 29, 16, 45))
    scheduler, ran = recording_scheduler(schedule, clock)
    fire_through(scheduler, clock, "job", utc(2024, 12, 2, 15, 31))
    assert [fired for _, fired in ran] == [
        utc(2024, 11, 29, 17),
        utc(2024, 11, 29, 17, 30),
        utc(2024, 11, 29, 18),  # the early close, 13:00 New York time
        utc(2024, 12, 2, 14, 30),  # Monday's open, 09:30
        utc(2024, 12, 2, 15),
        utc(2024, 12, 2, 15, 30),
    ]


def test_an_interval_keeps_its_pace_through_the_dst_change(tmp_path):
    schedule = one_entry(tmp_path, "interval: 15min\ntimezone: America/New_York")
    clock = FakeClock(utc(2024, 3, 10, 6, 31))  # 01:31 EST; at 02:00 clocks go to 03:00 EDT
    scheduler, ran = recording_scheduler(schedule, clock)
    fire_through(scheduler, clock, "job", utc(2024, 3, 10, 7, 31))
    assert [fired for _, fired in ran] == [
        utc(2024, 3, 10, 6, 45),
        utc(2024, 3, 10, 7),  # 03:00 EDT
        utc(2024, 3, 10, 7, 15),
        utc(2024, 3, 10, 7, 30),
    ]
    clock.now = utc(2024, 5, 1, 16, 0, 5)  # summer: the next quarter hour, not one in the past
    scheduler.start()
    assert scheduler.next_firing("job") == utc(2024, 5, 1, 16, 15)


# ---------------------------------------------------------------- overlaps and misfires
def test_a_firing_while_the_last_one_still_runs_is_skipped_and_logged(tmp_path, caplog):
    schedule = one_entry(tmp_path, "interval: 1min")
    clock = FakeClock(utc(2024, 5, 1, 12))
    release = threading.Event()
    calls = []

    def slow(entry: ScheduleEntry, fired: dt.datetime, progress) -> str:
        calls.append(fired)
        assert release.wait(10)
        return "done"

    scheduler, _ = recording_scheduler(schedule, clock, slow)
    scheduler.start()
    scheduler.tick()  # 12:00 is a firing
    clock.now = utc(2024, 5, 1, 12, 1)
    with caplog.at_level("INFO", logger="marketarena.service.schedule"):
        scheduler.tick()
    assert scheduler.running() == ["job"]
    release.set()
    scheduler.join()
    clock.now = utc(2024, 5, 1, 12, 2)
    scheduler.tick()
    scheduler.join()
    assert calls == [utc(2024, 5, 1, 12), utc(2024, 5, 1, 12, 2)]
    events = [(e.event, e.scheduled.strftime("%H:%M")) for e in read_history(schedule.history)]
    assert events == [
        ("fired", "12:00"),
        ("skipped", "12:01"),
        ("succeeded", "12:00"),
        ("fired", "12:02"),
        ("succeeded", "12:02"),
    ]
    assert "job skipped" in caplog.text and "still running" in caplog.text


def test_two_entries_of_one_run_never_run_it_at_once(tmp_path):
    path = write(
        tmp_path,
        """
        entries:
          - {name: first, interval: 1min, action: continue, run: r}
          - {name: second, interval: 1min, action: continue, run: r}
          - {name: other, interval: 1min, action: continue, run: r2}
        """,
    )
    schedule = load_schedule(path, check_runs=False)
    clock = FakeClock(utc(2024, 5, 1, 12))
    release = threading.Event()

    def slow(entry: ScheduleEntry, fired: dt.datetime, progress) -> str:
        assert release.wait(10)
        return entry.run

    scheduler, _ = recording_scheduler(schedule, clock, slow)
    scheduler.start()
    scheduler.tick()
    assert sorted(scheduler.running()) == ["first", "other"]
    release.set()
    scheduler.join()
    skipped = [e for e in read_history(schedule.history) if e.event == "skipped"]
    assert [(e.entry, e.detail) for e in skipped] == [
        ("second", "run r is being run by entry 'first'")
    ]


def _history_with_last_firing(schedule: Schedule, scheduled: dt.datetime) -> None:
    fired = {"time": scheduled.isoformat(), "entry": "job", "scheduled": scheduled.isoformat()}
    schedule.history.write_text(
        json.dumps({**fired, "event": "fired", "detail": ""})
        + "\n"
        + json.dumps({**fired, "event": "succeeded", "detail": "recorded"})
        + "\n"
    )


def test_a_firing_missed_while_down_runs_once_on_start_within_the_grace_time(tmp_path):
    schedule = one_entry(
        tmp_path, 'cron: "30 16 * * *"\ntimezone: America/New_York', misfire_grace="1h"
    )
    _history_with_last_firing(schedule, utc(2024, 3, 7, 21, 30))
    clock = FakeClock(utc(2024, 3, 8, 22, 15))  # 45 minutes after the 8th's firing
    scheduler, ran = recording_scheduler(schedule, clock)
    scheduler.start()
    scheduler.join()
    assert ran == [("job", utc(2024, 3, 8, 21, 30))]
    assert scheduler.next_firing("job") == utc(2024, 3, 9, 21, 30)
    last = read_history(schedule.history)[-2:]
    assert [(e.event, e.scheduled, e.time) for e in last] == [
        ("fired", utc(2024, 3, 8, 21, 30), clock.now),
        ("succeeded", utc(2024, 3, 8, 21, 30), clock.now),
    ]


def test_firings_missed_beyond_the_grace_time_are_skipped_and_logged(tmp_path):
    schedule = one_entry(
        tmp_path, 'cron: "30 16 * * *"\ntimezone: America/New_York', misfire_grace="1h"
    )
    _history_with_last_firing(schedule, utc(2024, 3, 7, 21, 30))
    clock = FakeClock(utc(2024, 3, 10, 22, 0))  # 3 firings missed, the last 90 min ago
    scheduler, ran = recording_scheduler(schedule, clock)
    scheduler.start()
    scheduler.join()
    assert ran == []
    new = read_history(schedule.history)[2:]
    assert [(e.event, e.scheduled) for e in new] == [
        ("missed", utc(2024, 3, 9, 21, 30)),
        ("missed", utc(2024, 3, 10, 20, 30)),
    ]
    assert "2 firing(s) while the scheduler was down" in new[0].detail
    assert "beyond the grace time 1:00:00" in new[1].detail
    # the next firing comes as usual, and a restart does not count these again
    assert scheduler.next_firing("job") == utc(2024, 3, 11, 20, 30)
    again, _ = recording_scheduler(schedule, clock)
    again.start()
    assert len(read_history(schedule.history)) == 4


def test_firings_due_together_are_coalesced_and_a_late_one_beyond_grace_is_not_run(tmp_path):
    schedule = one_entry(tmp_path, "interval: 10min\nmisfire_grace: 5min")
    clock = FakeClock(utc(2024, 5, 1, 12))
    scheduler, ran = recording_scheduler(schedule, clock)
    scheduler.start()
    clock.now = utc(2024, 5, 1, 12, 32)  # the process slept through 12:00..12:30
    scheduler.tick()
    scheduler.join()
    assert ran == [("job", utc(2024, 5, 1, 12, 30))]
    clock.now = utc(2024, 5, 1, 12, 47)  # 7 minutes late: beyond the grace time
    scheduler.tick()
    scheduler.join()
    assert len(ran) == 1
    events = [(e.event, e.scheduled.strftime("%H:%M")) for e in read_history(schedule.history)]
    assert events == [
        ("missed", "12:20"),
        ("fired", "12:30"),
        ("succeeded", "12:30"),
        ("missed", "12:40"),
    ]


def test_a_failing_firing_is_recorded_naming_the_entry_and_the_schedule_goes_on(tmp_path):
    schedule = one_entry(tmp_path, "interval: 1h")
    clock = FakeClock(utc(2024, 5, 1, 12))

    def broken(entry: ScheduleEntry, fired: dt.datetime, progress) -> str:
        raise RuntimeError("the data folder\nis gone")

    scheduler, _ = recording_scheduler(schedule, clock, broken)
    fire_through(scheduler, clock, "job", utc(2024, 5, 1, 14, 1))
    failed = [e for e in read_history(schedule.history) if e.event == "failed"]
    assert len(failed) == 3
    assert failed[0].detail == "entry 'job': RuntimeError: the data folder is gone"


# ------------------------------------------------------------------ the continue action
SYMBOLS = ["AXP", "BA", "CAT"]


def _folder_until_2009(tmp_path: Path) -> DataDir:
    folder = DataDir(tmp_path / "data")
    Downloader().download(folder, SYMBOLS, "2009-09-01", "2009-12-31", ["local"])
    return folder


@pytest.mark.parametrize(
    ("trigger", "fire", "end", "days"),
    [
        # after Friday's close: through Friday, 2010-01-15 (10 sessions since 2009-12-31)
        (
            "after_close: true\n" + 12 * " " + "offset: 30min",
            utc(2010, 1, 15, 21, 30),
            "2010-01-15",
            10,
        ),
        # at noon in New York the 15th's bar is not complete: through Thursday the 14th
        ('cron: "0 12 * * *"', utc(2010, 1, 15, 17), "2010-01-14", 9),
    ],
)
def test_continue_extends_a_stored_run_through_the_last_closed_session_as_one_backtest_would(
    tmp_path, trigger, fire, end, days
):
    folder = _folder_until_2009(tmp_path)
    store_path = tmp_path / "runs.sqlite"
    store = RunStore(store_path)
    start_backtest(store, "ew", "equal_weight:5", str(folder.path), "2009-09-01", "2009-12-31")
    days_before = store.run("ew").days
    store.close()
    path = write(
        tmp_path,
        f"""
        store: {store_path}
        entries:
          - name: nightly
            {trigger}
            timezone: America/New_York
            action: continue
            run: ew
            data: {folder.path}
            download: {{providers: [local]}}
        """,
    )
    schedule = load_schedule(path)
    clock = FakeClock(utc(2010, 1, 15, 14))  # Friday 09:00 in New York
    shown: list[tuple[str, str, float]] = []
    scheduler = Scheduler(schedule, clock=clock, progress=lambda *day: shown.append(day))
    scheduler.start()
    assert scheduler.next_firing("nightly") == fire
    clock.now = fire
    scheduler.tick()
    scheduler.join()
    done = read_history(schedule.history)[-1]
    assert done.event == "succeeded", done.detail
    assert f"downloaded {3 * days} row(s)" in done.detail  # no row after `end`
    assert f"continued from 2009-12-31 to {end} (+{days} days)" in done.detail

    store = RunStore(store_path, create=False)
    continued = load_result(store, "ew")
    assert store.run("ew").days == days_before + days
    assert str(continued.dates[-1]) == end
    # each new day was shown as it completed, the last one the run's end
    assert [date for _, date, _ in shown] == [str(d) for d in continued.dates[-days:]]
    assert {name for name, _, _ in shown} == {"nightly"} and shown[-1][2] == 1.0
    whole_store = RunStore(tmp_path / "whole.sqlite")
    whole = start_backtest(whole_store, "ew", "equal_weight:5", str(folder.path), "2009-09-01", end)
    np.testing.assert_array_equal(continued.dates, whole.dates)
    np.testing.assert_array_equal(continued.nav, whole.nav)  # bit for bit
    store.close()
    whole_store.close()


def test_a_firing_uses_no_bar_after_its_session_even_when_the_folder_has_them(tmp_path):
    """Perturb the future: two folders equal up to 2010-01-15 and different after give the
    same continued run at a firing after the 15th's close."""
    results = []
    for scale in (1.0, 1.5):
        base = tmp_path / f"x{scale}"
        folder = DataDir(base / "data")
        Downloader().download(folder, SYMBOLS, "2009-09-01", "2010-02-26", ["local"])
        for symbol in SYMBOLS:
            frame = folder.read(symbol)
            later = frame["date"] > "2010-01-15"
            for column in ("open", "high", "low", "close"):
                frame.loc[later, column] *= scale
            frame.to_csv(folder.path / f"{symbol}.csv", index=False)
        store = RunStore(base / "runs.sqlite")
        start_backtest(store, "ew", "equal_weight:5", str(folder.path), "2009-09-01", "2009-12-31")
        store.close()
        path = write(
            base,
            f"""
            store: {base / "runs.sqlite"}
            entries:
              - name: nightly
                after_close: true
                timezone: America/New_York
                action: continue
                run: ew
                data: {folder.path}
            """,
        )
        clock = FakeClock(utc(2010, 1, 15, 21))
        scheduler = Scheduler(load_schedule(path), clock=clock)
        scheduler.start()
        scheduler.tick()
        scheduler.join()
        store = RunStore(base / "runs.sqlite", create=False)
        results.append(load_result(store, "ew"))
        store.close()
    assert str(results[0].dates[-1]) == "2010-01-15"
    np.testing.assert_array_equal(results[0].dates, results[1].dates)
    np.testing.assert_array_equal(results[0].nav, results[1].nav)


def test_after_close_skips_a_holiday_monday(tmp_path):
    schedule = one_entry(tmp_path, "after_close: true\ntimezone: America/New_York")
    clock = FakeClock(utc(2010, 1, 15, 22))
    scheduler, _ = recording_scheduler(schedule, clock)
    scheduler.start()
    # Monday 2010-01-18 (Martin Luther King Jr. Day) is no session: next is Tuesday's close
    assert scheduler.next_firing("job") == utc(2010, 1, 19, 21)


def test_paper_trades_the_folders_new_bars_as_one_backtest_would(tmp_path):
    folder = _folder_until_2009(tmp_path)
    store_path = tmp_path / "runs.sqlite"
    store = RunStore(store_path)
    with paper.start_paper(store, "p", "equal_weight:5", str(folder.path)) as session:
        session.close()  # the run's first mark: 2009-12-31, all cash
    store.close()
    path = write(
        tmp_path,
        f"""
        store: {store_path}
        entries:
          - name: paper
            after_close: true
            offset: 15min
            timezone: America/New_York
            action: paper
            run: p
            data: {folder.path}
            download: {{providers: [local]}}
        """,
    )
    schedule = load_schedule(path)
    clock = FakeClock(utc(2010, 1, 15, 21, 15))
    scheduler = Scheduler(schedule, clock=clock)
    scheduler.start()
    scheduler.tick()
    scheduler.join()
    clock.now = utc(2010, 1, 19, 21, 15)  # Tuesday: one more bar
    scheduler.tick()
    scheduler.join()
    events = [e for e in read_history(schedule.history) if e.event == "succeeded"]
    assert len(events) == 2, read_history(schedule.history)
    assert "traded from 2009-12-31 to 2010-01-15 (10 bar set(s) received, 10 recorded" in (
        events[0].detail
    )
    assert "traded from 2010-01-15 to 2010-01-19 (1 bar set(s) received, 1 recorded" in (
        events[1].detail
    )
    store = RunStore(store_path, create=False)
    traded = load_result(store, "p")
    whole_store = RunStore(tmp_path / "whole.sqlite")
    whole = start_backtest(
        whole_store, "w", "equal_weight:5", str(folder.path), "2009-12-31", "2010-01-19"
    )
    np.testing.assert_array_equal(traded.dates, whole.dates)
    np.testing.assert_array_equal(traded.nav, whole.nav)
    store.close()
    whole_store.close()


def test_an_action_that_does_not_fit_the_run_is_refused_naming_the_entry(tmp_path):
    folder = _folder_until_2009(tmp_path)
    store_path = tmp_path / "runs.sqlite"
    store = RunStore(store_path)
    with paper.start_paper(store, "p", "equal_weight:5", str(folder.path)) as session:
        session.close()
    start_backtest(store, "b", "equal_weight:5", str(folder.path), "2009-12-01", "2009-12-31")
    store.close()
    for run, action, message in (
        ("p", "continue", "entry 'job': run: 'p' is a paper run: use action: paper"),
        ("b", "paper", "entry 'job': run: 'b' is a backtest: use action: continue"),
    ):
        path = write(
            tmp_path,
            f"store: {store_path}\nentries:\n  - {{name: job, interval: 1h, action: {action}, "
            f"run: {run}}}\n",
        )
        with pytest.raises(ConfigError, match=message):
            load_schedule(path)


# ------------------------------------------------------------------------- bad files
@pytest.fixture
def empty_store(tmp_path) -> Path:
    path = tmp_path / "runs.sqlite"
    RunStore(path).close()
    return path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('cron: "61 16 * * *"', "entry 'job': cron: '61 16 * * *' is not a cron expression"),
        ('cron: "30 16 * *"', "entry 'job': cron: '30 16 * *' is not a cron expression"),
        (
            'cron: "30 16 * * *"\ntimezone: America/Nowhere',
            "entry 'job': timezone: unknown time zone 'America/Nowhere'",
        ),
        ("after_close: true\ncalendar: XNOPE", "entry 'job': calendar: unknown exchange"),
        ('cron: "0 9 * * *"\ninterval: 5min', "entry 'job': give exactly one of cron"),
        ("interval: 5min\ntrading_days_only: true", "trading_days_only: not an option of inter"),
        ("interval: soon", "entry 'job': interval: 'soon' is not a duration"),
        ("interval: 5min\nmisfire_grace: -3", "entry 'job': misfire_grace: -3 is negative"),
        ("interval: 5min\nwhen: now", "entry 'job': unknown key 'when'"),
        ("interval: 5min\ndownload: {providers: [nope]}", "download: needs data"),
        ("interval: 5min", "entry 'job': run: no run 'r' in"),
    ],
)
def test_bad_entries_are_one_error_line_naming_the_entry_and_the_key(
    tmp_path, empty_store, capsys, entry, message
):
    body = textwrap.indent(entry, "    ")
    path = write(
        tmp_path,
        f"store: {empty_store}\nentries:\n  - name: job\n    action: continue\n    run: r\n"
        f"{body}\n",
    )
    assert main(["schedule", str(path), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("error: ") and message in out and str(path) in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("entries: []", "entries: a non-empty list"),
        ("entries: [{name: a, interval: 1h, action: continue, run: r}]\nmore: 1", "'more'"),
        ("entries:\n - name: a\n   action: continue\n  run: [", "not valid YAML"),
        (
            "entries:\n - {name: a, interval: 1h, action: continue, run: r}\n"
            " - {name: a, interval: 2h, action: continue, run: r}",
            "entry 'a': name: used by more than one entry",
        ),
        ("entries: [{name: a, interval: 1h, action: trade, run: r}]", "action: 'trade'"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_schedule(write(tmp_path, text), check_runs=False)


def test_a_damaged_history_file_is_a_clear_error_naming_its_line(tmp_path):
    schedule = one_entry(tmp_path, "interval: 1h")
    _history_with_last_firing(schedule, utc(2024, 5, 1, 12))
    with schedule.history.open("a") as fh:
        fh.write('{"time": "yesterday"}\n')
    scheduler, _ = recording_scheduler(schedule, FakeClock(utc(2024, 5, 1, 13)))
    with pytest.raises(ConfigError, match=r"history file .*, line 3: not a history record"):
        scheduler.start()


def test_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["schedule", str(tmp_path / "nope.yaml")]) == 1
    assert capsys.readouterr().out.startswith("error: schedule file ")


# --------------------------------------------------------------------------- the CLI
@pytest.fixture
def stored_run(tmp_path) -> Path:
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    start_backtest(store, "ew", "equal_weight:5", "sp500_ohlcv_30", "2010-06-01", "2010-08-20")
    store.close()
    return path


def test_dry_run_prints_each_entrys_next_firings_in_its_time_zone(tmp_path, stored_run, capsys):
    path = write(
        tmp_path,
        f"""
        store: {stored_run}
        entries:
          - name: ny
            cron: "30 16 * * mon-fri"
            timezone: America/New_York
            action: continue
            run: ew
          - name: tokyo
            cron: "0 9 * * *"
            timezone: Asia/Tokyo
            action: continue
            run: ew
        """,
    )
    assert main(["schedule", str(path), "--dry-run", "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "ny" in out and "tokyo" in out and "cron 30 16 * * mon-fri" in out
    assert out.count(" 16:30:00 E") == 2  # EST or EDT, as the date falls
    assert out.count(" 09:00:00 JST") == 2
    assert not path.with_name("schedule.history.jsonl").exists()  # nothing ran


def test_the_command_runs_firings_until_ctrl_c(tmp_path, stored_run):
    path = write(
        tmp_path,
        f"""
        store: {stored_run}
        history: {tmp_path / "history.jsonl"}
        entries:
          - name: every2s
            interval: 2s
            action: continue
            run: ew
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketarena.cli", "schedule", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 60
        history = tmp_path / "history.jsonl"
        while time.monotonic() < deadline:
            if history.exists() and '"succeeded"' in history.read_text():
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert "every2s: fired continue ew" in out
    # the run ends with its data (2010-08-20): nothing to add, said so
    assert "every2s: succeeded run ew is up to date: no data after 2010-08-20" in out
    assert out.rstrip().splitlines()[-1].startswith("stopped")
    assert "Traceback" not in out
