"""Agents from short specs, for the command line: ``equal_weight:21``, ``model.zip``, ...

A spec is one of:

* a baseline name, optionally with its rebalancing period: ``buy_and_hold``,
  ``equal_weight`` (monthly, 21 steps), ``equal_weight:5``, ``random``, ``random:21``;
* a path to a saved stable-baselines3 model (``.zip``), optionally prefixed with the algorithm
  (``ppo:runs/x/best/model.zip``), or a model folder written by ``marketarena train``;
* an MLflow model URI: ``runs:/<run_id>/model`` or ``models:/<name>/<version>``.
"""

from __future__ import annotations

from pathlib import Path

from marketarena.agents.base import Agent
from marketarena.agents.baselines import BuyAndHoldAgent, EqualWeightAgent, RandomAgent
from marketarena.agents.sb3_agent import ALGORITHMS, SB3Agent

SPEC_HELP = (
    "buy_and_hold, equal_weight[:N], random[:N] (N = steps between rebalances), a saved "
    f"SB3 model ([{'|'.join(ALGORITHMS)}:]path/to/model.zip or a trained model folder), or an "
    "MLflow model (runs:/<run_id>/model, models:/<name>/<version>)"
)


def make_agent(spec: str, tracking_uri: str | None = None) -> Agent:
    """Build the agent a spec names; unknown specs raise ``ValueError`` listing the forms.

    ``tracking_uri``: where ``runs:/`` and ``models:/`` URIs are looked up.
    """
    spec = spec.strip()
    if spec.startswith(("runs:/", "models:/")):
        return _mlflow_agent(spec, tracking_uri)
    if Path(spec).is_dir():
        return SB3Agent.from_file(spec)
    kind, _, arg = spec.partition(":")
    if kind == "buy_and_hold" and not arg:
        return BuyAndHoldAgent()
    if kind in ("equal_weight", "random"):
        every = _positive_int(arg, spec) if arg else (21 if kind == "equal_weight" else 1)
        name = spec if arg else kind
        if kind == "equal_weight":
            return EqualWeightAgent(rebalance_every=every, name=name)
        return RandomAgent(rebalance_every=every, name=name)
    if kind in ALGORITHMS and arg:
        return SB3Agent.from_file(arg, kind)
    if spec.endswith(".zip"):
        if not Path(spec).exists():
            raise FileNotFoundError(f"agent {spec!r}: no saved model at {spec}")
        return SB3Agent.from_file(spec)
    raise ValueError(f"unknown agent {spec!r}; use {SPEC_HELP}")


def _positive_int(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"agent {spec!r}: {text!r} is not a whole number of steps") from None
    if value < 1:
        raise ValueError(f"agent {spec!r}: the rebalancing period must be >= 1")
    return value


def _mlflow_agent(uri: str, tracking_uri: str | None) -> Agent:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
        )
    except MlflowException as exc:
        raise ValueError(f"agent {uri!r}: MLflow could not find it: {exc.message}") from None
    models = sorted(local.rglob("model.zip"))
    if not models:
        raise ValueError(f"agent {uri!r}: no model.zip in the MLflow artifacts at {local}")
    agent = SB3Agent.from_file(models[0])
    # runs:/<id>/model -> ppo:name@run:1a2b3c4d; models:/name/3 -> ppo:name@models:/name/3
    parts = uri.split("/")
    where = f"run:{parts[1][:8]}" if uri.startswith("runs:/") else uri
    agent.name = f"{agent.name}@{where}"
    return agent
