"""The normalised score of a diagnostic task: 0 = the task's baseline, 1 = its reference.

Scores are on the task's **test** split (``split="validation"`` for choosing settings without
touching the test split), after costs, under the task's rules
(:func:`marketarena.envs.tasks.task_env_kwargs`). The quantity normalised is the growth rate,
the annualised mean log return of the NAV (:func:`growth`); the two anchors are computed by
running the task's reference and baseline agents through :func:`run_backtest`, the path
every other agent takes, never assumed. A stochastic anchor (``random``, the baseline of
``Noise``) is run with seed :data:`ANCHOR_SEED`.

    normalised = (growth - growth_baseline) / (growth_reference - growth_baseline)
"""

from __future__ import annotations

import copy
import math
from functools import cache
from typing import Any

import numpy as np

from marketarena.agents.registry import make_agent
from marketarena.envs.errors import ConfigError
from marketarena.envs.tasks import get_task, task_env_kwargs
from marketarena.evaluation.metrics import PERIODS_PER_YEAR
from marketarena.evaluation.runner import BacktestResult, run_backtest

#: the seed the anchors run with (it matters only for a stochastic anchor)
ANCHOR_SEED = 0
ANCHORS = ("reference", "baseline")
#: the splits a score can be computed on; the train split is what agents learn from
SCORED_SPLITS = ("test", "validation")


def growth(
    result: BacktestResult, periods_per_year: int = PERIODS_PER_YEAR, steps: int | None = None
) -> float:
    """Annualised mean log return after costs: ``log(nav[-1] / nav[0]) / steps * ppy``.

    ``steps`` defaults to the run's own (``len(nav) - 1``); give the split's length for a run
    that ended early (ruin, stop-loss), so that it counts as holding its last NAV to the end
    rather than having its loss annualised over its short life. NaN for a run with no step;
    ``-inf`` for a run that lost everything.
    """
    nav = np.asarray(result.nav, dtype=float)
    steps = len(nav) - 1 if steps is None else steps
    if len(nav) < 2 or steps < 1:
        return math.nan
    with np.errstate(divide="ignore"):  # a ruined run's log(0) is -inf, by definition
        return float(np.log(nav[-1] / nav[0]) / steps * periods_per_year)


def check_split(split: str) -> str:
    if split not in SCORED_SPLITS:
        raise ConfigError(f"split must be one of {SCORED_SPLITS}, got {split!r}")
    return split


def scoring_env_kwargs(task_name: str, split: str = "test", **overrides: Any) -> dict[str, Any]:
    """:class:`PortfolioEnv` arguments of a task's test (or validation) split, as every bench
    run uses them (``overrides``: the observation a trained model expects, e.g. ``window``,
    ``features``)."""
    return task_env_kwargs(get_task(task_name).name, check_split(split), **overrides)


def run_on_split(
    agent: Any, task_name: str, seed: int | None, split: str = "test", **overrides: Any
) -> BacktestResult:
    """Backtest ``agent`` (an agent or a spec) over a task's test (or validation) split."""
    if isinstance(agent, str):
        agent = make_agent(agent)
    return run_backtest(agent, scoring_env_kwargs(task_name, split, **overrides), seed=seed)


def task_anchor_scores(task_name: str, split: str = "test") -> dict[str, Any]:
    """Growth, Sharpe and annual turnover of the task's reference and baseline on its test
    (or validation) split: ``{"task", "seed", "split", "reference": {"agent", "growth",
    ...}, "baseline": {...}}``.

    Computed once per process (the task's data and rules are fixed); an unknown task lists
    the tasks.
    """
    return copy.deepcopy(_anchor_scores(get_task(task_name).name, check_split(split)))


@cache
def _anchor_scores(name: str, split: str) -> dict[str, Any]:
    task = get_task(name)
    out: dict[str, Any] = {"task": name, "seed": ANCHOR_SEED, "split": split}
    for kind in ANCHORS:
        spec = f"{kind}:{name}"
        result = run_on_split(spec, name, ANCHOR_SEED, split)
        table = result.metrics()
        out[kind] = {
            "agent": spec,
            "spec": task.reference if kind == "reference" else task.baseline,
            "growth": growth(result),
            "sharpe": table["sharpe"],
            "annual_turnover": table["annual_turnover"],
        }
    if out["reference"]["growth"] == out["baseline"]["growth"]:
        raise ValueError(
            f"task {name}: the reference and the baseline grow alike on the {split} split "
            f"({out['reference']['growth']:.6g}); the normalised score is undefined"
        )
    return out


def normalised_score(task_name: str, growth_value: float, split: str = "test") -> float:
    """``(g - g_baseline) / (g_reference - g_baseline)`` on the task's test (or validation)
    split."""
    anchors = task_anchor_scores(task_name, split)
    low, high = anchors["baseline"]["growth"], anchors["reference"]["growth"]
    return float((growth_value - low) / (high - low))
