"""``marketarena mcp serve --tools aitrader``: AI-Trader's own MCP tools over a persisted run,
driven by real MCP clients (the ``mcp`` SDK's), on the fixture market of conftest.py with one
full bar added on 2025-10-07:

  open / close   AAA            BBB           CCC
  2025-10-02     102 / 103      51 / 51.5     20.5 / 20.75     decision 1 (after the close)
  2025-10-03     104 / 105      52 / 51       21 / 21.25       decision 1 fills at the open
  2025-10-06     106 / 105.5    50 / 49       21.5 / 21.75
  2025-10-07     107 / 107.5    48.5 / 48.75  22 / 22.25

Books are checked at the decision's closes (hand-computed below); fills are at the next open
plus 5 bps slippage and 5 bps commission (the default rules). NAVs are checked against an
independent path: a scripted agent whose weights are the same share targets, through
``run_backtest``.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from rich.console import Console

from marketarena.cli.app import main
from marketarena.envs.data import resolve_data
from marketarena.envs.errors import ConfigError
from marketarena.envs.settings import EnvSettings
from marketarena.evaluation.mcp_session import DrivenBacktest
from marketarena.evaluation.runner import run_backtest
from marketarena.evaluation.saved_runs.persisted import load_result
from marketarena.evaluation.saved_runs.store import RunStore
from marketarena.service.mcp_server import build_server

START, END = "2025-10-01", "2025-10-07"
DECISIONS = ["2025-10-02", "2025-10-03", "2025-10-06"]
EXTRA_BAR = {  # 2025-10-07: open, high, low, close, volume
    "AAA": (107, 108, 106, 107.5, 1400),
    "BBB": (48.5, 49, 48, 48.75, 2400),
    "CCC": (22, 22.5, 21.5, 22.25, 3400),
}
NOT_ALLOWED = "This action will not be allowed."
SERVE = [sys.executable, "-m", "marketarena.cli", "mcp", "serve"]
# the book after each session: shares per symbol (the scripted agent's targets)
TARGETS = [
    {"AAA": 50, "BBB": 90, "CCC": 0},
    {"AAA": 30, "BBB": 90, "CCC": 7},
    {"AAA": 40, "BBB": 0, "CCC": 7},
]


@pytest.fixture
def market(ai: Any) -> Path:
    """The fixture market with a full bar on 2025-10-07 (no opens-only date)."""

    def add_bar(docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            o, h, lo, c, v = EXTRA_BAR[doc["Meta Data"]["2. Symbol"]]
            series = doc["Time Series (Daily)"]
            doc["Time Series (Daily)"] = {
                END: {
                    "1. buy price": f"{o:.4f}",
                    "2. high": f"{h:.4f}",
                    "3. low": f"{lo:.4f}",
                    "4. sell price": f"{c:.4f}",
                    "5. volume": str(v),
                },
                **series,
            }

    return Path(ai.merged(edit=add_bar, last_open=False))


class Targets:
    """The independent path: each decision's share targets as weights at the decision's
    closes (``info["prices"]``) over its NAV, through ``run_backtest``."""

    name = "targets"

    def __init__(self, symbols: Sequence[str], targets: Sequence[Mapping[str, int]]) -> None:
        self.symbols, self.targets = list(symbols), targets

    def reset(self, *, seed: int | None = None) -> None:
        self.step = 0

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        shares = np.array([self.targets[self.step][s] for s in self.symbols], dtype=float)
        self.step += 1
        weights = np.zeros(len(shares) + 1)
        weights[:-1] = shares * info["prices"] / info["nav"]
        weights[-1] = 1.0 - weights[:-1].sum()
        return weights


def positions(aaa: float, bbb: float, ccc: float, cash: float) -> dict[str, Any]:
    return {"AAA": aaa, "BBB": bbb, "CCC": ccc, "CASH": pytest.approx(cash, abs=1e-6)}


# --------------------------------------------------------------------------- stdio
@pytest.mark.slow  # a server process: seconds to start and stop
def test_an_ai_trader_client_trades_three_sessions_over_stdio(market: Path, tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    args = ["--data", str(market), "--start", START, "--end", END, "--window", "1"]
    params = StdioServerParameters(
        command=SERVE[0],
        args=[*SERVE[1:], *args, "--tools", "aitrader", "--store", str(store)],
        cwd=str(tmp_path),
    )
    log = tmp_path / "server.log"
    seen: dict[str, Any] = {}

    async def call(client: Client, name: str, **arguments: Any) -> Any:
        result = await client.call_tool(name, arguments)
        seen.setdefault(name, []).append(result)
        assert not result.is_error, result.content[0].text
        return result.structured_content

    async def trade() -> None:
        with log.open("w") as errlog:
            async with Client(
                stdio_client(params, errlog=errlog), read_timeout_seconds=60
            ) as client:
                tools = {t.name: t for t in (await client.list_tools()).tools}
                assert list(tools) == [
                    "buy",
                    "sell",
                    "get_price_local",
                    "add",
                    "multiply",
                    "get_information",
                    "finish_session",
                ]
                assert tools["buy"].input_schema["required"] == ["symbol", "amount"]
                assert tools["get_price_local"].input_schema["required"] == ["symbol", "date"]

                # session 1, after the close of 2025-10-02 (AAA 103, BBB 51.5, CCC 20.75)
                assert await call(client, "get_price_local", symbol="AAA", date="2025-10-01") == {
                    "symbol": "AAA",
                    "date": "2025-10-01",
                    "ohlcv": {
                        "open": 100.0,
                        "high": 102.0,
                        "low": 99.0,
                        "close": 101.0,
                        "volume": 1000.0,
                    },
                }
                assert await call(client, "get_price_local", symbol="AAA", date="2025-10-03") == {
                    "error": "date: 2025-10-03 is after the decision date 2025-10-02; only data "
                    "up to the decision's close exists",
                    "symbol": "AAA",
                    "date": "2025-10-03",
                    "look_ahead": True,
                }
                assert await call(client, "add", a=1.5, b=2) == {"result": 3.5}
                assert seen["add"][0].content[0].text == "3.5"  # AI-Trader's float, as text
                assert await call(client, "multiply", a=103, b=50) == {"result": 5150.0}
                assert await call(client, "buy", symbol="AAA", amount=50) == positions(
                    50, 0, 0, 10_000 - 50 * 103
                )
                assert await call(client, "buy", symbol="BBB", amount=100) == {
                    "error": f"Insufficient cash! {NOT_ALLOWED}",
                    "required_cash": 5150.0,
                    "cash_available": 4850.0,
                    "symbol": "BBB",
                    "date": "2025-10-02",
                }
                assert await call(client, "buy", symbol="BBB", amount=90) == positions(
                    50, 90, 0, 4850 - 90 * 51.5
                )
                assert await call(client, "sell", symbol="CCC", amount=5) == {
                    "error": f"Insufficient shares! {NOT_ALLOWED}",
                    "have": 0,
                    "want_to_sell": 5,
                    "symbol": "CCC",
                    "date": "2025-10-02",
                }
                assert await call(client, "buy", symbol="ZZZ", amount=1) == {
                    "error": f"Symbol ZZZ not found! {NOT_ALLOWED}",
                    "symbol": "ZZZ",
                    "date": "2025-10-02",
                }
                negative = await client.call_tool("buy", {"symbol": "AAA", "amount": -3})
                assert negative.is_error and negative.structured_content == {
                    "error": "amount: Input should be greater than or equal to 1",
                    "argument": "amount",
                }
                search = await call(client, "get_information", query="AAA earnings")
                assert search["result"].startswith("❌ Search tool execution failed: no search")
                first = await call(client, "finish_session")
                # filled at the open of 2025-10-03; slippage and commission (5 bps each) paid
                assert first["decided"] == "2025-10-02" and first["filled_on"] == "2025-10-03"
                assert {f["symbol"]: (f["shares"], f["price"]) for f in first["filled"]} == {
                    "AAA": (pytest.approx(50, rel=1e-12), 104.0),
                    "BBB": (pytest.approx(90, rel=1e-12), 52.0),
                }
                cash = 10_000 - (50 * 104 + 90 * 52) * 1.0005 * 1.0005
                assert first["positions"] == positions(50, 90, 0, cash)
                assert first["next_decision"] == "2025-10-03"

                # session 2, after the close of 2025-10-03 (AAA 105, BBB 51, CCC 21.25)
                assert await call(client, "sell", symbol="AAA", amount=20) == positions(
                    30, 90, 0, cash + 20 * 105
                )
                assert await call(client, "buy", symbol="CCC", amount=7) == positions(
                    30, 90, 7, cash + 20 * 105 - 7 * 21.25
                )
                second = await call(client, "finish_session")
                assert {(f["symbol"], f["side"]) for f in second["filled"]} == {
                    ("AAA", "sell"),
                    ("CCC", "buy"),
                }
                # session 3, after the close of 2025-10-06: sell every BBB, buy 10 AAA
                await call(client, "sell", symbol="BBB", amount=90)
                await call(client, "buy", symbol="AAA", amount=10)
                third = await call(client, "finish_session")
                assert third["over"] is True and third["filled_on"] == END
                late = await client.call_tool("buy", {"symbol": "AAA", "amount": 1})
                assert late.is_error and late.structured_content["over"] is True

    asyncio.run(trade())

    runs = RunStore(store, create=False)
    run_id = f"mcp@{START}"
    assert runs.run(run_id).status == "finished"
    assert runs.run(run_id).spec["tools"] == "aitrader"
    # the stored holdings are the books' share counts (fractional shares: to float precision)
    held = runs.days(run_id)[["AAA", "BBB", "CCC"]].to_dict("records")
    assert held == [{k: pytest.approx(v, rel=1e-12) for k, v in t.items()} for t in TARGETS]
    # NAVs: the same share targets through run_backtest
    data = resolve_data(str(market))
    spec = {"data": data, "settings": EnvSettings(window=1)}
    expected = run_backtest(Targets(data.symbols, TARGETS), spec, START, END, seed=0)
    result = load_result(runs, run_id)
    assert [str(d) for d in result.dates] == [*DECISIONS, END]
    # (the book's cash weight is its cash over the NAV, the scripted one 1 - the rest: one ulp)
    np.testing.assert_allclose(result.nav, expected.nav, rtol=1e-15)
    # by hand, the first mark: the shares at the closes of 10-03 plus the cash after the fills
    cash = 10_000 - (50 * 104 + 90 * 52) * 1.0005 * 1.0005
    assert result.nav[1] == pytest.approx(50 * 105 + 90 * 51 + cash, rel=1e-12)
    # the calls are in the decision records
    diagnostics = runs.diagnostics(run_id)
    assert diagnostics["decisions"] == 3
    assert diagnostics["look_ahead_refusals"] == 1
    calls = [c["tool"] for c in diagnostics["log"][0]["calls"]]
    assert calls[:2] == ["get_price_local", "get_price_local"] and calls[-1] == "finish_session"
    assert "finished, 3 day(s) stored" in log.read_text().splitlines()[-1]


# ------------------------------------------------------------------------ in process
def open_session(store: Path, data: Path, name: str = "run", **kwargs: Any) -> DrivenBacktest:
    session = DrivenBacktest.start(
        RunStore(store), name, str(data), START, END, tools="aitrader", window=1, **kwargs
    )
    session.open()
    return session


def tool_calls(session: DrivenBacktest, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
    """The calls through a real MCP client on ``session``'s server (in memory)."""

    async def run() -> list[Any]:
        async with Client(build_server(session)) as client:
            return [await client.call_tool(name, args) for name, args in calls]

    return asyncio.run(run())


def test_whole_shares_are_exact_and_a_book_the_open_cannot_pay_is_scaled(
    market: Path, tmp_path: Path
) -> None:
    session = open_session(tmp_path / "runs.sqlite", market, rules={"lot_size": 1})
    sells = [("sell", {"symbol": "AAA", "amount": 20}), ("buy", {"symbol": "CCC", "amount": 7})]
    answers = tool_calls(
        session,
        ("buy", {"symbol": "AAA", "amount": 50}),
        ("buy", {"symbol": "BBB", "amount": 90}),
        ("finish_session", {}),
        *sells,
        ("finish_session", {}),
    )
    assert not any(a.is_error for a in answers)
    np.testing.assert_array_equal(session.env.sim.shares[0], [30.0, 90.0, 7.0])
    # session 3: sell every BBB and buy all the AAA the book's cash pays at the closes of
    # 10-06 (BBB 49, AAA 105.5); at the opens of 10-07 BBB fetches 48.5 and AAA costs 107
    assert session.toolbox is not None
    cash = session.toolbox.cash + 90 * 49
    aaa = int(cash // 105.5)
    book = tool_calls(
        session,
        ("sell", {"symbol": "BBB", "amount": 90}),
        ("buy", {"symbol": "AAA", "amount": aaa}),
    )[-1]
    assert book.structured_content["AAA"] == 30 + aaa and book.structured_content["CASH"] >= 0
    last = tool_calls(session, ("finish_session", {}))[0].structured_content
    # the buy is cut to the whole shares the cash after the sale pays at 107 with costs
    left = float(session.env.sim.cash[0])
    bought = next(f["shares"] for f in last["filled"] if f["symbol"] == "AAA")
    after_sale = cash - 90 * 49 + 90 * 48.5 * 0.9995 * 0.9995
    assert bought == int(after_sale / (107 * 1.0005 * 1.0005)) == aaa - 1
    assert 0 <= left < 107 * 1.0005 * 1.0005  # less than one more share
    session.close()


def test_get_information_answers_from_the_news_published_by_the_decision(
    market: Path, tmp_path: Path
) -> None:
    news = tmp_path / "news.csv"
    news.write_text(
        "published_at,symbol,headline,score\n"
        "2025-10-01T09:00:00-04:00,AAA,AAA beats estimates,0.5\n"
        "2025-10-02T15:00:00-04:00,BBB,BBB cuts guidance,-0.4\n"
        "2025-10-02T17:00:00-04:00,AAA,AAA after the close,0.1\n"
    )
    session = open_session(tmp_path / "runs.sqlite", market, news=str(news))
    found, nothing = tool_calls(
        session,
        ("get_information", {"query": "aaa news"}),
        ("get_information", {"query": "CCC"}),
    )
    assert found.content[0].text == (
        "\nSymbol: AAA\nTitle: AAA beats estimates\nPublish Time: 2025-10-01 13:00:00 UTC\n"
        "Score: 0.5\n"
    )
    assert nothing.content[0].text == "⚠️ Search query 'CCC' found no results."
    session.close()


def test_get_price_local_answers_the_same_whatever_comes_after_the_decision(
    market: Path, tmp_path: Path, perturb_future: Any
) -> None:
    data = resolve_data(str(market))
    t = data.index_of(DECISIONS[0])
    calls = [
        ("get_price_local", {"symbol": s, "date": d})
        for s in data.symbols
        for d in ("2025-10-01", "2025-10-02", "2025-10-03", END)
    ]
    texts = []
    for name, market_data in (("same", data), ("moved", perturb_future(data, t))):
        path = tmp_path / f"{name}.csv"
        market_data.to_long_frame().to_csv(path, index=False)
        session = open_session(tmp_path / f"{name}.sqlite", path)
        texts.append([a.content[0].text for a in tool_calls(session, *calls)])
        session.close()
    assert texts[0] == texts[1]
    assert sum('"look_ahead": true' in text for text in texts[0]) == 6  # 10-03, 10-07 each


def test_a_run_keeps_its_tool_set_when_resumed(market: Path, tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    session = open_session(store, market, options={"tools": "aitrader"})
    tool_calls(session, ("buy", {"symbol": "AAA", "amount": 1}), ("finish_session", {}))
    session.close()
    out = io.StringIO()
    code = main(
        ["mcp", "serve", "--run", "run", "--store", str(store), "--tools", "marketarena"],
        Console(file=out, width=400),
    )
    assert code == 1 and out.getvalue().startswith(
        "error: run 'run' was started with {'tools': 'aitrader'}, not {'tools': 'marketarena'}"
    )
    with pytest.raises(ConfigError, match="tools 'ai-trader': choose marketarena or aitrader"):
        DrivenBacktest.start(RunStore(store), "other", str(market), START, END, tools="ai-trader")
    resumed = DrivenBacktest.resume(RunStore(store), "run")
    resumed.open()
    assert resumed.toolbox is not None and resumed.toolbox.date == DECISIONS[1]
    assert [t["name"] for t in resumed.tool_specs()][-1] == "finish_session"
    answer = tool_calls(resumed, ("sell", {"symbol": "AAA", "amount": 1}))[0]
    assert json.loads(answer.content[0].text)["AAA"] == 0
    resumed.close()


def test_backtest_resume_or_continue_of_an_mcp_run_says_what_to_run_instead(
    market: Path, tmp_path: Path
) -> None:
    store = tmp_path / "runs.sqlite"
    session = open_session(store, market)  # created, no day done

    def backtest(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        code = main(["backtest", *args, "--store", str(store)], Console(file=out, width=400))
        return code, out.getvalue().strip()

    assert backtest("--resume", "run") == (
        1,
        "error: run 'run' is traded by an MCP client: resume it with marketarena mcp serve "
        f"--run run --store {store}",
    )
    while not session.over:
        session.call("finish_session", {})
    session.close()
    assert backtest("--continue", "run", "--end", "2025-10-08") == (
        1,
        "error: run 'run' is traded by an MCP client: no agent here can extend it; start a "
        "new run with marketarena mcp serve",
    )
