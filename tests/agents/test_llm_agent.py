"""The LLM agent against a scripted OpenAI-compatible server (tests/agents/conftest.py).

Every fault runs a short real backtest (3 stocks, 5 daily decisions) and checks the recorded
outcome, that the backtest completed, and that a fallback really holds (no trades). Then:
secrets, concurrency, the cache, accounting, look-ahead, anonymisation and templates.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from marketarena.agents import llm_agent
from marketarena.agents.llm_agent import TOOL_NAME, LLMAgent, LLMConfig
from marketarena.agents.llm_cache import LLMCacheMiss
from marketarena.agents.llm_prompt import TEMPLATE_FIELDS
from marketarena.agents.llm_server import free_port
from marketarena.envs import PortfolioEnv
from marketarena.envs.data import MarketData, load_dataset
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation.evaluate import EvaluationConfig, evaluate
from marketarena.evaluation.runner import BacktestResult, evaluate_agents, run_backtest

SYMBOLS = ("AAPL", "JNJ", "XOM")
DATA = load_dataset("sp500_20").select(SYMBOLS)
SPEC = {"data": DATA, "window": 5}
START, END = "2019-01-02", "2019-01-09"  # 6 marks, 5 decisions
DATES = ["2019-01-02", "2019-01-03", "2019-01-04", "2019-01-07", "2019-01-08"]
ALLOCATION = {"AAPL": 0.5, "JNJ": 0.3, "XOM": 0.2, "CASH": 0.0}
TARGET = [0.5, 0.3, 0.2, 0.0]
FAST_RETRY = {"retry-after-ms": "10"}  # the client's backoff, shortened by the server
SECRET = "sk-test-SECRET"


# ------------------------------------------------------------- scripted replies
@dataclass
class Reply:
    """One scripted answer: a status, a body (a dict or list is sent as JSON), headers, and a
    delay before answering."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0


def completion(
    content: str | None = None,
    *,
    tool_arguments: str | None = None,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    delay: float = 0.0,
) -> Reply:
    """A chat completion whose message is ``content`` (or a tool call with these arguments)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    finish = "stop"
    if tool_arguments is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": TOOL_NAME, "arguments": tool_arguments},
            }
        ]
        finish = "tool_calls"
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(200, body, delay=delay)


def answer(weights: Mapping[str, Any], confidence: float = 0.5, **kwargs: Any) -> Reply:
    """A completion answering with these target weights (the json_schema form)."""
    return completion(json.dumps({"weights": dict(weights), "confidence": confidence}), **kwargs)


def failure(status: int, headers: Mapping[str, str] | None = None) -> Reply:
    body = {"error": {"message": "scripted failure", "type": "test_error", "code": status}}
    return Reply(status, body, headers or {})


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_LOG", raising=False)
    # endpoint semaphores are per process and per URL: a port reused by a later test's
    # server must not inherit an earlier test's concurrency limit
    monkeypatch.setattr(llm_agent, "_semaphores", {})


def make_config(base_url: str, tmp_path: Path, **kwargs) -> LLMConfig:
    settings = {
        "model": "scripted",
        "base_url": base_url,
        "max_retries": 0,
        "timeout": 5.0,
        "lookback": 5,
        "cache_path": str(tmp_path / "llm_cache.sqlite"),
    }
    return LLMConfig(**{**settings, **kwargs})


class Recorder:
    """Wraps an agent; keeps the weights it saw and the action it returned at each step."""

    def __init__(self, agent: LLMAgent) -> None:
        self.agent = agent
        self.name = agent.name
        self.snapshot_lookback = agent.snapshot_lookback
        self.before: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []

    def reset(self, *, seed=None) -> None:
        self.agent.reset(seed=seed)
        self.before, self.actions = [], []

    def act(self, observation, info):
        action = self.agent.act(observation, info)
        self.before.append(np.array(info["weights"]))
        self.actions.append(np.array(action))
        return action

    def diagnostics(self):
        return self.agent.diagnostics()


def backtest(
    agent: LLMAgent, start: str = START, end: str = END
) -> tuple[BacktestResult, Recorder]:
    recorder = Recorder(agent)
    result = run_backtest(recorder, SPEC, start, end)
    return result, recorder


def first_step(agent: LLMAgent) -> tuple[np.ndarray, dict[str, Any]]:
    """The observation and info of the first decision of :func:`backtest`."""
    env = PortfolioEnv(
        DATA,
        window=5,
        start=START,
        end=END,
        episode_length=None,
        random_start=False,
        snapshot_lookback=agent.snapshot_lookback,
    )
    return env.reset()


def first_snapshot(agent: LLMAgent) -> Any:
    """The snapshot of the first decision of :func:`backtest`."""
    return first_step(agent)[1]["snapshot"]


def outcomes(agent: LLMAgent) -> list[str]:
    return [d.outcome for d in agent.decisions]


def assert_completed(result: BacktestResult, steps: int = 5) -> None:
    assert len(result.nav) == steps + 1 and str(result.dates[-1]) == END
    assert np.isfinite(result.nav).all() and (result.nav > 0).all()


def fill_dates(result: BacktestResult) -> set[np.datetime64]:
    return {np.datetime64(d, "D") for d in result.fills["date"]}


def assert_holds(result: BacktestResult, recorder: Recorder, steps: list[int]) -> None:
    """At each of ``steps``: the action was the weights the agent saw, and nothing traded."""
    for i in steps:
        np.testing.assert_array_equal(recorder.actions[i], recorder.before[i])
        assert result.turnover[i] == 0.0 and result.costs[i] == 0.0, i
        assert result.dates[i + 1] not in fill_dates(result), i


def assert_allocated_first(result: BacktestResult, recorder: Recorder) -> None:
    """The first (good) answer was traded, so a later hold is not the trivial all-cash one."""
    np.testing.assert_allclose(recorder.actions[0], TARGET)
    assert result.turnover[0] > 0.5 and result.weights[1, -1] < 0.2
    assert result.dates[1] in fill_dates(result)  # fills are dated when they happen


# ------------------------------------------------------------------ happy path
def test_clean_answers_are_traded_as_given(llm_server, tmp_path):
    llm_server.script(then=answer(ALLOCATION, confidence=0.7))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    result, rec = backtest(agent)
    assert_completed(result)
    assert outcomes(agent) == ["ok"] * 5
    assert [d.date for d in agent.decisions] == DATES
    for action in rec.actions:
        np.testing.assert_array_equal(action, TARGET)
    assert agent.confidence == 0.7
    assert len(llm_server.requests) == 5
    body = llm_server.requests[0].body
    assert body["model"] == "scripted" and body["temperature"] == 0.0
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["weights"]["required"] == [*SYMBOLS, "CASH"]
    assert "tools" not in body
    assert result.diagnostics["outcomes"]["ok"] == 5 and result.diagnostics["fallbacks"] == 0


def test_an_llm_trades_under_the_risk_rules(llm_server, tmp_path):
    # the model asks for 50% AAPL every day; max_weight 0.4 trims it to 40% before the fill,
    # the rest stays in cash, and each decision's trim is recorded
    llm_server.script(then=answer(ALLOCATION))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    result = run_backtest(agent, {**SPEC, "risk": {"max_weight": 0.4}}, START, END)
    assert_completed(result)
    assert [(x["date"], x["rule"]) for x in result.interventions] == [
        (d, "max_weight") for d in DATES
    ]
    assert result.interventions[0]["amount"] == pytest.approx(0.1)  # 0.5 -> 0.4 from cash
    # against the same answers without the rule: 4/5 of the AAPL shares at the first fill
    plain = run_backtest(LLMAgent(make_config(llm_server.base_url, tmp_path)), SPEC, START, END)
    aapl = [r.fills[r.fills["symbol"] == "AAPL"]["shares"].iloc[0] for r in (result, plain)]
    assert aapl[0] / aapl[1] == pytest.approx(0.8, rel=2e-3)
    assert result.weights[1, -1] > 0.08 > plain.weights[1, -1]  # the trimmed 10% is cash


# ---------------------------------------------------------------- transport faults
def test_429_with_retry_after_is_retried_after_the_wait(llm_server, tmp_path):
    llm_server.script(failure(429, {"Retry-After": "1"}), then=answer(ALLOCATION))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, max_retries=2))
    result, _ = backtest(agent)
    assert_completed(result)
    assert outcomes(agent) == ["ok"] * 5
    first, second = llm_server.requests[0], llm_server.requests[1]
    assert second.received - first.received >= 0.95  # Retry-After: 1 honoured
    assert agent.decisions[0].latency >= 0.95
    assert second.body == first.body and second.headers["x-stainless-retry-count"] == "1"
    assert len(llm_server.requests) == 6  # 2 for the first decision, 1 for each other


def test_429_forever_falls_back_to_holding(llm_server, tmp_path):
    llm_server.script(answer(ALLOCATION), then=failure(429, FAST_RETRY))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, max_retries=1))
    result, rec = backtest(agent)
    assert_completed(result)
    assert outcomes(agent) == ["ok"] + ["rate_limited"] * 4
    assert len(llm_server.requests) == 1 + 2 * 4  # each failed decision: a try and a retry
    assert_allocated_first(result, rec)
    assert_holds(result, rec, [1, 2, 3, 4])
    assert result.diagnostics["fallbacks"] == 4
    assert "RateLimitError (HTTP 429)" in agent.decisions[1].notes


def test_500s_then_success_is_retried(llm_server, tmp_path):
    llm_server.script(failure(500, FAST_RETRY), failure(503, FAST_RETRY), then=answer(ALLOCATION))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, max_retries=2))
    result, _ = backtest(agent)
    assert_completed(result)
    assert outcomes(agent) == ["ok"] * 5
    assert len(llm_server.requests) == 5 + 2


def test_500_forever_is_a_server_error(llm_server, tmp_path):
    llm_server.script(answer(ALLOCATION), then=failure(500, FAST_RETRY))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, max_retries=1))
    result, rec = backtest(agent)
    assert_completed(result)
    assert outcomes(agent) == ["ok"] + ["server_error"] * 4
    assert_allocated_first(result, rec)
    assert_holds(result, rec, [1, 2, 3, 4])


def test_a_slow_answer_times_out(llm_server, tmp_path):
    slow = answer(ALLOCATION, delay=3.0)
    llm_server.script(answer(ALLOCATION), then=slow)
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, timeout=0.3))
    result, rec = backtest(agent, end="2019-01-04")
    assert len(result.nav) == 3
    assert outcomes(agent) == ["ok", "timeout"]
    assert 0.3 <= agent.decisions[1].latency < 2.0
    assert_allocated_first(result, rec)
    assert_holds(result, rec, [1])


def test_a_trickling_answer_is_cut_off_at_the_deadline(llm_server, tmp_path):
    # every byte arrives well within the read timeout, so only the overall deadline ends it
    trickling = answer(ALLOCATION)
    trickling.trickle = 0.05  # ~250 bytes: ~12 s for the whole body
    llm_server.script(answer(ALLOCATION), trickling, then=answer(ALLOCATION))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, timeout=1.0, deadline=1.5))
    result, rec = backtest(agent, end="2019-01-07")
    assert outcomes(agent) == ["ok", "timeout", "ok"]
    assert 1.5 <= agent.decisions[1].latency < 4.0
    assert "within 1.5 s" in agent.decisions[1].notes[0]
    assert_holds(result, rec, [1])  # and the next decision, on a new client, is served


def test_the_default_deadline_covers_every_retry():
    config = LLMConfig(timeout=20.0, max_retries=2)
    assert config.request_deadline == 20.0 * 3 + 10.0 * 2
    assert LLMConfig(deadline=7.0).request_deadline == 7.0
    with pytest.raises(ValueError, match="deadline"):
        LLMConfig(deadline=0)


def test_an_oversized_answer_is_counted_held_and_not_cached(llm_server, tmp_path):
    huge = completion(json.dumps({"weights": ALLOCATION, "note": "x" * 5000}))
    llm_server.script(answer(ALLOCATION), huge, then=answer(ALLOCATION))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, max_answer_chars=1000))
    result, rec = backtest(agent, end="2019-01-07")
    assert outcomes(agent) == ["ok", "oversized", "ok"]
    assert agent.decisions[1].prompt_tokens == 100  # paid for, so counted
    assert (
        "5,0" in agent.decisions[1].notes[0]
        and "max_answer_chars=1,000" in agent.decisions[1].notes[0]
    )
    assert_holds(result, rec, [1])
    assert agent.diagnostics()["outcomes"]["oversized"] == 1
    assert (tmp_path / "llm_cache.sqlite").stat().st_size < 100_000
    assert "x" * 1000 not in (tmp_path / "llm_cache.sqlite").read_bytes().decode("latin-1")


def test_a_dead_endpoint_stops_the_run(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    agent = LLMAgent(make_config(url, tmp_path, max_connection_failures=3))
    with pytest.raises(llm_agent.LLMEndpointDown, match=r"3 connection failures in a row from"):
        backtest(agent)
    assert outcomes(agent) == ["connection_error"] * 2  # the third stopped the run


def test_connection_failures_must_come_in_a_row_to_stop(llm_server, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    llm_server.script(then=answer(ALLOCATION))
    agent = LLMAgent(make_config(dead, tmp_path, max_connection_failures=2, cache_mode="off"))
    agent.reset()
    obs, info = first_step(agent)
    agent.act(obs, info)  # one failure
    agent.config = make_config(
        llm_server.base_url, tmp_path, max_connection_failures=2, cache_mode="off"
    )
    agent._client = None
    agent.act(obs, info)  # an answer: the count starts again
    agent.config = make_config(dead, tmp_path, max_connection_failures=2, cache_mode="off")
    agent._client = None
    agent.act(obs, info)  # one failure again: not two in a row
    assert outcomes(agent) == ["connection_error", "ok", "connection_error"]


def test_connection_refused_is_a_connection_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    agent = LLMAgent(make_config(url, tmp_path, max_connection_failures=0))
    result, rec = backtest(agent)
    assert_completed(result)
    assert outcomes(agent) == ["connection_error"] * 5
    assert_holds(result, rec, [0, 1, 2, 3, 4])
    assert len(result.fills) == 0 and (result.nav == result.nav[0]).all()


@pytest.mark.parametrize(
    ("reply", "outcome", "action"),
    [
        (completion("I would buy Apple."), "invalid_json", None),
        (completion('{"weights": {"AAPL": 0.5,'), "invalid_json", None),
        (completion(json.dumps({"buy": ["AAPL"], "sell": []})), "wrong_schema", None),
        (answer({"TSLA": 0.5, "JNJ": 0.5, "CASH": 0.5}), "repaired", [0.0, 0.5, 0.0, 0.5]),
        (
            answer({"AAPL": 3, "JNJ": 2, "XOM": 1, "CASH": 1}),
            "repaired",
            [3 / 7, 2 / 7, 1 / 7, 1 / 7],
        ),
        (completion(""), "empty", None),
        (completion(None), "empty", None),
        (Reply(200, "<html>not json</html>"), "api_error", None),
        (Reply(200, [1, 2, 3]), "api_error", None),
        (failure(400), "api_error", None),
    ],
    ids=[
        "prose",
        "truncated",
        "wrong_schema",
        "unknown_ticker",
        "sum_seven",
        "empty",
        "null_content",
        "body_not_json",
        "body_a_list",
        "bad_request",
    ],
)
def test_bad_answers_are_repaired_or_held(llm_server, tmp_path, reply, outcome, action):
    llm_server.script(answer(ALLOCATION), then=reply)
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    result, rec = backtest(agent)
    assert_completed(result)
    assert outcomes(agent) == ["ok"] + [outcome] * 4
    assert_allocated_first(result, rec)
    if action is None:
        assert_holds(result, rec, [1, 2, 3, 4])
        assert result.diagnostics["fallbacks"] == 4
    else:
        for a in rec.actions[1:]:
            np.testing.assert_allclose(a, action, rtol=0, atol=1e-15)
        assert result.diagnostics["fallbacks"] == 0
    assert all(d.notes for d in agent.decisions[1:])
    assert result.diagnostics["outcomes"][outcome] == 4


def test_unknown_tickers_are_named_in_the_notes(llm_server, tmp_path):
    llm_server.script(then=answer({"TSLA": 0.5, "JNJ": 0.5, "CASH": 0.5}))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    backtest(agent)
    assert any("TSLA" in n for n in agent.decisions[0].notes)


def test_tool_call_answers(llm_server, tmp_path):
    args = json.dumps({"weights": ALLOCATION, "confidence": 0.9})
    llm_server.script(then=completion(tool_arguments=args))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, output="tool"))
    result, rec = backtest(agent)
    assert_completed(result)
    assert outcomes(agent) == ["ok"] * 5 and agent.confidence == 0.9
    for action in rec.actions:
        np.testing.assert_array_equal(action, TARGET)
    body = llm_server.requests[0].body
    assert "response_format" not in body
    (tool,) = body["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == TOOL_NAME
    assert tool["function"]["parameters"]["properties"]["weights"]["required"] == [*SYMBOLS, "CASH"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": TOOL_NAME}}


def test_tool_mode_with_a_plain_text_answer_still_parses(llm_server, tmp_path):
    llm_server.script(then=answer(ALLOCATION))  # content, no tool call
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, output="tool"))
    backtest(agent)
    assert outcomes(agent) == ["ok"] * 5


# --------------------------------------------------------------------------- secrets
def test_the_api_key_is_in_no_artifact_and_no_log(llm_server, tmp_path, monkeypatch, caplog):
    for name in (None, "openai", "httpx", "httpx2", "marketarena", "mlflow"):
        caplog.set_level(logging.DEBUG, logger=name)
    monkeypatch.chdir(tmp_path)  # MLflow's artifact root (./mlruns) and anything else relative
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    llm_server.echo_authorization = True  # error messages quote the key back, as some APIs do
    llm_server.script(
        answer(ALLOCATION), failure(401), failure(500), failure(429), then=answer(ALLOCATION)
    )
    cache = tmp_path / "cache" / "llm.sqlite"
    config = EvaluationConfig(
        agents=("llm:scripted",),
        data="sp500_20",
        universe=SYMBOLS,
        start=START,
        end=END,
        window=5,
        include_baselines=False,
        benchmark=None,
        llm={
            "base_url": llm_server.base_url,
            "cache_path": str(cache),
            "max_retries": 0,
            "timeout": 5.0,
            "lookback": 5,
        },
    )
    report = evaluate(config)
    result = report.evaluations[0].results[0]
    diagnostics = result.diagnostics
    assert [d["outcome"] for d in diagnostics["log"]] == [
        "ok",
        "api_error",
        "server_error",
        "rate_limited",
        "ok",
    ]
    # the key did travel, where it belongs: the Authorization header
    assert {r.headers.get("authorization") for r in llm_server.requests} == {f"Bearer {SECRET}"}

    result.save(tmp_path / "result")
    result.save(tmp_path / "result.json")
    report.write(tmp_path / "report")
    from marketarena.evaluation.tracking import log_evaluation

    run_id = log_evaluation(report, tmp_path / "report", experiment="secrets")

    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params and run.data.tags
    logged = json.dumps([run.data.params, run.data.tags, run.data.metrics])
    assert SECRET not in logged and "Bearer" not in logged
    assert "eval/llm_scripted/diag_outcomes_api_error" in run.data.metrics
    downloaded = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path="report",
            dst_path=str(tmp_path / "downloaded"),
            tracking_uri=uri,
        )
    )
    texts = [p.read_bytes() for p in downloaded.rglob("*") if p.is_file()]
    assert len(texts) > 5
    assert all(SECRET.encode() not in t for t in texts)

    assert SECRET not in json.dumps(diagnostics)
    assert cache.exists() and SECRET.encode() not in cache.read_bytes()
    # every file written under tmp_path: the cache, the saved results, the report, the MLflow
    # store and its artifacts
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any(p.suffix == ".parquet" for p in files)
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []
    # logs: ours must be clean; the client's and transport's too (they must not log headers)
    assert any(r.name.startswith("openai") for r in caplog.records)  # the client's DEBUG logs
    ours = [r for r in caplog.records if r.name.startswith("marketarena")]
    assert all(SECRET not in r.getMessage() for r in ours)
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert all(SECRET not in str(r.args) for r in caplog.records)


# ----------------------------------------------------------------------- concurrency
@pytest.mark.parametrize("limit", [2, 3])
def test_concurrent_agents_share_the_endpoint_limit(llm_server, tmp_path, limit):
    server = llm_server.script(then=answer(ALLOCATION, delay=0.2))
    agents = [
        LLMAgent(
            make_config(
                server.base_url, tmp_path, name=f"llm:{i}", cache_mode="off", max_concurrency=limit
            )
        )
        for i in range(3)
    ]
    started = time.perf_counter()
    evaluations = evaluate_agents(agents, SPEC, START, END, jobs=3)
    elapsed = time.perf_counter() - started
    assert [e.agent for e in evaluations] == ["llm:0", "llm:1", "llm:2"]
    for e in evaluations:
        assert len(e.results[0].nav) == 6
        assert e.results[0].diagnostics["outcomes"]["ok"] == 5
    assert len(server.requests) == 15
    # never more than the limit in flight, and the limit was reached: the agents did overlap
    assert server.max_in_flight == limit
    assert elapsed >= 15 * 0.2 / limit * 0.9


def test_a_second_limit_for_the_same_endpoint_warns_and_the_first_holds(llm_server, tmp_path):
    server = llm_server.script(then=answer(ALLOCATION, delay=0.2))
    first = LLMAgent(
        make_config(server.base_url, tmp_path, name="llm:a", cache_mode="off", max_concurrency=1)
    )
    backtest(first)
    second = LLMAgent(
        make_config(server.base_url, tmp_path, name="llm:b", cache_mode="off", max_concurrency=3)
    )
    with pytest.warns(UserWarning, match=r"max_concurrency=3 ignored .* limit to 1 first"):
        evaluate_agents([second], SPEC, START, END, jobs=1)


# ---------------------------------------------------------------------------- cache
def varied_answers(n: int = 5) -> list[Reply]:
    """A different allocation (and usage) per decision, so a replay must match each one."""
    out = []
    for i in range(n):
        w = np.array([i + 1.0, 2.0, 5.0 - i, 1.0])
        w /= w.sum()
        out.append(
            answer(
                dict(zip([*SYMBOLS, "CASH"], w.tolist(), strict=True)),
                confidence=0.1 * (i + 1),
                prompt_tokens=100 + 10 * i,
                completion_tokens=7 + i,
            )
        )
    return out


def comparable(decisions) -> list[dict]:
    return [{k: v for k, v in vars(d).items() if k not in ("latency", "cached")} for d in decisions]


def test_read_only_replay_is_exact_and_offline(llm_server, tmp_path):
    llm_server.script(*varied_answers(), then=failure(500))
    first_agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    first, rec1 = backtest(first_agent)
    assert outcomes(first_agent) == ["ok"] * 5
    asked = len(llm_server.requests)
    assert asked == 5

    replay_agent = LLMAgent(make_config(llm_server.base_url, tmp_path, cache_mode="read_only"))
    replay, rec2 = backtest(replay_agent)
    assert len(llm_server.requests) == asked  # not one request
    np.testing.assert_array_equal(replay.nav, first.nav)
    np.testing.assert_array_equal(replay.weights, first.weights)
    for a, b in zip(rec1.actions, rec2.actions, strict=True):
        np.testing.assert_array_equal(a, b)
    assert comparable(replay_agent.decisions) == comparable(first_agent.decisions)
    assert all(d.cached and d.latency == 0.0 for d in replay_agent.decisions)
    assert not any(d.cached for d in first_agent.decisions)


def test_read_only_cache_without_the_entry_raises(llm_server, tmp_path):
    llm_server.script(then=answer(ALLOCATION))
    backtest(LLMAgent(make_config(llm_server.base_url, tmp_path)))
    asked = len(llm_server.requests)
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, cache_mode="read_only"))
    with pytest.raises(LLMCacheMiss, match="read-only"):
        backtest(agent, end="2019-01-11")  # two sessions more than the cache has
    assert len(agent.decisions) == 5 and len(llm_server.requests) == asked
    with pytest.raises(FileNotFoundError):
        LLMAgent(make_config(llm_server.base_url, tmp_path / "nowhere", cache_mode="read_only"))


def test_cache_off_always_calls(llm_server, tmp_path):
    llm_server.script(then=answer(ALLOCATION))
    for run in (1, 2):
        agent = LLMAgent(make_config(llm_server.base_url, tmp_path, cache_mode="off"))
        backtest(agent)
        assert len(llm_server.requests) == 5 * run
        assert not any(d.cached for d in agent.decisions)
    assert not (tmp_path / "llm_cache.sqlite").exists()


def test_read_write_cache_hits_on_a_rerun(llm_server, tmp_path):
    llm_server.script(then=answer(ALLOCATION))
    backtest(LLMAgent(make_config(llm_server.base_url, tmp_path)))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    backtest(agent)
    assert len(llm_server.requests) == 5 and all(d.cached for d in agent.decisions)


def test_an_offline_replay_reproduces_the_runs_fallbacks(llm_server, tmp_path):
    llm_server.script(answer(ALLOCATION), then=failure(500))
    first_agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    first, _ = backtest(first_agent)
    assert outcomes(first_agent) == ["ok"] + ["server_error"] * 4
    asked = len(llm_server.requests)
    llm_server.script(then=answer({"CASH": 1.0}))  # a live call would now sell everything

    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, cache_mode="read_only"))
    replay, rec = backtest(agent)
    assert len(llm_server.requests) == asked
    assert outcomes(agent) == ["ok"] + ["server_error"] * 4
    assert comparable(agent.decisions) == comparable(first_agent.decisions)
    np.testing.assert_array_equal(replay.nav, first.nav)
    assert_holds(replay, rec, [1, 2, 3, 4])


def test_a_rerun_after_an_outage_asks_again(llm_server, tmp_path):
    llm_server.script(answer(ALLOCATION), then=failure(503))
    first = LLMAgent(make_config(llm_server.base_url, tmp_path))
    backtest(first)
    assert outcomes(first) == ["ok"] + ["server_error"] * 4
    asked = len(llm_server.requests)
    llm_server.script(then=answer(ALLOCATION))  # the endpoint is back

    agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    backtest(agent)
    assert outcomes(agent) == ["ok"] * 5
    assert [d.cached for d in agent.decisions] == [True] + [False] * 4
    assert len(llm_server.requests) == asked + 4
    again = LLMAgent(make_config(llm_server.base_url, tmp_path, cache_mode="read_only"))
    backtest(again)  # the answers replaced the recorded failures
    assert outcomes(again) == ["ok"] * 5 and len(llm_server.requests) == asked + 4


def test_an_older_cache_that_stored_an_outage_is_asked_again(llm_server, tmp_path):
    llm_server.script(then=answer(ALLOCATION))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    body = agent.request(agent.prompt(first_snapshot(agent)), agent._builder)
    agent.cache.put(body, {"error": "timeout", "detail": "APITimeoutError"})  # the old way
    backtest(agent)
    assert outcomes(agent) == ["ok"] * 5 and not agent.decisions[0].cached


def test_retry_failed_asks_again_for_unusable_cached_answers(llm_server, tmp_path):
    llm_server.script(completion("not json"), then=answer(ALLOCATION))
    backtest(LLMAgent(make_config(llm_server.base_url, tmp_path)), end="2019-01-03")
    replay = LLMAgent(make_config(llm_server.base_url, tmp_path))
    backtest(replay, end="2019-01-03")
    assert outcomes(replay) == ["invalid_json"] and replay.decisions[0].cached
    retried = LLMAgent(make_config(llm_server.base_url, tmp_path, retry_failed=True))
    backtest(retried, end="2019-01-03")
    assert outcomes(retried) == ["ok"] and not retried.decisions[0].cached
    assert len(llm_server.requests) == 2


def test_a_restored_agent_keeps_its_own_endpoint(llm_server, tmp_path):
    # a persisted run saved while its model was served on one port resumes against the
    # port it is served on now: the config comes from the new agent, not the checkpoint
    llm_server.script(then=answer(ALLOCATION))
    gone = f"http://127.0.0.1:{free_port()}/v1"
    saved = LLMAgent(make_config(gone, tmp_path, cache_mode="off")).get_state()
    assert "config" not in saved and "cache" not in saved and "_client" not in saved
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, cache_mode="off"))
    agent.set_state({**saved, "config": make_config(gone, tmp_path)})  # an older checkpoint
    assert agent.config.base_url == llm_server.base_url
    backtest(agent)
    assert outcomes(agent) == ["ok"] * 5 and len(llm_server.requests) == 5


# ------------------------------------------------------------------------ accounting
def test_tokens_cost_and_latency(llm_server, tmp_path):
    llm_server.script(*varied_answers(), then=failure(500))
    prices = {"scripted": (2.5, 10.0), "other-model": (1000.0, 1000.0)}
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, prices=prices))
    backtest(agent)
    d = agent.diagnostics()
    assert [x.prompt_tokens for x in agent.decisions] == [100, 110, 120, 130, 140]
    assert [x.completion_tokens for x in agent.decisions] == [7, 8, 9, 10, 11]
    assert d["prompt_tokens"] == 600 and d["completion_tokens"] == 45
    assert agent.decisions[0].cost == pytest.approx((100 * 2.5 + 7 * 10.0) / 1e6)
    assert d["cost_usd"] == pytest.approx((600 * 2.5 + 45 * 10.0) / 1e6)  # $0.00195
    assert all(x.latency > 0 for x in agent.decisions)
    assert d["mean_latency_s"] == pytest.approx(np.mean([x.latency for x in agent.decisions]))
    assert d["cached"] == 0

    replay = LLMAgent(make_config(llm_server.base_url, tmp_path, prices=prices))
    backtest(replay)
    r = replay.diagnostics()
    assert r["cached"] == 5 and r["mean_latency_s"] == 0.0
    assert all(x.latency == 0.0 for x in replay.decisions)
    assert r["prompt_tokens"] == 600 and r["completion_tokens"] == 45

    unpriced = LLMAgent(make_config(llm_server.base_url, tmp_path, prices={"x": (1.0, 1.0)}))
    backtest(unpriced)
    assert unpriced.diagnostics()["cost_usd"] == 0.0


def test_failed_calls_count_no_tokens(llm_server, tmp_path):
    llm_server.script(then=failure(500))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, prices={"scripted": (1, 1)}))
    backtest(agent)
    d = agent.diagnostics()
    assert d["prompt_tokens"] == d["completion_tokens"] == 0 and d["cost_usd"] == 0.0
    assert d["fallbacks"] == 5


# ------------------------------------------------------------------------ look-ahead
def perturbed_after(market: MarketData, t: int, seed: int = 0) -> MarketData:
    """The same market up to row ``t``; every later bar scaled by a random factor (OHLC
    scaled together, so they stay consistent), volumes too."""
    rng = np.random.default_rng(seed)
    factor = np.ones_like(market.close)
    factor[t + 1 :] = rng.uniform(0.5, 1.5, size=factor[t + 1 :].shape)
    volume = market.volume.copy()
    volume[t + 1 :] *= rng.uniform(0.2, 5.0, size=volume[t + 1 :].shape)
    return MarketData(
        dates=market.dates,
        symbols=market.symbols,
        open=market.open * factor,
        high=market.high * factor,
        low=market.low * factor,
        close=market.close * factor,
        volume=np.round(volume),
        name=market.name,
    )


def test_the_prompt_at_t_knows_nothing_after_t():
    market = gbm_market(n_assets=3, n_periods=60, seed=3)
    t = 40
    future = perturbed_after(market, t)
    assert not np.allclose(future.close[t + 1 :], market.close[t + 1 :])
    agent = LLMAgent(LLMConfig(lookback=20, cache_path=None))
    envs = [
        PortfolioEnv(d, window=5, snapshot_lookback=20, random_start=False, episode_length=None)
        for d in (market, future)
    ]
    infos = [env.reset(seed=0)[1] for env in envs]
    rng = np.random.default_rng(1)
    later = [str(d) for d in market.dates[t + 1 :]]
    compared = 0
    while True:
        date = infos[0]["snapshot"].date
        a, b = (agent.prompt(info["snapshot"]) for info in infos)
        text = json.dumps(a)
        if date <= str(market.dates[t]):
            assert text == json.dumps(b), date  # byte for byte
            assert date in text
            assert not [d for d in later if d in text]
            assert max(infos[0]["snapshot"].dates) == date
            compared += 1
        else:  # the control: the perturbation is visible once it is in the past
            assert text != json.dumps(b)
            break
        action = rng.dirichlet(np.ones(4))
        infos = [env.step(action)[4] for env in envs]
    assert compared == t - envs[0].core.first_decision + 1  # every decision up to t
    assert compared > 30


def test_the_market_table_returns_span_what_their_labels_say():
    # the default lookback: 20; adjusted levels are the data's closes
    agent = LLMAgent(LLMConfig(cache_path=None, price_levels="adjusted"))
    env = PortfolioEnv(
        DATA,
        start=START,
        end=END,
        window=5,
        random_start=False,
        episode_length=None,
        snapshot_lookback=agent.snapshot_lookback,
    )
    user = agent.prompt(env.reset()[1]["snapshot"])[1]["content"]
    i, close = DATA.index_of(START), DATA.close
    for j, symbol in enumerate(SYMBOLS):
        five = f"{(close[i, j] / close[i - 5, j] - 1) * 100:+.1f}"
        twenty = f"{(close[i, j] / close[i - 20, j] - 1) * 100:+.1f}"
        assert f"{symbol} {close[i, j]:.2f} {five} {twenty}" in user, user


# ------------------------------------------------------------------- anonymisation
def test_anonymised_requests_carry_no_ticker_and_aliases_map_back(llm_server, tmp_path):
    llm_server.script(then=answer({"S01": 0.6, "S03": 0.4, "CASH": 0.0}))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, anonymize_tickers=True))
    result, rec = backtest(agent)
    assert outcomes(agent) == ["ok"] * 5
    for action in rec.actions:
        np.testing.assert_array_equal(action, [0.6, 0.0, 0.4, 0.0])
    for request in llm_server.requests:
        text = json.dumps(request.body)
        assert "S01" in text and "S03" in text
        assert not [s for s in SYMBOLS if s in text], text
    assert result.symbols == SYMBOLS  # results keep the real tickers


def snapshots(n: int = 3) -> list:
    env = PortfolioEnv(
        DATA,
        start=START,
        end=END,
        window=5,
        snapshot_lookback=5,
        random_start=False,
        episode_length=None,
    )
    out = [env.reset()[1]["snapshot"]]
    for _ in range(n - 1):
        out.append(env.step(env.current_weights())[4]["snapshot"])
    return out


ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def test_hidden_dates_leave_no_iso_date():
    agent = LLMAgent(LLMConfig(lookback=5, dates="hidden", cache_path=None))
    texts = [json.dumps(agent.prompt(s)) for s in snapshots()]
    assert all(not ISO_DATE.search(t) for t in texts)
    assert ["session 1" in texts[0], "session 2" in texts[1], "session 3" in texts[2]] == [True] * 3
    real = json.dumps(LLMAgent(LLMConfig(lookback=5, cache_path=None)).prompt(snapshots(1)[0]))
    assert ISO_DATE.search(real) and START in real


def test_shifted_dates_move_by_the_configured_days():
    agent = LLMAgent(LLMConfig(lookback=5, dates="shifted", date_shift_days=-3653, cache_path=None))
    for snap in snapshots():
        text = json.dumps(agent.prompt(snap))
        shifted = str(np.datetime64(snap.date) - np.timedelta64(3653, "D"))
        assert shifted in text and snap.date not in text
        assert ISO_DATE.findall(text) == [shifted]
    assert shifted.startswith("2009-01")


# ------------------------------------------------------------------- missing snapshot
def test_act_without_a_snapshot_says_how_to_fix_it():
    env = PortfolioEnv(
        DATA, start=START, end=END, window=5, random_start=False, episode_length=None
    )
    observation, info = env.reset()
    agent = LLMAgent(LLMConfig(lookback=7, cache_path=None))
    with pytest.raises(ValueError, match=r"snapshot_lookback=8.*run_backtest"):
        agent.act(observation, info)


def test_run_backtest_asks_the_env_for_snapshots(llm_server, tmp_path):
    llm_server.script(then=answer(ALLOCATION))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, lookback=7))
    backtest(agent)
    user = llm_server.requests[0].body["messages"][1]["content"]
    assert "Last 7 sessions" in user


# ------------------------------------------------------------------------- templates
def test_a_template_with_an_unknown_field_lists_the_available_ones(tmp_path):
    path = tmp_path / "user.txt"
    path.write_text("Today is {date}. Tip: {insider_tip}")
    agent = LLMAgent(LLMConfig(lookback=5, cache_path=None, user_template=str(path)))
    with pytest.raises(ValueError, match="insider_tip") as info:
        agent.prompt(snapshots(1)[0])
    assert all(f in str(info.value) for f in TEMPLATE_FIELDS)


def test_a_missing_template_file_is_an_error(tmp_path):
    agent = LLMAgent(LLMConfig(cache_path=None, system_template=str(tmp_path / "none.txt")))
    with pytest.raises(FileNotFoundError, match=r"none\.txt"):
        agent.prompt(snapshots(1)[0])


def test_custom_templates_are_used(llm_server, tmp_path):
    (tmp_path / "system.txt").write_text("SYSTEM fills {fill_timing}; answer for {symbols}")
    (tmp_path / "user.txt").write_text("USER {date} nav={nav:.0f} cash={cash_weight:.0%}")
    llm_server.script(then=answer(ALLOCATION))
    agent = LLMAgent(
        make_config(
            llm_server.base_url,
            tmp_path,
            system_template=str(tmp_path / "system.txt"),
            user_template=str(tmp_path / "user.txt"),
        )
    )
    backtest(agent, end="2019-01-03")
    messages = llm_server.requests[0].body["messages"]
    assert messages == [
        {
            "role": "system",
            "content": "SYSTEM fills at the next session's close; answer for AAPL, JNJ, XOM, CASH",
        },
        {"role": "user", "content": "USER 2019-01-02 nav=10000 cash=100%"},
    ]


# ----------------------------------------------------------- persisted runs and endpoints
def test_a_run_stopped_by_a_dead_endpoint_resumes_on_a_new_url(llm_server, tmp_path):
    """A dead endpoint stops a persisted run with one line (not five held days); ``--resume
    --base-url`` finishes it on the endpoint's new address; options that shape the decisions
    cannot change on resume."""
    from rich.console import Console

    from marketarena.cli import main
    from marketarena.evaluation.saved_runs import RunStore, load_result

    store = tmp_path / "runs.sqlite"
    dead = f"http://127.0.0.1:{free_port()}/v1"
    common = [
        "--store",
        str(store),
        "--llm-cache",
        str(tmp_path / "cache.sqlite"),
        "--llm-max-retries",
        "0",
        "--llm-timeout",
        "5",
    ]

    def run(*args: str) -> tuple[int, str]:
        console = Console(record=True, width=400)
        code = main(["backtest", *args, *common], console=console)
        return code, console.export_text()

    code, text = run(
        "--agent",
        "llm:scripted",
        "--run",
        "r",
        "--data",
        "sp500_20",
        "--start",
        START,
        "--end",
        END,
        "--window",
        "5",
        "--llm-lookback",
        "5",
        "--base-url",
        dead,
    )
    assert code == 1 and "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "5 connection failures in a row" in errors[0]
    assert "llm:scripted: 5 LLM requests" in text  # the estimate, printed before the run
    runs = RunStore(store)
    assert runs.run("r").status == "running"  # stopped before its fifth day: resumable
    runs.close()

    code, text = run("--resume", "r", "--base-url", llm_server.base_url, "--llm-lookback", "7")
    assert code == 1 and "lookback" in text and "cannot change" in text
    assert len(llm_server.requests) == 0

    llm_server.script(then=answer(ALLOCATION))
    code, text = run("--resume", "r", "--base-url", llm_server.base_url)
    assert code == 0, text
    assert len(llm_server.requests) == 1  # the one day left, on the new address
    runs = RunStore(store)
    result = load_result(runs, "r")
    runs.close()
    assert str(result.dates[-1]) == END
    assert [d["outcome"] for d in result.diagnostics["log"]] == ["connection_error"] * 4 + ["ok"]
    assert dead in runs_spec_url(store)  # the stored spec keeps the run's own options


def runs_spec_url(store: Path) -> str:
    from marketarena.evaluation.saved_runs import RunStore

    runs = RunStore(store)
    try:
        return str(runs.run("r").spec["llm"]["base_url"])
    finally:
        runs.close()


# ------------------------------------------------------------------ short answers: picks
def picks(buy: Any, **kwargs: Any) -> Reply:
    """A completion answering in the picks form."""
    return completion(json.dumps({"buy": buy}), **kwargs)


def test_picks_answers_are_held_in_equal_weights(llm_server, tmp_path):
    llm_server.script(then=picks(["JNJ", "AAPL", "CASH"]))
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, answer="picks", max_picks=3))
    result, rec = backtest(agent)
    assert_completed(result)
    assert outcomes(agent) == ["ok"] * 5
    for action in rec.actions:
        np.testing.assert_allclose(action, [1 / 3, 1 / 3, 0.0, 1 / 3])  # CASH is a pick
    body = llm_server.requests[0].body
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["buy"]
    assert schema["properties"]["buy"]["items"]["enum"] == [*SYMBOLS, "CASH"]
    assert schema["properties"]["buy"]["maxItems"] == 3
    system = body["messages"][0]["content"]
    assert '"buy" lists up to 3 names' in system and '"weights"' not in system


@pytest.mark.parametrize(
    ("answer", "weights", "outcome", "note"),
    [
        ({"buy": ["XOM"]}, [0, 0, 1, 0], "ok", None),
        ({"buy": []}, [0, 0, 0, 1], "ok", None),  # nothing picked: all cash
        ({"buy": ["CASH"]}, [0, 0, 0, 1], "ok", None),
        ({"buy": ["aapl", "AAPL", "TSLA"]}, [1, 0, 0, 0], "repaired", "TSLA"),
        ({"buy": ["AAPL", "cash", "CASH"]}, [0.5, 0, 0, 0.5], "repaired", "repeated"),
        ({"buy": ["AAPL", "JNJ", "XOM"]}, [0.5, 0.5, 0, 0], "repaired", "first 2"),
        ({"buy": [7, None]}, [0, 0, 0, 1], "repaired", "unknown"),
        ({"buy": "JNJ"}, None, "wrong_schema", '"buy" list'),
        ({"weights": {"JNJ": 1}}, None, "wrong_schema", '"buy" list'),
    ],
)
def test_picks_are_repaired_by_hand_computed_rules(answer, weights, outcome, note):
    from marketarena.agents.llm_agent import parse_answer
    from marketarena.agents.llm_prompt import PromptBuilder, PromptSettings

    builder = PromptBuilder(SYMBOLS, PromptSettings(answer="picks", max_picks=2))
    parsed = parse_answer(json.dumps(answer), builder)
    assert parsed.outcome == outcome
    if weights is None:
        assert parsed.weights is None
    else:
        np.testing.assert_allclose(parsed.weights, weights)
    if note is not None:
        assert any(note in n for n in parsed.notes), parsed.notes


def test_the_default_prompt_is_unchanged_by_the_answer_setting(llm_server, tmp_path):
    """The weights answer keeps the prompt's exact wording, so cached answers still replay."""
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path))
    system = agent.prompt(first_snapshot(agent))[0]["content"]
    assert system.endswith(
        'Answer with JSON only: "weights" gives the target weight of every symbol and of CASH, '
        'and\n"confidence" is a number from 0 to 1. Symbols: AAPL, JNJ, XOM, CASH.\n'
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"answer": "list"}, "answer='list': choose 'weights' or 'picks'"),
        ({"max_picks": 0}, "max_picks must be >= 1"),
        ({"max_picks": 2.5}, "max_picks must be a whole number"),
    ],
)
def test_bad_answer_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LLMConfig(**settings)


def test_the_market_table_can_leave_out_the_closes(llm_server, tmp_path):
    """close_prices=False: the same returns, one column fewer (the table's last line is
    checked against the snapshot's closes by hand)."""
    agent = LLMAgent(make_config(llm_server.base_url, tmp_path, close_prices=False))
    snapshot = first_snapshot(agent)
    user = agent.prompt(snapshot)[1]["content"]
    adjusted = make_config(llm_server.base_url, tmp_path, price_levels="adjusted")
    full = LLMAgent(adjusted).prompt(snapshot)[1]["content"]
    close = np.asarray(snapshot.close)
    five = (close[-1, 2] / close[-6, 2] - 1) * 100
    assert "symbol 5d 20d" in user and "symbol close 5d 20d" in full
    assert f"XOM {five:+.1f} " in user and f"XOM {close[-1, 2]:.2f} {five:+.1f} " in full
    assert len(user) < len(full)
