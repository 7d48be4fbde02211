"""Does memory grow with the number of envs? ``PortfolioVectorEnv`` on the bundled panel.

For each ``n`` a fresh Python process imports marketarena, then loads ``sp500_20`` (20 stocks
x 8,313 dates, close only), builds ``PortfolioVectorEnv(n, data, window=32)``, resets it and
steps it 10 times with random actions. Two measures, each in its own process per ``n`` and
repeat (tracemalloc's own bookkeeping would inflate the RSS):

* **tracemalloc**: traced bytes from just before loading the data to after the steps:
  ``current`` (what is still held: data, features, env) and ``peak`` (the high-water mark,
  including the CSV parser's temporaries). numpy reports its buffers to tracemalloc.
* **RSS**: the process's peak RSS (``VmHWM``, reset right after the imports) at the end minus
  its current RSS after the imports (``/proc/self/statm``): the memory the OS had to give to
  load and run.

Before the baseline the child also runs one tiny ``pandas.read_csv`` of a gzipped two-line
CSV, so that the parser's lazy imports count as imports, not as data.

The breakdown separates what all envs share (the ``MarketData`` arrays and the float32
features array, checked to be one copy: ``venv.sim._close is data.close`` and the observation
windows are a view of ``venv.core.features``) from the per-env bytes (the slope of a linear fit
of bytes against ``n``, and an inventory of the env's arrays with a leading ``n`` axis).

The issue's target: "1,024 envs over the 20-stock x 33-year panel use less than twice the
memory of one". Both measures are reported with their verdict; neither is picked to pass.

Run: ``taskset -c 1 benchmarks/.venv/bin/python benchmarks/memory.py [--quick]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

SECTION = "memory"
DATASET = "sp500_20"
WINDOW = 32
N_STEPS = 10
TARGET_N, TARGET_RATIO = 1024, 2.0
FULL_NS = [1, 16, 256, 1024, 4096]
QUICK_NS = [1, 1024]


# ------------------------------------------------------------------------ child process
def _rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    """Peak resident set size (VmHWM) since the last :func:`_reset_peak_rss`.

    Not ``getrusage``'s ``ru_maxrss``: Linux keeps that across ``execve``, so a child started
    by a large parent (the suite's runner, after torch) would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _env_inventory(venv: Any, n: int) -> dict[str, Any]:
    """Bytes of the arrays the env holds per env, by category, each array counted once.

    ``obs_buffers``: the two observation buffers; ``state``: the other arrays of the env, its
    core, simulator, reward and step result with a leading axis of ``n`` (or ``n * (N + 1)``,
    the flattened actions); ``spaces``: the batched Gymnasium spaces (``batch_space`` stores
    ``low``, ``high`` and two bool masks of shape ``(n, D)``). Views into shared data (e.g.
    ``sim.mark`` for one env, a row of ``data.close``) are not counted.
    """
    import numpy as np

    seen: set[int] = set()

    def owned(a: Any, lead: tuple[int, ...]) -> int:
        if not isinstance(a, np.ndarray) or a.ndim == 0 or a.shape[0] not in lead:
            return 0
        root = a if a.base is None else a.base
        if not isinstance(root, np.ndarray) or root.ndim == 0 or root.shape[0] not in lead:
            return 0  # a view into something that is not per-env
        if id(root) in seen:
            return 0
        seen.add(id(root))
        return root.nbytes

    lead = (n, n * (venv.core.n_assets + 1))
    out = {"obs_buffers": sum(owned(b, (n,)) for b in venv._buffers)}
    state = 0
    for obj in (venv, venv.core, venv.sim, venv.core.reward_fn, venv.sim._result):
        for value in vars(obj).values():
            for a in value if isinstance(value, tuple | list) else (value,):
                state += owned(a, lead)
    out["state"] = state
    spaces = 0
    for space in (venv.observation_space, venv.action_space):
        for attr in ("low", "high", "bounded_below", "bounded_above"):
            spaces += owned(getattr(space, attr, None), (n,))
    out["spaces"] = spaces
    out["total"] = out["obs_buffers"] + out["state"] + out["spaces"]
    return out


def _child(n: int, mode: str) -> dict[str, Any]:
    import gc
    import gzip
    import io

    import numpy as np
    import pandas as pd

    from marketarena.envs.data import load_dataset
    from marketarena.envs.vector_env import PortfolioVectorEnv

    # trigger the CSV parser's lazy imports on a tiny gzipped file
    pd.read_csv(io.BytesIO(gzip.compress(b"date,a\n2000-01-03,1.0\n")), compression="gzip")
    gc.collect()
    out: dict[str, Any] = {"n": n, "mode": mode}
    tracing = mode == "tracemalloc"
    if tracing:
        import tracemalloc

        tracemalloc.start()
    else:
        _reset_peak_rss()
        out["rss_after_imports"] = _rss_bytes()
        out["maxrss_after_imports"] = _maxrss_bytes()

    data = load_dataset(DATASET)
    if tracing:
        out["load_current"], out["load_peak"] = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
    venv = PortfolioVectorEnv(n, data, window=WINDOW)
    venv.reset(seed=0)
    if tracing:
        out["built_current"] = tracemalloc.get_traced_memory()[0]
    rng = np.random.default_rng(0)
    for _ in range(N_STEPS):
        venv.step(rng.random((n, data.n_assets + 1), dtype=np.float32))

    if tracing:
        out["current"], env_peak = tracemalloc.get_traced_memory()
        out["env_peak"] = env_peak
        out["peak"] = max(out["load_peak"], env_peak)
        tracemalloc.stop()
    else:
        out["maxrss_end"] = _maxrss_bytes()
        out["rss_end"] = _rss_bytes()
        out["rss_peak_growth"] = out["maxrss_end"] - out["rss_after_imports"]

    core, sim = venv.core, venv.sim
    data_arrays = [data.dates, data.close, data.open, data.high, data.low, data.volume]
    data_arrays.append(data.features)
    out["data_bytes"] = sum(a.nbytes for a in data_arrays if a is not None)
    out["features_bytes"] = core.features.nbytes
    out["shape"] = [data.n_periods, data.n_assets]
    out["obs_dim"] = core.obs_dim
    out["checks"] = {
        "sim._close is data.close": sim._close is data.close,
        "data.close read-only": not data.close.flags.writeable,
        "core.windows is a view of core.features": bool(
            np.shares_memory(core.windows, core.features)
        ),
        "core.features has T rows, not n*T": core.features.shape[0] == data.n_periods,
    }
    out["inventory"] = _env_inventory(venv, n)
    return out


# ----------------------------------------------------------------------- parent process
def _spawn(n: int, mode: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--mode", mode],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child n={n} mode={mode} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fit(ns: list[int], values: list[float]) -> dict[str, float]:
    import numpy as np

    slope, intercept = np.polyfit(np.asarray(ns, float), np.asarray(values, float), 1)
    return {"per_env_bytes": float(slope), "intercept_bytes": float(intercept)}


def run(quick: bool = False) -> dict:
    ns = QUICK_NS if quick else FULL_NS
    repeats = 3
    measures = {
        "tracemalloc_current": ("tracemalloc", "current"),
        "tracemalloc_peak": ("tracemalloc", "peak"),
        "tracemalloc_env_peak": ("tracemalloc", "env_peak"),
        "tracemalloc_load_peak": ("tracemalloc", "load_peak"),
        "rss_peak_growth": ("rss", "rss_peak_growth"),
        "rss_total_peak": ("rss", "maxrss_end"),
    }
    per_n: list[dict[str, Any]] = []
    for n in ns:
        samples = {
            mode: [_spawn(n, mode) for _ in range(repeats)] for mode in ("tracemalloc", "rss")
        }
        entry: dict[str, Any] = {"n": n}
        for name, (mode, key) in measures.items():
            entry[name] = float(statistics.median(s[key] for s in samples[mode]))
        first = samples["tracemalloc"][0]
        entry["rss_after_imports"] = float(
            statistics.median(s["rss_after_imports"] for s in samples["rss"])
        )
        entry["inventory"] = first["inventory"]
        entry["checks"] = first["checks"]
        entry["data_bytes"], entry["features_bytes"] = first["data_bytes"], first["features_bytes"]
        entry["shape"], entry["obs_dim"] = first["shape"], first["obs_dim"]
        per_n.append(entry)

    base = per_n[0]
    assert base["n"] == 1
    for entry in per_n:
        entry["ratio_to_n1"] = {m: entry[m] / base[m] for m in measures}
    fits = {
        m: _fit([e["n"] for e in per_n], [e[m] for e in per_n])
        for m in ("tracemalloc_current", "tracemalloc_peak", "rss_peak_growth")
    }
    target_entry = next(e for e in per_n if e["n"] == TARGET_N)
    verdicts = {
        m: {
            "ratio": target_entry["ratio_to_n1"][m],
            "meets": bool(target_entry["ratio_to_n1"][m] < TARGET_RATIO),
        }
        for m in ("tracemalloc_current", "tracemalloc_peak", "rss_peak_growth", "rss_total_peak")
    }
    shared = base["data_bytes"] + base["features_bytes"]
    # the floor for traced bytes: shared data plus one returned (n, D) float32 observation
    obs_row = 4 * base["obs_dim"]
    obs_floor = (shared + TARGET_N * obs_row) / (shared + obs_row)
    return {
        "config": {
            "dataset": DATASET,
            "shape": base["shape"],
            "window": WINDOW,
            "obs_dim": base["obs_dim"],
            "steps": N_STEPS,
            "ns": ns,
            "repeats": repeats,
            "quick": quick,
            "target": f"n={TARGET_N} uses < {TARGET_RATIO:g}x the memory of n=1",
        },
        "shared_bytes": {
            "market_data": base["data_bytes"],
            "features": base["features_bytes"],
            "total": shared,
        },
        "sharing_checks": {str(e["n"]): e["checks"] for e in per_n},
        "per_n": per_n,
        "fits": fits,
        "verdicts": verdicts,
        "obs_floor_ratio": obs_floor,
    }


def rows(result: dict) -> list[dict]:
    out: list[dict] = []
    mib = 1024**2

    def add(case: str, value: float, unit: str, note: str = "") -> None:
        out.append({"section": SECTION, "case": case, "value": value, "unit": unit, "note": note})

    cfg = result["config"]
    t, n_assets = cfg["shape"]
    sh = result["shared_bytes"]
    add(
        "shared data (MarketData + features)",
        sh["total"] / mib,
        "MiB",
        f"{cfg['dataset']} {t} dates x {n_assets} assets: arrays {sh['market_data'] / mib:.2f} "
        f"MiB + float32 features {sh['features'] / mib:.2f} MiB, one copy for all envs",
    )
    failed = [
        f"n={n}: {k}"
        for n, checks in result["sharing_checks"].items()
        for k, ok in checks.items()
        if not ok
    ]
    add(
        "sharing checks failed",
        len(failed),
        "count",
        "; ".join(failed) or "sim._close is data.close, windows view features, T rows only",
    )
    for e in result["per_n"]:
        r = e["ratio_to_n1"]
        n = e["n"]
        add(
            f"n={n} tracemalloc current",
            e["tracemalloc_current"] / mib,
            "MiB",
            f"{r['tracemalloc_current']:.2f}x n=1",
        )
        add(
            f"n={n} tracemalloc peak",
            e["tracemalloc_peak"] / mib,
            "MiB",
            f"{r['tracemalloc_peak']:.2f}x n=1; load peak {e['tracemalloc_load_peak'] / mib:.2f}"
            f" MiB, env phase peak {e['tracemalloc_env_peak'] / mib:.2f} MiB",
        )
        add(
            f"n={n} peak RSS growth",
            e["rss_peak_growth"] / mib,
            "MiB",
            f"{r['rss_peak_growth']:.2f}x n=1; peak RSS - RSS after imports "
            f"({e['rss_after_imports'] / mib:.0f} MiB)",
        )
    big = next(e for e in result["per_n"] if e["n"] == TARGET_N)
    inv, n = big["inventory"], big["n"]
    growth = (big["tracemalloc_current"] - result["per_n"][0]["tracemalloc_current"]) / (n - 1)
    add(
        f"n={n} per-env arrays",
        inv["total"] / n,
        "B/env",
        f"obs buffers {inv['obs_buffers'] / n:,.0f} (2 x {big['obs_dim']} float32) + "
        f"gymnasium batch_space low/high/masks {inv['spaces'] / n:,.0f} + "
        f"state {inv['state'] / n:,.0f}; traced growth over n=1 "
        f"{growth:,.0f}",
    )
    for m, fit in result["fits"].items():
        add(
            f"slope {m}",
            fit["per_env_bytes"],
            "B/env",
            f"linear fit over n={cfg['ns']}; intercept {fit['intercept_bytes'] / mib:.2f} MiB",
        )
    add(
        f"floor n={TARGET_N} / n=1, shared data + 1 obs batch",
        result["obs_floor_ratio"],
        "x",
        f"any env returning a ({TARGET_N}, {cfg['obs_dim']}) float32 observation over this "
        "panel holds at least this ratio of traced bytes",
    )
    for m, v in result["verdicts"].items():
        extra = " (whole process: interpreter + libraries)" if m == "rss_total_peak" else ""
        add(
            f"target n=1024 < 2x n=1: {m}",
            v["ratio"],
            "x",
            ("meets" if v["meets"] else "MISSES") + extra,
        )
    return out


def _main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 1 and 1024 only")
    parser.add_argument("--json", action="store_true", help="print the result dict as JSON")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("tracemalloc", "rss"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_child(args.child, args.mode)))
        return
    result = run(quick=args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
    from common import print_rows

    print_rows(rows(result))


if __name__ == "__main__":
    _main()
