"""``marketarena mcp serve``: real MCP clients (the ``mcp`` SDK's) trade a persisted backtest.

The server runs as a subprocess of the real command, over stdio and over streamable HTTP on
127.0.0.1; NAVs are checked against an independent path (a scripted agent with the same
weights through ``run_backtest``), prices against the data itself.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from marketarena.cli.app import main
from marketarena.envs.data import resolve_data
from marketarena.envs.settings import EnvSettings
from marketarena.evaluation.runner import run_backtest
from marketarena.evaluation.saved_runs.persisted import load_result
from marketarena.evaluation.saved_runs.store import RunStore

DATA, START, END = "sp500_20", "2022-03-01", "2022-03-07"
# the run's decisions: after the closes of 03-01, 03-02, 03-03 and 03-04
DECISIONS = ["2022-03-01", "2022-03-02", "2022-03-03", "2022-03-04"]
WEIGHTS: list[dict[str, float]] = [
    {"AAPL": 0.5, "MSFT": 0.25, "CASH": 0.25},
    {"AAPL": 0.25, "XOM": 0.5},
    {"CASH": 1.0},
    {"JPM": 0.75, "KO": 0.25},
]
SERVE = [sys.executable, "-m", "marketarena.cli", "mcp", "serve"]


def serve_args(store: Path, *extra: str) -> list[str]:
    return ["--data", DATA, "--start", START, "--end", END, "--store", str(store), *extra]


class Scripted:
    """The independent path: the same weights, as arrays, through ``run_backtest``."""

    name = "scripted"

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.symbols = symbols
        self.actions = [self.array(w) for w in WEIGHTS]

    def array(self, weights: Mapping[str, float]) -> np.ndarray:
        out = np.zeros(len(self.symbols) + 1)
        for key, value in weights.items():
            out[-1 if key == "CASH" else self.symbols.index(key)] = value
        if "CASH" not in weights:
            out[-1] = 1.0 - out.sum()
        return out

    def reset(self, *, seed: int | None = None) -> None:
        self.step = 0

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        self.step += 1
        return self.actions[self.step - 1]


def scripted_navs() -> np.ndarray:
    data = resolve_data(DATA)
    spec = {"data": data, "settings": EnvSettings()}
    return run_backtest(Scripted(data.symbols), spec, START, END, seed=0).nav


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def act(client: Client, weights: Mapping[str, float]) -> dict[str, Any]:
    result = await client.call_tool("set_target_weights", {"weights": dict(weights)})
    assert not result.is_error, result.structured_content
    assert result.structured_content is not None
    return result.structured_content


# --------------------------------------------------------------------------- stdio
@pytest.mark.slow  # a server process: seconds to start and stop
def test_an_mcp_client_over_stdio_trades_a_backtest_that_equals_the_scripted_one(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.sqlite"
    log = tmp_path / "server.log"
    data = resolve_data(DATA)
    params = StdioServerParameters(
        command=SERVE[0], args=[*SERVE[1:], *serve_args(store)], cwd=str(tmp_path)
    )
    answers: list[dict[str, Any]] = []

    async def trade() -> None:
        with log.open("w") as errlog:
            async with Client(
                stdio_client(params, errlog=errlog), read_timeout_seconds=60
            ) as client:
                tools = {t.name: t for t in (await client.list_tools()).tools}
                assert set(tools) == {
                    "get_prices",
                    "get_indicator",
                    "list_indicators",
                    "get_portfolio",
                    "get_rules",
                    "calculate",
                    "set_target_weights",
                }
                assert "weights" in tools["set_target_weights"].input_schema["properties"]

                prices = await client.call_tool("get_prices", {"symbols": ["AAPL"], "last": 3})
                assert not prices.is_error
                t = data.index_of(START)
                j = data.symbols.index("AAPL")
                assert prices.structured_content == {
                    "dates": [str(d) for d in data.dates[t - 2 : t + 1]],
                    "close": {"AAPL": pytest.approx(list(data.close[t - 2 : t + 1, j]))},
                }
                future = await client.call_tool("get_prices", {"end": "2022-03-02"})
                assert future.is_error
                assert future.structured_content == {
                    "error": "end: 2022-03-02 is after the decision date 2022-03-01; only data "
                    "up to the decision's close exists",
                    "argument": "end",
                    "look_ahead": True,
                }
                bad = await client.call_tool("get_prices", {"last": "many"})
                assert bad.is_error and bad.structured_content["argument"] == "last"
                unknown = await client.call_tool("buy_everything", {})
                assert (
                    unknown.is_error and "unknown tool 'buy_everything'" in unknown.content[0].text
                )
                wrong = await client.call_tool("set_target_weights", {"weights": {"ZZZ": 1}})
                assert wrong.is_error and wrong.structured_content["argument"] == "weights.ZZZ"

                for decision, weights in zip(DECISIONS, WEIGHTS, strict=True):
                    portfolio = await client.call_tool("get_portfolio", {})
                    assert portfolio.structured_content["date"] == decision
                    answers.append(await act(client, weights))
                late = await client.call_tool("get_portfolio", {})
                assert late.is_error and late.structured_content["over"] is True

    asyncio.run(trade())

    # each answer: what filled at the next bar, the new NAV, the next decision or the end
    assert [a["decided"] for a in answers] == DECISIONS
    assert [a["filled_on"] for a in answers] == [*DECISIONS[1:], END]
    assert [a.get("next_decision") for a in answers] == [*DECISIONS[1:], None]
    first = answers[0]["filled"]
    assert {f["symbol"] for f in first} == {"AAPL", "MSFT"}
    assert all(f["side"] == "buy" for f in first)
    # close-only data: fills at the close of the next bar, at that price (costs apart)
    t1 = data.index_of(DECISIONS[1])
    assert {f["symbol"]: f["price"] for f in first} == {
        s: data.close[t1, data.symbols.index(s)] for s in ("AAPL", "MSFT")
    }
    assert answers[2]["holdings"] == {"CASH": 1.0}
    assert (
        answers[-1]["over"] is True
        and "marketarena positions --run mcp@2022-03-01" in (answers[-1]["message"])
    )

    # the stored run equals the scripted backtest of the same weights
    runs = RunStore(store, create=False)
    result = load_result(runs, "mcp@2022-03-01")
    np.testing.assert_array_equal(result.nav, scripted_navs())
    assert [str(d) for d in result.dates] == [DECISIONS[0], *DECISIONS[1:], END]
    assert runs.run("mcp@2022-03-01").status == "finished"

    # the MCP calls are in the decision records
    diagnostics = runs.diagnostics("mcp@2022-03-01")
    assert diagnostics["decisions"] == 4
    assert diagnostics["look_ahead_refusals"] == 1
    assert diagnostics["tool_errors"] == 4  # future date, bad argument, unknown tool, ZZZ
    first_record = diagnostics["log"][0]
    assert first_record["date"] == DECISIONS[0]
    assert [c["tool"] for c in first_record["calls"]] == [
        "get_prices",
        "get_prices",
        "get_prices",
        "buy_everything",
        "set_target_weights",
        "get_portfolio",
        "set_target_weights",
    ]
    assert first_record["calls"][1]["arguments"] == {"end": "2022-03-02"}
    assert first_record["calls"][1]["result"]["look_ahead"] is True
    assert first_record["calls"][-1]["result"]["accepted"] is True

    # progress on stderr, one line per stored day; stdout was the protocol only
    lines = log.read_text().splitlines()
    assert "run mcp@2022-03-01 (new) in" in lines[0] and "deciding 2022-03-01" in lines[0]
    assert sum("done (" in line for line in lines) == 4
    assert "finished, 4 day(s) stored" in lines[-1]

    # the run is a run like any other: positions reads it
    out = io.StringIO()
    from rich.console import Console

    code = main(
        ["positions", "--run", "mcp@2022-03-01", "--store", str(store)],
        Console(file=out, width=200),
    )
    text = out.getvalue()
    assert code == 0 and "holdings of mcp@2022-03-01" in text and "on 2022-03-07" in text
    assert "over 5 symbols" in text  # AAPL, MSFT, XOM, JPM, KO


# ---------------------------------------------------------------------------- http
@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Any]:
    """``start()``: ``marketarena mcp serve --transport http`` as a subprocess, ready."""
    port = free_port()
    started: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[subprocess.Popen[bytes], str]:
        args = serve_args(tmp_path / "runs.sqlite", "--transport", "http", "--port", str(port))
        errlog = (tmp_path / f"server{len(started)}.log").open("wb")
        proc = subprocess.Popen([*SERVE, *args], cwd=tmp_path, stderr=errlog)
        started.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / f"server{len(started) - 1}.log").read_text()
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return proc, f"http://127.0.0.1:{port}/mcp"
            time.sleep(0.1)
        raise AssertionError("the MCP server did not start")

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.slow  # two server processes
def test_a_server_killed_mid_run_resumes_at_the_same_decision(
    http_server: Any, tmp_path: Path
) -> None:
    proc, url = http_server()

    async def first_two() -> list[dict[str, Any]]:
        async with Client(url, read_timeout_seconds=60) as client:
            return [await act(client, w) for w in WEIGHTS[:2]]

    before = asyncio.run(first_two())
    assert before[-1]["next_decision"] == DECISIONS[2]
    os.kill(proc.pid, signal.SIGKILL)  # a crash: no shutdown, no goodbye
    proc.wait(timeout=30)
    runs = RunStore(tmp_path / "runs.sqlite", create=False)
    assert runs.run("mcp@2022-03-01").status == "running"
    assert runs.run("mcp@2022-03-01").days == 2

    proc, url = http_server()  # the same command again

    async def the_rest() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with Client(url, read_timeout_seconds=60) as client:
            portfolio = await client.call_tool("get_portfolio", {})
            assert portfolio.structured_content is not None
            return portfolio.structured_content, [await act(client, w) for w in WEIGHTS[2:]]

    portfolio, after = asyncio.run(the_rest())
    assert portfolio["date"] == DECISIONS[2]
    assert portfolio["nav"] == pytest.approx(before[-1]["nav"], rel=1e-9)  # the tool rounds
    assert after[-1]["over"] is True
    result = load_result(runs, "mcp@2022-03-01")
    np.testing.assert_array_equal(result.nav, scripted_navs())
    log = runs.diagnostics("mcp@2022-03-01")["log"]
    assert [d["date"] for d in log] == DECISIONS
    assert [len(d["calls"]) for d in log] == [1, 1, 2, 1]  # get_portfolio after the resume
    assert "resumed after 2 stored day(s)" in (tmp_path / "server1.log").read_text()


# --------------------------------------------------------------------------- errors
def run_cli(*args: str) -> tuple[int, str]:
    from rich.console import Console

    out = io.StringIO()
    code = main(["mcp", "serve", *args], Console(file=out, width=300))
    return code, out.getvalue().strip()


def test_startup_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    store = str(tmp_path / "runs.sqlite")
    code, text = run_cli(
        "--data", DATA, "--start", "2030-01-02", "--end", "2030-02-01", "--store", store
    )
    assert code == 1 and text == (
        "error: sp500_20: no trading date on or after 2030-01-02 (data ends 2022-12-28)"
    )
    code, text = run_cli("--store", store)
    assert (code, text) == (
        1,
        "error: give --run NAME (to resume a run) or --start and --end (a new run)",
    )
    code, text = run_cli("--data", DATA, "--start", START, "--store", store)
    assert (code, text) == (1, "error: a new run needs --start and --end")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, text = run_cli(
            *serve_args(tmp_path / "runs.sqlite", "--transport", "http", "--port", port)
        )
    assert code == 1 and text.startswith(f"error: --host/--port: cannot listen on 127.0.0.1:{port}")
    code, text = run_cli(
        *serve_args(tmp_path / "runs.sqlite", "--transport", "http", "--host", "0.0.0.0")
    )
    assert (code, text) == (
        1,
        "error: --host 0.0.0.0: the MCP server has no authentication, so it binds a loopback "
        "address only (127.0.0.1, localhost)",
    )
    assert RunStore(store).runs() == []  # nothing was created by a refused start
