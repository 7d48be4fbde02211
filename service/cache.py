"""Rendered JSON responses of read endpoints, reused while what they were computed from holds.

A read endpoint whose answer is costly (a leaderboard's metrics, a run's whole history, the
data folder's coverage) names what its answer depends on in a key: the request's parameters
and a version of the data read (a run's status and last update, the data files' sizes and
modification times). The same key gives the same bytes without recomputing or re-encoding
them; anything that changes the data changes the key, so nothing stale is ever served. The
versions are cheap to read (one small query, a folder listing), the answers are not.

One cache per app (:func:`cache_of`), least recently used entries dropped beyond ``size``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response


class JsonCache:
    """Encoded JSON bodies by key (thread-safe; at most ``size`` entries, default 256)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._bodies: OrderedDict[Hashable, bytes] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def response(self, key: Hashable, compute: Callable[[], Any]) -> Response:
        """A JSON response of ``compute()``, computed once per ``key``: requests that miss the
        same key at once wait for the first one's answer rather than computing it again."""
        body = self._get(key)
        if body is None:
            with self._lock:
                computing = self._computing.setdefault(key, threading.Lock())
            with computing:
                body = self._get(key)
                if body is None:
                    value = jsonable_encoder(compute())
                    body = json.dumps(
                        value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
                    ).encode()
                    with self._lock:
                        self.misses += 1
                        self._bodies[key] = body
                        while len(self._bodies) > self.size:
                            self._bodies.popitem(last=False)
            with self._lock:
                self._computing.pop(key, None)
        return Response(body, media_type="application/json")

    def _get(self, key: Hashable) -> bytes | None:
        with self._lock:
            body = self._bodies.get(key)
            if body is not None:
                self._bodies.move_to_end(key)
                self.hits += 1
            return body


def cache_of(request: Request) -> JsonCache:
    """The app's response cache, made on first use."""
    state = request.app.state
    if getattr(state, "response_cache", None) is None:
        state.response_cache = JsonCache()
    cache: JsonCache = state.response_cache
    return cache
