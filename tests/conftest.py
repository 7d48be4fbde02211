"""Shared fixtures: small hand-made markets; run stores on SQLite and PostgreSQL; a scripted
OpenAI-compatible server for LLM agents (below)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

from marketarena.envs.data import MarketData


def _make_market(
    close: list[list[float]] | np.ndarray,
    open: list[list[float]] | np.ndarray | None = None,
    volume: list[list[float]] | np.ndarray | None = None,
    symbols: tuple[str, ...] | None = None,
    start: str = "2024-01-01",
) -> MarketData:
    close = np.asarray(close, dtype=float)
    t, n = close.shape
    kwargs: dict[str, np.ndarray] = {}
    if open is not None:
        o = np.asarray(open, dtype=float)
        kwargs.update(open=o, high=np.maximum(o, close) * 1.01, low=np.minimum(o, close) * 0.99)
    if volume is not None:
        kwargs["volume"] = np.asarray(volume, dtype=float)
    dates = pd.bdate_range(start, periods=t).to_numpy().astype("datetime64[D]")
    symbols = symbols or tuple("ABCDEFGHIJ"[:n])
    return MarketData(dates=dates, symbols=symbols, close=close, name="hand", **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Computed-array caches (indicators, sentiment) go to a folder of this test session's,
    never the user's ~/.cache; a test that needs its own sets MARKETARENA_CACHE_DIR itself."""
    import os

    os.environ["MARKETARENA_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def make_market() -> Callable[..., MarketData]:
    """Build a MarketData from literal price lists (OHLC consistent when opens are given)."""
    return _make_market


def _perturb_future(data: MarketData, t: int, *, scale: float = 0.1, seed: int = 0) -> MarketData:
    """``data`` with every price of the bars after row ``t`` moved by a random factor (open,
    high, low and close together, so each bar stays consistent); rows <= t are untouched."""
    import dataclasses

    shock = np.ones_like(data.close)
    shock[t + 1 :] = np.exp(np.random.default_rng(seed).normal(0, scale, shock[t + 1 :].shape))
    moved = {
        field: getattr(data, field) * shock
        for field in ("open", "high", "low", "close")
        if getattr(data, field) is not None
    }
    return dataclasses.replace(data, **moved, name=f"{data.name}+future")


@pytest.fixture
def perturb_future() -> Callable[..., MarketData]:
    """``perturb_future(data, t)``: the same market up to row ``t``, another one after it."""
    return _perturb_future


POSTGRES_ENV = "MARKETARENA_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """``$MARKETARENA_TEST_POSTGRES_URL`` (``.ci/postgres.sh`` prints one); skips the test when
    it is unset, except in CI (``CI`` set), where its absence fails the test."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI must set {POSTGRES_ENV} (see .ci/postgres.sh)")
        pytest.skip(f"{POSTGRES_ENV} is not set: run `export {POSTGRES_ENV}=$(.ci/postgres.sh)`")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """Where a new, empty run store goes: a SQLite file in the test's folder, or a
    ``postgresql://`` URL whose connections use a schema of the test's own (created here,
    dropped with everything in it afterwards)."""
    if request.param == "sqlite":
        yield str(tmp_path / "runs.sqlite")
        return
    import psycopg2

    def execute(sql: str) -> None:
        conn = psycopg2.connect(base)
        try:
            conn.autocommit = True
            conn.cursor().execute(sql)
        finally:
            conn.close()

    base = postgres_url()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in base else "?"
    yield f"{base}{joiner}options={quote(f'-csearch_path={schema}')}"
    execute(f"DROP SCHEMA {schema} CASCADE")


# ------------------------------------------------------------ a scripted LLM server
# A scripted OpenAI-compatible server for the LLM agent's tests.
#
# A real HTTP server on 127.0.0.1 (a free port, in a thread) answers ``POST
# /v1/chat/completions`` from a queue of scripted replies; when the queue is empty it repeats
# ``then`` (or answers 418, an unscripted request). A reply is any object with ``status``,
# ``body`` (a dict or list is sent as JSON, a str as it is), ``headers``, ``delay`` (seconds
# before answering) and optionally ``trickle`` (seconds between the body's bytes, sent one at a
# time: a server that is never silent long enough for a read timeout); the tests build them.
# The server records every request (headers and JSON body) and the most requests it had in
# flight at once. (Here, not in tests/agents/: LLM agents take part in evaluation tests too.)


@dataclass
class Recorded:
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]
    received: float  # time.monotonic()


@dataclass
class _Error:
    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @property
    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": "test_error", "code": self.status}}


class ScriptedServer:
    def __init__(self) -> None:
        self.queue: deque[Any] = deque()
        self.then: Any = None
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.echo_authorization = False  # put the Authorization header into error messages
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *replies: Any, then: Any = None) -> ScriptedServer:
        self.queue.extend(replies)
        self.then = then
        return self

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self) -> Any:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        return self.then or _Error(418, "unscripted request")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(_Error(404, f"no route {self.path}"))
                    return
                with server._lock:
                    server.requests.append(
                        Recorded(
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw),
                            time.monotonic(),
                        )
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server._next()
                    if reply.delay:
                        server._stop.wait(reply.delay)
                    if server.echo_authorization and reply.status >= 400:
                        auth = self.headers.get("Authorization", "")
                        reply = _Error(reply.status, f"bad key {auth}", reply.headers)
                    self._send(reply)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, reply: Any) -> None:
                body = reply.body
                if isinstance(body, dict | list):
                    data = json.dumps(body).encode()
                elif isinstance(body, str):
                    data = body.encode()
                else:
                    data = body or b""
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    trickle = getattr(reply, "trickle", 0.0)
                    if not trickle:
                        self.wfile.write(data)
                    for i in range(len(data) if trickle else 0):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        if server._stop.wait(trickle):
                            return
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        return Handler


@pytest.fixture
def make_llm_server() -> Iterator[Callable[[], ScriptedServer]]:
    """Start scripted servers (each on its own port); all are closed after the test."""
    servers: list[ScriptedServer] = []

    def make() -> ScriptedServer:
        servers.append(ScriptedServer())
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def llm_server(make_llm_server: Callable[[], ScriptedServer]) -> ScriptedServer:
    return make_llm_server()


@dataclass
class Reply:
    """One scripted answer: a status, a body (a dict or list is sent as JSON), headers, a
    delay before answering, and a trickle between the body's bytes."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0


def _weights_answer(weights: Mapping[str, float], confidence: float = 0.5) -> Reply:
    content = json.dumps({"weights": dict(weights), "confidence": confidence})
    message = {"role": "assistant", "content": content}
    return Reply(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
    )


@pytest.fixture
def weights_answer() -> Callable[..., Reply]:
    """``weights_answer({"A": 0.5, "CASH": 0.5})``: a chat completion (for ``script``)
    answering with these target weights (the json_schema form)."""
    return _weights_answer
