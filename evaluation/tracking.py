"""MLflow tracking shared by evaluation and training.

The default store needs no set-up: a SQLite file ``mlflow.db`` in the working directory
(MLflow 3's own default). ``MLFLOW_TRACKING_URI`` points runs at a tracking server instead.
Only the run's own settings are logged; environment variables never are, so API keys cannot
leak into params or artifacts.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_DB = "mlflow.db"
# artifact transfers print tqdm bars otherwise, into every command's output
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name from parts (``eval/buy_and_hold/sharpe``)."""
    return "/".join(re.sub(r"[^A-Za-z0-9_.\-]+", "_", p).strip("_") for p in parts)


@contextmanager
def mlflow_run(
    experiment: str, run_name: str | None, tags: Mapping[str, str] | None = None, **kwargs: Any
) -> Iterator[Any]:
    """Start an MLflow run on :func:`tracking_uri` (the store is created if needed)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    if kwargs.get("run_id"):  # resuming: the run keeps its name
        run_name = None
    with mlflow.start_run(run_name=run_name, **kwargs) as run:
        mlflow.set_tags({"git_sha": git_sha(), **(tags or {})})
        yield run


def log_evaluation(report: Any, output: Path, experiment: str = "marketarena-evaluation") -> str:
    """Log an :class:`EvaluationReport` (already written to ``output``) as one MLflow run."""
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
        return run.info.run_id
