"""Env-steps per second: our single and vector envs, the bare-numpy reference, and the peers.

Every figure is the median of repeated timed runs (``common.time_case``); every ratio divides
by a reference measured in the same run. Ours and the reference run on the same close-only
synthetic panel (30 assets unless stated, 5,000 dates, window 32, costs on) with random
actions and 252-step episodes that auto-reset; the peers run on comparable synthetic data
(see ``peers.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from common import Case, time_case
from reference import ReferenceStep

import marketarena.envs  # noqa: F401  (registers the ids)
from marketarena.envs import MarketData, PortfolioVectorEnv
from marketarena.envs.synthetic import gbm_market

WINDOW = 32
PERIODS = 5_000
EPISODE = 252


def close_only(n_assets: int, n_periods: int = PERIODS, seed: int = 0) -> MarketData:
    g = gbm_market(n_assets, n_periods, seed=seed)
    return MarketData(dates=g.dates, symbols=g.symbols, close=g.close, name=f"gbm-close-{n_assets}")


def _cycle(actions: np.ndarray, fn: Callable[[np.ndarray], Any]) -> Callable[[], Any]:
    state = {"i": 0}
    k = len(actions)

    def step() -> Any:
        state["i"] = (state["i"] + 1) % k
        return fn(actions[state["i"]])

    return step


def reference_case(n_envs: int, n_assets: int = 30, shift: bool = False) -> Case:
    data = close_only(n_assets)
    log_returns = np.diff(np.log(data.close), axis=0)
    ref = ReferenceStep(
        log_returns, n_envs, window=WINDOW, episode_length=EPISODE, shift_windows=shift
    )
    actions = np.random.default_rng(0).random((16, n_envs, n_assets + 1)).astype(np.float32)
    name = "bare numpy reference" + (" (shifted windows)" if shift else "")
    return Case(name, "reference", n_assets, n_envs, _cycle(actions, ref.step))


def single_env_case(n_assets: int = 30, ohlcv: bool = False) -> Case:
    data = gbm_market(n_assets, PERIODS, seed=0) if ohlcv else close_only(n_assets)
    env = gym.make("marketarena/Portfolio-v0", data=data, window=WINDOW, episode_length=EPISODE)
    env.reset(seed=0)
    actions = np.random.default_rng(0).random((64, n_assets + 1)).astype(np.float32)

    def act(a: np.ndarray) -> None:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()

    execution = env.unwrapped.rules.execution
    name = "PortfolioEnv (gymnasium.make)" + (" OHLCV" if ohlcv else "")
    return Case(name, "ours", n_assets, 1, _cycle(actions, act), notes=f"{execution} fills")


def vector_env_case(n_envs: int, n_assets: int = 30) -> Case:
    venv = PortfolioVectorEnv(
        n_envs, close_only(n_assets), window=WINDOW, episode_length=EPISODE, copy=False
    )
    venv.reset(seed=0)
    actions = np.random.default_rng(0).random((16, n_envs, n_assets + 1)).astype(np.float32)
    return Case("PortfolioVectorEnv", "ours", n_assets, n_envs, _cycle(actions, venv.step))


def run(quick: bool = False) -> dict[str, Any]:
    """Time every case; returns ``{"rows": [...], "targets": {...}}``."""
    min_seconds, repeats = (0.2, 3) if quick else (1.0, 7)
    sizes = (1, 256, 1024) if quick else (1, 16, 256, 1024, 4096)

    def measure(case: Case) -> dict[str, Any]:
        stats = time_case(case, min_seconds=min_seconds, repeats=repeats)
        return {
            "case": case.name,
            "group": case.group,
            "assets": case.n_assets,
            "envs": case.env_steps_per_call,
            "steps_per_second": stats["steps_per_second"],
            "min": stats["min"],
            "max": stats["max"],
            "notes": case.notes,
        }

    rows: list[dict[str, Any]] = []
    refs: dict[int, float] = {}
    for n in sizes:
        # the reference and ours alternate so that drift in machine speed hits both
        ref = measure(reference_case(n))
        ours = measure(vector_env_case(n))
        refs[n] = ref["steps_per_second"]
        for row in (ref, ours):
            row["ratio_to_reference"] = row["steps_per_second"] / refs[n]
            rows.append(row)
    shifted = measure(reference_case(1024, shift=True))
    shifted["ratio_to_reference"] = shifted["steps_per_second"] / refs[1024]
    rows.append(shifted)
    for ohlcv in (False, True):
        row = measure(single_env_case(ohlcv=ohlcv))
        row["ratio_to_reference"] = row["steps_per_second"] / refs[1]
        rows.append(row)

    from peers import available_peers

    peers, missing = available_peers()
    single = next(r for r in rows if r["case"] == "PortfolioEnv (gymnasium.make)")
    for case in peers:
        row = measure(case)
        row["ratio_to_reference"] = row["steps_per_second"] / refs[1]
        row["ours_single_over_peer"] = single["steps_per_second"] / row["steps_per_second"]
        rows.append(row)

    vec1024 = next(r for r in rows if r["case"] == "PortfolioVectorEnv" and r["envs"] == 1024)
    targets = {
        "single_env_steps_per_second": {
            "value": single["steps_per_second"],
            "target": 40_000,
            "met": single["steps_per_second"] >= 40_000,
        },
        "single_env_ratio_to_reference": {
            "value": single["ratio_to_reference"],
            "target": 0.6,
            "met": single["ratio_to_reference"] >= 0.6,
        },
        "vector_1024_ratio_to_reference": {
            "value": vec1024["ratio_to_reference"],
            "target": 0.7,
            "met": vec1024["ratio_to_reference"] >= 0.7,
        },
    }
    return {"rows": rows, "missing_peers": missing, "targets": targets}


if __name__ == "__main__":
    result = run(quick=True)
    for r in result["rows"]:
        print(
            f"{r['case']:45s} n={r['envs']:5d} {r['steps_per_second']:>12,.0f}/s "
            f"x{r['ratio_to_reference']:.2f}"
        )
    print(result["targets"], result["missing_peers"])
