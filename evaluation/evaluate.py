"""Compare agents over one date range: what ``marketarena evaluate`` and the demo run."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from marketarena.agents.base import Agent, ExpectsObservation, uses_llm
from marketarena.agents.llm_server import local_model_served
from marketarena.agents.registry import make_agent
from marketarena.envs.data import resolve_data
from marketarena.envs.errors import ConfigError, MissingFileError
from marketarena.envs.macro import with_macro
from marketarena.envs.news import with_news
from marketarena.envs.risk import build_risk
from marketarena.envs.settings import EnvSettings
from marketarena.envs.splits import iso_date
from marketarena.evaluation.allocation import ALLOCATION_METHODS, make_allocator
from marketarena.evaluation.backends import (
    LOCAL,
    Backend,
    Task,
    job_cpus,
    llm_resource,
    run_tasks,
)
from marketarena.evaluation.ensembles import ENSEMBLE_KINDS, make_ensemble
from marketarena.evaluation.regimes import (
    check_kinds,
    evaluation_regimes,
    evaluation_sector_rotation,
)
from marketarena.evaluation.report import EvaluationReport
from marketarena.evaluation.runner import (
    AgentEvaluation,
    BacktestProgress,
    BacktestResult,
    evaluate_agents,
    run_backtest,
)

#: the benchmark used when ``benchmark="auto"``
DEFAULT_BENCHMARKS = {"sp500_20": "sp500_index"}
BASELINES = ("buy_and_hold", "equal_weight")


@dataclass(frozen=True)
class EvaluationConfig:
    """What to compare, where, and how.

    Attributes:
        agents: agent specs (see :data:`marketarena.agents.registry.SPEC_HELP`).
        data: a bundled dataset name or a file path.
        start, end: the date range (inclusive); ``None`` for the data's ends.
        seeds: number of seeds (0, 1, ..., seeds - 1) per agent.
        benchmark: a bundled name or path of a one-column series, ``"auto"`` (the data's
            usual benchmark, if it has one) or ``None``.
        ensembles: ensemble kinds
            (:data:`~marketarena.evaluation.ensembles.ENSEMBLE_KINDS`), each built with
            :func:`~marketarena.evaluation.ensembles.make_ensemble` over all ``agents``.
        allocations: allocation methods
            (:data:`~marketarena.evaluation.allocation.ALLOCATION_METHODS`), each a
            :class:`~marketarena.evaluation.allocation.SleeveAllocator` with a sleeve per
            ``agents`` member (``allocate:<method>`` in results).
        include_baselines: add buy-and-hold and equal weight when not already listed.
        rules: :class:`~marketarena.envs.TradingRules` fields.
        risk: :class:`~marketarena.envs.risk.RiskSettings` fields: the risk rules every
            agent trades under (all off by default).
        window, features: the observation; ``None`` takes them from the trained models
            among the agents (which must agree), else the env's defaults
            (:class:`~marketarena.envs.settings.EnvSettings`).
        universe: symbols to trade (default: all of the data's).
        periods_per_year, risk_free: for the metrics (``risk_free`` annual).
        tracking_uri: the MLflow store ``runs:/`` and ``models:/`` agents come from.
        llm: :class:`~marketarena.agents.llm_agent.LLMConfig` fields for ``llm:`` agents
            (``base_url``, ``cache_path``, ``decide_every``, ...). With ``llm:local`` and no
            ``base_url``, the bundled local model is served for the evaluation's duration,
            with ``server_threads`` inference threads (default: 2 when agents run one at a
            time, ``jobs=1``, since the LLM is then all that computes; else 1).
        jobs: agents backtested in parallel threads (LLM agents wait on their endpoint).
        regimes: regime kinds (:data:`~marketarena.envs.regimes.REGIME_KINDS`: ``trend``,
            ``volatility``, ``hmm``) to split every agent's performance by, detected (with
            their defaults) on the equal-weighted index of the evaluated universe; the report
            then shows the sector rotation too (:mod:`marketarena.evaluation.regimes`).
        news: a news file (:mod:`marketarena.envs.news`): its ``news_count``, ``sentiment``
            and ``event_<kind>`` become feature columns of the data (for ``features``), and
            ``llm:`` agents see its latest ``headlines`` per symbol (``llm.news`` wins).
        macro: a vintage file (:mod:`marketarena.envs.macro`): its ``macro_<series>``
            become market-wide feature columns of the data.
        backend: where the backtests run (:mod:`marketarena.evaluation.backends`): here
            (``jobs`` threads), or on Ray, every (agent, seed) a task of its own with the
            agent built afresh from its spec and the data in the object store once; the
            report is the same, bit for bit, and its settings say where it ran.
    """

    agents: tuple[str, ...]
    data: str = "sp500_20"
    start: str | None = None
    end: str | None = None
    seeds: int = 1
    benchmark: str | None = "auto"
    ensembles: tuple[str, ...] = ()
    allocations: tuple[str, ...] = ()
    include_baselines: bool = True
    rules: dict[str, Any] = field(default_factory=dict)
    risk: dict[str, Any] = field(default_factory=dict)
    window: int | None = None
    features: tuple[str, ...] | None = None
    universe: tuple[str, ...] | None = None
    periods_per_year: int = 252
    risk_free: float = 0.0
    title: str = ""
    tracking_uri: str | None = None
    llm: dict[str, Any] = field(default_factory=dict)
    jobs: int = 1
    regimes: tuple[str, ...] = ()
    news: str | None = None
    macro: str | None = None
    backend: Backend = LOCAL

    def validate(self) -> None:
        self.backend.validate()
        if not self.agents and not self.include_baselines:
            raise ConfigError("no agents to evaluate: give at least one agent")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        unknown = [e for e in self.ensembles if e not in ENSEMBLE_KINDS]
        if unknown:
            raise ConfigError(
                f"unknown ensemble(s) {unknown}; the kinds are: {list(ENSEMBLE_KINDS)}"
            )
        if self.ensembles and len(self.agents) < 2:
            raise ConfigError("an ensemble needs at least two --agent members")
        bad = [m for m in self.allocations if m not in ALLOCATION_METHODS]
        if bad:
            raise ConfigError(
                f"unknown allocation method(s) {bad}; the methods are: {list(ALLOCATION_METHODS)}"
            )
        if self.allocations and len(self.agents) < 2:
            raise ConfigError(
                "an allocator needs at least two strategies: give two or more --agent members"
            )
        check_kinds(self.regimes)
        start = iso_date(self.start, "start") if self.start else None
        end = iso_date(self.end, "end") if self.end else None
        if start and end and start > end:  # ISO strings of real dates: ordered as dates
            raise ConfigError(f"empty date range: start {start} is after end {end}")


#: what an evaluation file (``marketarena evaluate --config``) may set: the
#: :class:`EvaluationConfig` fields, each with what it takes
FILE_FIELDS: dict[str, str] = {
    "agents": "list",
    "data": "str",
    "start": "date",
    "end": "date",
    "seeds": "int",
    "benchmark": "str",
    "ensembles": "list",
    "allocations": "list",
    "include_baselines": "bool",
    "rules": "dict",
    "risk": "dict",
    "window": "int",
    "features": "list",
    "universe": "list",
    "periods_per_year": "int",
    "risk_free": "number",
    "title": "str",
    "llm": "dict",
    "jobs": "int",
    "regimes": "list",
    "news": "str",
    "macro": "str",
}
_KIND_WORDS = {
    "list": "a list of names",
    "str": "a word or path",
    "date": "a date (YYYY-MM-DD)",
    "int": "a whole number",
    "bool": "true or false",
    "dict": "a mapping",
    "number": "a number",
}


def load_evaluation_file(path: str | Path) -> dict[str, Any]:
    """The :class:`EvaluationConfig` fields a YAML file sets (``marketarena evaluate
    --config``), each checked for its kind; a bad file, key or value is a
    :class:`~marketarena.envs.errors.ConfigError` naming the file and the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"evaluation config not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date like 2019-02-30
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    unknown = sorted(set(values) - set(FILE_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {unknown}; valid: {list(FILE_FIELDS)}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind = FILE_FIELDS[key]
        ok = (
            value is None
            or {
                "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
                "str": isinstance(value, str),
                "date": isinstance(value, str | datetime.date),
                "int": isinstance(value, int) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "dict": isinstance(value, dict),
                "number": isinstance(value, int | float) and not isinstance(value, bool),
            }[kind]
        )
        if not ok:
            raise ConfigError(f"{path}: {key}={value!r}: takes {_KIND_WORDS[kind]}")
        if kind == "list" and value is not None:
            value = tuple(value)
        elif kind == "date" and value is not None:
            value = iso_date(str(value), f"{path}: {key}")
        out[key] = value
    if "risk" in out:
        try:
            build_risk(out["risk"])
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return out


#: an LLM run of more requests than this needs an explicit yes (``--yes``)
LLM_REQUESTS_CONFIRM_ABOVE = 1_000
# tokens per request of the default prompt, per symbol and fixed (measured with the bundled
# model on 20 symbols: 773 prompt and 234 completion tokens a decision)
_PROMPT_TOKENS = (180, 30)
_COMPLETION_TOKENS = (0, 12)


@dataclass(frozen=True)
class LLMRequestEstimate:
    """What an LLM agent of an evaluation would ask for: requests (decisions over the date
    range; seeds replay the same prompts from the cache), tokens, and the cost where
    ``llm.prices`` names the model. ``upper_bound``: the requests are the most the agent may
    make (``llm-tools:`` and ``team:`` agents, whose turns a decision depends on the model's
    answers), printed as "up to N"."""

    agent: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    upper_bound: bool = False

    def line(self) -> str:
        cost = (
            "cost unknown (no price for it)"
            if self.cost_usd is None
            else (f"~${self.cost_usd:,.2f}")
        )
        up_to = "up to " if self.upper_bound else ""
        return (
            f"{self.agent}: {up_to}{self.requests:,} LLM requests, "
            f"~{self.prompt_tokens:,} prompt + "
            f"~{self.completion_tokens:,} completion tokens, {cost}"
        )


def llm_request_estimates(config: EvaluationConfig) -> list[LLMRequestEstimate]:
    """An estimate for every LLM agent of ``config`` (none without one), before anything
    runs. Decisions are the sessions from ``start`` to ``end`` (default: the whole data) over
    ``decide_every`` (``llm.decide_every``, or the team YAML's for a ``team:`` agent).

    Requests: one a decision for ``llm:``; at most ``max_tool_calls + 1`` a decision for
    ``llm-tools:`` (``llm.max_tool_calls``, default 12: each turn runs a tool call or counts
    as one, and the last is forced to decide); for ``team:``, one a role turn (a debate role
    has a turn a round) and at most ``budget.tool_calls + 1`` for a role with tools. The last
    two are upper bounds (``upper_bound``). Tokens are the one-prompt agent's per request
    (a rough figure for tool turns, whose conversations grow); the cost needs ``llm.prices``
    for the model (a team's cost is left unknown: its roles may use other models)."""
    specs = [spec for spec in config.agents if uses_llm(spec)]
    if not specs:
        return []
    from marketarena.agents.llm_team import load_team
    from marketarena.agents.llm_tool_agent import LLMToolConfig

    data = resolve_data(config.data)
    if config.universe:
        data = data.select(config.universe)
    first, last = data.date_range_indices(config.start, config.end)
    sessions = max(last - first, 0)
    n = data.n_assets
    per_prompt = _PROMPT_TOKENS[0] + _PROMPT_TOKENS[1] * n
    per_completion = _COMPLETION_TOKENS[0] + _COMPLETION_TOKENS[1] * n
    prices = config.llm.get("prices") or {}
    out = []
    for spec in specs:
        kind, name = spec.split(":", 1)
        every = int(config.llm.get("decide_every", 1))
        per_decision = 1
        if kind == "llm-tools":
            per_decision = int(config.llm.get("max_tool_calls", LLMToolConfig.max_tool_calls)) + 1
        elif kind == "team":
            team = load_team(name)
            every = team.decide_every
            per_decision = sum(
                (debate.rounds if (debate := team.debate_of(role)) else 1)
                * (spec_.budget.tool_calls + 1 if spec_.tools else 1)
                for role, spec_ in team.roles.items()
            )
        requests = -(-sessions // every) * per_decision
        prompt, completion = requests * per_prompt, requests * per_completion
        price = None if kind == "team" else prices.get(name)
        cost = None if price is None else (prompt * price[0] + completion * price[1]) / 1e6
        out.append(
            LLMRequestEstimate(spec, requests, prompt, completion, cost, upper_bound=kind != "llm")
        )
    return out


#: how an evaluation builds one of its agents: ``("agent", spec)``, ``("ensemble", kind)`` or
#: ``("allocate", method)`` (the last two over all of ``config.agents``)
Recipe = tuple[str, str]


def agent_recipes(config: EvaluationConfig) -> list[Recipe]:
    """The evaluation's agents in order: the specs (and the baselines), the ensembles, the
    allocators."""
    specs = list(config.agents)
    if config.include_baselines:
        specs += [b for b in BASELINES if b not in specs]
    return (
        [("agent", s) for s in specs]
        + [("ensemble", k) for k in config.ensembles]
        + [("allocate", m) for m in config.allocations]
    )


def build_agent(config: EvaluationConfig, recipe: Recipe) -> Agent:
    """A fresh agent from its recipe (an ensemble's or allocator's members fresh too: they
    must not share state with the single agents)."""
    uri = config.tracking_uri
    llm = {k: v for k, v in config.llm.items() if k != "server_threads"}
    if config.news is not None:
        llm = {"news": config.news, **llm}
    kind, name = recipe
    if kind == "agent":
        return make_agent(name, uri, llm)
    members = [make_agent(spec, uri, llm) for spec in config.agents]
    if kind == "ensemble":
        return make_ensemble(name, members)
    return make_allocator(name, members)


def build_agents(config: EvaluationConfig) -> list[Agent]:
    return [build_agent(config, recipe) for recipe in agent_recipes(config)]


def recipe_specs(config: EvaluationConfig, recipe: Recipe) -> list[str]:
    """The agent specs a recipe runs: its own, or its members'."""
    kind, name = recipe
    return [name] if kind == "agent" else list(config.agents)


def recipe_resources(config: EvaluationConfig, recipe: Recipe) -> dict[str, float]:
    """A recipe's Ray resources: one request stream of the LLM endpoint when it (or a member)
    is an LLM agent (``llm:``, ``llm-tools:``, ``team:``)."""
    if any(uses_llm(s) for s in recipe_specs(config, recipe)):
        return {llm_resource(config.llm.get("base_url")): 1.0}
    return {}


def observation_settings(
    config: EvaluationConfig, agents: list[Agent]
) -> tuple[int, tuple[str, ...], tuple[str, ...] | None]:
    """Window, features and universe: explicit in ``config``, else what the trained models
    among ``agents`` were trained on (they must agree), else the defaults."""
    trained = [a.observation for a in agents if isinstance(a, ExpectsObservation) and a.observation]
    defaults = EnvSettings()
    values: dict[str, Any] = {}
    for key, given, default in (
        ("window", config.window, defaults.window),
        ("features", config.features, defaults.features),
        ("symbols", config.universe, None),
    ):
        if given is not None:
            values[key] = given
            continue
        wanted = {json.dumps(t[key]) for t in trained if key in t}
        if len(wanted) > 1:
            raise ConfigError(
                f"the trained models expect different {key} {sorted(wanted)}: evaluate them "
                "separately"
            )
        values[key] = json.loads(wanted.pop()) if wanted else default
    universe = tuple(values["symbols"]) if values["symbols"] else None
    return int(values["window"]), tuple(values["features"]), universe


def local_server_threads(config: EvaluationConfig) -> int | None:
    """Inference threads of the local model an evaluation serves (see ``EvaluationConfig``;
    ``None``: :func:`~marketarena.agents.llm_server.local_model_served`'s default)."""
    if config.llm.get("server_threads"):
        return int(config.llm["server_threads"])
    return None if config.jobs == 1 else 1


def evaluate(
    config: EvaluationConfig, progress: BacktestProgress | None = None
) -> EvaluationReport:
    """Backtest every agent of ``config`` for every seed; return the report."""
    config.validate()
    with local_model_served(config.agents, config.llm, local_server_threads(config)) as llm:
        return _evaluate(replace(config, llm=llm), progress)


def _evaluate(config: EvaluationConfig, progress: BacktestProgress | None) -> EvaluationReport:
    data = resolve_data(config.data)  # an unknown name lists the bundled datasets
    benchmark = config.benchmark
    if benchmark == "auto":
        benchmark = DEFAULT_BENCHMARKS.get(data.name)
    agents = build_agents(config)
    window, features, universe = observation_settings(config, agents)
    if universe:
        data = data.select(universe)
    if config.news is not None:
        data = with_news(data, config.news)
    if config.macro is not None:
        data = with_macro(data, config.macro)
    env_settings = EnvSettings.from_dict(
        {"window": window, "features": features, "rules": config.rules, "risk": config.risk}
    )
    spec = {"data": data, "settings": env_settings}
    # before the backtests: a detector whose lookback exceeds the data fails at once
    regimes = evaluation_regimes(config.regimes, data, config.start, config.end)
    seeds = list(range(config.seeds))
    where: dict[str, Any] = {}
    if config.backend.is_ray:
        evaluations, where = _evaluate_on_ray(config, agents, spec, seeds, benchmark, progress)
    else:
        evaluations = evaluate_agents(
            agents,
            spec,
            config.start,
            config.end,
            seeds,
            benchmark=benchmark,
            progress=progress,
            jobs=config.jobs,
        )
    first = evaluations[0].results[0]
    settings = {
        "data": data.manifest(),
        "start": str(first.dates[0]),
        "end": str(first.dates[-1]),
        "requested_start": config.start,
        "requested_end": config.end,
        "seeds": seeds,
        "benchmark": first.benchmark_name,
        "agents": [a.name for a in agents],
        "agent_specs": list(config.agents),
        "ensembles": list(config.ensembles),
        "allocations": list(config.allocations),
        "regimes": list(config.regimes),
        # the env's settings (rules as resolved for the data); the dates are above
        **{k: v for k, v in first.settings.items() if k not in ("data", "start", "end")},
    }
    if where:
        settings["backend"] = where
    title = config.title or f"{data.name}: {settings['start']} to {settings['end']}"
    sectors, sector_note = None, ""
    if config.regimes:
        sectors, sector_note = evaluation_sector_rotation(data, settings["start"], settings["end"])
    return EvaluationReport(
        title=title,
        evaluations=evaluations,
        settings=settings,
        periods_per_year=config.periods_per_year,
        risk_free=config.risk_free,
        regimes=regimes,
        sector_strength=sectors,
        sector_note=sector_note,
    )


def _backtest_job(
    args: tuple[EvaluationConfig, Recipe, int], shared: Mapping[str, Any], report: Any
) -> BacktestResult:
    """One (agent, seed) backtest of a Ray evaluation: the agent built from its recipe, the
    env from the shared spec."""
    config, recipe, seed = args
    agent = build_agent(config, recipe)
    return run_backtest(
        agent,
        shared["spec"],
        config.start,
        config.end,
        seed,
        benchmark=shared["benchmark"],
        progress=partial(report, agent.name, seed),
    )


def _evaluate_on_ray(
    config: EvaluationConfig,
    agents: list[Agent],
    spec: dict[str, Any],
    seeds: list[int],
    benchmark: str | None,
    progress: BacktestProgress | None,
) -> tuple[list[AgentEvaluation], dict[str, Any]]:
    """Every (agent, seed) as a Ray task; the evaluations as the local path builds them."""
    recipes = agent_recipes(config)
    names = [a.name for a in agents]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"agent names must be unique; repeated: {duplicates}")
    bench = resolve_data(benchmark) if isinstance(benchmark, str) else benchmark
    tasks = [
        Task(
            f"{name} (seed {seed})",
            (config, recipe, seed),
            num_cpus=job_cpus(recipe_specs(config, recipe)),
            resources=recipe_resources(config, recipe),
        )
        for name, recipe in zip(names, recipes, strict=True)
        for seed in seeds
    ]
    outcome = run_tasks(
        config.backend,
        _backtest_job,
        tasks,
        {"spec": spec, "benchmark": bench},
        on_report=progress,
    )
    n = len(seeds)
    evaluations = [
        AgentEvaluation(name, outcome.values[i * n : (i + 1) * n]) for i, name in enumerate(names)
    ]
    return evaluations, outcome.summary(config.backend)
