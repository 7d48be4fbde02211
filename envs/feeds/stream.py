"""The machinery every feed here shares: an asynchronous source of bars (a WebSocket, an HTTP
poll, a growing file) driven by a private event loop, so that a feed is a plain iterator of
:class:`~marketarena.envs.feeds.base.BarSet` for the code that consumes it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any

import pandas as pd

from marketarena.envs.errors import ConfigError, MarketArenaError
from marketarena.envs.feeds.base import (
    DEFAULT_GRACE,
    Bar,
    BarAssembler,
    BarSet,
    FeedStats,
    to_utc,
)
from marketarena.envs.news import DEFAULT_CALENDAR

__all__ = ["Backoff", "FeedUnavailableError", "StreamFeed"]

#: seconds between a feed's wake-ups while it waits (grace periods, close(), idle timeouts)
TICK = 0.05


class FeedUnavailableError(MarketArenaError, ConnectionError):
    """A feed's source failed ``attempts`` times in a row (connection errors, timeouts,
    server errors): an outage. :class:`~marketarena.envs.feeds.fallback.FallbackFeed`
    switches to its next feed on it; alone, it ends the run with its message."""


class Backoff:
    """Reconnect delays: ``initial`` seconds, times ``factor`` after each failure, at most
    ``maximum``; ``attempts`` failures in a row (default 5) give up. ``reset()`` after a
    success. Defaults: 0.5 s, x2, at most 30 s."""

    def __init__(
        self,
        initial: float = 0.5,
        factor: float = 2.0,
        maximum: float = 30.0,
        attempts: int = 5,
    ) -> None:
        if not (initial >= 0 and factor >= 1 and maximum >= initial and attempts >= 1):
            raise ConfigError(
                f"backoff initial={initial!r}, factor={factor!r}, maximum={maximum!r}, "
                f"attempts={attempts!r}: need initial >= 0, factor >= 1, maximum >= initial, "
                "attempts >= 1"
            )
        self.initial, self.factor, self.maximum, self.attempts = initial, factor, maximum, attempts
        self.failures = 0

    def next_delay(self) -> float | None:
        """The delay before the next try after one more failure; None: give up."""
        self.failures += 1
        if self.failures >= self.attempts:
            return None
        return min(self.maximum, self.initial * self.factor ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


class StreamFeed:
    """A :class:`~marketarena.envs.feeds.base.Feed` over an asynchronous source of bars.

    Subclasses implement ``_bars()``, an async generator of :class:`Bar` (or None when
    nothing arrived, at least every ``TICK`` seconds while waiting) that ends when the source
    ends. Every bar passes through one :class:`BarAssembler` (the shared policy).

    Args:
        symbols, interval, calendar, grace: as :class:`BarAssembler`.
        name: the feed's name in errors, events and logs.
        after: skip sets ending at or before it (a resume point; default None).
        until: stop after the first set ending at or after it (default None: run until the
            source ends or :meth:`close`).
        idle_timeout: stop after this many seconds without a bar (default None: wait).
        clock: seconds (default :func:`time.monotonic`).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        interval: str,
        *,
        name: str,
        calendar: str | None = DEFAULT_CALENDAR,
        grace: float = DEFAULT_GRACE,
        after: Any = None,
        until: Any = None,
        idle_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.assembler = BarAssembler(
            symbols,
            interval,
            source=name,
            calendar=calendar,
            grace=grace,
            after=after,
            clock=clock,
        )
        self.symbols = self.assembler.symbols
        self.interval = self.assembler.interval
        self.stats: FeedStats = self.assembler.stats
        self.until = None if until is None else to_utc(until, f"{name}: until")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ConfigError(f"{name}: idle_timeout {idle_timeout!r} seconds must be > 0")
        self.idle_timeout = idle_timeout
        self.clock = clock
        self._closed = threading.Event()

    # ------------------------------------------------------------- for subclasses
    def _bars(self) -> AsyncGenerator[Bar | None, None]:
        raise NotImplementedError

    async def _aclose(self) -> None:
        """Release the source's connections (called on the feed's loop when iteration ends)."""

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def resume_after(self, end: pd.Timestamp | None) -> None:
        """Skip sets ending at or before ``end`` (before iterating: a resume point)."""
        if end is not None and (self.assembler.last_end is None or end > self.assembler.last_end):
            self.assembler.last_end = to_utc(end, f"{self.name}: resume point")

    # ------------------------------------------------------------- the iteration
    async def _sets(self) -> AsyncGenerator[BarSet, None]:
        last_bar = self.clock()
        source = self._bars()
        try:
            async for item in source:
                if self._closed.is_set():
                    return
                if item is None:
                    ready = self.assembler.poll()
                    if (
                        self.idle_timeout is not None
                        and self.clock() - last_bar > self.idle_timeout
                    ):
                        self.stats.event(f"{self.name}: no bar for {self.idle_timeout} s; stopped")
                        ready += self.assembler.flush()
                        for s in ready:
                            yield s
                        return
                else:
                    last_bar = self.clock()
                    ready = self.assembler.add(item)
                for s in ready:
                    yield s
                    if self.until is not None and s.end >= self.until:
                        return
            if not self._closed.is_set():
                for s in self.assembler.flush():
                    yield s
                    if self.until is not None and s.end >= self.until:
                        return
        finally:
            await source.aclose()
            await self._aclose()

    def __iter__(self) -> Iterator[BarSet]:
        loop = asyncio.new_event_loop()
        sets = self._sets()
        pending: asyncio.Future[BarSet] | None = None
        try:
            while not self._closed.is_set():
                pending = asyncio.ensure_future(sets.__anext__(), loop=loop)
                try:
                    item = loop.run_until_complete(pending)
                except StopAsyncIteration:
                    return
                pending = None
                yield item
        finally:
            # interrupted while waiting (Ctrl-C): cancel the wait and let the generator see
            # the cancellation before closing it, so that its cleanup runs and nothing is
            # reported as "already running" or left pending
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(pending)
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(sets.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def close(self) -> None:
        """End a running iteration at its next wake-up; idempotent, any thread."""
        self._closed.set()

    def __enter__(self) -> StreamFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
