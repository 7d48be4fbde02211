"""Webhooks: signed JSON events POSTed to the targets a server is configured with.

Targets come from a YAML or JSON file (``marketarena serve --webhooks FILE``)::

    webhooks:
      - url: https://example.org/hooks/marketarena
        secret_env: MARKETARENA_WEBHOOK_SECRET   # the NAME of the variable holding the secret
        events: [job.completed, job.failed]      # default: every event
        retries: 5                               # default 5 retries after the first attempt
        backoff_s: 1.0                           # default 1 s, doubled each retry (max 60 s)
        timeout_s: 5.0                           # default 5 s per attempt

The secret itself is read from the environment when the server starts; it is never stored,
logged or returned. Events:

- ``job.completed`` / ``job.failed``: a job ended (``data``: the job as ``GET /jobs/{id}``
  shows it); a worker process that died is a ``job.failed`` too.
- ``trade.executed``: the fills of one completed day of one run, batched per day (``data``:
  ``job_id, run_id, date, fills``: each fill's ``symbol, side, shares, price, cost``).
- ``error``: something went wrong outside a simulation's own rules: a worker process that
  died (killed, out of memory) or a job the server could not start.

Each delivery is ``POST url`` with the JSON body ``{"id", "event", "created", "data"}`` and the
headers ``X-Marketarena-Event``, ``X-Marketarena-Delivery`` (the id),
``X-Marketarena-Timestamp`` (Unix seconds) and ``X-Marketarena-Signature: sha256=<hex>``: the
HMAC-SHA256, keyed by the secret, of ``f"{timestamp}.".encode() + body`` (see
:func:`signature`), so a receiver checks the body and refuses old timestamps (replays).

Deliveries run in one background thread (never in a request or a simulation's day); an
attempt that fails (no answer, or a status other than 2xx) is retried after ``backoff_s``,
``2 * backoff_s``, ... (at most 60 s apart), ``retries`` times; then the delivery is recorded
as ``dead`` in the run store's deliveries (url, event, payload, attempts, last error). A server
that stops gives the deliveries due in the next 5 s their chance, and records the retries
still waiting as dead letters too.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from marketarena.envs.errors import ConfigError, MissingFileError

EVENTS = ("job.completed", "job.failed", "trade.executed", "error")
SIGNATURE_HEADER = "X-Marketarena-Signature"
TIMESTAMP_HEADER = "X-Marketarena-Timestamp"
MAX_BACKOFF_S = 60.0
_KEYS = {"url", "secret_env", "events", "retries", "backoff_s", "timeout_s"}

log = logging.getLogger(__name__)


class DeadLetters(Protocol):
    """Where a delivery that failed every attempt is recorded (the run store)."""

    def record_delivery(
        self,
        url: str,
        event: str,
        payload: str,
        attempts: int,
        status: str,
        last_error: str | None,
    ) -> int: ...


@dataclass(frozen=True)
class WebhookTarget:
    """One receiver: its url, the secret (from ``secret_env``), the events it gets and how
    hard a delivery is tried. The secret is left out of ``repr``."""

    url: str
    secret_env: str
    secret: str = field(repr=False)
    events: frozenset[str] = frozenset(EVENTS)
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 5.0


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 keyed by ``secret`` over ``f"{timestamp}.".encode() +
    body``, the value of the ``X-Marketarena-Signature`` header."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def read_webhooks(path: str | Path) -> tuple[dict[str, Any], ...]:
    """The targets of a YAML or JSON webhooks file (a ``webhooks:`` list, or the list
    itself), each checked by :func:`webhook_targets` (so a bad key or a secret variable that is
    not set is an error naming the file and the key)."""
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"webhooks file {path}: not found")
    try:
        loaded = yaml.safe_load(file.read_text())  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise ConfigError(f"webhooks file {path}: not YAML or JSON ({exc})") from None
    items = loaded.get("webhooks") if isinstance(loaded, dict) else loaded
    if isinstance(loaded, dict) and set(loaded) != {"webhooks"}:
        unknown = sorted(set(loaded) - {"webhooks"})
        raise ConfigError(f"webhooks file {path}: unknown key(s) {unknown}; expected 'webhooks'")
    if not isinstance(items, list):
        raise ConfigError(f"webhooks file {path}: 'webhooks' must be a list of targets")
    targets = tuple(dict(item) if isinstance(item, dict) else item for item in items)
    webhook_targets(targets, where=f"webhooks file {path}: ")
    return targets


def webhook_targets(
    items: Sequence[Mapping[str, Any]], *, where: str = ""
) -> tuple[WebhookTarget, ...]:
    """The targets described by ``items`` (as :func:`read_webhooks` reads them), each secret
    read from its ``secret_env`` variable; an error names the item and key (``webhooks[1].url``)
    after ``where``."""
    targets = []
    for i, item in enumerate(items):
        at = f"{where}webhooks[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{at}: must be a mapping with url, secret_env and events")
        unknown = sorted(set(item) - _KEYS)
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {unknown}; keys: {sorted(_KEYS)}")
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{at}.url: an http:// or https:// URL is needed, got {url!r}")
        secret_env = item.get("secret_env")
        if not isinstance(secret_env, str) or not secret_env:
            raise ConfigError(
                f"{at}.secret_env: the name of the environment variable holding the secret"
            )
        secret = os.environ.get(secret_env, "")
        if not secret:
            raise ConfigError(f"{at}.secret_env: environment variable {secret_env} is not set")
        events = item.get("events", list(EVENTS))
        if isinstance(events, str) or not isinstance(events, list) or not events:
            raise ConfigError(f"{at}.events: a non-empty list of {list(EVENTS)}")
        bad = [e for e in events if e not in EVENTS]
        if bad:
            raise ConfigError(f"{at}.events: unknown event(s) {bad}; events: {list(EVENTS)}")
        retries = item.get("retries", 5)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
            raise ConfigError(f"{at}.retries: a whole number in 0..20, got {retries!r}")
        numbers = {}
        for key, default in (("backoff_s", 1.0), ("timeout_s", 5.0)):
            value = item.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{at}.{key}: a number of seconds > 0, got {value!r}")
            numbers[key] = float(value)
        targets.append(
            WebhookTarget(url, secret_env, secret, frozenset(events), retries, **numbers)
        )
    return tuple(targets)


@dataclass(order=True)
class _Delivery:
    due: float
    order: int
    target: WebhookTarget = field(compare=False)
    event: str = field(compare=False)
    payload: dict[str, Any] = field(compare=False)
    attempts: int = field(default=0, compare=False)
    last_error: str = field(default="", compare=False)


class WebhookSender:
    """Delivers events to ``targets`` from a background thread, with retries, recording dead
    letters in ``dead_letters``; :meth:`send` never blocks on the network.

    Call :meth:`start` once, :meth:`close` at shutdown (deliveries due within its
    ``drain_s`` are made; later retries become dead letters).
    """

    def __init__(self, targets: Sequence[WebhookTarget], dead_letters: DeadLetters) -> None:
        self.targets = tuple(targets)
        self._dead_letters = dead_letters
        self._queue: list[_Delivery] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._busy = 0
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)

    def start(self) -> None:
        if self.targets:
            self._thread.start()

    def send(self, event: str, data: Mapping[str, Any]) -> None:
        """Queue ``event`` with ``data`` for every target subscribed to it."""
        if event not in EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        subscribed = [t for t in self.targets if event in t.events]
        if not subscribed:
            return
        payload = {"id": uuid.uuid4().hex, "event": event, "created": time.time(), "data": data}
        with self._wake:
            for target in subscribed:
                heapq.heappush(
                    self._queue, _Delivery(time.time(), next(self._order), target, event, payload)
                )
            self._wake.notify()

    def pending(self) -> int:
        """Deliveries queued or in flight (retries waiting included)."""
        with self._wake:
            return len(self._queue) + self._busy

    def _due_before(self, when: float) -> bool:
        """Whether a delivery is in flight or due (a first attempt or a retry) before
        ``when``."""
        with self._wake:
            return bool(self._busy or any(d.due <= when for d in self._queue))

    def close(self, drain_s: float = 5.0) -> None:
        """Deliver what is due in the next ``drain_s`` seconds, stop the thread, and record
        the rest (retries waiting longer) as dead letters."""
        deadline = time.time() + drain_s
        while time.time() < deadline and self._due_before(deadline):
            time.sleep(0.05)
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=max(t.timeout_s for t in self.targets) + 1)
        with self._wake:
            left, self._queue = self._queue, []
        for delivery in sorted(left):
            error = delivery.last_error or "not attempted"
            self._dead_letter(delivery, f"{error}; the server stopped before it was delivered")

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._queue or self._queue[0].due > time.time()):
                    wait = self._queue[0].due - time.time() if self._queue else None
                    self._wake.wait(timeout=wait)
                if self._stopping:
                    return
                delivery = heapq.heappop(self._queue)
                self._busy += 1
            try:
                self._attempt(delivery)
            finally:
                with self._wake:
                    self._busy -= 1

    def _attempt(self, delivery: _Delivery) -> None:
        target = delivery.target
        body = json.dumps(delivery.payload, default=str).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Marketarena-Event": delivery.event,
            "X-Marketarena-Delivery": delivery.payload["id"],
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(target.secret, timestamp, body),
        }
        delivery.attempts += 1
        request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=target.timeout_s) as response:
                status = response.status
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # refused, timed out, unreachable
            error = f"{type(exc).__name__}: {exc}"
        if not error:
            return
        delivery.last_error = error
        if delivery.attempts <= target.retries:
            delay = min(target.backoff_s * 2 ** (delivery.attempts - 1), MAX_BACKOFF_S)
            log.warning(
                "webhook %s to %s: attempt %d failed (%s); retrying in %.2f s",
                delivery.event,
                target.url,
                delivery.attempts,
                error,
                delay,
            )
            delivery.due = time.time() + delay
            with self._wake:
                heapq.heappush(self._queue, delivery)
                self._wake.notify()
            return
        self._dead_letter(delivery, error)

    def _dead_letter(self, delivery: _Delivery, error: str) -> None:
        target = delivery.target
        log.error(
            "webhook %s to %s: %d attempt(s) failed (%s); recorded as a dead letter",
            delivery.event,
            target.url,
            delivery.attempts,
            error,
        )
        try:
            self._dead_letters.record_delivery(
                target.url,
                delivery.event,
                json.dumps(delivery.payload, default=str),
                delivery.attempts,
                "dead",
                error,
            )
        except Exception:  # the store is unreachable: the thread goes on with other deliveries
            log.exception(
                "webhook %s to %s: the dead letter was not recorded", delivery.event, target.url
            )
