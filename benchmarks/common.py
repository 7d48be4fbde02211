"""Shared pieces of the benchmark suite: the case interface and the timer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


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


def print_rows(rows: Iterable[dict[str, Any]]) -> None:
    """A section's rows as aligned text (``python benchmarks/<section>.py``)."""
    rows = list(rows)
    width = max((len(str(r["case"])) for r in rows), default=0)
    for r in rows:
        v = r["value"]
        if v is None:
            shown = "n/a"
        elif isinstance(v, float | int) and not isinstance(v, bool):
            shown = f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:,.4g}"
        else:
            shown = str(v)
        print(f"{r['case']:{width}s} {shown:>12s} {r.get('unit', ''):14s} {r.get('note', '')}")


def section_main(
    doc: str | None, run: Callable[..., dict], rows: Callable[[dict], list], quick_help: str
) -> None:
    """Command line of one section: ``--quick`` (``quick_help``), ``--json``, then its rows."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", action="store_true", help="print the result dict as JSON")
    args = parser.parse_args()
    result = run(quick=args.quick)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    print_rows(rows(result))
