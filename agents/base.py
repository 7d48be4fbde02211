"""The agent protocol shared by every kind of agent (baselines, SB3, LLM, ensembles).

An agent sees what the environment returned for step ``t`` (the observation and the info
dict) and returns an action for :class:`~marketarena.envs.PortfolioEnv`: target weights over
the ``N`` assets and cash, in the layout of ``info["weights"]``. Returning ``info["weights"]``
unchanged holds the portfolio (no trades). ``reset`` is called before every episode.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

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


class Resumable:
    """Mixin: an agent whose state can be saved after a day and restored to resume a run.

    ``get_state`` returns a deep copy of the instance's attributes except those named in
    ``_transient`` (resources such as clients, connections or a model that is rebuilt from
    the agent's spec); ``set_state`` puts them back on an agent built from the same spec.
    """

    _transient: ClassVar[tuple[str, ...]] = ()

    def get_state(self) -> dict[str, Any]:
        return copy.deepcopy({k: v for k, v in vars(self).items() if k not in self._transient})

    def set_state(self, state: Mapping[str, Any]) -> None:
        saved = {k: v for k, v in state.items() if k not in self._transient}
        vars(self).update(copy.deepcopy(saved))
