"""``--backend ray`` on a real two-node Ray cluster (``ray_cluster`` in tests/conftest.py: a
head and a worker node on 127.0.0.1, in a network namespace of loopback only): ``evaluate``
and ``bench`` give the local backend's reports, a node killed mid-sweep loses and duplicates
nothing and the report counts its retries, and what cannot work is one line.

The local runs are in-process; every Ray run is a ``marketarena`` driver started inside the
namespace.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from marketarena.cli import main
from marketarena.evaluation.backends import Backend, llm_resource

EVALUATE = [
    "evaluate",
    "--agent",
    "random:5",
    "--agent",
    "equal_weight:10",
    "--ensemble",
    "mean",
    "--seeds",
    "2",
    "--start",
    "2021-01-04",
    "--end",
    "2021-06-30",
]
TINY_PPO = """\
name: tiny
env:
  window: 8
  episode_length: 64
algo:
  name: ppo
  total_timesteps: 100000
  n_envs: 2
  net_arch: [16]
  hyperparameters: {n_steps: 64, batch_size: 64, n_epochs: 2}
training:
  eval_every: 512
  checkpoint_every: 512
"""


def llm_evaluate(agent: str, base_url: str) -> list[str]:
    """``evaluate`` of one LLM agent at ``base_url`` over June 2021, its answers not cached."""
    period = ["--start", "2021-06-01", "--end", "2021-06-30"]
    return ["evaluate", "--agent", agent, "--base-url", base_url, *period, "--llm-cache", ""]


def run_cli(*args: str) -> tuple[int, str]:
    console = Console(record=True, width=400)
    code = main(list(args), console=console)
    return code, console.export_text()


def csv_rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with path.open() as fh:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(fh)]


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_on_ray_equals_local(ray_cluster, tmp_path):
    """Every (agent, seed) a task on the cluster; the files are the local run's, bit for
    bit, and the report says where it ran."""
    local, ray = tmp_path / "local", tmp_path / "ray"
    code, text = run_cli(*EVALUATE, "--output", str(local))
    assert code == 0, text
    proc = ray_cluster.cli(*EVALUATE, "--output", str(ray), cwd=tmp_path)
    # 4 agents (2 listed, 2 baselines) and the ensemble, 2 seeds each
    assert "ray: 10 tasks on 2 node(s), 0 retried after a worker or node failure" in proc.stdout
    assert (local / "metrics.csv").read_bytes() == (ray / "metrics.csv").read_bytes()
    daily = sorted(p.name for p in local.glob("daily_*.csv"))
    assert len(daily) == 5
    for name in daily:
        assert (local / name).read_bytes() == (ray / name).read_bytes(), name
    here, there = (json.loads((d / "metrics.json").read_text()) for d in (local, ray))
    where = there["settings"].pop("backend")
    assert where == {
        "kind": "ray",
        "address": ray_cluster.address,
        "max_retries": 3,
        "tasks": 10,
        "nodes": 2,
        "retries": 0,
    }
    assert here == there


def test_missing_llm_endpoint_resource_is_one_line(ray_cluster, tmp_path):
    """An llm: agent needs its endpoint's resource on the cluster: without it, one line that
    says how a node declares the endpoint's capacity, before any task runs."""
    url = "http://127.0.0.1:9/v1"
    proc = ray_cluster.cli(
        *llm_evaluate("llm:some-model", url),
        "--output",
        str(tmp_path / "out"),
        cwd=tmp_path,
        check=False,
    )
    name = llm_resource(url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    error = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    assert error == [
        f"error: the Ray cluster has no resource {name} for its LLM endpoint: declare the "
        f"endpoint's capacity (request streams at once) on a node, e.g. ray start --head "
        f"--resources='{{\"{name}\": 4}}'"
    ], proc.stdout


def test_llm_resource_names_the_endpoint():
    """12 hex digits of the sha256 of the base URL (a trailing slash does not count);
    without one, OPENAI_BASE_URL's."""
    import hashlib

    url = "http://10.0.0.5:8080/v1"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    assert llm_resource(url) == llm_resource(url + "/") == f"llm:{digest}"
    assert llm_resource("http://10.0.0.6:8080/v1") != llm_resource(url)


# -------------------------------------------------------------------------------- bench
def test_bench_with_training_and_mlflow_on_ray_equals_local(ray_cluster, tmp_path):
    """A bench with PPO trainings and MLflow on: the rows (but the seconds each took and the
    model's folder) and aggregates.json equal the local run's; every job's MLflow run is
    nested under the bench's run, finished, with its training run nested under it."""
    import mlflow

    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY_PPO)
    args = [
        "bench",
        "--agent",
        f"ppo:{tiny}",
        "--agent",
        "random",
        "--task",
        "Momentum",
        "--seeds",
        "1",
        "--timesteps",
        "512",
        "--reps",
        "200",
        "--mlflow",
    ]
    local, ray = tmp_path / "local", tmp_path / "ray"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'local.db'}")
        try:
            code, text = run_cli(*args, "--output", str(local))
        finally:
            mlflow.set_tracking_uri(None)
    assert code == 0, text
    uri = f"sqlite:///{tmp_path / 'ray.db'}"
    proc = ray_cluster.cli(*args, "--output", str(ray), cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    assert "ray: 4 tasks on 2 node(s), 0 retried" in proc.stdout, proc.stdout
    drop = ("seconds", "model")
    assert csv_rows(local / "results.csv", drop) == csv_rows(ray / "results.csv", drop)
    models = [r["model"] for r in csv_rows(ray / "results.csv") if r["model"]]
    assert len(models) == 1 and all(Path(m).is_relative_to(ray / "runs") for m in models)
    assert (local / "aggregates.json").read_bytes() == (ray / "aggregates.json").read_bytes()
    settings = json.loads((ray / "results.json").read_text())["settings"]
    assert settings["backend"]["retries"] == 0

    client = mlflow.MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "marketarena-bench"]
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parent = settings["mlflow_run_id"]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(jobs) == 4 and {r.info.status for r in jobs} == {"FINISHED"}
    rows = {(r["agent"], r["seed"]): r for r in csv_rows(ray / "results.csv")}
    for run in jobs:
        row = rows[(run.data.tags["agent"], run.data.tags["seed"])]
        assert run.data.metrics["test/score"] == pytest.approx(float(row["score"]), rel=1e-12)
    job_ids = {r.info.run_id for r in jobs}
    trainings = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in job_ids]
    assert len(trainings) == 1


# ---------------------------------------------------------------------- fault tolerance
#: titles of a node's Ray processes that run no task
IDLE_OR_AGENT = (b"ray::IDLE", b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")


def test_node_killed_mid_sweep(ray_cluster, tmp_path):
    """A third node joins, takes backtests, and is killed (raylet and workers at once) while
    one of them runs: its tasks run again on the nodes left, the report equals the local
    run's (no result lost, none twice), and it counts the retries."""
    args = [
        "evaluate",
        "--agent",
        "random:5",
        "--agent",
        "random:10",
        "--agent",
        "equal_weight:10",
        "--seeds",
        "4",
        "--benchmark",
        "none",
    ]  # the whole of the bundled data: about a second a backtest
    local = tmp_path / "local"
    code, text = run_cli(*args, "--output", str(local))
    assert code == 0, text
    # The kill races the task it aims at: one that ends between the last look and the kill
    # is not retried. So the scenario runs again, on a new third node, until a kill lands
    # (at most 3 times); every run must equal the local one, and one must count a retry.
    retries = [_kill_a_node_mid_sweep(ray_cluster, tmp_path / "ray0", args, local)]
    while retries[-1] == 0 and len(retries) < 3:
        retries.append(
            _kill_a_node_mid_sweep(ray_cluster, tmp_path / f"ray{len(retries)}", args, local)
        )
    assert retries[-1] >= 1, f"no kill landed on a running backtest in {len(retries)} tries"


def _kill_a_node_mid_sweep(ray_cluster, ray, args, local) -> int:
    """One sweep on the cluster whose third node is killed while it runs a backtest: the
    report equals the local one; returns the retries it counts."""
    tmp_path = ray.parent
    victim = ray_cluster.start_node()
    ray_cluster.wait_for_nodes(3)
    argv = [sys.executable, "-m", "marketarena.cli", *args, "--output", str(ray)]
    argv += ["--backend", "ray", "--address", ray_cluster.address]
    driver = subprocess.Popen(
        ray_cluster.command(*argv),
        cwd=tmp_path,
        env=ray_cluster.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def busy() -> bool:  # Ray titles a worker running a task ray::<task name>
        titles = [c for c in ray_cluster.processes(victim).values() if c.startswith(b"ray::")]
        return any(not t.startswith(IDLE_OR_AGENT) for t in titles)

    try:
        deadline = time.time() + 240
        while True:  # a backtest running on the third node, still running a moment later
            assert driver.poll() is None, driver.communicate()[0]
            assert time.time() < deadline, "no backtest ever ran on the third node"
            if busy():
                time.sleep(0.5)  # past the task's record of its attempt, its first step
                if busy():
                    break
            time.sleep(0.05)
        ray_cluster.kill(victim)
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    doc = json.loads((ray / "metrics.json").read_text())
    backend = doc["settings"].pop("backend")
    assert backend["tasks"] == 20 and backend["nodes"] == 2
    assert f"on 2 node(s), {backend['retries']} retried after a worker or node failure" in out
    assert doc == json.loads((local / "metrics.json").read_text())
    assert (local / "metrics.csv").read_bytes() == (ray / "metrics.csv").read_bytes()
    # every (agent, seed) once
    runs = sorted(p.name for p in (ray / "results").iterdir())
    assert runs == sorted(p.name for p in (local / "results").iterdir()) and len(runs) == 20
    return int(backend["retries"])


# ------------------------------------------------------------------- what cannot work
def test_without_ray_installed_one_line(monkeypatch, tmp_path):
    """``--backend ray`` where ``import ray`` fails: one line saying how to install it."""
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    for command in (EVALUATE, ["bench", "--agent", "random", "--task", "Momentum"]):
        code, text = run_cli(*command, "--output", str(tmp_path), "--backend", "ray")
        assert code == 1
        assert text.strip() == (
            'error: --backend ray needs Ray, which is not installed: pip install "marketarena[ray]"'
        )


@pytest.mark.parametrize(
    ("address", "message"),
    [
        (
            "head-node",
            "error: --address 'head-node': expected auto, host:port (a Ray head node) or "
            "ray://host:port (a Ray client server)",
        ),
        ("127.0.0.1:1", "error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"),
    ],
)
def test_bad_address_one_line(address, message, tmp_path):
    code, text = run_cli(
        *EVALUATE, "--output", str(tmp_path), "--backend", "ray", "--address", address
    )
    assert code == 1
    (line,) = text.strip().splitlines()
    assert line.startswith(message), text


def test_address_needs_the_ray_backend():
    with pytest.raises(ValueError, match="--address is for --backend ray"):
        Backend("local", "127.0.0.1:6379").validate()


# -------------------------------------------------------------------------------- arena
def test_arena_on_ray_equals_local(ray_cluster, tmp_path):
    """Every match a task on the cluster, saved as it finishes: the ratings, the
    head-to-head table and the report equal the local run's, and so do the match lines but
    for the seconds each took."""
    args = [
        "arena",
        "--agent",
        "random:5",
        "--agent",
        "equal_weight:10",
        "--agent",
        "buy_and_hold",
        "--seeds",
        "2",
        "--start",
        "2021-01-04",
        "--end",
        "2021-06-30",
    ]
    local, ray = tmp_path / "local", tmp_path / "ray"
    code, text = run_cli(*args, "--out", str(local))
    assert code == 0, text
    proc = ray_cluster.cli(*args, "--out", str(ray), cwd=tmp_path)
    assert "ray: 6 tasks on 2 node(s), 0 retried" in proc.stdout, proc.stdout
    for name in ("ratings.csv", "head_to_head.csv", "report.md"):
        assert (local / name).read_bytes() == (ray / name).read_bytes(), name

    def lines(folder: Path) -> list[dict]:
        records = [json.loads(line) for line in (folder / "matches.jsonl").read_text().splitlines()]
        return sorted(
            ({k: v for k, v in r.items() if k != "elapsed_s"} for r in records),
            key=lambda r: r["match"],
        )

    assert lines(local) == lines(ray)


# ------------------------------------------------------------------ an LLM endpoint's cap
# An OpenAI-compatible endpoint, run in the cluster's namespace: every answer the same
# allocation after a pause, the number of requests and the most in flight at once written to
# a JSON file after each one.
LLM_SERVER = """\
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, record = int(sys.argv[1]), sys.argv[2]
lock, state = threading.Lock(), {"requests": 0, "in_flight": 0, "max_in_flight": 0}
content = json.dumps({"weights": {"AAPL": 0.4, "JNJ": 0.3, "XOM": 0.2, "CASH": 0.1},
                      "confidence": 0.6})
reply = json.dumps({
    "id": "c", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": content}}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
}).encode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            state["requests"] += 1
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        time.sleep(0.15)
        with lock:
            state["in_flight"] -= 1
            with open(record, "w") as fh:
                json.dump(state, fh)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
with open(record, "w") as fh:
    json.dump(state, fh)
server.serve_forever()
"""


def test_llm_jobs_hold_their_endpoints_resource(ray_cluster, tmp_path):
    """Four ``llm:`` jobs (4 seeds) on a cluster whose head declares the endpoint's capacity
    as 2 request streams: an LLM job needs a quarter of a CPU, so the two CPUs would run all
    four at once; the endpoint's resource lets 2 run, never more, and the reports equal a
    local run's against the same endpoint (but for the answers' latency)."""
    script, record = tmp_path / "server.py", tmp_path / "requests.json"
    script.write_text(LLM_SERVER)
    port = ray_cluster.llm_url.rsplit(":", 1)[1].split("/")[0]
    server = subprocess.Popen(ray_cluster.command(sys.executable, str(script), port, str(record)))
    try:
        deadline = time.monotonic() + 30
        while not record.exists():
            assert server.poll() is None and time.monotonic() < deadline, "no LLM server"
            time.sleep(0.05)
        args = [*llm_evaluate("llm:test-model", ray_cluster.llm_url), "--seeds", "4"]
        env = {"OPENAI_API_KEY": "sk-test"}
        proc = ray_cluster.cli(*args, "--output", str(tmp_path / "ray"), cwd=tmp_path, **env)
        on_ray = json.loads(record.read_text())
        assert on_ray["max_in_flight"] == ray_cluster.llm_capacity, (on_ray, proc.stdout)
        assert "ray: 12 tasks on 2 node(s)" in proc.stdout  # the LLM agent, 2 baselines
        local = [sys.executable, "-m", "marketarena.cli", *args, "--output", str(tmp_path / "l")]
        ray_cluster.run(*local, cwd=tmp_path, env=env)
    finally:
        server.kill()
        server.wait()
    requests = json.loads(record.read_text())["requests"]
    assert requests == 2 * on_ray["requests"] > 0  # the local run asked as often
    ray, here = tmp_path / "ray", tmp_path / "l"
    drop = ("diag_mean_latency_s",)  # the endpoint's answer times, which no run repeats
    assert csv_rows(ray / "metrics.csv", drop) == csv_rows(here / "metrics.csv", drop)
    name = "daily_llm_test-model.csv"
    assert (ray / name).read_bytes() == (here / name).read_bytes()


# ------------------------------------------------------------ shared inputs, put once
SHARED_PROBE = """\
import json, os, sys, time
import numpy as np
import ray
from marketarena.evaluation.backends import Backend, Task, run_tasks

puts = []
original_put = ray.put
def counted_put(value, *args, **kwargs):
    puts.append(type(value).__name__)
    return original_put(value, *args, **kwargs)
ray.put = counted_put

def job(i, shared, report):
    import os, time
    import numpy as np
    import ray
    prices = shared["prices"]
    time.sleep(0.5)  # long enough that both nodes take tasks
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
        "writeable": bool(prices.flags.writeable),
        "sum": float(prices.sum()),
    }

prices = np.arange(4_000_000, dtype=np.float64)  # 32 MB
out = run_tasks(
    Backend("ray", address=sys.argv[1]),
    job,
    [Task(f"job {i}", i) for i in range(8)],
    {"prices": prices},
)
print(json.dumps({"puts": puts, "values": out.values, "sum": float(prices.sum())}))
"""


def test_shared_inputs_go_into_the_object_store_once(ray_cluster, tmp_path):
    """The shared inputs (the market data) are put in Ray's object store once for the whole
    sweep, not sent with each task: the driver calls ``ray.put`` once, the tasks on both
    nodes read the same values, each as a read-only array (a view of its node's copy in the
    object store, not an unpickled copy of its own)."""
    script = tmp_path / "probe.py"
    script.write_text(SHARED_PROBE)
    proc = ray_cluster.run(sys.executable, str(script), ray_cluster.address, cwd=tmp_path)
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["puts"] == ["dict"]
    values = probe["values"]
    assert len(values) == 8 and {v["sum"] for v in values} == {probe["sum"]}
    assert not any(v["writeable"] for v in values)
    assert len({v["node"] for v in values}) == 2
