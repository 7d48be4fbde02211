"""PPO learning throughput: env steps per second of ``model.learn`` on a diagnostic task.

End to end: rollout collection (env, policy forward passes, SB3's buffer) plus the gradient
updates, on the CPU, on the train split of ``marketarena/Momentum-v0``. Three settings, timed
in the same run and interleaved within each repeat, so that the machine's drift hits them alike:

(a) ``configs/bench/ppo.yaml``, built exactly as training builds it (``load_config`` with
    ``env.data=marketarena/Momentum-v0``, ``load_universe``, ``make_training_env`` on the train
    split, ``make_model``; ``torch.set_num_threads(config.algo.torch_threads)``):
    AssetwisePolicy, 64 envs x 64 steps, batch 1024, 4 epochs, VecNormalize on rewards.
(b) stable-baselines3's default PPO on the same env with one env: the same config with
    ``algo.n_envs=1``, ``algo.policy=MlpPolicy`` and ``algo.normalize.rewards=false`` (so no
    VecNormalize), and ``PPO("MlpPolicy", env)`` with every SB3 default (n_steps 2048, batch
    64, 10 epochs, net [64, 64]), one torch thread; timed over 16,384 steps (8 rollouts).
(c) the first release's ``configs/ppo.yaml``, kept as ``benchmarks/old_ppo.yaml`` (16 envs x
    256 steps, batch 256, 10 epochs, MlpPolicy
    [64, 64], VecNormalize on observations) on the same task: that file's ``env.splits`` belong
    to sp500_20, so it is read with ``yaml.safe_load``, ``env.splits`` dropped, ``env.data`` set
    to the task and built with ``build_config`` (the task's fixed splits fill in).

Every timed run builds a fresh env and model (seed 0), runs one warm-up rollout (not timed),
then times ``model.learn(N, reset_num_timesteps=False)``; learn collects whole rollouts, so
the steps counted are the steps it took (N rounded up to a whole number of rollouts). Besides
wall-clock steps/s, each run records the process's CPU seconds per wall second (below 1 with
one torch thread: the process waited for a CPU, i.e. the machine was busy), steps per CPU
second (less sensitive to other load), and the share of the time in ``collect_rollouts``
against ``train``. The figure is the median over repeats; the ratios (a)/(b) and (a)/(c) divide
medians measured in the same run (per-repeat ratios are in the JSON).

``--knobs`` also times variants of (a) that leave what is learned (nearly) unchanged: two
torch threads; 128 envs x 32 steps and 256 envs x 16 steps (the same 4,096-step rollout, so
the same number and size of updates; what changes is GAE's truncation at the rollout's end:
with gamma * gae_lambda = 0.81, the share of the advantage's weight replaced by the critic's
bootstrap, averaged over a rollout, is 7% at 64 steps, 13% at 32, 26% at 16).
A cProfile of one ``learn`` call of (a) (top 15 by cumulative time) is recorded when (a) misses
the target, or with ``--profile``.

Targets (from the issue): (a) >= 15,000 env-steps/s on a 2-core machine, and >= 5x (b).

A section of the suite (``python benchmarks/run.py --only learning_throughput``; the full suite
runs it with the knobs, ``--quick`` without). Alone:
``python benchmarks/learning_throughput.py [--quick] [--knobs] [--profile] [--markdown]``
(full: ~3 min, ~4 with ``--knobs``; writes ``benchmarks/results/learning_throughput.json``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
ROOT = _HERE.parent

SECTION = "learning_throughput"
TASK = "marketarena/Momentum-v0"
BENCH_CONFIG = "configs/bench/ppo.yaml"
#: configs/ppo.yaml as the first release shipped it (before fc2aa8b gave it the bench settings)
OLD_CONFIG = "benchmarks/old_ppo.yaml"
RESULTS = _HERE / "results" / "learning_throughput.json"
#: the issue's targets: (a)'s env-steps/s, and (a) over (b)
TARGET_FPS = 15_000
TARGET_OVER_SB3_DEFAULT = 5.0
FULL = {
    "a": 200_000,
    "b": 16_384,
    "c": 100_000,
    "knob": 102_400,
    "knob_slow": 12_288,
    "profile": 40_960,
    "repeats": 3,
}
QUICK = {
    "a": 40_960,
    "b": 4_096,
    "c": 20_480,
    "knob": 20_480,
    "knob_slow": 8_192,
    "profile": 20_480,
    "repeats": 1,
}
COMMON = [f"env.data={TASK}", "mlflow.enabled=false"]
ENVS_128 = ["algo.n_envs=128", "algo.hyperparameters.n_steps=32"]
ENVS_256 = ["algo.n_envs=256", "algo.hyperparameters.n_steps=16"]
#: variants of (a): label -> (overrides, budget key); two threads on a busy 2-core machine
#: can be 10-20x slower, hence its shorter run
KNOBS: dict[str, tuple[list[str], str]] = {
    "(a) torch_threads=2": (["algo.torch_threads=2"], "knob_slow"),
    "(a) n_envs=128, n_steps=32": (ENVS_128, "knob"),
    "(a) n_envs=256, n_steps=16": (ENVS_256, "knob"),
}


# ------------------------------------------------------------------------------ builders
def _train_env(config: Any) -> Any:
    from marketarena.training.train import load_universe, make_training_env, split_ranges

    data = load_universe(config)
    return make_training_env(config, data, split_ranges(config, data)["train"])


def _build_bench(overrides: list[str] = ()) -> tuple[Any, int]:
    """(a): configs/bench/ppo.yaml on the task, built as ``marketarena train`` builds it."""
    from marketarena.training.config import load_config
    from marketarena.training.train import make_model

    config = load_config(ROOT / BENCH_CONFIG, [*COMMON, *overrides])
    return make_model(config, _train_env(config)), config.algo.torch_threads


def _build_sb3_default() -> tuple[Any, int]:
    """(b): ``PPO("MlpPolicy", env)`` with SB3's defaults on one env of the same task env."""
    from stable_baselines3 import PPO

    from marketarena.training.config import load_config

    overrides = ["algo.n_envs=1", "algo.policy=MlpPolicy", "algo.normalize.rewards=false"]
    config = load_config(ROOT / BENCH_CONFIG, [*COMMON, *overrides])
    env = _train_env(config)
    return PPO("MlpPolicy", env, seed=config.seed, device="cpu", verbose=0), 1


def _build_old() -> tuple[Any, int]:
    """(c): the old configs/ppo.yaml on the task (its sp500_20 splits dropped)."""
    import yaml

    from marketarena.training.config import build_config
    from marketarena.training.train import make_model

    raw = yaml.safe_load((ROOT / OLD_CONFIG).read_text())
    del raw["env"]["splits"], raw["env"]["data"]
    raw["env"]["data"] = TASK
    raw.setdefault("mlflow", {})["enabled"] = False
    config = build_config(raw, OLD_CONFIG)
    return make_model(config, _train_env(config)), config.algo.torch_threads


# ------------------------------------------------------------------------------- timing
class PhaseTimer:
    """Wall seconds in a model's ``collect_rollouts`` and ``train`` (wrapped on the instance)."""

    def __init__(self, model: Any) -> None:
        self.seconds = {"collect_rollouts": 0.0, "train": 0.0}
        for name in self.seconds:
            setattr(model, name, self._timed(name, getattr(model, name)))

    def _timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed


def _rollout(model: Any) -> int:
    return int(model.n_envs * model.n_steps)


def _describe(model: Any) -> dict[str, Any]:
    return {
        "policy": type(model.policy).__name__,
        "n_envs": int(model.n_envs),
        "n_steps": int(model.n_steps),
        "batch_size": int(model.batch_size),
        "n_epochs": int(model.n_epochs),
        "gamma": float(model.gamma),
        "gae_lambda": float(model.gae_lambda),
        "vec_normalize": type(model.get_env()).__name__ == "VecNormalize",
    }


def _time_learn(build: Callable[[], tuple[Any, int]], timesteps: int) -> dict[str, Any]:
    """One fresh model: a warm-up rollout, then ``learn(timesteps)`` timed."""
    import torch

    model, threads = build()
    torch.set_num_threads(threads)
    model.learn(_rollout(model))  # warm-up: first passes, lazy imports; not timed
    phases = PhaseTimer(model)
    start_steps = model.num_timesteps
    load_before = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model.learn(timesteps, reset_num_timesteps=False)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    steps = int(model.num_timesteps - start_steps)
    out = {
        **_describe(model),
        "torch_threads": threads,
        "timesteps": steps,
        "wall_s": wall,
        "fps": steps / wall,
        "cpu_per_wall": cpu / wall,
        "steps_per_cpu_s": steps / cpu,
        "rollout_share": phases.seconds["collect_rollouts"] / wall,
        "train_share": phases.seconds["train"] / wall,
        "loadavg_1min_before": load_before,
        "loadavg_1min_after": os.getloadavg()[0],
    }
    model.get_env().close()
    return out


def _profile(timesteps: int) -> str:
    """cProfile of one ``learn(timesteps)`` of (a) after its warm-up: top 15 by cumtime."""
    import torch

    model, threads = _build_bench()
    torch.set_num_threads(threads)
    model.learn(_rollout(model))
    profiler = cProfile.Profile()
    profiler.enable()
    model.learn(timesteps, reset_num_timesteps=False)
    profiler.disable()
    model.get_env().close()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(15)
    # keep the table, drop the header's absolute paths
    return text.getvalue().replace(str(ROOT) + "/", "").strip()


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    first = runs[0]
    keys = ("policy", "n_envs", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda")
    keys += ("vec_normalize",)
    fps = [r["fps"] for r in runs]
    return {
        **{k: first[k] for k in keys},
        "torch_threads": first["torch_threads"],
        "timesteps": first["timesteps"],
        "fps": med("fps"),
        "fps_min": min(fps),
        "fps_max": max(fps),
        "wall_s": med("wall_s"),
        "cpu_per_wall": med("cpu_per_wall"),
        "steps_per_cpu_s": med("steps_per_cpu_s"),
        "rollout_share": med("rollout_share"),
        "train_share": med("train_share"),
        "per_repeat": runs,
    }


def run(quick: bool = False, knobs: bool = False, profile: bool = False) -> dict[str, Any]:
    import numpy
    import stable_baselines3
    import torch

    budget = QUICK if quick else FULL
    started = time.perf_counter()
    load_before = os.getloadavg()
    threads_before = torch.get_num_threads()
    #: key -> (label, build, timesteps)
    cases: dict[str, tuple[str, Callable[[], tuple[Any, int]], int]] = {
        "a": (f"(a) {BENCH_CONFIG}", _build_bench, budget["a"]),
        "b": ("(b) SB3 default PPO, 1 env", _build_sb3_default, budget["b"]),
        "c": (f"(c) first-release {OLD_CONFIG}", _build_old, budget["c"]),
    }
    if knobs:
        for i, (label, (overrides, steps)) in enumerate(KNOBS.items()):

            def build(o: list[str] = overrides) -> tuple[Any, int]:
                return _build_bench(o)

            cases[f"knob{i}"] = (label, build, budget[steps])
    samples: dict[str, list[dict[str, Any]]] = {key: [] for key in cases}
    try:
        for _ in range(budget["repeats"]):
            for key, (_label, build, timesteps) in cases.items():
                samples[key].append(_time_learn(build, timesteps))
        summaries = {key: {"name": cases[key][0], **_summary(s)} for key, s in samples.items()}
        a, b, c = summaries["a"], summaries["b"], summaries["c"]
        per_repeat_ab = [
            x["fps"] / y["fps"] for x, y in zip(samples["a"], samples["b"], strict=True)
        ]
        per_repeat_ac = [
            x["fps"] / y["fps"] for x, y in zip(samples["a"], samples["c"], strict=True)
        ]
        ratios = {
            "a_over_b": a["fps"] / b["fps"],
            "a_over_c": a["fps"] / c["fps"],
            "a_over_b_per_repeat": per_repeat_ab,
            "a_over_c_per_repeat": per_repeat_ac,
            "a_over_b_per_cpu_s": a["steps_per_cpu_s"] / b["steps_per_cpu_s"],
            "a_over_c_per_cpu_s": a["steps_per_cpu_s"] / c["steps_per_cpu_s"],
        }
        for key, s in summaries.items():
            if key.startswith("knob"):
                s["over_a"] = s["fps"] / a["fps"]
                s["over_a_per_cpu_s"] = s["steps_per_cpu_s"] / a["steps_per_cpu_s"]
        missed = a["fps"] < TARGET_FPS
        profile_text = _profile(budget["profile"]) if (profile or missed) else None
    finally:
        torch.set_num_threads(threads_before)
    return {
        "config": {
            "task": TASK,
            "split": "train",
            "timesteps": {k: v for k, v in budget.items() if k != "repeats"},
            "repeats": budget["repeats"],
            "quick": quick,
            "knobs": knobs,
            "logical_cpus": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg()),
            "torch": torch.__version__,
            "stable_baselines3": stable_baselines3.__version__,
            "numpy": numpy.__version__,
            "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        "targets": {
            "fps": TARGET_FPS,
            "fps_met": not missed,
            "a_over_b": TARGET_OVER_SB3_DEFAULT,
            "a_over_b_met": ratios["a_over_b"] >= TARGET_OVER_SB3_DEFAULT,
        },
        "cases": summaries,
        "ratios": ratios,
        "profile_top15_cumtime": profile_text,
        "seconds": time.perf_counter() - started,
    }


# ------------------------------------------------------------------------------ reports
def _setting(s: dict[str, Any]) -> str:
    norm = ", VecNormalize" if s["vec_normalize"] else ""
    return (
        f"{s['policy']}, {s['n_envs']} env x {s['n_steps']} steps, batch {s['batch_size']}, "
        f"{s['n_epochs']} epochs{norm}, {s['torch_threads']} thread(s)"
    )


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    cfg = result["config"]
    out: list[dict[str, Any]] = []

    def add(case: str, value: Any, unit: str, note: str) -> None:
        out.append({"section": SECTION, "case": case, "value": value, "unit": unit, "note": note})

    for s in result["cases"].values():
        add(
            f"{s['name']} steps/s",
            s["fps"],
            "env-steps/s",
            f"median of {cfg['repeats']} (range {s['fps_min']:,.0f}..{s['fps_max']:,.0f}), "
            f"{s['timesteps']:,} steps; {s['steps_per_cpu_s']:,.0f} per CPU s, "
            f"{s['cpu_per_wall']:.2f} CPU s/wall s, rollouts {100 * s['rollout_share']:.0f}% / "
            f"updates {100 * s['train_share']:.0f}%; {_setting(s)}"
            + (f"; {s['over_a']:.2f}x (a)" if "over_a" in s else ""),
        )
    r, t = result["ratios"], result["targets"]
    per_ab = ", ".join(f"{x:.1f}" for x in r["a_over_b_per_repeat"])
    per_ac = ", ".join(f"{x:.2f}" for x in r["a_over_c_per_repeat"])
    add(
        "(a) / (b)",
        r["a_over_b"],
        "x",
        f"same run; per repeat {per_ab}; per CPU s {r['a_over_b_per_cpu_s']:.1f}x; "
        f"target >= {t['a_over_b']:g}: {'met' if t['a_over_b_met'] else 'MISSED'}",
    )
    add(
        "(a) / (c)",
        r["a_over_c"],
        "x",
        f"same run; per repeat {per_ac}; per CPU s {r['a_over_c_per_cpu_s']:.2f}x",
    )
    add(
        "(a) target",
        result["cases"]["a"]["fps"],
        "env-steps/s",
        f">= {t['fps']:,}: {'met' if t['fps_met'] else 'MISSED'}",
    )
    load = ", ".join(f"{x:.2f}" for x in cfg["loadavg_before"])
    load_after = ", ".join(f"{x:.2f}" for x in cfg["loadavg_after"])
    add(
        "wall time",
        result["seconds"],
        "s",
        f"{cfg['logical_cpus']} CPUs, affinity {cfg['affinity']}; load average (1, 5, 15 min) "
        f"{load} before, {load_after} after; torch {cfg['torch']}",
    )
    return out


def markdown(result: dict[str, Any]) -> str:
    """The cases and the ratios as markdown tables."""
    lines = [
        "| case | setting | env-steps/s (median) | range | per CPU s | CPU s / wall s "
        "| rollouts / updates |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in result["cases"].values():
        lines.append(
            f"| {s['name']} | {_setting(s)}; {s['timesteps']:,} steps | {s['fps']:,.0f} "
            f"| {s['fps_min']:,.0f}..{s['fps_max']:,.0f} | {s['steps_per_cpu_s']:,.0f} "
            f"| {s['cpu_per_wall']:.2f} | {100 * s['rollout_share']:.0f}% / "
            f"{100 * s['train_share']:.0f}% |"
        )
    r = result["ratios"]
    lines += [
        "",
        "| ratio, same run | wall clock | per repeat | per CPU second |",
        "|---|---:|---|---:|",
        f"| (a) / (b) | {r['a_over_b']:.1f}x | "
        + ", ".join(f"{x:.1f}" for x in r["a_over_b_per_repeat"])
        + f" | {r['a_over_b_per_cpu_s']:.1f}x |",
        f"| (a) / (c) | {r['a_over_c']:.2f}x | "
        + ", ".join(f"{x:.2f}" for x in r["a_over_c_per_repeat"])
        + f" | {r['a_over_c_per_cpu_s']:.2f}x |",
    ]
    knobs = [s for s in result["cases"].values() if "over_a" in s]
    if knobs:
        lines += ["", "| variant of (a) | / (a), wall clock | / (a), per CPU second |"]
        lines += ["|---|---:|---:|"]
        lines += [
            f"| {s['name']} | {s['over_a']:.2f}x | {s['over_a_per_cpu_s']:.2f}x |" for s in knobs
        ]
    return "\n".join(lines)


def bootstrap_share(gamma: float, gae_lambda: float, n_steps: int) -> float:
    """GAE truncated at the end of an ``n_steps`` rollout: the share of each advantage's
    weight (``(gamma * gae_lambda)**k`` on the k-th TD error) that the critic's bootstrap
    stands in for, averaged over the rollout's steps."""
    c = gamma * gae_lambda
    if c >= 1.0:
        return 1.0
    return c * (1.0 - c**n_steps) / (n_steps * (1.0 - c))


def notes(result: dict[str, Any]) -> list[str]:
    """What the run shows, in its own figures (bullets under the tables)."""
    cfg, t, r = result["config"], result["targets"], result["ratios"]
    a = result["cases"]["a"]

    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    out = [
        f"(a) trains at {a['fps']:,.0f} env-steps/s end to end (target {t['fps']:,}: "
        f"{verdict(t['fps_met'])}), {r['a_over_b']:.1f}x stable-baselines3's default PPO on one "
        f"env (target {t['a_over_b']:g}x: {verdict(t['a_over_b_met'])}) and "
        f"{r['a_over_c']:.2f}x the first release's PPO config (`{OLD_CONFIG}`).",
        f"(a)'s repeats spanned {a['fps_min']:,.0f}..{a['fps_max']:,.0f} env-steps/s; the "
        f"process got {a['cpu_per_wall']:.2f} CPU s per wall second (below 1: it waited for a "
        "CPU), so on a shared machine steps per CPU second "
        f"({a['steps_per_cpu_s']:,.0f}) is the steadier figure. "
        f"{100 * a['train_share']:.0f}% of (a)'s time is the gradient updates, "
        f"{100 * a['rollout_share']:.0f}% rollout collection.",
    ]
    base = bootstrap_share(a["gamma"], a["gae_lambda"], a["n_steps"])
    for s in result["cases"].values():
        if "over_a" not in s:
            continue
        if s["torch_threads"] != a["torch_threads"]:
            out.append(
                f"{s['name']}: {s['over_a']:.2f}x (a) on the wall clock, using "
                f"{s['cpu_per_wall']:.2f} CPU s per wall second ({s['over_a_per_cpu_s']:.2f}x "
                f"(a) per CPU second), with {len(cfg['affinity'])} CPU(s) available to the "
                f"process; the bench config uses {a['torch_threads']} thread(s)."
            )
        elif s["n_steps"] != a["n_steps"]:
            share = bootstrap_share(s["gamma"], s["gae_lambda"], s["n_steps"])
            out.append(
                f"{s['name']}: {s['over_a']:.2f}x (a). The same "
                f"{s['n_envs'] * s['n_steps']:,}-step rollout and updates, but GAE is truncated "
                f"more often: the critic's bootstrap carries {share:.0%} of the advantage "
                f"weight, averaged over a rollout, against {base:.0%} at {a['n_steps']} steps "
                f"(gamma x gae_lambda = {a['gamma'] * a['gae_lambda']:.2f})."
            )
    if result.get("profile_top15_cumtime"):
        out.append(
            "A cProfile of one `learn()` of (a), top 15 by cumulative time, is in the JSON "
            "(`profile_top15_cumtime`)."
        )
    return out


def docs(result: dict[str, Any]) -> list[str]:
    """The section of docs/BENCHMARKS.md below its heading: setup, tables, notes."""
    cfg = result["config"]
    load = " / ".join(f"{x:.2f}" for x in cfg["loadavg_before"])
    load_after = " / ".join(f"{x:.2f}" for x in cfg["loadavg_after"])
    intro = (
        "End-to-end PPO training speed: env steps per second of `model.learn` (rollout "
        "collection plus gradient updates) on the train split of "
        f"`{cfg['task']}`, on the CPU ([learning_throughput.py](../benchmarks/"
        f"learning_throughput.py)). (a) is `{BENCH_CONFIG}` built as `marketarena train` "
        'builds it; (b) is stable-baselines3\'s default `PPO("MlpPolicy", env)` on one env of '
        f"the same task env; (c) is the first release's `configs/ppo.yaml` (kept as "
        f"`{OLD_CONFIG}`) on the task. Every run builds a "
        "fresh model (seed 0), learns one rollout untimed, then times `learn()` over the step "
        "counts shown (whole rollouts); the cases are interleaved within each of "
        f"{cfg['repeats']} repeat(s) and the figures are medians. One torch thread unless "
        f"noted. Measured on {cfg['date']}: {cfg['logical_cpus']} logical CPUs, affinity "
        f"{cfg['affinity']}, torch {cfg['torch']}, stable-baselines3 "
        f"{cfg['stable_baselines3']}; load average {load} (1 / 5 / 15 min) before, "
        f"{load_after} after; took {result['seconds']:.0f} s"
        + (" (quick: short runs)" if cfg["quick"] else "")
        + ". Alone: `python benchmarks/learning_throughput.py --knobs --markdown`."
    )
    return [intro, "", markdown(result), "", *(f"- {n}" for n in notes(result))]


def main() -> None:
    from common import print_rows

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat")
    parser.add_argument("--knobs", action="store_true", help="also time variants of (a)")
    parser.add_argument("--profile", action="store_true", help="cProfile (a) even if it meets")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the docs section (markdown)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"where to write the JSON (default {RESULTS.relative_to(ROOT)}; none with --quick)",
    )
    args = parser.parse_args()
    result = run(quick=args.quick, knobs=args.knobs, profile=args.profile)
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_rows(rows(result))
    if result["profile_top15_cumtime"]:
        print("\ncProfile of one learn() of (a), top 15 by cumulative time:")
        print(result["profile_top15_cumtime"])
    if args.markdown:
        print()
        print("\n".join(docs(result)))
    if out is not None:
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
