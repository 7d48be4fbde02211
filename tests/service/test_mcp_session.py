"""The session behind ``marketarena mcp serve``, in process: resuming, refusals, two clients.

(The subprocess tests, with real transports, are in test_mcp_server.py.)
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from rich.console import Console

from marketarena.cli.app import main
from marketarena.envs.errors import ConfigError, DataError
from marketarena.evaluation.mcp_session import DrivenBacktest
from marketarena.evaluation.saved_runs.persisted import start_backtest
from marketarena.evaluation.saved_runs.store import RunStore
from marketarena.service.mcp_server import build_server

DATA, START, END = "sp500_20", "2022-03-01", "2022-03-07"
HOLD_AAPL = {"weights": {"AAPL": 1.0}}


def serve(*args: str) -> tuple[int, str]:
    """``marketarena mcp serve ARGS`` in process (for refusals: nothing gets to serve)."""
    out = io.StringIO()
    code = main(["mcp", "serve", *args], Console(file=out, width=400))
    return code, out.getvalue().strip()


@pytest.fixture
def session(store_url: str) -> Any:
    """A new driven run ``run`` at its first decision, in a store on SQLite and PostgreSQL."""
    store = RunStore(store_url)
    driven = DrivenBacktest.start(
        store, "run", DATA, START, END, options={"data": DATA, "start": START, "end": END}
    )
    driven.open()
    yield driven
    driven.close()


def test_a_run_resumes_only_with_its_own_options_and_only_while_unfinished(
    session: DrivenBacktest, store_url: str
) -> None:
    assert not session.call("set_target_weights", HOLD_AAPL).error
    session.close()
    code, text = serve("--run", "run", "--store", store_url, "--end", "2022-03-10")
    assert (code, text) == (
        1,
        "error: run 'run' was started with {'end': '2022-03-07'}, not {'end': '2022-03-10'}: "
        "resume it with the options it was started with (or --run run alone), or choose "
        "another --run name for a new run",
    )
    resumed = DrivenBacktest.resume(RunStore(store_url), "run", options={"data": DATA, "end": END})
    resumed.open()
    assert resumed.toolbox is not None and resumed.toolbox.date == "2022-03-02"
    while not resumed.over:
        assert not resumed.call("set_target_weights", HOLD_AAPL).error
    resumed.close()
    code, text = serve("--run", "run", "--store", store_url)
    assert (code, text) == (
        1,
        f"error: run 'run' in {session.store.path} is finished (4 days): choose another --run "
        "name for a new run",
    )


def test_a_plain_backtest_is_not_served(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    start_backtest(store, "bt", "equal_weight", DATA, START, "2022-03-03")
    with pytest.raises(ConfigError, match="run 'bt' is a backtest of 'equal_weight', not a run"):
        DrivenBacktest.resume(store, "bt")


def test_two_clients_take_turns_on_one_run(session: DrivenBacktest) -> None:
    """Calls are serialised: each acts on the decision current when it runs."""

    async def both() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        server = build_server(session)
        async with Client(server) as one, Client(server) as two:
            answers = await asyncio.gather(
                one.call_tool("set_target_weights", HOLD_AAPL),
                two.call_tool("set_target_weights", {"weights": {"MSFT": 1.0}}),
            )
            seen = await one.call_tool("get_portfolio", {})
            return [a.structured_content for a in answers], seen.structured_content

    answers, seen = asyncio.run(both())
    assert sorted(a["decided"] for a in answers) == ["2022-03-01", "2022-03-02"]
    assert seen["date"] == "2022-03-03"  # two decisions made, one each, none twice
    log = session.agent.decisions
    assert [len(d["calls"]) for d in log] == [1, 1, 1]


def test_news_is_served_point_in_time_and_a_changed_file_is_not_resumed(tmp_path: Path) -> None:
    news = tmp_path / "news.csv"
    news.write_text(
        "published_at,symbol,headline,score\n"
        "2022-02-28T10:00:00-05:00,AAPL,Apple before the first decision,0.5\n"
        "2022-03-02T10:00:00-05:00,AAPL,Apple after the first decision,-0.5\n"
    )
    store = RunStore(tmp_path / "runs.sqlite")
    driven = DrivenBacktest.start(store, "news", DATA, START, END, news=str(news))
    driven.open()
    first = driven.call("get_news", {"symbols": ["AAPL"]})
    assert [i["headline"] for i in first.result["items"]] == ["Apple before the first decision"]
    driven.call("set_target_weights", HOLD_AAPL)
    second = driven.call("get_news", {"symbols": ["AAPL"]})
    assert [i["headline"] for i in second.result["items"]] == [
        "Apple after the first decision",
        "Apple before the first decision",
    ]
    driven.close()
    news.write_text(news.read_text().replace("0.5\n", "0.9\n", 1))
    with pytest.raises(DataError, match=r"news file .* changed since run 'news' started"):
        DrivenBacktest.resume(store, "news")


def test_a_failed_day_stops_the_session_and_the_run_resumes_from_its_last_stored_day(
    session: DrivenBacktest, monkeypatch: pytest.MonkeyPatch, store_url: str
) -> None:
    assert not session.call("set_target_weights", HOLD_AAPL).error
    store = session.store

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "record_day", broken)
    with pytest.raises(OSError, match="disk full"):
        session.call("set_target_weights", HOLD_AAPL)
    after = session.call("get_portfolio", {})
    assert after.error and after.result["error"] == (
        "the run stopped on an error (OSError: disk full); its completed days are stored: "
        "restart the server to resume it"
    )
    monkeypatch.undo()
    resumed = DrivenBacktest.resume(RunStore(store_url), "run")
    resumed.open()
    assert resumed.toolbox is not None and resumed.toolbox.date == "2022-03-02"
    resumed.close()


def test_every_read_tool_answers_the_same_whatever_comes_after_the_decision(
    tmp_path: Path, perturb_future: Any
) -> None:
    """Two markets, equal up to the first decision's close and different after it: every
    read tool's answer (over MCP's JSON) at that decision is byte-identical."""
    from marketarena.envs.data import resolve_data

    market = resolve_data(DATA).slice("2022-01-03", "2022-03-31")
    t = market.index_of(START)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_prices", {"last": 40, "fields": ["open", "high", "low", "close", "volume"]}),
        ("get_prices", {"start": "2022-01-03"}),
        ("get_indicator", {"name": "rsi_14", "last": 10}),
        ("get_indicator", {"name": "macd_hist_12_26_9"}),
        ("list_indicators", {}),
        ("get_portfolio", {}),
        ("get_rules", {}),
        ("get_prices", {"end": "2022-03-02"}),
        ("calculate", {"expression": "2 ** 10"}),
    ]
    answers = []
    for name, data in (("same", market), ("moved", perturb_future(market, t))):
        path = tmp_path / f"{name}.csv"
        data.to_long_frame().to_csv(path, index=False)
        driven = DrivenBacktest.start(
            RunStore(tmp_path / f"{name}.sqlite"), name, str(path), START, END
        )
        driven.open()
        answers.append([json.dumps(driven.call(tool, args).result) for tool, args in calls])
        driven.close()
    assert answers[0] == answers[1]
    assert '"look_ahead": true' in answers[0][-2]
