"""The single-env step path: its speed against the bare-numpy reference, and where it goes.

For 20 and 30 assets (window 32, costs on, close-only data: the throughput section's setup),
``PortfolioEnv`` through ``gymnasium.make`` and the bare-numpy reference with the same
observation size (``reference.py``, one env) are timed in alternating rounds: each round times
the reference, then ours, for each asset count, so that drift in the machine's speed (another
process on the machine, frequency changes) hits both sides of every ratio alike. The figure is
the median over rounds of the per-round ratio.

Then the env runs under cProfile with random actions, and each stage of the step is reported
as its inclusive time per step and its share of ``PortfolioEnv.step`` (cProfile's overhead per
Python call inflates pure-Python stages: the shares locate the time, the ratio measures it).
A stage whose function does not exist in the code measured is reported as missing, so that
profiles of different versions of the env share one table.

The machine's load during the run is recorded: the load average, and each CPU's busy share
from ``/proc/stat`` (this process is pinned by ``run.sh``; busy time on the other CPUs is
other work).

A section of the suite (``python benchmarks/run.py --only profile_step``). Alone, printing
its rows, or saving the result as JSON (e.g. a baseline to compare a change against)::

    python benchmarks/profile_step.py [--quick] [--save PATH]

``docs()`` renders the section, with a saved baseline (``results/profile_step_before.json``)
side by side when one exists.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from common import time_case
from throughput import EPISODE, WINDOW, close_only, reference_case, single_env_case

import marketarena.envs  # noqa: F401

_HERE = Path(__file__).resolve().parent
#: a saved run of this section to compare against (see the module docstring)
BASELINE = _HERE / "results" / "profile_step_before.json"
ASSETS = (20, 30)
#: the issue's target: the single env at >= this fraction of the reference's steps per second
TARGET_RATIO = 0.6

#: (label, file suffix, function name) of the stages of one step, inclusive times; an indented
#: label is part of the stage above it
STAGES = (
    ("action validation + mapping", "envs/core.py", "actions_to_weights"),
    ("simulator step (orders, fills, costs, mark)", "envs/simulator.py", "step_weights"),
    ("  targets to orders", "envs/simulator.py", "_orders_from_weights"),
    ("  fills, costs, mark", "envs/simulator.py", "_execute"),
    ("    fill and mark prices", "envs/simulator.py", "_prices"),
    ("    sells", "envs/simulator.py", "_sell"),
    ("    buys within the cash", "envs/simulator.py", "_buy"),
    ("    costs and turnover", "envs/simulator.py", "_charge"),
    ("    book and mark", "envs/simulator.py", "_book"),
    ("reward", "envs/rewards.py", "__call__"),
    ("termination checks", "envs/simulator.py", "breached"),
    ("observation", "envs/portfolio_env.py", "_observation"),
    ("info dict", "envs/portfolio_env.py", "_info"),
    ("current weights", "envs/simulator.py", "weight"),
)
REST = "rest of PortfolioEnv.step (checks, glue, history, tuple)"
WRAPPERS = "gymnasium.make wrappers (share of the whole call)"


def _cpu_times() -> list[tuple[int, int]] | None:
    """(busy, total) jiffies per CPU from /proc/stat, or None where there is none."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    out = []
    for line in lines:
        if line.startswith("cpu") and line[3:4].isdigit():
            values = [int(x) for x in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            out.append((sum(values) - idle, sum(values)))
    return out


def _busy_shares(before: list[tuple[int, int]] | None) -> list[float] | None:
    after = _cpu_times()
    if before is None or after is None or len(before) != len(after):
        return None
    return [(b1 - b0) / max(t1 - t0, 1) for (b0, t0), (b1, t1) in zip(before, after, strict=True)]


def ratios(rounds: int, min_seconds: float, repeats: int) -> dict[str, Any]:
    """Per asset count: steps/s of the reference and ours per round, and their ratio."""
    cases = {n: (reference_case(1, n), single_env_case(n)) for n in ASSETS}
    per_round: dict[int, list[dict[str, float]]] = {n: [] for n in ASSETS}
    for _ in range(rounds):
        for n, (ref_case, ours_case) in cases.items():
            ref = time_case(ref_case, min_seconds=min_seconds, repeats=repeats)
            ours = time_case(ours_case, min_seconds=min_seconds, repeats=repeats)
            per_round[n].append(
                {
                    "reference": ref["steps_per_second"],
                    "ours": ours["steps_per_second"],
                    "ratio": ours["steps_per_second"] / ref["steps_per_second"],
                }
            )
    out = {}
    for n, runs in per_round.items():
        out[str(n)] = {
            "ratio": statistics.median(r["ratio"] for r in runs),
            "ratio_min": min(r["ratio"] for r in runs),
            "ratio_max": max(r["ratio"] for r in runs),
            "reference_steps_per_second": statistics.median(r["reference"] for r in runs),
            "ours_steps_per_second": statistics.median(r["ours"] for r in runs),
            "obs_dim": WINDOW * n + n + 1,
            "rounds": runs,
        }
    return out


def _loop(env: gym.Env, actions: np.ndarray, steps: int) -> None:
    for k in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[k % len(actions)])
        if terminated or truncated:
            env.reset()


def profile(n_assets: int, steps: int) -> dict[str, Any]:
    """Inclusive time per step of each stage under cProfile (``None``: no such function)."""
    env = gym.make(
        "marketarena/Portfolio-v0",
        data=close_only(n_assets),
        window=WINDOW,
        episode_length=EPISODE,
    )
    env.reset(seed=0)
    actions = np.random.default_rng(0).random((64, n_assets + 1)).astype(np.float32)
    _loop(env, actions, 1_000)  # warm up (and past the env checker's first step)
    profiler = cProfile.Profile()
    profiler.runcall(_loop, env, actions, steps)
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}

    def inclusive(suffix: str, name: str) -> float | None:
        times = [v[3] for (f, _, n), v in stats.items() if f.endswith(suffix) and n == name]
        return sum(times) if times else None

    step = inclusive("envs/portfolio_env.py", "step") or float("nan")
    stages = {label: inclusive(suffix, name) for label, suffix, name in STAGES}
    top_level = [v for label, v in stages.items() if not label.startswith(" ") and v]
    stages[REST] = step - sum(top_level)
    outer = inclusive("profile_step.py", "_loop") or float("nan")
    us = 1e6 / steps
    builtins = sorted(((v[2], n) for (f, _, n), v in stats.items() if f == "~"), reverse=True)
    return {
        "steps": steps,
        "step_us": step * us,
        "stages": [
            {
                "stage": label,
                "us": None if value is None else value * us,
                "share": None if value is None else value / step,
            }
            for label, value in stages.items()
        ],
        "wrapper_share": max(0.0, (outer - step) / outer),
        "top_builtin_calls": [{"call": n, "us": t * us} for t, n in builtins[:8]],
    }


def run(quick: bool = False, output: Path | None = None) -> dict[str, Any]:
    """Time the ratios, then profile each asset count; ``output`` gets a pyinstrument tree."""
    rounds, min_seconds, repeats = (3, 0.2, 3) if quick else (9, 0.5, 3)
    steps = 20_000 if quick else 60_000
    started, cpu_before, load_before = time.perf_counter(), _cpu_times(), os.getloadavg()
    result: dict[str, Any] = {"ratios": ratios(rounds, min_seconds, repeats)}
    result["profiles"] = {str(n): profile(n, steps) for n in ASSETS}
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    result["machine"] = {
        "logical_cpus": os.cpu_count(),
        "affinity": affinity,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "cpu_busy_shares": _busy_shares(cpu_before),
        "seconds": time.perf_counter() - started,
    }
    result["config"] = {
        "rounds": rounds,
        "min_seconds": min_seconds,
        "repeats": repeats,
        "window": WINDOW,
        "episode_length": EPISODE,
        "quick": quick,
    }
    result["target_ratio"] = TARGET_RATIO
    if output is not None:
        result["pyinstrument"] = _pyinstrument(output, steps)
    return result


def _pyinstrument(output: Path, steps: int) -> str:
    try:
        from pyinstrument import Profiler
    except ImportError:
        return "not installed"
    env = gym.make(
        "marketarena/Portfolio-v0", data=close_only(30), window=WINDOW, episode_length=EPISODE
    )
    env.reset(seed=0)
    actions = np.random.default_rng(0).random((64, 31)).astype(np.float32)
    p = Profiler(interval=0.0002)
    p.start()
    _loop(env, actions, steps)
    p.stop()
    path = output / "profile_single_step.txt"
    path.write_text(p.output_text(unicode=False, color=False, show_all=False))
    return str(path)


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for n, r in result["ratios"].items():
        out.append(
            {
                "section": "profile",
                "case": f"{n} assets: single env / reference",
                "value": r["ratio"],
                "unit": "x",
                "note": f"median of {len(r['rounds'])} rounds (range {r['ratio_min']:.2f}.."
                f"{r['ratio_max']:.2f}); {r['ours_steps_per_second']:,.0f} vs "
                f"{r['reference_steps_per_second']:,.0f} steps/s; obs {r['obs_dim']} floats",
            }
        )
    for n, p in result["profiles"].items():
        for s in p["stages"]:
            out.append(
                {
                    "section": "profile",
                    "case": f"{n} assets: {s['stage'].strip()}",
                    "value": s["share"],
                    "unit": "share of step",
                    "note": "" if s["us"] is None else f"{s['us']:.2f} us/step under cProfile",
                }
            )
    return out


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    goal = result.get("target_ratio", TARGET_RATIO)
    return {
        f"single env / reference, {n} assets (alternating rounds)": {
            "value": r["ratio"],
            "target": f">= {goal:g}",
            "met": r["ratio"] >= goal,
        }
        for n, r in result["ratios"].items()
    }


def _load_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    load = " / ".join(f"{x:.2f}" for x in m["loadavg_before"])
    busy = m.get("cpu_busy_shares")
    cpus = (
        ", ".join(
            f"CPU {i} {b:.0%}" + (" (this run)" if i in m["affinity"] else " (other work)")
            for i, b in enumerate(busy)
        )
        if busy and len(m["affinity"]) < len(busy)
        else None
    )
    text = f"load average {load} (1 / 5 / 15 min) before the run"
    if cpus:
        text += f"; busy share of each CPU during it: {cpus}"
    return text


def docs(result: dict[str, Any], baseline: dict[str, Any] | None = None) -> list[str]:
    """The section of docs/BENCHMARKS.md below its heading; ``baseline``: a saved run
    (``--save``) shown beside this one."""
    cfg, m = result["config"], result["machine"]
    lines = [
        "`PortfolioEnv` through `gymnasium.make` against the bare-numpy reference with the same "
        f"observation (one env, window {cfg['window']}, costs on, close-only panel), timed in "
        f"{cfg['rounds']} alternating rounds; the ratio is the median of the per-round ratios "
        f"([profile_step.py](../benchmarks/profile_step.py); this section alone: "
        "`python benchmarks/run.py --only profile_step`, pinned to one CPU as `run.sh` does). "
        f"{m['logical_cpus']} logical CPUs, this run pinned to {m['affinity']}; "
        f"{_load_line(result)}; took {m['seconds']:.0f} s.",
        "",
    ]
    runs = [("this run", result)]
    if baseline is not None:
        runs.insert(0, (baseline.get("label", "before"), baseline))
        lines += [
            f"{runs[0][0].capitalize()}: {baseline.get('description') or 'a saved run'}; "
            f"{_load_line(baseline)}.",
            "",
        ]
    names = [name for name, _ in runs]
    lines += [
        "| assets | obs floats | "
        + " | ".join(f"single env / reference, {x}" for x in names)
        + " | "
        + " | ".join(f"single env steps/s, {x}" for x in names)
        + " |",
        "|---:|---:|" + "---:|" * (2 * len(runs)),
    ]
    for n, r in result["ratios"].items():
        got = [run["ratios"].get(n) for _, run in runs]
        ratio = [f"{g['ratio']:.2f}" if g else "-" for g in got]
        rate = [f"{g['ours_steps_per_second']:,.0f}" if g else "-" for g in got]
        lines.append(f"| {n} | {r['obs_dim']} | " + " | ".join(ratio + rate) + " |")
    lines.append("")
    for n in result["profiles"]:
        profs = [(name, run["profiles"].get(n)) for name, run in runs]
        profs = [(name, p) for name, p in profs if p is not None]
        labels = [s["stage"] for s in result["profiles"][n]["stages"]]
        for _, p in profs:  # stages only a baseline has come last
            labels += [s["stage"] for s in p["stages"] if s["stage"] not in labels]
        lines += [
            f"Profile, {n} assets: inclusive us per step under cProfile, and share of "
            "`PortfolioEnv.step`:",
            "",
            "| stage | " + " | ".join(f"{x}: us | {x}: share" for x, _ in profs) + " |",
            "|---|" + "---:|---:|" * len(profs),
        ]
        for label in labels:
            cells = []
            for _, p in profs:
                s = next((s for s in p["stages"] if s["stage"] == label), None)
                missing = s is None or s["us"] is None
                cells += ["-", "-"] if missing else [f"{s['us']:.2f}", f"{s['share']:.1%}"]
            depth = (len(label) - len(label.lstrip())) // 2  # nested stages: "· " per level
            lines.append(f"| {'· ' * depth}{label.strip()} | " + " | ".join(cells) + " |")
        total = [f"{p['step_us']:.2f} | 100%" for _, p in profs]
        lines.append("| PortfolioEnv.step | " + " | ".join(total) + " |")
        wrap = [f"- | {p['wrapper_share']:.1%}" for _, p in profs]
        lines += [f"| {WRAPPERS} | " + " | ".join(wrap) + " |", ""]
    return lines[:-1]


def main() -> None:
    import argparse

    from common import print_rows

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter profiles")
    parser.add_argument("--save", type=Path, help="write the result as JSON here")
    parser.add_argument("--label", default="before", help="the saved run's column label")
    parser.add_argument("--description", default="", help="what the saved run measured")
    args = parser.parse_args()
    result = run(quick=args.quick)
    print_rows(rows(result))
    if args.save:
        result["label"] = args.label
        result["description"] = args.description
        args.save.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.save}")


if __name__ == "__main__":
    sys.exit(main())
