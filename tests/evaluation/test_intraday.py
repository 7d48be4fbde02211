"""Intraday bars end to end: a long CSV with bar-end timestamps loads as an intraday
MarketData (UTC ``datetime64[s]``), backtests and persists with timestamps, annualises with
252 x 78 for 5-minute bars, and a paper run over replayed 5-minute bars (a real
ReplayServer on 127.0.0.1, with pre-market and after-hours bars it must skip) equals the
backtest over the same bars bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from marketarena.cli import EXIT_OK, main
from marketarena.envs.data import MarketData, resolve_data
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.feeds import Bar, BarSet
from marketarena.envs.feeds.base import bar_sets_to_market_data
from marketarena.envs.macro import MacroVintages, macro_values
from marketarena.envs.news import NewsEvents, align_news
from marketarena.envs.regimes import detect_regimes
from marketarena.evaluation.saved_runs import paper, persisted
from marketarena.evaluation.saved_runs.store import RunStore

#: three regular XNYS sessions (before the 2024-03-10 DST change: 14:30-21:00 UTC)
SESSIONS = ("2024-03-04", "2024-03-05", "2024-03-06")
SYMBOLS = ("AAA", "BBB", "CCC")
START = "2024-03-04T21:00:00"  # the first session's last bar: the paper run's first mark
END = "2024-03-06T21:00:00"


def bar_ends(off_hours: bool) -> list[pd.Timestamp]:
    """5-minute bar ends (UTC) of :data:`SESSIONS`: 14:35..21:00, and with ``off_hours``
    pre-market (13:35..14:30) and after-hours (21:05..21:30) bars too."""
    ends = []
    for day in SESSIONS:
        first = pd.Timestamp(f"{day} 13:35" if off_hours else f"{day} 14:35", tz="UTC")
        last = pd.Timestamp(f"{day} 21:30" if off_hours else f"{day} 21:00", tz="UTC")
        ends += list(pd.date_range(first, last, freq="5min"))
    return ends


def panel(off_hours: bool) -> pd.DataFrame:
    """A long OHLCV frame, timestamps written in New York time with their offset; the
    in-session bars are the same with or without ``off_hours``."""
    rng = np.random.default_rng(7)
    every = bar_ends(True)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, (len(every), len(SYMBOLS))), axis=0))
    opens = close * np.exp(rng.normal(0, 0.001, close.shape))
    rows = []
    keep = set(bar_ends(off_hours))
    for i, end in enumerate(every):
        if end not in keep:
            continue
        for j, s in enumerate(SYMBOLS):
            o, c = opens[i, j], close[i, j]
            rows.append(
                {
                    "timestamp": end.tz_convert("America/New_York").isoformat(),
                    "symbol": s,
                    "open": o,
                    "high": max(o, c) * 1.001,
                    "low": min(o, c) * 0.999,
                    "close": c,
                    "volume": 1000.0 + i,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("intraday")
    clean, raw = folder / "bars_5min.csv", folder / "bars_5min_all_hours.csv"
    panel(False).to_csv(clean, index=False)
    panel(True).to_csv(raw, index=False)
    return clean, raw


def test_a_timestamp_csv_loads_as_intraday_bars_in_utc(files):
    data = resolve_data(str(files[0]))
    assert data.intraday and data.dates.dtype == np.dtype("datetime64[s]")
    assert data.n_periods == 3 * 78
    assert str(data.dates[0]) == "2024-03-04T14:35:00"  # 09:35-05:00: the first bar's end
    assert str(data.dates[-1]) == "2024-03-06T21:00:00"
    assert data.bar_interval == pd.Timedelta(minutes=5)
    assert data.periods_per_year == 252 * 78
    # a day alone selects whole sessions; a time (any zone) selects that bar
    assert data.slice("2024-03-05", "2024-03-05").n_periods == 78
    assert data.index_of("2024-03-05T10:00-05:00") == 78 + 5
    daily = resolve_data("sp500_20")  # daily data is unchanged
    assert not daily.intraday and daily.dates.dtype == np.dtype("datetime64[D]")
    assert daily.periods_per_year == 252 and daily.bar_interval is None


def test_intraday_bar_sets_make_the_same_market_data(files):
    data = resolve_data(str(files[0]))
    sets = []
    for i, d in enumerate(data.dates):
        end = pd.Timestamp(d).tz_localize("UTC")
        bars = {
            s: Bar(
                s,
                end,
                "5min",
                float(data.close[i, j]),
                float(data.open[i, j]),
                float(data.high[i, j]),
                float(data.low[i, j]),
                float(data.volume[i, j]),
            )
            for j, s in enumerate(data.symbols)
        }
        sets.append(BarSet(end, "5min", str(end.tz_convert("America/New_York").date()), bars))
    again = bar_sets_to_market_data(sets, name=data.name)
    assert isinstance(again, MarketData) and again.content_hash() == data.content_hash()
    with pytest.raises(ConfigError, match="several intervals"):
        bar_sets_to_market_data([sets[0], BarSet(sets[1].end, "1d", "2024-03-04", sets[1].bars)])


def test_a_paper_run_over_replayed_5min_bars_equals_the_backtest(tmp_path, files):
    """The replay serves every bar, pre-market and after hours included; the paper run
    skips those (counted off-session) and records exactly the backtest's NAVs."""
    clean, raw = files
    store = RunStore(tmp_path / "runs.sqlite")
    options = {"risk": {"max_weight": 0.5}, "rules": {"commission_bps": 7.5}, "window": 10}
    backtest = persisted.start_backtest(store, "bt", "random:3", str(clean), START, END, **options)
    with (
        paper.start_paper(
            store, "pp", "random:3", str(clean), start=START, interval="5min", **options
        ) as session,
        paper.open_feed(f"replay:{raw}", session) as feed,
    ):
        counts = paper.run_paper(session, feed)
    assert counts.recorded == 2 * 78 and counts.rejected == 0 and counts.stale == 0
    # pre-market bars of sessions 2 and 3 (13:35..14:30: 12 each) and after hours of all
    # three after START (21:05..21:30: 6 each) came and were skipped
    assert counts.off_session == 2 * 12 + 3 * 6
    run = persisted.load_result(store, "pp")
    assert run.dates.dtype == np.dtype("datetime64[s]")
    assert str(run.dates[0]) == START and str(run.dates[-1]) == END
    assert list(run.dates) == list(backtest.dates)
    assert np.array_equal(run.nav, backtest.nav)
    assert np.array_equal(run.weights, backtest.weights)
    assert np.array_equal(run.turnover, backtest.turnover)
    assert np.array_equal(run.costs, backtest.costs)
    pd.testing.assert_frame_equal(run.fills, backtest.fills)
    assert len(run.fills) > 0 and run.fills["date"].dt.minute.nunique() > 1
    assert run.metrics() == backtest.metrics()
    assert run.metrics() == backtest.metrics(periods_per_year=252 * 78)
    assert run.metrics() != backtest.metrics(periods_per_year=252)
    assert store.run("pp").spec["end"] == END
    assert persisted.run_report(run).periods_per_year == 252 * 78  # the table annualises so
    board = persisted.leaderboard(store, ["pp", "bt"])
    assert board.periods_per_year == 252 * 78
    first, second = (row.metrics for row in board.rows())
    assert first == second


def test_marketarena_paper_interval_5min(tmp_path, files):
    clean, raw = files
    console = Console(record=True, width=250)
    store = str(tmp_path / "runs.sqlite")
    argv = ["paper", "--agent", "equal_weight", "--data", str(clean), "--start", START]
    argv += ["--interval", "5min", "--feed", f"replay:{raw}", "--speed", "100000"]
    argv += ["--window", "10", "--store", store, "--run", "p5"]
    code = main(argv, console=console)
    text = console.export_text()
    assert code == EXIT_OK, text
    assert "2024-03-06T21:00:00" in text
    days = RunStore(store).days("p5")
    assert len(days) == 2 * 78 and days["date"].iloc[0] == "2024-03-05T14:35:00"
    code = main([*argv[:-2], "--interval", "15min", "--run", "p15"], console=console)
    assert code != EXIT_OK
    assert "holds 5min bars" in console.export_text()


def test_news_macro_and_regimes_refuse_intraday_data(files):
    data = resolve_data(str(files[0]))
    events = NewsEvents(
        "n.csv",
        np.array([], dtype="datetime64[ns]"),
        (),
        (),
        (),
        np.array([]),
        (),
        np.array([]),
        "",
    )
    with pytest.raises(DataError, match=r"^news items align on trading days; .* intraday bars"):
        align_news(data, events)
    with pytest.raises(DataError, match=r"^macro series align on trading days"):
        macro_values(data, MacroVintages("m.csv", {}))
    with pytest.raises(DataError, match=r"^regimes align on trading days"):
        detect_regimes("trend", data)


def test_an_intraday_paper_run_stopped_and_resumed_equals_the_backtest(tmp_path, files):
    clean, raw = files
    store = RunStore(tmp_path / "runs.sqlite")
    options = {"window": 10}
    backtest = persisted.start_backtest(store, "bt", "random:5", str(clean), START, END, **options)
    with (
        paper.start_paper(
            store, "pp", "random:5", str(clean), start=START, interval="5min", **options
        ) as session,
        paper.open_feed(f"replay:{raw}", session) as feed,
    ):
        paper.run_paper(session, feed, bars=50)  # stops inside the second session
    assert store.run("pp").spec["end"] == "2024-03-05T18:40:00"
    with (
        paper.resume_paper(store, "pp") as session,
        paper.open_feed(f"replay:{raw}", session) as feed,
    ):
        counts = paper.run_paper(session, feed)
    assert counts.recorded == 2 * 78 - 50 and counts.stale == 0
    run = persisted.load_result(store, "pp")
    assert list(run.dates) == list(backtest.dates)
    assert np.array_equal(run.nav, backtest.nav)
    pd.testing.assert_frame_equal(run.fills, backtest.fills)
    positions = persisted.load_positions(store, "pp")
    assert " a bar (" in positions.summary() and " bars over 3 symbols" in positions.summary()
    summary = persisted.turnover_summary(positions.days)
    assert summary["annual_turnover"] == pytest.approx(summary["mean_daily_turnover"] * 252 * 78)
