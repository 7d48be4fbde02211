"""How far float32 price tables move the NAV over a long episode.

``PortfolioVectorEnv(price_dtype=np.float32)`` halves the memory of the shared price tables.
This runs the same random rebalancing through the whole bundled 20-stock panel (1990-2022,
8,312 steps) with float64 and float32 prices and reports the NAV difference along the way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from marketarena.envs import PortfolioVectorEnv, load_dataset


def run(quick: bool = False) -> dict[str, Any]:
    data = load_dataset("sp500_20")
    n_envs = 8
    kwargs = {"window": 32, "episode_length": None, "random_start": False}
    exact = PortfolioVectorEnv(n_envs, data, **kwargs)
    half = PortfolioVectorEnv(n_envs, data, price_dtype=np.float32, **kwargs)
    exact.reset(seed=0)
    half.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, checkpoints, errors = 0, [], []
    done = False
    while not done:
        # rebalance monthly, hold in between: a realistic mix of trading and drifting
        if steps % 21 == 0:
            actions = rng.random((n_envs, data.n_assets + 1))
            _, _, _, trunc, info64 = exact.step(actions)
            _, _, _, _, info32 = half.step(actions)
        else:  # each holds its own current weights: no trades
            _, _, _, trunc, info64 = exact.step(exact.sim.weight)
            _, _, _, _, info32 = half.step(half.sim.weight)
        steps += 1
        done = bool(trunc.any())
        if steps % 1000 == 0 or done:
            rel = np.abs(info32["nav"] / info64["nav"] - 1.0)
            checkpoints.append(steps)
            errors.append(float(rel.max()))
    final_nav = float(np.median(info64["nav"]))
    return {
        "steps": steps,
        "years": steps / 252,
        "checkpoints": checkpoints,
        "max_relative_nav_error": errors,
        "final_max_relative_error": errors[-1],
        "final_median_nav_float64": final_nav,
        "price_table_bytes_float64": int(data.close.nbytes),
        "price_table_bytes_float32": int(data.close.nbytes // 2),
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "section": "precision",
            "case": f"float32 prices after {s:,} steps",
            "value": e,
            "unit": "max relative NAV error",
            "note": "8 envs, random monthly rebalance",
        }
        for s, e in zip(result["checkpoints"], result["max_relative_nav_error"], strict=True)
    ]


if __name__ == "__main__":
    for row in rows(run()):
        print(row)
