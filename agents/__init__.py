"""Agents: the shared protocol and the baselines."""

from marketarena.agents.base import Agent, Resumable, hold
from marketarena.agents.baselines import BASELINES, BuyAndHoldAgent, EqualWeightAgent, RandomAgent

__all__ = [
    "BASELINES",
    "Agent",
    "BuyAndHoldAgent",
    "EqualWeightAgent",
    "RandomAgent",
    "Resumable",
    "hold",
]
