"""Where the single env's step spends its time.

Runs ``PortfolioEnv`` through ``gymnasium.make`` (30 assets, window 32, costs on) with random
actions under cProfile and reports the share of step time in each stage (inclusive time of the
stage's function over the inclusive time of ``step``). When pyinstrument is installed (it is in
the benchmark venv) its call tree is saved too, as ``profile_single_step.txt`` in the output
folder.
"""

from __future__ import annotations

import cProfile
import pstats
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from throughput import EPISODE, WINDOW, close_only

import marketarena.envs  # noqa: F401

#: (label, file suffix, function name) of the stages of one step
STAGES = (
    ("action validation + mapping", "envs/core.py", "actions_to_weights"),
    ("simulator: orders from weights", "envs/simulator.py", "step_weights"),
    ("simulator: fills, costs, mark", "envs/simulator.py", "_execute"),
    ("reward", "envs/rewards.py", "__call__"),
    ("termination checks", "envs/simulator.py", "breached"),
    ("observation", "envs/portfolio_env.py", "_observation"),
    ("info dict", "envs/portfolio_env.py", "_info"),
    ("current weights", "envs/simulator.py", "weight"),
)


def _loop(env: gym.Env, actions: np.ndarray, steps: int) -> None:
    for k in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[k % len(actions)])
        if terminated or truncated:
            env.reset()


def run(quick: bool = False, output: Path | None = None) -> dict[str, Any]:
    steps = 20_000 if quick else 100_000
    env = gym.make(
        "marketarena/Portfolio-v0", data=close_only(30), window=WINDOW, episode_length=EPISODE
    )
    env.reset(seed=0)
    actions = np.random.default_rng(0).random((64, 31)).astype(np.float32)
    profiler = cProfile.Profile()
    profiler.runcall(_loop, env, actions, steps)
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}

    def inclusive(suffix: str, name: str) -> float:
        return sum(v[3] for (f, _, n), v in stats.items() if f.endswith(suffix) and n == name)

    total = sum(v[3] for (f, _, n), v in stats.items() if n == "step" and "portfolio_env" in f)
    share = {label: inclusive(suffix, name) / total for label, suffix, name in STAGES}
    # step_weights calls _execute: keep the two stages apart
    share["simulator: orders from weights"] -= share["simulator: fills, costs, mark"]
    share["rest of PortfolioEnv.step (history, tuple)"] = 1.0 - sum(share.values())
    stages = [{"stage": label, "share": value} for label, value in share.items()]
    outer = sum(v[3] for (f, _, n), v in stats.items() if n == "_loop")
    stages.append(
        {"stage": "gymnasium.make wrappers, as a share of the whole call",
         "share": max(0.0, (outer - total) / outer)}
    )  # fmt: skip
    numpy_calls = sorted(((v[2], n) for (f, _, n), v in stats.items() if f == "~"), reverse=True)[
        :8
    ]
    result = {
        "steps": steps,
        "stages": stages,
        "top_builtin_calls": [{"call": n, "seconds": t} for t, n in numpy_calls],
        "note": "cProfile adds overhead per Python call, so shares of pure-Python stages are "
        "overstated; they locate the time, the throughput table measures it",
    }
    if output is not None:
        try:
            from pyinstrument import Profiler
        except ImportError:
            result["pyinstrument"] = "not installed"
        else:
            p = Profiler(interval=0.0002)
            p.start()
            _loop(env, actions, steps)
            p.stop()
            path = output / "profile_single_step.txt"
            path.write_text(p.output_text(unicode=False, color=False, show_all=False))
            result["pyinstrument"] = str(path)
    return result


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "section": "profile",
            "case": s["stage"],
            "value": s["share"],
            "unit": "share of step",
            "note": "",
        }
        for s in result["stages"]
    ]


if __name__ == "__main__":
    for row in rows(run(quick=True)):
        print(f"{row['case']:50s} {row['value']:.1%}")
