"""SB3 PPO training fps with 1 and 2 torch threads, on an idle CPU and next to a busy process.

This backs the ``algo.torch_threads: 1`` default of the training configs. The training run is
``ppo_share``'s headline setting: ``PPO("MlpPolicy")`` with ``net_arch=[64, 64]`` on
``VecMonitor(SB3PortfolioVecEnv(PortfolioVectorEnv(64, ...)))`` over close-only synthetic data
(``gbm_market(30, 5000, seed=0)``, window 32), ``n_steps=64`` (rollouts of 4,096 transitions),
batch 64, 10 epochs, on the CPU. Each timed run builds a fresh model (seed 0) and times
``learn()`` for a fixed number of timesteps.

Four conditions: ``torch.set_num_threads(1)`` and ``(2)``, each (a) with nothing else started
by the benchmark and (b) while a busy-loop subprocess (``while True: pass``), pinned to one
CPU of this process's affinity (the last one), holds that CPU. The conditions are interleaved
within each repeat, so slow drift of the machine hits them alike; the figure is the median
over repeats. Besides fps, the process's CPU time per wall second during ``learn()`` shows
whether threads spin while waiting for each other.

What "holding one core" means depends on the affinity the benchmark runs with: pinned to one
CPU (``taskset -c 1``, as the suite runs), the busy process shares that CPU with every torch
thread; with two or more CPUs it takes one of them, and a second torch thread has to share it.
The collapse of two threads next to a busy core shows in the second setting, so run this module
without ``taskset`` (or with two CPUs) as well as pinned; there, on a loaded machine, the
two-thread runs can take minutes.

Run: ``taskset -c 1 .venv/bin/python benchmarks/torch_threads.py [--quick]``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

SECTION = "torch_threads"
THREADS = (1, 2)
LOADS = ("idle", "busy")
N_ENVS, N_STEPS = 64, 64
FULL = {"timesteps": 8_192, "repeats": 3}
QUICK = {"timesteps": 4_096, "repeats": 1}
BUSY_LOOP = "while True:\n    pass\n"


def _start_busy(cpu: int) -> subprocess.Popen:
    """A subprocess spinning on ``cpu``; returns once it runs there."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL)
    os.sched_setaffinity(proc.pid, {cpu})
    time.sleep(0.3)  # past the interpreter's start-up, into the loop
    if proc.poll() is not None:
        raise RuntimeError(f"the busy-loop process exited with {proc.returncode}")
    return proc


def _stop_busy(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _learn(data: Any, threads: int, timesteps: int) -> dict[str, float]:
    import torch
    from ppo_share import BATCH_SIZE, N_EPOCHS, NET_ARCH, _ours_env
    from stable_baselines3 import PPO

    torch.set_num_threads(threads)
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"torch runs {torch.get_num_threads()} threads, not {threads}")
    venv, _ = _ours_env(N_ENVS, data)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=N_STEPS,
        batch_size=BATCH_SIZE,
        n_epochs=N_EPOCHS,
        policy_kwargs={"net_arch": list(NET_ARCH)},
        device="cpu",
        seed=0,
        verbose=0,
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=timesteps)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    venv.close()
    return {"fps": model.num_timesteps / wall, "wall_s": wall, "cpu_per_wall": cpu / wall}


def run(quick: bool = False) -> dict[str, Any]:
    import stable_baselines3
    import torch
    from ppo_share import BATCH_SIZE, N_EPOCHS, NET_ARCH, _market_data

    budget = QUICK if quick else FULL
    cpus = sorted(os.sched_getaffinity(0))
    busy_cpu = cpus[-1]
    threads_before = torch.get_num_threads()
    load_before = os.getloadavg()
    started = time.perf_counter()
    data = _market_data()
    for threads in THREADS:  # warm-up: lazy imports, first passes, the thread pool
        _learn(data, threads, N_ENVS * N_STEPS // 8)

    samples: dict[tuple[int, str], list[dict[str, float]]] = {
        (t, load): [] for t in THREADS for load in LOADS
    }
    try:
        for _ in range(budget["repeats"]):
            for threads in THREADS:
                for load in LOADS:
                    busy = _start_busy(busy_cpu) if load == "busy" else None
                    try:
                        samples[(threads, load)].append(_learn(data, threads, budget["timesteps"]))
                    finally:
                        if busy is not None:
                            _stop_busy(busy)
    finally:
        torch.set_num_threads(threads_before)

    cases = []
    for (threads, load), runs in samples.items():
        fps = [r["fps"] for r in runs]
        cases.append(
            {
                "threads": threads,
                "load": load,
                "fps": statistics.median(fps),
                "fps_min": min(fps),
                "fps_max": max(fps),
                "wall_s": statistics.median(r["wall_s"] for r in runs),
                "cpu_per_wall": statistics.median(r["cpu_per_wall"] for r in runs),
                "per_repeat": runs,
            }
        )
    return {
        "config": {
            "data": "gbm_market(30, 5000, seed=0), close only, window 32",
            "n_envs": N_ENVS,
            "n_steps": N_STEPS,
            "net_arch": list(NET_ARCH),
            "batch_size": BATCH_SIZE,
            "n_epochs": N_EPOCHS,
            "timesteps": budget["timesteps"],
            "repeats": budget["repeats"],
            "quick": quick,
            "affinity": cpus,
            "logical_cpus": os.cpu_count(),
            "busy_cpu": busy_cpu,
            "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg()),
            "torch": torch.__version__,
            "torch_parallel_info": torch.__config__.parallel_info(),
            "stable_baselines3": stable_baselines3.__version__,
        },
        "cases": cases,
        "seconds": time.perf_counter() - started,
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    cfg = result["config"]
    fps = {(c["threads"], c["load"]): c["fps"] for c in result["cases"]}
    shared = len(cfg["affinity"]) == 1
    where = (
        f"busy loop on CPU {cfg['busy_cpu']}, the only CPU this process may use"
        if shared
        else f"busy loop on CPU {cfg['busy_cpu']} of this process's CPUs {cfg['affinity']}"
    )
    base = (
        f"n_envs={cfg['n_envs']} x n_steps={cfg['n_steps']}, net {cfg['net_arch']}, "
        f"{cfg['timesteps']:,} timesteps, median of {cfg['repeats']}"
    )
    out: list[dict[str, Any]] = []

    def add(case: str, value: Any, unit: str, note: str) -> None:
        out.append({"section": SECTION, "case": case, "value": value, "unit": unit, "note": note})

    for c in result["cases"]:
        load = "idle" if c["load"] == "idle" else "one core busy"
        add(
            f"{c['threads']} torch thread(s), {load}",
            c["fps"],
            "timesteps/s",
            f"range {c['fps_min']:,.0f}..{c['fps_max']:,.0f}; {c['cpu_per_wall']:.2f} CPU s per "
            f"wall s; {base}" + (f"; {where}" if c["load"] == "busy" else ""),
        )
    for load, label in (("idle", "idle"), ("busy", "one core busy")):
        add(
            f"2 threads / 1 thread, {label}",
            fps[(2, load)] / fps[(1, load)],
            "x",
            "fps ratio, same run; above 1: the second thread pays",
        )
    for threads in THREADS:
        add(
            f"one core busy / idle, {threads} thread(s)",
            fps[(threads, "busy")] / fps[(threads, "idle")],
            "x",
            f"fps ratio, same run; {where}",
        )
    add(
        "wall time",
        result["seconds"],
        "s",
        f"affinity {cfg['affinity']} of {cfg['logical_cpus']} CPUs; load average "
        f"{cfg['loadavg_before'][0]:.2f} before, {cfg['loadavg_after'][0]:.2f} after",
    )
    return out


if __name__ == "__main__":
    from common import section_main

    section_main(__doc__, run, rows, "one repeat, one rollout")
