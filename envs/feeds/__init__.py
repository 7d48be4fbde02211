"""Live market data: feeds of complete bar sets for a universe and an interval.

* :mod:`~marketarena.envs.feeds.base`: :class:`Bar`, :class:`BarSet`, the :class:`Feed`
  protocol, :class:`FeedStats` and the policy for late, duplicate, out-of-order and gapped
  bars (:class:`BarAssembler`, shared by every feed).
* :mod:`~marketarena.envs.feeds.stream`: the machinery of the network and file feeds
  (:class:`StreamFeed`, :class:`Backoff`, :class:`FeedUnavailableError`).
* :mod:`~marketarena.envs.feeds.replay`: a stored daily dataset streamed over a WebSocket
  (:class:`ReplayServer`, :class:`ReplayFeed`).
* :mod:`~marketarena.envs.feeds.files`: a CSV file followed as rows are appended
  (:class:`FileFeed`).
* :mod:`~marketarena.envs.feeds.adapters`: providers, with API keys from the environment,
  rate limits and reconnects (:class:`PollingRestFeed`, :class:`StreamingWebSocketFeed`).
* :mod:`~marketarena.envs.feeds.fallback`: a fallback order of feeds (:class:`FallbackFeed`).

Timing: a :class:`BarSet` is yielded only once its interval has ended (``BarSet.end``, tz-aware
UTC; a daily set at its session's close) and its bars are in or its grace period has passed;
a decision made on it fills at the next bar, as in a backtest. Nothing of a later interval is
in it.

Example (a stored panel replayed at 50 sets a second)::

    from marketarena.envs.feeds import ReplayServer

    with ReplayServer("sp500_ohlcv_30", speed=50) as server:
        for bar_set in server.feed(["IBM", "KO"]):
            print(bar_set.date, {s: b.close for s, b in bar_set.bars.items()})
"""

from __future__ import annotations

from marketarena.envs.feeds.adapters import PollingRestFeed, StreamingWebSocketFeed
from marketarena.envs.feeds.base import (
    DEFAULT_GRACE,
    INTERVALS,
    Bar,
    BarAssembler,
    BarSet,
    Feed,
    FeedStats,
    bar_sets_to_market_data,
    check_interval,
    daily_bar_end,
    to_utc,
)
from marketarena.envs.feeds.fallback import FallbackFeed
from marketarena.envs.feeds.files import FileFeed
from marketarena.envs.feeds.replay import BackgroundServer, ReplayFeed, ReplayServer
from marketarena.envs.feeds.stream import Backoff, FeedUnavailableError, StreamFeed

__all__ = [
    "DEFAULT_GRACE",
    "INTERVALS",
    "BackgroundServer",
    "Backoff",
    "Bar",
    "BarAssembler",
    "BarSet",
    "FallbackFeed",
    "Feed",
    "FeedStats",
    "FeedUnavailableError",
    "FileFeed",
    "PollingRestFeed",
    "ReplayFeed",
    "ReplayServer",
    "StreamFeed",
    "StreamingWebSocketFeed",
    "bar_sets_to_market_data",
    "check_interval",
    "daily_bar_end",
    "to_utc",
]
