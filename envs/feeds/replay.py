"""Replay a stored dataset as a live feed: a small WebSocket server (:class:`ReplayServer`)
and the feed that reads it (:class:`ReplayFeed`), for demos and for checking that a paper
run over a replayed period equals the backtest over it.

The replay protocol (JSON text messages over a WebSocket at ``ws://HOST:PORT/ws``)
--------------------------------------------------------------------------------
1. The client sends ``{"action": "subscribe", "symbols": [...], "after": ISO | null}``
   (``symbols`` null: all; ``after``: replay only dates whose bars end after it).
2. The server answers ``{"type": "ready", "symbols": [...], "interval": I, "dates": N}``
   (``I``: ``"1d"`` for a daily dataset, else its intraday bars' length, e.g. ``"5min"``)
   or ``{"type": "error", "message": ...}`` (an unknown symbol) and closes.
3. For each date in order, one ``{"type": "bar", ...}`` per symbol (the fields of
   :meth:`Bar.to_json`: the stored values exactly, ``end`` the session close in UTC for a
   daily dataset, the row's timestamp (a bar's end, UTC) for an intraday one), then
   ``{"type": "set", "end": ISO}``; the server waits ``1 / speed`` seconds between dates
   (``speed`` None: no wait).
4. ``{"type": "end"}`` after the last date, then the server closes.

A symbol with no bar on a date (NaN close: not yet listed, in a point-in-time panel) is not
sent for that date; the client's grace policy then applies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd
from aiohttp import web

from marketarena.envs.data import MarketData, resolve_data
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.feeds.base import DEFAULT_GRACE, Bar, check_interval, interval_of
from marketarena.envs.feeds.stream import TICK, Backoff, FeedUnavailableError, StreamFeed
from marketarena.envs.news import DEFAULT_CALENDAR, session_closes

__all__ = ["BackgroundServer", "ReplayFeed", "ReplayServer"]

log = logging.getLogger("marketarena.feeds")


class BackgroundServer:
    """An aiohttp application served on ``host:port`` (port 0: a free one) by an event loop
    in a daemon thread: ``start()`` returns once it listens, ``stop()`` once it has closed
    (connections still open get 1 s to finish). No access log: a URL may carry a key."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> BackgroundServer:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failed: list[BaseException] = []

        async def serve() -> None:
            self._runner = web.AppRunner(
                self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = int(self._runner.addresses[0][1])

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # reported to start()'s caller
                failed.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="marketarena-feed-server", daemon=True)
        self._thread.start()
        started.wait()
        if failed:
            self._thread.join()
            self._thread = None
            raise ConfigError(
                f"cannot serve on {self.host}:{self.port}: {type(failed[0]).__name__}: {failed[0]}"
            )
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ReplayServer:
    """Serves one dataset, daily or intraday, over the replay protocol (module docstring).

    Args:
        data: a :class:`MarketData`, a bundled dataset name or a data path (a data folder of
            per-symbol CSVs, a CSV or Parquet file: :func:`resolve_data`).
        speed: dates (bar sets) per second; None (default): as fast as possible.
        calendar: the exchange calendar of the session closes that stamp the bars
            (default ``XNYS``; None: 16:00 America/New_York).
        host, port: where to listen (default 127.0.0.1 and a free port).

    ``start()`` begins serving (returns self; ``url`` is then the WebSocket's address),
    ``stop()`` ends it; also a context manager. Each connection gets its own replay.
    """

    def __init__(
        self,
        data: MarketData | str | Path,
        *,
        speed: float | None = None,
        calendar: str | None = DEFAULT_CALENDAR,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ConfigError(f"replay speed {speed!r} sets/second: must be > 0 (or None)")
        self.data = resolve_data(data)
        self.speed = speed
        self.calendar = calendar
        #: the interval served: ``"1d"`` for daily data, else the intraday bars' length
        self.interval = interval_of(self.data)
        # an intraday row IS its bar's end (UTC); a daily row ends at its session's close
        intraday = self.data.intraday
        ends = self.data.dates if intraday else session_closes(self.data.dates, calendar)
        self.ends = [pd.Timestamp(e).tz_localize("UTC") for e in ends]
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        self._server = BackgroundServer(app, host, port)

    @property
    def url(self) -> str:
        return f"ws://{self._server.host}:{self._server.port}/ws"

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.data.symbols

    def start(self) -> ReplayServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def feed(self, symbols: Sequence[str] | None = None, **kwargs: Any) -> ReplayFeed:
        """A :class:`ReplayFeed` reading this server (default: all its symbols)."""
        return ReplayFeed(
            self.url,
            symbols or self.symbols,
            calendar=self.calendar,
            interval=self.interval,
            **kwargs,
        )

    def bars_of(self, t: int, symbols: Sequence[str]) -> list[Bar]:
        """The bars of date row ``t`` for ``symbols``: the stored values exactly."""
        data, out = self.data, []
        for s in symbols:
            j = data.symbols.index(s)
            close = float(data.close[t, j])
            if not np.isfinite(close):
                continue

            def value(name: str, j: int = j) -> float | None:
                column = getattr(data, name)
                return None if column is None else float(column[t, j])

            out.append(
                Bar(
                    s,
                    self.ends[t],
                    self.interval,
                    close=close,
                    open=value("open"),
                    high=value("high"),
                    low=value("low"),
                    volume=value("volume"),
                )
            )
        return out

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            message = await ws.receive_json(timeout=30)
            symbols = message.get("symbols") or list(self.symbols)
            unknown = [s for s in symbols if s not in self.symbols]
            if unknown:
                await ws.send_json({"type": "error", "message": f"unknown symbols {unknown}"})
                return ws
            after = message.get("after")
            after_ts = pd.Timestamp(after).tz_convert("UTC") if after else None
            rows = [t for t, e in enumerate(self.ends) if after_ts is None or e > after_ts]
            await ws.send_json(
                {
                    "type": "ready",
                    "symbols": symbols,
                    "interval": self.interval,
                    "dates": len(rows),
                }
            )
            for t in rows:
                for bar in self.bars_of(t, symbols):
                    await ws.send_json({"type": "bar", **bar.to_json()})
                await ws.send_json({"type": "set", "end": self.ends[t].isoformat()})
                if self.speed is not None:
                    await asyncio.sleep(1.0 / self.speed)
            await ws.send_json({"type": "end"})
        except (ConnectionResetError, asyncio.CancelledError, aiohttp.ClientError):
            pass  # the client went away: its replay ends
        except (ValueError, TypeError) as exc:
            await ws.send_json({"type": "error", "message": f"bad subscription: {exc}"})
        finally:
            await ws.close()
        return ws


class ReplayFeed(StreamFeed):
    """The :class:`~marketarena.envs.feeds.base.Feed` of a :class:`ReplayServer`: bar sets
    of ``interval`` (default ``"1d"``; the server's :attr:`ReplayServer.interval`), exactly
    the stored bars, in order.

    A connection lost before the server's ``end`` is reopened after a :class:`Backoff`
    delay, asking for the dates after the last set emitted (a set half received is sent
    again whole; its repeated bars are identical duplicates, dropped and counted); after
    ``backoff.attempts`` failures in a row it raises :class:`FeedUnavailableError`. A
    message that cannot be read is skipped and counted (``stats.garbage``); the server's
    refusal (an unknown symbol) is a :class:`DataError`. Other arguments as
    :class:`StreamFeed`.
    """

    def __init__(
        self,
        url: str,
        symbols: Sequence[str],
        *,
        calendar: str | None = DEFAULT_CALENDAR,
        interval: str = "1d",
        grace: float = DEFAULT_GRACE,
        after: Any = None,
        until: Any = None,
        idle_timeout: float | None = None,
        backoff: Backoff | None = None,
        name: str = "replay",
    ) -> None:
        super().__init__(
            symbols,
            check_interval(interval),
            name=name,
            calendar=calendar,
            grace=grace,
            after=after,
            until=until,
            idle_timeout=idle_timeout,
        )
        self.url = url
        self.backoff = backoff or Backoff()

    async def _bars(self) -> AsyncGenerator[Bar | None, None]:
        async with aiohttp.ClientSession() as session:
            while not self.closed:
                try:
                    async with session.ws_connect(self.url) as ws:
                        after = self.assembler.last_end
                        await ws.send_json(
                            {
                                "action": "subscribe",
                                "symbols": list(self.symbols),
                                "after": None if after is None else after.isoformat(),
                            }
                        )
                        async for item in self._read(ws):
                            if item == "end":
                                return
                            yield item  # type: ignore[misc]
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                else:
                    reason = "the connection closed before the end of the replay"
                if self.closed:
                    return
                delay = self.backoff.next_delay()
                if delay is None:
                    raise FeedUnavailableError(
                        f"{self.name}: {self.url} unavailable after {self.backoff.attempts} "
                        f"attempts ({reason})"
                    )
                self.stats.reconnects += 1
                self.stats.event(f"{self.name}: {reason}; reconnecting in {delay:.2f} s")
                log.warning("%s: %s; reconnecting in %.2f s", self.name, reason, delay)
                await asyncio.sleep(delay)

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse
    ) -> AsyncGenerator[Bar | str | None, None]:
        while not self.closed:
            try:
                msg = await ws.receive(timeout=TICK)
            except TimeoutError:
                yield None
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                return  # closed or failed: the caller reconnects
            try:
                message = json.loads(msg.data)
                kind = message["type"]
            except (ValueError, TypeError, KeyError):
                self.stats.garbage += 1
                log.warning("%s: skipped a message that is not replay JSON", self.name)
                continue
            if kind == "bar":
                try:
                    bar = Bar.from_json(message)
                except DataError:
                    self.stats.garbage += 1
                    log.warning("%s: skipped a bar message that cannot be read", self.name)
                    continue
                yield bar
                self.backoff.reset()
            elif kind == "end":
                yield "end"
                return
            elif kind == "error":
                raise DataError(f"{self.name}: the replay server refused: {message.get('message')}")
