"""How the cost of a ``PortfolioVectorEnv`` step grows with data length, assets and envs.

Every case is ``PortfolioVectorEnv(n_envs, data, window=32, copy=False)`` on close-only
synthetic data (the close of ``gbm_market(N, T, seed=0)``), reset with seed 0 and stepped with
pre-generated uniform random actions (the env auto-resets finished episodes itself), timed by
:func:`common.time_case` (median over repeats of env-steps per second).

* (a) data length T in {1,000, 10,000, 100,000} at N = 30, for 1 and 256 envs: a step reads
  one row per env, so its cost should not depend on T (reported: max/min time over T).
* (b) assets N in {10, 30, 100, 300} at T = 5,000, 256 envs: roughly linear in N (reported:
  the log-log slope of time per env-step against N; 1 is linear, fixed per-step overheads
  pull it below 1 at small N).
* (c) envs n in {1, 16, 256, 1,024, 4,096} at N = 30, T = 5,000: time per vector step roughly
  linear in n, i.e. per-env time flat or falling (reported: the log-log slope of time per
  vector step against n; below 1 means the per-env cost falls with the batch).

Run: ``taskset -c 1 benchmarks/.venv/bin/python benchmarks/scaling.py [--quick]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from common import Case, time_case  # noqa: E402

SECTION = "scaling"
WINDOW = 32
BASE_T, BASE_N = 5_000, 30
#: at most this many bytes of pre-generated actions per case (float32)
ACTION_BYTES = 8 * 2**20

FULL = {
    "length": {"T": [1_000, 10_000, 100_000], "n_envs": [1, 256]},
    "assets": {"N": [10, 30, 100, 300], "n_envs": 256},
    "envs": {"n_envs": [1, 16, 256, 1024, 4096]},
    "timing": {"min_seconds": 0.5, "repeats": 5},
}
QUICK = {
    "length": {"T": [1_000, 100_000], "n_envs": [1, 256]},
    "assets": {"N": [10, 30, 100], "n_envs": 256},
    "envs": {"n_envs": [1, 256, 4096]},
    "timing": {"min_seconds": 0.1, "repeats": 3},
}


def _data(n_assets: int, n_periods: int, cache: dict) -> Any:
    from marketarena.envs.data import MarketData
    from marketarena.envs.synthetic import gbm_market

    key = (n_assets, n_periods)
    if key not in cache:
        g = gbm_market(n_assets, n_periods, seed=0)
        cache[key] = MarketData(
            dates=g.dates, symbols=g.symbols, close=g.close, name=f"gbm{n_assets}x{n_periods}"
        )
    return cache[key]


def vector_case(data: Any, n_envs: int, seed: int = 0) -> Case:
    """``PortfolioVectorEnv`` (copy=False) on ``data`` driven by random actions."""
    from marketarena.envs.vector_env import PortfolioVectorEnv

    venv = PortfolioVectorEnv(n_envs, data, window=WINDOW, copy=False)
    venv.reset(seed=seed)
    width = data.n_assets + 1
    blocks = int(np.clip(ACTION_BYTES // (4 * n_envs * width), 2, 256))
    actions = np.random.default_rng(seed).random((blocks, n_envs, width), dtype=np.float32)
    i = 0

    def step() -> object:
        nonlocal i
        out = venv.step(actions[i])
        i = i + 1 if i + 1 < blocks else 0
        return out

    return Case(
        name=f"PortfolioVectorEnv n_envs={n_envs} N={data.n_assets} T={data.n_periods}",
        group="scaling",
        n_assets=data.n_assets,
        env_steps_per_call=n_envs,
        step=step,
    )


def _loglog_slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run(quick: bool = False) -> dict:
    plan = QUICK if quick else FULL
    timing = plan["timing"]
    data_cache: dict = {}
    measured: dict[tuple[int, int, int], dict[str, Any]] = {}

    def measure(n_periods: int, n_assets: int, n_envs: int) -> dict[str, Any]:
        key = (n_periods, n_assets, n_envs)
        if key not in measured:
            case = vector_case(_data(n_assets, n_periods, data_cache), n_envs)
            r = time_case(case, **timing)
            measured[key] = {
                "T": n_periods,
                "N": n_assets,
                "n_envs": n_envs,
                "env_steps_per_s": r["steps_per_second"],
                "us_per_env_step": 1e6 / r["steps_per_second"],
                "us_per_vector_step": 1e6 * n_envs / r["steps_per_second"],
                "spread": r["max"] / r["min"],
                # one of the env's two observation buffers: (n_envs, window * N + N + 1) float32
                "obs_buffer_bytes": 4 * n_envs * (WINDOW * n_assets + n_assets + 1),
            }
        return measured[key]

    length = {}
    for n_envs in plan["length"]["n_envs"]:
        points = [measure(t, BASE_N, n_envs) for t in plan["length"]["T"]]
        times = [p["us_per_env_step"] for p in points]
        length[str(n_envs)] = {"points": points, "max_over_min": max(times) / min(times)}
        data_cache.clear()  # the long panels are large; (b) and (c) use T = BASE_T

    n_envs_b = plan["assets"]["n_envs"]
    assets_points = [measure(BASE_T, n, n_envs_b) for n in plan["assets"]["N"]]
    xs, ys = [p["N"] for p in assets_points], [p["us_per_env_step"] for p in assets_points]
    assets = {
        "n_envs": n_envs_b,
        "points": assets_points,
        "slope_per_env_step_vs_N": _loglog_slope(xs, ys),
        # the upper points, where the per-asset work outweighs the fixed per-step overhead
        "tail_from_N": xs[-2],
        "tail_slope": _loglog_slope(xs[-2:], ys[-2:]),
    }

    envs_points = [measure(BASE_T, BASE_N, n) for n in plan["envs"]["n_envs"]]
    xs = [p["n_envs"] for p in envs_points]
    ys = [p["us_per_vector_step"] for p in envs_points]
    tail = [i for i, n in enumerate(xs) if n >= 256]
    envs = {
        "points": envs_points,
        "slope_per_vector_step_vs_n": _loglog_slope(xs, ys),
        "tail_from_n": xs[tail[0]],
        "tail_slope": _loglog_slope([xs[i] for i in tail], [ys[i] for i in tail]),
        "per_env_max_over_min_tail": max(ys[i] / xs[i] for i in tail)
        / min(ys[i] / xs[i] for i in tail),
    }

    return {
        "config": {
            "data": "close of gbm_market(N, T, seed=0)",
            "window": WINDOW,
            "copy": False,
            "base_T": BASE_T,
            "base_N": BASE_N,
            "timing": dict(timing),
            "quick": quick,
        },
        "length": length,
        "assets": assets,
        "envs": envs,
    }


def rows(result: dict) -> list[dict]:
    out: list[dict] = []

    def add(case: str, value: float, unit: str, note: str = "") -> None:
        out.append({"section": SECTION, "case": case, "value": value, "unit": unit, "note": note})

    cfg = result["config"]
    timing = f"median of {cfg['timing']['repeats']} x {cfg['timing']['min_seconds']} s"
    for n_envs, block in result["length"].items():
        for p in block["points"]:
            add(
                f"(a) T={p['T']:,} N={p['N']} n_envs={n_envs}",
                p["us_per_env_step"],
                "us/env-step",
                f"{p['env_steps_per_s']:,.0f} env-steps/s; {timing}",
            )
        add(
            f"(a) n_envs={n_envs}: max/min over T",
            block["max_over_min"],
            "x",
            "1 = cost independent of the data length",
        )
    a = result["assets"]
    for p in a["points"]:
        add(
            f"(b) N={p['N']} T={p['T']:,} n_envs={p['n_envs']}",
            p["us_per_env_step"],
            "us/env-step",
            f"{p['env_steps_per_s']:,.0f} env-steps/s; obs buffer "
            f"{p['obs_buffer_bytes'] / 2**20:.1f} MiB (x2); {timing}",
        )
    add(
        f"(b) log-log slope vs N (n_envs={a['n_envs']})",
        a["slope_per_env_step_vs_N"],
        "",
        f"time per env-step ~ N^slope over N={[p['N'] for p in a['points']]}; 1 = linear",
    )
    add(
        f"(b) log-log slope vs N >= {a['tail_from_N']}",
        a["tail_slope"],
        "",
        "the two largest N, where per-asset work dominates the fixed per-step cost",
    )
    for p in result["envs"]["points"]:
        add(
            f"(c) n_envs={p['n_envs']} N={p['N']} T={p['T']:,}",
            p["us_per_vector_step"],
            "us/vector-step",
            f"{p['us_per_env_step']:.3f} us/env-step; {p['env_steps_per_s']:,.0f} env-steps/s; "
            f"obs buffer {p['obs_buffer_bytes'] / 2**20:.2f} MiB (x2)",
        )
    c = result["envs"]
    slope = c["slope_per_vector_step_vs_n"]
    add(
        "(c) log-log slope vs n_envs",
        slope,
        "",
        f"time per vector step ~ n^slope over n={[p['n_envs'] for p in c['points']]}; "
        f"per-env-step ~ n^{slope - 1:.2f}",
    )
    add(
        f"(c) log-log slope vs n_envs >= {c['tail_from_n']}",
        c["tail_slope"],
        "",
        f"per-env-step ~ n^{c['tail_slope'] - 1:.2f}; per-env time max/min over these n "
        f"{c['per_env_max_over_min_tail']:.2f}x",
    )
    return out


if __name__ == "__main__":
    from common import section_main

    section_main(__doc__, run, rows, "fewer points, shorter timing")
