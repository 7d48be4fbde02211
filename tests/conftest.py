"""Shared fixtures: small hand-made markets; run stores on SQLite and PostgreSQL; a scripted
OpenAI-compatible server for LLM agents (below); a two-node Ray cluster in a network namespace
of loopback only (at the end)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

from marketarena.envs.data import MarketData


def _make_market(
    close: list[list[float]] | np.ndarray,
    open: list[list[float]] | np.ndarray | None = None,
    volume: list[list[float]] | np.ndarray | None = None,
    symbols: tuple[str, ...] | None = None,
    start: str = "2024-01-01",
) -> MarketData:
    close = np.asarray(close, dtype=float)
    t, n = close.shape
    kwargs: dict[str, np.ndarray] = {}
    if open is not None:
        o = np.asarray(open, dtype=float)
        kwargs.update(open=o, high=np.maximum(o, close) * 1.01, low=np.minimum(o, close) * 0.99)
    if volume is not None:
        kwargs["volume"] = np.asarray(volume, dtype=float)
    dates = pd.bdate_range(start, periods=t).to_numpy().astype("datetime64[D]")
    symbols = symbols or tuple("ABCDEFGHIJ"[:n])
    return MarketData(dates=dates, symbols=symbols, close=close, name="hand", **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Computed-array caches (indicators, sentiment) go to a folder of this test session's,
    never the user's ~/.cache; a test that needs its own sets MARKETARENA_CACHE_DIR itself."""
    import os

    os.environ["MARKETARENA_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def make_market() -> Callable[..., MarketData]:
    """Build a MarketData from literal price lists (OHLC consistent when opens are given)."""
    return _make_market


def _perturb_future(data: MarketData, t: int, *, scale: float = 0.1, seed: int = 0) -> MarketData:
    """``data`` with every price of the bars after row ``t`` moved by a random factor (open,
    high, low and close together, so each bar stays consistent); rows <= t are untouched."""
    import dataclasses

    shock = np.ones_like(data.close)
    shock[t + 1 :] = np.exp(np.random.default_rng(seed).normal(0, scale, shock[t + 1 :].shape))
    moved = {
        field: getattr(data, field) * shock
        for field in ("open", "high", "low", "close")
        if getattr(data, field) is not None
    }
    return dataclasses.replace(data, **moved, name=f"{data.name}+future")


@pytest.fixture
def perturb_future() -> Callable[..., MarketData]:
    """``perturb_future(data, t)``: the same market up to row ``t``, another one after it."""
    return _perturb_future


POSTGRES_ENV = "MARKETARENA_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """``$MARKETARENA_TEST_POSTGRES_URL`` (``.ci/postgres.sh`` prints one); skips the test when
    it is unset, except in CI (``CI`` set), where its absence fails the test."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI must set {POSTGRES_ENV} (see .ci/postgres.sh)")
        pytest.skip(f"{POSTGRES_ENV} is not set: run `export {POSTGRES_ENV}=$(.ci/postgres.sh)`")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """Where a new, empty run store goes: a SQLite file in the test's folder, or a
    ``postgresql://`` URL whose connections use a schema of the test's own (created here,
    dropped with everything in it afterwards)."""
    if request.param == "sqlite":
        yield str(tmp_path / "runs.sqlite")
        return
    import psycopg2

    def execute(sql: str) -> None:
        conn = psycopg2.connect(base)
        try:
            conn.autocommit = True
            conn.cursor().execute(sql)
        finally:
            conn.close()

    base = postgres_url()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in base else "?"
    yield f"{base}{joiner}options={quote(f'-csearch_path={schema}')}"
    execute(f"DROP SCHEMA {schema} CASCADE")


# ------------------------------------------------------------ a scripted LLM server
# A scripted OpenAI-compatible server for the LLM agent's tests.
#
# A real HTTP server on 127.0.0.1 (a free port, in a thread) answers ``POST
# /v1/chat/completions`` from a queue of scripted replies; when the queue is empty it repeats
# ``then`` (or answers 418, an unscripted request). A reply is any object with ``status``,
# ``body`` (a dict or list is sent as JSON, a str as it is), ``headers``, ``delay`` (seconds
# before answering) and optionally ``trickle`` (seconds between the body's bytes, sent one at a
# time: a server that is never silent long enough for a read timeout); the tests build them.
# The server records every request (headers and JSON body) and the most requests it had in
# flight at once. (Here, not in tests/agents/: LLM agents take part in evaluation tests too.)
# ``route`` (a function of the request's JSON body returning a reply, or None for the queue)
# answers several callers from one server, e.g. each role of a team by its system prompt.
# A reply that is a list (in ``script`` or as ``then``) is a model calling tools:
# ``[("get_prices", {"last": 5}), ("set_target_weights", '{"weights": ...')]`` becomes a chat
# completion whose message holds these tool calls (:func:`_tool_calls_reply`; a dict of
# arguments is sent as JSON, a str as it is, malformed too). The ``tool_calls_answer`` fixture
# builds one with other token counts, a delay or text beside the calls.


@dataclass
class Recorded:
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]
    received: float  # time.monotonic()


@dataclass
class _Error:
    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @property
    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": "test_error", "code": self.status}}


class ScriptedServer:
    def __init__(self) -> None:
        self.queue: deque[Any] = deque()
        self.then: Any = None
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.echo_authorization = False  # put the Authorization header into error messages
        self.route: Callable[[dict[str, Any]], Any] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *replies: Any, then: Any = None) -> ScriptedServer:
        """Queue ``replies``; a list is a list of tool calls (:func:`tool_calls_reply`)."""
        self.queue.extend(_tool_calls_reply(r) if isinstance(r, list) else r for r in replies)
        self.then = _tool_calls_reply(then) if isinstance(then, list) else then
        return self

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self, body: dict[str, Any]) -> Any:
        routed = self.route(body) if self.route is not None else None
        if routed is not None:
            return routed
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        return self.then or _Error(418, "unscripted request")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(_Error(404, f"no route {self.path}"))
                    return
                body = json.loads(raw)
                with server._lock:
                    server.requests.append(
                        Recorded(
                            {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                        )
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server._next(body)
                    if reply.delay:
                        server._stop.wait(reply.delay)
                    if server.echo_authorization and reply.status >= 400:
                        auth = self.headers.get("Authorization", "")
                        reply = _Error(reply.status, f"bad key {auth}", reply.headers)
                    self._send(reply)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, reply: Any) -> None:
                body = reply.body
                if isinstance(body, dict | list):
                    data = json.dumps(body).encode()
                elif isinstance(body, str):
                    data = body.encode()
                else:
                    data = body or b""
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    trickle = getattr(reply, "trickle", 0.0)
                    if not trickle:
                        self.wfile.write(data)
                    for i in range(len(data) if trickle else 0):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        if server._stop.wait(trickle):
                            return
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        return Handler


@pytest.fixture
def make_llm_server() -> Iterator[Callable[[], ScriptedServer]]:
    """Start scripted servers (each on its own port); all are closed after the test."""
    servers: list[ScriptedServer] = []

    def make() -> ScriptedServer:
        servers.append(ScriptedServer())
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def llm_server(make_llm_server: Callable[[], ScriptedServer]) -> ScriptedServer:
    return make_llm_server()


@dataclass
class Reply:
    """One scripted answer: a status, a body (a dict or list is sent as JSON), headers, a
    delay before answering, and a trickle between the body's bytes."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0


def _weights_answer(weights: Mapping[str, float], confidence: float = 0.5) -> Reply:
    content = json.dumps({"weights": dict(weights), "confidence": confidence})
    message = {"role": "assistant", "content": content}
    return Reply(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
    )


@pytest.fixture
def weights_answer() -> Callable[..., Reply]:
    """``weights_answer({"A": 0.5, "CASH": 0.5})``: a chat completion (for ``script``)
    answering with these target weights (the json_schema form)."""
    return _weights_answer


def _tool_calls_reply(
    calls: list[tuple[str, Any]],
    *,
    content: str | None = None,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    delay: float = 0.0,
) -> Reply:
    """A chat completion calling tools: ``calls`` is ``[(name, arguments), ...]``, the
    arguments a dict (sent as JSON) or a str (sent as it is); ids ``call_1``, ``call_2``, ...
    in order; ``content``: text beside the calls. An empty list is a text-only answer."""
    tool_calls = [
        {
            "id": f"call_{i + 1}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        for i, (name, arguments) in enumerate(calls)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return Reply(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "scripted",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
        delay=delay,
    )


@pytest.fixture
def tool_calls_answer() -> Callable[..., Reply]:
    """``tool_calls_answer([("get_prices", {"last": 5})], prompt_tokens=900)``: a chat
    completion calling these tools (for ``script``; a plain list there does the same with
    the default token counts)."""
    return _tool_calls_reply


# --------------------------------------------------------------------------- Ray cluster
class RayCluster:
    """A real Ray cluster on this machine, in a network namespace of its own that has only
    the loopback interface (``unshare -n``, as root): every node and every driver binds and
    talks on 127.0.0.1, and no traffic leaves loopback. Each node is ``ray start --block`` in
    a process group of its own (so that one node can be killed, raylet and workers at once),
    with its files under a short temporary folder (Unix socket paths are limited in length).
    """

    def __init__(self, root: str) -> None:
        import random
        import subprocess
        import sys

        # the namespace has its own ports, but `ray start --head` also refuses a port that a
        # Ray elsewhere on the machine uses (it finds them by their processes): a rare one
        self.port = random.randint(30000, 39999)
        self.address = f"127.0.0.1:{self.port}"
        # an LLM endpoint the tests may serve in the namespace: the head declares it with a
        # capacity of 2 request streams (``llm_capacity``)
        self.llm_url = f"http://127.0.0.1:{self.port + 1}/v1"
        self.llm_capacity = 2
        self.root = root
        self.python = sys.executable
        # no token file under ~/.ray; a dead node noticed within seconds, not half a minute
        self.ray_env = {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        # holds the namespace; every command joins it with nsenter
        self.holder = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep infinity"],
            start_new_session=True,
        )
        # until the holder is `sleep` (the namespace made, lo up): an nsenter before that
        # would enter this process's own namespace
        from pathlib import Path

        cmdline = Path(f"/proc/{self.holder.pid}/cmdline")
        deadline = time.monotonic() + 30
        while cmdline.read_bytes() != b"sleep\0infinity\0":
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("unshare -n did not make a network namespace")
            time.sleep(0.02)
        self.nodes: list[subprocess.Popen] = []

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the cluster's network namespace."""
        return ["nsenter", "-t", str(self.holder.pid), "-n", *argv]

    def ray_bin(self) -> str:
        from pathlib import Path

        return str(Path(self.python).parent / "ray")

    def start_node(self, *, head: bool = False, num_cpus: int = 1) -> Any:
        """A node (the head, or a worker joining it); returns its process (group leader)."""
        import subprocess
        from pathlib import Path

        from marketarena.evaluation.backends import llm_resource

        llm = json.dumps({llm_resource(self.llm_url): self.llm_capacity})
        role = (
            ["--head", f"--port={self.port}", "--include-dashboard=false", f"--resources={llm}"]
            if head
            else []
        )
        role += [] if head else [f"--address={self.address}"]
        log = Path(self.root) / f"node{len(self.nodes)}.log"
        node = subprocess.Popen(
            self.command(
                self.ray_bin(),
                "start",
                "--block",
                *role,
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={num_cpus}",
                "--disable-usage-stats",
            ),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
        )
        self.nodes.append(node)
        return node

    def wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        """Block until ``n`` nodes are alive."""
        script = (
            "import socket, sys, time\n"
            f"deadline = time.time() + {timeout}\n"
            "while True:  # the head's GCS first: ray.init before it listens can hang\n"
            "    try:\n"
            f"        socket.create_connection(('127.0.0.1', {self.port}), 1).close()\n"
            "        break\n"
            "    except OSError:\n"
            "        if time.time() > deadline: sys.exit('the head did not start')\n"
            "        time.sleep(0.5)\n"
            "import ray\n"
            f"ray.init(address={self.address!r}, log_to_driver=False)\n"
            f"while sum(x['Alive'] for x in ray.nodes()) < {n}:\n"
            "    if time.time() > deadline: sys.exit('nodes did not join')\n"
            "    time.sleep(0.5)\n"
        )
        proc = self.run(self.python, "-c", script, timeout=timeout + 60, check=False)
        if proc.returncode != 0:
            from pathlib import Path

            logs = "\n".join(
                f"--- {log.name}:\n" + "\n".join(log.read_text().splitlines()[-15:])
                for log in sorted(Path(self.root).glob("node*.log"))
            )
            pytest.fail(f"the Ray cluster did not start: {proc.stdout}{proc.stderr}\n{logs}")

    def environment(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.ray_env, **extra}

    def cli(self, *args: str, cwd: Any = None, check: bool = True, **env: str) -> Any:
        """``marketarena <args> --backend ray --address <the cluster>`` run as a driver in
        the namespace; ``env``: more environment variables."""
        argv = [self.python, "-m", "marketarena.cli", *args]
        argv += ["--backend", "ray", "--address", self.address]
        return self.run(*argv, cwd=cwd, check=check, env=env)

    def run(
        self,
        *argv: str,
        cwd: Any = None,
        timeout: float = 300,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> Any:
        """Run ``argv`` in the namespace (a driver, a script); with ``check``, fails the test
        on a non-zero exit, with its output."""
        import subprocess

        proc = subprocess.run(
            self.command(*argv),
            cwd=cwd,
            env=self.environment(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    @staticmethod
    def processes(node: Any) -> dict[int, bytes]:
        """A node's processes (``ray start`` and every descendant: the raylet, its agents,
        its workers, which Ray puts in process groups of their own), with their command
        lines (a busy worker's is ``ray::<function>``)."""
        from pathlib import Path

        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        found, frontier = {node.pid}, [node.pid]
        while frontier:
            pid = frontier.pop()
            children = [c for c, parent in parents.items() if parent == pid and c not in found]
            found.update(children)
            frontier.extend(children)
        out = {}
        for pid in found:
            try:
                out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
        return out

    def kill(self, node: Any) -> None:
        """Kill a node at once, as a machine dies: SIGKILL to ``ray start``, its raylet and
        every worker of it."""
        import signal

        for pid in self.processes(node):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
        node.wait()

    def stop(self) -> None:
        """Every node killed (nothing of a test cluster needs a clean shutdown), then the
        namespace's holder."""
        import signal

        for node in reversed(self.nodes):
            self.kill(node)
        os.killpg(self.holder.pid, signal.SIGKILL)
        self.holder.wait()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head node and a second worker node, one CPU each, on 127.0.0.1 in a namespace with
    only loopback; needs Ray (the dev extra), root and ``unshare``/``nsenter`` (CI has all)."""
    import importlib.util
    import shutil
    import tempfile

    missing = (
        "Ray (the dev extra)"
        if importlib.util.find_spec("ray") is None
        else "root, unshare and nsenter"
        if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter")
        else None
    )
    if missing:  # CI has them all: there a missing one fails the tests
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"the Ray cluster tests need {missing} (a network namespace of loopback only)"
        )
    root = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    cluster = RayCluster(root)
    try:
        cluster.start_node(head=True)
        cluster.wait_for_nodes(1)
        cluster.start_node()
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
