"""`marketarena indicators list|show` driven in-process through `cli.main`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from marketarena.cli import EXIT_ERROR, EXIT_OK, main
from marketarena.envs.data import load_dataset
from marketarena.envs.indicators import compute_indicator


def run(argv: list[str]) -> tuple[int, str]:
    console = Console(record=True, width=200)
    code = main(argv, console=console)
    return code, console.export_text()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETARENA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "indicator"


def test_list_shows_every_indicator_with_parameters_lookback_inputs_and_source():
    code, out = run(["indicators", "list"])
    assert code == EXIT_OK
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert set(rows) >= {"rsi", "macd", "macd_hist", "bb_pctb", "atr", "obv", "zscore", "xs_rank"}
    cells = [c.strip() for c in rows["macd_hist"].split("│")[1:-1]]
    assert cells[:5] == ["macd_hist", "fast=12, slow=26, signal=9", "33", "close", "marketarena"]
    assert cells[5].startswith("MACD histogram")
    assert [c.strip() for c in rows["atr"].split("│")[3:5]] == ["14", "high, low, close"]


def test_show_prints_the_last_values_and_says_miss_then_hit(cache):
    argv = ["indicators", "show", "rsi_7", "--data", "sp500_ohlcv_30"]
    code, out = run([*argv, "--symbols", "KO", "XOM", "--last", "3"])
    assert code == EXIT_OK
    assert "parameters: period=7" in out and "lookback: 7 rows" in out
    assert "cache: miss (computed and stored in" in out and "Wilder" in out
    data = load_dataset("sp500_ohlcv_30").select(["KO", "XOM"])
    expected = compute_indicator(data, "rsi_7")[-3:]
    ko = next(line for line in out.splitlines() if line.startswith("│ KO"))
    shown = [float(c) for c in ko.split("│")[2:-1]]
    np.testing.assert_allclose(shown, expected[:, 0], atol=5e-5)
    assert str(data.dates[-1]) in out and str(data.dates[-4]) not in out
    code, again = run([*argv, "--symbols", "KO", "XOM", "--last", "3"])
    assert code == EXIT_OK and "cache: hit (read from" in again
    assert len(list(cache.glob("*.npy"))) == 1


def test_show_with_caching_off_says_so(monkeypatch):
    monkeypatch.setenv("MARKETARENA_CACHE_DIR", "off")
    code, out = run(["indicators", "show", "zscore", "--data", "sp500_ohlcv_30", "--last", "1"])
    assert code == EXIT_OK and "cache: off" in out and "window=20" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rsix"], "error: unknown indicator 'rsix'; registered: ['atr'"),
        (["rsi_a"], "error: indicator 'rsi_a': period must be a whole number"),
        (["atr"], "error: indicator 'atr_14' needs high prices, but sp500_20 has only ['close']"),
        (["rsi", "--data", "sp500_ohlcv_30", "--symbols", "ZZZ"], "unknown symbol(s) ['ZZZ']"),
        (["rsi", "--last", "0"], "error: --last must be at least 1, got 0"),
        (["rsi_9000", "--data", "sp500_ohlcv_30"], "has a lookback of 9000 rows, but"),
    ],
)
def test_mistakes_are_one_error_line(argv, message):
    code, out = run(["indicators", "show", *argv])
    assert code == EXIT_ERROR
    assert message in out and "Traceback" not in out


def test_evaluate_takes_rule_agents(tmp_path):
    out = tmp_path / "evaluation"
    code, text = run(
        [
            "evaluate",
            "--agent",
            'rule:"rsi_14 < 30"',
            "--agent",
            'rule:"rsi_14 < 0"',
            "--no-baselines",
            "--data",
            "sp500_ohlcv_30",
            "--output",
            str(out),
        ]
    )
    assert code == EXIT_OK, text
    rows = {r["agent"]: r for r in json.loads((out / "metrics.json").read_text())["agents"]}
    assert list(rows) == ["rule:rsi_14 < 30", "rule:rsi_14 < 0"]
    assert rows["rule:rsi_14 < 0"]["final_nav"] == 10_000  # never true: cash throughout
    assert rows["rule:rsi_14 < 0"]["number_of_trades"] == 0
    assert rows["rule:rsi_14 < 30"]["number_of_trades"] > 0


def test_evaluate_refuses_an_unsafe_rule_in_one_line(tmp_path):
    code, out = run(
        ["evaluate", "--agent", "rule:\"open('x').read() > 0\"", "--output", str(tmp_path)]
    )
    assert code == EXIT_ERROR and "Traceback" not in out
    assert "error: rule \"open('x').read() > 0\": a call is not allowed" in out
