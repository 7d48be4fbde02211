"""A scripted OpenAI-compatible server for the LLM agent's tests.

A real HTTP server on 127.0.0.1 (a free port, in a thread) answers ``POST
/v1/chat/completions`` from a queue of scripted replies; when the queue is empty it repeats
``then`` (or answers 418, an unscripted request). A reply is any object with ``status``,
``body`` (a dict or list is sent as JSON, a str as it is), ``headers``, ``delay`` (seconds
before answering) and optionally ``trickle`` (seconds between the body's bytes, sent one at a
time: a server that is never silent long enough for a read timeout); the tests build them. The
server records every request (headers and JSON body) and the most requests it had in flight at once.
``route`` (a function of the request's JSON body returning a reply, or None for the queue)
answers several callers from one server, e.g. each role of a team by its system prompt.
A reply that is a list (in ``script`` or as ``then``) is a model calling tools:
``[("get_prices", {"last": 5}), ("set_target_weights", '{"weights": ...')]`` becomes a chat
completion whose message holds these tool calls (:func:`tool_calls_reply`; a dict of arguments
is sent as JSON, a str as it is, malformed too). The ``tool_calls_answer`` fixture builds one
with other token counts, a delay or text beside the calls.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


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
        self.route: Callable[[dict[str, Any]], Any] | None = None
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
        """Queue ``replies``; a list is a list of tool calls (:func:`tool_calls_reply`)."""
        self.queue.extend(_tool_calls_reply(r) if isinstance(r, list) else r for r in replies)
        self.then = _tool_calls_reply(then) if isinstance(then, list) else then
        return self

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self, body: dict[str, Any]) -> Any:
        routed = self.route(body) if self.route is not None else None
        if routed is not None:
            return routed
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
                body = json.loads(raw)
                with server._lock:
                    server.requests.append(
                        Recorded(
                            {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                        )
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server._next(body)
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


def _tool_calls_reply(
    calls: list[tuple[str, Any]],
    *,
    content: str | None = None,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    delay: float = 0.0,
) -> Reply:
    """A chat completion calling tools: ``calls`` is ``[(name, arguments), ...]``, the
    arguments a dict (sent as JSON) or a str (sent as it is); ids ``call_1``, ``call_2``, ...
    in order; ``content``: text beside the calls. An empty list is a text-only answer."""
    tool_calls = [
        {
            "id": f"call_{i + 1}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        for i, (name, arguments) in enumerate(calls)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return Reply(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "scripted",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
        delay=delay,
    )


@pytest.fixture
def tool_calls_answer() -> Callable[..., Reply]:
    """``tool_calls_answer([("get_prices", {"last": 5})], prompt_tokens=900)``: a chat
    completion calling these tools (for ``script``; a plain list there does the same with
    the default token counts)."""
    return _tool_calls_reply
