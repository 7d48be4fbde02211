"""Load test of the service's read endpoints while a simulation job runs.

    python benchmarks/load_test.py [--duration 20] [--concurrency 8] [--url URL --token T]

Without ``--url`` it starts ``marketarena serve`` on 127.0.0.1 (a free port, a token) over a
new store and data folder in a temporary directory, and seeds it through the API: data for 8
symbols from the ``local`` provider, then three finished runs (so that the leaderboard, the
runs and the positions have something to show). Then it starts a long simulation job through
the API (``--job-models`` over ``sp500_20``, 1990-2022, persisted day by day in a worker
process) and, while that job runs, sends ``--concurrency`` concurrent requests for
``--duration`` seconds to each of GET /leaderboard, /runs, /positions/history?model=...,
/data/coverage and /health in turn, all on loopback. It prints requests/s, p50/p99/max per
endpoint, errors, and the job's progress before and after; then cancels the job and stops the
server. Exit code 1 when the targets (``--min-rps``, default 500, and ``--max-p99-ms``, default
100) are missed or a request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

SEED_SYMBOLS = ["AXP", "BA", "CAT", "DIS", "HD", "IBM", "KO", "MCD"]
SEED_MODELS = ["equal_weight", "buy_and_hold", "random:5"]


@dataclass
class Stats:
    """Latencies (seconds) and failures of one endpoint."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def row(self, seconds: float) -> dict[str, Any]:
        lat = np.array(self.latencies) * 1000
        return {
            "requests": len(lat),
            "rps": len(lat) / seconds,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "max_ms": float(lat.max()) if len(lat) else float("nan"),
            "errors": sum(self.errors.values()),
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(folder: Path, token: str) -> Iterator[str]:
    """``marketarena serve`` over a store and data folder in ``folder``; yields its URL."""
    port = free_port()
    env = {**os.environ, "MARKETARENA_API_TOKEN": token}
    command = [sys.executable, "-m", "marketarena.cli", "serve", "--port", str(port)]
    command += ["--store", str(folder / "runs.sqlite"), "--data-dir", str(folder / "data")]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> dict[str, Any]:
    async with session.request(method, url, json=body) as r:
        data = await r.json()
        if r.status >= 400:
            raise RuntimeError(f"{method} {url}: {r.status} {data}")
        return dict(data) if isinstance(data, dict) else {"items": data}


async def wait_job(session: aiohttp.ClientSession, base: str, job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        job = await call(session, "GET", f"{base}/jobs/{job_id}")
        if job["status"] == "done":
            return
        if job["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"seed job {job_id} {job['status']}: {job.get('error')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"seed job {job_id} still {job['status']} after {timeout} s")
        await asyncio.sleep(0.2)


async def seed(session: aiohttp.ClientSession, base: str, data_dir: str, end: str) -> str:
    """Data and three finished runs up to ``end``; the run id whose positions are read."""
    body = {"symbols": SEED_SYMBOLS, "start": "2009-08-21", "end": end}
    await call(session, "POST", f"{base}/data/download", body)
    job = await call(
        session,
        "POST",
        f"{base}/simulate",
        {"models": SEED_MODELS, "data": data_dir, "start": "2009-09-01", "end": end},
    )
    await wait_job(session, base, job["id"], 300)
    return str(job["run_ids"][0])


def progress(job: dict[str, Any]) -> str:
    parts = [
        f"{run}: {p.get('done', 0)}/{p.get('total', '?')} days ({p.get('date', '-')})"
        for run, p in (job.get("progress") or {}).items()
    ]
    return f"{job['status']}; " + "; ".join(parts)


async def hammer(
    session: aiohttp.ClientSession, base: str, paths: list[str], duration: float, concurrency: int
) -> tuple[dict[str, Stats], float]:
    """``concurrency`` loops, each requesting ``paths`` in turn until ``duration`` is up."""
    stats = {p: Stats() for p in paths}
    stop = time.perf_counter() + duration

    async def loop(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop:
            path = paths[i % len(paths)]
            i += 1
            began = time.perf_counter()
            try:
                async with session.get(base + path) as r:
                    await r.read()
                    ok = r.status == 200
                    reason = str(r.status)
            except aiohttp.ClientError as exc:
                ok, reason = False, type(exc).__name__
            if ok:
                stats[path].latencies.append(time.perf_counter() - began)
            else:
                stats[path].errors[reason] = stats[path].errors.get(reason, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(loop(k) for k in range(concurrency)))
    return stats, time.perf_counter() - began


async def run(args: argparse.Namespace, base: str, token: str, data_dir: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as s:
        if data_dir is not None:
            model_run = await seed(s, base, data_dir, args.seed_end)
        else:
            runs = (await call(s, "GET", f"{base}/runs"))["items"]
            if not runs:
                raise RuntimeError(f"{base} has no runs: load-test a seeded server")
            model_run = runs[0]["run_id"]
        job = await call(
            s,
            "POST",
            f"{base}/simulate",
            {
                "models": args.job_models.split(","),
                "run_ids": [f"load-{m}-{os.getpid()}" for m in args.job_models.split(",")],
                "data": "sp500_20",
                "start": "1991-01-02",
                "end": "2022-12-28",
            },
        )
        await asyncio.sleep(args.warmup)  # the worker has loaded its data and runs
        before = await call(s, "GET", f"{base}/jobs/{job['id']}")
        if before["status"] != "running":
            raise RuntimeError(f"the simulation job is not running: {progress(before)}")
        paths = [
            "/leaderboard",
            "/runs",
            f"/positions/history?model={model_run}",
            "/data/coverage",
            "/health",
        ]
        for path in paths:  # steady state: each answer computed once before the clock runs
            async with s.get(base + path) as r:
                await r.read()
        stats, seconds = await hammer(s, base, paths, args.duration, args.concurrency)
        after = await call(s, "GET", f"{base}/jobs/{job['id']}")
        with contextlib.suppress(RuntimeError):
            await call(s, "DELETE", f"{base}/jobs/{job['id']}")
    rows = {p: st.row(seconds) for p, st in stats.items()}
    every = Stats([x for st in stats.values() for x in st.latencies])
    every.errors = {"all": sum(r["errors"] for r in rows.values())}
    total = every.row(seconds)
    print(f"{args.duration:g} s, {args.concurrency} concurrent requests, loopback {base}")
    print(f"{'endpoint':40} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'errors':>7}")  # fmt: skip
    for path, r in [*rows.items(), ("all", total)]:
        print(
            f"{path[:40]:40} {r['requests']:9d} {r['rps']:8.1f} {r['p50_ms']:8.1f} "
            f"{r['p99_ms']:8.1f} {r['max_ms']:8.1f} {r['errors']:7d}"
        )
    print(f"simulation job {job['id']} before: {progress(before)}")
    print(f"simulation job {job['id']} after:  {progress(after)}")
    if args.json:
        figures = {"endpoints": rows, "all": total, "job": {"before": before, "after": after}}
        Path(args.json).write_text(json.dumps(figures, indent=1))
    running = after["status"] == "running"
    met = total["rps"] >= args.min_rps and total["p99_ms"] < args.max_p99_ms
    print(
        f"target >= {args.min_rps:g} req/s with p99 < {args.max_p99_ms:g} ms while the job runs: "
        f"{'met' if met and running and not total['errors'] else 'MISSED'}"
        + ("" if running else " (the job was not running to the end)")
    )
    return 0 if met and running and not total["errors"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds after the job starts")
    parser.add_argument("--url", help="an existing server (default: start one, seeded)")
    parser.add_argument("--token", default="", help="its token (with --url)")
    parser.add_argument("--job-models", default="equal_weight", help="the job's models")
    parser.add_argument(
        "--seed-end", default="2010-08-20", help="the seeded runs' end (start 2009-09-01)"
    )
    parser.add_argument("--min-rps", type=float, default=500.0)
    parser.add_argument("--max-p99-ms", type=float, default=100.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.url:
        return asyncio.run(run(args, args.url.rstrip("/"), args.token, None))
    token = base64.urlsafe_b64encode(os.urandom(18)).decode()
    with (
        tempfile.TemporaryDirectory(prefix="marketarena-load-") as tmp,
        served(Path(tmp), token) as url,
    ):
        return asyncio.run(run(args, url, token, str(Path(tmp) / "data")))


if __name__ == "__main__":
    raise SystemExit(main())
