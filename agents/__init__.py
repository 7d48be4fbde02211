"""Agents: the shared protocol, the optional abilities an agent may have, and the baselines."""

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
from marketarena.agents.baselines import BASELINES, BuyAndHoldAgent, EqualWeightAgent, RandomAgent

__all__ = [
    "BASELINES",
    "Agent",
    "BuyAndHoldAgent",
    "Composite",
    "Confident",
    "Diagnosable",
    "EqualWeightAgent",
    "ExpectsObservation",
    "RandomAgent",
    "ReadsSnapshot",
    "Resumable",
    "hold",
]
