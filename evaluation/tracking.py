"""MLflow tracking shared by evaluation and training.

The default store needs no set-up: a SQLite file ``mlflow.db`` in the working directory
(MLflow 3's own default). ``MLFLOW_TRACKING_URI`` points runs at a tracking server instead.
Only the run's own settings are logged; environment variables never are, so API keys cannot
leak into params or artifacts.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_DB = "mlflow.db"
# artifact transfers print tqdm bars otherwise, into every command's output
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow 3's UI picks an experiment's view from this tag: "custom_model_development" opens
# the runs, metrics and charts; "genai_development" the traces view. MLflow's Python package
# names neither (the values are its UI's ExperimentKind and its onboarding skill's), so they
# are spelled here; MLflow 2 ignores the tag.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|authorization)", re.IGNORECASE)


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def ui_command(uri: str | None = None) -> str:
    """The command that opens the MLflow UI on this store."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} in a browser (a tracking server)"


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as ``a.b.c`` keys with string values; secret-looking keys dropped."""
    out: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if _SECRET_KEY.search(str(key)):
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            text = str(value)
            out[name] = text if len(text) <= 500 else text[:497] + "..."
    return out


def active_mlflow() -> Any:
    """The ``mlflow`` module when a run is active in this process, else ``None``; MLflow is
    not imported for the question (it takes about a second: a process that never tracks,
    such as a bench job on a Ray worker, never pays it): no import, no active run."""
    mlflow = sys.modules.get("mlflow")
    return mlflow if mlflow is not None and mlflow.active_run() else None


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name from parts (``eval/buy_and_hold/sharpe``)."""
    return "/".join(re.sub(r"[^A-Za-z0-9_.\-]+", "_", p).strip("_") for p in parts)


def set_experiment(experiment: str) -> Any:
    """``mlflow.set_experiment``, tagged so MLflow 3 opens it as a model-training experiment.

    Without the tag MLflow 3 may show a new experiment in its GenAI view (traces,
    evaluations of prompts) instead of the runs, metrics and charts these experiments hold.
    """
    import mlflow

    exp = mlflow.set_experiment(experiment)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
        mlflow.MlflowClient().set_experiment_tag(
            exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
        )
    return exp


@contextmanager
def mlflow_run(
    experiment: str, run_name: str | None, tags: Mapping[str, str] | None = None, **kwargs: Any
) -> Iterator[Any]:
    """Start an MLflow run on :func:`tracking_uri` (the store is created if needed)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    set_experiment(experiment)
    if kwargs.get("run_id"):  # resuming: the run keeps its name
        run_name = None
    with mlflow.start_run(run_name=run_name, **kwargs) as run:
        mlflow.set_tags({"git_sha": git_sha(), **(tags or {})})
        try:
            yield run
        except BaseException as exc:
            reason = stopped_on_purpose(exc)
            if reason is not None:  # stopped, not broken: KILLED, with why
                mlflow.set_tag("stopped", reason[:500])
                mlflow.end_run("KILLED")
            raise


class RunStopped(Exception):
    """Raised to stop a run on purpose, with why (e.g. a trial Ray Tune's scheduler
    stopped): :func:`mlflow_run` ends the run KILLED, with the reason as its ``stopped`` tag."""


def stopped_on_purpose(exc: BaseException) -> str | None:
    """Why a run was stopped on purpose (a pruned trial, Ctrl-C), or ``None`` for a failure.
    Such a run ends KILLED rather than FAILED in MLflow (the runs that failed are then the
    ones to look at)."""
    if isinstance(exc, RunStopped):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    optuna = sys.modules.get("optuna")
    if optuna is not None and isinstance(exc, optuna.TrialPruned):
        return f"pruned: {exc}" if str(exc) else "pruned"
    return None


@contextmanager
def traced_llm_decisions(experiment: str) -> Iterator[list[str]]:
    """Trace every LLM decision made inside the block into ``experiment`` on
    :func:`tracking_uri` (see :mod:`~marketarena.agents.llm_tracing`); yields the trace ids.

    The experiment keeps its model-training kind (:func:`set_experiment`): its runs open in
    the runs view, and the traces are in its Traces tab all the same.
    """
    import mlflow

    from marketarena.agents.llm_tracing import llm_tracing

    mlflow.set_tracking_uri(tracking_uri())
    exp = set_experiment(experiment)
    with llm_tracing(exp.experiment_id) as trace_ids:
        yield trace_ids


def log_evaluation(
    report: Any,
    output: Path,
    experiment: str = "marketarena-evaluation",
    trace_ids: Sequence[str] = (),
) -> str:
    """Log an :class:`EvaluationReport` (already written to ``output``) as one MLflow run;
    ``trace_ids`` (the LLM decisions traced while it ran) are linked to that run."""
    import mlflow

    settings = report.settings
    tags = {
        "kind": "evaluation",
        "data": settings["data"]["name"],
        "data_sha256": settings["data"]["sha256"],
    }
    with mlflow_run(experiment, report.title, tags) as run:
        mlflow.log_params(flatten({k: v for k, v in settings.items() if k != "data"}))
        mlflow.log_params(flatten({"data": settings["data"]}))
        for row in report.rows():
            values = row.as_dict()
            for key, value in values.items():
                if isinstance(value, float) and value == value and abs(value) != float("inf"):
                    mlflow.log_metric(metric_key("eval", row.agent, key), value)
        mlflow.log_artifacts(str(output), artifact_path="report")
        specs = _agent_specs(settings)
        for row in report.rows():
            _log_agent_run(row, specs.get(row.agent), tags)
        client = mlflow.MlflowClient()
        for start in range(0, len(trace_ids), 100):  # MLflow links 100 traces a call
            client.link_traces_to_run(list(trace_ids[start : start + 100]), run.info.run_id)
        return run.info.run_id


def _agent_specs(settings: Mapping[str, Any]) -> dict[str, str]:
    """Agent name -> the spec it was made from, where the settings tell it.

    ``settings["agents"]`` lists the agents in the order of ``settings["agent_specs"]``
    (then the baselines and ensembles added to them, whose specs are not stored).
    """
    names = settings.get("agents") or []
    specs = settings.get("agent_specs") or []
    return {str(n): str(s) for n, s in zip(names, specs, strict=False)}


def _finite_number(value: Any) -> bool:
    """A real number MLflow can chart (numpy's too); not a bool, NaN or infinity."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _log_agent_run(row: Any, spec: str | None, parent_tags: Mapping[str, str]) -> None:
    """One agent as a run nested in the evaluation's: the same metric keys for every agent,
    so MLflow's compare and chart views put agents side by side; the representative seed's
    NAV as a step metric (step = mark index) so the chart view overlays their curves."""
    import mlflow

    with mlflow.start_run(run_name=row.agent, nested=True) as run:
        tags = {k: v for k, v in parent_tags.items() if k != "kind"}
        mlflow.set_tags({**tags, "marketarena.role": "agent", "agent": row.agent})
        params = {"agent": row.agent, "seeds": ",".join(str(s) for s in row.seeds)}
        if spec is not None:
            params["agent_spec"] = spec
        mlflow.log_params(flatten(params))
        values = row.as_dict()
        mlflow.log_metrics(
            {
                metric_key(key): float(value)
                for key, value in values.items()
                if _finite_number(value)
            }
        )
        nav = getattr(row.representative, "nav", None)
        if nav is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            curve = [
                Metric("equity", float(v), now, step)
                for step, v in enumerate(nav)
                if math.isfinite(float(v))
            ]
            client = mlflow.MlflowClient()
            for start in range(0, len(curve), 1000):  # MLflow takes 1000 metrics a batch
                client.log_batch(run.info.run_id, metrics=curve[start : start + 1000])
