"""Live feeds: the shared bar policy case by case, the replay over a WebSocket, the file
feed, and the provider adapters against local fake servers (tests/envs/conftest.py)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marketarena.envs.data import DataValidationError, load_dataset
from marketarena.envs.errors import ConfigError, MarketArenaError
from marketarena.envs.feeds import (
    Backoff,
    Bar,
    BarAssembler,
    FallbackFeed,
    Feed,
    FeedUnavailableError,
    FileFeed,
    PollingRestFeed,
    ReplayFeed,
    ReplayServer,
    StreamingWebSocketFeed,
    bar_sets_to_market_data,
    daily_bar_end,
)

SECRET = "sk-test-SECRET-4242"  # as tests/envs/conftest.py's fakes expect
FAST = {"initial": 0.01, "factor": 2.0, "maximum": 0.05}


def ny(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="America/New_York").tz_convert("UTC")


def minute_ends(n: int) -> list[pd.Timestamp]:
    """The ends of the first ``n`` minute bars from 10:00 New York on 2024-03-05."""
    return [ny("2024-03-05 10:00") + pd.Timedelta(minutes=i) for i in range(1, n + 1)]


def bar(symbol: str, end: str, close: float, interval: str = "5min", **kw: float) -> Bar:
    values = {"open": close, "high": close + 1, "low": close - 1, "volume": 100.0, **kw}
    return Bar(symbol, ny(end), interval, close=close, **values)


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------- the policy
def test_a_set_is_emitted_when_every_symbol_has_its_bar() -> None:
    a = BarAssembler(["A", "B"], "5min")
    assert a.add(bar("A", "2024-03-05 10:00", 10)) == []
    (made,) = a.add(bar("B", "2024-03-05 10:00", 20))
    assert made.end == pd.Timestamp("2024-03-05 15:00", tz="UTC")
    assert made.date == "2024-03-05" and made.filled == () and made.symbols == ("A", "B")
    assert made.bars["B"].close == 20 and made.bars["B"].high == 21
    assert a.stats.sets_emitted == 1 and a.stats.bars_received == 2


def test_a_partial_set_waits_for_the_grace_period_then_is_forward_filled() -> None:
    clock = Clock()
    a = BarAssembler(["A", "B"], "5min", grace=5, clock=clock)
    a.add(bar("A", "2024-03-05 10:00", 10))
    a.add(bar("B", "2024-03-05 10:00", 20))
    a.add(bar("A", "2024-03-05 10:05", 11))
    clock.now = 4.9
    assert a.poll() == []
    clock.now = 5.0
    (made,) = a.poll()
    assert made.filled == ("B",)
    filled = made.bars["B"]
    assert filled.filled and not made.bars["A"].filled
    # the last close carried, no range, no volume
    assert (filled.open, filled.high, filled.low, filled.close, filled.volume) == (
        20,
        20,
        20,
        20,
        0,
    )
    assert a.stats.filled == 1
    # B's bar arriving now is late: dropped, counted, the emitted set is not revised
    assert a.add(bar("B", "2024-03-05 10:05", 21)) == []
    assert a.stats.late == 1


def test_a_set_that_cannot_be_filled_is_dropped_and_counted() -> None:
    clock = Clock()
    a = BarAssembler(["A", "B"], "5min", grace=1, clock=clock)
    a.add(bar("A", "2024-03-05 10:00", 10))
    clock.now = 2
    assert a.poll() == []
    assert a.stats.dropped_sets == 1 and a.stats.sets_emitted == 0
    assert "no bar for B" in a.stats.events[-1]


def test_a_later_complete_set_pushes_out_an_earlier_partial_one_first() -> None:
    a = BarAssembler(["A", "B"], "5min", grace=60)
    a.add(bar("A", "2024-03-05 10:00", 10))
    a.add(bar("B", "2024-03-05 10:00", 20))
    a.add(bar("A", "2024-03-05 10:05", 11))  # B's 10:05 never comes
    a.add(bar("A", "2024-03-05 10:10", 12))
    first, second = a.add(bar("B", "2024-03-05 10:10", 22))
    assert [first.end, second.end] == [ny("2024-03-05 10:05"), ny("2024-03-05 10:10")]
    assert first.filled == ("B",) and second.filled == ()


def test_duplicates_identical_are_dropped_different_are_an_error() -> None:
    a = BarAssembler(["A", "B"], "5min")
    a.add(bar("A", "2024-03-05 10:00", 10))
    assert a.add(bar("A", "2024-03-05 10:00", 10)) == []  # pending: identical
    a.add(bar("B", "2024-03-05 10:00", 20))
    assert a.add(bar("B", "2024-03-05 10:00", 20)) == []  # already emitted: identical
    assert a.stats.duplicates == 2 and a.stats.sets_emitted == 1
    with pytest.raises(
        DataValidationError, match=r"B at 2024-03-05T15:00:00\+00:00: two different"
    ):
        a.add(bar("B", "2024-03-05 10:00", 20.5))
    a.add(bar("A", "2024-03-05 10:05", 11))
    with pytest.raises(DataValidationError, match="A at 2024-03-05T15:05"):
        a.add(bar("A", "2024-03-05 10:05", 11, volume=1.0))


def test_out_of_order_bars_older_than_the_last_set_are_dropped_and_counted() -> None:
    a = BarAssembler(["A"], "5min")
    a.add(bar("A", "2024-03-05 10:00", 10))
    a.add(bar("A", "2024-03-05 10:05", 11))
    assert a.add(bar("A", "2024-03-05 09:55", 9)) == []
    assert a.stats.late == 1 and a.last_end == ny("2024-03-05 10:05")


def test_gaps_are_counted_in_trading_hours_only() -> None:
    a = BarAssembler(["A"], "5min")
    a.add(bar("A", "2024-03-05 10:00", 10))
    a.add(bar("A", "2024-03-05 10:15", 11))  # 10:05 and 10:10 missing
    assert a.stats.gaps == 2
    assert a.stats.gap_spans == [("2024-03-05T15:05:00+00:00", "2024-03-05T15:10:00+00:00")]
    a.add(bar("A", "2024-03-05 16:00", 12))  # 10:20..15:55: 68 more
    assert a.stats.gaps == 2 + 68
    a.add(bar("A", "2024-03-06 09:35", 13))  # overnight: the market is closed, no gap
    assert a.stats.gaps == 70 and len(a.stats.gap_spans) == 2


def test_a_minute_gap_over_a_weekend_counts_trading_minutes_only() -> None:
    a = BarAssembler(["A"], "1min")
    a.add(bar("A", "2024-03-01 10:00", 10, interval="1min"))  # a Friday
    a.add(bar("A", "2024-03-12 10:00", 10, interval="1min"))  # the Tuesday after next
    # Fri 10:01-16:00 (360), Mon 4th-Fri 8th (5 x 390), Mon 11th (390), Tue 09:31-09:59 (29);
    # the DST change of Sunday the 10th moves the UTC times, not the count
    assert a.stats.gaps == 360 + 5 * 390 + 390 + 29
    assert a.stats.gap_spans == [("2024-03-01T15:01:00+00:00", "2024-03-12T13:59:00+00:00")]


def test_daily_gaps_follow_the_exchange_calendar() -> None:
    a = BarAssembler(["A"], "1d")

    def day(d: str, c: float) -> Bar:
        return Bar("A", daily_bar_end(d), "1d", close=c)

    a.add(day("2024-07-02", 10))
    a.add(day("2024-07-05", 11))  # 07-03 is a session (early close), 07-04 a holiday
    assert a.stats.gaps == 1
    assert a.stats.gap_spans == [("2024-07-03T17:00:00+00:00", "2024-07-03T17:00:00+00:00")]
    a.add(day("2024-07-08", 12))  # over a weekend
    assert a.stats.gaps == 1


def test_daily_bars_end_at_the_session_close() -> None:
    assert daily_bar_end("2024-03-05") == pd.Timestamp("2024-03-05 21:00", tz="UTC")  # EST
    assert daily_bar_end("2024-07-05") == pd.Timestamp("2024-07-05 20:00", tz="UTC")  # EDT
    assert daily_bar_end("2024-11-29") == pd.Timestamp("2024-11-29 18:00", tz="UTC")  # early
    assert daily_bar_end("2024-07-04") == pd.Timestamp("2024-07-04 20:00", tz="UTC")  # holiday


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"close": 10, "high": 9, "low": 8, "open": 9}, "close 10.0 above high 9.0"),
        ({"close": 10, "high": 10, "low": 11, "open": 10}, "high 10.0 < low 11.0"),
        ({"close": -1.0}, "close -1.0 is not a positive price"),
        ({"close": float("nan")}, "close nan is not a positive price"),
        ({"close": 10, "volume": -5}, "volume -5.0 is negative"),
        ({"close": 10, "open": 12, "high": 11, "low": 9}, "open 12.0 above high 11.0"),
    ],
)
def test_invalid_bars_are_errors_naming_symbol_and_time(values: dict, problem: str) -> None:
    a = BarAssembler(["A"], "5min", source="my feed")
    kw = {"open": None, "high": None, "low": None, "volume": None}
    kw.update({k: float(v) for k, v in values.items() if k != "close"})
    b = Bar("A", ny("2024-03-05 10:00"), "5min", close=float(values["close"]), **kw)
    with pytest.raises(DataValidationError) as err:
        a.add(b)
    assert "my feed" in str(err.value) and "A at 2024-03-05T15:00:00+00:00" in str(err.value)
    assert problem in str(err.value)


def test_a_naive_time_or_another_interval_is_an_error_foreign_symbols_are_counted() -> None:
    a = BarAssembler(["A"], "5min")
    with pytest.raises(DataValidationError, match="no time zone"):
        a.add(Bar("A", pd.Timestamp("2024-03-05 10:00"), "5min", close=1.0))
    with pytest.raises(DataValidationError, match="a '1min' bar in a '5min' feed"):
        a.add(bar("A", "2024-03-05 10:00", 10, interval="1min"))
    assert a.add(bar("ZZZ", "2024-03-05 10:00", 10)) == []
    assert a.stats.foreign == 1
    with pytest.raises(ConfigError, match="interval '2min'"):
        BarAssembler(["A"], "2min")


def test_sets_up_to_the_resume_point_are_skipped() -> None:
    a = BarAssembler(["A"], "5min", after=ny("2024-03-05 10:05"))
    assert a.add(bar("A", "2024-03-05 10:00", 10)) == []
    assert a.add(bar("A", "2024-03-05 10:05", 10)) == []
    (made,) = a.add(bar("A", "2024-03-05 10:10", 10))
    assert made.end == ny("2024-03-05 10:10") and a.stats.skipped == 2 and a.stats.gaps == 0


# ------------------------------------------------------------------------------ replay
def test_replay_delivers_exactly_the_stored_daily_bars_in_order() -> None:
    data = (
        load_dataset("sp500_ohlcv_30")
        .select(["IBM", "KO", "XOM"])
        .slice("2010-06-01", "2010-08-20")
    )
    with ReplayServer(data) as server:
        feed = server.feed()
        assert isinstance(feed, Feed)
        sets = list(feed)
    assert [s.end for s in sets] == [daily_bar_end(d) for d in data.dates]
    assert [s.date for s in sets] == [str(d) for d in data.dates]
    again = bar_sets_to_market_data(sets)
    assert again.symbols == data.symbols and np.array_equal(again.dates, data.dates)
    for f in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(again, f), getattr(data, f)), f  # bit for bit
    assert feed.stats.sets_emitted == data.n_periods
    assert (feed.stats.filled, feed.stats.duplicates) == (0, 0)
    # the bundled sample lacks 2010-08-18, an NYSE session: the replay reports that gap
    assert feed.stats.gaps == 1
    assert feed.stats.gap_spans == [("2010-08-18T20:00:00+00:00", "2010-08-18T20:00:00+00:00")]


def test_replay_of_close_only_data_keeps_it_close_only_and_honours_after() -> None:
    data = load_dataset("sp500_20").select(["AAPL", "MSFT"]).slice("2020-03-02", "2020-03-13")
    with ReplayServer(data) as server:
        sets = list(server.feed(after=daily_bar_end("2020-03-06")))
    assert [s.date for s in sets] == [str(d) for d in data.dates[5:]]
    again = bar_sets_to_market_data(sets)
    assert again.open is None and again.volume is None
    assert np.array_equal(again.close, data.close[5:])


def test_replay_speed_paces_the_sets() -> None:
    data = load_dataset("sp500_ohlcv_30").select(["KO"]).slice("2010-06-01", "2010-06-08")
    with ReplayServer(data, speed=20) as server:
        started = time.monotonic()
        sets = list(server.feed())
        took = time.monotonic() - started
    assert len(sets) == 6 and took >= 5 / 20


def test_replay_reconnects_mid_set_and_resumes_without_losing_or_repeating(flaky_relay) -> None:
    data = (
        load_dataset("sp500_ohlcv_30")
        .select(["IBM", "KO", "XOM"])
        .slice("2010-06-01", "2010-06-30")
    )
    with ReplayServer(data) as server:
        # ready, then 4 sets of 3 bars + a "set" marker, then 2 bars of the 5th set: cut
        relay = flaky_relay(server.url, cut_after=1 + 4 * 4 + 2)
        feed = ReplayFeed(relay.url, data.symbols, backoff=Backoff(**FAST))
        sets = list(feed)
    again = bar_sets_to_market_data(sets)
    assert np.array_equal(again.dates, data.dates)
    for f in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(again, f), getattr(data, f)), f
    assert relay.subscriptions[0]["after"] is None
    assert relay.subscriptions[1]["after"] == daily_bar_end(data.dates[3]).isoformat()
    # the two bars of the half-received set come again: identical, dropped and counted
    assert (feed.stats.reconnects, feed.stats.duplicates, feed.stats.filled) == (1, 2, 0)


def test_a_replay_server_that_is_gone_is_an_outage_after_the_backoff() -> None:
    data = load_dataset("sp500_ohlcv_30").select(["KO"]).slice("2010-06-01", "2010-06-08")
    server = ReplayServer(data).start()
    url = server.url
    server.stop()
    feed = ReplayFeed(url, ["KO"], backoff=Backoff(**FAST, attempts=3))
    with pytest.raises(FeedUnavailableError, match="unavailable after 3 attempts"):
        list(feed)
    assert feed.stats.reconnects == 2


# --------------------------------------------------------------------------- file feed
HEADER = "date,symbol,open,high,low,close,volume\n"


def test_the_file_feed_follows_appends_partial_lines_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + "2024-03-05T10:00:00-05:00,A,10,11,9,10,5\n")
    feed = FileFeed(path, ["A", "B"], "5min", poll=0.01, grace=30, idle_timeout=0.4)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(feed))
    reader.start()
    with path.open("a") as fh:
        fh.write("2024-03-05T10:00:00-05:00,B,20,21,19,20,5\n2024-03-05T10:05:00-05:00,A,10,11")
        fh.flush()
        wait_until(lambda: feed.stats.sets_emitted == 1)
        time.sleep(0.05)  # polls that see the half-written row wait for its end
        fh.write(",9,10.5,6\nnot,a,row\n2024-03-05T10:05:00-05:00,B,20,21,19,20.5,6\n")
        fh.flush()
        wait_until(lambda: feed.stats.sets_emitted == 2)
    # rewritten in place from scratch with a row already delivered, then new ones
    path.write_text(
        HEADER + "2024-03-05T10:05:00-05:00,B,20,21,19,20.5,6\n"
        "2024-03-05T10:10:00-05:00,A,10,11,9,10,1\n2024-03-05T10:10:00-05:00,B,20,21,19,20,1\n"
    )
    reader.join(timeout=10)
    assert [s.end for s in got] == [
        ny("2024-03-05 10:00"),
        ny("2024-03-05 10:05"),
        ny("2024-03-05 10:10"),
    ]
    assert got[1].bars["A"].close == 10.5 and got[1].bars["A"].volume == 6
    assert got[1].bars["B"].close == 20.5
    stats = feed.stats
    assert (stats.garbage, stats.truncations, stats.duplicates) == (1, 1, 1)
    assert any("line 5 skipped" in e for e in stats.events)


def test_the_file_feed_notices_a_file_rewritten_in_place_past_its_old_length(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("date,symbol,close\n2024-03-05T10:00:00-05:00,A,10\n")
    feed = FileFeed(path, ["A"], "5min", poll=0.01, idle_timeout=0.3)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(feed))
    reader.start()
    wait_until(lambda: feed.stats.sets_emitted == 1)
    # longer than before: the size alone would hide it; its first bytes changed
    path.write_text(
        "date,symbol,close\n2024-03-05T10:05:00-05:00,A,11\n2024-03-05T10:10:00-05:00,A,12\n"
    )
    reader.join(timeout=10)
    assert [s.bars["A"].close for s in got] == [10, 11, 12]
    assert feed.stats.truncations == 1 and feed.stats.garbage == 0


def test_a_live_feed_forward_fills_a_symbol_silent_past_the_grace_period(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(
        "date,symbol,close\n2024-03-05T10:00:00-05:00,A,10\n2024-03-05T10:00:00-05:00,B,20\n"
        "2024-03-05T10:05:00-05:00,A,11\n"
    )
    feed = FileFeed(path, ["A", "B"], "5min", poll=0.01, grace=0.1, idle_timeout=0.5)
    started = time.monotonic()
    first, second = list(feed)
    assert time.monotonic() - started >= 0.1
    assert first.filled == () and second.filled == ("B",)
    assert second.bars["B"].close == 20 and second.bars["B"].filled
    assert feed.stats.filled == 1


def test_the_file_feed_reads_daily_rows_as_session_closes(tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text("date,symbol,close\n2024-07-03,A,10\n2024-07-05,A,11\n")
    feed = FileFeed(path, ["A"], "1d", poll=0.01, idle_timeout=0.1)
    sets = list(feed)
    assert [s.end for s in sets] == [daily_bar_end("2024-07-03"), daily_bar_end("2024-07-05")]
    assert sets[0].bars["A"].open is None and feed.stats.gaps == 0


def test_the_file_feed_refuses_a_header_without_close(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,ticker,price\n")
    with pytest.raises(MarketArenaError, match=r"lacks \['close', 'date', 'symbol'\]"):
        list(FileFeed(path, ["A"], "1d", poll=0.01, idle_timeout=0.1))


# ------------------------------------------------------------------------ REST adapter
def _rest_feed(url: str, **kw) -> PollingRestFeed:
    options = {
        "poll": 0.01,
        "requests_per_minute": None,
        "rate_limit_wait": 0.01,
        "backoff": Backoff(**FAST, attempts=4),
        "grace": 30,
        "idle_timeout": 3,
    }
    options.update(kw)
    return PollingRestFeed(url, ["A", "B"], "1min", **options)


def _no_secret(feed_events: list[str], caplog: pytest.LogCaptureFixture) -> None:
    assert SECRET not in caplog.text
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert all(SECRET not in e for e in feed_events)


def test_rest_adapter_rides_out_rate_limits_drops_and_garbage(
    fake_rest, minute_bars, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MARKETARENA_REST_API_KEY", SECRET)
    bars = minute_bars(["A", "B"], "2024-03-05 10:00", 8)  # ends 10:01..10:08
    # aiohttp itself retries a GET once when its connection drops: two drops in a row reach
    # the adapter as one failure
    script = {1: "429", 2: "drop", 3: "drop", 5: "note", 6: "garbage", 7: "500"}
    fake = fake_rest(bars, script=script)
    feed = _rest_feed(fake.url, until=ny("2024-03-05 10:08"))
    sets = list(feed)
    assert [s.end for s in sets] == [ny(f"2024-03-05 10:0{i}") for i in range(1, 9)]
    for i, s in enumerate(sets):  # the served values exactly, nothing lost or filled
        assert (s.bars["A"].close, s.bars["B"].close) == (100 + i, 200 + i)
        assert (s.bars["A"].open, s.bars["A"].volume) == (99.5 + i, 10 + i)
    stats = feed.stats
    assert (stats.rate_limited, stats.reconnects, stats.garbage) == (2, 2, 1)
    assert (stats.filled, stats.gaps, stats.late, stats.duplicates) == (0, 0, 0, 0)
    assert set(fake.keys_seen) == {SECRET}  # the key reaches the provider...
    _no_secret(stats.events, caplog)  # ...and nothing else


def test_rest_adapter_daily_bars_end_at_session_closes(
    fake_rest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETARENA_REST_API_KEY", SECRET)
    days = [pd.Timestamp("2024-07-02"), pd.Timestamp("2024-07-03"), pd.Timestamp("2024-07-05")]
    bars = [
        {"sym": s, "start": d, "o": 10.0, "h": 13.0, "l": 9.0, "c": 10.0 + i, "v": 1.0}
        for i, d in enumerate(days)
        for s in ("A", "B")
    ]
    fake = fake_rest(bars)
    feed = PollingRestFeed(
        fake.url,
        ["A", "B"],
        "1d",
        poll=0.01,
        requests_per_minute=None,
        until=daily_bar_end("2024-07-05"),
        idle_timeout=3,
    )
    sets = list(feed)
    assert [s.end for s in sets] == [
        pd.Timestamp(t, tz="UTC")
        for t in (
            "2024-07-02 20:00",
            "2024-07-03 17:00",
            "2024-07-05 20:00",  # 07-03 closes at 13:00
        )
    ]
    assert [s.date for s in sets] == ["2024-07-02", "2024-07-03", "2024-07-05"]
    assert [s.bars["B"].close for s in sets] == [10, 11, 12] and feed.stats.gaps == 0


def test_rest_adapter_spaces_requests_by_its_rate_limit(
    fake_rest, minute_bars, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETARENA_REST_API_KEY", SECRET)
    fake = fake_rest(minute_bars(["A", "B"], "2024-03-05 10:00", 4))
    feed = _rest_feed(fake.url, requests_per_minute=600, until=ny("2024-03-05 10:04"))
    started = time.monotonic()
    assert len(list(feed)) == 4
    assert fake.requests == 4 and time.monotonic() - started >= 3 * 0.1


def test_rest_outage_and_refused_key_never_show_the_key(
    fake_rest, minute_bars, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = fake_rest(minute_bars(["A", "B"], "2024-03-05 10:00", 2))
    monkeypatch.setenv("MARKETARENA_REST_API_KEY", "sk-WRONG-1234")
    with pytest.raises(ConfigError) as refused:
        list(_rest_feed(fake.url))
    assert "refused the API key in MARKETARENA_REST_API_KEY" in str(refused.value)
    assert "sk-WRONG-1234" not in "".join(traceback.format_exception(refused.value))

    monkeypatch.setenv("MARKETARENA_REST_API_KEY", SECRET)
    url = fake.url
    assert fake.server is not None
    fake.server.stop()
    feed = _rest_feed(url)
    with pytest.raises(FeedUnavailableError) as outage:
        list(feed)
    assert "unavailable after 4 attempts" in str(outage.value) and feed.stats.reconnects == 3
    assert SECRET not in "".join(traceback.format_exception(outage.value))
    assert SECRET not in repr(feed.__dict__.get("url")) and SECRET not in repr(feed)
    _no_secret(feed.stats.events, caplog)

    monkeypatch.delenv("MARKETARENA_REST_API_KEY")
    with pytest.raises(ConfigError, match="MARKETARENA_REST_API_KEY holds no API key"):
        list(_rest_feed(url))


# ------------------------------------------------------------------- WebSocket adapter
def _ws_feed(url: str, interval: str = "1min", **kw) -> StreamingWebSocketFeed:
    options = {
        "requests_per_minute": None,
        "backoff": Backoff(**FAST, attempts=4),
        "rate_limit_wait": 0.01,
        "grace": 30,
        "idle_timeout": 3,
    }
    options.update(kw)
    return StreamingWebSocketFeed(url, ["A", "B"], interval, **options)


def test_websocket_adapter_reconnects_mid_stream_without_losing_or_repeating_a_bar(
    fake_polygon, minute_bars, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MARKETARENA_WS_API_KEY", SECRET)
    bars = minute_bars(["A", "B"], "2024-03-05 10:00", 10)
    # dropped between minute 2's A and B; the next connection repeats A; garbage later
    fake = fake_polygon(bars, drop_at={5}, garbage_at={8})
    feed = _ws_feed(fake.url, until=ny("2024-03-05 10:10"))
    sets = list(feed)
    assert [s.end for s in sets] == [
        ny("2024-03-05 10:00") + pd.Timedelta(minutes=i) for i in range(1, 11)
    ]
    for i, s in enumerate(sets):
        assert (s.bars["A"].close, s.bars["B"].close, s.filled) == (100 + i, 200 + i, ())
    stats = feed.stats
    assert (stats.reconnects, stats.duplicates, stats.garbage) == (1, 1, 2)
    assert fake.subscriptions == ["AM.A,AM.B", "AM.A,AM.B"]
    _no_secret(stats.events, caplog)


def test_websocket_adapter_builds_5min_bars_and_waits_out_max_connections(
    fake_polygon, minute_bars, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETARENA_WS_API_KEY", SECRET)
    bars = [b for b in minute_bars(["A", "B"], "2024-03-05 10:00", 10)]
    fake = fake_polygon(bars, max_connections=True, drop_at={7})
    feed = _ws_feed(fake.url, "5min", until=ny("2024-03-05 10:10"))
    first, second = list(feed)
    assert (first.end, second.end) == (ny("2024-03-05 10:05"), ny("2024-03-05 10:10"))
    a = first.bars["A"]  # minutes ending 10:01..10:05: closes 100..104
    assert (a.open, a.high, a.low, a.close, a.volume) == (99.5, 105, 99, 104, 60)
    b = second.bars["B"]  # minutes ending 10:06..10:10: closes 205..209
    assert (b.open, b.high, b.low, b.close, b.volume) == (204.5, 210, 204, 209, 85)
    # the minute repeated after the drop is not added twice
    assert feed.stats.duplicates == 1 and feed.stats.rate_limited == 1


def test_websocket_adapter_refused_key_is_a_clear_error(
    fake_polygon, minute_bars, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETARENA_WS_API_KEY", "sk-WRONG-5678")
    fake = fake_polygon(minute_bars(["A", "B"], "2024-03-05 10:00", 2))
    with pytest.raises(ConfigError, match="refused the API key in MARKETARENA_WS_API_KEY") as err:
        list(_ws_feed(fake.url))
    assert "sk-WRONG-5678" not in "".join(traceback.format_exception(err.value))
    with pytest.raises(ConfigError, match="no '1d' bars"):
        StreamingWebSocketFeed(fake.url, ["A"], "1d")


# -------------------------------------------------------------------------- fallback
def test_fallback_switches_on_an_outage_and_never_redelivers(
    fake_polygon,
    fake_rest,
    minute_bars,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("MARKETARENA_WS_API_KEY", SECRET)
    monkeypatch.setenv("MARKETARENA_REST_API_KEY", SECRET)
    bars = minute_bars(["A", "B"], "2024-03-05 10:00", 6)
    # the socket dies after minute 3's A (minutes 0-2 delivered, minute 3 half received)
    primary = _ws_feed(fake_polygon(bars, die_at=7).url, backoff=Backoff(**FAST, attempts=3))
    secondary = _rest_feed(fake_rest(bars, window=10).url)
    until = ny("2024-03-05 10:06")
    primary.until = secondary.until = until
    feed = FallbackFeed([primary, secondary])
    sets = list(feed)
    assert [s.end for s in sets] == [
        ny("2024-03-05 10:00") + pd.Timedelta(minutes=i) for i in range(1, 7)
    ]
    for i, s in enumerate(sets):
        assert (s.bars["A"].close, s.bars["B"].close, s.filled) == (100 + i, 200 + i, ())
    assert primary.stats.sets_emitted == 3 and secondary.stats.sets_emitted == 3
    assert feed.stats.switches == 1 and feed.stats.sets_emitted == 6
    assert "switched to rest from after 2024-03-05T15:03:00+00:00" in feed.stats.events[0]
    assert "switched to rest" in caplog.text and SECRET not in caplog.text


def test_fallback_raises_when_every_feed_fails() -> None:
    data = load_dataset("sp500_ohlcv_30").select(["KO"]).slice("2010-06-01", "2010-06-08")
    server = ReplayServer(data).start()
    url = server.url
    server.stop()
    feeds = [ReplayFeed(url, ["KO"], backoff=Backoff(**FAST, attempts=2), name=n) for n in "xy"]
    with pytest.raises(FeedUnavailableError, match=r"every feed failed: x: .*; y: "):
        list(FallbackFeed(feeds))
    with pytest.raises(ConfigError, match="same universe and interval"):
        FallbackFeed([feeds[0], ReplayFeed(url, ["KO", "PEP"])])


# ------------------------------------------------------------------- backoff, close()
def test_backoff_grows_exponentially_up_to_its_bound_then_gives_up() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, maximum=3.0, attempts=6)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, None]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    with pytest.raises(ConfigError, match="factor >= 1"):
        Backoff(factor=0.5)


def test_close_from_another_thread_ends_a_running_iteration() -> None:
    data = load_dataset("sp500_ohlcv_30").select(["KO"]).slice("2010-06-01", "2010-06-30")
    with ReplayServer(data, speed=5) as server:
        feed = server.feed()
        threading.Timer(0.3, feed.close).start()
        started = time.monotonic()
        sets = list(feed)
        assert time.monotonic() - started < 1.0
    assert 1 <= len(sets) < data.n_periods


CTRL_C_SCRIPT = """
import os, signal, threading
from marketarena.envs.data import load_dataset
from marketarena.envs.feeds import ReplayServer
data = load_dataset("sp500_20").select(["AAPL", "XOM"]).slice("2022-11-01", "2022-12-28")
with ReplayServer(data, speed=2) as server:
    feed = server.feed()
    threading.Timer(1.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    try:
        for s in feed:
            print("set", s.date, flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_ctrl_c_while_a_feed_waits_closes_it_cleanly(tmp_path):
    """Ctrl-C during the wait for the next set: the wait is cancelled and the feed's
    generator closed before its loop, so nothing is printed but what the program prints (it
    was "RuntimeError: Event loop is closed" and "Unclosed client session")."""
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "interrupted"
    assert done.stdout.count("set ") >= 1
    assert done.stderr == "", done.stderr
