"""The agent protocol's optional abilities: runtime-checkable Protocols, asked with isinstance."""

from __future__ import annotations

from typing import Any, ClassVar

from marketarena.agents import EqualWeightAgent, RandomAgent
from marketarena.agents.base import (
    Agent,
    Composite,
    Confident,
    Diagnosable,
    ExpectsObservation,
    ReadsSnapshot,
    Resumable,
    hold,
)


class Plain:
    """An agent with nothing optional."""

    name = "plain"

    def reset(self, *, seed: int | None = None) -> None:
        pass

    def act(self, observation: Any, info: Any) -> Any:
        return hold(info)


class OwnState(Plain):
    """Resumable by shape alone: its own get_state/set_state, no base class."""

    def get_state(self) -> dict[str, Any]:
        return {"n": 1}

    def set_state(self, state: Any) -> None:
        pass


class WithClient(Resumable, Plain):
    """The default get_state/set_state, with a resource that is rebuilt, not saved."""

    _transient: ClassVar[tuple[str, ...]] = ("client",)

    def __init__(self) -> None:
        self.client, self.count = object(), 3


def test_abilities_are_structural():
    plain = Plain()
    assert isinstance(plain, Agent)
    for ability in (Resumable, Diagnosable, ReadsSnapshot, Composite, Confident):
        assert not isinstance(plain, ability)
    assert isinstance(OwnState(), Resumable)
    plain.confidence, plain.snapshot_lookback, plain.observation = 0.5, 5, {"window": 8}
    assert all(isinstance(plain, a) for a in (Confident, ReadsSnapshot, ExpectsObservation))


def test_the_default_state_leaves_out_the_transient_attributes():
    agent = WithClient()
    state = agent.get_state()
    assert state == {"count": 3}
    other = WithClient()
    other.count, client = 0, other.client
    other.set_state(state)
    assert other.count == 3 and other.client is client
    # the baselines use the default
    random = RandomAgent(rebalance_every=5)
    assert isinstance(random, Resumable) and isinstance(EqualWeightAgent(), Resumable)
    assert set(random.get_state()) == set(vars(random))
