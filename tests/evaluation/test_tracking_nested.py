"""MLflow tracking: experiments open as model-training ones, one nested run per agent."""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
import pytest

from marketarena.evaluation import tracking
from marketarena.evaluation.report import EvaluationReport
from marketarena.evaluation.runner import AgentEvaluation, BacktestResult


def _result(agent: str, drift: float, seed: int | None = None) -> BacktestResult:
    t = 60
    rng = np.random.default_rng(seed if seed is not None else 7)
    returns = drift + 0.01 * rng.standard_normal(t)
    nav = 1_000.0 * np.r_[1.0, np.cumprod(1.0 + returns)]
    weights = np.tile([0.6, 0.4, 0.0], (t + 1, 1))
    weights[0] = [0.0, 0.0, 1.0]
    dates = pd.bdate_range("2024-01-01", periods=t + 1).to_numpy().astype("datetime64[D]")
    return BacktestResult(
        agent=agent,
        data_name="hand",
        symbols=("A", "B"),
        dates=dates,
        nav=nav,
        weights=weights,
        turnover=np.full(t, 0.05),
        costs=np.full(t, 0.1),
        seed=seed,
    )


@pytest.fixture
def report() -> EvaluationReport:
    evaluations = [
        AgentEvaluation("random", [_result("random", 0.0, s) for s in (0, 1, 2)]),
        AgentEvaluation("equal_weight", [_result("equal_weight", 0.001)]),
        AgentEvaluation("buy_and_hold", [_result("buy_and_hold", 0.0005)]),
    ]
    settings = {
        "data": {"name": "hand", "sha256": "0" * 64},
        "start": "2024-01-01",
        "end": "2024-03-25",
        "agents": ["random", "equal_weight", "buy_and_hold"],
        "agent_specs": ["random:5", "equal_weight:21"],
    }
    return EvaluationReport(
        title="hand: nested", evaluations=evaluations, settings=settings, bootstrap_resamples=50
    )


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow
    from mlflow.tracking import MlflowClient

    yield MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(None)  # set by the code under test; it outlives the test


def test_evaluation_logs_one_nested_run_per_agent(report, store, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    parent_id = tracking.log_evaluation(report, out, experiment="nested-eval")

    exp = store.get_experiment_by_name("nested-eval")
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    parent = store.get_run(parent_id)
    # the parent keeps its per-agent metrics
    assert "eval/equal_weight/sharpe" in parent.data.metrics

    children = store.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert sorted(c.info.run_name for c in children) == sorted(r.agent for r in report.rows())
    by_name = {c.info.run_name: c for c in children}
    keys = None
    for row in report.rows():
        child = by_name[row.agent]
        assert child.data.tags["mlflow.parentRunId"] == parent_id
        assert child.data.tags["marketarena.role"] == "agent"
        assert child.data.params["agent"] == row.agent
        expected = {
            k: float(v)
            for k, v in row.as_dict().items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        }
        assert {"sharpe", "total_return", "max_drawdown"} <= expected.keys()
        metrics = {k: v for k, v in child.data.metrics.items() if k != "equity"}
        assert metrics == pytest.approx(expected)
        # same keys for every agent (all finite here), so compare views line them up
        keys = keys or set(metrics)
        assert set(metrics) == keys
        curve = store.get_metric_history(child.info.run_id, "equity")
        assert [m.step for m in sorted(curve, key=lambda m: m.step)] == list(
            range(len(row.representative.nav))
        )
        assert sorted(curve, key=lambda m: m.step)[-1].value == pytest.approx(
            row.representative.nav[-1]
        )
    assert by_name["random"].data.params["agent_spec"] == "random:5"
    assert by_name["equal_weight"].data.params["agent_spec"] == "equal_weight:21"
    assert "agent_spec" not in by_name["buy_and_hold"].data.params


def test_an_existing_experiment_is_retagged_as_model_training(store):
    exp_id = store.create_experiment("was-genai")
    store.set_experiment_tag(exp_id, tracking.EXPERIMENT_KIND_TAG, "genai_development")
    with tracking.mlflow_run("was-genai", "r1"):
        pass
    assert (
        store.get_experiment(exp_id).tags[tracking.EXPERIMENT_KIND_TAG]
        == tracking.MODEL_TRAINING_KIND
    )


@pytest.mark.parametrize(
    ("error", "status", "stopped"),
    [
        (KeyboardInterrupt(), "KILLED", "interrupted"),
        (ValueError("broken"), "FAILED", None),
    ],
)
def test_a_run_stopped_on_purpose_ends_killed(tmp_path, monkeypatch, error, status, stopped):
    """Ctrl-C (or a pruned Optuna trial, in test_tune.py) ends a run KILLED with a ``stopped``
    tag saying why; any other exception leaves MLflow's FAILED. The exception goes on."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(type(error)), tracking.mlflow_run("stops", "run") as run:
        raise error
    assert mlflow.active_run() is None
    done = mlflow.MlflowClient(uri).get_run(run.info.run_id)
    assert done.info.status == status
    assert done.data.tags.get("stopped") == stopped
