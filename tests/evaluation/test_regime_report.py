"""The evaluation report split by regime: a buy-and-hold run pinned by hand, the files and the
HTML, the `--regimes` flag end to end, sector rotation, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from marketarena.agents.registry import make_agent
from marketarena.cli import main
from marketarena.envs.data import MarketData, load_dataset
from marketarena.envs.errors import ConfigError
from marketarena.envs.regimes import TREND_NAMES, UNKNOWN, Regimes, detect_regimes
from marketarena.envs.risk import load_sectors
from marketarena.envs.settings import EnvSettings
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation import regimes as by_regime
from marketarena.evaluation.evaluate import EvaluationConfig, load_evaluation_file
from marketarena.evaluation.report import EvaluationReport, load_report
from marketarena.evaluation.runner import AgentEvaluation, run_backtest

CLOSES = [100, 100, 100, 110, 99, 99, 108.9, 130.68]
U = UNKNOWN


def run_cli(*args: str) -> tuple[int, str]:
    console = Console(record=True, width=250)
    code = main(list(args), console=console)
    return code, console.export_text()


@pytest.fixture(scope="module")
def hand_run():
    """Buy-and-hold on one symbol, no costs: marks on rows 1..7, returns 0, +10%, -10%, 0,
    +10%, +20% for the periods starting on rows 1..6 (NAV 10,000 -> 13,068)."""
    close = np.array(CLOSES)[:, None]
    dates = pd.bdate_range("2024-01-01", periods=len(close)).to_numpy().astype("datetime64[D]")
    data = MarketData(dates=dates, symbols=("A",), close=close, name="hand")
    settings = EnvSettings.from_dict(
        {
            "window": 1,
            "features": ["log_return"],
            "rules": {"commission_bps": 0, "slippage_bps": 0},
        }
    )
    result = run_backtest(make_agent("buy_and_hold"), {"data": data, "settings": settings})
    np.testing.assert_allclose(result.returns, [0, 0.1, -0.1, 0, 0.1, 0.2], atol=1e-12)
    np.testing.assert_array_equal(result.dates, dates[1:])
    return data, result


def hand_regimes(data: MarketData, labels: list[int], first_row: int = 0) -> Regimes:
    return Regimes(
        kind="trend",
        dates=data.dates[first_row:],
        prices=data.close[first_row:, 0],
        labels=np.array(labels),
        names=TREND_NAMES,
        source="A",
    )


# rows 0..7: the periods starting on rows 1..6 are sideways, bull, bull, bear, sideways, bear
LABELS = [U, 1, 2, 2, 0, 1, 0, 0]
TOTAL_PNL = 3068.0


def test_split_by_regime_by_hand(hand_run):
    data, result = hand_run
    stats = {s.regime: s for s in by_regime.split_by_regime(result, hand_regimes(data, LABELS))}
    assert list(stats) == ["bear", "sideways", "bull"]  # no unknown period
    bear, side, bull = stats["bear"], stats["sideways"], stats["bull"]
    # bear: returns 0 and +20% (rows 4, 6); PnL 0 + 2,178
    assert bear.days == 2
    assert bear.total_return == pytest.approx(0.2)
    assert bear.annualized_return == pytest.approx(1.2**126 - 1)
    assert bear.sharpe == pytest.approx(0.1 / math.sqrt(0.02) * math.sqrt(252))
    assert bear.max_drawdown == 0.0
    assert bear.pnl_share == pytest.approx(2178 / TOTAL_PNL)
    # sideways: 0 and +10% (rows 1, 5): PnL 0 + 990
    assert side.days == 2 and side.total_return == pytest.approx(0.1)
    assert side.sharpe == pytest.approx(math.sqrt(126))
    assert side.pnl_share == pytest.approx(990 / TOTAL_PNL)
    # bull: +10% then -10% (rows 2, 3): lost 1% and 100 of PnL; a drawdown of 10% within it
    assert bull.days == 2 and bull.total_return == pytest.approx(-0.01)
    assert bull.sharpe == pytest.approx(0.0, abs=1e-12)
    assert bull.max_drawdown == pytest.approx(-0.1)
    assert bull.pnl_share == pytest.approx(-100 / TOTAL_PNL)
    assert sum(s.pnl_share for s in stats.values()) == pytest.approx(1.0)


def test_the_period_takes_the_label_known_at_its_start(hand_run):
    data, result = hand_run
    # labels shifted one row later: the first period (row 1) has no label yet
    late = Regimes(
        kind="trend",
        dates=data.dates[2:],
        prices=data.close[2:, 0],
        labels=np.array(LABELS[2:]),
        names=TREND_NAMES,
    )
    np.testing.assert_array_equal(by_regime.period_labels(result, late), [U, 2, 2, 0, 1, 0])
    stats = {s.regime: s for s in by_regime.split_by_regime(result, late)}
    assert list(stats) == ["bear", "sideways", "bull", "unknown"]
    assert stats["unknown"].days == 1 and stats["sideways"].days == 1
    assert stats["bull"].days == 2  # a regime with days; one without any would be NaN
    empty = hand_regimes(data, [U, 1, 1, 1, 1, 1, 1, 1])
    bear = next(s for s in by_regime.split_by_regime(result, empty) if s.regime == "bear")
    assert bear.days == 0 and math.isnan(bear.sharpe) and bear.pnl_share == 0.0


def test_the_report_writes_the_split(hand_run, tmp_path):
    data, result = hand_run
    sectors = pd.DataFrame(
        {"Energy": [np.nan, 0.01, -0.02], "Financials": [np.nan, -0.01, 0.02]},
        index=pd.DatetimeIndex(data.dates[5:8], name="date"),
    )
    report = EvaluationReport(
        title="hand",
        evaluations=[AgentEvaluation("buy_and_hold", [result])],
        regimes={"trend": hand_regimes(data, LABELS)},
        sector_strength=sectors,
        sector_note="Sector rotation: a note.",
    )
    report.write(tmp_path)
    row = json.loads((tmp_path / "metrics.json").read_text())["agents"][0]
    assert row["regime_trend_bull_days"] == 2
    assert row["regime_trend_bull_pnl_share"] == pytest.approx(-100 / TOTAL_PNL)
    assert row["regime_trend_bear_total_return"] == pytest.approx(0.2)
    csv = pd.read_csv(tmp_path / "metrics.csv")
    assert csv.loc[0, "regime_trend_sideways_total_return"] == pytest.approx(0.1)
    page = (tmp_path / "report.html").read_text()
    assert '<table class="regimes" data-kind="trend">' in page
    assert "<td>bull</td><td>2</td><td>-1.00%</td>" in page
    assert 'data-name="regimes: trend"' in page and 'data-name="sector rotation"' in page
    assert "Sector rotation: a note." in page
    metrics_table = page[page.index('id="metrics"') : page.index("</table>")]
    assert "regime_" not in metrics_table  # the split has its own table
    # the terminal table
    console = Console(record=True, width=200)
    for table in report.regime_tables():
        console.print(table)
    text = console.export_text()
    assert "By trend regime (A; the label known at each decision)" in text
    assert "buy_and_hold │ bull     │    2 │  -1.00%" in text
    # the saved report comes back with its regimes and sectors
    again = load_report(tmp_path)
    assert again.rows()[0].as_dict()["regime_trend_bull_pnl_share"] == pytest.approx(
        -100 / TOTAL_PNL
    )
    pd.testing.assert_frame_equal(again.sector_strength, sectors, check_freq=False)


def test_the_regime_chart_shades_each_regime():
    data = gbm_market(2, 300, seed=3)
    regimes = detect_regimes("volatility", data, min_history=50)
    fig = by_regime.regime_figure(regimes)
    names = [trace.name for trace in fig.data]
    assert names[-1] == regimes.source
    shaded = {t.name: t for t in fig.data[:-1]}
    assert set(shaded) <= {"low", "normal", "high", "unknown"} and len(shaded) >= 3
    # a band per row of the regime, from that row to the next
    here = np.flatnonzero(regimes.labels == 2)
    high = shaded["high"]
    assert list(high.x) == [str(regimes.dates[i]) for i in here]
    gaps = np.r_[np.diff(regimes.dates).astype(np.int64), 1]  # one day for the last row
    assert list(high.width) == [int(gaps[i]) * 86_400_000 for i in here]
    assert high.offset == 0


def test_sector_rotation_over_the_bundled_panel():
    data = load_dataset("sp500_20")
    frame, note = by_regime.evaluation_sector_rotation(data, "2020-01-02", "2020-03-31")
    in_range = (data.dates >= np.datetime64("2020-01-02")) & (
        data.dates <= np.datetime64("2020-03-31")
    )
    assert frame is not None and len(frame) == in_range.sum() and frame.notna().all().all()
    # against pandas: 63-session pct_change, the sector's mean minus the universe's
    closes = pd.DataFrame(data.close, index=pd.DatetimeIndex(data.dates), columns=data.symbols)
    trailing = closes.pct_change(63, fill_method=None).loc["2020-03-31"]
    it = ["AAPL", "AMD", "MSFT"]
    assert {
        s for s in data.symbols if load_sectors("bundled")[s] == "Information Technology"
    } == set(it)
    assert frame.loc["2020-03-31", "Information Technology"] == pytest.approx(
        trailing[it].mean() - trailing.mean()
    )
    assert note.startswith("Sector rotation (63-session return")
    uncovered = gbm_market(2, 100, seed=1)
    frame, note = by_regime.evaluation_sector_rotation(uncovered, "2000-03-01", "2000-04-28")
    assert frame is None
    assert "Sector rotation not shown" in note and "no sector for ['SYN0', 'SYN1']" in note


# -------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("regimes") / "prices.csv"
    market = gbm_market(3, 700, seed=11, sigma=0.3)
    market.to_long_frame().to_csv(path, index=False)
    return str(path), market


def test_the_regimes_flag_end_to_end(synthetic_csv, tmp_path):
    path, market = synthetic_csv
    start, end = str(market.dates[600]), str(market.dates[-1])
    code, text = run_cli(
        "evaluate",
        "--data",
        path,
        "--start",
        start,
        "--end",
        end,
        "--regimes",
        "trend",
        "--regimes",
        "volatility",
        "--regimes",
        "hmm",
        "--output",
        str(tmp_path),
    )
    assert code == 0, text
    for kind in ("trend", "volatility", "hmm"):
        assert f"By {kind} regime (equal-weighted index of" in text
    # under the metrics table
    assert text.index("By trend regime") > text.index("[brackets]")
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["settings"]["regimes"] == ["trend", "volatility", "hmm"]
    for row in doc["agents"]:
        periods = len(pd.read_csv(tmp_path / f"daily_{row['agent']}.csv")) - 1
        for kind, names in {
            "trend": TREND_NAMES,
            "volatility": ("low", "normal", "high"),
            "hmm": ("calm", "turbulent"),
        }.items():
            assert sum(row[f"regime_{kind}_{n}_days"] for n in names) == periods
            shares = [row[f"regime_{kind}_{n}_pnl_share"] for n in names]
            assert sum(shares) == pytest.approx(1.0)
    # the numbers are the split of the run by the detector's labels on the universe's index
    data = load_report(tmp_path)
    hmm = detect_regimes("hmm", market, end=end)
    run = next(r for r in data.rows() if r.agent == "buy_and_hold").representative
    expected = by_regime.flat_regime_metrics("hmm", by_regime.split_by_regime(run, hmm))
    bh = next(r for r in doc["agents"] if r["agent"] == "buy_and_hold")
    for key, value in expected.items():
        assert bh[key] == pytest.approx(value, nan_ok=True), key
    page = (tmp_path / "report.html").read_text()
    assert page.count('<table class="regimes"') == 3
    assert "Sector rotation not shown" in page and "no sector for" in page


def test_bad_regime_input(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown regime kind\(s\) \['moon'\].*'hmm'"):
        EvaluationConfig(agents=(), regimes=("moon",)).validate()
    with pytest.raises(SystemExit):  # argparse's choices
        run_cli("evaluate", "--regimes", "moon", "--output", str(tmp_path))
    config = tmp_path / "eval.yaml"
    config.write_text("regimes: [moon]\n")
    assert load_evaluation_file(config)["regimes"] == ("moon",)
    code, text = run_cli("evaluate", "--config", str(config), "--output", str(tmp_path))
    assert code == 1 and "error: unknown regime kind(s) ['moon']" in text
    # a lookback longer than the data: one line naming what it needs
    short = tmp_path / "short.csv"
    gbm_market(2, 150, seed=2).to_long_frame().to_csv(short, index=False)
    code, text = run_cli(
        "evaluate", "--data", str(short), "--regimes", "trend", "--output", str(tmp_path / "o")
    )
    assert code == 1
    assert (
        "error: trend regimes need at least 220 rows (a 200-row average and its 20-row slope), "
        "but the series has 150" in (text.replace("\n", " "))
    )
    assert "Traceback" not in text
