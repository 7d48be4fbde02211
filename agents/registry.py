"""Agents from short specs, for the command line: ``equal_weight:21``, ``model.zip``, ...

A spec is one of:

* a baseline name, optionally with its rebalancing period: ``buy_and_hold``,
  ``equal_weight`` (monthly, 21 steps), ``equal_weight:5``, ``random``, ``random:21``,
  ``cash``;
* a diagnostic task's rules (:mod:`marketarena.envs.tasks`): ``signal:<Task>`` follows the
  task's planted signal, ``reference:<Task>`` / ``baseline:<Task>`` are the agents scoring 1
  and 0 on it (``reference:Momentum``);
* a path to a saved stable-baselines3 model (``.zip``), optionally prefixed with the algorithm
  (``ppo:runs/x/best/model.zip``), or a model folder written by ``marketarena train``;
* an MLflow model URI: ``runs:/<run_id>/model`` or ``models:/<name>/<version>``;
* an LLM: ``llm:<model>`` on the endpoint in ``llm_options["base_url"]`` (or
  ``OPENAI_BASE_URL``), or ``llm:local`` for the bundled local model (the caller starts the
  server: see :class:`~marketarena.agents.llm_server.LocalLLMServer`);
* an LLM that calls tools: ``llm-tools:<model>`` (or ``llm-tools:local``), the same options
  and its budgets (:data:`~marketarena.agents.llm_tool_agent.TOOL_OPTIONS`, which ``llm:``
  agents ignore; see :mod:`~marketarena.agents.llm_tool_agent`);
* an LLM team: ``team:<path.yaml>`` (:mod:`~marketarena.agents.llm_team`), with the
  ``llm_options`` it takes (``base_url``, ``cache_path``, ...);
* a rule over indicators and features: ``rule:"rsi_14 < 30"`` holds equal weights in the
  symbols where it is true, cash where it is true for none
  (:class:`~marketarena.agents.rule_agent.RuleAgent`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marketarena.agents.base import Agent
from marketarena.agents.baselines import BuyAndHoldAgent, EqualWeightAgent, RandomAgent
from marketarena.agents.reference import CashAgent, SignalAgent
from marketarena.agents.rule_agent import RuleAgent
from marketarena.agents.sb3_agent import ALGORITHMS, SB3Agent
from marketarena.envs.errors import ConfigError, MissingFileError
from marketarena.envs.tasks import get_task

SPEC_HELP = (
    "buy_and_hold, equal_weight[:N], random[:N] (N = steps between rebalances), cash, "
    "signal:<Task>, reference:<Task> or baseline:<Task> (a diagnostic task), a saved "
    f"SB3 model ([{'|'.join(ALGORITHMS)}:]path/to/model.zip or a trained model folder), or an "
    "MLflow model (runs:/<run_id>/model, models:/<name>/<version>), or an LLM: llm:<model> "
    "(with --base-url) or llm:local (the bundled local model), an LLM calling tools: "
    "llm-tools:<model> or llm-tools:local, an LLM team: team:<path.yaml>, "
    "or a rule over indicators: "
    'rule:"rsi_14 < 30" (equal weight where true, cash otherwise)'
)


def make_agent(
    spec: str, tracking_uri: str | None = None, llm_options: Mapping[str, Any] | None = None
) -> Agent:
    """Build the agent a spec names; an unknown spec is a
    :class:`~marketarena.envs.errors.ConfigError` (a ``ValueError``) listing the forms.

    ``tracking_uri``: where ``runs:/`` and ``models:/`` URIs are looked up.
    ``llm_options``: :class:`~marketarena.agents.llm_agent.LLMConfig` fields for LLM specs.
    """
    spec = spec.strip()
    if spec.startswith("llm:"):
        from marketarena.agents.llm_agent import LLMAgent, LLMConfig

        model = spec.removeprefix("llm:")
        if not model:
            raise ConfigError(f"agent {spec!r}: name the model, e.g. llm:gpt-4o-mini or llm:local")
        from marketarena.agents.llm_tool_agent import TOOL_OPTIONS

        # one options mapping serves llm: and llm-tools: agents side by side
        options = {k: v for k, v in (llm_options or {}).items() if k not in TOOL_OPTIONS}
        if model == "local":
            from marketarena.agents.llm_server import DEFAULT_MODEL_NAME

            model = DEFAULT_MODEL_NAME
            if not options.get("base_url"):
                raise ConfigError("llm:local needs the local server's base_url (start it first)")
        return LLMAgent(LLMConfig(model=model, **options))
    if spec.startswith("llm-tools:"):
        from marketarena.agents.llm_tool_agent import LLMToolAgent, LLMToolConfig

        model = spec.removeprefix("llm-tools:")
        if not model:
            raise ConfigError(f"agent {spec!r}: name the model, e.g. llm-tools:gpt-4o-mini")
        options = dict(llm_options or {})
        if model == "local":
            from marketarena.agents.llm_server import DEFAULT_MODEL_NAME

            model = DEFAULT_MODEL_NAME
            if not options.get("base_url"):
                raise ConfigError("llm-tools:local needs the local server's base_url")
        return LLMToolAgent(LLMToolConfig(model=model, **options))
    if spec.startswith("team:"):
        from marketarena.agents.llm_team import TeamAgent

        return TeamAgent.from_file(spec.removeprefix("team:"), llm_options)
    if spec.startswith("rule:"):
        rule = spec.removeprefix("rule:").strip()
        if len(rule) >= 2 and rule[0] == rule[-1] and rule[0] in "'\"":
            rule = rule[1:-1]  # rule:"rsi_14 < 30", quoted for the shell or YAML
        return RuleAgent(rule)
    if spec.startswith(("runs:/", "models:/")):
        return _mlflow_agent(spec, tracking_uri)
    if Path(spec).is_dir():
        return SB3Agent.from_file(spec)
    kind, _, arg = spec.partition(":")
    if kind == "buy_and_hold" and not arg:
        return BuyAndHoldAgent()
    if kind == "cash" and not arg:
        return CashAgent()
    if kind in ("signal", "reference", "baseline"):
        if not arg:
            raise ConfigError(f"agent {spec!r}: name the task, e.g. {kind}:Momentum")
        task = get_task(arg)  # an unknown task lists the tasks
        if kind == "signal":
            return SignalAgent(task.name)
        agent = make_agent(task.reference if kind == "reference" else task.baseline)
        agent.name = f"{kind}:{task.name}"
        return agent
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
            raise MissingFileError(f"agent {spec!r}: no saved model at {spec}")
        return SB3Agent.from_file(spec)
    raise ConfigError(f"unknown agent {spec!r}; use {SPEC_HELP}")


def _positive_int(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"agent {spec!r}: {text!r} is not a whole number of steps") from None
    if value < 1:
        raise ConfigError(f"agent {spec!r}: the rebalancing period must be >= 1")
    return value


def _mlflow_agent(uri: str, tracking_uri: str | None) -> Agent:
    import contextlib

    import mlflow
    from mlflow.exceptions import MlflowException

    # MLflow 3 resolves runs:/<id>/model (a logged model) and models:/ through the global
    # tracking URI, whatever tracking_uri says: point it at the store for the download
    store: contextlib.AbstractContextManager[None]
    if tracking_uri:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        store = _use_tracking_uri(tracking_uri)
    else:
        store = contextlib.nullcontext()
    try:
        with store:
            local = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
            )
    except MlflowException as exc:
        raise ConfigError(f"agent {uri!r}: MLflow could not find it: {exc.message}") from None
    models = sorted(local.rglob("model.zip"))
    if not models:
        raise ConfigError(f"agent {uri!r}: no model.zip in the MLflow artifacts at {local}")
    agent = SB3Agent.from_file(models[0])
    # runs:/<id>/model -> ppo:name@run:1a2b3c4d; models:/name/3 -> ppo:name@models:/name/3
    parts = uri.split("/")
    where = f"run:{parts[1][:8]}" if uri.startswith("runs:/") else uri
    agent.name = f"{agent.name}@{where}"
    return agent
