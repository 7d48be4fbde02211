"""LLM decisions as MLflow traces (agents/llm_tracing.py), against the scripted
OpenAI-compatible server of tests/agents/conftest.py and a real SQLite MLflow store.

One trace per request sent (cache replays are not traced), the prompt and the answer as the
span's inputs and outputs, the decision's numbers as attributes, no API key anywhere; off
unless switched on, and then MLflow is not even imported; ``evaluate --mlflow`` traces into
its experiment, which stays a model-training one, and links the traces to its run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from marketarena.agents import llm_agent, llm_tracing
from marketarena.agents.llm_agent import LLMAgent, LLMConfig
from marketarena.envs.data import load_dataset
from marketarena.evaluation.runner import run_backtest

SECRET = "sk-test-secret-xyz"
SYMBOLS = ("AAPL", "JNJ", "XOM")
SPEC = {"data": load_dataset("sp500_20").select(SYMBOLS), "window": 5}
START, END = "2019-01-02", "2019-01-09"  # 5 decisions
DATES = ["2019-01-02", "2019-01-03", "2019-01-04", "2019-01-07", "2019-01-08"]
GOOD = json.dumps({"weights": {"AAPL": 0.5, "JNJ": 0.3, "XOM": 0.2, "CASH": 0.0}})
REPAIRED = json.dumps({"weights": {"AAPL": 0.5, "MSFT": 0.2}})  # unknown symbol, no CASH


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(content: str, prompt_tokens: int, completion_tokens: int) -> Reply:
    return Reply(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "scripted",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


SCRIPT = [
    completion(GOOD, 101, 21),
    completion("not json at all", 102, 22),
    Reply(500, {"error": {"message": "scripted failure", "type": "test_error", "code": 500}}),
    completion(REPAIRED, 104, 24),
    completion(GOOD, 105, 25),
]
OUTCOMES = ["ok", "invalid_json", "server_error", "repaired", "ok"]


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv(llm_tracing.ENV_VAR, raising=False)
    monkeypatch.setattr(llm_agent, "_semaphores", {})


@pytest.fixture
def store(tmp_path, monkeypatch) -> Iterator[str]:
    """A SQLite MLflow store under tmp_path, MLflow's tracking URI while the test runs."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def make_agent(base_url: str, tmp_path: Path, **kwargs: Any) -> LLMAgent:
    settings: dict[str, Any] = {
        "model": "scripted",
        "base_url": base_url,
        "max_retries": 0,
        "timeout": 5.0,
        "lookback": 5,
        "cache_path": str(tmp_path / "llm_cache.sqlite"),
        "prices": {"scripted": (2.0, 8.0)},
    }
    return LLMAgent(LLMConfig(**{**settings, **kwargs}))


def experiment(name: str) -> str:
    """A new experiment's id (not made MLflow's active one: that would outlive the test)."""
    import mlflow

    return mlflow.MlflowClient().create_experiment(name)


def traces(experiment_id: str) -> list[Any]:
    import mlflow

    found = mlflow.search_traces(locations=[experiment_id], return_type="list")
    return sorted(found, key=lambda t: t.info.tags["marketarena.date"])


def test_each_request_is_a_trace_with_prompt_answer_and_numbers(llm_server, tmp_path, store):
    llm_server.script(*SCRIPT)
    agent = make_agent(llm_server.base_url, tmp_path)
    exp_id = experiment("llm-traces")
    with llm_tracing.llm_tracing(exp_id) as ids:
        assert llm_tracing.tracing_enabled()
        run_backtest(agent, SPEC, START, END)
    assert not llm_tracing.tracing_enabled()
    assert [d.outcome for d in agent.decisions] == OUTCOMES
    assert [d.date for d in agent.decisions] == DATES

    found = traces(exp_id)
    assert len(found) == len(ids) == 5
    assert {t.info.trace_id for t in found} == set(ids)
    for trace, decision, request, reply in zip(
        found, agent.decisions, llm_server.requests, SCRIPT, strict=True
    ):
        assert trace.info.tags["marketarena.agent"] == "llm:scripted"
        assert trace.info.tags["marketarena.date"] == decision.date
        assert trace.info.tags["marketarena.outcome"] == decision.outcome
        (span,) = trace.data.spans
        assert span.name == "llm:scripted" and span.span_type == "CHAT_MODEL"
        # the prompt as it was sent, and the answer's text
        assert span.inputs == {"model": "scripted", "messages": request.body["messages"]}
        if reply.status == 200:
            content = reply.body["choices"][0]["message"]["content"]
            message = {"role": "assistant", "content": content}
            assert span.outputs == {"choices": [{"message": message}]}
            assert trace.info.response_preview == content
        else:
            assert span.outputs is None
        attributes = span.attributes
        assert attributes["outcome"] == decision.outcome
        assert attributes["date"] == decision.date
        assert attributes["notes"] == decision.notes
        assert attributes["prompt_tokens"] == decision.prompt_tokens
        assert attributes["completion_tokens"] == decision.completion_tokens
        assert attributes["latency_s"] == pytest.approx(decision.latency)
        assert attributes["cost_usd"] == pytest.approx(decision.cost)
        assert attributes["cached"] is False and attributes["model"] == "scripted"
        assert attributes["mlflow.llm.model"] == "scripted"
        # the traces view's token and cost columns
        assert attributes["mlflow.chat.tokenUsage"] == {
            "input_tokens": decision.prompt_tokens,
            "output_tokens": decision.completion_tokens,
            "total_tokens": decision.prompt_tokens + decision.completion_tokens,
        }
        assert attributes["mlflow.llm.cost"]["total_cost"] == pytest.approx(decision.cost)
        # timed as the request
        duration = (span.end_time_ns - span.start_time_ns) / 1e9
        assert duration == pytest.approx(decision.latency, abs=1e-3)
        # a fallback (the agent held) is an error, described by the notes
        failed = decision.outcome not in ("ok", "repaired")
        assert trace.info.state.value == ("ERROR" if failed else "OK")
        if failed:
            assert span.status.description.startswith(decision.outcome)
    assert [t.data.spans[0].attributes["prompt_tokens"] for t in found] == [101, 102, 0, 104, 105]
    # the trace list previews the user message (the system prompt is the same every time)
    user = next(m for m in llm_server.requests[0].body["messages"] if m["role"] == "user")
    preview = found[0].info.request_preview.removesuffix("...")  # cut at 1,000 characters
    assert preview and user["content"].startswith(preview)

    # the key travelled in the Authorization header, and is in no trace and not in the store
    assert {r.headers.get("authorization") for r in llm_server.requests} == {f"Bearer {SECRET}"}
    for trace in found:
        text = trace.to_json()
        assert SECRET not in text and "Bearer" not in text and "authorization" not in text
    assert SECRET.encode() not in (tmp_path / "mlflow.db").read_bytes()


def test_cache_replays_are_not_traced(llm_server, tmp_path, store):
    llm_server.script(then=completion(GOOD, 100, 20))
    exp_id = experiment("llm-replays")
    with llm_tracing.llm_tracing(exp_id) as first:
        run_backtest(make_agent(llm_server.base_url, tmp_path), SPEC, START, END)
    replay = make_agent(llm_server.base_url, tmp_path)
    with llm_tracing.llm_tracing(exp_id) as second:
        run_backtest(replay, SPEC, START, END)
    assert len(llm_server.requests) == 5
    assert all(d.cached for d in replay.decisions) and len(replay.decisions) == 5
    assert len(first) == 5 and second == []
    assert len(traces(exp_id)) == 5


def test_off_by_default_writes_no_trace(llm_server, tmp_path, store):
    llm_server.script(then=completion(GOOD, 100, 20))
    exp_id = experiment("llm-off")
    agent = make_agent(llm_server.base_url, tmp_path)
    assert not llm_tracing.tracing_enabled()
    run_backtest(agent, SPEC, START, END)
    assert len(agent.decisions) == 5 and traces(exp_id) == []


def test_a_tracing_failure_warns_once_and_the_backtest_goes_on(
    llm_server, tmp_path, store, monkeypatch
):
    def broken(*args: Any) -> str:
        raise RuntimeError("store unavailable")

    monkeypatch.setattr(llm_tracing, "_record", broken)
    llm_server.script(then=completion(GOOD, 100, 20))
    agent = make_agent(llm_server.base_url, tmp_path)
    with (
        pytest.warns(RuntimeWarning, match="LLM tracing failed") as warned,
        llm_tracing.llm_tracing("0") as ids,
    ):
        run_backtest(agent, SPEC, START, END)
    assert len(warned) == 1 and ids == []
    assert [d.outcome for d in agent.decisions] == ["ok"] * 5


# A fresh interpreter: decisions with tracing off must not import MLflow at all (nothing
# else in this script does), and MARKETARENA_LLM_TRACING=1 traces into MLflow's experiment.
CHILD = """
import json, sys
from marketarena.agents.llm_agent import LLMAgent, LLMConfig
from marketarena.envs import PortfolioEnv
from marketarena.envs.data import load_dataset

data = load_dataset("sp500_20").select(("AAPL", "JNJ", "XOM"))
agent = LLMAgent(LLMConfig(model="scripted", base_url=sys.argv[1], max_retries=0,
                           lookback=5, cache_path=None))
env = PortfolioEnv(data, window=5, start="2019-01-02", end="2019-01-09", episode_length=None,
                   random_start=False, snapshot_lookback=agent.snapshot_lookback)
observation, info = env.reset()
for _ in range(3):
    observation, _, _, _, info = env.step(agent.act(observation, info))
print(json.dumps({"outcomes": [d.outcome for d in agent.decisions],
                  "mlflow_imported": "mlflow" in sys.modules}))
"""


def run_child(base_url: str, tmp_path: Path, tracing: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.pop(llm_tracing.ENV_VAR, None)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'child.db'}"
    env["MLFLOW_EXPERIMENT_NAME"] = "from-env"
    if tracing is not None:
        env[llm_tracing.ENV_VAR] = tracing
    out = subprocess.run(
        [sys.executable, "-c", CHILD, base_url],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("tracing", [None, "0"])
def test_with_tracing_off_mlflow_is_never_imported(llm_server, tmp_path, tracing):
    llm_server.script(then=completion(GOOD, 100, 20))
    child = run_child(llm_server.base_url, tmp_path, tracing)
    assert child == {"outcomes": ["ok"] * 3, "mlflow_imported": False}
    assert not (tmp_path / "child.db").exists()


def test_the_environment_variable_traces_into_mlflows_experiment(llm_server, tmp_path):
    llm_server.script(then=completion(GOOD, 100, 20))
    child = run_child(llm_server.base_url, tmp_path, "1")
    assert child == {"outcomes": ["ok"] * 3, "mlflow_imported": True}
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'child.db'}")
    exp = client.get_experiment_by_name("from-env")
    found = client.search_traces(locations=[exp.experiment_id])
    assert len(found) == 3
    assert {t.info.tags["marketarena.outcome"] for t in found} == {"ok"}


def test_evaluate_mlflow_traces_each_decision_into_its_experiment(llm_server, tmp_path, store):
    from marketarena.cli import main
    from marketarena.evaluation import tracking

    llm_server.script(*SCRIPT)
    console = Console(record=True, width=250)
    code = main(
        [
            "evaluate",
            "--agent",
            "llm:scripted",
            "--data",
            "sp500_20",
            "--start",
            START,
            "--end",
            END,
            "--window",
            "5",
            "--benchmark",
            "none",
            "--no-baselines",
            "--base-url",
            llm_server.base_url,
            "--llm-cache",
            str(tmp_path / "cache.sqlite"),
            "--llm-max-retries",
            "0",
            "--llm-lookback",
            "5",
            "--output",
            str(tmp_path / "report"),
            "--mlflow",
            "--experiment",
            "traced-eval",
        ],
        console=console,
    )
    text = console.export_text()
    assert code == 0, text
    match = re.search(r"MLflow run ([0-9a-f]{32}), 5 LLM requests traced", text)
    assert match, text
    run_id = match.group(1)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("traced-eval")
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND
    found = traces(exp.experiment_id)
    assert [t.info.tags["marketarena.outcome"] for t in found] == OUTCOMES
    assert all(t.info.tags["marketarena.agent"] == "llm:scripted" for t in found)
    # linked to the evaluation's run: its Traces tab lists them
    linked = mlflow.search_traces(locations=[exp.experiment_id], run_id=run_id, return_type="list")
    assert {t.info.trace_id for t in linked} == {t.info.trace_id for t in found}
    assert all(SECRET not in t.to_json() for t in found)
    assert not llm_tracing.tracing_enabled()
