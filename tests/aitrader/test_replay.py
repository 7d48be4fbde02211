"""Replaying AI-Trader position.jsonl logs through the simulator, and `marketarena replay`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from marketarena.cli import EXIT_ERROR, EXIT_OK, main
from marketarena.envs.aitrader import load_aitrader
from marketarena.envs.data import DataWarning
from marketarena.evaluation.saved_runs.replay import (
    Difference,
    TradeLogError,
    differences_frame,
    read_trade_log,
    replay,
)

DATES = ["2025-10-01", "2025-10-02", "2025-10-03", "2025-10-06", "2025-10-07"]


@pytest.fixture
def market(ai):
    with pytest.warns(DataWarning, match="2025-10-07 has opens only"):
        return load_aitrader(ai.merged())


def alpha(e):
    """Two buys on one day, a day without trades, a sell and a buy on one day, a last sell on
    the open-only date. Cash after each action, at the opens of its date:
      10-02 buy AAA 20 @ 102 = 2040 -> 7960; buy CCC 100 @ 20.5 = 2050 -> 5910
            (written with float noise, as AI-Trader's are: within the cash tolerance)
      10-06 sell AAA 5 @ 106 = 530 -> 6440;  buy BBB 30 @ 50 = 1500 -> 4940
      10-07 sell CCC 100 @ 22 = 2200 -> 7140
    """
    return [
        e("2025-10-01", 0, None, cash=10_000.0),
        e("2025-10-02", 1, "buy", "AAA", 20, cash=7960.0, AAA=20),
        e("2025-10-02", 2, "buy", "CCC", 100, cash=5910.000000000001, AAA=20, CCC=100),
        e("2025-10-03", 3, "no_trade", cash=5910.0, AAA=20, CCC=100),
        e("2025-10-06", 4, "sell", "AAA", 5, cash=6440.0, AAA=15, CCC=100),
        e("2025-10-06", 5, "buy", "BBB", 30, cash=4940.0, AAA=15, BBB=30, CCC=100),
        e("2025-10-07", 6, "sell", "CCC", 100, cash=7140.0, AAA=15, BBB=30),
    ]


# NAV = shares x close + cash, the open-only 10-07 marked at its opens
ALPHA_NAV = [
    10_000.0,
    20 * 103 + 100 * 20.75 + 5910,  # 2060 + 2075 + 5910 = 10045
    20 * 105 + 100 * 21.25 + 5910,  # 2100 + 2125 + 5910 = 10135
    15 * 105.5 + 30 * 49 + 100 * 21.75 + 4940,  # 1582.5 + 1470 + 2175 + 4940 = 10167.5
    15 * 107 + 30 * 48.5 + 7140,  # 1605 + 1455 + 7140 = 10200
]


def beta(e):
    """Buy BBB 100 @ 51 (cash 4900), hold, sell 100 @ 48.5 on 10-07 (cash 9750)."""
    return [
        e("2025-10-01", 0, None, cash=10_000.0),
        e("2025-10-02", 1, "buy", "BBB", 100, cash=4900.0, BBB=100),
        e("2025-10-03", 2, "no_trade", cash=4900.0, BBB=100),
        e("2025-10-06", 3, "no_trade", cash=4900.0, BBB=100),
        e("2025-10-07", 4, "sell", "BBB", 100, cash=9750.0),
    ]


# 100 x (51.5, 51, 49) + 4900, then all cash
BETA_NAV = [10_000.0, 10_050.0, 10_000.0, 9_800.0, 9_750.0]


def test_replay_reproduces_the_logged_portfolio_day_by_day(ai, make_entry, market):
    result = replay(ai.log("alpha.jsonl", alpha(make_entry)), market)
    assert result.name == "alpha"
    assert result.differences == [] and result.days_with_differences == []
    assert result.actions == 5
    r = result.result
    assert [str(d) for d in r.dates] == DATES
    assert r.nav[0] == 10_000.0
    np.testing.assert_allclose(r.nav, ALPHA_NAV, rtol=0, atol=1e-9)
    assert ALPHA_NAV[-1] == 10_200.0
    assert r.metrics()["total_return"] == pytest.approx(0.02, abs=1e-12)
    # traded notional at the opens over the NAV of the close before
    np.testing.assert_allclose(
        r.turnover, [4090 / 10_000, 0.0, 2030 / 10_135, 2200 / 10_167.5], rtol=0, atol=1e-12
    )
    np.testing.assert_array_equal(r.costs, np.zeros(4))
    fills = r.fills.assign(date=r.fills["date"].dt.strftime("%Y-%m-%d"))
    assert fills[["date", "symbol", "side", "shares", "price"]].values.tolist() == [
        ["2025-10-02", "AAA", "buy", 20.0, 102.0],
        ["2025-10-02", "CCC", "buy", 100.0, 20.5],
        ["2025-10-06", "AAA", "sell", 5.0, 106.0],
        ["2025-10-06", "BBB", "buy", 30.0, 50.0],
        ["2025-10-07", "CCC", "sell", 100.0, 22.0],
    ]
    # the log's starting cash is the replay's
    assert r.settings["rules"]["initial_cash"] == 10_000.0
    assert r.settings["rules"]["lot_size"] == 1


def test_the_starting_cash_comes_from_the_log(ai, make_entry, market):
    lines = [
        make_entry("2025-10-01", 0, None, cash=5_000.0),
        make_entry("2025-10-02", 1, "buy", "BBB", 10, cash=4490.0, BBB=10),
    ]
    r = replay(ai.log("small.jsonl", lines), market)
    # 10 x 51 = 510 -> cash 4490; NAV 10 x 51.5 + 4490 = 5005
    assert r.differences == []
    np.testing.assert_allclose(r.result.nav, [5_000.0, 5_005.0], rtol=0, atol=1e-9)


def test_bookkeeping_slips_are_reported_on_exactly_their_days(ai, make_entry, market):
    e = make_entry
    lines = [
        e("2025-10-01", 0, None, cash=10_000.0),
        e("2025-10-02", 1, "buy", "AAA", 20, cash=7960.0, AAA=20),
        # selling shares that are not held: the simulator fills nothing
        e("2025-10-03", 2, "sell", "BBB", 10, cash=7960.0, AAA=20),
        # the log's cash is 10 short of what the trades leave
        e("2025-10-06", 3, "no_trade", cash=7950.0, AAA=20),
        e("2025-10-07", 4, "no_trade", cash=7960.0, AAA=20),
    ]
    result = replay(ai.log("slips.jsonl", lines), market)
    assert result.differences == [
        Difference("2025-10-03", "unfilled", "BBB", -10.0, 0.0),
        Difference("2025-10-06", "cash", None, 7950.0, 7960.0),
    ]
    assert result.days_with_differences == ["2025-10-03", "2025-10-06"]
    assert [str(d) for d in result.differences] == [
        "2025-10-03 unfilled: BBB log -10, simulator 0",
        "2025-10-06 cash: log 7950, simulator 7960",
    ]
    # the replay itself follows the simulator: 20 AAA at 102, marked at the closes
    np.testing.assert_allclose(
        result.result.nav,
        [10_000, 20 * 103 + 7960, 20 * 105 + 7960, 20 * 105.5 + 7960, 20 * 107 + 7960],
        rtol=0,
        atol=1e-9,
    )
    assert result.result.diagnostics == {"actions": 2, "differences": 2, "days_with_differences": 2}


def test_a_buy_beyond_the_cash_is_cut_to_what_the_cash_pays_and_reported(ai, make_entry, market):
    e = make_entry
    lines = [
        e("2025-10-01", 0, None, cash=10_000.0),
        # 200 x 102 = 20400: the log goes 10400 into debt
        e("2025-10-02", 1, "buy", "AAA", 200, cash=-10_400.0, AAA=200),
        e("2025-10-03", 2, "no_trade", cash=-10_400.0, AAA=200),
    ]
    result = replay(ai.log("overdraft.jsonl", lines), market)
    # the simulator buys what 10000 pays: 10000 / 102 = 98.04 -> 98 shares, 9996; cash 4
    frame = differences_frame([result])
    assert list(frame.columns) == ["log", "date", "kind", "symbol", "log_value", "simulator_value"]
    assert frame.fillna({"symbol": "-"}).values.tolist() == [
        ["overdraft", "2025-10-02", "unfilled", "AAA", 200.0, 98.0],
        ["overdraft", "2025-10-02", "shares", "AAA", 200.0, 98.0],
        ["overdraft", "2025-10-02", "cash", "-", -10_400.0, 4.0],
        ["overdraft", "2025-10-03", "shares", "AAA", 200.0, 98.0],
        ["overdraft", "2025-10-03", "cash", "-", -10_400.0, 4.0],
    ]
    # the replay ends with the log: 98 x 103 + 4 = 10098, 98 x 105 + 4 = 10294
    assert [str(d) for d in result.result.dates] == DATES[:3]
    np.testing.assert_allclose(result.result.nav, [10_000, 10_098, 10_294], rtol=0, atol=1e-9)


def test_clean_logs_have_an_empty_differences_frame(ai, make_entry, market):
    results = [
        replay(ai.log("alpha.jsonl", alpha(make_entry)), market),
        replay(ai.log("beta.jsonl", beta(make_entry)), market),
    ]
    frame = differences_frame(results)
    assert frame.empty and list(frame.columns)[:3] == ["log", "date", "kind"]
    np.testing.assert_allclose(results[1].result.nav, BETA_NAV, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [("2025-10-01", 0, None, "", 0, {}), ("2025-10-04", 1, "buy", "AAA", 1, {"AAA": 1})],
            r"actions on non-trading dates \['2025-10-04'\]",
        ),
        (
            [("2025-10-01", 0, None, "", 0, {}), ("2025-10-02", 1, "buy", "ZZZ", 1, {})],
            r"the price data has no \['ZZZ'\] \(first traded on 2025-10-02, line 2\)",
        ),
        (
            [("2025-10-01", 0, "buy", "AAA", 1, {"AAA": 1})],
            r"the first line must be the starting portfolio",
        ),
        (
            [("2025-10-01", 0, None, "", 0, {}), ("2025-10-02", 1, "short", "AAA", 1, {})],
            r"slips.jsonl:2: unknown action 'short'",
        ),
        (
            [("2025-10-01", 0, None, "", 0, {}), ("2025-10-02", 1, "buy", "AAA", -3, {})],
            r"slips.jsonl:2: amount -3 is not a non-negative number",
        ),
        (
            [("2025-10-02", 0, None, "", 0, {}), ("2025-10-01", 1, "buy", "AAA", 1, {})],
            r"lines are not in date order",
        ),
        (
            [("2025-10-01", 0, None, "", 0, {"AAA": 5})],
            r"the replay needs a log that starts from cash",
        ),
    ],
)
def test_malformed_logs_are_refused_naming_the_problem(ai, make_entry, market, lines, message):
    entries = [
        make_entry(d, i, a, s, n, cash=10_000.0, **shares) for d, i, a, s, n, shares in lines
    ]
    with pytest.raises(TradeLogError, match=message):
        replay(ai.log("slips.jsonl", entries), market)


def test_a_line_without_cash_names_file_and_line(ai, make_entry):
    line = make_entry("2025-10-01", 0, None, cash=10_000.0)
    del line["positions"]["CASH"]
    path = ai.log("nocash.jsonl", [line])
    with pytest.raises(TradeLogError, match=rf"{path}:1: positions have no CASH"):
        read_trade_log(path)


# ------------------------------------------------------------------------------- the CLI


def run(argv: list[str]) -> tuple[int, str]:
    console = Console(record=True, width=400)
    with pytest.warns(DataWarning, match="2025-10-07 has opens only"):
        code = main(argv, console=console)
    return code, console.export_text()


def table_rows(text: str) -> dict[str, list[str]]:
    """agent -> its cells, from the printed leaderboard."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[1] and cells[1] != "agent":
            rows[cells[1]] = cells[2:-1]
    return rows


def test_cli_replay_ranks_the_logs_and_the_benchmark(ai, make_entry, tmp_path):
    prices = ai.merged()
    logs = [ai.log("beta.jsonl", beta(make_entry)), ai.log("alpha.jsonl", alpha(make_entry))]
    # QQQ closes 600 ... 618: buy-and-hold 10000 -> 10000 x 618 / 600 = 10300, +3.00%
    qqq = ai.benchmark(dict(zip(DATES, [600.0, 606.0, 603.0, 612.0, 618.0], strict=True)))
    out = tmp_path / "report"
    code, text = run(
        [
            "replay",
            "--prices",
            str(prices),
            "--log",
            str(logs[0]),
            "--log",
            str(logs[1]),
            "--benchmark",
            str(qqq),
            "--output",
            str(out),
        ]
    )
    assert code == EXIT_OK, text
    assert "AI-Trader replay: merged.jsonl, 2025-10-01 to 2025-10-07" in text
    rows = table_rows(text)
    # best final NAV first, the benchmark after the logs
    assert list(rows) == ["alpha", "beta", "QQQ (benchmark)"]
    # NAV then return: alpha 10200 (+2.00%), beta 9750 (-2.50%), QQQ 10300 (+3.00%)
    assert rows["alpha"][0] == "10,200.00" and rows["alpha"][1].startswith("+2.00% ")
    assert rows["beta"][0] == "9,750.00" and rows["beta"][1].startswith("-2.50% ")
    assert rows["QQQ (benchmark)"][0] == "10,300.00"
    assert rows["QQQ (benchmark)"][1].startswith("+3.00% ")
    assert "alpha: 5 trades; matches the simulator on every day" in text
    assert "beta: 2 trades; matches the simulator on every day" in text
    metrics = pd.read_csv(out / "metrics.csv").set_index("agent")
    assert metrics.loc["alpha", "final_nav"] == pytest.approx(10_200.0, abs=1e-9)
    assert metrics.loc["beta", "total_return"] == pytest.approx(-0.025, abs=1e-12)
    assert metrics.loc["QQQ (benchmark)", "total_return"] == pytest.approx(0.03, abs=1e-12)
    assert pd.read_csv(out / "differences.csv").empty


def test_cli_replay_lists_differences_and_strict_fails_on_them(ai, make_entry, tmp_path):
    e = make_entry
    slips = ai.log(
        "slips.jsonl",
        [
            e("2025-10-01", 0, None, cash=10_000.0),
            e("2025-10-02", 1, "buy", "AAA", 20, cash=7960.0, AAA=20),
            e("2025-10-03", 2, "sell", "BBB", 10, cash=7960.0, AAA=20),
            e("2025-10-06", 3, "no_trade", cash=7950.0, AAA=20),
        ],
    )
    argv = ["replay", "--prices", str(ai.merged()), "--log", str(slips)]
    code, text = run([*argv, "--output", str(tmp_path / "out")])
    assert code == EXIT_OK
    assert "slips: 2 trades; 2 difference(s) on 2 day(s)" in text
    assert "  2025-10-03 unfilled: BBB log -10, simulator 0" in text
    assert "  2025-10-06 cash: log 7950, simulator 7960" in text
    diffs = pd.read_csv(tmp_path / "out" / "differences.csv")
    assert diffs[["date", "kind"]].values.tolist() == [
        ["2025-10-03", "unfilled"],
        ["2025-10-06", "cash"],
    ]
    code, _ = run([*argv, "--strict"])
    assert code == EXIT_ERROR


# ----------------------------------------------------------------- under risk rules
def test_replay_under_a_weight_cap_by_hand(ai, make_entry, market):
    """beta's book is 100 BBB; max_weight 0.3 trims it at each decision's close:
    10-01 close 50.5, NAV 10000: 0.505 -> 0.3 = 59.4 shares -> 59, bought at 51 (cash 6991)
    10-02 close 51.5, NAV 59 x 51.5 + 6991 = 10029.5: 0.5135 -> 0.3 = 58.4 -> 58, one sold
          at 52 (cash 7043)
    10-03 close 51, NAV 58 x 51 + 7043 = 10001: 0.50995 -> 0.3 = 58.8 -> 58, no trade
    10-06 NAV 58 x 49 + 7043 = 9885; the book is empty: the 58 held are sold at 48.5
    10-07 cash 7043 + 2813 = 9856 (the log, holding 100, ended at 9750)
    """
    result = replay(ai.log("beta.jsonl", beta(make_entry)), market, risk={"max_weight": 0.3})
    r = result.result
    np.testing.assert_allclose(r.nav, [10_000.0, 10_029.5, 10_001.0, 9_885.0, 9_856.0])
    assert [(x["date"], x["rule"]) for x in r.interventions] == [
        ("2025-10-01", "max_weight"),
        ("2025-10-02", "max_weight"),
        ("2025-10-03", "max_weight"),
    ]
    moved = [x["amount"] for x in r.interventions]
    np.testing.assert_allclose(
        moved, [0.505 - 0.3, 5150 / 10_029.5 - 0.3, 5100 / 10_001 - 0.3], rtol=1e-12
    )
    assert r.settings["risk"]["max_weight"] == 0.3
    # the differences show what the rule changed: the log held 100 where the replay held less
    shares = [(d.date, d.log, d.simulator) for d in result.differences if d.kind == "shares"]
    assert shares == [
        ("2025-10-02", 100, 59),
        ("2025-10-03", 100, 58),
        ("2025-10-06", 100, 58),
    ]
    assert not [d for d in result.differences if d.kind == "unfilled"]


def test_a_rule_that_never_binds_replays_the_log_exactly(ai, make_entry, market):
    plain = replay(ai.log("alpha.jsonl", alpha(make_entry)), market)
    capped = replay(ai.log("alpha.jsonl", alpha(make_entry)), market, risk={"max_weight": 0.9})
    np.testing.assert_array_equal(capped.result.nav, plain.result.nav)
    np.testing.assert_allclose(capped.result.nav, ALPHA_NAV, rtol=1e-12)
    assert capped.result.interventions == [] and capped.differences == []


def test_replay_stop_loss_exits_at_the_next_open(ai, make_entry, market):
    """beta's NAV peaks at 10050 (10-02); at 10-03's close it is 10000, 0.5% down: a 0.4% stop
    sells the 100 BBB at 10-06's open, 50 (cash 4900 + 5000 = 9900), and the cash is held
    through the fall the log rode to 9750."""
    result = replay(ai.log("beta.jsonl", beta(make_entry)), market, risk={"stop_loss": 0.004})
    r = result.result
    np.testing.assert_allclose(r.nav, [10_000.0, 10_050.0, 10_000.0, 9_900.0, 9_900.0])
    assert [(x["date"], x["rule"]) for x in r.interventions] == [("2025-10-03", "stop_loss")]
    assert r.interventions[0]["amount"] == pytest.approx(100 * 51 / 10_000)
    fills = r.fills
    assert fills["date"].astype(str).tolist()[-1] == "2025-10-06"


def test_cli_replay_with_risk_rules_counts_the_interventions(ai, make_entry, tmp_path):
    log = ai.log("beta.jsonl", beta(make_entry))
    argv = ["replay", "--prices", str(ai.merged()), "--log", str(log)]
    code, text = run([*argv, "--risk", "max_weight=0.3", "--output", str(tmp_path / "out")])
    assert code == EXIT_OK, text
    assert table_rows(text)["beta"][0] == "9,856.00"
    assert "beta: the risk layer changed 3 of 4 decisions: max_weight 3 (weight moved 0.63)" in text
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv").set_index("agent")
    assert metrics.loc["beta", "risk_max_weight_decisions"] == 3
    assert "beta: 2 trades; 7 difference(s) on 4 day(s)" in text
    # a bad rule is refused before the prices are read
    console = Console(record=True, width=400)
    assert main([*argv, "--risk", "max_weight=-1"], console=console) == EXIT_ERROR
    assert console.export_text().strip() == "error: --risk: risk.max_weight=-1.0: must be > 0"


def test_replay_under_risk_reads_no_future_prices(perturb_future):
    """A buy-and-hold log under a volatility target over a synthetic market: moving every
    price after session k changes nothing the replay decided up to k."""
    from marketarena.envs.synthetic import gbm_market
    from marketarena.evaluation.saved_runs.replay import LogEntry

    data = gbm_market(3, 60, seed=7, sigma=0.6)
    dates = [str(d) for d in data.dates]
    held = {s: 10.0 for s in data.symbols}
    log = [LogEntry(1, dates[0], 0, None, "", 0.0, dict.fromkeys(data.symbols, 0.0), 10_000.0)]
    log += [
        LogEntry(2 + i, dates[1], 1 + i, "buy", s, 10.0, held, 0.0)
        for i, s in enumerate(data.symbols)
    ]
    log.append(LogEntry(5, dates[-1], 4, "no_trade", "", 0.0, held, 0.0))  # held to the end
    k = 40
    future = perturb_future(data, k)
    risk = {"vol_target": 0.05, "vol_lookback": 5}
    a, b = (replay(log, d, rules="default", risk=risk).result for d in (data, future))
    assert a.interventions, "the target must bind for the test to mean anything"
    np.testing.assert_array_equal(a.nav[: k + 1], b.nav[: k + 1])
    upto = [x for x in a.interventions if x["date"] <= dates[k]]
    assert upto == [x for x in b.interventions if x["date"] <= dates[k]]
    assert a.interventions != b.interventions
