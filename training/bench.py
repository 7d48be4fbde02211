"""``marketarena bench``: agents x diagnostic tasks x seeds, scored on each task's test split.

Every (agent, task, seed) is one job. RL agents (``ppo``, ``a2c``, ``sac``, ``td3`` from
``configs/bench/<algo>.yaml``, or ``ppo:path/to/config.yaml``) are trained on the task's train
split, selected on its validation split by :func:`~marketarena.training.train.train`, and the
selected model (the best on validation, else the final one) is backtested once on the test
split, which nothing tunes on, under the task's rules (a config's ``env.rules`` shape its
training only). ``untrained:<algo>`` is the policy the config builds before any
learning. Any other agent spec (baselines, ``signal:<Task>``, saved models, ``llm:...``) is
backtested on the test split as it is. The task's reference and baseline are always scored too,
as the agents ``reference`` and ``baseline``.

``split="validation"`` (``--split validation``) scores on the validation split instead: that is
the bench to compare settings with (a config, a reward, a curriculum) without looking at the
test split. Its scores are optimistic for RL agents, whose model was also selected there.

The score is the normalised growth of :mod:`marketarena.evaluation.task_scores` (0 = the
task's baseline, 1 = its reference, after costs). Aggregates over the planted tasks (those
with a known optimum) follow rliable: IQM, median, mean and optimality gap with
stratified-bootstrap intervals, per-task medians with IQM intervals, and the probability of
improvement of every agent over every other. Turnover and costs stand beside every score.

A bench writes ``results.json`` (every job, the config, seeds, git SHA, data hashes),
``results.csv``, ``aggregates.json``, ``performance_profiles.png`` and a self-contained
``report.html``; training runs go under ``runs/`` of the same folder. With MLflow on, one
parent run ``bench`` (experiment ``marketarena-bench``) holds a nested run per job, and a
training run is nested under its job's run.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from marketarena.agents.base import ExpectsObservation, uses_llm
from marketarena.agents.registry import SPEC_HELP, make_agent
from marketarena.agents.sb3_agent import SB3Agent
from marketarena.envs.errors import ConfigError, MissingFileError
from marketarena.envs.settings import OBSERVATION_SETTINGS
from marketarena.envs.tasks import TASKS, get_task, use_task_markets
from marketarena.evaluation import bench_stats, tracking
from marketarena.evaluation.backends import (
    LOCAL,
    Backend,
    Task,
    job_cpus,
    llm_resource,
    run_tasks,
)
from marketarena.evaluation.metrics import PERIODS_PER_YEAR
from marketarena.evaluation.report import format_value, slugify
from marketarena.evaluation.runner import BacktestResult
from marketarena.evaluation.task_scores import (
    check_split,
    growth,
    normalised_score,
    run_on_split,
    scoring_env_kwargs,
    task_anchor_scores,
)
from marketarena.training.config import ALGORITHMS, Config, load_config
from marketarena.training.train import (
    action_spec,
    load_universe,
    make_model,
    make_training_env,
    split_ranges,
    train,
)

PLANTED = tuple(name for name, task in TASKS.items() if task.known_optimum)
ANCHOR_AGENTS = ("reference", "baseline")
#: where ``configs/bench/<algo>.yaml`` is looked for, relative to the working directory and to
#: the repository next to the installed package
BENCH_CONFIGS = Path("configs") / "bench"
BENCH_AGENTS_HELP = (
    f"{', '.join(ALGORITHMS)} (trained from configs/bench/<algo>.yaml), <algo>:path/to/"
    "config.yaml, untrained:<algo>, reference, baseline (each task's own), or an agent spec: "
    + SPEC_HELP
)
#: what every job records (besides its agent, task and seed)
ROW_METRICS = (
    "growth",
    "score",
    "sharpe",
    "annual_turnover",
    "annual_costs",
    "max_drawdown",
    "total_return",
    "timesteps",
    "seconds",
)

Progress = Callable[[int, int, str], None]


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class BenchConfig:
    """What a bench runs.

    Attributes:
        agents: bench agents (see :data:`BENCH_AGENTS_HELP`); each task's reference and
            baseline are scored as well.
        tasks: task names or ids, ``"planted"`` (the six tasks with a known optimum) or
            ``"all"`` (those and the real-data ``SP500``).
        seeds: a number of seeds (``5``: 0..4) or the seeds themselves.
        timesteps: training steps of every RL agent (``None``: each config's own).
        output: folder for the results, the report and the training runs.
        mlflow: log a parent run and a nested run per job (see the module docstring).
        reps: bootstrap resamples of the intervals; ``confidence``: their coverage.
        experiment: the MLflow experiment.
        llm: :class:`~marketarena.agents.llm_agent.LLMConfig` fields for ``llm:`` agents.
        split: where jobs are scored: ``"test"`` (the default; nothing tunes on it) or
            ``"validation"`` (for choosing settings; see the module docstring).
        backend: where the jobs run (:mod:`marketarena.evaluation.backends`): one after the
            other here, or as Ray tasks (a training declares its torch threads as CPUs, an
            ``llm:`` agent its endpoint; the tasks' data put in the object store once). The
            rows and aggregates are the same either way; the settings say where it ran.
    """

    agents: tuple[str, ...] = ("ppo",)
    tasks: tuple[str, ...] | str = "planted"
    seeds: int | tuple[int, ...] = 5
    timesteps: int | None = None
    output: str | Path = "reports/bench"
    mlflow: bool = False
    reps: int = 2000
    confidence: float = 0.95
    experiment: str = "marketarena-bench"
    llm: Mapping[str, Any] = field(default_factory=dict)
    split: str = "test"
    backend: Backend = LOCAL

    def task_names(self) -> tuple[str, ...]:
        """Canonical task names; an unknown task lists the tasks."""
        names = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        if not names:
            raise ConfigError("no tasks: give at least one task, 'planted' or 'all'")
        groups = {"planted": PLANTED, "all": tuple(TASKS)}
        out = [t for n in names for t in (groups[n] if n in groups else (get_task(n).name,))]
        repeated = sorted({n for n in out if out.count(n) > 1})
        if repeated:
            raise ConfigError(f"tasks listed more than once: {repeated}")
        return tuple(out)

    def seed_list(self) -> tuple[int, ...]:
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
            return tuple(range(self.seeds))
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        return seeds

    def validate(self) -> None:
        """Raise :class:`~marketarena.envs.errors.ConfigError` /
        :class:`~marketarena.envs.errors.MissingFileError` naming the first bad setting: tasks,
        seeds, budgets, then the agents (``llm:`` agents are checked when the bench starts,
        since they need their endpoint)."""
        self.task_names()
        self.seed_list()
        check_split(self.split)
        self.backend.validate()
        if not self.agents:
            raise ConfigError("no agents: give at least one agent")
        if self.timesteps is not None and self.timesteps < 1:
            raise ConfigError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.reps < 1:
            raise ConfigError(f"reps must be >= 1, got {self.reps}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}")
        resolve_agents(self, skip_llm=True)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["backend"]  # recorded as settings["backend"] by a Ray bench
        out.update(
            tasks=list(self.task_names()),
            seeds=list(self.seed_list()),
            agents=list(self.agents),
            output=str(self.output),
            llm=dict(self.llm),
        )
        return out


# ----------------------------------------------------------------------------- agents
@dataclass(frozen=True)
class BenchAgent:
    """One bench agent, resolved: how its jobs build (or train) the agent they score."""

    name: str
    kind: Literal["rl", "untrained", "spec", "anchor"]
    spec: str
    algo: str | None = None
    config_path: Path | None = None
    task: str | None = None  # the one task a task-specific spec (signal:<Task>) belongs to


def bench_config_path(algo: str) -> Path:
    """``configs/bench/<algo>.yaml`` in the working directory, else in the repository that
    holds the package; a clear error naming both places when neither has it."""
    name = BENCH_CONFIGS / f"{algo}.yaml"
    candidates = (Path.cwd() / name, Path(__file__).resolve().parent.parent / name)
    for path in candidates:
        if path.is_file():
            return path
    raise MissingFileError(
        f"no bench config for {algo}: neither {candidates[0]} nor {candidates[1]} exists; "
        f"run from the repository, or give {algo}:path/to/config.yaml"
    )


def _config_file(path: str, spec: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"agent {spec!r}: config file not found: {file}")
    return file


def resolve_agent(
    spec: str, tracking_uri: str | None = None, llm: Mapping[str, Any] | None = None
) -> BenchAgent:
    """What a bench agent spec names (see :data:`BENCH_AGENTS_HELP`); bad specs raise."""
    spec = spec.strip()
    if spec in ANCHOR_AGENTS:
        return BenchAgent(spec, "anchor", spec)
    untrained = spec.startswith("untrained:")
    algo, _, path = spec.removeprefix("untrained:").partition(":")
    is_config = path.endswith((".yaml", ".yml"))
    # ``ppo:model.zip`` is a saved model (an agent spec), ``ppo:config.yaml`` a training config
    if untrained or (algo in ALGORITHMS and (not path or is_config)):
        if algo not in ALGORITHMS or (path and not is_config):
            raise ConfigError(
                f"agent {spec!r}: expected untrained:<algo>[:config.yaml] with algo one of "
                f"{ALGORITHMS}"
            )
        config_path = _config_file(path, spec) if path else bench_config_path(algo)
        name = f"{algo}:{Path(path).stem}" if path else algo
        if untrained:
            return BenchAgent(f"untrained:{name}", "untrained", spec, algo, config_path)
        return BenchAgent(name, "rl", spec, algo, config_path)
    try:
        agent = make_agent(spec, tracking_uri, llm)
    except ValueError as exc:
        if str(exc).startswith("unknown agent"):
            raise ConfigError(
                f"unknown agent {spec!r}; use {', '.join(ALGORITHMS)}, <algo>:path/to/config.yaml,"
                " untrained:<algo>, reference, baseline, or an agent spec (marketarena bench "
                "--help lists them)"
            ) from None
        raise
    prefix, _, arg = spec.partition(":")
    task = get_task(arg).name if prefix in ("signal", "reference", "baseline") else None
    return BenchAgent(agent.name, "spec", spec, task=task)


def resolve_agents(config: BenchConfig, skip_llm: bool = False) -> list[BenchAgent]:
    """The config's agents, then the anchors; checked against the tasks before any job runs
    (``skip_llm``: leave out ``llm:`` agents, whose endpoint may not be up yet)."""
    uri = tracking.tracking_uri()
    specs = [s for s in config.agents if not (skip_llm and uses_llm(s))]
    agents = [resolve_agent(s, uri, config.llm) for s in specs]
    agents += [BenchAgent(a, "anchor", a) for a in ANCHOR_AGENTS if a not in config.agents]
    names = [a.name for a in agents]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"bench agents must have distinct names; repeated: {repeated}")
    tasks = config.task_names()
    for agent in agents:
        if agent.task is not None and set(tasks) != {agent.task}:
            raise ConfigError(
                f"agent {agent.spec!r} belongs to task {agent.task}; bench it on that task "
                f"alone, or use 'reference' / 'baseline' for each task's own"
            )
        if agent.kind in ("rl", "untrained"):
            training_config(agent, tasks[0], config.seed_list()[0], config)  # errors early
    return agents


def training_config(agent: BenchAgent, task: str, seed: int, config: BenchConfig) -> Config:
    """The agent's training config for one (task, seed): the task's data and fixed splits,
    the seed, the bench's output folder and MLflow setting, and ``timesteps`` if given."""
    assert agent.algo is not None and agent.config_path is not None
    env_id = get_task(task).env_id
    extra: dict[str, Any] = {
        "env": {"data": env_id},
        "seed": seed,
        "name": f"bench_{slugify(agent.name)}_{task}",
        "training": {
            "output_dir": str(Path(config.output) / "runs"),
            "progress_bar": False,
            "validation_report": False,  # the bench's own report scores every run
        },
        "mlflow": {"enabled": config.mlflow, "experiment": config.experiment},
    }
    if config.timesteps is not None:
        extra["algo"] = {"total_timesteps": config.timesteps}
    out = load_config(agent.config_path, extra=extra)
    if out.algo.name != agent.algo:
        raise ConfigError(
            f"agent {agent.spec!r}: {agent.config_path} trains {out.algo.name}, not {agent.algo}"
        )
    return out


# ------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    agent: BenchAgent
    task: str
    seed: int

    def describe(self) -> str:
        return f"{self.agent.name} on {self.task}, seed {self.seed}"


def _observation(config: Config, task: str) -> dict[str, Any]:
    """Test-split env arguments for a model trained with ``config``: its observation."""
    out: dict[str, Any] = config.env.to_settings().observation()
    if config.env.universe:
        out["data"] = get_task(task).market().select(config.env.universe)
    return out


def _untrained_agent(config: Config, name: str) -> SB3Agent:
    """The policy ``config`` builds before learning, as an agent."""
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(config.seed)
    data = load_universe(config)
    env = make_training_env(config, data, split_ranges(config, data)["train"])
    model = make_model(config, env)
    env.close()
    # fresh VecNormalize statistics are mean 0, variance 1: the identity up to clipping
    return SB3Agent(model, name, obs_normalizer=None, action_spec=action_spec(config))


def run_job(job: Job, config: BenchConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """Build or train the job's agent, backtest it on the bench's split (test by default),
    score it."""
    agent, task, seed = job.agent, job.task, job.seed
    started = time.perf_counter()
    row: dict[str, Any] = {
        "agent": agent.name,
        "kind": agent.kind,
        "task": task,
        "seed": seed,
        "spec": agent.spec,
        "model": None,
    }
    timesteps = 0
    overrides: dict[str, Any] = {}
    if agent.kind == "rl":
        train_config = training_config(agent, task, seed, config)
        trained = train(train_config, mlflow_parent_run_id=parent_run_id)
        model_dir = (trained.best_model_path or trained.model_path).parent
        actor: Any = SB3Agent.from_file(model_dir, name=agent.name)
        overrides = _observation(train_config, task)
        timesteps = trained.timesteps
        row["model"] = str(model_dir)
    elif agent.kind == "untrained":
        train_config = training_config(agent, task, seed, config)
        actor = _untrained_agent(train_config, agent.name)
        overrides = _observation(train_config, task)
    else:
        spec = f"{agent.spec}:{task}" if agent.kind == "anchor" else agent.spec
        row["spec"] = spec
        actor = make_agent(spec, tracking.tracking_uri(), config.llm)
        actor.name = agent.name
        observation = actor.observation if isinstance(actor, ExpectsObservation) else {}
        overrides = {k: v for k, v in observation.items() if k in OBSERVATION_SETTINGS}
    result = run_on_split(actor, task, seed, config.split, **overrides)
    row.update(score_result(result, task, config.split))
    row.update(timesteps=timesteps, seconds=time.perf_counter() - started)
    return row


def score_result(result: BacktestResult, task: str, split: str = "test") -> dict[str, float]:
    """Growth, normalised score, Sharpe, turnover, costs and drawdown of a run over the
    task's ``split``."""
    data = scoring_env_kwargs(task, split)["data"]
    start, end = get_task(task).splits()[split]
    steps = data.index_of(end) - data.index_of(start)
    g = growth(result, steps=steps)  # a run stopped early holds its last NAV to the end
    table = result.metrics()
    return {
        "growth": g,
        "score": normalised_score(task, g, split),
        "sharpe": table["sharpe"],
        "annual_turnover": table["annual_turnover"],
        # costs per year as a fraction of the initial cash
        "annual_costs": float(np.sum(result.costs) / result.nav[0] / steps * PERIODS_PER_YEAR),
        "max_drawdown": table["max_drawdown"],
        "total_return": table["total_return"],
    }


# ---------------------------------------------------------------------------- report
@dataclass
class BenchReport:
    """A bench's jobs and aggregates.

    Attributes:
        rows: one dict per (agent, task, seed) job (see :data:`ROW_METRICS`).
        aggregates: ``{agent: {iqm, iqm_low, iqm_high, median, mean, optimality_gap, ...,
            annual_turnover, annual_costs}}`` over the scored tasks (the planted ones; all
            tasks if none is planted); turnover and costs are medians over those jobs.
        per_task: ``{agent: {task: {median, iqm, iqm_low, iqm_high, annual_turnover,
            reference_turnover, annual_costs, ...}}}``.
        improvement: ``[{x, y, probability, low, high}]`` for every ordered pair of agents.
        anchors: ``{task: task_anchor_scores(task)}``.
        settings: the config, seeds, git SHA, data hashes, MLflow run.
        notes: what a reader should know (agents left out of an aggregate, ...).
    """

    rows: list[dict[str, Any]]
    aggregates: dict[str, dict[str, float]]
    per_task: dict[str, dict[str, dict[str, float]]]
    improvement: list[dict[str, Any]]
    anchors: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    scored_tasks: tuple[str, ...]
    notes: list[str] = field(default_factory=list)

    @property
    def agents(self) -> list[str]:
        return list(dict.fromkeys(r["agent"] for r in self.rows))

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r["task"] for r in self.rows))

    def score_matrix(self, agent: str, tasks: Sequence[str] | None = None) -> np.ndarray:
        """``(n_seeds, n_tasks)`` normalised scores of ``agent`` (seeds in bench order)."""
        tasks = list(tasks or self.scored_tasks)
        seeds = list(dict.fromkeys(r["seed"] for r in self.rows))
        cell = {(r["task"], r["seed"]): r["score"] for r in self.rows if r["agent"] == agent}
        return np.array([[cell.get((t, s), math.nan) for t in tasks] for s in seeds], dtype=float)

    # ---------------------------------------------------------------- terminal
    def table(self) -> list[dict[str, str]]:
        """Rows for the terminal: per agent per task, the median normalised score with its
        IQM interval, the agent's and the reference's turnover, and the costs."""
        out = []
        level = f"{self.settings['config']['confidence']:.0%}"
        for agent in self.agents:
            for task in self.tasks:
                s = self.per_task[agent][task]
                interval = f"[{_num(s['iqm_low'])}, {_num(s['iqm_high'])}]"
                out.append(
                    {
                        "agent": agent,
                        "task": task,
                        "score (median)": _num(s["median"]),
                        f"IQM {level} interval": interval,
                        "turnover/yr": _num(s["annual_turnover"]),
                        "reference turnover/yr": _num(s["reference_turnover"]),
                        "costs/yr": format_value(s["annual_costs"], "abs_pct"),
                        "Sharpe": _num(s["sharpe"]),
                    }
                )
        return out

    def lines(self) -> list[str]:
        """The aggregate line per agent, then the probabilities of improvement."""
        level = f"{self.settings['config']['confidence']:.0%}"
        n_seeds = len(self.settings["seeds"])
        where = f"{len(self.scored_tasks)} task(s) x {n_seeds} seed(s)"
        out = []
        for agent, a in self.aggregates.items():
            out.append(
                f"{agent}: IQM {_num(a['iqm'])} [{_num(a['iqm_low'])}, {_num(a['iqm_high'])}] "
                f"({level}), median {_num(a['median'])}, mean {_num(a['mean'])}, optimality "
                f"gap {_num(a['optimality_gap'])} over {where}; median turnover "
                f"{_num(a['annual_turnover'])}/yr, costs "
                f"{format_value(a['annual_costs'], 'abs_pct')}/yr"
            )
        for p in self.improvement:
            if self.agents.index(p["x"]) < self.agents.index(p["y"]):  # each pair once
                out.append(
                    f"P({p['x']} > {p['y']}) = {_num(p['probability'])} "
                    f"[{_num(p['low'])}, {_num(p['high'])}]"
                )
        return out + self.notes

    # ------------------------------------------------------------------- files
    def write(self, folder: str | Path) -> dict[str, Path]:
        """results.json, results.csv, aggregates.json, performance_profiles.png, report.html."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "results": out / "results.json",
            "csv": out / "results.csv",
            "aggregates": out / "aggregates.json",
            "profiles": out / "performance_profiles.png",
            "html": out / "report.html",
        }
        results = {"settings": self.settings, "anchors": self.anchors, "rows": self.rows}
        files["results"].write_text(json.dumps(_finite(results), indent=2))
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        with files["csv"].open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        files["aggregates"].write_text(json.dumps(_finite(self.aggregates_dict()), indent=2))
        scores = {a: self.score_matrix(a) for a in self.aggregates}
        if scores:
            bench_stats.plot_performance_profiles(
                scores,
                files["profiles"],
                reps=self.settings["config"]["reps"],
                confidence=self.settings["config"]["confidence"],
            )
        else:
            files.pop("profiles")
        files["html"].write_text(self.html(files.get("profiles")))
        return files

    def aggregates_dict(self) -> dict[str, Any]:
        return {
            "scored_tasks": list(self.scored_tasks),
            "seeds": self.settings["seeds"],
            "reps": self.settings["config"]["reps"],
            "confidence": self.settings["config"]["confidence"],
            "agents": self.aggregates,
            "per_task": self.per_task,
            "probability_of_improvement": self.improvement,
            "notes": self.notes,
        }

    def html(self, profiles: Path | None) -> str:
        """One page: the aggregate, per-task and improvement tables, the performance
        profiles inlined (base64), every job, and the settings."""
        level = f"{self.settings['config']['confidence']:.0%}"
        aggregate = _html_table(
            [
                "agent",
                "IQM",
                f"IQM {level}",
                "median",
                "mean",
                "optimality gap",
                "turnover/yr",
                "costs/yr",
            ],
            [
                [
                    agent,
                    _num(a["iqm"]),
                    f"[{_num(a['iqm_low'])}, {_num(a['iqm_high'])}]",
                    _num(a["median"]),
                    _num(a["mean"]),
                    _num(a["optimality_gap"]),
                    _num(a["annual_turnover"]),
                    format_value(a["annual_costs"], "abs_pct"),
                ]
                for agent, a in self.aggregates.items()
            ],
        )
        per_task = _html_table(
            list(self.table()[0]) if self.rows else [], [list(r.values()) for r in self.table()]
        )
        improvement = _html_table(
            ["X", "Y", "P(X > Y)", f"{level} interval"],
            [
                [p["x"], p["y"], _num(p["probability"]), f"[{_num(p['low'])}, {_num(p['high'])}]"]
                for p in self.improvement
            ],
        )
        columns = ["agent", "task", "seed", *ROW_METRICS]
        jobs = _html_table(columns, [[_cell(r.get(c)) for c in columns] for r in self.rows])
        figure = ""
        if profiles is not None:
            encoded = base64.b64encode(profiles.read_bytes()).decode()
            figure = (
                f'<figure><img alt="performance profiles" src="data:image/png;base64,'
                f'{encoded}"><figcaption>performance profiles over '
                f"{', '.join(self.scored_tasks)}</figcaption></figure>"
            )
        settings = html.escape(json.dumps(_finite(self.settings), indent=2))
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in self.notes)
        title = "marketarena bench"
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.8rem; margin-bottom: 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.4rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
figure {{ margin: 1.5rem 0; }} img {{ max-width: 100%; }}
pre {{ background: #f5f5f5; padding: 1rem; font-size: 0.75rem; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Normalised score on each task's {html.escape(self.settings["config"].get("split", "test"))}
split, after costs: 0 = the task's baseline, 1 = its
reference. Aggregates are over {html.escape(", ".join(self.scored_tasks))} with
{html.escape(level)} stratified-bootstrap intervals ({self.settings["config"]["reps"]}
resamples). Turnover is per year; costs are per year as a fraction of the initial cash.</p>
<h2>Aggregates</h2>{aggregate}
<h2>Per task</h2>{per_task}
<h2>Probability of improvement</h2>{improvement}
{notes}
{figure}
<h2>Every job</h2>{jobs}
<h2>Settings</h2><pre>{settings}</pre>
</body></html>
"""


def _num(value: Any) -> str:
    return format_value(float(value), "num") if value is not None else "nan"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _html_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    header = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------------------ aggregation
def summarise(
    rows: list[dict[str, Any]], config: BenchConfig, settings: dict[str, Any]
) -> BenchReport:
    """Aggregates, per-task statistics and probabilities of improvement from the jobs."""
    tasks = config.task_names()
    planted = tuple(t for t in tasks if get_task(t).known_optimum)
    notes = []
    if not planted:
        notes.append("no task with a known optimum: the aggregates are over all tasks")
    scored = planted or tasks
    anchors = {t: task_anchor_scores(t, config.split) for t in tasks}
    report = BenchReport(rows, {}, {}, [], anchors, settings, scored, notes)
    kw: dict[str, Any] = {"reps": config.reps, "confidence": config.confidence, "seed": 0}
    finite: dict[str, np.ndarray] = {}
    for agent in report.agents:
        matrix = report.score_matrix(agent)
        if np.isfinite(matrix).all():
            finite[agent] = matrix
        else:
            notes.append(f"{agent} has non-finite scores: left out of the aggregates")
        report.per_task[agent] = {}
        for task in tasks:
            mine = [r for r in rows if r["agent"] == agent and r["task"] == task]
            column = np.array([r["score"] for r in mine], dtype=float)
            stats = {"median": float(np.median(column)), "n": len(column)}
            if np.isfinite(column).all():
                one = bench_stats.aggregate({agent: column[:, None]}, **kw)[agent]
                stats |= {k: one[k] for k in ("iqm", "iqm_low", "iqm_high", "mean")}
            else:
                stats |= dict.fromkeys(("iqm", "iqm_low", "iqm_high", "mean"), math.nan)
            for key in ("growth", "sharpe", "annual_turnover", "annual_costs", "max_drawdown"):
                values = [r[key] for r in mine if np.isfinite(r[key])]  # cash has no Sharpe
                stats[key] = float(np.median(values)) if values else math.nan
            stats["reference_turnover"] = anchors[task]["reference"]["annual_turnover"]
            report.per_task[agent][task] = stats
    if finite:
        report.aggregates = bench_stats.aggregate(finite, **kw)
    for agent, stats in report.aggregates.items():  # turnover and costs beside the score
        mine = [r for r in rows if r["agent"] == agent and r["task"] in scored]
        for key in ("annual_turnover", "annual_costs"):
            stats[key] = float(np.median([r[key] for r in mine]))
    for x in finite:
        for y in finite:
            if x != y:
                p, low, high = bench_stats.probability_of_improvement(finite[x], finite[y], **kw)
                report.improvement.append(
                    {"x": x, "y": y, "probability": p, "low": low, "high": high}
                )
    return report


# ------------------------------------------------------------------------------- run
def run_bench(config: BenchConfig, progress: Progress | None = None) -> BenchReport:
    """Run every (agent, task, seed) job, aggregate, write the report into ``config.output``.

    ``progress(done, total, description)`` is called before each job (with the job's
    description) and once at the end.
    """
    from marketarena.agents.llm_server import local_model_served

    config.validate()
    with local_model_served(config.agents, config.llm) as llm:
        return _run_bench(replace(config, llm=llm), progress)


def _run_bench(config: BenchConfig, progress: Progress | None) -> BenchReport:
    agents = resolve_agents(config)
    tasks, seeds = config.task_names(), config.seed_list()
    for task in tasks:  # the anchors first: a job's score needs them
        task_anchor_scores(task, config.split)
    jobs = [Job(a, t, s) for t in tasks for a in agents for s in seeds]
    settings = {
        "config": config.as_dict(),
        "seeds": list(seeds),
        "tasks": {t: _task_settings(t) for t in tasks},
        "agents": {
            a.name: {
                "kind": a.kind,
                "spec": a.spec,
                "config": str(a.config_path) if a.config_path else None,
            }
            for a in agents
        },
        "git_sha": tracking.git_sha(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mlflow_run_id": None,
    }
    with _parent_run(config) as parent:
        parent_id = None
        if parent is not None:
            parent_id = settings["mlflow_run_id"] = parent.info.run_id
            _log_bench_params(config, settings)
        backend = config.backend
        # on Ray, each job's MLflow run is made here, and a retried task resumes it
        run_ids = _job_runs(config, jobs, parent_id) if backend.is_ray else [None] * len(jobs)
        shared = {"markets": {t: get_task(t).market() for t in tasks}, "parent": parent_id}
        outcome = run_tasks(
            backend,
            _bench_job,
            [
                Task(job.describe(), (job, config, run_id), **_job_resources(job, config))
                for job, run_id in zip(jobs, run_ids, strict=True)
            ],
            shared if backend.is_ray else {"parent": parent_id},
            progress=progress,
        )
        rows: list[dict[str, Any]] = outcome.values
        if progress is not None:
            progress(len(jobs), len(jobs), "aggregating")
        if backend.is_ray:
            settings["backend"] = outcome.summary(backend)
        report = summarise(rows, config, settings)
        if outcome.retries:
            report.notes.append(
                f"ray: {outcome.retries} task attempt(s) retried after a worker or node "
                "failure; every job's result was gathered once"
            )
        files = report.write(config.output)
        if parent is not None:
            _log_aggregates(report, files)
    return report


def _bench_job(
    args: tuple[Job, BenchConfig, str | None], shared: Mapping[str, Any], report: Any
) -> dict[str, Any]:
    """One job, as :func:`run_tasks` runs it: in its MLflow run when MLflow is on (made here
    under the bench's run, or made by the driver and resumed: ``run_id``)."""
    job, config, run_id = args
    if shared.get("markets"):
        use_task_markets(shared["markets"])
    with _job_run(config, job, run_id, shared.get("parent")) as run:
        row = run_job(job, config, run.info.run_id if run is not None else None)
        if run is not None:
            _log_job(row)
    return row


def _job_resources(job: Job, config: BenchConfig) -> dict[str, Any]:
    """A job's Ray resources: a training's torch threads as CPUs (else :func:`job_cpus`), and
    one request stream of the LLM endpoint for an LLM agent."""
    out: dict[str, Any] = {"num_cpus": job_cpus([job.agent.spec])}
    if job.agent.kind == "rl":
        threads = training_config(job.agent, job.task, job.seed, config).algo.torch_threads
        out["num_cpus"] = float(threads)
    if uses_llm(job.agent.spec):
        out["resources"] = {llm_resource(config.llm.get("base_url")): 1.0}
    return out


def _task_settings(name: str) -> dict[str, Any]:
    task = get_task(name)
    data = task.market()
    return {
        "env_id": task.env_id,
        "known_optimum": task.known_optimum,
        "reference": task.reference,
        "baseline": task.baseline,
        "data": data.name,
        "data_sha256": data.content_hash(),
        "splits": {k: list(v) for k, v in task.splits().items()},
    }


# ----------------------------------------------------------------------------- MLflow
@contextmanager
def _parent_run(config: BenchConfig) -> Iterator[Any]:
    if not config.mlflow:
        yield None
        return
    with tracking.mlflow_run(config.experiment, "bench", {"kind": "bench"}) as run:
        yield run


def _job_tags(job: Job) -> dict[str, str]:
    return {"kind": "bench_job", "agent": job.agent.name, "task": job.task, "seed": str(job.seed)}


def _job_run_name(job: Job) -> str:
    return f"{job.agent.name} | {job.task} | seed {job.seed}"


def _job_run(
    config: BenchConfig, job: Job, run_id: str | None = None, parent_id: str | None = None
) -> Any:
    """The job's MLflow run: ``run_id`` resumed, else a new run nested under ``parent_id``
    (or under the active run)."""
    if not config.mlflow:
        return nullcontext(None)
    import mlflow

    if run_id is not None:
        return tracking.mlflow_run(config.experiment, None, _job_tags(job), run_id=run_id)
    if parent_id is None:
        parent = mlflow.active_run()
        parent_id = parent.info.run_id if parent else None
    return tracking.mlflow_run(
        config.experiment,
        _job_run_name(job),
        _job_tags(job),
        nested=True,
        parent_run_id=parent_id,
    )


def _job_runs(config: BenchConfig, jobs: Sequence[Job], parent_id: str | None) -> list[str | None]:
    """A run per job under the bench's run, made before the jobs start (Ray): a task
    retried after a node failure resumes its job's run instead of making a second one."""
    if not config.mlflow:
        return [None] * len(jobs)
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = mlflow.MlflowClient(tracking.tracking_uri())
    experiment = tracking.set_experiment(config.experiment)
    out: list[str | None] = []
    for job in jobs:
        tags = _job_tags(job)
        if parent_id is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent_id
        run = client.create_run(experiment.experiment_id, tags=tags, run_name=_job_run_name(job))
        out.append(run.info.run_id)
    return out


def _log_bench_params(config: BenchConfig, settings: dict[str, Any]) -> None:
    import mlflow

    c = settings["config"]
    mlflow.log_params(
        {
            "agents": " ".join(c["agents"]),
            "tasks": " ".join(c["tasks"]),
            "seeds": " ".join(map(str, c["seeds"])),
            "timesteps": str(c["timesteps"]),
            "reps": c["reps"],
            "confidence": c["confidence"],
        }
    )
    mlflow.log_params({f"data.{t}.sha256": s["data_sha256"] for t, s in settings["tasks"].items()})


def _log_job(row: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params({k: str(row[k]) for k in ("agent", "kind", "spec", "task", "seed")})
    values = {f"test/{k}": float(row[k]) for k in ROW_METRICS}
    mlflow.log_metrics({k: v for k, v in values.items() if math.isfinite(v)})


def _log_aggregates(report: BenchReport, files: dict[str, Path]) -> None:
    import mlflow

    metrics: dict[str, float] = {}
    for agent, stats in report.aggregates.items():
        metrics |= {tracking.metric_key("bench", agent, k): v for k, v in stats.items()}
    mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
    for path in files.values():
        mlflow.log_artifact(str(path), artifact_path="report")
