"""Baseline agents: buy-and-hold, equal weight rebalanced on a schedule, random weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from marketarena.agents.base import Resumable, hold, n_assets


def _equal_weights(n: int) -> np.ndarray:
    action = np.full(n + 1, 1.0 / n)
    action[-1] = 0.0
    return action


class BuyAndHoldAgent(Resumable):
    """Buys the target weights (equal weight by default) on the first step, then never trades.

    Args:
        weights: optional target weights over the assets (length ``N``, summing to at most 1;
            the rest stays in cash).
    """

    def __init__(self, weights: Sequence[float] | None = None, name: str = "buy_and_hold") -> None:
        self.name = name
        self._weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self._bought = False

    def reset(self, *, seed: int | None = None) -> None:
        self._bought = False

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        if self._bought:
            return hold(info)
        self._bought = True
        n = n_assets(info)
        if self._weights is None:
            return _equal_weights(n)
        if (
            self._weights.shape != (n,)
            or np.any(self._weights < 0)
            or self._weights.sum() > 1 + 1e-9
        ):
            raise ValueError(
                f"buy-and-hold weights must be {n} non-negative numbers summing to at most 1"
            )
        return np.append(self._weights, 1.0 - self._weights.sum())


class EqualWeightAgent(Resumable):
    """Equal weight across all assets, rebalanced every ``rebalance_every`` steps.

    ``rebalance_every=1`` rebalances daily; 21 is roughly monthly on daily bars. Between
    rebalances the portfolio drifts with prices (no trades).
    """

    def __init__(self, rebalance_every: int = 21, name: str = "equal_weight") -> None:
        if rebalance_every < 1:
            raise ValueError(f"rebalance_every must be >= 1, got {rebalance_every}")
        self.name = name
        self.rebalance_every = rebalance_every
        self._step = 0

    def reset(self, *, seed: int | None = None) -> None:
        self._step = 0

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        rebalance = self._step % self.rebalance_every == 0
        self._step += 1
        return _equal_weights(n_assets(info)) if rebalance else hold(info)


class RandomAgent(Resumable):
    """Random target weights over assets and cash (Dirichlet(1), uniform on the simplex),
    redrawn every ``rebalance_every`` steps from a seeded generator."""

    def __init__(
        self, rebalance_every: int = 1, seed: int | None = None, name: str = "random"
    ) -> None:
        if rebalance_every < 1:
            raise ValueError(f"rebalance_every must be >= 1, got {rebalance_every}")
        self.name = name
        self.rebalance_every = rebalance_every
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._step = 0

    def reset(self, *, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(self._seed if seed is None else seed)
        self._step = 0

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        redraw = self._step % self.rebalance_every == 0
        self._step += 1
        if not redraw:
            return hold(info)
        return self._rng.dirichlet(np.ones(n_assets(info) + 1))


BASELINES = {
    "buy_and_hold": BuyAndHoldAgent,
    "equal_weight": EqualWeightAgent,
    "random": RandomAgent,
}
