"""Normalised task scores: growth pinned by hand, the anchors scoring exactly 1 and 0 through
the path every agent takes, the test split, caching, and unknown tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marketarena.envs.tasks import TASKS, get_task
from marketarena.evaluation.runner import BacktestResult
from marketarena.evaluation.task_scores import (
    ANCHOR_SEED,
    growth,
    normalised_score,
    run_on_split,
    task_anchor_scores,
)


def result_with_nav(nav: list[float]) -> BacktestResult:
    n = len(nav)
    return BacktestResult(
        agent="hand",
        data_name="hand",
        symbols=("A",),
        dates=np.arange(n).astype("datetime64[D]"),
        nav=np.asarray(nav, dtype=float),
        weights=np.tile([0.0, 1.0], (n, 1)),
        turnover=np.zeros(n - 1),
        costs=np.zeros(n - 1),
    )


def test_growth_is_annualised_mean_log_return():
    # 100 -> 110 -> 99 -> 121: log(1.21) over 3 steps, 252 steps a year
    result = result_with_nav([100.0, 110.0, 99.0, 121.0])
    assert growth(result) == pytest.approx(math.log(1.21) / 3 * 252, rel=1e-12)
    assert growth(result, periods_per_year=12) == pytest.approx(math.log(1.21) / 3 * 12)
    # a run that stopped early holds its last NAV over the split's remaining steps
    assert growth(result, steps=6) == pytest.approx(math.log(1.21) / 6 * 252)
    assert growth(result_with_nav([100.0, 100.0])) == 0.0
    assert math.isnan(growth(result_with_nav([100.0])))
    assert growth(result_with_nav([100.0, 0.0])) == -math.inf


@pytest.mark.parametrize("name", list(TASKS))
def test_anchors_score_exactly_one_and_zero(name):
    """The reference and the baseline, run again through the same path as any agent (a
    fresh agent from its spec, the test split, the anchor seed), score exactly 1 and 0."""
    for kind, expected in (("reference", 1.0), ("baseline", 0.0)):
        result = run_on_split(f"{kind}:{name}", name, ANCHOR_SEED)
        assert normalised_score(name, growth(result)) == expected, kind


def test_anchor_scores_are_test_split_runs():
    anchors = task_anchor_scores("Momentum")
    task = get_task("Momentum")
    assert anchors["task"] == "Momentum" and anchors["seed"] == ANCHOR_SEED
    assert anchors["reference"]["spec"] == task.reference == "signal:Momentum"
    assert anchors["baseline"]["spec"] == task.baseline == "buy_and_hold"
    result = run_on_split("reference:Momentum", "Momentum", ANCHOR_SEED)
    assert (str(result.dates[0]), str(result.dates[-1])) == task.splits()["test"]
    metrics = result.metrics()
    assert anchors["reference"]["growth"] == growth(result)
    assert anchors["reference"]["sharpe"] == metrics["sharpe"]
    assert anchors["reference"]["annual_turnover"] == metrics["annual_turnover"]
    # the planted signal beats holding on this task, after costs, and trades far more
    assert anchors["reference"]["growth"] > anchors["baseline"]["growth"]
    assert anchors["reference"]["annual_turnover"] > 10 * anchors["baseline"]["annual_turnover"]


def test_normalised_score_is_linear_between_the_anchors():
    anchors = task_anchor_scores("LeadLag")
    low, high = anchors["baseline"]["growth"], anchors["reference"]["growth"]
    assert normalised_score("LeadLag", (low + high) / 2) == pytest.approx(0.5)
    assert normalised_score("LeadLag", high + (high - low)) == pytest.approx(2.0)
    assert normalised_score("marketarena/LeadLag-v0", low) == 0.0


def test_anchor_scores_are_cached_and_copied():
    first = task_anchor_scores("Noise")
    first["reference"]["growth"] = 123.0  # a caller's edit must not reach the cache
    again = task_anchor_scores("marketarena/Noise-v0")
    assert again["reference"]["growth"] != 123.0
    assert again == task_anchor_scores("Noise-v0")


@pytest.mark.parametrize("call", [task_anchor_scores, lambda n: normalised_score(n, 0.1)])
def test_unknown_task_lists_the_tasks(call):
    with pytest.raises(ValueError, match="unknown task 'Nope'") as info:
        call("Nope")
    for task in TASKS.values():
        assert task.env_id in str(info.value)


@pytest.mark.parametrize("name", list(TASKS))
def test_validation_split_anchors_score_one_and_zero_there(name):
    """``split="validation"`` scores against anchors run over the validation split, not the
    test split's: the reference there scores exactly 1, the baseline 0."""
    anchors = task_anchor_scores(name, "validation")
    assert anchors["split"] == "validation"
    assert anchors["reference"]["growth"] != task_anchor_scores(name)["reference"]["growth"]
    for kind, expected in (("reference", 1.0), ("baseline", 0.0)):
        result = run_on_split(f"{kind}:{name}", name, ANCHOR_SEED, "validation")
        assert (str(result.dates[0]), str(result.dates[-1])) == get_task(name).splits()[
            "validation"
        ]
        assert normalised_score(name, growth(result), "validation") == expected, kind


@pytest.mark.parametrize("split", ["train", "Test", ""])
def test_only_test_and_validation_are_scored(split):
    with pytest.raises(ValueError, match="split must be one of"):
        task_anchor_scores("Momentum", split)
