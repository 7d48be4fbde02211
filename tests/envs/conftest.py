"""Local fake market-data providers for the feed tests: real aiohttp servers on 127.0.0.1
that speak the two provider protocols of :mod:`marketarena.envs.feeds.adapters`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pandas as pd
import pytest
from aiohttp import web

from marketarena.envs.feeds import BackgroundServer

SECRET = "sk-test-SECRET-4242"


def _minute_bars(symbols: list[str], start: str, n: int) -> list[dict[str, Any]]:
    """``n`` minutes of hand-made bars per symbol from ``start`` (a New York time), in time
    order: symbol k's close at minute i is ``100 * (k + 1) + i`` (open 0.5 below, high 1
    above, low 1 below, volume ``10 + i``)."""
    first = pd.Timestamp(start, tz="America/New_York").tz_convert("UTC")
    out = []
    for i in range(n):
        begin = first + pd.Timedelta(minutes=i)
        for k, s in enumerate(symbols):
            c = 100.0 * (k + 1) + i
            out.append(
                {
                    "sym": s,
                    "start": begin,
                    "o": c - 0.5,
                    "h": c + 1,
                    "l": c - 1,
                    "c": c,
                    "v": 10.0 + i,
                }
            )
    return out


@dataclass
class FakeRest:
    """An Alpha Vantage / IEX style REST provider: ``GET /bars/latest`` answers each
    symbol's latest 3 bars up to a cursor that moves one bar time per request. ``script``
    maps a request number (0-based) to a misbehaviour: ``"429"`` (with Retry-After 0),
    ``"note"`` (a 200 with Alpha Vantage's rate-limit Note), ``"garbage"`` (not JSON),
    ``"drop"`` (the connection closed without an answer), ``"500"``, ``"401"``."""

    bars: list[dict[str, Any]]
    script: dict[int, str] = field(default_factory=dict)
    key: str = SECRET
    window: int = 5
    requests: int = 0
    keys_seen: list[str] = field(default_factory=list)
    server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = await self.answer(request)
        response.force_close()  # no keep-alive: each request on its own connection
        return response

    async def answer(self, request: web.Request) -> web.StreamResponse:
        n = self.requests
        self.requests += 1
        self.keys_seen.append(request.query.get("apikey", ""))
        what = self.script.get(n)
        if what == "drop":
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(0.01)
            return web.Response()
        if what == "429":
            return web.Response(status=429, headers={"Retry-After": "0"})
        if what == "500":
            return web.Response(status=500)
        if what == "401" or request.query.get("apikey") != self.key:
            return web.Response(status=401, text="invalid api key")
        if what == "note":
            return web.json_response({"Note": "Thank you for using the API; 5 calls/minute"})
        if what == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>")
        times = sorted({b["start"] for b in self.bars})
        cursor = times[min(n, len(times) - 1)]
        recent = [t for t in times if t <= cursor][-self.window :]
        answer: dict[str, list[dict[str, Any]]] = {}
        for b in self.bars:
            if b["start"] in recent:
                row = {k: b[k] for k in ("o", "h", "l", "c", "v")}
                answer.setdefault(b["sym"], []).append({"t": b["start"].isoformat(), **row})
        return web.json_response({"bars": answer})


@dataclass
class FakePolygon:
    """A Polygon style WebSocket provider: greets, checks the key, takes the subscription,
    then sends each bar as an ``AM`` event, in order, continuing across connections from
    where the last one stopped (a live source does not rewind). ``drop_at``: bar numbers
    before which the connection is closed (once each), after which the next connection
    first repeats the last bar sent; ``die_at``: the bar number before which the
    connection is closed and every later one refused (HTTP 503: an outage);
    ``garbage_at``: bar numbers before which a garbage message is sent;
    ``max_connections``: the first connection gets that status."""

    bars: list[dict[str, Any]]
    key: str = SECRET
    drop_at: set[int] = field(default_factory=set)
    garbage_at: set[int] = field(default_factory=set)
    max_connections: bool = False
    die_at: int | None = None
    dead: bool = False
    connections: int = 0
    sent: int = 0
    subscriptions: list[str] = field(default_factory=list)
    server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.port}/stocks"

    @staticmethod
    def event(b: dict[str, Any]) -> dict[str, Any]:
        start_ms = int(b["start"].value // 1_000_000)
        rest = {k: b[k] for k in ("o", "h", "l", "c", "v")}
        return {"ev": "AM", "sym": b["sym"], **rest, "s": start_ms, "e": start_ms + 60_000}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.dead:
            return web.Response(status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_str(json.dumps([{"ev": "status", "status": "connected"}]))
        if self.max_connections and self.connections == 1:
            await ws.send_str(json.dumps([{"ev": "status", "status": "max_connections"}]))
            await ws.close()
            return ws
        auth = await ws.receive_json()
        if auth.get("params") != self.key:
            await ws.send_str(json.dumps([{"ev": "status", "status": "auth_failed"}]))
            await ws.close()
            return ws
        await ws.send_str(json.dumps([{"ev": "status", "status": "auth_success"}]))
        sub = await ws.receive_json()
        self.subscriptions.append(sub["params"])
        if self.sent and self.connections > 1:
            await ws.send_str(json.dumps([self.event(self.bars[self.sent - 1])]))
        while self.sent < len(self.bars):
            if self.sent == self.die_at:
                self.dead = True
                await ws.close()
                return ws
            if self.sent in self.drop_at:
                self.drop_at.discard(self.sent)
                await ws.close()
                return ws
            if self.sent in self.garbage_at:
                self.garbage_at.discard(self.sent)
                await ws.send_str("{not json")
                await ws.send_str(json.dumps([{"ev": "XQ", "junk": 1}]))
            await ws.send_str(json.dumps([self.event(self.bars[self.sent])]))
            self.sent += 1
        async for _ in ws:  # a live socket stays open until the client closes it
            pass
        return ws


@dataclass
class FlakyRelay:
    """A WebSocket relay in front of another server (a ReplayServer): it passes the client's
    messages up and the server's down, but cuts the first connection after ``cut_after``
    messages down, as a network that drops mid-stream. ``subscriptions``: what each
    connection asked for."""

    upstream: str
    cut_after: int
    connections: int = 0
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.port}/ws"

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        first = self.connections == 1
        subscription = await ws.receive_json()
        self.subscriptions.append(subscription)
        async with aiohttp.ClientSession() as session, session.ws_connect(self.upstream) as up:
            await up.send_json(subscription)
            relayed = 0
            async for msg in up:
                if first and relayed == self.cut_after:
                    break
                await ws.send_str(msg.data)
                relayed += 1
        await ws.close()
        return ws


def _serve(handler: Callable[..., Any], path: str) -> BackgroundServer:
    app = web.Application()
    app.router.add_get(path, handler)
    return BackgroundServer(app).start()


@pytest.fixture
def minute_bars() -> Callable[[list[str], str, int], list[dict[str, Any]]]:
    """Hand-made minute bars for the fakes to serve (see :func:`_minute_bars`)."""
    return _minute_bars


def _servers(build: Callable[..., Any], path: str) -> Iterator[Callable[..., Any]]:
    """A fixture body: ``make(...)`` builds a fake with ``build(...)`` and serves its
    ``handle`` at ``path`` on 127.0.0.1; every server started is stopped after the test."""
    started: list[BackgroundServer] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        fake = build(*args, **kwargs)
        fake.server = _serve(fake.handle, path)
        started.append(fake.server)
        return fake

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def fake_rest() -> Iterator[Callable[..., FakeRest]]:
    """Start FakeRest servers (stopped after the test): ``fake_rest(bars, script=...)``."""
    yield from _servers(FakeRest, "/bars/latest")


@pytest.fixture
def flaky_relay() -> Iterator[Callable[..., FlakyRelay]]:
    """Start FlakyRelay servers (stopped after the test): ``flaky_relay(url, cut_after)``."""
    yield from _servers(FlakyRelay, "/ws")


@pytest.fixture
def fake_polygon() -> Iterator[Callable[..., FakePolygon]]:
    """Start FakePolygon servers (stopped after the test): ``fake_polygon(bars, ...)``."""
    yield from _servers(FakePolygon, "/stocks")
