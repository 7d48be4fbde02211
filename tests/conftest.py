"""Shared fixtures: small hand-made markets."""

from __future__ import annotations

from collections.abc import Callable

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
