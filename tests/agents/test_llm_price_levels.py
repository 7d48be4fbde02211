"""What price levels, dates and symbols an LLM prompt shows: rebased levels by default, raw
(point-in-time) closes where the data has them, sessions numbered over holidays, and a
point-in-time universe's unlisted symbols left out."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from marketarena.agents.llm_agent import LLMAgent, LLMConfig
from marketarena.agents.llm_cache import request_key
from marketarena.envs.data import (
    DataValidationError,
    DataWarning,
    MarketData,
    from_long_frame,
    load_dataset,
)
from marketarena.envs.errors import ConfigError
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.evaluation.saved_runs.persisted import continue_backtest, start_backtest
from marketarena.evaluation.saved_runs.store import RunStore


def agent_for(**settings) -> LLMAgent:
    return LLMAgent(LLMConfig(cache_path=None, **settings))


def env_for(data: MarketData, agent: LLMAgent, **settings) -> PortfolioEnv:
    return PortfolioEnv(
        data,
        window=1,
        features=("log_return",),
        random_start=False,
        episode_length=None,
        snapshot_lookback=agent.snapshot_lookback,
        **settings,
    )


def snapshots(env: PortfolioEnv, n: int) -> list:
    """The snapshots of the first ``n`` decisions, holding cash."""
    out = [env.reset()[1]["snapshot"]]
    for _ in range(n - 1):
        out.append(env.step(env.current_weights())[4]["snapshot"])
    return out


def user(agent: LLMAgent, snapshot) -> str:
    return agent.prompt(snapshot)[1]["content"]


def line(text: str, symbol: str) -> str:
    return next(x for x in text.splitlines() if x.startswith(f"{symbol} "))


# ------------------------------------------------------------------- bundled data
def test_aapl_on_2018_01_02_is_rebased_not_its_back_adjusted_close():
    """The bundled panel is back-adjusted: AAPL closes at 40.83 on 2018-01-02 (it traded near
    $172). The default prompt shows 100 x close / close 20 sessions before instead."""
    data = load_dataset("sp500_20")
    i, j = data.index_of("2018-01-02"), data.symbols.index("AAPL")
    assert f"{data.close[i, j]:.2f}" == "40.83"
    default, adjusted = agent_for(), agent_for(price_levels="adjusted")
    env = env_for(data, default, start="2018-01-02")
    snapshot = env.reset()[1]["snapshot"]
    assert snapshot.date == "2018-01-02"
    rebased_text, adjusted_text = user(default, snapshot), user(adjusted, snapshot)
    assert "40.83" not in json.dumps(default.prompt(snapshot))
    level = 100 * data.close[i, j] / data.close[i - 20, j]
    five = (data.close[i, j] / data.close[i - 5, j] - 1) * 100
    twenty = (data.close[i, j] / data.close[i - 20, j] - 1) * 100
    assert line(rebased_text, "AAPL") == f"AAPL {level:.2f} {five:+.1f} {twenty:+.1f}"
    assert line(adjusted_text, "AAPL") == f"AAPL 40.83 {five:+.1f} {twenty:+.1f}"
    assert "level: close rebased to 100 20 sessions ago\nsymbol level 5d 20d" in rebased_text
    # every symbol is 100-based: no level far from 100 over 20 sessions
    levels = [float(line(rebased_text, s).split()[1]) for s in data.symbols]
    assert all(70 < x < 130 for x in levels), levels


def test_raw_levels_need_raw_closes_in_the_data():
    data = load_dataset("sp500_20").select(["AAPL", "XOM"])
    agent = agent_for(price_levels="raw")
    snapshot = env_for(data, agent, start="2018-01-02").reset()[1]["snapshot"]
    with pytest.raises(ConfigError, match="price_levels='raw' needs unadjusted closes"):
        agent.prompt(snapshot)
    with pytest.raises(ConfigError, match="price_levels='nominal': choose one of"):
        LLMConfig(price_levels="nominal")  # type: ignore[arg-type]


# ------------------------------------------------------------- a split, by hand
DATES = pd.bdate_range("2024-01-01", periods=12).strftime("%Y-%m-%d").tolist()
ADJUSTED = [100.0 + i for i in range(12)]  # continuous through the split
FACTOR = [2.0] * 8 + [1.0] * 4  # a 2-for-1 split on row 8: raw = adjusted x factor
OTHER = [50.0 + 0.5 * i for i in range(12)]


def split_frame(column: str = "adjustment_factor") -> pd.DataFrame:
    rows = []
    for i, d in enumerate(DATES):
        value = FACTOR[i] if column == "adjustment_factor" else ADJUSTED[i] * FACTOR[i]
        rows.append({"date": d, "symbol": "S", "close": ADJUSTED[i], column: value})
        other = 1.0 if column == "adjustment_factor" else OTHER[i]
        rows.append({"date": d, "symbol": "T", "close": OTHER[i], column: other})
    return pd.DataFrame(rows)


def test_a_split_halves_the_raw_close_while_the_adjusted_close_runs_on():
    data = from_long_frame(split_frame())
    raw = data.raw_close
    assert raw is not None and data.adjustment_factor is not None
    np.testing.assert_array_equal(
        raw[:, 0], [200, 202, 204, 206, 208, 210, 212, 214, *ADJUSTED[8:]]
    )
    np.testing.assert_array_equal(data.close[:, 0], ADJUSTED)
    np.testing.assert_array_equal(data.adjustment_factor[:, 0], FACTOR)
    # the same data from raw closes instead of factors
    again = from_long_frame(split_frame("raw_close"))
    np.testing.assert_array_equal(again.raw_close, raw)
    assert data.feature_names == ("raw_close",)


def test_raw_levels_show_the_price_of_the_day_and_returns_stay_adjusted():
    data = from_long_frame(split_frame())
    raw, adjusted = agent_for(lookback=5, price_levels="raw"), agent_for(lookback=5)
    env = env_for(data, raw)
    by_date = {s.date: s for s in snapshots(env, 10)}
    before, after = by_date[DATES[7]], by_date[DATES[8]]
    five_after = (ADJUSTED[8] / ADJUSTED[3] - 1) * 100  # +4.9, not the raw -47.6
    assert line(user(raw, before), "S").startswith("S 214.00 ")
    assert line(user(raw, after), "S") == f"S 108.00 {five_after:+.1f} n/a"
    assert line(user(adjusted, after), "S") == f"S {100 * 108 / 103:.2f} {five_after:+.1f} n/a"
    assert "symbol close 5d 20d" in user(raw, after)


def test_raw_prompts_know_nothing_after_their_date():
    data = from_long_frame(split_frame())
    frame = split_frame()
    later = frame["date"] > DATES[6]
    frame.loc[later, "close"] *= 1.7
    frame.loc[later, "adjustment_factor"] = 3.0
    changed = from_long_frame(frame)
    a, b = agent_for(lookback=5, price_levels="raw"), agent_for(lookback=5, price_levels="raw")
    first = [a.prompt(s) for s in snapshots(env_for(data, a), 9)]
    second = [b.prompt(s) for s in snapshots(env_for(changed, b), 9)]
    assert first[:6] == second[:6]  # decisions on rows 1..6
    assert first[6] != second[6]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("adjustment_factor", 0.0, "S: adjustment_factor is missing or not positive on 2024-01-03"),
        ("raw_close", -5.0, "S: raw_close is missing or not positive on 2024-01-03"),
    ],
)
def test_bad_raw_columns_name_the_symbol_and_date(column, value, message):
    frame = split_frame(column)
    frame.loc[(frame["symbol"] == "S") & (frame["date"] == DATES[2]), column] = value
    with pytest.raises(DataValidationError, match=message):
        from_long_frame(frame)


def test_raw_closes_and_factors_that_disagree_are_refused():
    frame = split_frame().assign(raw_close=lambda f: f["close"] * f["adjustment_factor"])
    frame.loc[(frame["symbol"] == "T") & (frame["date"] == DATES[4]), "raw_close"] = 99.0
    with pytest.raises(DataValidationError, match=r"T: raw_close 99 on 2024-01-05 is not close x"):
        from_long_frame(frame)


# ----------------------------------------------------------------- the request
def test_the_cache_key_changes_with_the_price_levels():
    """The request body (the cache key) holds the messages, so prompts under other levels are
    other requests: an answer cached for adjusted levels is never replayed for rebased ones."""
    data = load_dataset("sp500_20").select(["AAPL", "XOM"])
    rebased, adjusted = agent_for(), agent_for(price_levels="adjusted")
    snapshot = env_for(data, rebased, start="2018-01-02").reset()[1]["snapshot"]

    def key(agent: LLMAgent) -> str:
        return request_key(agent.request(agent.prompt(snapshot), agent._builder_for(data.symbols)))

    assert key(rebased) != key(adjusted)
    assert key(rebased) == key(agent_for())
    assert rebased.diagnostics()["price_levels"] == "rebased"
    assert adjusted.diagnostics()["price_levels"] == "adjusted"


# -------------------------------------------------------------- hidden dates
HOLIDAY_DATES = ["2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05", "2024-07-08"]


def holiday_market(dates: list[str]) -> MarketData:
    close = np.array([[100.0 + i, 50.0 - i] for i in range(len(dates))])
    return MarketData(dates=dates, symbols=("A", "B"), close=close, name="holiday")


def label(agent: LLMAgent, snapshot) -> str:
    return user(agent, snapshot).splitlines()[0]


def test_hidden_dates_count_sessions_over_a_holiday():
    """2024-07-04 is no session: 07-03 and 07-05 are sessions 2 and 3 (weekdays would say 4)."""
    agent = agent_for(dates="hidden", lookback=2)
    shots = snapshots(env_for(holiday_market(HOLIDAY_DATES), agent), 4)
    assert [s.date for s in shots] == HOLIDAY_DATES[1:]
    assert [label(agent, s) for s in shots] == [f"Date: session {k}" for k in (1, 2, 3, 4)]
    assert np.busday_count("2024-07-02", "2024-07-05") == 3  # the old count's "session 4"


def test_a_resumed_and_a_continued_agent_go_on_counting():
    """An agent restored from its state after two decisions numbers the third session 3, on
    the same data (resume) and on data that grew by two sessions (continue)."""
    config = LLMConfig(cache_path=None, dates="hidden", lookback=2)
    agent = LLMAgent(config)
    shots = snapshots(env_for(holiday_market(HOLIDAY_DATES), agent), 4)
    assert [label(agent, s) for s in shots[:2]] == ["Date: session 1", "Date: session 2"]
    state = agent.get_state()

    resumed = LLMAgent(config)
    resumed.set_state(state)
    assert [label(resumed, s) for s in shots[2:]] == ["Date: session 3", "Date: session 4"]

    grown = holiday_market([*HOLIDAY_DATES, "2024-07-09", "2024-07-10"])
    continued = LLMAgent(config)
    continued.set_state(state)
    later = snapshots(env_for(grown, continued), 6)[2:]
    assert [label(continued, s) for s in later] == [f"Date: session {k}" for k in (3, 4, 5, 6)]


# ------------------------------------------------------- a point-in-time universe
PIT_DATES = pd.bdate_range("2024-01-01", periods=12).strftime("%Y-%m-%d").tolist()


def pit_market() -> MarketData:
    """A trades throughout; B is listed from row 3; C is delisted after row 5."""
    rows = []
    for i, d in enumerate(PIT_DATES):
        rows.append({"date": d, "symbol": "A", "close": 10.0 + i})
        if i >= 3:
            rows.append({"date": d, "symbol": "B", "close": 20.0 + i})
        if i <= 5:
            rows.append({"date": d, "symbol": "C", "close": 30.0 + i})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return from_long_frame(pd.DataFrame(rows), missing="point_in_time")


def test_the_prompt_offers_only_the_symbols_the_decision_can_trade():
    data = pit_market()
    agent = agent_for(lookback=5)
    env = env_for(data, agent)
    shots = {s.date: s for s in snapshots(env, 10)}

    early = shots[PIT_DATES[2]]  # B has no bar yet
    text = user(agent, early)
    assert "\nB " not in text and "A, C, CASH" in json.dumps(agent.prompt(early))
    builder = agent._builder_for(data.symbols)
    weights = builder.output_schema()["properties"]["weights"]
    assert weights["required"] == ["A", "C", "CASH"]

    listed = shots[PIT_DATES[7]]  # B's window starts before its first bar: 5d return n/a
    text = user(agent, listed)
    # rebased to 100 at the window's first row, which for B is its first close (23), filled
    assert line(text, "B") == f"B {100 * 27 / 23:.2f} n/a n/a"
    assert line(text, "A").split()[2] == f"{(17 / 12 - 1) * 100:+.1f}"
    assert "\nC " not in text and "A, B, CASH" in json.dumps(agent.prompt(listed))


def test_a_position_in_a_delisted_symbol_shows_as_sold_at_the_next_fill():
    data = pit_market()
    agent = agent_for(lookback=5)
    env = env_for(data, agent)
    env.reset()
    info = env.step(np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32))[4]  # all in C
    while info["snapshot"].date != PIT_DATES[5]:
        info = env.step(np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32))[4]
    text = user(agent, info["snapshot"])
    assert "\nC " not in text  # its last bar: it cannot be traded any more
    assert re.search(r"Current weights: C 100\.0% \(not tradable: sold at the next fill\)", text)


def test_a_persisted_run_numbers_sessions_on_through_a_continue(
    llm_server, tmp_path, monkeypatch, weights_answer
):
    """A stored run with hidden dates over 2024-07-02..07-05, continued to 07-11: its prompts
    number the sessions 1, 2, ... with no gap at the 4 July holiday nor at the continue."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    dates = [d for d in pd.bdate_range("2024-07-01", "2024-07-12").strftime("%Y-%m-%d")]
    dates.remove("2024-07-04")
    rows = [
        {"date": d, "symbol": s, "close": base + i}
        for i, d in enumerate(dates)
        for s, base in (("A", 100.0), ("B", 50.0))
    ]
    path = tmp_path / "holiday.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    llm_server.script(then=weights_answer({"A": 0.0, "B": 0.0, "CASH": 1.0}))
    llm = {
        "base_url": llm_server.base_url,
        "dates": "hidden",
        "lookback": 2,
        "cache_path": str(tmp_path / "llm_cache.sqlite"),
        "max_retries": 0,
    }
    store = RunStore(tmp_path / "runs.sqlite")
    settings = {"window": 1, "features": ("log_return",)}
    start_backtest(
        store, "h", "llm:scripted", str(path), "2024-07-02", "2024-07-05", llm=llm, **settings
    )
    assert len(llm_server.requests) == 2  # decisions on 07-02 and 07-03
    continue_backtest(store, "h", "2024-07-11")
    labels = [r.body["messages"][1]["content"].splitlines()[0] for r in llm_server.requests]
    # 07-02, 07-03, 07-05, 07-08, 07-09, 07-10: weekdays would make 07-05 session 4
    assert labels == [f"Date: session {k}" for k in range(1, 7)]
