"""Tournaments in the arena: agents meet in :class:`~marketarena.envs.arena.ArenaEnv` matches,
and a TrueSkill rating, head-to-head tables and the usual per-agent report come out.

## Seats

Any :class:`~marketarena.agents.Agent` (a baseline, a rule, an LLM, an SB3 model, an ensemble)
takes one seat of an arena and sees exactly what it would see in ``PortfolioEnv``: the
observation cut to ``PortfolioEnv``'s shape (the arena's impact factors and flow, appended at
the end, are dropped), and an ``info`` with ``PortfolioEnv``'s keys (``date``, ``nav``,
``cash``, ``weights``, ``prices``, ``turnover``, ``costs``, ``step``; ``risk`` when risk rules
are on; ``snapshot`` for agents that read one). Prices are the public ones: historical prices
times the permanent impact factors; in a snapshot each bar's open, high, low, close (and raw
close) are scaled by the factors as of that bar's close (1 before the match started). An
agent that reads the whole panel (a rule agent's indicators,
:class:`~marketarena.agents.base.ReadsMarketData`) reads the historical one. No agent ever
sees another seat's decision at the same step: every seat acts on the state after the close
of ``t``, then all orders fill together (the arena's timing; tested). With one seat and zero
impact a seat's NAV path is :func:`~marketarena.evaluation.runner.run_backtest`'s (tested).

## The schedule

One match is one arena episode over one period with one seed, from the period's first
eligible date to its end (as a backtest). The schedule is, in this order: for each period
(as given), for each seed ``0 .. seeds - 1``, for each pairing: with ``format="pairs"`` (the
default) every pair ``(i, j)``, ``i < j`` in the agents' order, ``(0, 1), (0, 2), ..., (1,
2), ...``; with ``format="all"`` one match of every agent. A match's seed seeds the arena's
reset (its noise traders) and every agent in it (``agent.reset(seed=...)``); every match
builds its agents afresh, so a match does not depend on the ones before it.

## Results

Per match and agent: total return (after costs and impact), annualised Sharpe ratio of the
daily returns, turnover (the sum of the steps'), costs (commission and slippage), impact cost
(what the temporary impact of its fills cost it against the undisturbed price) and the rank
by return (0 best; equal returns share a rank and are a draw). The rating is TrueSkill
(``trueskill.TrueSkill()``'s defaults: mu 25, sigma 25/3, beta 25/6, tau 25/300, draw
probability 10%), updated match by match in schedule order from the ranks; ``conservative`` is
``mu - 3 sigma``. Each agent's mean match return carries a percentile bootstrap interval
(matches resampled with replacement, ``bootstrap_resamples`` times, seeded). The head-to-head
table has, for each pair in the agents' order, the matches both played, the first one's wins,
draws and losses against the second, and the mean of its return minus the second's.

## The output folder

``tournament.json`` (the settings: agents, seeds, periods, impact, reward, format, rules, the
data's manifest with its hash, the git SHA it started at), ``matches.jsonl`` (one line per
finished match, in schedule order, each appended in one write and synced, with the git SHA
that played it), ``matches/NNNN/KK_<agent>.json`` (the match's daily results per agent,
``KK`` its place among the agents, written before its line), ``ratings.csv``,
``head_to_head.csv``, ``report.md``, and ``agents/``: the evaluation report over every
agent's matches (:meth:`~marketarena.evaluation.report.EvaluationReport.write`: ``metrics.csv``,
``metrics.json``, daily CSVs, plots, ``report.html``).

## Resume

:func:`run_tournament` into a folder that holds a tournament with the same settings skips its
finished matches (a line in ``matches.jsonl``) and runs the rest; a match killed part-way has
no line and is replayed from its start, and since a match depends on its seed only, the folder
ends as an uninterrupted run's, byte for byte (``elapsed_s`` of each line and the plotly
figures' random element ids in ``agents/report.html`` aside). An LLM agent's replayed match
is the same when its answers come from its request cache (``llm_cache.sqlite`` by default);
without a cache it asks the model again. Settings that differ are refused, naming each.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any, cast

import numpy as np

from marketarena.agents.base import Agent, uses_llm
from marketarena.agents.llm_server import local_model_served
from marketarena.envs.arena import REWARD_MODES, ArenaEnv
from marketarena.envs.data import MarketData, as_dates, resolve_data
from marketarena.envs.data import periods_per_year as data_periods_per_year
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.portfolio_env import MarketSnapshot
from marketarena.envs.settings import EnvSettings, build_impact
from marketarena.envs.splits import iso_date
from marketarena.evaluation import metrics
from marketarena.evaluation.backends import LOCAL, Backend, Task, job_cpus, run_tasks
from marketarena.evaluation.evaluate import (
    EvaluationConfig,
    LLMRequestEstimate,
    Recipe,
    agent_recipes,
    build_agent,
    build_agents,
    observation_settings,
    recipe_resources,
    recipe_specs,
)
from marketarena.evaluation.evaluate import llm_request_estimates as evaluation_estimates
from marketarena.evaluation.report import EvaluationReport, slugify
from marketarena.evaluation.runner import (
    BACKTEST_SETTINGS,
    AgentEvaluation,
    BacktestResult,
    agent_diagnostics,
    give_market_data,
    snapshot_lookback,
)
from marketarena.evaluation.tracking import flatten, git_sha, metric_key, mlflow_run

FORMATS = ("pairs", "all")
#: TrueSkill's parameters: the library's defaults, spelled out (and recorded in the settings)
TRUESKILL = {
    "mu": 25.0,
    "sigma": 25.0 / 3,
    "beta": 25.0 / 6,
    "tau": 25.0 / 300,
    "draw_probability": 0.1,
}
#: settings that may differ between a run and its resume: where an LLM is served, how long
#: requests may take, where the cache is; never what an agent decides
_RESUMABLE_LLM_OPTIONS = frozenset(
    {"base_url", "timeout", "max_retries", "deadline", "cache_path", "cache_mode", "retry_failed"}
)
Period = tuple[str | None, str | None]


@dataclass(frozen=True)
class Tournament:
    """What a tournament plays.

    Attributes:
        agents: agent specs (:data:`~marketarena.agents.registry.SPEC_HELP`); with
            ``ensembles``, at least two competitors in all.
        data: a bundled dataset name, a file path or a :class:`MarketData`.
        periods: date ranges ``(start, end)`` (inclusive, ``YYYY-MM-DD``; None for the
            data's ends); default: the whole data.
        seeds: seeds ``0 .. seeds - 1`` per period and pairing (default 1).
        impact: :class:`~marketarena.envs.settings.ImpactSettings` fields (``eta``, ``beta``,
            ``gamma``, ``window``, ``noise_scale``; default: no impact, no noise traders).
        reward: the arena's ``reward_mode`` (``absolute``, ``relative``, ``rank``); what
            agents are ranked by is their return all the same.
        format: ``pairs`` (default: every pair meets) or ``all`` (every agent in every match).
        ensembles: ensemble kinds, each over all ``agents`` (as ``evaluate --ensemble``).
        rules: :class:`~marketarena.envs.TradingRules` fields for every seat.
        window: the observation window (None: what trained models expect, else the default).
        llm: :class:`~marketarena.agents.llm_agent.LLMConfig` fields for ``llm:`` agents.
        tracking_uri: where ``runs:/`` and ``models:/`` agents come from.
        bootstrap_resamples, ci_level, bootstrap_seed: the mean-return intervals.
        backend: where the matches run (:mod:`marketarena.evaluation.backends`): one after
            the other here, or each a Ray task (its agents built afresh from their specs, the
            data in the object store once, one request stream of an ``llm:`` agent's endpoint
            per match); each match is saved as it finishes, whatever the order, and the
            ratings, head-to-head table and report are the same.
    """

    agents: tuple[str, ...]
    data: str | MarketData = "sp500_20"
    periods: tuple[Period, ...] = ((None, None),)
    seeds: int = 1
    impact: Mapping[str, Any] = field(default_factory=dict)
    reward: str = "absolute"
    format: str = "pairs"
    ensembles: tuple[str, ...] = ()
    rules: Mapping[str, Any] = field(default_factory=dict)
    window: int | None = None
    llm: Mapping[str, Any] = field(default_factory=dict)
    tracking_uri: str | None = None
    bootstrap_resamples: int = 1000
    ci_level: float = 0.95
    bootstrap_seed: int = 0
    backend: Backend = LOCAL

    def validate(self) -> None:
        """Refuse what cannot run, before anything does (a :class:`ConfigError`)."""
        self.backend.validate()
        if len(self.agents) + len(self.ensembles) < 2:
            raise ConfigError(
                f"the arena needs at least two agents, got {len(self.agents)}: "
                "give --agent twice or more"
            )
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if self.format not in FORMATS:
            raise ConfigError(f"format={self.format!r}: choose one of {list(FORMATS)}")
        if self.reward not in REWARD_MODES:
            raise ConfigError(f"reward={self.reward!r}: choose one of {list(REWARD_MODES)}")
        build_impact(dict(self.impact))
        if not self.periods:
            raise ConfigError("give at least one period")
        for start, end in self.periods:
            first = iso_date(start, "period start") if start else None
            last = iso_date(end, "period end") if end else None
            if first and last and first > last:
                raise ConfigError(f"empty period {first}:{last}: the start is after the end")

    def evaluation_config(self) -> EvaluationConfig:
        """The agents as ``evaluate`` builds them (no baselines added)."""
        return EvaluationConfig(
            agents=self.agents,
            ensembles=self.ensembles,
            include_baselines=False,
            rules=dict(self.rules),
            window=self.window,
            tracking_uri=self.tracking_uri,
            llm=dict(self.llm),
        )


def llm_request_estimates(config: Tournament) -> list[LLMRequestEstimate]:
    """What each LLM agent (``llm:``, ``llm-tools:``, ``team:``) of ``config`` would ask for in
    the whole tournament, before anything runs: its requests in each period (as
    :func:`~marketarena.evaluation.evaluate.llm_request_estimates` counts them, upper bounds
    for tool and team agents) times the matches it plays there, in its own seat and as a
    member of every ensemble. An upper bound: a match whose prompts are in the LLM cache asks
    nothing."""
    specs = tuple(spec for spec in config.agents if uses_llm(spec))
    if not specs:
        return []
    competitors = len(config.agents) + len(config.ensembles)
    per_seed = 1 if config.format == "all" else competitors - 1
    plays = config.seeds * per_seed * (1 + len(config.ensembles))
    found: dict[str, list[LLMRequestEstimate]] = {spec: [] for spec in specs}
    for start, end in config.periods:
        # resolve_data takes a MarketData as well as a name or path
        period = EvaluationConfig(
            agents=specs, data=cast(str, config.data), start=start, end=end, llm=dict(config.llm)
        )
        for estimate in evaluation_estimates(period):
            found[estimate.agent].append(estimate)
    out = []
    for spec, per_period in found.items():
        costs = [e.cost_usd for e in per_period]
        out.append(
            LLMRequestEstimate(
                spec,
                plays * sum(e.requests for e in per_period),
                plays * sum(e.prompt_tokens for e in per_period),
                plays * sum(e.completion_tokens for e in per_period),
                None if None in costs else plays * sum(c or 0.0 for c in costs),
                upper_bound=any(e.upper_bound for e in per_period),
            )
        )
    return out


@dataclass(frozen=True)
class Match:
    """One arena episode of the schedule: ``index`` (its place), the requested ``period``,
    the ``seed`` and the competitors' names (in the agents' order)."""

    index: int
    period: Period
    seed: int
    agents: tuple[str, ...]

    def key(self) -> dict[str, Any]:
        return {
            "match": self.index,
            "period": list(self.period),
            "seed": self.seed,
            "agents": list(self.agents),
        }


def schedule(
    agents: Sequence[str], periods: Sequence[Period], seeds: int, fmt: str = "pairs"
) -> list[Match]:
    """The matches in the documented order: periods, then seeds, then pairings."""
    pairings = [tuple(agents)] if fmt == "all" else list(combinations(agents, 2))
    out: list[Match] = []
    for period in periods:
        for seed in range(seeds):
            for pairing in pairings:
                out.append(Match(len(out), period, seed, tuple(pairing)))
    return out


# ------------------------------------------------------------------------ one match
@dataclass
class MatchResult:
    """One match: each seat's :class:`BacktestResult` (in the match's agent order) and its
    impact costs per step."""

    match: Match
    results: list[BacktestResult]
    impact_costs: list[np.ndarray]

    def record(self, elapsed_s: float) -> dict[str, Any]:
        """The match's line of ``matches.jsonl`` (NaN as null)."""
        out = self.match.key()
        first = self.results[0]
        out["dates"] = [str(first.dates[0]), str(first.dates[-1])]
        per: dict[str, dict[str, float | None]] = {
            k: {}
            for k in ("return", "sharpe", "turnover", "costs", "impact_cost", "final_nav", "rank")
        }
        returns = {}
        for res, impact in zip(self.results, self.impact_costs, strict=True):
            ppy = data_periods_per_year(res.dates)
            ret = float(res.nav[-1] / res.nav[0] - 1.0)
            returns[res.agent] = ret
            per["return"][res.agent] = _finite(ret)
            per["sharpe"][res.agent] = _finite(
                float(metrics.sharpe_ratio(res.returns, periods_per_year=ppy))
            )
            per["turnover"][res.agent] = _finite(float(res.turnover.sum()))
            per["costs"][res.agent] = _finite(float(res.costs.sum()))
            per["impact_cost"][res.agent] = _finite(float(impact.sum()))
            per["final_nav"][res.agent] = _finite(float(res.nav[-1]))
        for name, rank in ranks(returns).items():
            per["rank"][name] = rank
        out.update(per)
        out["elapsed_s"] = round(elapsed_s, 3)
        return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def ranks(returns: Mapping[str, float]) -> dict[str, int]:
    """Rank 0 is the best return; an agent's rank is the number of agents with a strictly
    higher return, so equal returns share a rank (a draw). NaN ranks last."""

    def key(v: float) -> float:
        return -math.inf if v != v else v

    return {
        name: sum(key(other) > key(value) for other in returns.values())
        for name, value in returns.items()
    }


#: ``progress(step, total)`` within a match: as it starts (step 0) and after every step
StepProgress = Callable[[int, int], None]


def run_match(
    agents: Sequence[Agent],
    data: MarketData,
    settings: EnvSettings,
    match: Match,
    *,
    reward: str = "absolute",
    impact: Mapping[str, Any] | None = None,
    progress: StepProgress | None = None,
) -> MatchResult:
    """Play one match: ``agents`` (one seat each, in order) in one :class:`ArenaEnv` over
    ``match.period`` from its first eligible date (as a backtest), seeded by ``match.seed``.

    Each agent acts on its seat's :class:`PortfolioEnv`-shaped observation and info (the
    module docstring); the results hold no fills (the arena records none)."""
    n = len(agents)
    env = _arena(n, data, settings, match.period, reward_mode=reward, impact=dict(impact or {}))
    core, sim = env.core, env.sim
    obs_dim = core.obs_dim
    names = env.possible_agents
    observations, infos = env.reset(seed=match.seed)
    lookbacks = []
    for agent in agents:
        agent.reset(seed=match.seed)
        give_market_data(agent, env.data)
        lookbacks.append(snapshot_lookback(agent))
    # the permanent impact factors as of each decision's close, by data row
    factors = {int(sim.t[0]): sim.factor.copy()}
    seats = [_Seat(res_dates=[], nav=[], weights=[]) for _ in agents]
    for i, seat in enumerate(seats):
        seat.mark(infos[names[i]])
    total = int(core.episode_end[0] - sim.t[0] + 1)
    if progress is not None:
        progress(0, total)
    done, step = False, 0
    while not done:
        actions = {}
        for i, agent in enumerate(agents):
            name = names[i]
            info = seat_info(env, i, infos[name], lookbacks[i], factors)
            actions[name] = agent.act(observations[name][:obs_dim], info)
            seats[i].decided = info["date"]
        observations, _, terminated, _, infos = env.step(actions)
        factors[int(sim.t[0])] = sim.factor.copy()
        risk = _risk_info(env)
        for i, seat in enumerate(seats):
            info = infos[names[i]]
            seat.mark(info)
            seat.turnover.append(info["turnover"])
            seat.costs.append(info["costs"])
            seat.impact.append(info["impact_cost"])
            seat.terminated = bool(terminated[names[i]])
            for rule, amount in (risk[i] if risk else {}).items():
                seat.interventions.append(
                    {"date": str(seat.decided), "rule": rule, "amount": amount}
                )
        step += 1
        if progress is not None:
            progress(step, total)
        done = not env.agents
    run_settings = {
        "data": env.data.manifest(),
        **env.settings.to_dict(),
        "rules": env.sim.rules.to_dict(),
        "arena": {"reward": reward, "impact": dict(impact or {}), "match": match.key()},
    }
    results = [
        BacktestResult(
            agent=agent.name,
            data_name=env.data.name,
            symbols=env.data.symbols,
            dates=as_dates(seat.res_dates),
            nav=np.asarray(seat.nav),
            weights=np.vstack(seat.weights),
            turnover=np.asarray(seat.turnover),
            costs=np.asarray(seat.costs),
            seed=match.seed,
            fills_recorded=False,
            terminated=seat.terminated,
            settings=run_settings,
            diagnostics=agent_diagnostics(agent),
            interventions=seat.interventions,
        )
        for agent, seat in zip(agents, seats, strict=True)
    ]
    return MatchResult(match, results, [np.asarray(s.impact) for s in seats])


@dataclass
class _Seat:
    res_dates: list[Any]
    nav: list[float]
    weights: list[np.ndarray]
    turnover: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    impact: list[float] = field(default_factory=list)
    interventions: list[dict[str, Any]] = field(default_factory=list)
    terminated: bool = False
    decided: Any = None

    def mark(self, info: Mapping[str, Any]) -> None:
        self.res_dates.append(info["date"])
        self.nav.append(info["nav"])
        self.weights.append(info["weights"])


def _risk_info(env: ArenaEnv) -> list[dict[str, float]] | None:
    """Per seat, what each risk rule changed in its last decision (``PortfolioEnv``'s
    ``info["risk"]``); None without risk rules."""
    risk = env.core.risk
    if risk is None:
        return None
    return [
        {rule: float(v[i]) for rule, v in risk.last.items() if v[i] > 0}
        for i in range(env.n_agents)
    ]


def seat_info(
    env: ArenaEnv,
    seat: int,
    arena_info: Mapping[str, Any],
    lookback: int | None,
    factors: Mapping[int, np.ndarray],
) -> dict[str, Any]:
    """Seat ``seat``'s info with exactly ``PortfolioEnv``'s keys: the arena's own (its
    ``impact_cost`` dropped), ``risk`` when risk rules are on, and with ``lookback`` a
    ``snapshot`` of public prices (:func:`seat_snapshot`)."""
    keys = ("date", "nav", "cash", "weights", "prices", "turnover", "costs", "step")
    info = {k: arena_info[k] for k in keys}
    risk = _risk_info(env)
    if risk is not None:
        info["risk"] = risk[seat]
    if lookback is not None:
        info["snapshot"] = seat_snapshot(env, seat, lookback, factors)
    return info


def seat_snapshot(
    env: ArenaEnv, seat: int, lookback: int, factors: Mapping[int, np.ndarray]
) -> MarketSnapshot:
    """``PortfolioEnv.market_snapshot`` for one seat, at public prices: the bars of rows
    ``t - lookback + 1 .. t``, each scaled by the permanent impact factors as of that bar's
    close (``factors[row]``; 1 for rows before the match), the seat's own book."""
    sim, d = env.sim, env.data
    t = int(sim.t[0])
    lo = max(0, t - lookback + 1)
    rows = slice(lo, t + 1)
    ones = np.ones(d.n_assets)
    scale = np.vstack([factors.get(r, ones) for r in range(lo, t + 1)])

    def window(values: np.ndarray | None, public: bool = True) -> np.ndarray | None:
        if values is None:
            return None
        out = values[rows].copy()
        return out * scale if public else out

    tradable = sim.tradable()
    return MarketSnapshot(
        date=str(d.dates[t]),
        dates=tuple(str(x) for x in d.dates[rows]),
        symbols=d.symbols,
        close=d.close[rows] * scale,
        open=window(d.open),
        high=window(d.high),
        low=window(d.low),
        volume=window(d.volume, public=False),
        positions=sim.shares[seat].copy(),
        weights=sim.weight[seat],
        cash=float(sim.cash[seat]),
        nav=float(sim.nav[seat]),
        initial_cash=sim.rules.initial_cash,
        rules=sim.rules.to_dict(),
        raw_close=window(d.raw_close),
        listed=window(d.listed, public=False),
        tradable=None if tradable is None else tradable[seat],
        session=t,
    )


# -------------------------------------------------------------------- rating, tables
def rate(records: Sequence[Mapping[str, Any]], agents: Sequence[str]) -> dict[str, Any]:
    """TrueSkill ratings (:data:`TRUESKILL`) after ``records`` (match lines, in order), one
    ``trueskill.Rating`` per agent; each match a free-for-all of its agents by ``rank``."""
    import trueskill

    env = trueskill.TrueSkill(**TRUESKILL)
    ratings = {name: env.create_rating() for name in agents}
    for record in records:
        players = list(record["agents"])
        rated = env.rate(
            [(ratings[p],) for p in players], ranks=[record["rank"][p] for p in players]
        )
        for p, (rating,) in zip(players, rated, strict=True):
            ratings[p] = rating
    return ratings


def ratings_table(
    records: Sequence[Mapping[str, Any]],
    agents: Sequence[str],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per agent, best conservative rating first: ``mu``, ``sigma``,
    ``conservative`` (``mu - 3 sigma``), matches, wins (rank 0), draws (rank 0 shared) and
    losses across its matches, and the mean match return with its bootstrap interval."""
    ratings = rate(records, agents)
    rows = []
    for k, name in enumerate(agents):
        played = [r for r in records if name in r["agents"]]
        rets = np.array([_ret(r, name) for r in played])
        firsts = [r for r in played if r["rank"][name] == 0]
        shared = sum(1 for r in firsts if list(r["rank"].values()).count(0) > 1)
        lo, hi = _bootstrap_mean(rets, resamples, level, [seed, k])
        rating = ratings[name]
        rows.append(
            {
                "agent": name,
                "mu": rating.mu,
                "sigma": rating.sigma,
                "conservative": rating.mu - 3 * rating.sigma,
                "matches": len(played),
                "wins": len(firsts) - shared,
                "draws": shared,
                "losses": len(played) - len(firsts),
                "mean_return": float(np.mean(rets)) if len(rets) else math.nan,
                "mean_return_ci_low": lo,
                "mean_return_ci_high": hi,
            }
        )
    rows.sort(key=lambda r: -r["conservative"])
    return rows


def _bootstrap_mean(
    values: np.ndarray, resamples: int, level: float, seed: Sequence[int]
) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` over ``resamples`` resamples."""
    if len(values) == 0 or not np.isfinite(values).all():
        return math.nan, math.nan
    rng = np.random.default_rng(list(seed))
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def head_to_head(
    records: Sequence[Mapping[str, Any]], agents: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per pair ``(a, b)``, ``a`` before ``b`` in ``agents``: the matches both
    played, ``a``'s wins, draws and losses against ``b`` (by return) and the mean of ``a``'s
    return minus ``b``'s."""
    rows = []
    for a, b in combinations(agents, 2):
        both = [r for r in records if a in r["agents"] and b in r["agents"]]
        diffs = [_ret(r, a) - _ret(r, b) for r in both]
        rows.append(
            {
                "agent": a,
                "opponent": b,
                "matches": len(both),
                "wins": sum(d > 0 for d in diffs),
                "draws": sum(d == 0 for d in diffs),
                "losses": sum(d < 0 for d in diffs),
                "mean_return_difference": float(np.mean(diffs)) if diffs else math.nan,
            }
        )
    return rows


def _ret(record: Mapping[str, Any], name: str) -> float:
    value = record["return"][name]
    return math.nan if value is None else float(value)


# ------------------------------------------------------------------------ the folder
TournamentProgress = Callable[[int, int, Match, int, int], None]
"""``progress(done, total, match, step, steps)``: ``done`` of ``total`` matches finished
(skipped ones included), the match playing and its ``step`` of ``steps``."""


@dataclass
class TournamentResult:
    """What a tournament wrote: its settings, the match lines, the tables, the report."""

    output: Path
    settings: dict[str, Any]
    records: list[dict[str, Any]]
    ratings: list[dict[str, Any]]
    head_to_head: list[dict[str, Any]]
    report: EvaluationReport
    skipped: int


def run_tournament(
    config: Tournament,
    output: str | Path,
    *,
    resume: bool = False,
    progress: TournamentProgress | None = None,
) -> TournamentResult:
    """Play every match of ``config`` not yet in ``output`` and write the folder (the module
    docstring). A folder of another tournament is refused, naming what differs; ``resume``
    requires the folder to hold a started tournament."""
    config.validate()
    with local_model_served(config.agents, config.llm) as llm:
        return _run(replace(config, llm=llm), Path(output), resume, progress)


def _run(
    config: Tournament, out: Path, resume: bool, progress: TournamentProgress | None
) -> TournamentResult:
    data = resolve_data(config.data)
    ev = config.evaluation_config()
    ev.validate()
    agents = build_agents(ev)
    names = [a.name for a in agents]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"agent names must be unique; repeated: {repeated}")
    window, features, universe = observation_settings(ev, agents)
    if universe:
        data = data.select(universe)
    env_settings = EnvSettings.from_dict(
        {"window": window, "features": features, "rules": dict(config.rules)}
    )
    impact = build_impact(dict(config.impact)).to_dict()
    matches = schedule(names, config.periods, config.seeds, config.format)
    settings = {
        "agents": names,
        "agent_specs": list(config.agents),
        "ensembles": list(config.ensembles),
        "periods": [_resolved_period(data, env_settings, p, impact) for p in config.periods],
        "seeds": list(range(config.seeds)),
        "format": config.format,
        "reward": config.reward,
        "impact": impact,
        "env": env_settings.to_dict(),
        "llm": {k: v for k, v in config.llm.items() if k not in _RESUMABLE_LLM_OPTIONS},
        "trueskill": TRUESKILL,
        "bootstrap": {
            "resamples": config.bootstrap_resamples,
            "level": config.ci_level,
            "seed": config.bootstrap_seed,
        },
        "matches": len(matches),
        "data": data.manifest(),
        "git_sha": git_sha(),
    }
    settings, records = _open_folder(out, settings, matches, resume)
    sha = git_sha()
    skipped = len(records)
    done = {r["match"] for r in records}
    pending = [m for m in matches if m.index not in done]
    recipes = dict(zip(names, agent_recipes(ev), strict=True))
    tasks = [
        Task(
            f"match {m.index}: {' vs '.join(m.agents)} (seed {m.seed})",
            ([recipes[n] for n in m.agents], m),
            num_cpus=job_cpus([s for n in m.agents for s in recipe_specs(ev, recipes[n])]),
            resources={
                k: 1.0 for n in m.agents for k in recipe_resources(ev, recipes[n])
            },  # the seats decide in turn: one request stream per match
        )
        for m in pending
    ]

    def save(i: int, played: tuple[MatchResult, float]) -> None:
        """A match as it finishes: its results and its line, so that a resume skips it."""
        result, elapsed = played
        match = result.match
        folder = out / "matches" / f"{match.index:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for res in result.results:
            _write_atomic(result_path(out, match.index, names, res.agent), res)
        record = {**result.record(elapsed), "git_sha": sha}
        _append_line(out / "matches.jsonl", record)
        records.append(record)

    def step(index: int, step: int, steps: int) -> None:
        if progress is not None:
            progress(len(records), len(matches), matches[index], step, steps)

    shared = {
        "data": data,
        "evaluation": ev,
        "settings": env_settings,
        "reward": config.reward,
        "impact": impact,
    }
    outcome = run_tasks(config.backend, _match_job, tasks, shared, on_report=step, on_result=save)
    if config.backend.is_ray:
        settings = {**settings, "backend": outcome.summary(config.backend)}
    if progress is not None and matches:
        progress(len(matches), len(matches), matches[-1], 1, 1)
    records.sort(key=lambda r: r["match"])
    return _write_outputs(config, out, settings, names, matches, records, skipped)


def _match_job(
    args: tuple[list[Recipe], Match], shared: Mapping[str, Any], report: Any
) -> tuple[MatchResult, float]:
    """One match, as :func:`run_tasks` runs it (here or as a Ray task): fresh agents from
    their recipes, the data from ``shared``; its result and the seconds it took."""
    recipes, match = args
    agents = [build_agent(shared["evaluation"], recipe) for recipe in recipes]
    began = time.perf_counter()
    result = run_match(
        agents,
        shared["data"],
        shared["settings"],
        match,
        reward=shared["reward"],
        impact=shared["impact"],
        progress=lambda step, steps: report(match.index, step, steps),
    )
    return result, time.perf_counter() - began


def _arena(
    n: int, data: MarketData, settings: EnvSettings, period: Period, **kwargs: Any
) -> ArenaEnv:
    """An arena of ``n`` seats that runs once over ``period``, as a backtest."""
    start, end = period
    overrides: dict[str, Any] = {**BACKTEST_SETTINGS, "start": start, "end": end, **kwargs}
    return ArenaEnv(n, data, settings, **overrides)


def _resolved_period(
    data: MarketData, settings: EnvSettings, period: Period, impact: Mapping[str, Any]
) -> dict[str, Any]:
    """The requested period and its first and last mark dates; an empty range, or impact
    on data without volume, is refused naming the period."""
    start, end = period
    try:
        env = _arena(2, data, settings, period, impact=dict(impact))
    except (ConfigError, DataError) as exc:
        where = f"{start or 'the data start'}:{end or 'the data end'}"
        raise type(exc)(f"period {where}: {exc}") from None
    core = env.core
    return {
        "start": start,
        "end": end,
        "first_date": str(data.dates[core.first_decision]),
        "last_date": str(data.dates[core.last_decision + 1]),
    }


def _open_folder(
    out: Path, settings: dict[str, Any], matches: Sequence[Match], resume: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tournament's settings as ``out`` holds them (a new folder: ``settings``, written
    there) and its finished matches' lines, after checking that its tournament is this one
    (the git SHA aside: it records where the tournament started; each line has its own); a
    torn last line (a kill mid-write) is cut off."""
    path = out / "tournament.json"
    text = json.dumps(settings, indent=2, default=str) + "\n"
    if not path.exists():
        if resume:
            raise ConfigError(f"--resume: {out} holds no tournament (no tournament.json)")
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return json.loads(text), []
    stored = json.loads(path.read_text())
    given = json.loads(text)
    differ = [
        k
        for k in sorted(set(stored) | set(given))
        if k != "git_sha" and stored.get(k) != given.get(k)
    ]
    if differ:
        what = "; ".join(
            f"{k}: {json.dumps(given.get(k), default=str)[:120]} here, "
            f"{json.dumps(stored.get(k), default=str)[:120]} there"
            for k in differ
        )
        raise ConfigError(
            f"{out} holds another tournament ({what}): use another --out folder or the same "
            "settings"
        )
    lines_path = out / "matches.jsonl"
    if not lines_path.exists():
        return stored, []
    raw = lines_path.read_bytes()
    keep = raw[: raw.rfind(b"\n") + 1]
    if len(keep) != len(raw):
        with lines_path.open("r+b") as fh:
            fh.truncate(len(keep))
    records = [json.loads(line) for line in keep.decode().splitlines() if line.strip()]
    for record in records:
        index = record.get("match")
        if not isinstance(index, int) or not 0 <= index < len(matches):
            raise DataError(f"{lines_path}: a line names match {index!r}, not in the schedule")
        expected = matches[index].key()
        if {k: record.get(k) for k in expected} != expected:
            raise DataError(
                f"{lines_path}: match {index} is {expected} in the schedule, but the line "
                f"says { ({k: record.get(k) for k in expected}) }"
            )
    return stored, records


def result_path(out: Path, match: int, agents: Sequence[str], agent: str) -> Path:
    """Where match ``match``'s result of ``agent`` is saved: ``matches/NNNN/KK_<slug>.json``,
    ``KK`` its place among ``agents`` (two names may share a slug)."""
    k = list(agents).index(agent)
    return out / "matches" / f"{match:04d}" / f"{k:02d}_{slugify(agent)}.json"


def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line in a single write, then sync it to disk."""
    line = (json.dumps(record, allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, result: BacktestResult) -> None:
    tmp = path.with_name(path.name + ".tmp.json")
    result.save(tmp)
    os.replace(tmp, path)


def _write_outputs(
    config: Tournament,
    out: Path,
    settings: dict[str, Any],
    names: Sequence[str],
    matches: Sequence[Match],
    records: list[dict[str, Any]],
    skipped: int,
) -> TournamentResult:
    ratings = ratings_table(
        records,
        names,
        resamples=config.bootstrap_resamples,
        level=config.ci_level,
        seed=config.bootstrap_seed,
    )
    h2h = head_to_head(records, names)
    _write_csv(out / "ratings.csv", ratings)
    _write_csv(out / "head_to_head.csv", h2h)
    # every agent's matches, from the saved files: a resumed run reports what an
    # uninterrupted one does
    evaluations = [
        AgentEvaluation(
            name,
            [
                BacktestResult.load(result_path(out, m.index, names, name))
                for m in matches
                if name in m.agents
            ],
        )
        for name in names
    ]
    data_name = settings["data"]["name"]
    report = EvaluationReport(
        title=f"arena on {data_name}: every agent's matches",
        evaluations=evaluations,
        settings=settings,
    )
    report.write(out / "agents", results=False)
    (out / "report.md").write_text(_markdown(settings, ratings, h2h, len(records)))
    return TournamentResult(out, settings, records, ratings, h2h, report, skipped)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _markdown(
    settings: Mapping[str, Any],
    ratings: Sequence[Mapping[str, Any]],
    h2h: Sequence[Mapping[str, Any]],
    n_matches: int,
) -> str:
    periods = ", ".join(f"{p['first_date']}:{p['last_date']}" for p in settings["periods"])
    impact = ", ".join(f"{k}={v}" for k, v in settings["impact"].items())
    lines = [
        f"# Arena tournament on {settings['data']['name']}",
        "",
        f"{n_matches} matches ({settings['format']}), seeds {settings['seeds']}, periods "
        f"{periods}; reward {settings['reward']}; impact {impact}. Data sha256 "
        f"`{settings['data']['sha256']}`, git `{settings['git_sha']}` (at the start).",
        "",
        "## Ratings (TrueSkill; conservative = mu - 3 sigma)",
        "",
        "| agent | conservative | mu | sigma | matches | W-D-L | mean return [interval] |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ratings:
        lines.append(
            f"| {r['agent']} | {r['conservative']:.2f} | {r['mu']:.2f} | {r['sigma']:.2f} | "
            f"{r['matches']} | {r['wins']}-{r['draws']}-{r['losses']} | "
            f"{_pct(r['mean_return'])} [{_pct(r['mean_return_ci_low'])}, "
            f"{_pct(r['mean_return_ci_high'])}] |"
        )
    lines += [
        "",
        "## Head to head (wins-draws-losses of the first against the second)",
        "",
        "| agent | opponent | matches | W-D-L | mean return difference |",
        "|---|---|---:|---:|---:|",
    ]
    for r in h2h:
        lines.append(
            f"| {r['agent']} | {r['opponent']} | {r['matches']} | "
            f"{r['wins']}-{r['draws']}-{r['losses']} | {_pct(r['mean_return_difference'])} |"
        )
    lines += ["", "Every agent's metrics across its matches: agents/report.html."]
    lines.append("")
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "nan" if value != value else f"{value:+.2%}"


# ------------------------------------------------------------------------- MLflow
def log_tournament(result: TournamentResult, experiment: str = "marketarena-arena") -> str:
    """Log a tournament as one MLflow run: its settings as params, each agent's rating and
    mean return as metrics, the output folder as artifacts (as ``evaluate`` logs)."""
    import mlflow

    settings = result.settings
    tags = {
        "kind": "arena",
        "data": settings["data"]["name"],
        "data_sha256": settings["data"]["sha256"],
    }
    title = f"arena: {' vs '.join(settings['agents'])}"
    with mlflow_run(experiment, title, tags) as run:
        mlflow.log_params(flatten({k: v for k, v in settings.items() if k != "data"}))
        mlflow.log_params(flatten({"data": settings["data"]}))
        for row in result.ratings:
            for key in ("mu", "sigma", "conservative", "mean_return", "wins", "draws", "losses"):
                value = float(row[key])
                if math.isfinite(value):
                    mlflow.log_metric(metric_key("arena", row["agent"], key), value)
        mlflow.log_artifacts(str(result.output), artifact_path="arena")
        return str(run.info.run_id)
