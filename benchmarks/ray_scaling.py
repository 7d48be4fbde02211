"""Scaling on Ray: one sweep of 32 backtests and 8 short trainings on 1 and 2 Ray workers.

The sweep is a real ``marketarena bench`` (:func:`marketarena.training.bench.run_bench`):
agents ``random:5``, ``equal_weight:10`` and a tiny PPO (8 envs of 2 x 256 steps a rollout,
``--timesteps`` 2,048) on the tasks Momentum and MeanReversion, 4 seeds each; with each
task's reference and baseline that is 4 x 2 x 4 = 32 backtests and 2 x 4 = 8 trainings (each
followed by its backtest), 40 Ray tasks. It runs three times in the same process: on the
local backend (one job after the other, no Ray), then on a local Ray of 1 CPU and of 2 CPUs
(``ray.init(num_cpus=...)``); then all three again with 8,192-step trainings. Each Ray run
first warms its workers (one task per CPU imports marketarena, as every worker's first task
must), so that the timings compare the sweeps, not the workers' start; that start is
reported on its own.

Reported: the wall time of each sweep (the whole ``run_bench``: anchors, jobs, aggregation,
report files), the scaling efficiency ``t1 / (2 x t2)`` (1 is linear), the jobs' own seconds
(summed) against the wall time, whether the three runs' rows are equal (they must be), and
the load average before and after (the machine is shared; the figures move with it). A
projection to a cluster is stated from these components, not measured.

The section lifts the suite's one-core pinning (``taskset`` in run.sh) for its own run: it
measures the use of more cores. Run alone: ``python benchmarks/ray_scaling.py [--quick]``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECTION = "ray_scaling"
TINY_PPO = """\
name: tiny
env:
  window: 8
  episode_length: 64
algo:
  name: ppo
  total_timesteps: 100000
  n_envs: 8
  net_arch: [16]
  hyperparameters: {n_steps: 256, batch_size: 256, n_epochs: 2}
training:
  eval_every: 1024
  checkpoint_every: 1000000
"""
TASKS = ("Momentum", "MeanReversion")


def _warm(args: Any, shared: Any, report: Any) -> int:
    """A worker's first task: import what every job imports, hold the CPU a moment (so that
    each warm-up task gets a worker of its own)."""
    import marketarena.training.bench  # noqa: F401

    time.sleep(1.0)
    return os.getpid()


def _sweep(root: Path, backend: Any, seeds: int, timesteps: int) -> dict[str, Any]:
    from marketarena.training.bench import BenchConfig, run_bench

    tiny = root / "tiny.yaml"
    tiny.write_text(TINY_PPO)
    config = BenchConfig(
        agents=("random:5", "equal_weight:10", f"ppo:{tiny}"),
        tasks=TASKS,
        seeds=seeds,
        timesteps=timesteps,
        output=root / f"out-{backend.kind}-{time.monotonic_ns()}",
        reps=200,
        backend=backend,
    )
    started = time.perf_counter()
    report = run_bench(config)
    wall = time.perf_counter() - started
    rows = report.rows
    return {
        "wall_s": wall,
        "jobs": len(rows),
        "trainings": sum(r["kind"] == "rl" for r in rows),
        "job_seconds": sum(r["seconds"] for r in rows),
        "rows": [{k: v for k, v in r.items() if k not in ("seconds", "model")} for r in rows],
        "backend": report.settings.get("backend"),
    }


def _three(root: Path, seeds: int, timesteps: int) -> dict[str, Any]:
    """The sweep on the local backend, then on a local Ray of 1 and of 2 CPUs."""
    import ray

    from marketarena.evaluation.backends import Backend, Task, run_tasks

    out: dict[str, Any] = {"timesteps": timesteps}
    out["local"] = _sweep(root, Backend(), seeds, timesteps)
    for workers in (1, 2):
        ray.init(
            address="local",
            num_cpus=workers,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        try:
            t0 = time.perf_counter()
            tasks = [Task(f"warm {i}", i) for i in range(workers)]
            pids = run_tasks(Backend("ray"), _warm, tasks).values
            warm = time.perf_counter() - t0
            result = _sweep(root, Backend("ray"), seeds, timesteps)
        finally:
            ray.shutdown()
        result["warm_up_s"] = warm
        result["warm_workers"] = len(set(pids))
        out[f"ray_{workers}"] = result
    t1, t2 = out["ray_1"]["wall_s"], out["ray_2"]["wall_s"]
    out["efficiency"] = t1 / (2 * t2)
    out["speedup"] = t1 / t2
    out["rows_equal"] = out["local"]["rows"] == out["ray_1"]["rows"] == out["ray_2"]["rows"]
    # what does not spread over workers: the sweep's wall time beyond its jobs' own seconds
    local = out["local"]
    out["serial_s"] = max(local["wall_s"] - local["job_seconds"], 0.0)
    for key in ("local", "ray_1", "ray_2"):
        out[key].pop("rows")
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """The sweep with 2,048-step trainings (the section's figures and target), then the same
    sweep with 8,192-step trainings (``longer``: where Ray's per-task costs weigh less)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack benchmarks/
    seeds, sizes = (2, (1024,)) if quick else (4, (2048, 8192))
    pinned, cwd = os.sched_getaffinity(0), os.getcwd()
    os.sched_setaffinity(0, range(os.cpu_count() or 1))  # the cores Ray is to use
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="marketarena-ray-scaling-") as tmp:
            root = Path(tmp)
            os.chdir(root)
            runs = [_three(root, seeds, timesteps) for timesteps in sizes]
    finally:
        os.chdir(cwd)
        os.sched_setaffinity(0, pinned)
    out = {"seeds": seeds, "tasks": list(TASKS), **runs[0], "load_before": load_before}
    if len(runs) > 1:
        out["longer"] = runs[1]
    out["load_after"] = os.getloadavg()
    return out


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"case": "sweep, local backend", "value": result["local"]["wall_s"], "unit": "s"},
        {"case": "sweep, Ray 1 worker", "value": result["ray_1"]["wall_s"], "unit": "s"},
        {"case": "sweep, Ray 2 workers", "value": result["ray_2"]["wall_s"], "unit": "s"},
        {"case": "scaling efficiency t1 / (2 t2)", "value": result["efficiency"], "unit": ""},
        {"case": "rows equal on all three", "value": str(result["rows_equal"]), "unit": ""},
        *(
            [
                {
                    "case": f"scaling efficiency, {result['longer']['timesteps']:,}-step trainings",
                    "value": result["longer"]["efficiency"],
                    "unit": "",
                }
            ]
            if "longer" in result
            else []
        ),
    ]


def docs(result: dict[str, Any]) -> list[str]:
    """The section of docs/BENCHMARKS.md below its heading."""
    local, r1, r2 = result["local"], result["ray_1"], result["ray_2"]
    load = " / ".join(f"{x:.2f}" for x in result["load_before"])
    after = " / ".join(f"{x:.2f}" for x in result["load_after"])
    table = [
        "| run | wall time (s) | jobs' own seconds, summed | warm-up (s) |",
        "|---|---:|---:|---:|",
        f"| local backend | {local['wall_s']:.1f} | {local['job_seconds']:.1f} | - |",
        f"| Ray, 1 worker | {r1['wall_s']:.1f} | {r1['job_seconds']:.1f} | {r1['warm_up_s']:.1f} |",
        f"| Ray, 2 workers | {r2['wall_s']:.1f} | {r2['job_seconds']:.1f} | "
        f"{r2['warm_up_s']:.1f} |",
    ]
    return [
        f"`marketarena bench` of {local['jobs'] - local['trainings']} backtests and "
        f"{local['trainings']} short PPO trainings ({', '.join(result['tasks'])}, "
        f"{result['seeds']} seeds, {result['timesteps']:,} steps a training), as one sweep on "
        "the local backend and on a local Ray of 1 and of 2 CPUs, in the same run "
        "([ray_scaling.py](../benchmarks/ray_scaling.py)). Load average before: "
        f"{load}; after: {after}.",
        "",
        *table,
        "",
        f"- Scaling efficiency t1 / (2 x t2): **{result['efficiency']:.2f}** (speedup "
        f"{result['speedup']:.2f} on 2 workers; the issue's target is 0.8).",
        f"- The jobs' own seconds, summed, grew {r2['job_seconds'] / r1['job_seconds']:.2f}x "
        "from 1 worker to 2: two jobs at once ran slower each, on two cores that the driver, "
        "Ray's own processes and the machine's other load (above) also use; that, more than "
        "scheduling, is what keeps the efficiency from 1.",
        *_longer(result),
        f"- The rows of the three runs are equal: {result['rows_equal']}.",
        f"- Not spread over workers: {result['serial_s']:.1f} s of the local sweep is the "
        "driver's own (anchors, aggregation and bootstrap, report files).",
        "- Projection to a cluster (stated, not measured): the jobs are independent, so with W "
        "worker CPUs a sweep takes about the serial part + the jobs' seconds / W + one "
        "worker start (a few seconds, once per worker), as long as there are at least W jobs; "
        "the market data crosses the network once per node (the object store), and an LLM "
        "endpoint caps its own jobs at the capacity its resource declares.",
    ]


def _longer(result: dict[str, Any]) -> list[str]:
    """The line on the same sweep with longer trainings, when it ran."""
    longer = result.get("longer")
    if not longer:
        return []
    l1, l2 = longer["ray_1"], longer["ray_2"]
    return [
        f"- The same sweep with {longer['timesteps']:,}-step trainings: local "
        f"{longer['local']['wall_s']:.1f} s, Ray 1 worker {l1['wall_s']:.1f} s, 2 workers "
        f"{l2['wall_s']:.1f} s: efficiency **{longer['efficiency']:.2f}** (rows equal: "
        f"{longer['rows_equal']}). On this shared 2-core machine the efficiency moves by "
        "about 0.1 from run to run at either length (the driver, Ray's own processes and "
        "other load share the two cores with the workers)."
    ]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = run(quick=args.quick)
    print(json.dumps(figures, indent=2, default=str))
    print("\n".join(docs(figures)))
