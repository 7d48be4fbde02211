"""The service's read endpoints under load while a simulation job runs, as a section of the
benchmark suite (``python benchmarks/run.py --only service_load``; alone:
``python benchmarks/load_test.py``).

It runs :mod:`load_test` (a served, seeded store on loopback, a long simulation job in a
worker process, 8 concurrent requests over five read endpoints) and keeps its figures: each
endpoint's requests/s and p50/p99 latency, all of them together, and the job's progress over
the measurement, beside the machine's load average (the figures move with it).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import load_test

TARGET_RPS, TARGET_P99_MS = 500.0, 100.0


def run(quick: bool = False) -> dict[str, Any]:
    duration = 5.0 if quick else 20.0
    with tempfile.TemporaryDirectory(prefix="marketarena-service-load-") as tmp:
        out = Path(tmp) / "figures.json"
        before = os.getloadavg()
        code = load_test.main(["--duration", str(duration), "--json", str(out)])
        after = os.getloadavg()
        figures = json.loads(out.read_text())
    return {
        "duration_s": duration,
        "concurrency": 8,
        "endpoints": figures["endpoints"],
        "all": figures["all"],
        "job": {k: load_test.progress(v) for k, v in figures["job"].items()},
        "load_before": before,
        "load_after": after,
        "met": code == 0,
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    total = result["all"]
    return [
        {"case": "read endpoints, all", "value": total["rps"], "unit": "requests/s"},
        {"case": "read endpoints, p99", "value": total["p99_ms"], "unit": "ms"},
    ]


def docs(result: dict[str, Any]) -> list[str]:
    """The section of docs/BENCHMARKS.md below its heading."""
    total = result["all"]
    load = " / ".join(f"{x:.2f}" for x in result["load_before"])
    lines = [
        "`marketarena serve` on 127.0.0.1 over a store seeded through the API (downloaded data, "
        "three finished runs), with a simulation job (equal_weight over sp500_20, 1991-2022) "
        f"running in a worker process throughout; {result['concurrency']} concurrent requests "
        f"for {result['duration_s']:g} s, each endpoint in turn "
        "([load_test.py](../benchmarks/load_test.py); alone: `python benchmarks/load_test.py`). "
        f"Load average before: {load} (1 / 5 / 15 min).",
        "",
        "| endpoint | requests | req/s | p50 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path, r in [*result["endpoints"].items(), ("all", total)]:
        lines.append(
            f"| `{path}` | {r['requests']:,} | {r['rps']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['errors']} |"
        )
    verdict = "met" if result["met"] else "missed"
    lines += [
        "",
        f"- Target >= {TARGET_RPS:g} requests/s with p99 < {TARGET_P99_MS:g} ms while the job "
        f"runs: {verdict}.",
        f"- The job: before, {result['job']['before']}; after, {result['job']['after']}.",
        "- Answers are cached under keys naming what they read (the runs' last updates, the "
        "data folder's files), so a changed run or file is never served stale; before that "
        "cache the same test gave 32 requests/s with p99 3 s (each leaderboard request "
        "recomputed every run's metrics, 117 ms).",
    ]
    return lines
