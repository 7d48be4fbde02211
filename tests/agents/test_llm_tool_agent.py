"""The ``llm-tools:`` agent's loop against the scripted OpenAI-compatible server
(tests/agents/conftest.py; a scripted list is a model calling tools).

Short real backtests (3 stocks, daily decisions): a valid sequence of tool calls ending in
``set_target_weights`` is traded, malformed calls and unknown tools are answered and the model
recovers, every budget ends in the recorded hold, look-ahead is refused and counted, the
conversation does not depend on later prices, and a replay from the cache needs no server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from html import escape as html_escape
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from marketarena.agents import llm_agent
from marketarena.agents.base import Resumable
from marketarena.agents.llm_agent import LLMConfig
from marketarena.agents.llm_cache import LLMCacheMiss
from marketarena.agents.llm_server import LocalLLMServer, LocalLLMUnavailable, free_port
from marketarena.agents.llm_tool_agent import TOOL_OPTIONS, LLMToolAgent, LLMToolConfig
from marketarena.agents.llm_tools import ACTION_TOOL, Toolbox
from marketarena.agents.registry import make_agent
from marketarena.envs import PortfolioEnv
from marketarena.envs.data import MarketData, load_dataset
from marketarena.envs.errors import ConfigError
from marketarena.evaluation.runner import run_backtest

SYMBOLS = ("AAPL", "JNJ", "XOM")
DATA = load_dataset("sp500_20").select(SYMBOLS)
START, END = "2019-01-02", "2019-01-04"  # 2 decisions: 2019-01-02 and 2019-01-03
FIRST = "2019-01-02"
TARGET = {"AAPL": 0.5, "JNJ": 0.3, "XOM": 0.2}
ACT = [(ACTION_TOOL, {"weights": TARGET})]
CASH_ONLY = [(ACTION_TOOL, {"weights": {"CASH": 1.0}})]


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(llm_agent, "_semaphores", {})


def make(base_url: str, tmp_path: Path, **kwargs: Any) -> LLMToolAgent:
    settings = {
        "model": "scripted",
        "base_url": base_url,
        "max_retries": 0,
        "timeout": 5.0,
        "cache_path": str(tmp_path / "llm_cache.sqlite"),
    }
    return LLMToolAgent(LLMToolConfig(**{**settings, **kwargs}))


def backtest(agent: Any, data: MarketData = DATA, end: str = END):
    return run_backtest(agent, {"data": data, "window": 5}, START, end)


class Scripted:
    """An agent returning fixed actions, one a step: the independent path to what a tool
    agent's actions must trade to."""

    name = "scripted"

    def __init__(self, *actions: list[float]) -> None:
        self.actions = [np.asarray(a, dtype=float) for a in actions]

    def reset(self, *, seed=None) -> None:
        self.step = 0

    def act(self, observation, info):
        self.step += 1
        return self.actions[self.step - 1]


def first_box(data: MarketData = DATA) -> Toolbox:
    env = PortfolioEnv(
        data, window=5, start=START, episode_length=None, random_start=False, snapshot_lookback=1
    )
    return Toolbox(data, env.reset()[1]["snapshot"])


def transcripts(log: list[dict]) -> list[list[dict]]:
    """The decisions' transcripts without the turns' ``cached`` flags."""
    return [[{k: v for k, v in t.items() if k != "cached"} for t in d["transcript"]] for d in log]


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


# ---------------------------------------------------------------------------- valid
def test_a_valid_sequence_is_traded(llm_server, tmp_path):
    llm_server.script(
        [("get_prices", {"symbols": ["AAPL"], "last": 3})],
        [("get_indicator", {"name": "rsi_14"}), ("calculate", {"expression": "1 - 0.5 - 0.3"})],
        ACT,
        then=CASH_ONLY,
    )
    agent = make(llm_server.base_url, tmp_path, prices={"scripted": (1.0, 2.0)})
    result = backtest(agent)
    # traded as the same actions given directly are
    expected = backtest(Scripted([0.5, 0.3, 0.2, 0.0], [0, 0, 0, 1]))
    np.testing.assert_array_equal(result.weights, expected.weights)
    np.testing.assert_array_equal(result.nav, expected.nav)
    assert result.turnover[0] > 0.9 and result.weights[2, -1] == 1.0
    first, second = agent.decisions
    assert first.outcome == "ok" and first.turns == 3 and first.tool_calls == 4
    assert first.prompt_tokens == 300 and first.completion_tokens == 60
    assert first.cost == pytest.approx((300 * 1.0 + 60 * 2.0) / 1e6)
    assert second.outcome == "ok" and second.turns == 1

    # what the model read back: the tools' results, as the toolbox gives them
    bodies = [r.body for r in llm_server.requests]
    assert len(bodies) == 4
    box = first_box()
    expected = box.dispatch("get_prices", {"symbols": ["AAPL"], "last": 3})
    assert json.loads(tool_messages(bodies[1])[0]["content"]) == expected
    assert expected["close"]["AAPL"][-1] == round(float(DATA.close[DATA.index_of(FIRST), 0]), 6)
    assert json.loads(tool_messages(bodies[2])[2]["content"])["value"] == pytest.approx(0.2)
    assert bodies[0]["tools"] == box.openai_tools() and bodies[0]["tool_choice"] == "auto"
    assert FIRST in bodies[0]["messages"][0]["content"]

    # the record: the transcript of every turn, in the run's diagnostics
    log = agent.diagnostics()["log"][0]
    assert [len(t["calls"]) for t in log["transcript"]] == [1, 2, 1]
    assert log["transcript"][2]["calls"][0]["result"]["accepted"] is True
    assert result.diagnostics["tool_calls"] == 5 and result.diagnostics["fallbacks"] == 0


def test_malformed_arguments_are_fed_back_and_the_model_recovers(llm_server, tmp_path):
    llm_server.script(
        [(ACTION_TOOL, '{"weights": {"AAPL": 0.5,')],  # cut-off JSON
        [(ACTION_TOOL, {"weights": {"AAPL": 2.0}})],  # not a weight
        ACT,
        then=CASH_ONLY,
    )
    agent = make(llm_server.base_url, tmp_path)
    result = backtest(agent)
    expected = backtest(Scripted([0.5, 0.3, 0.2, 0.0], [0, 0, 0, 1]))
    np.testing.assert_array_equal(result.weights, expected.weights)
    first = agent.decisions[0]
    assert first.outcome == "ok" and first.tool_errors == 2 and first.turns == 3
    errors = [json.loads(m["content"]) for m in tool_messages(llm_server.requests[2].body)]
    assert "not JSON" in errors[0]["error"]
    assert errors[1]["argument"] == "weights.AAPL"


def test_an_unknown_tool_is_answered_and_the_model_recovers(llm_server, tmp_path):
    llm_server.script([("buy_stock", {"symbol": "AAPL"})], ACT, then=CASH_ONLY)
    agent = make(llm_server.base_url, tmp_path)
    backtest(agent)
    reply = json.loads(tool_messages(llm_server.requests[1].body)[0]["content"])
    assert "unknown tool 'buy_stock'" in reply["error"]
    assert agent.decisions[0].outcome == "ok" and agent.decisions[0].tool_errors == 1


# -------------------------------------------------------------------------- budgets
def assert_held(result) -> None:
    """Nothing traded: the portfolio stayed in cash."""
    np.testing.assert_array_equal(result.weights[:, -1], 1.0)
    assert (result.turnover == 0).all()


def test_a_loop_that_never_acts_spends_the_tool_budget_and_holds(llm_server, tmp_path):
    llm_server.script(then=[("get_portfolio", {}), ("get_rules", {})])
    agent = make(llm_server.base_url, tmp_path, max_tool_calls=3)
    result = backtest(agent, end="2019-01-03")
    assert_held(result)
    (d,) = agent.decisions
    assert d.outcome == "tool_budget" and "tool-call budget spent" in d.notes[0]
    bodies = [r.body for r in llm_server.requests]
    # 2 calls, then 1 run and 1 refused, then the last turn that must act
    assert len(bodies) == 3 and d.tool_calls == 3
    refused = json.loads(tool_messages(bodies[2])[-1]["content"])
    assert "budget of 3 tool calls is spent" in refused["error"]
    assert bodies[2]["tool_choice"] == {"type": "function", "function": {"name": ACTION_TOOL}}
    assert result.diagnostics["outcomes"]["tool_budget"] == 1


def test_text_without_tool_calls_counts_against_the_budget(llm_server, tmp_path):
    llm_server.script(then=[])
    agent = make(llm_server.base_url, tmp_path, max_tool_calls=2)
    assert_held(backtest(agent, end="2019-01-03"))
    assert agent.decisions[0].outcome == "tool_budget" and len(llm_server.requests) == 3
    assert llm_server.requests[1].body["messages"][-1]["role"] == "user"  # the reminder


def test_the_token_budget(llm_server, tool_calls_answer, tmp_path):
    llm_server.script(then=tool_calls_answer([("get_portfolio", {})], prompt_tokens=600))
    agent = make(llm_server.base_url, tmp_path, max_decision_tokens=1000)
    assert_held(backtest(agent, end="2019-01-03"))
    (d,) = agent.decisions
    assert d.outcome == "token_budget" and d.turns == 2 and len(llm_server.requests) == 2
    assert d.prompt_tokens == 1200


def test_the_wall_clock_budget(llm_server, tool_calls_answer, tmp_path):
    llm_server.script(then=tool_calls_answer([("get_portfolio", {})], delay=0.4))
    agent = make(llm_server.base_url, tmp_path, decision_seconds=1.0)
    assert_held(backtest(agent, end="2019-01-03"))
    (d,) = agent.decisions
    assert d.outcome == "time_budget" and 0.99 <= d.latency < 2.0
    assert len(llm_server.requests) == 3  # the third was cut at what was left


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_tool_calls", 0),
        ("max_tool_calls", "3"),
        ("max_decision_tokens", 2.5),
        ("decision_seconds", 0),
        ("decision_seconds", "60"),
        ("tool_choice", "none"),
    ],
)
def test_bad_budgets_are_config_errors_naming_them(option, value):
    with pytest.raises(ConfigError, match=option):
        LLMToolConfig(**{option: value})


@dataclass
class Failure:
    """A scripted HTTP error reply."""

    status: int
    body: dict = field(default_factory=lambda: {"error": {"message": "scripted", "code": 500}})
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


def test_a_failed_turn_holds_and_is_asked_again_on_a_rerun(llm_server, tmp_path):
    llm_server.script([("get_portfolio", {})], Failure(500), [("get_portfolio", {})], ACT)
    agent = make(llm_server.base_url, tmp_path)
    assert_held(backtest(agent, end="2019-01-03"))
    (d,) = agent.decisions
    assert d.outcome == "server_error" and d.turns == 2 and "HTTP 500" in d.notes[0]
    assert d.transcript[-1]["error"] == "server_error"
    rerun = make(llm_server.base_url, tmp_path)  # the first turn replays, the failed one not
    result = backtest(rerun, end="2019-01-03")
    assert rerun.decisions[0].outcome == "ok" and result.turnover[0] > 0.9
    assert [t["cached"] for t in rerun.decisions[0].transcript] == [True, False, False]
    assert len(llm_server.requests) == 4


# ----------------------------------------------------------------------- look-ahead
def test_a_request_for_the_future_is_refused_and_counted(llm_server, tmp_path):
    llm_server.script([("get_prices", {"end": "2019-01-10"})], ACT)
    agent = make(llm_server.base_url, tmp_path)
    backtest(agent, end="2019-01-03")
    (d,) = agent.decisions
    assert d.outcome == "ok" and d.look_ahead_refusals == 1
    refusal = json.loads(tool_messages(llm_server.requests[1].body)[0]["content"])
    assert refusal["look_ahead"] is True and refusal["argument"] == "end"
    assert agent.diagnostics()["look_ahead_refusals"] == 1


def test_later_prices_change_no_prompt_result_or_transcript(make_llm_server, tmp_path):
    t = DATA.index_of(FIRST)
    rng = np.random.default_rng(7)
    close = np.array(DATA.close)
    close[t + 1 :] *= rng.uniform(0.5, 1.5, close[t + 1 :].shape)
    future = MarketData(dates=DATA.dates, symbols=DATA.symbols, close=close, name=DATA.name)
    script = (
        [("get_prices", {"last": 30}), ("get_prices", {"end": "2019-02-01"})],
        [("get_indicator", {"name": "rsi_14", "last": 10}), ("get_portfolio", {})],
        [("get_indicator", {"name": "macd_hist_12_26_9", "last": 5}), ("get_rules", {})],
        ACT,
    )
    runs = []
    for name, data in (("real", DATA), ("future", future)):
        server = make_llm_server().script(*script)
        agent = make(server.base_url, tmp_path / name)
        backtest(agent, data, end="2019-01-03")
        bodies = [json.dumps(r.body, sort_keys=True) for r in server.requests]
        runs.append((bodies, json.dumps(agent.diagnostics()["log"][0]["transcript"])))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 4


# ------------------------------------------------------------------------- replay
def test_a_replay_from_the_cache_needs_no_server(llm_server, tmp_path):
    llm_server.script([("get_prices", {"last": 2})], ACT, then=CASH_ONLY)
    live_agent = make(llm_server.base_url, tmp_path)
    live = backtest(live_agent)
    gone = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens there
    replay_agent = make(gone, tmp_path, cache_mode="read_only")
    replay = backtest(replay_agent)
    np.testing.assert_array_equal(replay.nav, live.nav)
    np.testing.assert_array_equal(replay.weights, live.weights)
    strip = ("latency", "cached", "transcript")
    logs = [a.diagnostics()["log"] for a in (live_agent, replay_agent)]
    assert transcripts(logs[0]) == transcripts(logs[1])
    assert [{k: v for k, v in d.items() if k not in strip} for d in logs[0]] == [
        {k: v for k, v in d.items() if k not in strip} for d in logs[1]
    ]
    assert all(d.cached for d in replay_agent.decisions)
    assert not any(d.cached for d in live_agent.decisions)
    # another budget is another system prompt: a conversation the cache has never seen
    other = make(gone, tmp_path, cache_mode="read_only", max_tool_calls=5)
    with pytest.raises(LLMCacheMiss):
        backtest(other)


def test_a_resumed_agent_goes_on_as_the_uninterrupted_one(llm_server, tmp_path):
    llm_server.script(ACT, then=CASH_ONLY)
    agent = make(llm_server.base_url, tmp_path)
    backtest(agent)
    assert isinstance(agent, Resumable)
    state = agent.get_state()
    assert "_data" not in state and "cache" not in state
    again = make(llm_server.base_url, tmp_path)
    again.set_state(state)
    assert again.diagnostics() == agent.diagnostics()


# ---------------------------------------------------------------------------- spec
def test_the_agent_spec(llm_server):
    agent = make_agent("llm-tools:gpt-x", llm_options={"base_url": llm_server.base_url})
    assert isinstance(agent, LLMToolAgent) and agent.name == "llm-tools:gpt-x"
    with pytest.raises(ConfigError, match="name the model"):
        make_agent("llm-tools:")
    with pytest.raises(ConfigError, match="base_url"):
        make_agent("llm-tools:local")
    # one options mapping for llm: and llm-tools: agents side by side
    options = {"base_url": llm_server.base_url, "max_tool_calls": 3, "decision_seconds": 9.0}
    assert make_agent("llm-tools:m", llm_options=options).config.max_tool_calls == 3
    assert make_agent("llm:m", llm_options=options).name == "llm:m"
    assert set(TOOL_OPTIONS) == {f.name for f in fields(LLMToolConfig)} - {
        f.name for f in fields(LLMConfig)
    }


# ----------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def local_server():
    try:
        server = LocalLLMServer(threads=1).start()
    except LocalLLMUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.mark.slow
def test_the_real_local_model_runs_the_loop_and_replays_offline(local_server, tmp_path):
    """SmolLM2-135M behind llama.cpp: its server ignores ``tools`` for this model, so the model
    answers in text; the loop reminds it, spends the (small) budget and holds, every turn is
    recorded with real token counts, and an offline replay from the cache is exact."""
    settings = {
        "model": local_server.model_name,
        "max_tokens": 40,
        "max_tool_calls": 1,
        "timeout": 120.0,
        "max_retries": 0,
        "cache_path": str(tmp_path / "llm_cache.sqlite"),
    }
    agent = LLMToolAgent(LLMToolConfig(base_url=local_server.base_url, **settings))
    live = backtest(agent, end="2019-01-04")
    assert len(live.nav) == 3 and np.isfinite(live.nav).all()
    for d in agent.decisions:
        assert d.outcome in ("ok", "tool_budget"), agent.diagnostics()["log"]
        assert d.prompt_tokens > 0 and d.completion_tokens > 0 and not d.cached
        assert d.turns == len(d.transcript) >= 1
    held = [d.outcome == "tool_budget" for d in agent.decisions]
    if all(held):  # nothing traded: the fallback holds the starting cash
        np.testing.assert_array_equal(live.weights[:, -1], 1.0)

    gone = f"http://127.0.0.1:{free_port()}/v1"
    offline = LLMToolAgent(LLMToolConfig(base_url=gone, **{**settings, "cache_mode": "read_only"}))
    replay = backtest(offline, end="2019-01-04")
    np.testing.assert_array_equal(replay.nav, live.nav)
    np.testing.assert_array_equal(replay.weights, live.weights)
    assert [d.transcript for d in offline.decisions] == [
        [{**t, "cached": True} for t in d.transcript] for d in agent.decisions
    ]


# --------------------------------------------------------------------- saved runs
def test_a_saved_run_carries_the_transcripts_and_continues_as_one_run(llm_server, tmp_path):
    from marketarena.evaluation.saved_runs.persisted import (
        continue_backtest,
        load_result,
        start_backtest,
    )
    from marketarena.evaluation.saved_runs.store import RunStore

    llm_server.script(then=[("get_prices", {"last": 2}), *ACT])
    llm = {"base_url": llm_server.base_url, "cache_path": str(tmp_path / "c.sqlite")}
    store = RunStore(tmp_path / "runs.sqlite")
    args = {"universe": SYMBOLS, "llm": llm, "window": 5}
    try:
        start_backtest(store, "whole", "llm-tools:m", "sp500_20", START, "2019-01-08", **args)
        start_backtest(store, "parts", "llm-tools:m", "sp500_20", START, END, **args)
        continue_backtest(store, "parts", "2019-01-08")  # from the saved agent state
        whole, parts = load_result(store, "whole"), load_result(store, "parts")
    finally:
        store.close()
    np.testing.assert_array_equal(parts.nav, whole.nav)
    np.testing.assert_array_equal(parts.weights, whole.weights)
    log = whole.diagnostics["log"]
    assert [d["date"] for d in log] == ["2019-01-02", "2019-01-03", "2019-01-04", "2019-01-07"]
    assert transcripts(parts.diagnostics["log"]) == transcripts(log)  # "parts" replayed "whole"
    calls = log[0]["transcript"][0]["calls"]
    assert [c["name"] for c in calls] == ["get_prices", ACTION_TOOL]
    assert calls[0]["result"]["dates"] == ["2018-12-31", "2019-01-02"]


# ------------------------------------------------------------------------- tracing
@pytest.mark.slow  # MLflow's store takes seconds to create
def test_each_decision_is_one_mlflow_trace_of_the_whole_conversation(
    llm_server, tmp_path, monkeypatch
):
    import mlflow

    from marketarena.agents import llm_tracing

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(llm_tracing.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    try:
        llm_server.script([("get_portfolio", {})], ACT, then=[("get_rules", {})])
        agent = make(llm_server.base_url, tmp_path, max_tool_calls=1)
        exp_id = mlflow.MlflowClient().create_experiment("tool-traces")
        with llm_tracing.llm_tracing(exp_id) as ids:
            backtest(agent)
        found = mlflow.search_traces(locations=[exp_id], return_type="list")
    finally:
        mlflow.set_tracking_uri(None)
    assert len(found) == len(ids) == 2
    by_date = {t.info.tags["marketarena.date"]: t for t in found}
    assert {d: t.info.tags["marketarena.outcome"] for d, t in by_date.items()} == {
        "2019-01-02": "ok",
        "2019-01-03": "tool_budget",
    }
    (span,) = by_date["2019-01-02"].data.spans
    messages = span.inputs["messages"]
    roles = ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert [m["role"] for m in messages] == roles
    assert json.loads(messages[-1]["content"])["accepted"] is True
    assert span.attributes["prompt_tokens"] == 200


# ---------------------------------------------------------------------------- news
def test_with_news_the_model_can_read_the_items_published_by_the_close(llm_server, tmp_path):
    news = tmp_path / "news.csv"
    news.write_text(
        "published_at,symbol,headline\n"
        "2019-01-02T15:59:00-05:00,AAPL,Apple before the close\n"
        "2019-01-02T16:30:00-05:00,AAPL,Apple after the close\n"
    )
    llm_server.script([("get_news", {"symbols": ["AAPL"]})], ACT)
    agent = make(llm_server.base_url, tmp_path, news=str(news))
    backtest(agent, end="2019-01-03")
    first = llm_server.requests[0].body
    assert "get_news" in [t["function"]["name"] for t in first["tools"]]
    assert ", news," in first["messages"][0]["content"]
    items = json.loads(tool_messages(llm_server.requests[1].body)[0]["content"])["items"]
    assert [i["headline"] for i in items] == ["Apple before the close"]


def test_the_bundled_evaluation_config_builds_the_agent(llm_server):
    from marketarena.evaluation.evaluate import load_evaluation_file

    root = Path(__file__).resolve().parents[2]
    settings = load_evaluation_file(root / "configs" / "evaluate" / "llm_tools_local.yaml")
    assert settings["agents"] == ("llm-tools:local",)
    options = {**settings["llm"], "base_url": llm_server.base_url}
    agent = make_agent("llm-tools:local", llm_options=options)
    assert agent.name == "llm-tools:smollm2" and agent.config.max_tool_calls == 2


def test_the_report_shows_each_decision_s_tool_calls_and_results(llm_server, tmp_path):
    """The report renders an llm-tools run's log through the team's transcript path: a
    collapsed HTML section per decision and transcripts_<agent>.md, with every tool call's
    arguments and the result the model read."""
    from marketarena.evaluation.report import EvaluationReport
    from marketarena.evaluation.runner import AgentEvaluation

    llm_server.script([("calculate", {"expression": "1 - 0.5 - 0.3"})], ACT, then=CASH_ONLY)
    agent = make(llm_server.base_url, tmp_path)
    result = backtest(agent)
    report = EvaluationReport("tools", [AgentEvaluation(agent.name, [result])])
    page = report.html()
    assert "<h2>Transcripts: llm-tools:scripted</h2>" in page
    assert page.count("<details><summary>") == 2 and "2019-01-03: ok" in page
    files = report.write(tmp_path / "report", results=False)
    markdown = files["transcripts:llm-tools:scripted"].read_text()
    assert markdown.startswith("# Transcripts: llm-tools:scripted\n\n## 2019-01-02: ok\n")
    first = markdown.split("## 2019-01-03")[0]
    # the calls with their arguments and the results the model read, as the toolbox gives them
    calc = first_box().dispatch("calculate", {"expression": "1 - 0.5 - 0.3"})
    assert '- tool `calculate`({"expression": "1 - 0.5 - 0.3"})' in first
    assert f"  → {calc}" in first and calc["value"] == pytest.approx(0.2)
    assert f"- tool `set_target_weights`({json.dumps({'weights': TARGET})})" in first
    assert "'accepted': True" in first
    assert "### model (round 1): ok" in first and "### model (round 2): ok" in first
    log = agent.diagnostics()["log"][0]
    totals = f"tokens: {log['prompt_tokens']:,} + {log['completion_tokens']:,}"
    assert f"turns: 2, tool calls: 2; {totals}" in first
    assert html_escape(f"  → {calc}") in page
    # an agent without a transcript shows none
    fixed = backtest(Scripted([1, 0, 0, 0], [1, 0, 0, 0]))
    plain = EvaluationReport("plain", [AgentEvaluation("x", [fixed])])
    assert "Transcripts" not in plain.html()
