"""Paper trading (`marketarena paper`, evaluation/saved_runs/paper.py): a paper run over a
replayed period (a real ReplayServer on 127.0.0.1, bars over a WebSocket) equals the
persisted backtest over it bit for bit; killed and resumed it equals an uninterrupted one;
what a feed delivers out of policy is ignored and counted; an outage keeps it resumable."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from aiohttp import web
from rich.console import Console

from marketarena.cli import EXIT_ERROR, EXIT_OK, main
from marketarena.envs.data import resolve_data
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.feeds import (
    BackgroundServer,
    Backoff,
    Bar,
    BarSet,
    FeedUnavailableError,
    ReplayServer,
    daily_bar_end,
)
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation.saved_runs import paper, persisted
from marketarena.evaluation.saved_runs.store import RunStore

START, END = "2022-10-31", "2022-12-28"  # sp500_20's last weeks: 40 sessions after START


def run_cli(argv: list[str]) -> tuple[int, str]:
    console = Console(record=True, width=250)
    code = main(argv, console=console)
    return code, console.export_text()


def assert_same_run(a, b) -> None:
    """Bit for bit: dates, NAVs, weights, turnover, costs and fills."""
    assert list(a.dates) == list(b.dates)
    assert np.array_equal(a.nav, b.nav)
    assert np.array_equal(a.weights, b.weights)
    assert np.array_equal(a.turnover, b.turnover)
    assert np.array_equal(a.costs, b.costs)
    pd.testing.assert_frame_equal(a.fills, b.fills)


def bar_sets(data, first: str, last: str) -> list[BarSet]:
    """Daily bar sets of ``data``'s rows in ``(first, last]``, as a feed delivers them."""
    rows = [i for i, d in enumerate(data.dates) if first < str(d) <= last]
    out = []
    for i in rows:
        end = daily_bar_end(data.dates[i])
        bars = {
            s: Bar(s, end, "1d", float(data.close[i, j]), *_ohlv(data, i, j))
            for j, s in enumerate(data.symbols)
        }
        out.append(BarSet(end, "1d", str(data.dates[i]), bars))
    return out


def _ohlv(data, i: int, j: int) -> tuple:
    return tuple(
        None if getattr(data, f) is None else float(getattr(data, f)[i, j])
        for f in ("open", "high", "low", "volume")
    )


@pytest.fixture(scope="module")
def sp500():
    return resolve_data("sp500_20")


@pytest.fixture(scope="module")
def server(sp500):
    with ReplayServer(sp500) as running:  # as fast as possible
        yield running


# ---------------------------------------------------------------- the whole path
@pytest.mark.parametrize(
    ("agent", "options"),
    [
        ("random:3", {"risk": {"max_weight": 0.2}, "rules": {"commission_bps": 7.5}}),
        ('rule:"rsi_14 < 40"', {}),
        ("buy_and_hold", {"rules": {"lot_size": 1, "slippage_bps": 5}}),
    ],
)
def test_paper_run_over_a_replayed_period_equals_the_backtest(tmp_path, server, agent, options):
    store = RunStore(tmp_path / "runs.sqlite")
    backtest = persisted.start_backtest(store, "bt", agent, "sp500_20", START, END, **options)
    with (
        paper.start_paper(store, "paper", agent, "sp500_20", start=START, **options) as session,
        paper.open_feed("replay:" + server.url, session) as feed,
    ):
        counts = paper.run_paper(session, feed)
    assert counts.recorded == 40 and counts.received == 40
    assert (counts.stale, counts.off_session, counts.rejected, counts.gaps) == (0, 0, 0, 0)
    assert feed.stats.sets_emitted == 40
    paper_run = persisted.load_result(store, "paper")
    assert_same_run(paper_run, backtest)
    assert paper_run.interventions == backtest.interventions
    info = store.run("paper")
    assert info.status == "finished" and info.spec["end"] == END
    assert info.spec["data_sha256"] == store.run("bt").spec["data_sha256"]


def test_an_sb3_agent_trades_a_paper_run_as_in_the_backtest(tmp_path, server):
    """A PPO model (its observations: the feature window over the grown data) and a
    turnover risk rule: the paper run equals the backtest."""
    from stable_baselines3 import PPO

    from marketarena.envs.portfolio_env import PortfolioEnv

    env = PortfolioEnv("sp500_20", end=START, episode_length=32)
    PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu").learn(
        32
    ).save(tmp_path / "ppo.zip")
    agent = f"ppo:{tmp_path / 'ppo.zip'}"
    store = RunStore(tmp_path / "runs.sqlite")
    risk = {"max_turnover": 0.5}
    backtest = persisted.start_backtest(store, "bt", agent, "sp500_20", START, END, risk=risk)
    with (
        paper.start_paper(store, "paper", agent, "sp500_20", start=START, risk=risk) as session,
        paper.open_feed("replay:" + server.url, session) as feed,
    ):
        paper.run_paper(session, feed)
    assert_same_run(persisted.load_result(store, "paper"), backtest)
    assert backtest.interventions  # the rule acted


class FakeChatServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 whose answer is a function of the prompt
    (weights on three symbols from the request's hash): equal answers mean equal prompts."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        prompts = self.prompts = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = json.dumps(body["messages"], sort_keys=True)
                prompts.append(prompt)
                digest = hashlib.sha256(prompt.encode()).digest()
                weights = {symbols[b % len(symbols)]: 0.3 for b in digest[:3]}
                weights["CASH"] = 1.0 - sum(weights.values())
                content = json.dumps({"weights": weights, "confidence": 0.5})
                reply = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 1700000000,
                        "model": "fake",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def test_an_llm_agent_sees_the_same_prompts_in_a_paper_run(tmp_path, server, sp500, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    chat = FakeChatServer(sp500.symbols)
    try:
        llm = {"base_url": chat.base_url, "cache_path": None, "lookback": 5}
        store = RunStore(tmp_path / "runs.sqlite")
        end = "2022-11-30"
        backtest = persisted.start_backtest(
            store, "bt", "llm:fake", "sp500_20", START, end, llm=llm
        )
        with (
            paper.start_paper(store, "paper", "llm:fake", "sp500_20", start=START, llm=llm) as s,
            paper.open_feed("replay:" + server.url, s) as feed,
        ):
            paper.run_paper(s, feed, until=end)
    finally:
        chat.httpd.shutdown()
    assert len(chat.prompts) == 2 * 21
    assert chat.prompts[:21] == chat.prompts[21:]
    assert_same_run(persisted.load_result(store, "paper"), backtest)
    paper_llm, backtest_llm = store.diagnostics("paper"), store.diagnostics("bt")
    assert paper_llm["outcomes"] == backtest_llm["outcomes"] and paper_llm["outcomes"]["ok"] == 21
    assert [d["date"] for d in paper_llm["log"]] == [d["date"] for d in backtest_llm["log"]]


def test_paper_run_with_opens_fills_at_the_next_open_as_the_backtest(tmp_path):
    """OHLCV data (execution at the next bar's open), from a file, over a local server."""
    market = gbm_market(n_assets=4, n_periods=65, seed=3, start_date="2021-06-01")
    path = tmp_path / "ohlcv.csv"
    market.to_long_frame().to_csv(path, index=False)
    data = resolve_data(str(path))
    start, end = str(data.dates[35]), str(data.dates[-1])  # no holiday after start
    store = RunStore(tmp_path / "runs.sqlite")
    assert data.open is not None  # the default execution: at the next bar's open
    backtest = persisted.start_backtest(store, "bt", "random:2", str(path), start, end)
    with (
        paper.start_paper(store, "paper", "random:2", str(path), start=start) as session,
        paper.open_feed(f"replay:{path}", session, speed=1000) as feed,
    ):
        counts = paper.run_paper(session, feed)
    assert counts.recorded == 29 and counts.off_session == 0
    assert_same_run(persisted.load_result(store, "paper"), backtest)


def test_a_paper_run_follows_a_growing_file(tmp_path, sp500):
    """file:PATH through the CLI: the run stops at --until (rows after it wait in the file);
    --resume picks up the rows after its last bar and those appended since, and stops when
    no bar comes for --idle-timeout; the whole equals the backtest."""
    path = tmp_path / "bars.csv"
    long = sp500.slice("2022-11-01", END).to_long_frame()
    long["date"] = long["date"].dt.strftime("%Y-%m-%d")
    rest = long[long["date"] > "2022-11-17"]
    store_path = str(tmp_path / "runs.sqlite")
    long[long["date"] <= "2022-11-17"].to_csv(path, index=False)
    common = ["--feed", f"file:{path}", "--store", store_path]
    code, out = run_cli(
        [
            *("paper", "--agent", "random:3", "--start", START, "--run", "f"),
            *("--until", "2022-11-15", *common),
        ]
    )
    assert code == EXIT_OK, out  # the feed ended at --until's session: no wait for more rows
    assert "paper: 11 bar set(s) received, 11 recorded" in out
    rest.to_csv(path, mode="a", header=False, index=False)
    code, out = run_cli(["paper", "--resume", "f", *common, "--idle-timeout", "1.5"])
    assert code == EXIT_OK, out
    assert "paper: 29 bar set(s) received, 29 recorded" in out
    store = RunStore(store_path, create=False)
    backtest = persisted.start_backtest(store, "bt", "random:3", "sp500_20", START, END)
    assert_same_run(persisted.load_result(store, "f"), backtest)


def test_a_decision_never_sees_later_bars(tmp_path, sp500):
    """Perturb every bar after the 10th: the first 10 recorded bars (and the decisions
    behind them) do not change; later ones do."""
    sets = bar_sets(sp500, START, END)
    changed = [
        BarSet(
            s.end,
            "1d",
            s.date,
            {
                k: Bar(k, s.end, "1d", b.close * (1.3 if k < "M" else 0.7))
                for k, b in s.bars.items()
            },
        )
        for s in sets[10:]
    ]
    store = RunStore(tmp_path / "runs.sqlite")
    for run_id, feed in (("a", sets), ("b", sets[:10] + changed)):
        with paper.start_paper(store, run_id, 'rule:"rsi_14 < 40"', "sp500_20", start=START) as s:
            paper.run_paper(s, feed)
    a, b = (store.days(r) for r in ("a", "b"))
    pd.testing.assert_frame_equal(a.iloc[:10], b.iloc[:10])
    assert not a["nav"].iloc[12:].equals(b["nav"].iloc[12:])


# ----------------------------------------------------------------- kill + resume
def test_a_paper_run_killed_mid_stream_and_resumed_equals_an_uninterrupted_one(tmp_path):
    store_path = tmp_path / "runs.sqlite"
    argv = ["paper", "--agent", "random:3", "--feed", "replay:sp500_20", "--start", START]
    argv += ["--risk", "max_weight=0.25", "--store", str(store_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketarena.cli", *argv, "--run", "killed", "--speed", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        days = 0
        while days < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if store_path.exists():
                try:
                    days = RunStore(store_path, create=False).run("killed").days
                except Exception:  # the run or the store not made yet
                    days = 0
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = RunStore(store_path, create=False)
    killed = store.run("killed")
    assert killed.status == "running" and 8 <= killed.days < 40
    code, out = run_cli(
        [
            *("paper", "--resume", "killed", "--feed", "replay:sp500_20", "--speed", "1000"),
            *("--store", str(store_path)),
        ]
    )
    assert code == EXIT_OK, out
    assert f"last recorded bar {killed.last_date}" in out
    code, out = run_cli([*argv, "--run", "whole", "--speed", "1000"])
    assert code == EXIT_OK, out
    assert_same_run(persisted.load_result(store, "killed"), persisted.load_result(store, "whole"))
    assert store.run("killed").days == 40


def test_ctrl_c_stops_the_command_cleanly_with_the_command_that_resumes(tmp_path, monkeypatch):
    store_path = tmp_path / "runs.sqlite"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "marketarena.cli", "paper", "--agent", "equal_weight:5"),
            *("--feed", "replay:sp500_20", "--start", START, "--speed", "20", "--run", "c"),
            *("--store", str(store_path)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:  # the bars printed as they are recorded
        lines.append(line)
        if sum("decided" in x for x in lines) == 3:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=30)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    # the feed's wait is cancelled and its generator closed: no "Exception ignored ...
    # aclose(): asynchronous generator is already running" on stderr, no traceback
    assert "Exception ignored" not in out and "Traceback" not in out, out
    hint = next(x for x in out.splitlines() if x.startswith("interrupted after bar"))
    command = hint.split("resume with ", 1)[1]
    assert command.startswith("marketarena paper --resume c --store runs.sqlite --feed")
    assert "paper: " in out and "feed: bars_received" in out
    days = RunStore(store_path, create=False).run("c").days
    assert days >= 3
    monkeypatch.chdir(tmp_path)  # the hint's paths are the command's working directory's
    code, out = run_cli([*shlex.split(command)[1:], "--speed", "1000"])
    assert code == EXIT_OK, out
    assert RunStore(store_path, create=False).run("c").days == 40


def test_ctrl_c_leaves_the_run_resumable(tmp_path, sp500, monkeypatch):
    store = RunStore(tmp_path / "runs.sqlite")
    sets = bar_sets(sp500, START, END)

    def interrupted():
        yield from sets[:5]
        raise KeyboardInterrupt

    with (
        paper.start_paper(store, "p", "random:3", "sp500_20", start=START) as session,
        pytest.raises(KeyboardInterrupt),
    ):
        paper.run_paper(session, interrupted())
    assert store.run("p").status == "running" and store.run("p").days == 5
    with paper.resume_paper(store, "p") as session:
        counts = paper.run_paper(session, sets)  # the first 5 come again: stale
    assert (counts.stale, counts.recorded) == (5, 35)
    backtest = persisted.start_backtest(store, "bt", "random:3", "sp500_20", START, END)
    assert_same_run(persisted.load_result(store, "p"), backtest)


# ------------------------------------------------------------------------ policy
def test_late_off_session_and_bad_bar_sets_are_ignored_counted_and_the_run_goes_on(tmp_path, sp500):
    sets = bar_sets(sp500, START, END)
    by_date = {s.date: s for s in sets}

    def at(date: str, scale: float = 1.0, drop: str | None = None) -> BarSet:
        end = daily_bar_end(date)
        source = sets[0]
        bars = {k: Bar(k, end, "1d", b.close * scale) for k, b in source.bars.items() if k != drop}
        return BarSet(end, "1d", date, bars)

    feed = [
        *sets[:5],
        sets[2],  # late: dated before the last recorded bar
        at("2022-11-12"),  # a Saturday
        at("2022-11-24"),  # Thanksgiving: XNYS is closed
        at(sets[5].date, scale=1e6),  # a 1,000,000x print: invalid as historical data
        at(sets[5].date, drop="AAPL"),  # a set missing a symbol
        *sets[5:],
    ]
    store = RunStore(tmp_path / "runs.sqlite")
    with paper.start_paper(store, "p", "random:3", "sp500_20", start=START) as session:
        counts = paper.run_paper(session, feed)
    assert (counts.stale, counts.off_session, counts.rejected) == (1, 2, 2)
    assert counts.recorded == 40 and counts.gaps == 0
    assert "close moves more than" in counts.problems[0]
    assert "no bar for ['AAPL']" in counts.problems[1]
    backtest = persisted.start_backtest(store, "bt", "random:3", "sp500_20", START, END)
    assert_same_run(persisted.load_result(store, "p"), backtest)
    assert "2022-11-24" not in by_date  # the real data has no Thanksgiving bar either


def test_resuming_on_a_changed_history_is_refused(tmp_path, sp500):
    path = tmp_path / "history.csv"
    frame = sp500.slice("2022-06-01", END).to_long_frame()
    frame.to_csv(path, index=False)
    store = RunStore(tmp_path / "runs.sqlite")
    with paper.start_paper(store, "p", "random:3", str(path), start=START) as s:
        paper.run_paper(s, bar_sets(sp500, START, END)[:3])
    frame.loc[0, "close"] *= 1.01  # a revised print long before the run began
    frame.to_csv(path, index=False)
    with (
        pytest.raises(DataError, match="differs from the history paper run 'p' began with"),
        paper.resume_paper(store, "p"),
    ):
        pass


def test_a_run_ruined_ends_where_the_backtest_ends(tmp_path, sp500):
    """ruin_fraction=0.999: the first bar that loses 0.1% ends the episode in the backtest;
    the paper run stops at the same bar and takes no more."""
    rules = {"ruin_fraction": 0.999, "commission_bps": 5}
    store = RunStore(tmp_path / "runs.sqlite")
    backtest = persisted.start_backtest(
        store, "bt", "equal_weight:5", "sp500_20", START, END, rules=rules
    )
    assert len(backtest.nav) < 41
    sets = bar_sets(sp500, START, END)
    with paper.start_paper(store, "p", "equal_weight:5", "sp500_20", start=START, rules=rules) as s:
        counts = paper.run_paper(s, sets)
        assert s.ruined and counts.recorded == len(backtest.nav) - 1
        with pytest.raises(ConfigError, match="hit the ruin level"):
            s.add(sets[-1])
    assert_same_run(persisted.load_result(store, "p"), persisted.load_result(store, "bt"))
    with paper.resume_paper(store, "p") as s, pytest.raises(ConfigError, match="ruin level"):
        paper.run_paper(s, sets)


def test_a_missed_session_is_counted_and_the_decision_fills_at_the_next_bar(tmp_path, sp500):
    sets = bar_sets(sp500, START, END)
    store = RunStore(tmp_path / "runs.sqlite")
    with paper.start_paper(store, "p", "equal_weight:1", "sp500_20", start=START) as session:
        counts = paper.run_paper(session, sets[:3] + sets[5:])
    assert counts.gaps == 2 and counts.recorded == 38
    days = store.days("p")
    assert sets[3].date not in set(days["date"]) and days["date"].iloc[3] == sets[5].date


class FailingProvider:
    """A provider speaking the replay protocol that fails after ``sets`` bar sets: it goes
    down (the connection cut mid-stream, every reconnect answered 503), or with
    ``invalid=True`` it sends a bar whose close is negative."""

    def __init__(self, data, sets: int, invalid: bool = False) -> None:
        self.replay = ReplayServer(data)  # not started: its bars and session closes
        self.sets, self.invalid, self.down, self.refused = sets, invalid, False, 0
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self.server = BackgroundServer(app)

    @property
    def url(self) -> str:
        return f"ws://{self.server.host}:{self.server.port}/ws"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            self.refused += 1
            raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        message = await ws.receive_json()
        after = pd.Timestamp(message["after"])
        rows = [t for t, e in enumerate(self.replay.ends) if e > after]
        symbols = message["symbols"]
        await ws.send_json({"type": "ready", "symbols": symbols, "interval": "1d"})
        for n, t in enumerate(rows):
            if n == self.sets and self.invalid:
                bad = {**self.replay.bars_of(t, symbols)[0].to_json(), "close": -1.0}
                await ws.send_json({"type": "bar", **bad})
            elif n == self.sets:
                self.down = True
                assert request.transport is not None
                request.transport.abort()
                return ws
            for bar in self.replay.bars_of(t, symbols):
                await ws.send_json({"type": "bar", **bar.to_json()})
            await ws.send_json({"type": "set", "end": self.replay.ends[t].isoformat()})
        return ws


def test_a_provider_outage_stops_the_run_with_a_clear_error_and_it_resumes(tmp_path, sp500):
    """The provider goes down mid-stream: the feed retries, gives up with a clear error, the
    run keeps every bar it recorded; resumed on another feed it equals an uninterrupted run."""
    store = RunStore(tmp_path / "runs.sqlite")
    provider = FailingProvider(sp500, sets=6)
    provider.server.start()
    try:
        with (
            paper.start_paper(store, "p", "random:3", "sp500_20", start=START) as session,
            paper.open_feed(
                "replay:" + provider.url, session, backoff=Backoff(0.01, 1, 0.01, 3)
            ) as feed,
            pytest.raises(FeedUnavailableError, match="replay"),
        ):
            paper.run_paper(session, feed)
    finally:
        provider.server.stop()
    assert provider.refused == 2 and feed.stats.reconnects >= 1
    info = store.run("p")
    assert info.status == "running"
    assert 5 <= info.days <= 6  # the 6th set is emitted when the 7th begins or the feed ends
    with (
        ReplayServer(sp500) as again,
        paper.resume_paper(store, "p") as session,
        paper.open_feed("replay:" + again.url, session) as feed,
    ):
        paper.run_paper(session, feed)
    backtest = persisted.start_backtest(store, "bt", "random:3", "sp500_20", START, END)
    assert_same_run(persisted.load_result(store, "p"), backtest)


def test_an_invalid_bar_stops_the_command_with_a_clear_error_and_the_run_resumes(
    tmp_path, sp500, server
):
    provider = FailingProvider(sp500, sets=6, invalid=True)
    provider.server.start()
    store_path = str(tmp_path / "runs.sqlite")
    try:
        code, out = run_cli(
            [
                *("paper", "--agent", "random:3", "--start", START, "--run", "p"),
                *("--feed", "replay:" + provider.url, "--store", store_path),
            ]
        )
    finally:
        provider.server.stop()
    assert code == EXIT_ERROR
    (line,) = [x for x in out.splitlines() if x.startswith("error: ")]
    assert "AAPL at 2022-11-09T21:00:00+00:00: close -1.0 is not a positive price" in line
    assert "the run is kept up to 2022-11-08: resume with marketarena paper --resume p" in line
    store = RunStore(store_path, create=False)
    assert store.run("p").days == 6 and store.run("p").status == "running"
    code, out = run_cli(
        ["paper", "--resume", "p", "--feed", "replay:" + server.url, "--store", store_path]
    )
    assert code == EXIT_OK, out
    backtest = persisted.start_backtest(store, "bt", "random:3", "sp500_20", START, END)
    assert_same_run(persisted.load_result(store, "p"), backtest)


def test_an_outage_falls_back_to_the_next_feed_and_the_run_goes_on(tmp_path, sp500, server):
    """Two feeds in order: the first provider goes down after 6 sets, the second (another
    replay server) takes over after the last set delivered: the run equals the backtest."""
    store = RunStore(tmp_path / "runs.sqlite")
    provider = FailingProvider(sp500, sets=6)
    provider.server.start()
    try:
        with (
            paper.start_paper(store, "p", "random:3", "sp500_20", start=START) as session,
            paper.open_feed(
                ["replay:" + provider.url, "replay:" + server.url],
                session,
                backoff=Backoff(0.01, 1, 0.01, 2),
            ) as feed,
        ):
            counts = paper.run_paper(session, feed)
    finally:
        provider.server.stop()
    assert feed.stats.switches == 1 and counts.recorded == 40 and counts.stale == 0
    backtest = persisted.start_backtest(store, "bt", "random:3", "sp500_20", START, END)
    assert_same_run(persisted.load_result(store, "p"), backtest)


def test_a_rest_provider_feeds_a_paper_run_and_its_key_is_never_shown(tmp_path, sp500, monkeypatch):
    """rest:URL through the CLI against a local provider speaking the polling REST protocol
    (401 without the key): the run equals the backtest; the key is in no output and no
    byte of the store."""
    key = "sk-paper-s3cret-key"
    monkeypatch.setenv("MARKETARENA_REST_API_KEY", key)
    rows = [i for i, d in enumerate(sp500.dates) if START < str(d) <= END]

    async def latest(request: web.Request) -> web.Response:
        if request.query.get("apikey") != key:
            raise web.HTTPUnauthorized()
        symbols = request.query["symbols"].split(",")
        bars = {
            s: [{"t": str(sp500.dates[i]), "c": float(sp500.close[i, j])} for i in rows]
            for j, s in enumerate(sp500.symbols)
            if s in symbols
        }
        return web.json_response({"bars": bars})

    app = web.Application()
    app.router.add_get("/v1/bars/latest", latest)
    provider = BackgroundServer(app).start()
    try:
        store_path = tmp_path / "runs.sqlite"
        feed = f"rest:http://{provider.host}:{provider.port}/v1"
        code, out = run_cli(
            [
                *("paper", "--agent", "random:3", "--start", START, "--run", "r"),
                *("--feed", feed, "--idle-timeout", "1", "--store", str(store_path)),
            ]
        )
    finally:
        provider.stop()
    assert code == EXIT_OK, out
    assert "paper: 40 bar set(s) received, 40 recorded" in out
    assert key not in out
    stored = list(tmp_path.glob("runs.sqlite*"))  # the database and its write-ahead log
    assert stored and not any(key.encode() in f.read_bytes() for f in stored)
    store = RunStore(store_path, create=False)
    backtest = persisted.start_backtest(store, "bt", "random:3", "sp500_20", START, END)
    assert_same_run(persisted.load_result(store, "r"), backtest)


# ------------------------------------------------------------------------- reads
def test_positions_and_leaderboard_read_a_paper_run(tmp_path, server):
    store_path = str(tmp_path / "runs.sqlite")
    feed = "replay:" + server.url
    code, out = run_cli(
        [
            *("paper", "--agent", "equal_weight:5", "--feed", feed, "--start", START),
            *("--run", "pp", "--store", store_path, "--bars", "10"),
        ]
    )
    assert code == EXIT_OK, out
    lines = [line for line in out.splitlines() if "decided" in line]
    assert len(lines) == 10
    assert lines[0].startswith("2022-11-01 close 20:00 UTC (16:00 EDT)  decided 2022-10-31")
    assert "paper: 10 bar set(s) received, 10 recorded" in out
    assert "feed: bars_received" in out and "run pp stored in" in out
    code, out = run_cli(["positions", "--run", "pp", "--store", store_path])
    assert code == EXIT_OK and "holdings of pp on 2022-11-14" in out
    end = "2022-11-14"
    code, out = run_cli(
        [
            *("backtest", "--agent", "equal_weight:5", "--start", START, "--end", end),
            *("--run", "bt", "--store", store_path),
        ]
    )
    assert code == EXIT_OK, out
    code, out = run_cli(["leaderboard", "pp", "bt", "--store", store_path])
    assert code == EXIT_OK, out
    assert f"leaderboard: {START} to {end}" in out
    store = RunStore(store_path, create=False)
    assert_same_run(persisted.load_result(store, "pp"), persisted.load_result(store, "bt"))
    # the run continues where it stopped (the feed replays after its last bar)
    code, out = run_cli(["paper", "--resume", "pp", "--feed", feed, "--store", store_path])
    assert code == EXIT_OK and store.run("pp").days == 40
    code, out = run_cli(["backtest", "--resume", "pp", "--store", store_path])
    assert code == EXIT_ERROR and "is a paper run: continue it with marketarena paper" in out


def test_the_service_reads_a_paper_run_as_a_backtest(tmp_path, server):
    """GET /runs, /leaderboard and /positions/history over a store with a paper run and the
    backtest over its dates: the same rows, the same final NAV."""
    from fastapi.testclient import TestClient

    from marketarena.service.app import create_app
    from marketarena.service.settings import ServiceSettings

    store_path = str(tmp_path / "runs.sqlite")
    store = RunStore(store_path)
    persisted.start_backtest(store, "bt", "equal_weight:5", "sp500_20", START, END)
    with (
        paper.start_paper(store, "pp", "equal_weight:5", "sp500_20", start=START) as session,
        paper.open_feed("replay:" + server.url, session) as feed,
    ):
        paper.run_paper(session, feed)
    token = "paper-t0ken"
    app = create_app(ServiceSettings(store=store_path, token=token))
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        runs = {r["run_id"]: r for r in client.get("/runs").json()}
        assert runs["pp"]["status"] == "finished" and runs["pp"]["days"] == 40
        assert runs["pp"]["last_date"] == runs["bt"]["last_date"] == END
        board = client.get("/leaderboard").json()
        assert board["title"] == f"leaderboard: {START} to {END}"
        finals = {row["model"]: row["final_nav"] for row in board["rows"]}
        assert len(board["rows"]) == 2 and len(set(finals.values())) == 1
        paper_history = client.get("/positions/history", params={"model": "pp"}).json()
        backtest_history = client.get("/positions/history", params={"model": "bt"}).json()
        assert paper_history["days"] == backtest_history["days"]
        assert paper_history["trades"] == backtest_history["trades"]


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--interval", "5min"], "sp500_20 holds 1d bars"),
        (["--interval", "2d"], "interval '2d': use one of"),
        (["--feed", "kafka:topic"], "unknown feed kind 'kafka'"),
        (["--feed", "replay"], "--feed 'replay': use replay:ws://"),
        (["--feed", "rest:http://127.0.0.1:9/v1"], "MARKETARENA_REST_API_KEY holds no API key"),
        (["--calendar", "XMARS"], "unknown exchange calendar 'XMARS'"),
        (["--bars", "0"], "--bars must be >= 1"),
        (["--start", "2022-13-01"], "--start"),
        (["--resume", "x"], "give one of --agent"),
        (["--agent", "", "--resume", "x", "--rule", "lot_size=1"], "drop --rule"),
        (["--agent", "nope"], "unknown agent 'nope'"),
        (["--risk", "nope=1"], "--risk"),
    ],
)
def test_bad_cli_input_is_one_error_line(tmp_path, extra, message, monkeypatch):
    monkeypatch.delenv("MARKETARENA_REST_API_KEY", raising=False)
    argv = ["paper", "--agent", "random:3", "--feed", "replay:sp500_20"]
    argv += ["--store", str(tmp_path / "s.sqlite")]
    for flag in dict.fromkeys(extra[::2]):
        if flag in argv:
            i = argv.index(flag)
            del argv[i : i + 2]
    code, out = run_cli([*argv, *extra])
    assert code == EXIT_ERROR, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out


def test_resume_of_a_backtest_or_an_unknown_run_is_refused(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    persisted.start_backtest(store, "bt", "cash", "sp500_20", START, "2022-11-04")
    with (
        pytest.raises(ConfigError, match="is a backtest, not a paper run"),
        paper.resume_paper(store, "bt"),
    ):
        pass
    code, out = run_cli(
        [
            "paper",
            "--resume",
            "nope",
            "--feed",
            "replay:sp500_20",
            "--store",
            str(tmp_path / "runs.sqlite"),
        ]
    )
    assert code == EXIT_ERROR and "no run 'nope'" in out


def test_history_too_short_for_the_window_is_a_clear_error(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    with (
        pytest.raises(DataError, match="up to 1990-01-03 is too short a history for the"),
        paper.start_paper(store, "p", "random:3", "sp500_20", start="1990-01-03"),
    ):
        pass
    assert store.runs() == []
