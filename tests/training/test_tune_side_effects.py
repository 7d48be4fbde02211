"""``tune`` quiets Optuna's logging and draws Optuna's plots for its own call only: the
caller's Optuna verbosity, its logging filters and matplotlib's backend are as they were
afterwards, whether the study finishes or fails.

Training is replaced by a stub that returns a validation score (the tuning loop, the
study's end and its plots run for real), so each test takes about a second.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import optuna
import pytest

import marketarena.training.tune as tune_module
from marketarena.training.config import load_config
from marketarena.training.tune import tune

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
OPTIMIZE_LOG = logging.getLogger("optuna.study._optimize")


@pytest.fixture
def caller_settings():
    """A caller with settings of its own: Optuna at DEBUG, matplotlib on the svg backend."""
    verbosity, backend = optuna.logging.get_verbosity(), matplotlib.get_backend()
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    matplotlib.use("svg")
    filters = list(OPTIMIZE_LOG.filters)
    yield optuna.logging.DEBUG, "svg", filters
    optuna.logging.set_verbosity(verbosity)
    matplotlib.use(backend)


def _config(n_trials: int):
    return load_config(SMOKE, ("mlflow.enabled=false", f"tuning.n_trials={n_trials}"))


def test_a_finished_study_leaves_the_callers_settings(caller_settings, tmp_path, monkeypatch):
    verbosity, backend, filters = caller_settings
    scores = iter([0.1, 0.3])
    monkeypatch.setattr(
        tune_module,
        "train",
        lambda config, **kwargs: SimpleNamespace(best_validation={"sharpe": next(scores)}),
    )
    monkeypatch.chdir(tmp_path)
    result = tune(_config(2), out_dir=tmp_path / "tuning")
    assert result.n_complete == 2
    # on svg, Optuna's importance plot (which needs an Agg canvas) is left out
    pngs = sorted(p.name for p in (tmp_path / "tuning" / "smoke").glob("*.png"))
    assert pngs == ["optimization_history.png", "parallel_coordinate.png"]
    assert optuna.logging.get_verbosity() == verbosity
    assert matplotlib.get_backend() == backend
    assert OPTIMIZE_LOG.filters == filters


def test_a_failed_study_leaves_the_callers_verbosity(caller_settings, tmp_path, monkeypatch):
    verbosity, _, filters = caller_settings

    def train(config, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tune_module, "train", train)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        tune(_config(1), out_dir=tmp_path / "tuning")
    assert optuna.logging.get_verbosity() == verbosity
    assert OPTIMIZE_LOG.filters == filters
