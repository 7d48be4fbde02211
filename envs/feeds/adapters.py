"""Market-data providers behind the :class:`~marketarena.envs.feeds.base.Feed` interface: a
polling REST adapter (:class:`PollingRestFeed`, Alpha Vantage / IEX style) and a streaming
WebSocket adapter (:class:`StreamingWebSocketFeed`, Polygon style).

Both take the API key from an environment variable (read when connecting; never logged,
never in an error message, a repr or a file: any text that could carry it is redacted to
``***``), limit their request rate (a :class:`~marketarena.envs.providers.TokenBucket`),
reconnect after connection errors, timeouts and server errors with a bounded exponential
:class:`~marketarena.envs.feeds.stream.Backoff`, and raise
:class:`~marketarena.envs.feeds.stream.FeedUnavailableError` after ``backoff.attempts``
failures in a row (the outage a :class:`~marketarena.envs.feeds.fallback.FallbackFeed`
switches on). A refused key is a :class:`~marketarena.envs.errors.ConfigError` at once (no
retry: retrying cannot fix it). Messages that cannot be understood are skipped, counted in
``stats.garbage`` and logged; bars pass through the shared policy of
:class:`~marketarena.envs.feeds.base.BarAssembler`.

The REST protocol (:class:`PollingRestFeed`)
--------------------------------------------
``GET {base_url}/bars/latest?symbols=A,B&interval=5min&apikey=KEY`` every ``poll`` seconds
answers ``{"bars": {"A": [{"t": ..., "o": ..., "h": ..., "l": ..., "c": ..., "v": ...},
...], ...}}``: each symbol's latest bars, ``t`` the bar's START (ISO 8601 with a time zone;
a day ``YYYY-MM-DD`` for ``1d``, whose bar ends at that session's close). Bars already
passed on are not passed again (the answer repeats recent bars). A rate limit is HTTP 429
(waits ``Retry-After`` seconds, else ``rate_limit_wait``) or a 200 whose JSON has a
``"Note"`` or ``"Information"`` (Alpha Vantage's way): counted in ``stats.rate_limited``,
waited, retried; it is not a failure. HTTP 401/403 is a refused key.

The WebSocket protocol (:class:`StreamingWebSocketFeed`)
--------------------------------------------------------
As Polygon's stocks socket: the server greets with ``[{"ev": "status", "status":
"connected"}]``; the client sends ``{"action": "auth", "params": KEY}`` (answer: status
``auth_success`` or ``auth_failed``) and ``{"action": "subscribe", "params":
"AM.A,AM.B"}``; the server then sends JSON arrays of per-minute aggregates ``{"ev": "AM",
"sym", "o", "h", "l", "c", "v", "s": start ms, "e": end ms}``. A status
``max_connections`` is a rate limit (counted, waited ``rate_limit_wait``, reconnected).
Intervals above ``1min`` are built here from the minute bars: the bar ending at ``E`` (a
multiple of the interval since the epoch, UTC) holds the minutes ending in ``(E - interval,
E]`` (open of the first, high/low over all, close of the last, volumes summed), emitted when
the minute ending at ``E`` (or a later one) arrives; a repeated minute (a reconnect may send
the last one again) is counted as a duplicate, an older one as late, and neither is added.
The socket does not replay what was sent while disconnected: a bar missed then is a gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pandas as pd

from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.feeds.base import INTERVALS, Bar, daily_bar_end, to_utc
from marketarena.envs.feeds.stream import TICK, Backoff, FeedUnavailableError, StreamFeed
from marketarena.envs.news import DEFAULT_CALENDAR
from marketarena.envs.providers import TokenBucket

__all__ = ["PollingRestFeed", "StreamingWebSocketFeed"]

log = logging.getLogger("marketarena.feeds")

#: what makes a connection attempt fail (and be retried)
_FAILURES = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class _KeyRefused(Exception):
    """The provider refused the API key."""


class _RateLimited(Exception):
    """The provider said to slow down (a status during the handshake)."""


class _ProviderFeed(StreamFeed):
    """What both adapters share: the key, the rate limit, the backoff, redaction."""

    def __init__(
        self,
        url: str,
        symbols: Sequence[str],
        interval: str,
        *,
        api_key_env: str,
        name: str,
        requests_per_minute: float | None,
        backoff: Backoff | None,
        rate_limit_wait: float,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(symbols, interval, name=name, **kwargs)
        if not api_key_env:
            raise ConfigError(f"{name}: name the environment variable holding the API key")
        if not rate_limit_wait >= 0 or not timeout > 0:
            raise ConfigError(
                f"{name}: rate_limit_wait {rate_limit_wait!r} must be >= 0 and timeout "
                f"{timeout!r} > 0 (seconds)"
            )
        self.url = url
        self.api_key_env = api_key_env
        self.backoff = backoff or Backoff()
        self.rate_limit_wait = float(rate_limit_wait)
        self.timeout = float(timeout)
        # no bursts: requests spaced evenly, 60 / requests_per_minute seconds apart
        self.bucket = TokenBucket(requests_per_minute, capacity=1) if requests_per_minute else None
        self._key: str | None = None

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ConfigError(
                f"{self.name}: the environment variable {self.api_key_env} holds no API key; "
                "set it to the provider's key"
            )
        self._key = key
        return key

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _report(self, text: str, level: int = logging.WARNING) -> None:
        text = self._redact(text)
        self.stats.event(f"{self.name}: {text}")
        log.log(level, "%s: %s", self.name, text)

    def _garbage(self, why: str) -> None:
        self.stats.garbage += 1
        self._report(f"skipped a message: {why}")

    async def _pause(self, seconds: float) -> AsyncGenerator[None, None]:
        """Wait ``seconds``, waking every tick (grace periods, close())."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while not self.closed:
            left = until - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(TICK, left))
            yield None

    async def _rate_limit(self) -> AsyncGenerator[None, None]:
        """Wait for a request token of the client-side rate limit."""
        while self.bucket is not None and not self.closed:
            wait = self.bucket.try_acquire()
            if wait <= 0:
                return
            async for tick in self._pause(wait):
                yield tick

    def _failed(self, reason: str) -> float:
        """One more failure in a row: the delay before retrying, or the outage error."""
        reason = self._redact(reason)
        delay = self.backoff.next_delay()
        if delay is None:
            raise FeedUnavailableError(
                f"{self.name}: unavailable after {self.backoff.attempts} attempts in a row "
                f"(last: {reason})"
            )
        self.stats.reconnects += 1
        self._report(f"{reason}; retrying in {delay:.2f} s")
        return delay

    def _refused(self) -> ConfigError:
        return ConfigError(
            f"{self.name}: the provider refused the API key in {self.api_key_env}; check it"
        )


# ---------------------------------------------------------------------------------- REST
class PollingRestFeed(_ProviderFeed):
    """A polling REST adapter (module docstring: the protocol).

    Args:
        base_url: the provider's address (``{base_url}/bars/latest`` is polled).
        symbols, interval: the universe and the bar interval.
        api_key_env: the environment variable holding the API key (default
            ``MARKETARENA_REST_API_KEY``).
        poll: seconds between polls (default 15).
        requests_per_minute: the client-side rate limit, requests spaced evenly (default 5,
            Alpha Vantage's free tier; None: none).
        backoff: reconnect delays and attempts (default :class:`Backoff`'s).
        rate_limit_wait: seconds to wait on a rate-limit answer without ``Retry-After``
            (default 60).
        timeout: seconds a request may take before it counts as a failure (default 10).
        Others (calendar, grace, after, until, idle_timeout) as :class:`StreamFeed`.
    """

    def __init__(
        self,
        base_url: str,
        symbols: Sequence[str],
        interval: str,
        *,
        api_key_env: str = "MARKETARENA_REST_API_KEY",
        poll: float = 15.0,
        requests_per_minute: float | None = 5.0,
        backoff: Backoff | None = None,
        rate_limit_wait: float = 60.0,
        timeout: float = 10.0,
        name: str = "rest",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            base_url.rstrip("/"),
            symbols,
            interval,
            api_key_env=api_key_env,
            name=name,
            requests_per_minute=requests_per_minute,
            backoff=backoff,
            rate_limit_wait=rate_limit_wait,
            timeout=timeout,
            **kwargs,
        )
        if not poll > 0:
            raise ConfigError(f"{name}: poll {poll!r} seconds must be > 0")
        self.poll = float(poll)
        self.calendar = kwargs.get("calendar", DEFAULT_CALENDAR)
        self._seen: dict[str, pd.Timestamp] = {}

    async def _bars(self) -> AsyncGenerator[Bar | None, None]:
        params = {
            "symbols": ",".join(self.symbols),
            "interval": self.interval,
            "apikey": self._api_key(),
        }
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self.closed:
                async for tick in self._rate_limit():
                    yield tick
                failure, body, wait = None, None, None
                try:
                    body, wait = await self._get(session, params)
                except _KeyRefused:
                    raise self._refused() from None
                except _FAILURES as exc:
                    # str(exc) of aiohttp errors can hold the URL and so the key: redacted
                    failure = f"request failed ({type(exc).__name__}: {exc})"
                if failure is not None:  # raised outside the handler: no chained cause
                    delay = self._failed(failure)
                    async for tick in self._pause(delay):
                        yield tick
                    continue
                if wait is not None:
                    self.stats.rate_limited += 1
                    self._report(f"rate limited by the provider; waiting {wait:.2f} s")
                    async for tick in self._pause(wait):
                        yield tick
                    continue
                self.backoff.reset()
                for bar in self._parse(body):
                    yield bar
                async for tick in self._pause(self.poll):
                    yield tick

    async def _get(
        self, session: aiohttp.ClientSession, params: dict[str, str]
    ) -> tuple[Any, float | None]:
        """The answer's JSON (None when it is not JSON) and, for a rate limit, the wait."""
        async with session.get(f"{self.url}/bars/latest", params=params) as response:
            if response.status in (401, 403):
                raise _KeyRefused
            if response.status == 429:
                return None, _retry_after(response.headers.get("Retry-After"), self.rate_limit_wait)
            if response.status >= 500:
                raise aiohttp.ClientError(f"HTTP {response.status}")
            if response.status != 200:
                raise aiohttp.ClientError(f"HTTP {response.status}")
            text = await response.text()
        try:
            body = json.loads(text)
        except ValueError:
            return None, None
        if isinstance(body, dict) and ("Note" in body or "Information" in body):
            return None, self.rate_limit_wait
        return body, None

    def _parse(self, body: Any) -> list[Bar]:
        if not isinstance(body, dict) or not isinstance(body.get("bars"), dict):
            self._garbage("an answer without a 'bars' object")
            return []
        out = []
        for symbol, rows in body["bars"].items():
            if not isinstance(rows, list):
                self._garbage(f"bars of {symbol!r} are not a list")
                continue
            for row in rows:
                bar = self._bar(str(symbol), row)
                if bar is None:
                    continue
                seen = self._seen.get(bar.symbol)
                if seen is not None and bar.end <= seen:
                    continue  # passed on by an earlier poll
                out.append(bar)
        out.sort(key=lambda b: b.end)
        for bar in out:
            self._seen[bar.symbol] = max(bar.end, self._seen.get(bar.symbol, bar.end))
        return out

    def _bar(self, symbol: str, row: Any) -> Bar | None:
        try:
            if self.interval == "1d":
                end = daily_bar_end(str(row["t"]), self.calendar)
            else:
                end = to_utc(row["t"], f"{symbol} bar time") + INTERVALS[self.interval]
            return Bar(
                symbol,
                end,
                self.interval,
                close=_float(row["c"]),
                open=_float(row.get("o")),
                high=_float(row.get("h")),
                low=_float(row.get("l")),
                volume=_float(row.get("v")),
            )
        except (KeyError, TypeError, ValueError, AttributeError, DataError) as exc:
            self._garbage(f"a bar of {symbol!r} that cannot be read ({type(exc).__name__})")
            return None


def _float(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _retry_after(header: str | None, default: float) -> float:
    try:
        return max(0.0, float(header)) if header is not None else default
    except ValueError:
        return default


# ----------------------------------------------------------------------------- WebSocket
@dataclass
class _Bucket:
    end: pd.Timestamp
    open: float | None
    high: float | None
    low: float | None
    close: float
    volume: float | None


class StreamingWebSocketFeed(_ProviderFeed):
    """A streaming WebSocket adapter (module docstring: the protocol).

    Args:
        url: the socket's address (``ws://`` or ``wss://``).
        symbols, interval: the universe and the interval (``1min``, ``5min``, ``15min``,
            ``1h``; the socket has no daily bars).
        api_key_env: the environment variable holding the API key (default
            ``MARKETARENA_WS_API_KEY``).
        requests_per_minute: the client-side limit on connection attempts (default 30;
            None: none).
        backoff: reconnect delays and attempts (default :class:`Backoff`'s).
        rate_limit_wait: seconds to wait after a ``max_connections`` status (default 60).
        timeout: seconds to connect, and to wait for each handshake answer (default 10).
        heartbeat: seconds between pings that detect a dead connection (default 30).
        Others (calendar, grace, after, until, idle_timeout) as :class:`StreamFeed`.
    """

    def __init__(
        self,
        url: str,
        symbols: Sequence[str],
        interval: str = "1min",
        *,
        api_key_env: str = "MARKETARENA_WS_API_KEY",
        requests_per_minute: float | None = 30.0,
        backoff: Backoff | None = None,
        rate_limit_wait: float = 60.0,
        timeout: float = 10.0,
        heartbeat: float = 30.0,
        name: str = "websocket",
        **kwargs: Any,
    ) -> None:
        if interval == "1d":
            raise ConfigError(f"{name}: the socket streams minute aggregates; no '1d' bars")
        super().__init__(
            url,
            symbols,
            interval,
            api_key_env=api_key_env,
            name=name,
            requests_per_minute=requests_per_minute,
            backoff=backoff,
            rate_limit_wait=rate_limit_wait,
            timeout=timeout,
            **kwargs,
        )
        self.heartbeat = heartbeat
        self._step = INTERVALS[self.interval]
        self._minutes: dict[str, Bar] = {}  # the last minute bar taken, per symbol
        self._open: dict[str, _Bucket] = {}

    async def _bars(self) -> AsyncGenerator[Bar | None, None]:
        key = self._api_key()
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self.closed:
                async for tick in self._rate_limit():
                    yield tick
                wait: float | None = None
                reason = "the server closed the connection"
                try:
                    async with session.ws_connect(self.url, heartbeat=self.heartbeat) as ws:
                        await self._handshake(ws, key)
                        async for item in self._read(ws):
                            if isinstance(item, float):
                                wait = item
                                break
                            yield item
                except _KeyRefused:
                    raise self._refused() from None
                except _RateLimited:
                    wait = self.rate_limit_wait
                except _FAILURES as exc:
                    reason = f"connection failed ({type(exc).__name__}: {exc})"
                if self.closed:
                    return
                if wait is not None:
                    self.stats.rate_limited += 1
                    self._report(f"rate limited by the provider; waiting {wait:.2f} s")
                    async for tick in self._pause(wait):
                        yield tick
                    continue
                delay = self._failed(reason)
                async for tick in self._pause(delay):
                    yield tick

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse, key: str) -> None:
        await self._expect(ws, "connected")
        await ws.send_json({"action": "auth", "params": key})
        await self._expect(ws, "auth_success")
        channels = ",".join(f"AM.{s}" for s in self.symbols)
        await ws.send_json({"action": "subscribe", "params": channels})

    async def _expect(self, ws: aiohttp.ClientWebSocketResponse, status: str) -> None:
        """Read status events until ``status``; ``auth_failed`` is a refused key."""
        while True:
            msg = await ws.receive(timeout=self.timeout)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise aiohttp.ClientError(f"the connection closed while waiting for {status!r}")
            for event in _events(msg.data) or []:
                got = event.get("status") if isinstance(event, dict) else None
                if got == "auth_failed":
                    raise _KeyRefused
                if got == "max_connections":
                    raise _RateLimited
                if got == status:
                    return

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse
    ) -> AsyncGenerator[Bar | float | None, None]:
        """Bars, ticks (None), or a float: the wait a rate-limit status asks for."""
        while not self.closed:
            try:
                msg = await ws.receive(timeout=TICK)
            except TimeoutError:
                yield None
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            events = _events(msg.data)
            if events is None:
                self._garbage("not JSON")
                continue
            for event in events:
                if not isinstance(event, dict):
                    self._garbage("an event that is not an object")
                elif event.get("ev") == "status":
                    if event.get("status") == "max_connections":
                        yield self.rate_limit_wait
                        return
                elif event.get("ev") == "AM":
                    minute = self._minute(event)
                    if minute is not None:
                        self.backoff.reset()
                        for bar in self._aggregate(minute):
                            yield bar
                else:
                    self._garbage(f"an event of unknown kind {str(event.get('ev'))[:20]!r}")

    def _minute(self, event: dict[str, Any]) -> Bar | None:
        try:
            end = pd.Timestamp(int(event["e"]), unit="ms", tz="UTC")
            return Bar(
                str(event["sym"]),
                end,
                "1min",
                close=_float(event["c"]),
                open=_float(event.get("o")),
                high=_float(event.get("h")),
                low=_float(event.get("l")),
                volume=_float(event.get("v")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            self._garbage(f"an aggregate that cannot be read ({type(exc).__name__})")
            return None

    def _aggregate(self, minute: Bar) -> list[Bar]:
        if self.interval == "1min":
            return [minute]
        symbol = minute.symbol
        last = self._minutes.get(symbol)
        if last is not None and minute.end <= last.end:
            if minute.end == last.end and minute.values() == last.values():
                self.stats.duplicates += 1
            else:
                self.stats.late += 1
            return []
        self._minutes[symbol] = minute
        out = []
        end = minute.end.ceil(self._step)
        bucket = self._open.get(symbol)
        if bucket is not None and bucket.end < end:
            out.append(self._close(symbol))
            bucket = None
        if bucket is None:
            self._open[symbol] = _Bucket(
                end, minute.open, minute.high, minute.low, minute.close, minute.volume
            )
        else:
            bucket.high = _extreme(max, bucket.high, minute.high)
            bucket.low = _extreme(min, bucket.low, minute.low)
            bucket.close = minute.close
            if bucket.volume is not None and minute.volume is not None:
                bucket.volume += minute.volume
        if minute.end == end:
            out.append(self._close(symbol))
        return out

    def _close(self, symbol: str) -> Bar:
        b = self._open.pop(symbol)
        return Bar(
            symbol,
            b.end,
            self.interval,
            b.close,
            open=b.open,
            high=b.high,
            low=b.low,
            volume=b.volume,
        )


def _extreme(pick: Any, a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return float(pick(a, b))


def _events(text: str) -> list[Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, list) else [data]
