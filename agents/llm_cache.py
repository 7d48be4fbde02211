"""A SQLite cache of LLM requests and responses, so backtests replay exactly and offline.

The key is the SHA-256 of the request's canonical JSON: model, messages and the parameters
that shape the answer (temperature, max tokens, seed, response format, tools). The endpoint
URL and the API key are not part of the key and are never stored. Answers (and errors that
the same request would meet again, such as a 400) are cached; transient failures (timeouts,
connection errors, 429 and 5xx after retries) are kept apart (:meth:`LLMCache.put_failure`)
and only a ``read_only`` replay returns them, so a read-write rerun after an outage asks
again while an offline replay still reproduces the run's fallbacks.

Modes: ``read_write`` (default: use hits, store misses), ``read_only`` (a miss is an error:
a replay that must not call any endpoint), ``off``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from marketarena.envs.errors import ConfigError, MissingFileError

CacheMode = Literal["read_write", "read_only", "off"]
CACHE_MODES = ("read_write", "read_only", "off")


class LLMCacheMiss(LookupError):
    """A read-only cache has no entry for a request."""


def request_key(request: Mapping[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class LLMCache:
    """Thread-safe: one connection guarded by a lock (SQLite serialises writes anyway)."""

    def __init__(self, path: str | Path | None, mode: CacheMode = "read_write") -> None:
        if mode not in CACHE_MODES:
            raise ConfigError(f"cache mode {mode!r}: choose one of {CACHE_MODES}")
        self.mode = mode
        self.path = None if path is None or mode == "off" else Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            if mode == "read_only" and not self.path.exists():
                raise MissingFileError(f"read-only LLM cache {self.path} does not exist")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            for table in ("responses", "failures"):
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, model TEXT, "
                    "request TEXT, response TEXT, created REAL)"
                )
            self._db.commit()

    def get(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """The cached response, or None (in read-only mode a miss raises LLMCacheMiss). Only
        a read-only cache returns a recorded transient failure, when it holds no answer."""
        if self._db is None:
            return None
        key = request_key(request)
        tables = ("responses", "failures") if self.mode == "read_only" else ("responses",)
        row = None
        with self._lock:
            for table in tables:
                query = f"SELECT response FROM {table} WHERE key = ?"
                row = row or self._db.execute(query, (key,)).fetchone()
        if row is None:
            if self.mode == "read_only":
                raise LLMCacheMiss(
                    f"no cached response for request {key[:12]} in read-only cache {self.path}"
                )
            return None
        return json.loads(row[0])

    def put(self, request: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        """Store an answer (it replaces any failure recorded for the request)."""
        self._store("responses", request, response)
        self._delete("failures", request)

    def put_failure(self, request: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        """Record a transient failure: replayed by read-only caches only, never instead of an
        answer."""
        self._store("failures", request, response)

    def _store(self, table: str, request: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        if self._db is None or self.mode != "read_write":
            return
        row = (
            request_key(request),
            str(request.get("model")),
            json.dumps(request),
            json.dumps(response),
            time.time(),
        )
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?, ?)", row)
            self._db.commit()

    def _delete(self, table: str, request: Mapping[str, Any]) -> None:
        if self._db is None or self.mode != "read_write":
            return
        with self._lock:
            self._db.execute(f"DELETE FROM {table} WHERE key = ?", (request_key(request),))
            self._db.commit()

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()
            self._db = None
