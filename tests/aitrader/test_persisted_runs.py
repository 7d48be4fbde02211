"""Persisted backtests: kill and --resume, --continue with new data, position history and
the leaderboard of stored runs."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from marketarena.cli import EXIT_ERROR, EXIT_OK, main
from marketarena.envs.settings import EnvSettings, setting_names
from marketarena.evaluation import metrics
from marketarena.evaluation.saved_runs.persisted import (
    Positions,
    continue_backtest,
    holding_periods,
    load_result,
    mean_holding_period,
    resume_backtest,
    start_backtest,
    turnover_summary,
)
from marketarena.evaluation.saved_runs.store import RunInfo, RunStore

AITRADER = {"preset": "aitrader"}


def run_cli(argv: list[str]) -> tuple[int, str]:
    console = Console(record=True, width=300)
    code = main(argv, console=console)
    return code, console.export_text()


def assert_same_run(store: RunStore, run_a: str, other: RunStore, run_b: str) -> None:
    """Every stored day (NAV, cash, turnover, costs, shares, weights) and every fill equal,
    bit for bit."""
    a, b = store.days(run_a), other.days(run_b)
    assert len(a) and a["step"].tolist() == list(range(1, len(a) + 1))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    np.testing.assert_array_equal(a.attrs["weights"], b.attrs["weights"])
    pd.testing.assert_frame_equal(store.fills(run_a), other.fills(run_b), check_exact=True)
    ra, rb = load_result(store, run_a), load_result(other, run_b)
    np.testing.assert_array_equal(ra.dates, rb.dates)
    np.testing.assert_array_equal(ra.nav, rb.nav)


@pytest.fixture
def store(store_url):
    """A new run store, on SQLite and on PostgreSQL (the root conftest's ``store_url``)."""
    s = RunStore(store_url)
    yield s
    s.close()


# ------------------------------------------------------------------ kill -9 and --resume
AGENT, START, END, SEED = (
    "random",
    "2010-01-04",
    "2012-12-31",
    7,
)  # 754 sessions (753 recorded days), 20 stocks


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, through the Python API."""
    s = RunStore(tmp_path_factory.mktemp("reference") / "runs.sqlite")
    start_backtest(s, "ref", AGENT, "sp500_20", START, END, seed=SEED)
    yield s
    s.close()


def marketarena() -> list[str]:
    script = Path(sys.executable).with_name("marketarena")
    if script.exists():
        return [str(script)]
    code = "import sys; from marketarena.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def days_recorded(path: Path, run_id: str) -> int:
    if not path.exists():
        return 0
    try:
        with closing(sqlite3.connect(path, timeout=0.1)) as db:
            row = db.execute("SELECT COUNT(*) FROM days WHERE run_id = ?", (run_id,)).fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return int(row[0])


@pytest.mark.slow
def test_a_killed_cli_backtest_resumes_to_the_uninterrupted_result(tmp_path, reference):
    path = tmp_path / "runs.sqlite"
    total = reference.run("ref").days
    assert total > 700
    stderr = (tmp_path / "stderr.txt").open("w+")
    proc = subprocess.Popen(
        [
            *marketarena(),
            "backtest",
            "--agent",
            AGENT,
            "--data",
            "sp500_20",
            "--start",
            START,
            "--end",
            END,
            "--seed",
            str(SEED),
            "--run",
            "crash",
            "--store",
            str(path),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        deadline = time.monotonic() + 120
        while days_recorded(path, "crash") < 5:
            if proc.poll() is not None:
                stderr.seek(0)
                pytest.fail(
                    f"the backtest ended (exit {proc.returncode}) before the kill: {stderr.read()}"
                )
            assert time.monotonic() < deadline, "the backtest recorded no days in 120 s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()

    with closing(RunStore(path)) as crashed:
        info = crashed.run("crash")
        assert info.status == "running"
        assert 5 <= info.days < total, "the kill did not land mid-run"
        # the days it finished are the reference's, bit for bit
        done = reference.days("ref").iloc[: info.days]
        pd.testing.assert_frame_equal(crashed.days("crash"), done, check_exact=True)
    code, text = run_cli(["backtest", "--resume", "crash", "--store", str(path)])
    assert code == EXIT_OK, text
    assert f"run crash stored in {path} ({total} days)" in text
    with closing(RunStore(path)) as resumed:
        assert resumed.run("crash").status == "finished"
        assert_same_run(resumed, "crash", reference, "ref")


# ----------------------------------------------------------- a longer AI-Trader-style market
@pytest.fixture(scope="module")
def market(walk, tmp_path_factory):
    """60 sessions of 3 symbols as daily_prices_<SYM>.json folders: the first 40 (v1), all 60
    (v2), and all 60 with one close of a v1 date changed by a cent (v2_changed)."""
    make, write = walk
    root = tmp_path_factory.mktemp("walk")
    m = make(60, seed=1)
    changed = {"dates": m["dates"], "bars": {k: list(v) for k, v in m["bars"].items()}}
    o, h, lo, c, v = changed["bars"]["BBB"][20]
    changed["bars"]["BBB"][20] = (o, max(h, round(c + 0.01, 2)), lo, round(c + 0.01, 2), v)
    return {
        "dates": m["dates"],
        "v1": str(write(root / "v1", m, 40)),
        "v2": str(write(root / "v2", m, 60)),
        "v2_changed": str(write(root / "v2_changed", changed, 60)),
    }


def start(store, run_id, market, data="v1", end=39, progress=None, agent="random"):
    """A run from market date 5 (the first with a 5-session window) to date ``end``."""
    d = market["dates"]
    return start_backtest(
        store,
        run_id,
        agent,
        market[data],
        d[5],
        d[end],
        seed=3,
        rules=AITRADER,
        window=5,
        progress=progress,
    )


@pytest.mark.parametrize("stop_after", [1, 17, 34])
def test_an_interrupted_run_resumes_from_its_last_day(store, market, stop_after):
    # decisions after the closes of dates 5..38 -> 34 recorded days, dates 6..39;
    # stop_after=34: cut after the last day was recorded, before the run was marked finished
    d = market["dates"]
    seen: list[str] = []

    def ctrl_c(date: str, fraction: float) -> None:
        seen.append(date)
        if len(seen) == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start(store, "cut", market, progress=ctrl_c)
    info = store.run("cut")
    assert (info.status, info.days, info.last_date) == ("running", stop_after, d[5 + stop_after])
    resumed: list[str] = []
    result = resume_backtest(store, "cut", progress=lambda date, f: resumed.append(date))
    assert resumed == d[6 + stop_after : 40]  # only the days it had not finished
    assert store.run("cut").status == "finished"
    start(store, "whole", market)
    assert_same_run(store, "cut", store, "whole")
    np.testing.assert_array_equal(result.nav, load_result(store, "whole").nav)
    # a finished run resumes to itself, computing nothing
    again: list[str] = []
    resume_backtest(store, "cut", progress=lambda date, f: again.append(date))
    assert again == []


def test_continue_extends_a_run_without_recomputing_its_days(store, market):
    d = market["dates"]
    start(store, "short", market)
    before, fills_before = store.days("short"), store.fills("short")
    assert before["date"].tolist() == d[6:40]
    computed: list[str] = []
    result = continue_backtest(
        store, "short", d[59], data=market["v2"], progress=lambda date, f: computed.append(date)
    )
    assert computed == d[40:60]  # the 20 new sessions only
    after = store.days("short")
    assert after["date"].tolist() == d[6:60]
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before, check_exact=True)
    pd.testing.assert_frame_equal(store.fills("short", end=d[39]), fills_before, check_exact=True)
    info = store.run("short")
    assert (info.status, info.spec["end"], info.spec["data"]) == ("finished", d[59], market["v2"])
    # and the whole is what one run over the longer range gives
    start(store, "long", market, data="v2", end=59)
    assert_same_run(store, "short", store, "long")
    np.testing.assert_array_equal(result.nav, load_result(store, "long").nav)


def test_the_spec_stores_the_env_settings_and_older_specs_still_continue(store, market):
    d = market["dates"]
    start(store, "new", market)
    spec = store.run("new").spec
    settings = EnvSettings.from_dict({k: spec[k] for k in setting_names()})
    assert settings == EnvSettings(
        start=d[5], end=d[39], window=5, rules=AITRADER, episode_length=None, random_start=False
    )
    # a run stored before the spec held every setting: rules, window and features only
    start(store, "old", market)
    legacy = {k: v for k, v in spec.items() if k not in setting_names()}
    legacy.update(start=d[5], end=d[39], rules=AITRADER, window=5, features=["log_return"])
    store.update_spec("old", legacy, "finished")
    for run in ("new", "old"):
        continue_backtest(store, run, d[59], data=market["v2"])
    assert_same_run(store, "old", store, "new")


def test_continue_refuses_ranges_that_do_not_extend_the_run(store, market):
    d = market["dates"]
    start(store, "short", market)
    rows = store.days("short")
    base = ["backtest", "--store", store.connect_url, "--continue", "short", "--data", market["v2"]]
    for end in (d[39], d[30], d[2]):  # the run's own end, inside it, before it
        code, text = run_cli([*base, "--end", end])
        assert code == EXIT_ERROR
        assert (
            f"continue must extend run 'short' past its end {d[39]}; {end} does not "
            "(completed days are never recomputed or overwritten)"
        ) in text
    code, text = run_cli(base)
    assert code == EXIT_ERROR and "--continue needs --end NEW_DATE" in text
    # the run's own data has nothing after its end
    with pytest.raises(ValueError, match=rf"v1 ends on {d[39]}: no new data after {d[39]}"):
        continue_backtest(store, "short", d[59])
    pd.testing.assert_frame_equal(store.days("short"), rows, check_exact=True)
    # a later end on the newer data is what --continue is for: 34 + 20 days
    code, text = run_cli([*base, "--end", d[59]])
    assert code == EXIT_OK, text
    assert f"run short stored in {store.path} (54 days)" in text
    assert store.run("short").last_date == d[59]


def test_continue_refuses_data_that_changed_on_completed_days(store, market):
    d = market["dates"]
    start(store, "short", market)
    rows, spec = store.days("short"), store.run("short").spec
    code, text = run_cli(
        [
            "backtest",
            "--store",
            store.connect_url,
            "--continue",
            "short",
            "--end",
            d[59],
            "--data",
            market["v2_changed"],
        ]
    )
    assert code == EXIT_ERROR
    assert (
        f"v2_changed differs from the data run 'short' was computed on, up to {d[39]}: "
        "continuing would mix histories"
    ) in text
    info = store.run("short")
    assert (info.status, info.spec) == ("finished", spec)
    pd.testing.assert_frame_equal(store.days("short"), rows, check_exact=True)


def test_continue_and_resume_need_the_right_state(store, market):
    d = market["dates"]

    def stop(date: str, fraction: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start(store, "cut", market, progress=stop)
    with pytest.raises(ValueError, match="run 'cut' did not finish: --resume it before"):
        continue_backtest(store, "cut", d[59], data=market["v2"])
    with pytest.raises(ValueError, match=r"run 'cut' already exists in .*: --resume it"):
        start(store, "cut", market)
    code, text = run_cli(["backtest", "--store", store.connect_url, "--resume", "nope"])
    assert code == EXIT_ERROR and "no run 'nope' in" in text and "runs: ['cut']" in text
    code, text = run_cli(
        ["backtest", "--store", store.connect_url, "--resume", "cut", "--agent", "random"]
    )
    assert code == EXIT_ERROR
    assert "give one of --agent (a new run), --resume RUN or --continue RUN" in text


# ------------------------------------------------------ positions, turnover, leaderboard
# Two runs on the 4 full sessions of the conftest market under the aitrader rules, window 1:
# the first decision is after the 10-02 close (log returns need one earlier close).
#
# Day 1, both runs: 1/3 of 10000 in each, sized at the 10-02 closes (103, 51.5, 20.75):
#   AAA 3333.33 / 103 = 32.36 -> 32;  BBB / 51.5 = 64.72 -> 64;  CCC / 20.75 = 160.64 -> 160
#   at the 10-03 opens (104, 52, 21): 3328 + 3328 + 3360 = 10016 > 10000, so every buy
#   shrinks by 10000 / 10016: 31.95 -> 31, 63.90 -> 63, 159.74 -> 159
#   paid 31 * 104 + 63 * 52 + 159 * 21 = 3224 + 3276 + 3339 = 9839; cash 161; turnover 0.9839
#   NAV at the 10-03 closes (105, 51, 21.25): 3255 + 3213 + 3378.75 + 161 = 10007.75
# Day 2, buy_and_hold holds: NAV at the 10-06 closes (105.5, 49, 21.75):
#   3270.5 + 3087 + 3458.25 + 161 = 9976.75
# Day 2, equal_weight:1 rebalances to 10007.75 / 3 = 3335.92 each at the 10-03 closes:
#   AAA 31.77 - 31 = +0.77 -> 0;  BBB 65.41 - 63 = +2.41 -> +2;  CCC 156.98 - 159 = -2.02 -> -2
#   at the 10-06 opens: sell 2 CCC @ 21.5 = 43 (cash 204), buy 2 BBB @ 50 = 100 (cash 104)
#   turnover 143 / 10007.75; NAV 31 * 105.5 + 65 * 49 + 157 * 21.75 + 104
#   = 3270.5 + 3185 + 3414.75 + 104 = 9974.25
BH_NAV = [10_000.0, 10_007.75, 9_976.75]
EW_NAV = [10_000.0, 10_007.75, 9_974.25]
EW_TURNOVER = [9839 / 10_000, 143 / 10_007.75]


def tiny_backtest(store, folder, agent: str, run: str, end: str) -> tuple[int, str]:
    """``marketarena backtest`` from 2025-10-01 to ``end``, window 1, the aitrader rules."""
    return run_cli(
        [
            "backtest",
            "--agent",
            agent,
            "--run",
            run,
            "--data",
            str(folder),
            "--start",
            "2025-10-01",
            "--end",
            end,
            "--window",
            "1",
            "--rule",
            "preset=aitrader",
            "--store",
            store.connect_url,
        ]
    )


@pytest.fixture
def two_runs(ai, store):
    folder = ai.daily_folder(last_open=False)
    for agent, run in (("buy_and_hold", "bh"), ("equal_weight:1", "ew")):
        code, text = tiny_backtest(store, folder, agent, run, "2025-10-06")
        assert code == EXIT_OK, text
    return store


def test_stored_runs_hold_the_hand_computed_days(two_runs):
    store = two_runs
    for run, nav in (("bh", BH_NAV), ("ew", EW_NAV)):
        result = load_result(store, run)
        assert [str(d) for d in result.dates] == ["2025-10-02", "2025-10-03", "2025-10-06"]
        np.testing.assert_allclose(result.nav, nav, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(result.costs, [0.0, 0.0])
    ew = store.days("ew")
    assert ew[["AAA", "BBB", "CCC", "cash"]].values.tolist() == [
        [31, 63, 159, 161],
        [31, 65, 157, 104],
    ]
    np.testing.assert_allclose(ew["turnover"], EW_TURNOVER, rtol=0, atol=1e-12)


def test_positions_and_fills_by_run_date_range_and_symbol(two_runs):
    store = two_runs
    fills = store.fills("ew")
    assert fills.values.tolist() == [
        ["2025-10-03", "AAA", "buy", 31.0, 104.0, 0.0],
        ["2025-10-03", "BBB", "buy", 63.0, 52.0, 0.0],
        ["2025-10-03", "CCC", "buy", 159.0, 21.0, 0.0],
        ["2025-10-06", "BBB", "buy", 2.0, 50.0, 0.0],
        ["2025-10-06", "CCC", "sell", 2.0, 21.5, 0.0],
    ]
    assert store.fills("ew", start="2025-10-04").values.tolist() == fills.values[3:].tolist()
    assert store.fills("ew", end="2025-10-03").values.tolist() == fills.values[:3].tolist()
    assert store.fills("ew", symbol="CCC")["side"].tolist() == ["buy", "sell"]
    assert store.fills("bh", start="2025-10-04").empty  # buy and hold: one day of trades
    days = store.days("ew", start="2025-10-06", end="2025-10-06")
    assert days[["date", "AAA", "BBB", "CCC", "cash"]].values.tolist() == [
        ["2025-10-06", 31.0, 65.0, 157.0, 104.0]
    ]
    none = store.days("ew", start="2025-11-01")  # after the run: no rows, same columns
    assert none.empty and list(none.columns) == list(days.columns)
    assert none.attrs["weights"].shape == (0, 4)


def test_turnover_and_holding_periods_of_a_stored_run(two_runs):
    days = two_runs.days("ew")
    summary = turnover_summary(days)
    mean = (EW_TURNOVER[0] + EW_TURNOVER[1]) / 2  # (0.9839 + 0.0142889) / 2 = 0.4990945
    assert summary["mean_daily_turnover"] == pytest.approx(mean, abs=1e-12)
    assert summary["annual_turnover"] == pytest.approx(mean * 252, abs=1e-9)
    assert summary["total_costs"] == 0.0
    periods = holding_periods(days, ("AAA", "BBB", "CCC"))
    assert periods.values.tolist() == [["AAA", 1, 2.0, 2], ["BBB", 1, 2.0, 2], ["CCC", 1, 2.0, 2]]


def test_holding_periods_count_separate_spells():
    # AAA held on days 2-3 and 5-7: 2 spells of 2 and 3 days; BBB days 1, 3, 5: 3 spells of 1;
    # CCC never held: no row
    days = pd.DataFrame(
        {
            "AAA": [0, 5, 5, 0, 3, 3, 3],
            "BBB": [1, 0, 1, 0, 1, 0, 0],
            "CCC": [0.0] * 7,
            "turnover": [1.0, 0.0, 0.5, 0.0, 0.25, 0.0, 0.0],
            "costs": [1.0, 0, 0.5, 0, 0.25, 0, 0],
        }
    )
    periods = holding_periods(days, ("AAA", "BBB", "CCC"))
    assert periods.values.tolist() == [["AAA", 2, 2.5, 5], ["BBB", 3, 1.0, 3]]
    # mean turnover 1.75 / 7 = 0.25 a day, 63 a year (252 sessions); costs 1.75
    assert turnover_summary(days) == {
        "mean_daily_turnover": 0.25,
        "annual_turnover": 63.0,
        "total_costs": 1.75,
    }


def test_one_holding_period_definition_seen_per_symbol_and_as_the_metric():
    # by hand: AAA held on days 2-3 and 5-7 (spells of 2 and 3 days), BBB on days 1, 3 and 5
    # (three of 1), CCC short on days 1-4 (one of 4): 12 days held in 6 spells, 2.0 on average
    shares = {
        "AAA": [0, 5, 5, 0, 3, 3, 3],
        "BBB": [1, 0, 1, 0, 1, 0, 0],
        "CCC": [-2, -2, -1, -1, 0, 0, 0],
    }
    symbols = tuple(shares)
    days = pd.DataFrame({**shares, "turnover": [0.0] * 7, "costs": [0.0] * 7, "cash": 1.0})
    spells = metrics.holding_spells(days[list(symbols)].to_numpy(dtype=float))
    assert [s.tolist() for s in spells] == [[2, 3], [1, 1, 1], [4]]
    # the positions view: a row per symbol, and their spell-weighted mean
    periods = holding_periods(days, symbols)
    assert periods.values.tolist() == [["AAA", 2, 2.5, 5], ["BBB", 3, 1.0, 3], ["CCC", 1, 4.0, 4]]
    assert mean_holding_period(periods) == 2.0
    # the metric's view, on weights with the same positions (1e-12 counts as not held)
    held = days[list(symbols)].to_numpy(dtype=float)
    weights = np.where(held != 0, 0.3 * np.sign(held), 1e-12)
    assert metrics.average_holding_period(weights) == 2.0
    positions = Positions(RunInfo("r", {}, symbols, "finished", None, 7), days, pd.DataFrame())
    assert "mean holding period 2.0 days over 3 symbols" in positions.summary()
    assert np.isnan(mean_holding_period(holding_periods(days.iloc[:0], symbols)))  # none held


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every table printed, as lists of stripped cells."""
    return [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def test_cli_positions_prints_holdings_fills_and_turnover(two_runs, tmp_path):
    store = two_runs.connect_url
    code, text = run_cli(
        ["positions", "--run", "ew", "--store", store, "--output", str(tmp_path / "pos")]
    )
    assert code == EXIT_OK, text
    assert "holdings of ew on 2025-10-06" in text and "fills (5)" in text
    # weights at the 10-06 closes over NAV 9974.25: AAA 3270.5 -> 32.8%, BBB 3185 -> 31.9%,
    # CCC 3414.75 -> 34.2%, cash 104 -> 1.0%
    assert table_rows(text) == [
        ["AAA", "31", "32.8%"],
        ["BBB", "65", "31.9%"],
        ["CCC", "157", "34.2%"],
        ["CASH", "104.00", "1.0%"],
        ["2025-10-03", "AAA", "buy", "31", "104.00", "0.00"],
        ["2025-10-03", "BBB", "buy", "63", "52.00", "0.00"],
        ["2025-10-03", "CCC", "buy", "159", "21.00", "0.00"],
        ["2025-10-06", "BBB", "buy", "2", "50.00", "0.00"],
        ["2025-10-06", "CCC", "sell", "2", "21.50", "0.00"],
    ]
    # mean (0.9839 + 0.0142889) / 2 = 0.4991 a day, x 252 = 125.77 a year; each symbol held
    # one spell of 2 days
    assert (
        "turnover: 0.499 a day (125.8 a year), costs 0.00; mean holding period 2.0 days "
        "over 3 symbols"
    ) in text
    holdings = pd.read_csv(tmp_path / "pos" / "holdings.csv")
    assert holdings[["date", "AAA", "BBB", "CCC", "cash"]].values.tolist() == [
        ["2025-10-03", 31.0, 63.0, 159.0, 161.0],
        ["2025-10-06", 31.0, 65.0, 157.0, 104.0],
    ]
    assert len(pd.read_csv(tmp_path / "pos" / "fills.csv")) == 5
    periods = pd.read_csv(tmp_path / "pos" / "holding_periods.csv")
    assert periods["mean_days_held"].tolist() == [2.0, 2.0, 2.0]
    # one day and one symbol
    code, text = run_cli(
        [
            "positions",
            "--run",
            "ew",
            "--store",
            store,
            "--start",
            "2025-10-06",
            "--end",
            "2025-10-06",
            "--symbol",
            "CCC",
        ]
    )
    assert code == EXIT_OK
    assert "fills (1)" in text
    assert table_rows(text) == [
        ["CCC", "157", "34.2%"],
        ["CASH", "104.00", "1.0%"],
        ["2025-10-06", "CCC", "sell", "2", "21.50", "0.00"],
    ]
    # holding periods of that symbol only: CCC held on the one day in range
    assert "mean holding period 1.0 days over 1 symbol\n" in text
    # by agent: every run of equal_weight:1 (here the one, "ew"); an unknown agent is named
    code, text = run_cli(["positions", "--agent", "equal_weight:1", "--store", store])
    assert code == EXIT_OK and "holdings of ew on 2025-10-06" in text and "bh" not in text
    code, text = run_cli(["positions", "--agent", "random", "--store", store])
    assert code != EXIT_OK
    assert "no run of agent 'random'" in text and "buy_and_hold" in text
    # a range after the run: said, not an empty table
    code, text = run_cli(["positions", "--run", "ew", "--store", store, "--start", "2025-11-01"])
    assert code == EXIT_ERROR
    assert text.strip() == (
        "run ew has no completed day from 2025-11-01 to its end "
        "(its last completed day: 2025-10-06)"
    )


def test_cli_leaderboard_ranks_runs_over_the_same_dates(two_runs):
    store = two_runs
    code, text = run_cli(["leaderboard", "--store", store.connect_url])
    assert code == EXIT_OK, text
    assert "leaderboard: 2025-10-02 to 2025-10-06" in text
    # best final NAV first; return (NAV / 10000 - 1): bh -0.2325%, ew -0.2575%
    assert [row[:2] for row in table_rows(text)] == [["bh", "9,976.75"], ["ew", "9,974.25"]]
    assert table_rows(text)[0][2].startswith("-0.23% ")


def test_cli_leaderboard_refuses_runs_over_different_dates(two_runs, ai):
    store = two_runs
    folder = str(ai.root / "daily")  # the folder the two runs used
    code, text = tiny_backtest(store, folder, "buy_and_hold", "short", "2025-10-03")
    assert code == EXIT_OK, text
    code, text = run_cli(["leaderboard", "--store", store.connect_url])
    assert code == EXIT_ERROR
    assert "a leaderboard compares runs over the same dates and data; these differ:" in text
    assert "short 2025-10-02..2025-10-03" in text
    code, text = run_cli(["leaderboard", "bh", "ew", "--store", store.connect_url])
    assert code == EXIT_OK
