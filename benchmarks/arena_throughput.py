"""The arena's throughput: agent-steps per second of ``ArenaEnv`` against our single and vector
envs with the same number of envs, measured in the same run.

Every case runs on one OHLCV synthetic panel (``gbm_market(30, 5,000, seed=0)``: the impact
model needs volume), window 32, 252-step episodes that reset when they end, costs on (the
default rules) and pre-generated uniform random actions. The cases of one ``n`` are timed in
interleaved rounds (:func:`time_together`: each round times every case once), so that a
machine shared with other work slows them alike; each figure is the median over the rounds
of env-steps per second (for the arena one env-step is one agent's step, so a call of
``step`` with ``n`` agents counts ``n``):

* ``ArenaEnv`` with 2, 8 and 32 agents, impact and noise on (``impact={"eta": 0.5,
  "gamma": 0.1, "noise_scale": 0.05}``, ``observe_flow=True``), actions as the dict PettingZoo
  takes;
* the same arena without impact or noise (what the impact model costs);
* ``PortfolioVectorEnv`` with 2, 8 and 32 envs (``copy=False``), the same settings;
* one ``PortfolioEnv`` (``gymnasium.make``), timed again in the rounds of every ``n``.

Ratios: the arena (impact and noise on) over the vector env with as many envs, and over the
single env; the impact model's and noise traders' share of the arena's step time.

Run: ``taskset -c 1 benchmarks/.venv/bin/python benchmarks/arena_throughput.py [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from common import Case, section_main  # noqa: E402

SECTION = "arena"
N_ASSETS, PERIODS, WINDOW, EPISODE = 30, 5_000, 32, 252
AGENTS = (2, 8, 32)
IMPACT = {"eta": 0.5, "gamma": 0.1, "noise_scale": 0.05}
#: pre-generated action blocks per case (cycled)
BLOCKS = 16


def _data() -> Any:
    from marketarena.envs.synthetic import gbm_market

    return gbm_market(N_ASSETS, PERIODS, seed=0)


def _settings() -> dict[str, Any]:
    return {"window": WINDOW, "episode_length": EPISODE}


def arena_case(data: Any, n_agents: int, impact: bool = True) -> Case:
    """``ArenaEnv`` with ``n_agents`` agents, reset when the episode ends."""
    from marketarena.envs.arena import ArenaEnv

    env = ArenaEnv(
        n_agents,
        data,
        impact=IMPACT if impact else {},
        observe_flow=impact,
        **_settings(),
    )
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    blocks = [
        {a: rng.random(N_ASSETS + 1, dtype=np.float32) for a in env.possible_agents}
        for _ in range(BLOCKS)
    ]
    i = 0

    def step() -> object:
        nonlocal i
        out = env.step(blocks[i])
        i = i + 1 if i + 1 < BLOCKS else 0
        if not env.agents:
            env.reset()
        return out

    name = "ArenaEnv, impact + noise" if impact else "ArenaEnv, no impact"
    return Case(name, "arena", N_ASSETS, n_agents, step)


def vector_case(data: Any, n_envs: int) -> Case:
    """``PortfolioVectorEnv`` (``copy=False``; it resets finished envs itself)."""
    from marketarena.envs.vector_env import PortfolioVectorEnv

    venv = PortfolioVectorEnv(n_envs, data, copy=False, **_settings())
    venv.reset(seed=0)
    actions = np.random.default_rng(0).random((BLOCKS, n_envs, N_ASSETS + 1), dtype=np.float32)
    i = 0

    def step() -> object:
        nonlocal i
        out = venv.step(actions[i])
        i = i + 1 if i + 1 < BLOCKS else 0
        return out

    return Case("PortfolioVectorEnv", "ours", N_ASSETS, n_envs, step)


def single_case(data: Any) -> Case:
    """One ``PortfolioEnv`` from ``gymnasium.make``, reset when an episode ends."""
    import gymnasium as gym

    import marketarena.envs  # noqa: F401  (registers the ids)

    env = gym.make("marketarena/Portfolio-v0", data=data, **_settings())
    env.reset(seed=0)
    actions = np.random.default_rng(0).random((BLOCKS, N_ASSETS + 1), dtype=np.float32)
    i = 0

    def step() -> object:
        nonlocal i
        out = env.step(actions[i])
        i = i + 1 if i + 1 < BLOCKS else 0
        if out[2] or out[3]:
            env.reset()
        return out

    return Case("PortfolioEnv (gymnasium.make)", "ours", N_ASSETS, 1, step)


def time_together(cases: list[Case], *, min_seconds: float, repeats: int) -> list[dict[str, float]]:
    """Median env-steps per second of each case over ``repeats`` rounds; a round times each
    case once, for about ``min_seconds`` (calls calibrated per case after a warm-up)."""
    calls = []
    for case in cases:
        for _ in range(10):
            case.step()
        n = 1
        while True:
            start = time.perf_counter()
            for _ in range(n):
                case.step()
            elapsed = time.perf_counter() - start
            if elapsed >= 0.05:
                break
            n *= 2
        calls.append(max(1, int(n * min_seconds / elapsed)))
    rates: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for case, n, out in zip(cases, calls, rates, strict=True):
            start = time.perf_counter()
            for _ in range(n):
                case.step()
            out.append(n * case.env_steps_per_call / (time.perf_counter() - start))
    return [
        {
            "case": case.name,
            "n": case.env_steps_per_call,
            "steps_per_second": statistics.median(r),
            "spread": max(r) / min(r),
        }
        for case, r in zip(cases, rates, strict=True)
    ]


def run(quick: bool = False) -> dict[str, Any]:
    """Time every case; returns the config and one point per ``n`` (its four cases timed
    together, and their ratios)."""
    timing = {"min_seconds": 0.1, "repeats": 5} if quick else {"min_seconds": 0.5, "repeats": 11}
    data = _data()
    points = []
    for n in AGENTS:
        cases = [
            vector_case(data, n),
            arena_case(data, n),
            arena_case(data, n, impact=False),
            single_case(data),
        ]
        vector, arena, plain, single = time_together(cases, **timing)
        points.append(
            {
                "n": n,
                "vector": vector,
                "arena": arena,
                "arena_no_impact": plain,
                "single": single,
                "arena_over_vector": arena["steps_per_second"] / vector["steps_per_second"],
                "arena_over_single": arena["steps_per_second"] / single["steps_per_second"],
                "impact_share": 1.0 - arena["steps_per_second"] / plain["steps_per_second"],
            }
        )
    config = {
        "assets": N_ASSETS,
        "periods": PERIODS,
        "window": WINDOW,
        "episode_length": EPISODE,
        "impact": IMPACT,
        "timing": timing,
    }
    return {"config": config, "points": points}


def rows(result: dict) -> list[dict]:
    out: list[dict] = []

    def add(case: str, value: float, unit: str, note: str = "") -> None:
        out.append({"section": SECTION, "case": case, "value": value, "unit": unit, "note": note})

    cfg = result["config"]
    timing = f"median of {cfg['timing']['repeats']} interleaved x {cfg['timing']['min_seconds']} s"
    for p in result["points"]:
        n = p["n"]
        for key in ("vector", "arena", "arena_no_impact", "single"):
            c = p[key]
            unit = "agent-steps/s" if key.startswith("arena") else "env-steps/s"
            shown = f"{c['case']} n={n}" if key != "single" else f"{c['case']} (n={n} rounds)"
            add(shown, c["steps_per_second"], unit, f"max/min {c['spread']:.2f}; {timing}")
        add(f"arena / vector env, n={n}", p["arena_over_vector"], "x", "agent-steps per env-step")
        add(f"arena / single env, n={n}", p["arena_over_single"], "x", "")
        add(f"impact + noise share of the arena step, n={n}", p["impact_share"], "", "")
    return out


if __name__ == "__main__":
    section_main(__doc__, run, rows, "short timings (0.1 s x 5)")
