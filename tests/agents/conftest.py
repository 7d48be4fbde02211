"""A scripted OpenAI-compatible server for the LLM agent's tests.

A real HTTP server on 127.0.0.1 (a free port, in a thread) answers ``POST
/v1/chat/completions`` from a queue of scripted replies; when the queue is empty it repeats
``then`` (or answers 418, an unscripted request). It records every request (headers and JSON
body) and the most requests it had in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SECRET = "sk-test-SECRET"


@dataclass
class Reply:
    """One scripted answer: a status, a body (a dict is sent as JSON), headers, a delay."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]
    received: float


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
        message["tool_calls"] = [{
            "id": "call_1", "type": "function",
            "function": {"name": "set_target_weights", "arguments": tool_arguments},
        }]  # fmt: skip
        finish = "tool_calls"
    body = {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1700000000,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip
    return Reply(200, body, delay=delay)


def answer(weights: Mapping[str, Any], confidence: float = 0.5, **kwargs: Any) -> Reply:
    """A completion answering with these target weights (the json_schema form)."""
    return completion(json.dumps({"weights": dict(weights), "confidence": confidence}), **kwargs)


def failure(status: int, headers: Mapping[str, str] | None = None, message: str = "no") -> Reply:
    body = {"error": {"message": message, "type": "test_error", "code": status}}
    return Reply(status, body, headers or {})


class ScriptedServer:
    def __init__(self) -> None:
        self.queue: deque[Reply] = deque()
        self.then: Reply | None = None
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.echo_authorization = False  # put the Authorization header into error messages
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *replies: Reply, then: Reply | None = None) -> ScriptedServer:
        self.queue.extend(replies)
        self.then = then
        return self

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self) -> Reply:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        return self.then or failure(418, message="unscripted request")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(failure(404, message=f"no route {self.path}"))
                    return
                with server._lock:
                    server.requests.append(
                        Recorded(dict(self.headers.items()), json.loads(raw), time.monotonic())
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server._next()
                    if reply.delay:
                        server._stop.wait(reply.delay)
                    if server.echo_authorization and reply.status >= 400:
                        auth = self.headers.get("Authorization", "")
                        reply = failure(reply.status, reply.headers, f"bad key {auth}")
                    self._send(reply)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, reply: Reply) -> None:
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
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        return Handler


@pytest.fixture
def llm_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()
