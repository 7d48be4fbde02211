"""The agent protocol shared by every kind of agent (baselines, SB3, LLM, ensembles).

An agent sees what the environment returned for step ``t`` (the observation and the info
dict) and returns an action for :class:`~marketarena.envs.PortfolioEnv`: target weights over
the ``N`` assets and cash, in the layout of ``info["weights"]``. Returning ``info["weights"]``
unchanged holds the portfolio (no trades). ``reset`` is called before every episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Agent(Protocol):
    """What the backtest runner needs from an agent."""

    name: str

    def reset(self, *, seed: int | None = None) -> None:
        """Forget episode state; reseed any randomness from ``seed``."""
        ...

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        """Target weights ``(N + 1,)`` (assets, then cash) for the decision after bar ``t``."""
        ...


def hold(info: Mapping[str, Any]) -> np.ndarray:
    """The action that keeps every position as it is."""
    return np.asarray(info["weights"], dtype=np.float64)


def n_assets(info: Mapping[str, Any]) -> int:
    """Number of assets, from the info layout (weights are assets + cash)."""
    return len(info["weights"]) - 1
