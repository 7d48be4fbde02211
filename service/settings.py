"""The service's settings: where its run store and data live, how it is reached, who may call it.

A token comes from ``MARKETARENA_API_TOKEN`` or a file (``--token-file``; its first line), never
from a command-line value (it would show in the process list). Bound to a loopback address the
service may run without one; bound beyond loopback it refuses to start without one.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marketarena.envs.errors import ConfigError, MissingFileError

TOKEN_ENV = "MARKETARENA_API_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None = None) -> str | None:
    """The API token: the first line of ``token_file``, else ``$MARKETARENA_API_TOKEN``, else
    None. An empty or missing file is a clear error."""
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise MissingFileError(f"token file {token_file}: not found")
        lines = path.read_text().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ConfigError(f"token file {token_file}: its first line is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the app needs; see the module docstring for the token rule.

    Attributes:
        store: the run store, a SQLite path or a database URL (``postgresql://...``); the
            same store the CLI's ``--store`` uses.
        data_dir: the folder of downloaded market data the ``/data`` endpoints manage.
        host, port: where ``marketarena serve`` binds.
        token: the bearer token every request but ``/health`` must carry (None: no auth, only
            on loopback).
        max_body_bytes: a larger request body is refused with 413.
        workers: simulation jobs running at once (each in its own process).
        webhooks: webhook targets (see the webhooks module), as given in the config.
        providers: the data providers ``POST /data/download`` tries, in fallback order, when
            a request names none (default: the built-in ``local``).
        provider_limits: requests per minute per provider name (over a provider's own
            default; one without either is not limited).
    """

    store: str = "runs.sqlite"
    data_dir: str = "data"
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_body_bytes: int = 1_000_000
    workers: int = 1
    webhooks: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    providers: tuple[str, ...] = ("local",)
    provider_limits: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port}: must be in 1..65535")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes {self.max_body_bytes}: must be >= 1024")
        if self.workers < 1:
            raise ConfigError(f"workers {self.workers}: must be >= 1")
        bad_limits = {k: v for k, v in self.provider_limits.items() if not v > 0}
        if bad_limits:
            raise ConfigError(f"provider_limits {bad_limits}: requests per minute must be > 0")
        if self.token is None and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve on {self.host} without a token: set {TOKEN_ENV} or pass "
                "--token-file (only a loopback address may run without one)"
            )
