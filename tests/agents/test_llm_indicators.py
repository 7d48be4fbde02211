"""Indicators in LLM prompts: ``LLMConfig(indicators=...)`` / ``--llm-indicator`` shows each
indicator's value at the decision's close per symbol, computed once over the env's data;
point-in-time, data columns allowed, unknown names refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

from marketarena.agents.llm_agent import LLMAgent, LLMConfig
from marketarena.cli import main
from marketarena.envs.data import MarketData, load_dataset
from marketarena.envs.errors import ConfigError
from marketarena.envs.indicators import compute_indicator
from marketarena.envs.news import add_feature_columns
from marketarena.envs.portfolio_env import PortfolioEnv

DATA = load_dataset("sp500_20").select(("AAPL", "JNJ", "XOM")).slice("2018-06-01", "2019-06-28")


def agent_for(**settings) -> LLMAgent:
    return LLMAgent(LLMConfig(cache_path=None, **settings))


def prompts(agent: LLMAgent, data: MarketData, n: int = 4) -> list[str]:
    """The user messages of the first ``n`` decisions from 2019-01-02, holding cash."""
    env = PortfolioEnv(
        data,
        window=1,
        random_start=False,
        episode_length=None,
        start="2019-01-02",
        snapshot_lookback=agent.snapshot_lookback,
    )
    agent.use_data(env.data)
    info = env.reset()[1]
    out = [agent.prompt(info["snapshot"])[1]["content"]]
    for _ in range(n - 1):
        info = env.step(env.current_weights())[4]
        out.append(agent.prompt(info["snapshot"])[1]["content"])
    return out


def table(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("Indicators at this session's close:")
    return lines[start + 1 : start + 5]


def test_the_prompt_shows_each_indicator_at_the_decision():
    text = prompts(agent_for(indicators=("rsi_14", "macd_hist_12_26_9")), DATA, 1)[0]
    row = DATA.index_of("2019-01-02")
    rsi = compute_indicator(DATA, "rsi_14")[row]
    hist = compute_indicator(DATA, "macd_hist_12_26_9")[row]
    expected = ["symbol rsi_14 macd_hist_12_26_9"] + [
        f"{s} {rsi[j]:.2f} {hist[j]:.2f}" for j, s in enumerate(DATA.symbols)
    ]
    assert table(text) == expected
    assert rsi.min() > 0 and rsi.max() < 100


def test_without_indicators_the_prompt_has_no_table():
    assert "Indicators at" not in prompts(agent_for(), DATA, 1)[0]


def test_the_indicators_read_no_future(perturb_future):
    agent = agent_for(indicators=("rsi_14", "bb_pctb_20_2", "zscore_10"))
    t = DATA.index_of("2019-01-04")  # the third decision
    future = perturb_future(DATA, t)
    a, b = (
        prompts(agent, DATA, 5),
        prompts(agent_for(indicators=agent.config.indicators), future, 5),
    )
    assert [table(x) for x in a[:3]] == [table(x) for x in b[:3]]
    assert table(a[3]) != table(b[3])


def test_a_column_of_the_data_can_be_shown_and_an_unknown_name_is_refused():
    sentiment = np.zeros((DATA.n_periods, DATA.n_assets))
    sentiment[DATA.index_of("2019-01-02"), 1] = 0.25
    data = add_feature_columns(DATA, {"sentiment": sentiment}, "hand-made sentiment")
    text = prompts(agent_for(indicators=["sentiment"]), data, 1)[0]
    assert table(text)[:3] == ["symbol sentiment", "AAPL 0.00", "JNJ 0.25"]
    with pytest.raises(ConfigError, match=r"unknown prompt indicator\(s\) \['sentiment'\]"):
        agent_for(indicators=("sentiment",)).use_data(DATA)
    with pytest.raises(ConfigError, match="indicators must be names"):
        LLMConfig(indicators=("rsi_14", 3))


def test_the_cli_flag_reaches_the_agent_and_a_bad_name_is_one_line(tmp_path, monkeypatch, capsys):
    # the CLI's own console (no console passed): "llm:m:" stays as typed, not an emoji
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    argv = [
        "evaluate", "--agent", "llm:m", "--base-url", "http://127.0.0.1:9/v1",
        "--start", "2019-01-02", "--end", "2019-01-10", "--llm-indicator", "rsx_14",
        "--output", str(tmp_path / "out"), "--llm-cache", "",
    ]  # fmt: skip
    assert main(argv) == 1
    text = capsys.readouterr().out
    assert "Traceback" not in text
    assert "llm:m: 6 LLM requests" in text
    assert "error: llm:m: unknown prompt indicator(s) ['rsx_14']" in text
