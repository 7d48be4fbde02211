"""SB3 PPO training throughput, and the share of training wall time spent inside the env.

Ours: ``PPO("MlpPolicy", VecMonitor(SB3PortfolioVecEnv(PortfolioVectorEnv(n_envs, ...))))`` on
close-only synthetic data (``gbm_market(30, 5000, seed=0)``, window 32), SB3 defaults but for
``n_steps`` and ``net_arch=[64, 64]``, on the CPU with one torch thread. Each repeat builds a
fresh model (seed 0, so every repeat does the same computation) and times ``learn()`` for a
fixed number of timesteps. The env's time is measured by wrapping the adapter instance's
``reset``, ``step_async`` and ``step_wait`` with a timer: it includes the SB3 adapter (the
``infos`` list, the float32 reward cast) but none of SB3's own code (``VecMonitor``, the
policy, the rollout buffer, the update). ``env share = env time / learn() wall time``.

The issue's target is an env share of at most 3% at the default batch; a second setting with
fewer envs and more steps per rollout (same rollout size) shows how the share depends on the
env batch. Each setting is also stepped alone (no training, pre-generated actions shaped like
PPO's first policy: N(0, 1) clipped to the action box) to show how much slower the same env
calls run inside ``learn()``, between the policy's forward passes.

Peer: the same PPO on gym-anytrading's ``StocksEnv`` (built as in ``peers.py``) in SB3's
``DummyVecEnv`` with the same ``n_envs`` and hyperparameters, timed the same way (the timer
wraps ``DummyVecEnv``'s ``reset``/``step_async``/``step_wait``, so it includes that
adapter's per-env Python loop). Only where ``gym_anytrading`` imports (benchmarks/.venv);
reported as missing elsewhere. Its observation is 32 x 2 = 64 numbers against our 991, so its
policy network is cheaper per transition: the fps comparison is about training as a whole, the
env share is the like-for-like figure. Its episodes span the whole 20,000-bar series (as in
``peers.py``), so no peer env resets during these runs; ours reset every 252 steps.

Run: ``taskset -c 1 benchmarks/.venv/bin/python benchmarks/ppo_share.py [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

SECTION = "ppo_share"
#: the issue's target for the env's share of PPO training wall time
TARGET_ENV_SHARE = 0.03
N_ASSETS, N_PERIODS, WINDOW = 30, 5000, 32
NET_ARCH = [64, 64]
BATCH_SIZE, N_EPOCHS = 64, 10  # SB3's defaults, passed explicitly
#: (n_envs, n_steps): both make rollouts of 4096 transitions; the first is the headline
SETTINGS = [(64, 64), (8, 512)]
PEER_N_ENVS, PEER_N_STEPS = 64, 64


class EnvTimer:
    """Accumulates the wall time spent in the wrapped methods of one object."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, obj: Any, names: tuple[str, ...] = ("reset", "step_async", "step_wait")) -> Any:
        for name in names:
            setattr(obj, name, self._timed(getattr(obj, name)))
        return obj

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += clock() - start
                self.calls += 1

        return timed


def _setup_torch() -> str:
    import torch

    torch.set_num_threads(1)
    return torch.__version__


def _market_data() -> Any:
    from marketarena.envs.data import MarketData
    from marketarena.envs.synthetic import gbm_market

    g = gbm_market(N_ASSETS, N_PERIODS, seed=0)
    return MarketData(
        dates=g.dates, symbols=g.symbols, close=g.close, name=f"gbm{N_ASSETS}x{N_PERIODS}-close"
    )


def _ours_env(n_envs: int, data: Any) -> tuple[Any, Any]:
    from stable_baselines3.common.vec_env import VecMonitor

    from marketarena.envs.sb3_vec_env import SB3PortfolioVecEnv
    from marketarena.envs.vector_env import PortfolioVectorEnv

    adapter = SB3PortfolioVecEnv(PortfolioVectorEnv(n_envs, data, window=WINDOW, copy=False))
    return VecMonitor(adapter), adapter


def _peer_env(n_envs: int) -> tuple[Any, Any]:
    """gym-anytrading ``StocksEnv`` x n_envs in ``DummyVecEnv``, each built as in peers.py."""
    import pandas as pd
    from gym_anytrading.envs import StocksEnv
    from peers import SINGLE_ASSET_PERIODS
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from marketarena.envs.synthetic import gbm_market

    n_periods = SINGLE_ASSET_PERIODS
    market = gbm_market(1, n_periods, seed=0)
    df = pd.DataFrame(
        {
            "Open": market.open[:, 0],
            "High": market.high[:, 0],
            "Low": market.low[:, 0],
            "Close": market.close[:, 0],
            "Volume": market.volume[:, 0],
        },
        index=pd.DatetimeIndex(market.dates, name="Date"),
    )

    def make() -> Any:
        return StocksEnv(df=df, window_size=WINDOW, frame_bound=(WINDOW, n_periods))

    dummy = DummyVecEnv([make] * n_envs)
    return VecMonitor(dummy), dummy


def _isolated_us(inner: Any, actions: np.ndarray, quick: bool) -> float:
    """Microseconds per transition of ``reset``-ed ``inner`` stepped alone (no training),
    through ``step_async``/``step_wait`` with pre-generated actions shaped like PPO's."""
    from common import Case, time_case

    inner.reset()
    n = len(actions)
    i = 0

    def step() -> object:
        nonlocal i
        inner.step_async(actions[i])
        out = inner.step_wait()
        i = i + 1 if i + 1 < n else 0
        return out

    case = Case("isolated", "ppo_share", 0, inner.num_envs, step)
    r = time_case(case, min_seconds=0.1 if quick else 0.3, repeats=5)
    return 1e6 / r["steps_per_second"]


def _train(
    build: Callable[[], tuple[Any, Any]], n_steps: int, timesteps: int, repeats: int
) -> dict[str, Any]:
    """Median over ``repeats`` fresh models of learn() wall time, fps and env share."""
    from stable_baselines3 import PPO

    per_repeat = []
    for _ in range(repeats):
        venv, inner = build()
        timer = EnvTimer()
        timer.wrap(inner)
        model = PPO(
            "MlpPolicy",
            venv,
            n_steps=n_steps,
            batch_size=BATCH_SIZE,
            n_epochs=N_EPOCHS,
            policy_kwargs={"net_arch": list(NET_ARCH)},
            device="cpu",
            seed=0,
            verbose=0,
        )
        start = time.perf_counter()
        model.learn(total_timesteps=timesteps)
        wall = time.perf_counter() - start
        done = int(model.num_timesteps)
        per_repeat.append(
            {
                "wall_s": wall,
                "timesteps": done,
                "fps": done / wall,
                "env_s": timer.seconds,
                "env_calls": timer.calls,
                "env_share": timer.seconds / wall,
            }
        )
        venv.close()

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in per_repeat))

    n_done = per_repeat[0]["timesteps"]
    return {
        "timesteps": n_done,
        "repeats": repeats,
        "wall_s": med("wall_s"),
        "fps": med("fps"),
        "env_s": med("env_s"),
        "env_share": med("env_share"),
        "env_us_per_transition": med("env_s") / n_done * 1e6,
        "rest_us_per_transition": (med("wall_s") - med("env_s")) / n_done * 1e6,
        "per_repeat": per_repeat,
    }


def run(quick: bool = False) -> dict:
    torch_version = _setup_torch()
    import stable_baselines3

    rollout = SETTINGS[0][0] * SETTINGS[0][1]
    timesteps = rollout * (1 if quick else 12)  # 4,096 / 49,152
    repeats = 3
    data = _market_data()

    # warm-up: torch's first forward/backward passes and lazy imports, not timed
    _train(lambda: _ours_env(8, data), n_steps=64, timesteps=512, repeats=1)

    ours = []
    for n_envs, n_steps in SETTINGS:
        r = _train(lambda n=n_envs: _ours_env(n, data), n_steps, timesteps, repeats)
        r.update(
            name=f"marketarena PortfolioVectorEnv n_envs={n_envs}",
            n_envs=n_envs,
            n_steps=n_steps,
            rollout=n_envs * n_steps,
            obs_dim=WINDOW * N_ASSETS + N_ASSETS + 1,
            meets_target=bool(r["env_share"] <= TARGET_ENV_SHARE),
        )
        # the same adapter stepped alone, with clipped N(0, 1) actions as PPO's first policy
        rng = np.random.default_rng(0)
        actions = np.clip(rng.standard_normal((64, n_envs, N_ASSETS + 1)), 0.0, 1.0)
        r["isolated_env_us_per_transition"] = _isolated_us(
            _ours_env(n_envs, data)[1], actions.astype(np.float32), quick
        )
        ours.append(r)

    peer: dict[str, Any]
    try:
        import gym_anytrading  # noqa: F401
    except ImportError as exc:
        peer = {"missing": f"{type(exc).__name__}: {exc} (run bash benchmarks/setup_venv.sh)"}
    else:
        from importlib import metadata

        peer = _train(lambda: _peer_env(PEER_N_ENVS), PEER_N_STEPS, timesteps, repeats)
        peer.update(
            name=f"gym-anytrading StocksEnv x{PEER_N_ENVS} in DummyVecEnv",
            version=metadata.version("gym-anytrading"),
            n_envs=PEER_N_ENVS,
            n_steps=PEER_N_STEPS,
            rollout=PEER_N_ENVS * PEER_N_STEPS,
            obs_dim=WINDOW * 2,
        )
        peer["fps_ours_over_peer"] = ours[0]["fps"] / peer["fps"]
        actions = np.random.default_rng(0).integers(0, 2, size=(64, PEER_N_ENVS))
        peer["isolated_env_us_per_transition"] = _isolated_us(
            _peer_env(PEER_N_ENVS)[1], actions, quick
        )

    return {
        "config": {
            "data": f"gbm_market({N_ASSETS}, {N_PERIODS}, seed=0), close only",
            "window": WINDOW,
            "net_arch": list(NET_ARCH),
            "batch_size": BATCH_SIZE,
            "n_epochs": N_EPOCHS,
            "timesteps": timesteps,
            "repeats": repeats,
            "quick": quick,
            "torch": torch_version,
            "torch_threads": 1,
            "stable_baselines3": stable_baselines3.__version__,
            "target_env_share": TARGET_ENV_SHARE,
        },
        "ours": ours,
        "peer": peer,
    }


def rows(result: dict) -> list[dict]:
    cfg = result["config"]
    base = (
        f"{cfg['timesteps']} timesteps, median of {cfg['repeats']}, net {cfg['net_arch']}, "
        f"batch {cfg['batch_size']}, {cfg['n_epochs']} epochs"
    )
    out: list[dict] = []

    def add(case: str, value: float | None, unit: str, note: str) -> None:
        out.append({"section": SECTION, "case": case, "value": value, "unit": unit, "note": note})

    def add_run(label: str, r: dict, verdict: str = "") -> None:
        setting = f"n_envs={r['n_envs']} x n_steps={r['n_steps']}, obs {r['obs_dim']}"
        add(f"{label} fps", r["fps"], "timesteps/s", f"{setting}; {base}")
        add(f"{label} learn() wall", r["wall_s"], "s", f"{setting}; {base}")
        add(
            f"{label} env share",
            100 * r["env_share"],
            "%",
            f"{r['env_us_per_transition']:.2f} us/transition in env vs "
            f"{r['rest_us_per_transition']:.1f} us in SB3{verdict}",
        )
        iso = r["isolated_env_us_per_transition"]
        add(
            f"{label} env alone",
            iso,
            "us/transition",
            f"the env and adapter stepped alone (median of 5); inside learn() the same "
            f"calls took {r['env_us_per_transition'] / iso:.2f}x this",
        )

    for r in result["ours"]:
        verdict = "meets" if r["meets_target"] else "MISSES"
        add_run(
            f"ours n_envs={r['n_envs']}",
            r,
            f"; {verdict} target <= {100 * cfg['target_env_share']:g}%",
        )
    peer = result["peer"]
    if "missing" in peer:
        add("gym-anytrading fps", None, "timesteps/s", f"missing: {peer['missing']}")
    else:
        add_run(f"gym-anytrading {peer['version']} n_envs={peer['n_envs']}", peer)
        add(
            "fps ours / gym-anytrading",
            peer["fps_ours_over_peer"],
            "x",
            f"n_envs={result['ours'][0]['n_envs']} vs {peer['n_envs']}, same run; "
            f"obs {result['ours'][0]['obs_dim']} vs {peer['obs_dim']}",
        )
    return out


if __name__ == "__main__":
    from common import section_main

    section_main(__doc__, run, rows, "short runs")
