"""Shared pieces of the benchmark suite: the case interface and the timer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Case:
    """One thing to time: ``step()`` advances every env of the case by one step.

    ``step`` must drive the env with pre-generated random actions and reset it when an
    episode ends, so that a loop of ``step()`` calls is a steady stream of env steps.
    ``env_steps_per_call`` is ``n_envs`` for a vector env and 1 for a single env.
    """

    name: str
    group: str
    n_assets: int
    env_steps_per_call: int
    step: Callable[[], object]
    notes: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def time_case(case: Case, *, min_seconds: float = 0.5, repeats: int = 5) -> dict[str, float]:
    """Median env-steps per second over ``repeats`` timed runs of at least ``min_seconds``."""
    # calibrate: how many calls fill min_seconds (after a warm-up)
    for _ in range(10):
        case.step()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            case.step()
        elapsed = time.perf_counter() - start
        if elapsed >= 0.05:
            break
        calls *= 2
    calls = max(1, int(calls * min_seconds / elapsed))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            case.step()
        rates.append(calls * case.env_steps_per_call / (time.perf_counter() - start))
    return {
        "steps_per_second": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "calls": calls,
        "repeats": repeats,
    }
