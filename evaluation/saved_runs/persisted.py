"""Persisted backtests: start, resume after a crash, continue when new data arrives.

``start_backtest`` runs any agent (an agent spec, as for ``marketarena evaluate``) over a
date range through the runner's episode loop
(:func:`~marketarena.evaluation.runner.run_episode`), whose step hook records each completed
day in a :class:`~marketarena.evaluation.saved_runs.store.RunStore` as it goes.
``resume_backtest`` continues a run cut short from its last completed date: the env and the
agent are restored from the checkpoint written with that day, so the result is identical to
an uninterrupted run (an LLM agent's answers come from its cache). When the data grows,
``continue_backtest`` extends a finished run to a later end date without recomputing the days
it has; the data for those days must be unchanged, and ranges that do not extend the run are
refused. A run an MCP client trades (agent ``"mcp"``, ``marketarena mcp serve``) has no agent
here to carry it on: both refuse it, saying what to run instead.

``leaderboard`` ranks finished runs over the same dates; ``load_positions`` reads a run's
holdings, fills, holding periods and turnover back from the store.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marketarena.agents.base import Resumable, ResumableAgent
from marketarena.agents.llm_server import local_model_served
from marketarena.agents.registry import make_agent
from marketarena.envs.data import MarketData, as_dates, resolve_data
from marketarena.envs.data import periods_per_year as data_periods_per_year
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.envs.settings import EnvSettings, build_rules, setting_names
from marketarena.envs.simulator import TradingRules
from marketarena.evaluation import metrics
from marketarena.evaluation.report import EvaluationReport
from marketarena.evaluation.runner import (
    AgentEvaluation,
    BacktestResult,
    agent_diagnostics,
    make_backtest_env,
    run_episode,
    snapshot_lookback,
)
from marketarena.evaluation.saved_runs.store import RunInfo, RunStore

Progress = Callable[[str, float], None]
#: the agent spec of a run whose decisions an MCP client makes (``marketarena mcp serve``,
#: :mod:`marketarena.evaluation.mcp_session`): no agent here can carry it on
DRIVEN_AGENT = "mcp"


def _prefix_hash(data: MarketData, end: str) -> str:
    """Hash of the data up to ``end``: what a run's completed days depend on."""
    return data.slice(None, end).content_hash()


#: LLM options that say how to reach the endpoint, not what the agent decides: a resumed or
#: continued run may change them (a new --base-url after the server moved, a longer timeout)
SESSION_LLM_OPTIONS = (
    "base_url",
    "timeout",
    "max_retries",
    "deadline",
    "retry_failed",
    "cache_path",
    "cache_mode",
    "max_concurrency",
    "max_connection_failures",
)


def with_session_llm(
    run_id: str, spec: Mapping[str, Any], llm: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``spec`` with this session's endpoint options (``llm``) over the stored ones; an option
    that shapes the decisions (model, prompt, cadence) must match the run's."""
    stored = dict(spec.get("llm") or {})
    changed = sorted(
        key
        for key, value in (llm or {}).items()
        if key not in SESSION_LLM_OPTIONS and stored.get(key, value) != value
    )
    if changed:
        raise ConfigError(
            f"run {run_id!r} was made with LLM option(s) "
            f"{ {k: stored.get(k) for k in changed} }: they shape its decisions and cannot "
            f"change when it resumes or continues; only {list(SESSION_LLM_OPTIONS)} can"
        )
    session = {k: v for k, v in (llm or {}).items() if k in SESSION_LLM_OPTIONS}
    return {**spec, "llm": {**stored, **session}}


@contextmanager
def serving(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """``spec`` with an endpoint for its agent: ``llm:local`` gets the bundled model, served
    for the block (a new port each time, so the stored spec never holds one)."""
    with local_model_served((spec["agent"],), spec.get("llm") or {}) as llm:
        yield {**spec, "llm": llm}


def _build(spec: Mapping[str, Any], end: str, data: MarketData | None = None) -> tuple:
    data = data if data is not None else resolve_data(spec["data"])
    if spec.get("universe"):
        data = data.select(spec["universe"])
    agent = build_agent(spec)
    env = make_backtest_env(
        {
            "data": data,
            "settings": spec_settings(spec),
            "snapshot_lookback": snapshot_lookback(agent),
        },
        end=end,
    )
    return data, agent, env


def spec_settings(spec: Mapping[str, Any]) -> EnvSettings:
    """The env settings a run's spec holds (older runs: rules, window and features only)."""
    return EnvSettings.from_dict({k: v for k, v in spec.items() if k in setting_names()})


def build_agent(spec: Mapping[str, Any]) -> ResumableAgent:
    """A run's agent, made from its spec (not reset); :class:`ConfigError` when it cannot be
    persisted."""
    llm = dict(spec.get("llm") or {})
    if spec["agent"].startswith("llm:"):
        # a run stored before prompts had price levels showed adjusted closes; new runs store
        # their levels (start_backtest), so only those older runs take this
        llm.setdefault("price_levels", "adjusted")
    agent = make_agent(spec["agent"], spec.get("tracking_uri"), llm)
    if not isinstance(agent, Resumable):
        raise ConfigError(
            f"agent {spec['agent']!r} cannot be persisted: it has no get_state/set_state "
            "(see marketarena.agents.Resumable)"
        )
    return agent


def run_days(
    store: RunStore,
    run_id: str,
    env: PortfolioEnv,
    agent: ResumableAgent,
    observation: np.ndarray,
    info: Mapping[str, Any],
    step: int,
    progress: Progress | None,
    checkpoint_extra: Mapping[str, Any] | None = None,
) -> None:
    """The runner's episode loop, each completed day recorded with its checkpoint (the env's
    state, with ``checkpoint_extra``'s entries added: a paper run's delivered bars)."""
    total = env.core.last_decision - env.core.first_decision + 1
    decided = [str(info["date"])]  # the date of the decision each recorded day carried out

    def record(step: int, info: Mapping[str, Any]) -> None:
        day = {
            "date": str(info["date"]),
            "nav": info["nav"],
            "cash": info["cash"],
            "turnover": info["turnover"],
            "costs": info["costs"],
            "shares": env.sim.shares[0],
            "weights": info["weights"],
        }
        interventions = [(decided[0], rule, a) for rule, a in info.get("risk", {}).items()]
        store.record_day(
            run_id,
            step,
            day,
            env.sim.last_fills(0),
            {**env.get_state(), **(checkpoint_extra or {})},
            agent.get_state(),
            interventions,
        )
        decided[0] = day["date"]
        if progress is not None:
            progress(day["date"], step / max(total, 1))

    run_episode(agent, env, observation, info, step=step, on_step=record)


def start_backtest(
    store: RunStore,
    run_id: str,
    agent: str,
    data: str,
    start: str,
    end: str,
    *,
    seed: int = 0,
    universe: tuple[str, ...] | None = None,
    llm: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    progress: Progress | None = None,
    settings: EnvSettings | None = None,
    **overrides: Any,
) -> BacktestResult:
    """A new persisted run of ``agent`` (a spec) over ``data`` from ``start`` to ``end``.

    The env: ``settings`` (default: the defaults) with keyword ``overrides`` of its fields
    (``rules``, ``window``, ``features``, ...), run once over the range; the run's spec stores
    every setting, so a resumed or continued run rebuilds the same env.

    Everything that can be checked is checked before the run is created in ``store`` (the
    seed, the name, the agent, the settings, the dates): a refused run leaves no trace.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    store.require_new(run_id)
    chosen = EnvSettings.resolve(settings, overrides).replace(start=start, end=end)
    spec: dict[str, Any] = {
        "agent": agent,
        "data": str(data),
        "seed": seed,
        "universe": list(universe) if universe else None,
        "llm": dict(llm or {}),
        "tracking_uri": tracking_uri,
        **chosen.to_dict(),
    }
    if agent.startswith("llm:"):  # stored, so a resume shows the prices this run showed
        from marketarena.agents.llm_agent import LLMConfig

        spec["llm"].setdefault("price_levels", LLMConfig.price_levels)
    with serving(spec) as served:
        market, built_agent, env = _build(served, end)
        spec.update(env.settings.to_dict())  # as run: one episode over the whole range
        spec["end"] = str(market.dates[env.core.last_decision + 1])
        spec["data_sha256"] = _prefix_hash(market, spec["end"])
        observation, info = env.reset(seed=seed)
        built_agent.reset(seed=seed)
        spec["first_date"] = str(info["date"])  # the first mark: read without the checkpoint
        store.create_run(run_id, spec, market.symbols)
        run_days(store, run_id, env, built_agent, observation, info, 0, progress)
        store.finish(run_id, agent_diagnostics(built_agent))
    return load_result(store, run_id)


def _restore(
    store: RunStore, run_id: str, spec: Mapping[str, Any], end: str, data: MarketData | None = None
) -> tuple:
    market, agent, env = _build(spec, end, data)
    observation, env_info = env.reset(seed=spec["seed"])
    agent.reset(seed=spec["seed"])
    checkpoint = store.checkpoint(run_id)
    step = 0
    if checkpoint is not None:
        step, env_state, agent_state = checkpoint
        observation, env_info = env.set_state(env_state)
        agent.set_state(agent_state)
    return market, agent, env, observation, env_info, step


def resume_backtest(
    store: RunStore,
    run_id: str,
    progress: Progress | None = None,
    *,
    llm: Mapping[str, Any] | None = None,
) -> BacktestResult:
    """Continue an interrupted run from its last completed date to its end; ``llm``: this
    session's endpoint options (:data:`SESSION_LLM_OPTIONS`, e.g. a new ``base_url``), used
    for the rest of the run and not stored."""
    info = store.run(run_id)
    _refuse_paper(info)
    if info.status == "finished":
        return load_result(store, run_id)
    _refuse_driven(info, store, resuming=True)
    with serving(with_session_llm(run_id, info.spec, llm)) as served:
        _, agent, env, observation, env_info, step = _restore(store, run_id, served, served["end"])
        run_days(store, run_id, env, agent, observation, env_info, step, progress)
        store.finish(run_id, agent_diagnostics(agent))
    return load_result(store, run_id)


def continue_backtest(
    store: RunStore,
    run_id: str,
    end: str,
    *,
    data: str | None = None,
    progress: Progress | None = None,
    llm: Mapping[str, Any] | None = None,
) -> BacktestResult:
    """Extend a finished run to ``end`` on (possibly newer) ``data``; ``llm`` as for
    :func:`resume_backtest`."""
    info = store.run(run_id)
    _refuse_paper(info)
    _refuse_driven(info, store, resuming=False)
    spec = dict(info.spec)
    if info.status != "finished":
        raise ConfigError(f"run {run_id!r} did not finish: --resume it before continuing it")
    if str(end) <= spec["end"]:
        raise ConfigError(
            f"continue must extend run {run_id!r} past its end {spec['end']}; {end} does not "
            "(completed days are never recomputed or overwritten)"
        )
    source = data or spec["data"]
    market = resolve_data(source)
    if spec.get("universe"):
        market = market.select(spec["universe"])
    if market.dates[-1] <= np.datetime64(spec["end"]):
        raise DataError(
            f"{market.name} ends on {market.dates[-1]}: no new data after {spec['end']}"
        )
    if _prefix_hash(market, spec["end"]) != spec["data_sha256"]:
        raise DataError(
            f"{market.name} differs from the data run {run_id!r} was computed on, up to "
            f"{spec['end']}: continuing would mix histories"
        )
    with serving(with_session_llm(run_id, spec, llm)) as served:
        _, agent, env, observation, env_info, step = _restore(store, run_id, served, end, market)
        new_end = str(market.dates[env.core.last_decision + 1])
        spec.update(end=new_end, data=str(source), data_sha256=_prefix_hash(market, new_end))
        store.update_spec(run_id, spec, "running")
        run_days(store, run_id, env, agent, observation, env_info, step, progress)
        store.finish(run_id, agent_diagnostics(agent))
    return load_result(store, run_id)


def _refuse_paper(info: RunInfo) -> None:
    """A paper run grows with its feed's bars, which its data source does not hold."""
    if "paper" in info.spec:
        raise ConfigError(
            f"run {info.run_id!r} is a paper run: continue it with marketarena paper --resume "
            f"{info.run_id} --feed ..."
        )


def _refuse_driven(info: RunInfo, store: RunStore, *, resuming: bool) -> None:
    """A run driven over MCP has no agent here to carry it on: say what to run instead."""
    if info.spec.get("agent") != DRIVEN_AGENT:
        return
    if resuming:
        how = (
            f"resume it with marketarena mcp serve --run {shlex.quote(info.run_id)} --store "
            f"{shlex.quote(str(store.path))}"
        )
    else:
        how = "no agent here can extend it; start a new run with marketarena mcp serve"
    raise ConfigError(f"run {info.run_id!r} is traded by an MCP client: {how}")


def load_result(store: RunStore, run_id: str) -> BacktestResult:
    """A :class:`BacktestResult` from the stored days (no recomputation)."""
    info = store.run(run_id)
    spec = info.spec
    days = store.days(run_id)
    initial = _initial_cash(spec)
    first_date = _first_date(store, run_id, spec)
    n = len(info.symbols)
    start_weights = np.zeros(n + 1)
    start_weights[-1] = 1.0
    fills = store.fills(run_id)
    fills["date"] = pd.to_datetime(fills["date"])
    return BacktestResult(
        agent=spec["agent"],
        data_name=str(spec["data"]),
        symbols=info.symbols,
        dates=as_dates([first_date, *days["date"]]),
        nav=np.r_[initial, days["nav"].to_numpy()],
        weights=np.vstack([start_weights, days.attrs["weights"]])
        if len(days)
        else start_weights[None, :],
        turnover=days["turnover"].to_numpy(),
        costs=days["costs"].to_numpy(),
        fills=fills,
        seed=spec["seed"],
        settings={"run_id": run_id, **spec},
        diagnostics=store.diagnostics(run_id),
        interventions=store.interventions(run_id),
    )


def _initial_cash(spec: Mapping[str, Any]) -> float:
    return (build_rules(spec.get("rules")) or TradingRules()).initial_cash


def _first_date(store: RunStore, run_id: str, spec: Mapping[str, Any]) -> str:
    """The run's first mark (the date before its first day): in the spec of runs made since
    it is stored there; for older runs from the env state in the checkpoint (decoding an LLM
    run's whole state: slow), or ``start`` before the first day is done."""
    if "first_date" in spec:
        return str(spec["first_date"])
    checkpoint = store.checkpoint(run_id)
    if checkpoint is not None:
        return str(checkpoint[1]["date_history"][0])
    return str(spec["start"])


def holding_periods(days: pd.DataFrame, symbols: tuple[str, ...]) -> pd.DataFrame:
    """Per symbol held at all: its holding spells, their mean length and the days held.

    A spell is a run of consecutive stored days with a non-zero position in the symbol's
    shares column (long or short), as :func:`~marketarena.evaluation.metrics.holding_spells`
    defines it. Over all symbols, ``days_held`` summed over ``holding_spells`` summed
    (:func:`mean_holding_period`) is what
    :func:`~marketarena.evaluation.metrics.average_holding_period` gives on the run's weights.
    """
    spells = metrics.holding_spells(days[list(symbols)].to_numpy(dtype=float))
    rows = [
        {
            "symbol": symbol,
            "holding_spells": len(lengths),
            "mean_days_held": float(lengths.mean()),
            "days_held": int(lengths.sum()),
        }
        for symbol, lengths in zip(symbols, spells, strict=True)
        if len(lengths)
    ]
    return pd.DataFrame(rows, columns=["symbol", "holding_spells", "mean_days_held", "days_held"])


def mean_holding_period(periods: pd.DataFrame) -> float:
    """The mean length of every spell in a :func:`holding_periods` table (a symbol held in
    more spells weighs more): the run's
    :func:`~marketarena.evaluation.metrics.average_holding_period`."""
    spells = periods["holding_spells"].sum()
    return float(periods["days_held"].sum() / spells) if spells else float("nan")


def turnover_summary(days: pd.DataFrame) -> dict[str, float]:
    """Mean turnover per recorded day (per bar for intraday runs), annual turnover
    (annualised with :func:`~marketarena.envs.data.periods_per_year` of a ``date`` column:
    252 a year for days or without dates, 252 x 78 for 5-minute bars) and total costs."""
    turnover = days["turnover"].to_numpy()
    dated = "date" in days.columns and len(days) > 0
    per_year = data_periods_per_year(days["date"]) if dated else metrics.PERIODS_PER_YEAR
    return {
        "mean_daily_turnover": float(turnover.mean()) if len(turnover) else float("nan"),
        "annual_turnover": float(metrics.turnover(turnover, per_year))
        if len(turnover)
        else float("nan"),
        "total_costs": float(days["costs"].sum()),
    }


def run_report(result: BacktestResult) -> EvaluationReport:
    """The metrics report of one stored run (as ``load_result`` or a backtest returns it)."""
    run_id = result.settings["run_id"]
    title = f"run {run_id}: {result.dates[0]} to {result.dates[-1]}"
    return EvaluationReport(title, [AgentEvaluation(run_id, [result])], settings=result.settings)


def leaderboard(store: RunStore, run_ids: Sequence[str] = ()) -> EvaluationReport:
    """The finished runs among ``run_ids`` (default: every run in ``store``), best final NAV
    first; they must cover the same dates of the same data."""
    runs = [store.run(r) for r in run_ids] if run_ids else store.runs()
    runs = [r for r in runs if r.status == "finished"]
    if not runs:
        raise ConfigError(f"no finished runs in {store.path}")
    results = [load_result(store, r.run_id) for r in runs]
    spans = {(str(r.dates[0]), str(r.dates[-1]), r.settings["data_sha256"]) for r in results}
    if len(spans) > 1:
        raise ConfigError(
            "a leaderboard compares runs over the same dates and data; these differ: "
            + "; ".join(f"{r.settings['run_id']} {r.dates[0]}..{r.dates[-1]}" for r in results)
        )
    results.sort(key=lambda r: -r.nav[-1])
    return EvaluationReport(
        f"leaderboard: {results[0].dates[0]} to {results[0].dates[-1]}",
        [AgentEvaluation(r.settings["run_id"], [r]) for r in results],
        settings={"store": str(store.path), "runs": [r.settings["run_id"] for r in results]},
    )


@dataclass(frozen=True)
class Positions:
    """A run's positions over a date range, as the store recorded them.

    ``days`` has a row per completed day (date, NAV, cash, turnover, costs, shares per symbol;
    the weights in ``days.attrs["weights"]``); ``fills`` a row per fill. With ``symbol`` set,
    fills, holdings and holding periods are that symbol's only.
    """

    info: RunInfo
    days: pd.DataFrame
    fills: pd.DataFrame
    symbol: str | None = None

    @property
    def symbols(self) -> tuple[str, ...]:
        return (self.symbol,) if self.symbol else self.info.symbols

    @property
    def last_date(self) -> str:
        return str(self.days["date"].iloc[-1])

    def holdings(self) -> pd.DataFrame:
        """The last day's non-zero holdings: symbol, shares, weight (cash apart: ``cash``)."""
        last_weights = self.days.attrs["weights"][-1]
        rows = [
            {"symbol": symbol, "shares": self.days[symbol].iloc[-1], "weight": last_weights[j]}
            for j, symbol in enumerate(self.info.symbols)
            if self.days[symbol].iloc[-1] and (not self.symbol or symbol == self.symbol)
        ]
        return pd.DataFrame(rows, columns=["symbol", "shares", "weight"])

    @property
    def cash(self) -> float:
        return float(self.days["cash"].iloc[-1])

    @property
    def cash_weight(self) -> float:
        return float(self.days.attrs["weights"][-1][-1])

    def holding_periods(self) -> pd.DataFrame:
        return holding_periods(self.days, self.symbols)

    def summary(self) -> str:
        """Turnover, costs and the mean holding period (:func:`mean_holding_period`), in one
        line."""
        periods = self.holding_periods()
        turnover = turnover_summary(self.days)
        held = mean_holding_period(periods)
        dated = "date" in self.days.columns and len(self.days) > 0
        intraday = dated and as_dates(self.days["date"]).dtype != np.dtype("datetime64[D]")
        unit = "bar" if intraday else "day"
        return (
            f"turnover: {turnover['mean_daily_turnover']:.3f} a {unit} "
            f"({turnover['annual_turnover']:.1f} a year), costs {turnover['total_costs']:,.2f}; "
            f"mean holding period {held:.1f} {unit}s over {len(periods)} "
            f"symbol{'' if len(periods) == 1 else 's'}"
        )

    def write(self, output: str | Path) -> Path:
        """``holdings.csv`` (the days), ``fills.csv`` and ``holding_periods.csv`` in ``output``."""
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        self.days.to_csv(out / "holdings.csv", index=False)
        self.fills.to_csv(out / "fills.csv", index=False)
        self.holding_periods().to_csv(out / "holding_periods.csv", index=False)
        return out


def load_positions(
    store: RunStore,
    run_id: str,
    start: str | None = None,
    end: str | None = None,
    symbol: str | None = None,
) -> Positions:
    """Run ``run_id``'s days and fills from ``start`` to ``end`` (``days`` is empty when it
    completed none there)."""
    info = store.run(run_id)
    days = store.days(run_id, start, end)
    return Positions(info, days, store.fills(run_id, start, end, symbol), symbol)
