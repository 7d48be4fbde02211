"""A fallback order of feeds: :class:`FallbackFeed`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import pandas as pd

from marketarena.envs.errors import ConfigError
from marketarena.envs.feeds.base import BarSet, Feed, FeedStats
from marketarena.envs.feeds.stream import FeedUnavailableError

__all__ = ["FallbackFeed"]

log = logging.getLogger("marketarena.feeds")


class FallbackFeed:
    """Feeds tried in order: the first is read until it fails with
    :class:`FeedUnavailableError` (an outage: its connection errors or timeouts exhausted
    its backoff); then it is closed, the switch is reported (``stats.switches``, an event,
    a log warning) and the next one goes on from after the last set delivered. A set ending
    at or before that point is never delivered again (a next feed that supports
    ``resume_after`` does not even ask for it; any it sends anyway is dropped and counted in
    ``stats.skipped``). When the last feed fails, its error is raised, listing every failure.
    Other errors (an invalid bar, a refused API key) are not outages and end the iteration.

    All feeds must share the universe and the interval. ``stats`` counts the sets delivered,
    skipped and the switches; each feed keeps its own stats (``feeds[i].stats``).
    """

    def __init__(self, feeds: Sequence[Feed], name: str = "fallback") -> None:
        if not feeds:
            raise ConfigError(f"{name}: no feeds given")
        first = feeds[0]
        for f in feeds[1:]:
            if tuple(f.symbols) != tuple(first.symbols) or f.interval != first.interval:
                raise ConfigError(
                    f"{name}: feed {f.name!r} ({f.interval}, {list(f.symbols)}) differs from "
                    f"{first.name!r} ({first.interval}, {list(first.symbols)}): a fallback "
                    "needs the same universe and interval"
                )
        self.feeds = list(feeds)
        self.name = name
        self.symbols = tuple(first.symbols)
        self.interval = first.interval
        self.stats = FeedStats()
        self.active = 0
        self.failures: list[str] = []
        self.last_end: pd.Timestamp | None = None
        self._closed = False

    def __iter__(self) -> Iterator[BarSet]:
        while self.active < len(self.feeds) and not self._closed:
            feed = self.feeds[self.active]
            resume = getattr(feed, "resume_after", None)
            if resume is not None:
                resume(self.last_end)
            try:
                for bar_set in feed:
                    if self.last_end is not None and bar_set.end <= self.last_end:
                        self.stats.skipped += 1
                        continue
                    self.last_end = bar_set.end
                    self.stats.sets_emitted += 1
                    yield bar_set
                return  # the feed ended normally (or was closed)
            except FeedUnavailableError as exc:
                feed.close()
                self.failures.append(str(exc))
                self.active += 1
                if self.active == len(self.feeds):
                    raise FeedUnavailableError(
                        f"{self.name}: every feed failed: " + "; ".join(self.failures)
                    ) from None
                nxt = self.feeds[self.active]
                after = "the start" if self.last_end is None else self.last_end.isoformat()
                text = f"{feed.name} failed ({exc}); switched to {nxt.name} from after {after}"
                self.stats.switches += 1
                self.stats.event(f"{self.name}: {text}")
                log.warning("%s: %s", self.name, text)

    def close(self) -> None:
        """Close every feed; a running iteration ends at its feed's next wake-up."""
        self._closed = True
        for f in self.feeds:
            f.close()
