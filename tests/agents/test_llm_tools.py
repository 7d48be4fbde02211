"""The point-in-time toolbox: every tool pinned against the data by an independent path, bad
arguments answered with an error naming the argument, look-ahead refused and counted, and the
future perturbed without changing any output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marketarena.agents.llm_tools import ACTION_TOOL, MAX_CELLS, Toolbox
from marketarena.envs import PortfolioEnv
from marketarena.envs.data import MarketData, load_dataset
from marketarena.envs.indicators import compute_indicator
from marketarena.envs.news import load_news
from marketarena.envs.synthetic import gbm_market

SYMBOLS = ("AAPL", "JNJ", "XOM")
DATA = load_dataset("sp500_20").select(SYMBOLS)
DECISION = "2019-01-04"
T = DATA.index_of(DECISION)
OHLCV = gbm_market(n_assets=2, n_periods=80, seed=3)  # has opens, highs, lows, volumes


def toolbox(data: MarketData = DATA, date: str = DECISION, **kwargs) -> Toolbox:
    env = PortfolioEnv(
        data, window=5, start=date, episode_length=None, random_start=False, snapshot_lookback=1
    )
    _, info = env.reset()
    return Toolbox(data, info["snapshot"], **kwargs)


def call(box: Toolbox, name: str, arguments=None) -> dict:
    result = box.dispatch(name, json.dumps(arguments) if arguments is not None else None)
    json.dumps(result)  # JSON-serialisable, always
    return result


def perturbed_after(data: MarketData, t: int) -> MarketData:
    """``data`` with every price after row ``t`` changed (and so every later indicator)."""
    rng = np.random.default_rng(1)
    close = np.array(data.close)
    close[t + 1 :] *= rng.uniform(0.5, 1.5, close[t + 1 :].shape)
    return MarketData(dates=data.dates, symbols=data.symbols, close=close, name=data.name)


# ------------------------------------------------------------------------- prices
def test_prices_are_the_data_up_to_the_decision():
    box = toolbox()
    out = call(box, "get_prices", {"symbols": ["aapl", "XOM"], "last": 3})
    assert out["dates"] == [str(d) for d in DATA.dates[T - 2 : T + 1]]
    assert out["dates"][-1] == DECISION
    assert out["close"]["AAPL"] == [round(float(x), 6) for x in DATA.close[T - 2 : T + 1, 0]]
    assert out["close"]["XOM"] == [round(float(x), 6) for x in DATA.close[T - 2 : T + 1, 2]]
    assert set(out["close"]) == {"AAPL", "XOM"}
    default = call(box, "get_prices")  # all symbols, 20 sessions, to the decision
    assert len(default["dates"]) == 20 and set(default["close"]) == set(SYMBOLS)
    ranged = call(box, "get_prices", {"start": "2018-12-28", "end": "2019-01-03"})
    assert ranged["dates"] == ["2018-12-28", "2018-12-31", "2019-01-02", "2019-01-03"]


def test_ohlcv_fields_and_the_fields_a_panel_lacks():
    box = toolbox(OHLCV, str(OHLCV.dates[40]))
    out = call(box, "get_prices", {"fields": ["open", "volume"], "last": 2})
    sym = OHLCV.symbols[1]
    assert out["open"][sym] == [round(float(x), 6) for x in OHLCV.open[39:41, 1]]
    assert out["volume"][sym] == [round(float(x), 6) for x in OHLCV.volume[39:41, 1]]
    missing = call(toolbox(), "get_prices", {"fields": ["volume"]})
    assert missing["argument"] == "fields" and "volume" in missing["error"]


def test_a_date_after_the_decision_is_refused_and_counted():
    box = toolbox()
    for args in ({"end": "2019-01-07"}, {"start": "2019-01-07"}, {"end": "2030-01-01"}):
        out = call(box, "get_prices", args)
        assert out["look_ahead"] is True and out["argument"] in ("start", "end"), out
        assert DECISION in out["error"]
    out = call(box, "get_indicator", {"name": "rsi_14", "end": "2019-01-07"})
    assert out["look_ahead"] is True and out["argument"] == "end"
    assert box.look_ahead_refusals == 4 and box.errors == 4 and box.calls == 4
    assert call(box, "get_prices", {"end": DECISION})["dates"][-1] == DECISION
    assert box.look_ahead_refusals == 4


@pytest.mark.parametrize(
    ("name", "arguments", "argument"),
    [
        ("get_prices", {"bogus": 1}, "bogus"),
        ("get_prices", {"last": "many"}, "last"),
        ("get_prices", {"last": 0}, "last"),
        ("get_prices", {"symbols": ["AAPL", "NOPE"]}, "symbols"),
        ("get_prices", {"symbols": []}, "symbols"),
        ("get_prices", {"end": "yesterday"}, "end"),
        ("get_prices", {"start": "2019-13-01"}, "start"),
        ("get_prices", {"start": "2019-01-03", "end": "2019-01-02"}, "start"),
        ("get_prices", {"start": "2018-01-02", "last": 5}, "last"),
        ("get_prices", {"start": "2010-01-04"}, "start"),  # > MAX_ROWS sessions
        ("get_prices", {"fields": ["close", "adjusted"]}, "fields.1"),
        ("get_indicator", {}, "name"),
        ("get_indicator", {"name": "nosuch_3"}, "name"),
        ("get_indicator", {"name": "rsi_x"}, "name"),
        ("calculate", {"expression": 3}, "expression"),
        (ACTION_TOOL, {"weights": {"AAPL": "lots"}}, "weights.AAPL"),
    ],
)
def test_bad_arguments_are_an_error_naming_the_argument(name, arguments, argument):
    box = toolbox()
    out = call(box, name, arguments)
    assert set(out) == {"error", "argument"} and out["argument"] == argument, out
    assert box.errors == 1 and box.action is None


def test_calls_that_are_wrong_as_a_whole():
    box = toolbox()
    assert "unknown tool 'buy'" in box.dispatch("buy", "{}")["error"]
    assert "not JSON" in box.dispatch("get_prices", '{"last": 5')["error"]
    assert "JSON object" in box.dispatch("get_prices", "[1, 2]")["error"]
    assert box.dispatch("get_portfolio", "")["date"] == DECISION  # no arguments: {}
    assert box.errors == 3


def test_too_many_numbers_in_one_call():
    wide = gbm_market(n_assets=30, n_periods=300, seed=1)
    box = toolbox(wide, str(wide.dates[-2]))
    out = call(box, "get_prices", {"last": 200, "fields": ["close", "open"]})
    assert out["argument"] == "symbols" and str(MAX_CELLS) in out["error"]


# --------------------------------------------------------------------- indicators
def test_indicators_match_the_registry_on_the_whole_panel():
    box = toolbox()
    out = call(box, "get_indicator", {"name": "rsi_14", "symbols": ["JNJ"], "last": 3})
    whole = compute_indicator(DATA, "rsi_14")  # point in time: the same values at rows <= t
    assert out["values"]["JNJ"] == [round(float(x), 6) for x in whole[T - 2 : T + 1, 1]]
    assert out["dates"][-1] == DECISION
    early = toolbox(DATA, str(DATA.dates[3]))
    assert call(early, "get_indicator", {"name": "rsi_14"})["values"]["AAPL"] == [None]
    listing = call(box, "list_indicators")
    assert "rsi" in [i["name"] for i in listing["indicators"]]
    assert "log_return" in listing["features"]
    feature = call(box, "get_indicator", {"name": "log_return"})
    expected = np.log(DATA.close[T] / DATA.close[T - 1])
    np.testing.assert_allclose([feature["values"][s][0] for s in SYMBOLS], expected, atol=1e-6)


# ---------------------------------------------------------------------------- news
def test_news_up_to_the_decisions_close_only(tmp_path: Path):
    path = tmp_path / "news.csv"
    path.write_text(
        "published_at,symbol,headline,score,event\n"
        "2019-01-03T10:00:00-05:00,AAPL,Apple cuts revenue guidance,-0.8,guidance\n"
        "2019-01-04T16:00:00-05:00,JNJ,J&J at the close,,\n"  # at the close: visible
        "2019-01-04T16:00:01-05:00,XOM,Exxon one second late,0.2,\n"
        "2019-01-07T09:00:00-05:00,AAPL,Apple next week,0.5,\n"
    )
    events = load_news(path)
    box = toolbox(news=events)
    out = call(box, "get_news")
    assert [i["headline"] for i in out["items"]] == [
        "J&J at the close",
        "Apple cuts revenue guidance",
    ]
    first = out["items"][1]
    assert first == {
        "published_at": "2019-01-03T15:00:00Z",
        "symbol": "AAPL",
        "headline": "Apple cuts revenue guidance",
        "score": -0.8,
        "event": "guidance",
    }
    assert out["items"][0]["score"] is None
    assert call(box, "get_news", {"symbols": ["XOM"]})["items"] == []
    assert len(call(box, "get_news", {"limit": 1})["items"]) == 1
    assert [i["symbol"] for i in call(box, "get_news", {"end": "2019-01-03"})["items"]] == ["AAPL"]
    assert call(box, "get_news", {"end": "2019-01-07"})["look_ahead"] is True
    assert "get_news" not in toolbox().tools  # no news, no news tool


# ------------------------------------------------------------ portfolio and rules
def test_portfolio_and_rules():
    box = toolbox()
    p = call(box, "get_portfolio")
    assert p["nav"] == p["cash"] == p["initial_cash"] and p["total_return"] == 0.0
    assert p["weights"] == {"AAPL": 0.0, "JNJ": 0.0, "XOM": 0.0, "CASH": 1.0}
    r = call(box, "get_rules")
    assert r["rules"]["execution"] == "next_close" and r["tradable"] == list(SYMBOLS)
    assert r["decision"] == f"after the close of {DECISION}" and r["risk"] is None
    env = PortfolioEnv(DATA, window=5, start=DECISION, episode_length=None, random_start=False)
    env.reset()
    from_env = Toolbox.from_env(env)
    assert from_env.date == DECISION and isinstance(call(from_env, "get_rules")["risk"], dict)


# ---------------------------------------------------------------------- calculator
def test_the_calculator_does_arithmetic():
    box = toolbox()
    value = call(box, "calculate", {"expression": "(110 / 100 - 1) * 100"})["value"]
    assert value == pytest.approx(10.0)
    assert call(box, "calculate", {"expression": "mean(1, 2, 6) + max(2, 5) ** 2"})["value"] == 28
    assert call(box, "calculate", {"expression": "sqrt(16) + log(e)"})["value"] == 5.0


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('echo pwned')",
        "().__class__.__bases__[0].__subclasses__()",
        "(lambda: 1)()",
        "open('/etc/passwd').read()",
        "'a' * 10",
        "x + 1",
        "[i for i in range(10)]",
        "1 / 0",
        "10 ** 10 ** 10",
        "exp(1000)",
        "1 +",
    ],
)
def test_the_calculator_rejects_code(expression):
    box = toolbox()
    out = call(box, "calculate", {"expression": expression})
    assert out["argument"] == "expression" and "error" in out, out


# -------------------------------------------------------------------------- action
def test_target_weights_end_the_decision():
    box = toolbox()
    out = call(box, ACTION_TOOL, {"weights": {"aapl": 0.5, "JNJ": 0.3}, "confidence": 0.7})
    assert out["accepted"] is True and out["weights"] == {"AAPL": 0.5, "JNJ": 0.3, "CASH": 0.2}
    assert box.action is not None and box.action.confidence == 0.7
    np.testing.assert_allclose(box.action.weights, [0.5, 0.3, 0.0, 0.2])
    again = call(box, ACTION_TOOL, {"weights": {"XOM": 1.0}})
    assert "ended" in again["error"]
    np.testing.assert_allclose(box.action.weights, [0.5, 0.3, 0.0, 0.2])


@pytest.mark.parametrize(
    ("weights", "argument"),
    [
        ({"AAPL": 0.7, "JNJ": 0.7}, "weights"),
        ({"AAPL": 0.5, "CASH": 0.4}, "weights"),
        ({"AAPL": -0.1, "CASH": 1.1}, "weights.AAPL"),
        ({"MSFT": 0.5}, "weights.MSFT"),
    ],
)
def test_bad_target_weights_leave_the_decision_open(weights, argument):
    box = toolbox()
    out = call(box, ACTION_TOOL, {"weights": weights})
    assert out["argument"] == argument and box.action is None, out
    assert call(box, ACTION_TOOL, {"weights": {"CASH": 1.0}})["accepted"] is True


# ---------------------------------------------------------------------------- exports
def test_exports():
    box = toolbox()
    tools = box.openai_tools()
    assert [t["function"]["name"] for t in tools] == list(box.tools)
    assert all(t["type"] == "function" for t in tools)
    prices = tools[0]["function"]["parameters"]
    assert prices["type"] == "object" and prices["additionalProperties"] is False
    assert "title" not in json.dumps(prices)
    specs = box.tool_specs()
    assert [s["name"] for s in specs] == list(box.tools)
    assert specs[0]["input_schema"] == prices


def test_a_snapshot_of_another_panel_is_refused():
    box = toolbox()
    with pytest.raises(ValueError, match="not row"):
        Toolbox(DATA.slice(start="2018-06-01"), box.snapshot)


# ----------------------------------------------------------------------- look-ahead
CALLS = [
    ("get_prices", {"last": 30}),
    ("get_prices", {"start": "2018-10-01"}),
    ("get_indicator", {"name": "rsi_14", "last": 20}),
    ("get_indicator", {"name": "macd_hist_12_26_9", "last": 20}),
    ("get_indicator", {"name": "log_return_z", "last": 20}),
    ("get_indicator", {"name": "xs_rank_5", "last": 5}),
    ("get_portfolio", {}),
    ("get_rules", {}),
    ("get_prices", {"end": "2019-01-08"}),
    (ACTION_TOOL, {"weights": {"AAPL": 1.0}}),
]


def test_perturbing_every_later_price_changes_no_output():
    future = perturbed_after(DATA, T)
    assert not np.array_equal(future.close[T + 1 :], DATA.close[T + 1 :])
    a, b = toolbox(DATA), toolbox(future)
    for name, args in CALLS:
        assert json.dumps(call(a, name, args)) == json.dumps(call(b, name, args)), name
    assert json.dumps(a.openai_tools()) == json.dumps(b.openai_tools())
