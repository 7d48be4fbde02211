"""How the shipped PPO bench settings were chosen: variants of configs/bench/ppo.yaml, each
scored by ``marketarena bench --split validation`` (never the test split).

Each variant is the shipped config with a few keys changed (:data:`VARIANTS`). The script
writes each variant's config file, runs the bench on the diagnostic tasks' validation splits
(5 seeds x the 6 planted tasks by default), and prints one table: IQM with its 95%
stratified-bootstrap interval over tasks x seeds, the median score per task, and the median
annual turnover. The README's "Does RL learn here?" quotes its rows.

    python benchmarks/ppo_settings_sweep.py [--variants shipped differential_sharpe_300k ...]
        [--seeds 5] [--jobs 2] [--output reports/ppo_settings_sweep]

Each variant is one ``marketarena bench`` process (its output in ``<output>/<variant>.log``);
``--jobs 2`` runs two at once (each training uses one torch thread). Every 30 s each running
variant prints its trainings done, the time so far and an ETA. About 8 minutes a 300k-step
variant and 13 a 600k one, two at a time on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "configs" / "bench" / "ppo.yaml"

N_TASKS = 6  # the planted tasks bench scores by default
POLL_SECONDS = float(os.environ.get("SWEEP_POLL_SECONDS", "30"))  # between progress lines

_300K = {"algo": {"total_timesteps": 300_000}, "training": {"eval_every": 50_000}}
#: the band every variant below but the shipped one was measured with
_BAND_5_25 = {"rebalance_band": 0.05, "relative_band": 0.25}


def _with_5_25_band(overrides: dict[str, Any]) -> dict[str, Any]:
    return {**overrides, "env": {**_BAND_5_25, **overrides.get("env", {})}}


#: name -> (what changes, overrides of configs/bench/ppo.yaml)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "shipped": ("configs/bench/ppo.yaml as shipped (10/50 band, 600k steps)", {}),
    "band_5_25": ("5/25 band", _with_5_25_band({})),
    "300k": ("5/25 band, 300k steps", _with_5_25_band(_300K)),
    "differential_sharpe_300k": (
        "5/25 band, differential Sharpe reward, 300k steps (the previous shipped config)",
        _with_5_25_band({**_300K, "env": {"reward": "differential_sharpe"}}),
    ),
    "no_turnover_penalty_300k": (
        "5/25 band, no turnover penalty, 300k steps",
        _with_5_25_band({**_300K, "env": {"reward_kwargs": {"turnover_penalty": 0.0}}}),
    ),
    "log_volatility_300k": (
        "5/25 band, + log_volatility_20 feature, 300k steps",
        _with_5_25_band(
            {
                **_300K,
                "env": {"features": ["log_return_z", "volatility_ratio", "log_volatility_20"]},
            }
        ),
    ),
    "lr_1e-3_300k": (
        "5/25 band, learning rate 1e-3, 300k steps",
        _with_5_25_band(
            {**_300K, "algo": {**_300K["algo"], "hyperparameters": {"learning_rate": 0.001}}}
        ),
    ),
    "turnover_penalty_0.002": (
        "5/25 band, turnover penalty 0.002",
        _with_5_25_band({"env": {"reward_kwargs": {"turnover_penalty": 0.002}}}),
    ),
    "turnover_penalty_0.003": (
        "5/25 band, turnover penalty 0.003",
        _with_5_25_band({"env": {"reward_kwargs": {"turnover_penalty": 0.003}}}),
    ),
    "1m": ("5/25 band, 1M steps", _with_5_25_band({"algo": {"total_timesteps": 1_000_000}})),
}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def run_variant(name: str, folder: Path, seeds: int) -> dict[str, Any]:
    """Write the variant's config, bench it on the validation splits, return its results."""
    config = merge(yaml.safe_load(SHIPPED.read_text()), VARIANTS[name][1])
    config["name"] = f"sweep_{name}"
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = folder / name
    log = folder / f"{name}.log"
    started = time.perf_counter()
    total = seeds * N_TASKS
    command = [
        sys.executable,
        "-m",
        "marketarena.cli",
        "bench",
        "--agent",
        f"ppo:{path}",
        "--split",
        "validation",
        "--seeds",
        str(seeds),
        "--output",
        str(out),
    ]
    with log.open("w") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT)
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            # a training's final model folder is written when it ends
            done = len(list(out.glob("runs/*/model")))
            elapsed = time.perf_counter() - started
            eta = f"ETA {elapsed / done * (total - done):.0f} s" if done else "ETA unknown"
            print(f"  {name}: {done}/{total} trainings, {elapsed:.0f} s, {eta}", flush=True)
    if process.returncode != 0:
        raise SystemExit(f"{name}: marketarena bench failed (exit {process.returncode}); see {log}")
    print(f"  {name}: done in {time.perf_counter() - started:.0f} s", flush=True)
    return {
        "rows": json.loads((out / "results.json").read_text())["rows"],
        "aggregates": json.loads((out / "aggregates.json").read_text())["agents"],
    }


def summary(name: str, results: dict[str, Any]) -> dict[str, Any]:
    agent = f"ppo:{name}"
    aggregate = results["aggregates"][agent]
    rows = [r for r in results["rows"] if r["agent"] == agent]
    tasks: dict[str, list[float]] = {}
    for r in rows:
        tasks.setdefault(r["task"], []).append(r["score"])
    return {
        "iqm": aggregate["iqm"],
        "interval": (aggregate["iqm_low"], aggregate["iqm_high"]),
        "tasks": {t: float(sorted(s)[len(s) // 2]) for t, s in tasks.items()},
        "turnover": aggregate["annual_turnover"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--output", default="reports/ppo_settings_sweep")
    args = parser.parse_args()
    folder = Path(args.output).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{len(args.variants)} variant(s) x {args.seeds} seeds x 6 tasks, validation splits")
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(
            zip(
                args.variants,
                pool.map(lambda v: run_variant(v, folder, args.seeds), args.variants),
                strict=True,
            )
        )
    table = {name: summary(name, r) for name, r in results.items()}
    tasks = list(next(iter(table.values()))["tasks"])
    print(f"| variant | IQM [95%] | {' | '.join(tasks)} | turnover/yr |")
    print(f"|---|---|{'---|' * len(tasks)}---|")
    for name, row in table.items():
        lo, hi = row["interval"]
        cells = " | ".join(f"{row['tasks'][t]:.2f}" for t in tasks)
        print(
            f"| {VARIANTS[name][0]} | {row['iqm']:.2f} [{lo:.2f}, {hi:.2f}] | {cells} | "
            f"{row['turnover']:.1f} |"
        )
    (folder / "summary.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
