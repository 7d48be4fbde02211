"""LLM agent teams: roles in a YAML graph that talk in structured messages and decide together.

A team (``team:<path.yaml>`` as an agent spec) is a TradingAgents-style division of one
decision: analysts read the market, researchers debate for N rounds, a trader proposes, a risk
manager signs off. Each role is a model (its own endpoint and model name), a prompt template,
a subset of the toolbox's tools and a budget; edges (``reads``) say whose messages a role gets.

The YAML (``configs/teams/tradingagents.yaml`` is a full example)::

    name: two-analysts               # default: the file's stem
    model: {model: smollm2}          # defaults for every role (see ModelSettings)
    lookback: 20                     # sessions of returns in every role's market table
    decide_every: 1                  # steps between decisions (holds in between)
    roles:
      market:   {prompt: "You read trends. ...", tools: [get_prices, get_indicator]}
      news:     {prompt_file: prompts/news.txt}      # relative to the YAML file
      bull:     {prompt: "...", reads: [market, news]}
      bear:     {prompt: "...", reads: [market, news]}
      trader:   {prompt: "...", reads: [bull, bear], on_failure: hold}
      risk:     {prompt: "...", reads: [trader], budget: {tokens: 4000, seconds: 30}}
    debates:
      - {roles: [bull, bear], rounds: 2}
    final: risk
    news: news.csv                   # optional, relative to the YAML: the get_news tool

Timing: a decision is made after the close of bar t from the env's point-in-time snapshot
(``info["snapshot"]``, data with index <= t) and the tools' point-in-time view; the weights fill
at the next bar (the env's execution rule). Every role sees only that.

One decision, in order:

1. Roles run in the graph's topological order (ties in the YAML's order). A debate is one step
   of that order: for ``rounds`` rounds each of its roles speaks in its listed order, reading the
   whole debate so far (its own earlier turns included) besides the roles it ``reads``.
2. A role's request: the system message is its prompt template (any field of
   :data:`~marketarena.agents.llm_prompt.TEMPLATE_FIELDS`, and ``role``, ``round``, ``rounds``)
   followed by the answer format; the user message is the market view
   (``agents/prompts/team_user.txt``) followed by the messages it reads, oldest first.
3. A role answers one JSON object, parsed into a :class:`TeamMessage`: ``content`` (its
   message to the team), optional ``weights`` (proposed target weights, repaired by the LLM
   agent's policy) and ``confidence``.
4. The final role's ``weights`` are the target weights, under the repair policy of
   :mod:`~marketarena.agents.llm_agent` (an unusable answer holds the current weights).

A role with ``tools`` (any of :data:`ROLE_TOOLS`) runs the tool loop of
:mod:`~marketarena.agents.llm_tool_agent` instead of one request, on a
:class:`~marketarena.agents.llm_tools.Toolbox` of the decision (cut at its close) offering its
tools and ``set_target_weights``, which ends the turn: its weights (validated by the tool) are
the role's proposal, or the team's target weights for the final role, and the last text the model
wrote is its message. The loop's budgets are the role's (``tool_calls``, ``tokens``, ``seconds``).

Budgets (per turn: a debate role has one turn a round): ``tool_calls`` (for roles with tools),
``tokens`` (prompt + completion over the turn) and ``seconds`` (the turn's wall clock; a request
is cut off there). A role that fails (a transport error after retries, an answer that is not a
message, a budget run out) takes its fallback, recorded on the decision: ``on_failure: skip``
(the default) leaves its message out (its readers are told it sent none, and why); ``hold``
ends the decision holding the current weights. The final role always holds when it fails.

Model settings resolve as: :class:`~marketarena.agents.llm_agent.LLMConfig`'s defaults < the
team's ``model`` < the caller's options (``--base-url`` and the like) < the role's own ``model``.
Every model turn goes through one :class:`~marketarena.agents.llm_cache.LLMCache`, so a rerun
replays the team exactly (``cache_mode="read_only"``: offline, no server). Tokens, cost and
latency are counted per role; the transcript of every decision (every turn's request and
answer, tool calls, and the messages) is kept in :meth:`TeamAgent.diagnostics`, so a
persisted run stores it with its decisions and the report shows it. A saved state carries
the team's hash: a run whose YAML changed since is refused on resume or continue.

Ablation (:meth:`TeamSpec.without`): removing a role rewires every role that read it to read
the removed role's own inputs instead (so the trader that read the bull and the bear reads
the analysts when both researchers are gone); a removed debater leaves the others debating. The
final role cannot be removed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import string
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from marketarena.agents.base import Resumable, hold, snapshot_of
from marketarena.agents.llm_agent import TRANSIENT, LLMAgent, LLMConfig, parse_answer
from marketarena.agents.llm_cache import LLMCache
from marketarena.agents.llm_prompt import (
    TEMPLATE_FIELDS,
    PromptBuilder,
    PromptSettings,
    read_template,
)
from marketarena.agents.llm_tool_agent import LLMToolAgent, LLMToolConfig, ToolDecision
from marketarena.agents.llm_tools import ACTION_TOOL, TOOLS, Toolbox
from marketarena.agents.llm_tracing import record_team_decision
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, MissingFileError
from marketarena.envs.news import NewsEvents, load_news

#: tools a role may list (``set_target_weights``, which ends a tool role's turn, comes with any)
ROLE_TOOLS = tuple(t.name for t in TOOLS if t.name != ACTION_TOOL)
#: fields a role's prompt template may use besides the market prompt's
ROLE_FIELDS = ("role", "round", "rounds")
#: the caller's options a team takes (CLI flags such as --base-url); they override the team's
#: ``model`` defaults, not a role's own settings
TEAM_OPTIONS = ("base_url", "api_key_env", "cache_path", "cache_mode", "prices", "timeout")
OnFailure = Literal["skip", "hold"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Strict):
    """A role's model; every field left out is inherited (module docstring)."""

    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    timeout: float | None = Field(None, gt=0)
    max_retries: int | None = Field(None, ge=0)
    #: USD per million (prompt, completion) tokens, for the cost columns
    price: tuple[float, float] | None = None

    def over(self, base: ModelSettings) -> ModelSettings:
        """These settings with ``base``'s where these leave a field out."""
        mine = self.model_dump(exclude_none=True)
        return ModelSettings(**{**base.model_dump(exclude_none=True), **mine})


class RoleBudget(_Strict):
    """What one turn of a role may spend (defaults: 8 tool calls, 8,000 tokens, 120 s)."""

    tool_calls: int = Field(8, ge=0)
    tokens: int = Field(8000, ge=1)
    seconds: float = Field(120.0, gt=0)


class RoleSpec(_Strict):
    """One role: a prompt (inline or a file), whose messages it reads, tools, model, budget."""

    prompt: str | None = None
    prompt_file: str | None = None
    reads: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    model: ModelSettings = ModelSettings()
    budget: RoleBudget = RoleBudget()
    on_failure: OnFailure | None = None  # None: skip, or hold for the final role

    @model_validator(mode="after")
    def _one_prompt(self) -> RoleSpec:
        if (self.prompt is None) == (self.prompt_file is None):
            raise ValueError("give exactly one of prompt and prompt_file")
        return self


class DebateSpec(_Strict):
    """Roles that speak in turn for ``rounds`` rounds, each reading the whole debate."""

    roles: tuple[str, ...] = Field(min_length=1)
    rounds: int = Field(2, ge=1)


class TeamSpec(_Strict):
    """A validated team (see the module docstring for the YAML)."""

    name: str
    model: ModelSettings = ModelSettings()
    lookback: int = Field(20, ge=2)
    decide_every: int = Field(1, ge=1)
    roles: dict[str, RoleSpec] = Field(min_length=1)
    debates: tuple[DebateSpec, ...] = ()
    final: str
    #: a news file (:mod:`marketarena.envs.news`) for the ``get_news`` tool, relative to the YAML
    news: str | None = None

    @model_validator(mode="after")
    def _graph(self) -> TeamSpec:
        roles = self.roles
        for name, role in roles.items():
            for tool in role.tools:
                if tool not in ROLE_TOOLS:
                    raise ValueError(f"roles.{name}.tools: unknown tool {tool!r}; use {ROLE_TOOLS}")
                if tool == "get_news" and self.news is None:
                    raise ValueError(f"roles.{name}.tools: get_news needs the team's news file")
            if role.tools and role.budget.tool_calls < 1:
                raise ValueError(f"roles.{name}.budget.tool_calls: a role with tools needs >= 1")
        if self.final not in roles:
            raise ValueError(f"final: {self.final!r} is not a role ({list(roles)})")
        for name, role in roles.items():
            for r in role.reads:
                if r not in roles:
                    raise ValueError(f"roles.{name}.reads: {r!r} is not a role ({list(roles)})")
                if r == name:
                    raise ValueError(f"roles.{name}.reads: a role cannot read itself")
        seen: dict[str, int] = {}
        for i, debate in enumerate(self.debates):
            for r in debate.roles:
                if r not in roles:
                    raise ValueError(f"debates[{i}].roles: {r!r} is not a role ({list(roles)})")
                if r in seen:
                    raise ValueError(f"debates[{i}].roles: {r!r} is already in debates[{seen[r]}]")
                seen[r] = i
        if self.final in seen:
            raise ValueError(f"final: {self.final!r} debates; the final role must answer alone")
        if roles[self.final].on_failure == "skip":
            raise ValueError(
                f"roles.{self.final}.on_failure: the final role cannot be skipped (it holds)"
            )
        self.stages()  # refuses cycles
        needed = self._upstream(self.final)
        unused = [r for r in roles if r not in needed]
        if unused:
            raise ValueError(
                f"roles {unused}: no path to the final role {self.final!r} reads their messages"
            )
        return self

    def debate_of(self, role: str) -> DebateSpec | None:
        return next((d for d in self.debates if role in d.roles), None)

    def stages(self) -> list[tuple[str, ...]]:
        """The order one decision runs in: single roles and debates (as their roles), each
        after every stage it reads; ties in the YAML's order. A cycle is a ValueError."""
        order = list(self.roles)
        stage_of = {r: (self.debate_of(r) or DebateSpec(roles=(r,), rounds=1)).roles for r in order}
        stages = list(dict.fromkeys(stage_of[r] for r in order))
        after = {s: {stage_of[src] for r in s for src in self.roles[r].reads} - {s} for s in stages}
        done: list[tuple[str, ...]] = []
        while len(done) < len(stages):
            ready = [s for s in stages if s not in done and after[s] <= set(done)]
            if not ready:
                stuck = sorted({r for s in stages if s not in done for r in s})
                raise ValueError(f"roles {stuck} read each other in a cycle (use a debate)")
            done.append(ready[0])
        return done

    def reads(self, role: str) -> tuple[str, ...]:
        """Whose messages ``role`` gets: the roles it reads and its debate's roles."""
        debate = self.debate_of(role)
        return tuple(dict.fromkeys([*self.roles[role].reads, *(debate.roles if debate else ())]))

    def _upstream(self, role: str) -> set[str]:
        seen, todo = {role}, [role]
        while todo:
            for r in self.reads(todo.pop()):
                if r not in seen:
                    seen.add(r)
                    todo.append(r)
        return seen

    def without(self, removed: Sequence[str]) -> TeamSpec:
        """The team with ``removed`` roles taken out; each reader of a removed role reads that
        role's inputs instead (module docstring). The final role cannot be removed."""
        roles = {name: dict(role) for name, role in self.roles.items()}
        for gone in removed:
            if gone not in roles:
                raise ConfigError(f"team {self.name}: no role {gone!r} to remove ({list(roles)})")
            if gone == self.final:
                raise ConfigError(f"team {self.name}: the final role {gone!r} cannot be removed")
            inputs = roles.pop(gone)["reads"]
            for name, role in roles.items():
                if gone in role["reads"]:
                    rewired = [r for r in role["reads"] if r != gone] + [
                        r for r in inputs if r != name
                    ]
                    role["reads"] = tuple(dict.fromkeys(rewired))
        debates = [
            DebateSpec(roles=tuple(r for r in d.roles if r in roles), rounds=d.rounds)
            for d in self.debates
            if any(r in roles for r in d.roles)
        ]
        suffix = "".join(f"-{r}" for r in removed)
        return TeamSpec(
            name=f"{self.name}{suffix}",
            model=self.model,
            lookback=self.lookback,
            decide_every=self.decide_every,
            roles={n: RoleSpec(**r) for n, r in roles.items()},
            debates=tuple(debates),
            final=self.final,
            news=self.news,
        )


class TeamMessage(_Strict):
    """What a role says to the team: ``weights`` are proposed target weights by symbol (and
    CASH), after the repair policy; ``round`` counts from 1 (debates have several)."""

    role: str
    round: int
    content: str
    weights: dict[str, float] | None = None
    confidence: float | None = None

    def render(self, rounds: int) -> str:
        head = self.role if rounds == 1 else f"{self.role}, round {self.round}"
        extra = []
        if self.weights:
            extra.append(
                "proposed weights " + ", ".join(f"{k} {v:.1%}" for k, v in self.weights.items())
            )
        if self.confidence is not None:
            extra.append(f"confidence {self.confidence:.2f}")
        tail = f" ({'; '.join(extra)})" if extra else ""
        return f"[{head}] {self.content}{tail}"


# ------------------------------------------------------------------------ loading
def load_team(path: str | Path) -> TeamSpec:
    """A team from its YAML file; any mistake is a ConfigError naming the file and the key
    (a missing file: MissingFileError). Prompt files are read relative to the YAML file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"team file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a team is a mapping with roles and final")
    raw.setdefault("name", path.stem)
    for name, role in (
        (raw.get("roles") or {}).items() if isinstance(raw.get("roles"), dict) else ()
    ):
        if isinstance(role, dict) and role.get("prompt_file") and "prompt" not in role:
            prompt = path.parent / str(role["prompt_file"])
            if not prompt.is_file():
                raise ConfigError(f"{path}: roles.{name}.prompt_file: no file {prompt}")
            role["prompt"], role["prompt_file"] = prompt.read_text(), None
    if isinstance(raw.get("news"), str):
        raw["news"] = str(path.parent / raw["news"])
    try:
        spec = TeamSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from None
    for name, role in spec.roles.items():
        _check_template(role.prompt or "", f"{path}: roles.{name}.prompt")
    return spec


def _first_error(exc: ValidationError) -> str:
    """One line: where (``roles.bull.budget.tokens``) and what (pydantic's message)."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{where}: {message}" if where else message


def _check_template(template: str, where: str) -> None:
    allowed = (*TEMPLATE_FIELDS, *ROLE_FIELDS)
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(
            f"{where}: not a valid template ({exc}); write {{{{ for a brace"
        ) from None
    unknown = [n for n in names if n.split(".")[0].split("[")[0] not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; available: {list(allowed)}")


# ----------------------------------------------------------------------- the agent
@dataclass
class RoleTurn:
    """One turn of a role in one decision, as the transcript keeps it."""

    role: str
    round: int
    outcome: str  # "ok", "repaired", or why the role failed
    notes: list[str] = field(default_factory=list)
    request: list[dict[str, Any]] = field(default_factory=list)  # the messages sent
    answer: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    message: dict[str, Any] | None = None  # the TeamMessage, or None (failed)
    fallback: str | None = None  # "skip" or "hold" when it failed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


@dataclass
class _Cost:
    """What a turn cost outside the transcript (timings and cache hits vary between runs)."""

    latency: float = 0.0
    cached: int = 0
    requests: int = 0


class TeamAgent(Resumable):
    """A team as an agent (module docstring). ``decisions`` holds a transcript per decision:
    ``{"date", "outcome", "notes", "weights", "turns": [RoleTurn as a dict, ...]}``."""

    #: rebuilt from the spec and the options (a resumed run may reach another endpoint)
    _transient = (
        "spec",
        "options",
        "cache",
        "_callers",
        "_costs",
        "_live",
        "_data",
        "_news",
        "_snapshot",
    )

    def __init__(
        self, spec: TeamSpec, options: Mapping[str, Any] | None = None, name: str | None = None
    ) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - set(TEAM_OPTIONS))
        if unknown:
            raise ConfigError(
                f"team {spec.name}: option(s) {unknown} do not apply to a team; it takes "
                f"{list(TEAM_OPTIONS)} (set the rest per role in the YAML)"
            )
        self.spec = spec
        self.options = options
        #: the team as validated, hashed: saved with the state, checked when it is restored
        self.spec_sha256 = hashlib.sha256(
            json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()
        self.name = name or f"team:{spec.name}"
        self.snapshot_lookback = spec.lookback + 1
        self.cache = LLMCache(
            options.get("cache_path", LLMConfig.cache_path),
            options.get("cache_mode", "read_write"),
        )
        self._callers: dict[str, LLMAgent] = {}
        self._costs: dict[str, _Cost] = {r: _Cost() for r in spec.roles}
        #: (seconds, cached) of each turn of the decision being made, for its trace
        self._live: list[tuple[float, bool]] = []
        self.decisions: list[dict[str, Any]] = []
        self.confidence: float | None = None
        self._builder: PromptBuilder | None = None
        self._step = 0
        self._data: MarketData | None = None
        self._snapshot: Any = None  # the decision being made
        self._news: NewsEvents | None = None if spec.news is None else load_news(spec.news)

    @classmethod
    def from_file(
        cls, path: str | Path, options: Mapping[str, Any] | None = None, without: Sequence[str] = ()
    ) -> TeamAgent:
        """The team of a YAML file (``without``: roles removed, see :meth:`TeamSpec.without`)."""
        spec = load_team(path)
        if without:
            spec = spec.without(without)
        return cls(spec, options, name=f"team:{path}" + "".join(f"-{r}" for r in without))

    # ---------------------------------------------------------------- protocol
    def reset(self, *, seed: int | None = None) -> None:
        self._step = 0
        self.decisions = []
        self.confidence = None
        self._costs = {r: _Cost() for r in self.spec.roles}
        if self._builder is not None:
            self._builder.reset()

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a saved state; a team whose YAML changed since the state was saved would
        not make the decisions its run made, and is refused (ConfigError)."""
        if state.get("spec_sha256") != self.spec_sha256:
            raise ConfigError(
                f"{self.name}: the team's YAML changed since its run was saved (roles, prompts, "
                "models or budgets); restore the file, or start a new run"
            )
        super().set_state(state)
        self._costs = {r: _Cost() for r in self.spec.roles}

    def use_data(self, data: MarketData) -> None:
        """Keep the env's panel for the roles' toolboxes (each cut at its decision's row;
        the runner calls this before the first step)."""
        self._data = data

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        step = self._step
        self._step += 1
        if step % self.spec.decide_every:
            return hold(info)
        snapshot = snapshot_of(self, info)
        builder = self._builder_for(snapshot.symbols)
        fields = builder.fields(snapshot)
        market = read_template(None, "team_user.txt").format(**fields)
        turns: list[RoleTurn] = []
        decision: dict[str, Any] = {
            "date": str(snapshot.date),
            "outcome": "ok",
            "notes": [],
            "weights": None,
            "turns": turns,
        }
        self._live = []
        self._snapshot = snapshot
        weights = self._decide(builder, fields, market, turns, decision)
        self.confidence = decision.pop("confidence", None)
        decision["turns"] = [asdict(t) for t in turns]
        names = [*builder.symbols, "CASH"]
        decision["weights"] = (
            None if weights is None else dict(zip(names, map(float, weights), strict=True))
        )
        self.decisions.append(decision)
        record_team_decision(self, decision, self._live)
        return hold(info) if weights is None else weights

    def _decide(
        self,
        builder: PromptBuilder,
        fields: dict[str, Any],
        market: str,
        turns: list[RoleTurn],
        decision: dict[str, Any],
    ) -> np.ndarray | None:
        posted: list[tuple[str, str]] = []  # (role, line) in the order they were said
        for stage in self.spec.stages():
            rounds = self._rounds(stage[0])
            for k in range(1, rounds + 1):
                for role in stage:
                    turn = self._turn(role, k, rounds, builder, fields, market, posted)
                    turns.append(turn)
                    if role == self.spec.final:
                        return self._final(turn, builder, decision)
                    if turn.message is not None:
                        posted.append((role, TeamMessage(**turn.message).render(rounds)))
                        continue
                    turn.fallback = self.spec.roles[role].on_failure or "skip"
                    if turn.fallback == "hold":
                        decision["outcome"] = "role_failed"
                        decision["notes"].append(f"{role} failed ({turn.outcome}): held")
                        return None
                    decision["notes"].append(f"{role} failed ({turn.outcome}): skipped")
                    head = role if rounds == 1 else f"{role}, round {k}"
                    posted.append((role, f"[{head}] sent no message ({turn.outcome})"))
        raise AssertionError("the final role always runs")  # stages() ends with it

    def _final(
        self, turn: RoleTurn, builder: PromptBuilder, decision: dict[str, Any]
    ) -> np.ndarray | None:
        if turn.answer is None or turn.outcome not in ("ok", "repaired"):
            turn.fallback = "hold"
            decision["outcome"] = turn.outcome
            decision["notes"].append(f"{turn.role} failed ({turn.outcome}): held")
            return None
        parsed = parse_answer(turn.answer, builder)
        decision["outcome"] = parsed.outcome
        decision["notes"] += parsed.notes
        decision["confidence"] = parsed.confidence
        if parsed.weights is None:
            turn.fallback = "hold"
            decision["notes"].append(f"{turn.role}'s answer gave no weights: held")
        return parsed.weights

    # ------------------------------------------------------------------ turns
    def _turn(
        self,
        role: str,
        k: int,
        rounds: int,
        builder: PromptBuilder,
        fields: dict[str, Any],
        market: str,
        posted: list[tuple[str, str]],
    ) -> RoleTurn:
        spec = self.spec.roles[role]
        final = role == self.spec.final
        system = (spec.prompt or "").format(**fields, role=role, round=k, rounds=rounds)
        system += "\n\n" + (_tools_format(final) if spec.tools else _answer_format(builder, final))
        reads = self.spec.reads(role)
        inbox = [line for sender, line in posted if sender in reads]
        user = market
        if inbox:
            user += "\nMessages from your team, oldest first:\n" + "\n".join(inbox)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        turn = RoleTurn(role=role, round=k, outcome="ok", request=messages)
        if spec.tools:
            self._tool_turn(turn, builder, final)
        else:
            self._plain_turn(turn, builder, final)
            if turn.outcome in ("ok", "repaired") and not final:
                self._message(turn, builder)
        return turn

    def _rounds(self, role: str) -> int:
        debate = self.spec.debate_of(role)
        return debate.rounds if debate else 1

    def _plain_turn(self, turn: RoleTurn, builder: PromptBuilder, final: bool) -> None:
        """One cached request, under the role's budget."""
        spec = self.spec.roles[turn.role]
        caller = self._caller(turn.role)
        c = caller.config
        body: dict[str, Any] = {
            "model": c.model,
            "messages": turn.request,
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
            "seed": c.seed,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "target_weights" if final else "team_message",
                    "schema": _schema(builder, final),
                    "strict": final,
                },
            },
        }
        cost = self._costs[turn.role]
        cached = self.cache.get(body)
        if cached is not None and (
            self.cache.mode == "read_only" or cached.get("error") not in TRANSIENT
        ):
            response = cached
            cost.cached += 1
            self._live.append((0.0, True))
        else:
            started = time.perf_counter()
            response = caller._call(body)
            latency = time.perf_counter() - started
            self._live.append((latency, False))
            cost.latency += latency
            cost.requests += 1
            caller._check_endpoint(response)
            if response.get("error") in TRANSIENT:
                self.cache.put_failure(body, response)
            else:
                self.cache.put(body, response)
        turn.prompt_tokens = int(response.get("prompt_tokens", 0))
        turn.completion_tokens = int(response.get("completion_tokens", 0))
        price_in, price_out = self._price(turn.role)
        turn.cost = (turn.prompt_tokens * price_in + turn.completion_tokens * price_out) / 1e6
        if "error" in response:
            turn.outcome = str(response["error"])
            turn.notes.append(str(response.get("detail", "")))
            return
        turn.answer = response.get("text")
        used = turn.prompt_tokens + turn.completion_tokens
        if used > spec.budget.tokens:
            turn.outcome = "over_budget"
            turn.notes.append(f"{used:,} tokens > its budget of {spec.budget.tokens:,}")

    def _tool_turn(self, turn: RoleTurn, builder: PromptBuilder, final: bool) -> None:
        """The tool loop of :mod:`~marketarena.agents.llm_tool_agent` over the role's tools
        (and ``set_target_weights``, which ends it), under the role's budget. Its weights are
        the role's proposal (the final role's: the team's target weights); the last text the
        model wrote is its message."""
        if self._data is None:
            raise ValueError(
                f"{self.name}: role {turn.role} uses tools: give the team the env's data first "
                "(agent.use_data(env.data); run_backtest does this)"
            )
        caller = self._caller(turn.role)
        assert isinstance(caller, LLMToolAgent)
        box = Toolbox(self._data, self._snapshot, news=self._news)
        allowed = {*self.spec.roles[turn.role].tools, ACTION_TOOL}
        box.tools = {n: t for n, t in box.tools.items() if n in allowed}
        result: ToolDecision = caller._loop(box, list(turn.request))
        cost = self._costs[turn.role]
        cost.cached += result.cached
        cost.requests += not result.cached
        cost.latency += 0.0 if result.cached else result.latency
        self._live.append((0.0 if result.cached else result.latency, result.cached))
        turn.prompt_tokens, turn.completion_tokens = result.prompt_tokens, result.completion_tokens
        turn.cost = result.cost
        # the loop's notes end in its own fallback (": hold"); the role's is the team's to say
        turn.notes += [n.removesuffix(": hold") for n in result.notes]
        turn.tool_calls = [
            {"name": c["name"], "arguments": c["arguments"], "result": c["result"]}
            for t in result.transcript
            for c in t["calls"]
        ]
        texts = [t["content"] for t in result.transcript if t.get("content")]
        turn.answer = texts[-1] if texts else None
        if box.action is None:
            turn.outcome = result.outcome
            return
        names = [*builder.symbols, "CASH"]
        weights = {n: float(w) for n, w in zip(names, box.action.weights, strict=True)}
        if final:  # the toolbox has validated the weights: the answer is exactly them
            turn.answer = json.dumps({"weights": weights, "confidence": box.action.confidence})
            return
        turn.message = TeamMessage(
            role=turn.role,
            round=turn.round,
            content=(turn.answer or "").strip(),
            weights={n: w for n, w in weights.items() if w},
            confidence=box.action.confidence,
        ).model_dump()

    def _message(self, turn: RoleTurn, builder: PromptBuilder) -> None:
        """The answer as a :class:`TeamMessage`, or the turn's failure."""
        text = turn.answer
        try:
            doc = json.loads(text) if text and text.strip() else None
        except json.JSONDecodeError as exc:
            turn.outcome, doc = "invalid_json", None
            turn.notes.append(f"not JSON: {exc.msg} at {exc.pos}")
            return
        if doc is None:
            turn.outcome = "empty"
            turn.notes.append("no answer text")
            return
        content = doc.get("content") if isinstance(doc, dict) else None
        if not isinstance(content, str) or not content.strip():
            turn.outcome = "wrong_schema"
            turn.notes.append('no "content" text')
            return
        weights = None
        if isinstance(doc.get("weights"), dict):
            parsed = parse_answer(json.dumps({"weights": doc["weights"]}), builder)
            if parsed.weights is not None:
                names = [*builder.symbols, "CASH"]
                weights = {n: float(w) for n, w in zip(names, parsed.weights, strict=True) if w}
                turn.notes += parsed.notes
        confidence = doc.get("confidence")
        if isinstance(confidence, bool) or not (
            isinstance(confidence, int | float) and 0 <= confidence <= 1
        ):
            confidence = None
        message = TeamMessage(
            role=turn.role,
            round=turn.round,
            content=content.strip(),
            weights=weights,
            confidence=None if confidence is None else float(confidence),
        )
        turn.message = message.model_dump()

    def _caller(self, role: str) -> LLMAgent:
        """The role's client (an :class:`LLMAgent` with the role's model settings, used for
        its requests, retries and deadline; the team's cache is used, not the agent's)."""
        if role not in self._callers:
            settings = self.role_model(role).model_dump(exclude_none=True, exclude={"price"})
            spec = self.spec.roles[role]
            budget = spec.budget
            common = {**settings, "cache_path": None, "name": f"{self.name}/{role}"}
            price = self._price(role)
            if spec.tools:
                caller: LLMAgent = LLMToolAgent(
                    LLMToolConfig(
                        **common,
                        max_tool_calls=budget.tool_calls,
                        max_decision_tokens=budget.tokens,
                        decision_seconds=budget.seconds,
                        prices={str(settings.get("model", LLMConfig.model)): price},
                    )
                )
                caller.cache = self.cache  # every turn in the team's cache
            else:
                caller = LLMAgent(LLMConfig(**common, deadline=budget.seconds))
            self._callers[role] = caller
        return self._callers[role]

    def role_model(self, role: str) -> ModelSettings:
        """The role's model settings, resolved (module docstring)."""
        options = {k: v for k, v in self.options.items() if k in ModelSettings.model_fields}
        base = ModelSettings(**{**self.spec.model.model_dump(exclude_none=True), **options})
        return self.spec.roles[role].model.over(base)

    def _price(self, role: str) -> tuple[float, float]:
        settings = self.role_model(role)
        if settings.price is not None:
            return settings.price
        prices = self.options.get("prices") or {}
        price_in, price_out = prices.get(settings.model or LLMConfig.model, (0.0, 0.0))
        return float(price_in), float(price_out)

    def _builder_for(self, symbols: tuple[str, ...]) -> PromptBuilder:
        if self._builder is None or self._builder.symbols != tuple(symbols):
            self._builder = PromptBuilder(symbols, PromptSettings(lookback=self.spec.lookback))
        return self._builder

    # ----------------------------------------------------------- diagnostics
    def role_totals(self) -> dict[str, dict[str, float]]:
        """Per role over the run: turns, failures, prompt and completion tokens, cost."""
        totals: dict[str, dict[str, float]] = {}
        for role in self.spec.roles:
            turns = [t for d in self.decisions for t in d["turns"] if t["role"] == role]
            totals[role] = {
                "turns": len(turns),
                "failures": sum(t["message"] is None and t["fallback"] is not None for t in turns),
                "prompt_tokens": sum(t["prompt_tokens"] for t in turns),
                "completion_tokens": sum(t["completion_tokens"] for t in turns),
                "cost_usd": sum(t["cost"] for t in turns),
                "tool_calls": sum(len(t["tool_calls"]) for t in turns),
            }
        return totals

    def diagnostics(self) -> dict[str, Any]:
        """The run in the LLM agent's shape (decisions, outcomes, tokens, cost), with the
        tokens and cost per role (``roles``) and every decision's transcript
        (``transcripts``)."""
        d = self.decisions
        outcomes = Counter(x["outcome"] for x in d)
        roles = self.role_totals()
        requests = sum(c.requests for c in self._costs.values())
        latency = sum(c.latency for c in self._costs.values())
        return {
            "model": self.spec.name,
            # the team as it ran, as text (the YAML file may change after the run)
            "team_spec": json.dumps(self.spec.model_dump(mode="json")),
            "decisions": len(d),
            "outcomes": dict(sorted(outcomes.items())),
            "fallbacks": sum(x["weights"] is None for x in d),
            "prompt_tokens": sum(r["prompt_tokens"] for r in roles.values()),
            "completion_tokens": sum(r["completion_tokens"] for r in roles.values()),
            "cost_usd": sum(r["cost_usd"] for r in roles.values()),
            "cached": sum(c.cached for c in self._costs.values()),
            "mean_latency_s": latency / requests if requests else 0.0,
            "roles": roles,
            "transcripts": copy.deepcopy(d),
        }


def _answer_format(builder: PromptBuilder, final: bool) -> str:
    if final:
        return builder.answer_format()
    return (
        'Answer with JSON only: "content" is your message to the team; optionally "weights" '
        "proposes a target weight per symbol and CASH, and\n"
        '"confidence" is a number from 0 to 1.'
    )


def _tools_format(final: bool) -> str:
    if final:
        return (
            "Use the tools as you need, then call set_target_weights with the team's target "
            "weights: that ends the decision."
        )
    return (
        "Use the tools as you need, then write your message to the team and call "
        "set_target_weights with the weights you propose: that ends your turn."
    )


def _schema(builder: PromptBuilder, final: bool) -> dict[str, Any]:
    schema = builder.output_schema()
    if final:
        return schema
    props = schema["properties"]
    return {
        "type": "object",
        "properties": {
            "content": {"type": "string"},
            "weights": props["weights"],
            "confidence": props["confidence"],
        },
        "required": ["content"],
        "additionalProperties": False,
    }


def transcript_markdown(decisions: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    """A team run's transcripts as Markdown lines: a section per decision, a part per turn
    (the request's messages, tool calls, the answer, the outcome and tokens). An ``llm-tools``
    run's log renders here too, through
    :func:`~marketarena.agents.llm_tool_agent.report_transcripts` (its turns carry no tokens
    of their own: the line leaves them out)."""
    for d in decisions:
        weights = d.get("weights")
        yield f"## {d['date']}: {d['outcome']}"
        if d.get("notes"):
            yield "Notes: " + "; ".join(d["notes"])
        for t in d["turns"]:
            yield ""
            tokens = (
                f", {t['prompt_tokens']:,} + {t['completion_tokens']:,} tokens, ${t['cost']:.4f}"
                if "prompt_tokens" in t
                else ""
            )
            yield (
                f"### {t['role']} (round {t['round']}): {t['outcome']}{tokens}"
                + (f", fallback {t['fallback']}" if t["fallback"] else "")
            )
            for m in t["request"]:
                yield f"**{m['role']}**:"
                yield "```"
                yield str(m.get("content"))
                yield "```"
            for call in t["tool_calls"]:
                yield f"- tool `{call.get('name')}`({json.dumps(call.get('arguments'))})"
                yield f"  → {call.get('result')}"
            yield "**answer**:"
            yield "```"
            yield str(t["answer"])
            yield "```"
            if t["notes"]:
                yield "Notes: " + "; ".join(str(n) for n in t["notes"])
        if weights is not None:
            yield ""
            yield "Target weights: " + ", ".join(f"{k} {w:.4f}" for k, w in weights.items())
        yield ""
