"""Agents that follow a diagnostic task's planted rule, and the all-cash agent.

``signal:<Task>`` (e.g. ``signal:Momentum``) follows the task's point-in-time rule table
(:meth:`marketarena.envs.tasks.Task.signal_weights`): at the decision after bar ``t`` it
looks up row ``t`` of the table, which uses prices up to ``t`` only. It trades only when the
rule's target changes; between changes the positions drift with prices, so the rule pays
costs for its signal and not for rebalancing drift. ``reference:<Task>`` is whichever agent
the task names as its reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from marketarena.agents.base import Resumable, hold, n_assets
from marketarena.envs.errors import ConfigError
from marketarena.envs.tasks import get_task


class CashAgent(Resumable):
    """Never buys: the portfolio stays in cash (log growth exactly 0, no costs)."""

    def __init__(self, name: str = "cash") -> None:
        self.name = name

    def reset(self, *, seed: int | None = None) -> None:
        pass

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        action = np.zeros(n_assets(info) + 1)
        action[-1] = 1.0
        return action


class SignalAgent(Resumable):
    """Follows a task's planted rule; see the module docstring.

    Args:
        task: a task name or id (``Momentum``, ``marketarena/Momentum-v0``).
    """

    _transient = ("_table", "_dates")

    def __init__(self, task: str, name: str | None = None) -> None:
        spec = get_task(task)
        self.task = spec.name
        self.name = name or f"signal:{spec.name}"
        self._table = spec.signal_weights()
        self._dates = spec.market().dates
        self._last: np.ndarray | None = None

    def reset(self, *, seed: int | None = None) -> None:
        self._last = None

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        date = np.datetime64(info["date"], "D")
        row = int(np.searchsorted(self._dates, date))
        if row >= len(self._dates) or self._dates[row] != date:
            raise ConfigError(f"{self.name}: {date} is not a date of task {self.task}'s data")
        if n_assets(info) != self._table.shape[1]:
            raise ConfigError(
                f"{self.name} trades the {self._table.shape[1]} assets of task {self.task}, "
                f"but the env has {n_assets(info)}"
            )
        target = self._table[row]
        if np.isnan(target).any() or (
            self._last is not None and np.array_equal(target, self._last)
        ):
            return hold(info)
        self._last = target
        return np.append(target, 1.0 - target.sum())
