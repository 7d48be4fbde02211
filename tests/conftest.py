"""Shared fixtures: small hand-made markets; run stores on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

from marketarena.envs.data import MarketData


def _make_market(
    close: list[list[float]] | np.ndarray,
    open: list[list[float]] | np.ndarray | None = None,
    volume: list[list[float]] | np.ndarray | None = None,
    symbols: tuple[str, ...] | None = None,
    start: str = "2024-01-01",
) -> MarketData:
    close = np.asarray(close, dtype=float)
    t, n = close.shape
    kwargs: dict[str, np.ndarray] = {}
    if open is not None:
        o = np.asarray(open, dtype=float)
        kwargs.update(open=o, high=np.maximum(o, close) * 1.01, low=np.minimum(o, close) * 0.99)
    if volume is not None:
        kwargs["volume"] = np.asarray(volume, dtype=float)
    dates = pd.bdate_range(start, periods=t).to_numpy().astype("datetime64[D]")
    symbols = symbols or tuple("ABCDEFGHIJ"[:n])
    return MarketData(dates=dates, symbols=symbols, close=close, name="hand", **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Computed-array caches (indicators, sentiment) go to a folder of this test session's,
    never the user's ~/.cache; a test that needs its own sets MARKETARENA_CACHE_DIR itself."""
    import os

    os.environ["MARKETARENA_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def make_market() -> Callable[..., MarketData]:
    """Build a MarketData from literal price lists (OHLC consistent when opens are given)."""
    return _make_market


def _perturb_future(data: MarketData, t: int, *, scale: float = 0.1, seed: int = 0) -> MarketData:
    """``data`` with every price of the bars after row ``t`` moved by a random factor (open,
    high, low and close together, so each bar stays consistent); rows <= t are untouched."""
    import dataclasses

    shock = np.ones_like(data.close)
    shock[t + 1 :] = np.exp(np.random.default_rng(seed).normal(0, scale, shock[t + 1 :].shape))
    moved = {
        field: getattr(data, field) * shock
        for field in ("open", "high", "low", "close")
        if getattr(data, field) is not None
    }
    return dataclasses.replace(data, **moved, name=f"{data.name}+future")


@pytest.fixture
def perturb_future() -> Callable[..., MarketData]:
    """``perturb_future(data, t)``: the same market up to row ``t``, another one after it."""
    return _perturb_future


POSTGRES_ENV = "MARKETARENA_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """``$MARKETARENA_TEST_POSTGRES_URL`` (``.ci/postgres.sh`` prints one); skips the test when
    it is unset, except in CI (``CI`` set), where its absence fails the test."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI must set {POSTGRES_ENV} (see .ci/postgres.sh)")
        pytest.skip(f"{POSTGRES_ENV} is not set: run `export {POSTGRES_ENV}=$(.ci/postgres.sh)`")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """Where a new, empty run store goes: a SQLite file in the test's folder, or a
    ``postgresql://`` URL whose connections use a schema of the test's own (created here,
    dropped with everything in it afterwards)."""
    if request.param == "sqlite":
        yield str(tmp_path / "runs.sqlite")
        return
    import psycopg2

    def execute(sql: str) -> None:
        conn = psycopg2.connect(base)
        try:
            conn.autocommit = True
            conn.cursor().execute(sql)
        finally:
            conn.close()

    base = postgres_url()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in base else "?"
    yield f"{base}{joiner}options={quote(f'-csearch_path={schema}')}"
    execute(f"DROP SCHEMA {schema} CASCADE")
