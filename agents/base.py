"""The agent protocol shared by every kind of agent (baselines, SB3, LLM, ensembles).

An agent sees what the environment returned for step ``t`` (the observation and the info
dict) and returns an action for :class:`~marketarena.envs.PortfolioEnv`: target weights over
the ``N`` assets and cash, in the layout of ``info["weights"]``. Returning ``info["weights"]``
unchanged holds the portfolio (no trades). ``reset`` is called before every episode.

Optional abilities are Protocols too, checked with ``isinstance``: :class:`Resumable`
(``get_state``/``set_state``, for persisted runs), :class:`Diagnosable` (``diagnostics()``),
:class:`ReadsSnapshot` (``snapshot_lookback``), :class:`Composite` (``members``),
:class:`Confident` (``confidence``), :class:`ExpectsObservation` (``observation``) and
:class:`ReadsMarketData` (``use_data``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from marketarena.envs.data import MarketData


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


#: the agent specs that talk to an LLM endpoint: one prompt, with tools, a team
LLM_SPEC_PREFIXES = ("llm:", "llm-tools:", "team:")


def uses_llm(spec: str) -> bool:
    """Whether the agent a spec names talks to an LLM endpoint."""
    return spec.strip().startswith(LLM_SPEC_PREFIXES)


def snapshot_of(agent: Any, info: Mapping[str, Any]) -> Any:
    """``info["snapshot"]`` (a :class:`~marketarena.envs.MarketSnapshot`), or a ValueError
    saying how to build an env that gives ``agent`` (a :class:`ReadsSnapshot`) one."""
    snapshot = info.get("snapshot")
    if snapshot is None:
        raise ValueError(
            f"{agent.name} needs info['snapshot']: build the env with "
            f"snapshot_lookback={agent.snapshot_lookback} (run_backtest does this for you)"
        )
    return snapshot


def n_assets(info: Mapping[str, Any]) -> int:
    """Number of assets, from the info layout (weights are assets + cash)."""
    return len(info["weights"]) - 1


# ------------------------------------------------------------------ optional abilities
# What the runner, the persisted runs and the ensembles use when an agent has it; each is a
# runtime-checkable Protocol, so ``isinstance(agent, Resumable)`` asks the question.


@runtime_checkable
class Resumable(Protocol):
    """An agent whose state can be saved after a day and restored to resume a run.

    ``get_state`` returns what ``set_state`` needs to put an agent built from the same spec
    back where it was. Subclass it for the default: ``get_state`` returns a deep copy of the
    instance's attributes except those named in the class attribute ``_transient`` (resources
    such as clients, connections or a model that is rebuilt from the agent's spec), and
    ``set_state`` puts them back.
    """

    def get_state(self) -> dict[str, Any]:
        transient = _transient(self)
        return copy.deepcopy({k: v for k, v in vars(self).items() if k not in transient})

    def set_state(self, state: Mapping[str, Any]) -> None:
        transient = _transient(self)
        saved = {k: v for k, v in state.items() if k not in transient}
        vars(self).update(copy.deepcopy(saved))


class ResumableAgent(Agent, Resumable, Protocol):
    """An :class:`Agent` that is :class:`Resumable`, as a persisted run needs."""


def _transient(agent: object) -> tuple[str, ...]:
    # not a protocol member: an agent with its own get_state/set_state needs none
    return getattr(type(agent), "_transient", ())


@runtime_checkable
class Diagnosable(Protocol):
    """An agent with its own account of a run (an LLM's outcomes, tokens and latency; an
    ensemble's latest decision), which the runner stores with the result."""

    def diagnostics(self) -> dict[str, Any]:
        """Plain Python values (JSON-ready)."""
        ...


@runtime_checkable
class ReadsSnapshot(Protocol):
    """An agent that reads ``info["snapshot"]`` (a
    :class:`~marketarena.envs.MarketSnapshot` of the last ``snapshot_lookback`` sessions),
    which the runner then asks the env to build."""

    snapshot_lookback: int | None


@runtime_checkable
class Composite(Protocol):
    """An agent made of agents (an ensemble): what a member needs, the whole needs."""

    members: Sequence[Agent]


@runtime_checkable
class Confident(Protocol):
    """An agent that states how sure it is of its latest action: ``confidence`` in
    ``[0, 1]``, or None for no statement (set by ``act``)."""

    confidence: float | None


@runtime_checkable
class ExpectsObservation(Protocol):
    """An agent whose model was trained on one observation: ``observation`` holds the
    settings it needs (``window``, ``features``, ``symbols``; empty when unknown)."""

    observation: Mapping[str, Any]


@runtime_checkable
class ReadsMarketData(Protocol):
    """An agent that evaluates a point-in-time signal over the env's whole panel once (the
    rule agent's indicators) and reads the row of each decision's date: the runner calls
    ``use_data(env.data)`` before the episode's first step. What it reads at row ``t`` must
    use rows ``<= t`` only, which its perturb-the-future test shows."""

    def use_data(self, data: MarketData) -> None:
        """Precompute over ``data``, the panel the env trades."""
        ...
