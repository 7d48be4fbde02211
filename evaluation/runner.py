"""The backtest runner: any agent over any date range → :class:`BacktestResult`.

One path for every agent kind (baselines, SB3 models, LLMs, ensembles): the agent protocol. A
result holds everything reports need — daily dates, NAV, weights, fills, costs, turnover and
the agent's own diagnostics — and saves to Parquet + JSON (or one JSON file) so that reports
can be regenerated without rerunning.

One episode loop, :func:`run_episode`, steps every backtest: :func:`run_backtest`'s, and a
persisted run's (:mod:`marketarena.evaluation.saved_runs.persisted`), which records and
checkpoints each day through the loop's step hook.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marketarena.agents.base import Agent, Composite, Diagnosable, ReadsMarketData, ReadsSnapshot
from marketarena.envs.data import MarketData, as_dates, resolve_data
from marketarena.envs.data import periods_per_year as data_periods_per_year
from marketarena.envs.errors import ConfigError, DataError, MissingFileError
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.evaluation import metrics
from marketarena.evaluation.backends import LOCAL, Task, run_tasks

FILL_COLUMNS = ("date", "symbol", "side", "shares", "price", "cost")


@dataclass
class BacktestResult:
    """One agent's run over one date range.

    ``dates``, ``nav`` and ``weights`` (``N + 1`` columns: assets, then cash) have one entry
    per mark: the start date (all cash) and the close after every step. ``turnover`` and
    ``costs`` have one entry per step. ``benchmark`` (when given) is the benchmark's level on
    each of ``dates``. ``settings`` describe the run: for a backtest, the data's manifest and
    the env's settings (:meth:`~marketarena.envs.settings.EnvSettings.to_dict`); for a
    persisted run, its stored spec.
    """

    agent: str
    data_name: str
    symbols: tuple[str, ...]
    dates: np.ndarray
    nav: np.ndarray
    weights: np.ndarray
    turnover: np.ndarray
    costs: np.ndarray
    fills: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FILL_COLUMNS)))
    seed: int | None = None
    fills_recorded: bool = True
    terminated: bool = False
    benchmark: np.ndarray | None = None
    benchmark_name: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    #: the risk layer's interventions (``EnvSettings.risk``), one record per decision and
    #: rule that changed the agent's target: ``{"date", "rule", "amount"}``, ``amount`` the
    #: sum of absolute weight changes the rule made on the decision's date
    interventions: list[dict[str, Any]] = field(default_factory=list)

    def intervention_counts(self) -> dict[str, dict[str, float]]:
        """Per risk rule: how many decisions it changed and the total weight it moved."""
        out: dict[str, dict[str, float]] = {}
        for record in self.interventions:
            entry = out.setdefault(record["rule"], {"decisions": 0, "weight_moved": 0.0})
            entry["decisions"] += 1
            entry["weight_moved"] += float(record["amount"])
        return out

    @property
    def returns(self) -> np.ndarray:
        """Simple returns per step, after costs."""
        return self.nav[1:] / self.nav[:-1] - 1.0

    @property
    def benchmark_returns(self) -> np.ndarray | None:
        if self.benchmark is None:
            return None
        return self.benchmark[1:] / self.benchmark[:-1] - 1.0

    def metrics(
        self, periods_per_year: int | None = None, risk_free: float = 0.0
    ) -> dict[str, float]:
        """The standard metric table (see :func:`metrics.summary`). ``periods_per_year``
        None: from the dates (:func:`~marketarena.envs.data.periods_per_year`: 252 for days,
        252 x 78 for 5-minute bars)."""
        out = metrics.summary(
            self.returns,
            benchmark_returns=self.benchmark_returns,
            risk_free=risk_free,
            periods_per_year=periods_per_year or data_periods_per_year(self.dates),
            turnover=self.turnover,
            weights=self.weights[1:, :-1],
            costs=self.costs,
        )
        out["number_of_trades"] = float(len(self.fills)) if self.fills_recorded else math.nan
        out["final_nav"] = float(self.nav[-1])
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per mark: date, nav, return, turnover, costs, benchmark, weights."""
        columns: dict[str, Any] = {
            "date": pd.to_datetime(self.dates),
            "nav": self.nav,
            "return": np.r_[np.nan, self.returns],
            "turnover": np.r_[0.0, self.turnover],
            "costs": np.r_[0.0, self.costs],
        }
        if self.benchmark is not None:
            columns["benchmark"] = self.benchmark
        for j, name in enumerate([*self.symbols, "cash"]):
            columns[f"w_{name}"] = self.weights[:, j]
        return pd.DataFrame(columns)  # built at once: column by column fragments wide frames

    # ------------------------------------------------------------- persistence
    def _meta(self) -> dict[str, Any]:
        return {
            "format": "marketarena.BacktestResult/1",
            "agent": self.agent,
            "data_name": self.data_name,
            "symbols": list(self.symbols),
            "seed": self.seed,
            "fills_recorded": self.fills_recorded,
            "terminated": self.terminated,
            "benchmark_name": self.benchmark_name,
            "settings": self.settings,
            "diagnostics": self.diagnostics,
            "interventions": self.interventions,
        }

    def save(self, path: str | Path) -> Path:
        """Save to ``path``: a ``.json`` file (everything in one file) or a directory holding
        ``daily.parquet``, ``fills.parquet`` and ``meta.json``."""
        path = Path(path)
        if path.suffix == ".json":
            doc = self._meta()
            # column lists, not pandas' to_json: Python floats round-trip exactly
            doc["daily"] = _columns(self.to_frame())
            doc["fills"] = _columns(self.fills)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, default=_json_default))
            return path
        path.mkdir(parents=True, exist_ok=True)
        self.to_frame().to_parquet(path / "daily.parquet", index=False)
        self.fills.to_parquet(path / "fills.parquet", index=False)
        (path / "meta.json").write_text(json.dumps(self._meta(), indent=2, default=_json_default))
        return path

    @classmethod
    def load(cls, path: str | Path) -> BacktestResult:
        """Load what :meth:`save` wrote."""
        path = Path(path)
        if not path.exists():
            raise MissingFileError(f"no saved backtest result at {path}")
        if path.suffix == ".json":
            meta = json.loads(path.read_text())
            daily, fills = pd.DataFrame(meta["daily"]), pd.DataFrame(meta["fills"])
        else:
            meta = json.loads((path / "meta.json").read_text())
            daily = pd.read_parquet(path / "daily.parquet")
            fills = pd.read_parquet(path / "fills.parquet")
        if meta.get("format") != "marketarena.BacktestResult/1":
            raise DataError(f"{path} is not a saved marketarena BacktestResult")
        symbols = tuple(meta["symbols"])
        weight_cols = [f"w_{s}" for s in [*symbols, "cash"]]
        if len(fills):
            fills["date"] = pd.to_datetime(fills["date"])
        else:
            fills = pd.DataFrame(columns=list(FILL_COLUMNS))
        return cls(
            agent=meta["agent"],
            data_name=meta["data_name"],
            symbols=symbols,
            dates=as_dates(pd.to_datetime(daily["date"]).to_numpy()),
            nav=daily["nav"].to_numpy(dtype=float),
            weights=daily[weight_cols].to_numpy(dtype=float),
            turnover=daily["turnover"].to_numpy(dtype=float)[1:],
            costs=daily["costs"].to_numpy(dtype=float)[1:],
            fills=fills,
            seed=meta["seed"],
            fills_recorded=meta["fills_recorded"],
            terminated=meta["terminated"],
            benchmark=daily["benchmark"].to_numpy(dtype=float) if "benchmark" in daily else None,
            benchmark_name=meta["benchmark_name"],
            settings=meta["settings"],
            diagnostics=meta["diagnostics"],
            interventions=list(meta.get("interventions", [])),
        )


def _columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            out[name] = col.dt.strftime("%Y-%m-%d").tolist()
        else:
            out[name] = col.tolist()
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --------------------------------------------------------------------------- benchmark
def align_benchmark(
    benchmark: MarketData | pd.Series | str, dates: np.ndarray
) -> tuple[np.ndarray, str]:
    """The benchmark's level on each of ``dates`` (its last value on or before each date).

    ``benchmark``: a one-column :class:`MarketData`, a bundled name (``"sp500_index"``), a
    file path, or a pandas Series indexed by date.
    """
    if isinstance(benchmark, pd.Series):
        name = str(benchmark.name or "benchmark")
        series = benchmark.sort_index()
        index = pd.DatetimeIndex(series.index).to_numpy().astype("datetime64[D]")
        values = series.to_numpy(dtype=float)
    else:
        data = resolve_data(benchmark)
        if data.n_assets != 1:
            raise DataError(
                f"benchmark {data.name} has {data.n_assets} columns; give a single series"
            )
        name, index, values = data.symbols[0], data.dates, data.close[:, 0]
    if not np.isfinite(values).all() or (values <= 0).any():
        raise DataError(f"benchmark {name} has non-positive or missing levels")
    pos = np.searchsorted(index, dates, side="right") - 1
    if pos[0] < 0:
        raise DataError(
            f"benchmark {name} starts on {index[0]}, after the backtest's first date {dates[0]}"
        )
    stale = dates[-1] - index[pos[-1]]
    if stale > np.timedelta64(7, "D"):
        raise DataError(
            f"benchmark {name} ends on {index[-1]}, more than a week before the backtest's "
            f"last date {dates[-1]}"
        )
    return values[pos], name


# ------------------------------------------------------------------------------ runs
EnvSpec = PortfolioEnv | Mapping[str, Any]
#: what makes an env a backtest: one episode over the whole date range, from its first date
BACKTEST_SETTINGS = {"episode_length": None, "random_start": False}


def make_backtest_env(
    spec: EnvSpec, start: str | None = None, end: str | None = None
) -> PortfolioEnv:
    """A recording :class:`PortfolioEnv` that runs once from ``start`` to ``end``.

    ``spec`` is a ready env (used as it is; ``start``/``end`` then must be None) or the keyword
    arguments of :class:`PortfolioEnv`: ``data``, ``settings`` (an
    :class:`~marketarena.envs.settings.EnvSettings`) and any setting as a keyword
    (``window``, ``rules``, ...). The env runs :data:`BACKTEST_SETTINGS` unless the spec gives
    ``episode_length`` or ``random_start`` as keywords.
    """
    if isinstance(spec, PortfolioEnv):
        if start is not None or end is not None:
            raise ValueError("pass start/end in the env's own arguments, or pass a spec dict")
        return spec
    kwargs = {**BACKTEST_SETTINGS, **spec, "record": True}
    if start is not None:
        kwargs["start"] = start
    if end is not None:
        kwargs["end"] = end
    return PortfolioEnv(**kwargs)


#: called after every step of :func:`run_episode` with the number of steps done in the
#: episode (1 after the first) and the step's info; it may record or checkpoint the step
StepHook = Callable[[int, Mapping[str, Any]], None]
BacktestProgress = Callable[[str, int, int, int], None]
"""``progress(agent, seed, step, total)``: called as each backtest starts (``step`` 0) and
after every step, ``total`` being the backtest's number of steps, so a caller can show counts
and an ETA per decision (an LLM agent's decisions can take seconds each)."""


@dataclass
class Episode:
    """What :func:`run_episode` collected: one mark per entry of ``dates``, ``nav`` and
    ``weights`` (the mark it started from, then one per step), one per step of ``turnover``
    and ``costs``."""

    dates: list[Any]
    nav: list[float]
    weights: list[np.ndarray]
    turnover: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    terminated: bool = False
    interventions: list[dict[str, Any]] = field(default_factory=list)


def run_episode(
    agent: Agent,
    env: PortfolioEnv,
    observation: np.ndarray,
    info: Mapping[str, Any],
    *,
    step: int = 0,
    on_step: StepHook | None = None,
) -> Episode:
    """The episode loop: ``agent`` acts on ``env`` from ``observation``/``info`` until the
    episode ends; every backtest, persisted or not, runs through it.

    The env and the agent are used as they are: reset them (or restore a saved state) first.
    ``step`` counts the steps already done (a resumed run's), so ``on_step`` sees the
    episode's own step numbers. A restored env already past its last decision date takes no
    step. An agent (or ensemble member) that :class:`ReadsMarketData` gets ``env.data`` first.
    """
    give_market_data(agent, env.data)
    episode = Episode([info["date"]], [info["nav"]], [info["weights"]])
    done = _past_end(env)
    while not done:
        action = agent.act(observation, info)
        decided = info["date"]
        observation, _, terminated, truncated, info = env.step(action)
        for rule, amount in info.get("risk", {}).items():
            episode.interventions.append({"date": str(decided), "rule": rule, "amount": amount})
        step += 1
        episode.dates.append(info["date"])
        episode.nav.append(info["nav"])
        episode.weights.append(info["weights"])
        episode.turnover.append(info["turnover"])
        episode.costs.append(info["costs"])
        episode.terminated = bool(terminated)
        if on_step is not None:
            on_step(step, info)
        done = terminated or truncated or _past_end(env)
    return episode


def give_market_data(agent: Agent, data: MarketData) -> None:
    """``agent.use_data(data)`` for the agent and every member of an ensemble that
    :class:`~marketarena.agents.base.ReadsMarketData`."""
    if isinstance(agent, ReadsMarketData):
        agent.use_data(data)
    if isinstance(agent, Composite):
        for member in agent.members:
            give_market_data(member, data)


def _past_end(env: PortfolioEnv) -> bool:
    return bool(env.sim.t[0] > env.core.episode_end[0])


def _reporting(
    on_step: StepHook | None, progress: Callable[[int, int], None], total: int
) -> StepHook:
    """``on_step`` (if any), then ``progress(step, total)``; reports step 0 at once."""
    progress(0, total)

    def hook(step: int, info: Mapping[str, Any]) -> None:
        if on_step is not None:
            on_step(step, info)
        progress(step, total)

    return hook


def steps_left(env: PortfolioEnv) -> int:
    """How many steps the episode of ``env`` (batch member 0) still takes, unless it ends
    early (bankruptcy)."""
    return max(int(env.core.episode_end[0] - env.sim.t[0] + 1), 0)


def run_backtest(
    agent: Agent,
    env_or_spec: EnvSpec,
    start: str | None = None,
    end: str | None = None,
    seed: int | None = None,
    *,
    benchmark: MarketData | pd.Series | str | None = None,
    on_step: StepHook | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """Run ``agent`` for one episode and collect the result.

    Args:
        agent: anything following the :class:`~marketarena.agents.Agent` protocol.
        env_or_spec: a :class:`PortfolioEnv` (run as configured; with ``record=True`` the
            fills are kept) or a dict of its arguments, e.g. ``{"data": data, "settings":
            settings}`` (see :func:`make_backtest_env`).
        start, end: the date range, with a spec dict.
        seed: seeds the env's reset and the agent.
        benchmark: a series to align with the result (see :func:`align_benchmark`).
        on_step: called after every step (see :data:`StepHook` and :func:`run_episode`).
        progress: ``progress(step, total)``, as the episode starts and after every step.
    """
    if not isinstance(env_or_spec, PortfolioEnv):
        lookback = snapshot_lookback(agent)
        if lookback:
            env_or_spec = {**env_or_spec, "snapshot_lookback": lookback}
    env = make_backtest_env(env_or_spec, start, end)
    if not isinstance(env, PortfolioEnv):
        raise TypeError(f"run_backtest needs a PortfolioEnv, got {type(env).__name__}")
    observation, info = env.reset(seed=seed)
    agent.reset(seed=seed)
    if progress is not None:
        on_step = _reporting(on_step, progress, steps_left(env))
    episode = run_episode(agent, env, observation, info, on_step=on_step)
    date_arr = as_dates(episode.dates)
    fills = (
        env.sim.history(0).fills_frame()
        if env.sim.record
        else pd.DataFrame(columns=list(FILL_COLUMNS))
    )
    bench, bench_name = (None, None)
    if benchmark is not None:
        bench, bench_name = align_benchmark(benchmark, date_arr)
    return BacktestResult(
        agent=agent.name,
        data_name=env.data.name,
        symbols=env.data.symbols,
        dates=date_arr,
        nav=np.asarray(episode.nav),
        weights=np.vstack(episode.weights),
        turnover=np.asarray(episode.turnover),
        costs=np.asarray(episode.costs),
        fills=fills,
        seed=seed,
        fills_recorded=env.sim.record,
        terminated=episode.terminated,
        benchmark=bench,
        benchmark_name=bench_name,
        settings=_settings(env),
        diagnostics=agent_diagnostics(agent),
        interventions=episode.interventions,
    )


def agent_diagnostics(agent: Agent) -> dict[str, Any]:
    """The agent's own account of its run (:class:`~marketarena.agents.base.Diagnosable`,
    e.g. an LLM's outcomes), or {}."""
    return agent.diagnostics() if isinstance(agent, Diagnosable) else {}


def snapshot_lookback(agent: Agent) -> int | None:
    """The market-snapshot lookback an agent (or any member of an ensemble) asks for."""
    wanted = [agent.snapshot_lookback] if isinstance(agent, ReadsSnapshot) else []
    if isinstance(agent, Composite):
        wanted += [snapshot_lookback(m) for m in agent.members]
    lookbacks = [w for w in wanted if w]
    return max(lookbacks) if lookbacks else None


def _settings(env: PortfolioEnv) -> dict[str, Any]:
    """The data's manifest and the env's settings (:meth:`EnvSettings.to_dict`), with the
    rules as the env resolved them for the data (``execution`` filled in)."""
    return {"data": env.data.manifest(), **env.settings.to_dict(), "rules": env.rules.to_dict()}


# ----------------------------------------------------------------------- many seeds
def interquartile_mean(values: Sequence[float]) -> float:
    """Mean of the middle 50% of ``values`` (the IQM of Agarwal et al., 2021), NaNs dropped."""
    x = np.sort(np.asarray([v for v in values if v == v], dtype=float))
    if len(x) == 0:
        return float("nan")
    lo, hi = int(np.floor(0.25 * len(x))), int(np.ceil(0.75 * len(x)))
    return float(x[lo:hi].mean()) if hi > lo else float(x.mean())


@dataclass
class AgentEvaluation:
    """One agent over several seeds: per-seed results and the aggregate metrics."""

    agent: str
    results: list[BacktestResult]

    def per_seed_metrics(self, **kwargs: Any) -> list[dict[str, float]]:
        return [r.metrics(**kwargs) for r in self.results]

    def aggregate(self, **kwargs: Any) -> dict[str, dict[str, float]]:
        """``{metric: {"median": .., "iqm": .., "min": .., "max": ..}}`` across seeds."""
        rows = self.per_seed_metrics(**kwargs)
        out = {}
        for key in rows[0]:
            values = [r[key] for r in rows]
            finite = [v for v in values if v == v]
            out[key] = {
                "median": float(np.median(finite)) if finite else float("nan"),
                "iqm": interquartile_mean(values),
                "min": float(min(finite)) if finite else float("nan"),
                "max": float(max(finite)) if finite else float("nan"),
            }
        return out


def evaluate_agents(
    agents: Sequence[Agent],
    spec: Mapping[str, Any],
    start: str | None = None,
    end: str | None = None,
    seeds: Sequence[int] = (0,),
    *,
    benchmark: MarketData | pd.Series | str | None = None,
    progress: BacktestProgress | None = None,
    jobs: int = 1,
) -> list[AgentEvaluation]:
    """Backtest every agent for every seed over the same range; one evaluation per agent.

    ``jobs > 1`` runs different agents in parallel threads (each agent's seeds stay in order,
    since an agent carries state); useful when agents wait on an LLM endpoint. (On Ray,
    :func:`marketarena.evaluation.evaluate.evaluate` runs every (agent, seed) as a task of its
    own, with the agent built afresh from its spec.)
    """
    names = [a.name for a in agents]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"agent names must be unique; repeated: {duplicates}")

    def run_agent(agent: Agent) -> AgentEvaluation:
        results = []
        for seed in seeds:
            report = None
            if progress is not None:
                report = partial(progress, agent.name, seed)
            results.append(
                run_backtest(agent, spec, start, end, seed, benchmark=benchmark, progress=report)
            )
        return AgentEvaluation(agent.name, results)

    tasks = [Task(a.name, a) for a in agents]
    return run_tasks(LOCAL, lambda a, _, __: run_agent(a), tasks, threads=jobs).values
