"""Shared service fixtures: a live server, polling.

- ``store_url`` (tests/conftest.py): a new store on SQLite and on PostgreSQL.
- ``live_server``: a factory, ``live_server(settings) -> Server``: the app on uvicorn on
  127.0.0.1 and a free port, in a thread, stopped (lifespan shutdown included) after the test;
  ``server.client`` is an HTTP client with the settings' token.
- ``wait_for(predicate, timeout)``: poll until ``predicate()`` is truthy.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import uvicorn

from marketarena.service.app import create_app
from marketarena.service.settings import ServiceSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running app: its URL, settings, the app object and an authenticated client."""

    url: str
    settings: ServiceSettings
    app: Any
    client: httpx2.Client
    _server: uvicorn.Server
    _thread: threading.Thread

    def stop(self) -> None:
        """Shut down (the app's lifespan ends: workers stopped, webhooks drained)."""
        self.client.close()
        self._server.should_exit = True
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the server did not stop"


@pytest.fixture
def live_server() -> Iterator[Callable[..., Server]]:
    """``live_server(**settings)``: a real server on loopback (see the module docstring)."""
    started: list[Server] = []

    def start(**settings: Any) -> Server:
        chosen = ServiceSettings(port=free_port(), **settings)
        app = create_app(chosen)
        config = uvicorn.Config(
            app, host=chosen.host, port=chosen.port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, 30, "the server to start")
        headers = {"Authorization": f"Bearer {chosen.token}"} if chosen.token else {}
        url = f"http://{chosen.host}:{chosen.port}"
        client = httpx2.Client(base_url=url, headers=headers, timeout=30, trust_env=False)
        running = Server(url, chosen, app, client, server, thread)
        started.append(running)
        return running

    yield start
    for server in started:
        if server._thread.is_alive():
            server.stop()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` every 20 ms until it is truthy (returned), else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def wait() -> Callable[..., Any]:
    """:func:`wait_for`, as a fixture (test modules cannot import each other)."""
    return wait_for
