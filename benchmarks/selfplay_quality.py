"""Does self-play help? Self-play PPO against PPO trained alone and fixed baselines on the
diagnostic tasks' planted-signal markets, scored on each task's test split.

Arms, each trained ``--timesteps`` steps per (task, seed) from configs/bench/ppo.yaml's env and
PPO settings (the shipped bench config: one network for every asset, a 10/50 no-trade band):

* ``ppo``: :func:`~marketarena.training.train.train` on ``PortfolioVectorEnv`` (64 envs), the
  final model scored (not the validation-selected one, so that every arm is picked the same
  way: the model at the end of its budget);
* ``selfplay_relative``: :func:`~marketarena.training.selfplay.train_selfplay`, 64 arenas of 2
  seats (one learner seat each: the same 64-env batch), the learner's reward its log return
  minus the opponent's, opponents drawn from the latest self (0.4), the last 5 snapshots
  (0.3, one every fifth of the budget) and ``equal_weight:21`` / ``buy_and_hold`` (0.3);
* ``selfplay_absolute`` (``--arms``): the same league with the plain log-return reward. The
  tasks' markets are close-only, so the arena runs without price impact, and with an absolute
  reward the opponents cannot change anything the learner sees or earns: this arm is PPO on
  another env implementation, a control that should match ``ppo``;
* fixed baselines, no training: ``equal_weight:21``, ``buy_and_hold``, ``random:21``.

Every model and baseline is backtested once on the task's test split under the task's rules
(:func:`~marketarena.evaluation.task_scores.run_on_split`) and scored as ``marketarena bench``
does (0 = the task's baseline, 1 = its reference, after costs). The table: IQM over tasks x
seeds with its 95% stratified-bootstrap interval (rliable's method), the median annual
turnover and costs (fraction of the initial cash a year), and the probability that each
self-play arm improves on ``ppo``.

    python benchmarks/selfplay_quality.py [--tasks Momentum LeadLag] [--seeds 5]
        [--timesteps 100000] [--arms ppo selfplay_relative] [--output reports/selfplay_quality]

Writes ``results.json`` (every job, the aggregates, the settings) in ``--output``; prints one
line per finished job with the time so far.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from marketarena.agents.registry import make_agent
from marketarena.agents.sb3_agent import SB3Agent
from marketarena.envs.tasks import get_task
from marketarena.evaluation import bench_stats
from marketarena.evaluation.task_scores import run_on_split
from marketarena.training.bench import PLANTED, score_result
from marketarena.training.config import load_config
from marketarena.training.selfplay import SelfPlayConfig, train_selfplay
from marketarena.training.train import train

ROOT = Path(__file__).resolve().parents[1]
BENCH_PPO = ROOT / "configs" / "bench" / "ppo.yaml"
BASELINES = ("equal_weight:21", "buy_and_hold", "random:21")
TRAINED = ("ppo", "selfplay_relative", "selfplay_absolute")


def ppo_config(task: str, seed: int, timesteps: int, out: Path) -> Any:
    return load_config(
        BENCH_PPO,
        extra={
            "name": f"ppo_{task}",
            "seed": seed,
            "env": {"data": get_task(task).env_id},
            "algo": {"total_timesteps": timesteps},
            "training": {
                "output_dir": str(out),
                "progress_bar": False,
                "validation_report": False,
                "eval_every": timesteps,
                "checkpoint_every": timesteps,
            },
            "mlflow": {"enabled": False},
        },
    )


def selfplay_config(
    task: str, seed: int, timesteps: int, reward_mode: str, out: Path
) -> SelfPlayConfig:
    bench = yaml.safe_load(BENCH_PPO.read_text())
    algo = {k: v for k, v in bench["algo"].items() if k != "n_envs"}
    algo["total_timesteps"] = timesteps
    return SelfPlayConfig.model_validate(
        {
            "name": f"selfplay_{reward_mode}_{task}",
            "seed": seed,
            "env": {**bench["env"], "data": get_task(task).env_id},
            "arena": {
                "n_agents": 2,
                "learner_seats": 1,
                "n_markets": bench["algo"]["n_envs"],
                "reward_mode": reward_mode,
            },
            "league": {
                "fixed": ["equal_weight:21", "buy_and_hold"],
                "snapshot_every": max(timesteps // 5, 1),
                "max_snapshots": 5,
                "probabilities": {"latest": 0.4, "snapshots": 0.3, "fixed": 0.3},
            },
            "algo": algo,
            "training": {"output_dir": str(out), "progress_bar": False},
            "mlflow": {"enabled": False},
        }
    )


def run_job(arm: str, task: str, seed: int, timesteps: int, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    overrides: dict[str, Any] = {}
    if arm == "ppo":
        config = ppo_config(task, seed, timesteps, out)
        agent: Any = SB3Agent.from_file(train(config).model_path, name=arm)
        overrides = config.env.to_settings().observation()
    elif arm.startswith("selfplay_"):
        config = selfplay_config(task, seed, timesteps, arm.removeprefix("selfplay_"), out)
        agent = SB3Agent.from_file(train_selfplay(config).model_path, name=arm)
        overrides = config.env.to_settings().observation()
    else:
        agent = make_agent(arm)
    result = run_on_split(agent, task, seed, "test", **overrides)
    row = {"arm": arm, "task": task, "seed": seed, **score_result(result, task, "test")}
    row["seconds"] = time.perf_counter() - started
    return row


def summarise(rows: list[dict[str, Any]], arms: list[str], tasks: list[str], seeds: list[int]):
    scores = {}
    for arm in arms:
        grid = np.full((len(seeds), len(tasks)), np.nan)
        for r in rows:
            if r["arm"] == arm:
                grid[seeds.index(r["seed"]), tasks.index(r["task"])] = r["score"]
        scores[arm] = grid
    aggregates = bench_stats.aggregate(scores)
    improvement = {
        arm: bench_stats.probability_of_improvement(scores[arm], scores["ppo"])
        for arm in arms
        if arm.startswith("selfplay_") and "ppo" in scores
    }
    return scores, aggregates, improvement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(PLANTED))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--arms", nargs="+", default=["ppo", "selfplay_relative", *BASELINES])
    parser.add_argument("--output", default="reports/selfplay_quality")
    args = parser.parse_args()
    tasks = [get_task(t).name for t in args.tasks]
    seeds = list(range(args.seeds))
    unknown = sorted(set(args.arms) - {*TRAINED, *BASELINES})
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {[*TRAINED, *BASELINES]}")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    jobs = [(a, t, s) for t in tasks for s in seeds for a in args.arms]
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (arm, task, seed) in enumerate(jobs, 1):
            row = run_job(arm, task, seed, args.timesteps, Path(tmp))
            rows.append(row)
            print(
                f"[{i}/{len(jobs)} {time.perf_counter() - started:.0f}s] {arm} on {task} "
                f"seed {seed}: score {row['score']:+.2f}, turnover {row['annual_turnover']:.1f}"
                f"/yr, costs {row['annual_costs']:.2%}/yr ({row['seconds']:.0f}s)",
                flush=True,
            )
    scores, aggregates, improvement = summarise(rows, args.arms, tasks, seeds)
    print(f"\n{len(tasks)} task(s) x {len(seeds)} seeds, {args.timesteps:,} timesteps a run")
    print(f"{'arm':<20} {'IQM':>6}  {'95% interval':<16} {'turnover/yr':>11} {'costs/yr':>9}")
    for arm in args.arms:
        a = aggregates[arm]
        mine = [r for r in rows if r["arm"] == arm]
        turnover = float(np.median([r["annual_turnover"] for r in mine]))
        costs = float(np.median([r["annual_costs"] for r in mine]))
        interval = f"[{a['iqm_low']:+.2f}, {a['iqm_high']:+.2f}]"
        print(f"{arm:<20} {a['iqm']:+6.2f}  {interval:<16} {turnover:11.2f} {costs:9.2%}")
    for arm, (p, low, high) in improvement.items():
        print(f"P({arm} > ppo) = {p:.2f} [{low:.2f}, {high:.2f}]")
    (output / "results.json").write_text(
        json.dumps(
            {
                "settings": vars(args) | {"tasks": tasks, "seeds": seeds},
                "jobs": rows,
                "aggregates": aggregates,
                "probability_of_improvement_over_ppo": improvement,
                "scores": {k: v.tolist() for k, v in scores.items()},
            },
            indent=2,
        )
    )
    print(f"results: {output / 'results.json'}")


if __name__ == "__main__":
    main()
