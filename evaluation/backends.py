"""Where a command's independent jobs run: here (``local``) or as Ray tasks (``ray``).

``bench``, ``evaluate`` and ``tune`` split their work into independent jobs (an agent's
backtest for one seed, a bench job: one agent on one task for one seed) and hand them to
:func:`run_tasks`, which returns their results in the order given, whatever the backend:

- ``local``: in this process, one after the other (or in ``threads`` threads).
- ``ray``: every job is a Ray task with its resources declared: ``num_cpus`` (a training's
  torch threads, else 1) and, for a job that talks to an LLM endpoint, one unit of the custom
  resource ``llm:<12 hex digits of the sha256 of the endpoint's base URL>``
  (:func:`llm_resource`), so that no endpoint gets more request streams at once than its
  capacity. Large inputs (the market data) are put in Ray's object store once
  (``ray.put``) and every task gets them by reference: one copy per node, not one per task.

Ray's address (``address``): ``None`` starts a local Ray on demand with this machine's CPUs
(and each LLM endpoint's capacity, ``llm_capacity``, as its resource); ``"auto"``, a
``host:port`` of a head node or a ``ray://host:port`` client address joins a running cluster,
whose nodes must declare each LLM endpoint's capacity themselves::

    ray start --head --resources='{"llm:3f1c0a9e52b7": 4}'   # 4 request streams at once

(the error for a missing resource prints this line with the right name).

Fault tolerance: a task whose worker or node dies is retried up to ``max_retries`` times on
the nodes left (Ray's task retries; an exception raised by the job itself is not retried, it
is the job's result). Each task returns, with its result, which attempt gave it (Ray's own
count of the task's executions), so :class:`Outcome` counts the retries; results are gathered
once per task, so none is lost or counted twice. Progress reports (``on_report``) travel
through a small actor on the driver's node, made only when they are asked for.

A cluster's nodes need the same files at the same paths as the driver (the code installed,
configs and saved models named by relative paths, the output folder): tasks run in the
driver's working directory where it exists. MLflow: tasks log to the driver's tracking URI
(``MLFLOW_TRACKING_URI`` or the local SQLite file), which every node must reach.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from marketarena.agents.base import uses_llm
from marketarena.envs.errors import ConfigError, MarketArenaError

BACKENDS = ("local", "ray")
#: the CPUs a job declares whose agents all talk to an LLM endpoint: it mostly waits on the
#: endpoint, whose resource (``llm:<hash>``) is what bounds how many run at once
LLM_JOB_CPUS = 0.25
RAY_INSTALL = 'pip install "marketarena[ray]"'
#: the most often a task's progress is sent to the driver (seconds between reports)
REPORT_EVERY = 0.25

#: ``fn(args, shared, report)``: one job; ``report(*payload)`` sends progress to the driver
JobFn = Callable[[Any, Mapping[str, Any], Callable[..., None]], Any]
#: ``progress(done, total, description)``: jobs finished, of how many, and what just ran
Progress = Callable[[int, int, str], None]


class BackendError(MarketArenaError, RuntimeError):
    """The backend cannot be used as asked: Ray not installed, a cluster address that does
    not answer, a resource the cluster lacks."""


@dataclass(frozen=True)
class Backend:
    """Where jobs run.

    Attributes:
        kind: ``"local"`` (the default) or ``"ray"``.
        address: Ray only: ``None`` starts a local Ray on demand; ``"auto"``, ``host:port``
            or ``ray://host:port`` joins a cluster (see the module docstring).
        max_retries: Ray only: how often a task whose worker or node died is run again.
        llm_capacity: Ray only, on a local Ray started on demand: request streams at once per
            LLM endpoint (default 4, the LLM agent's own ``max_concurrency`` default).
    """

    kind: str = "local"
    address: str | None = None
    max_retries: int = 3
    llm_capacity: int = 4

    def validate(self) -> None:
        if self.kind not in BACKENDS:
            raise ConfigError(f"unknown backend {self.kind!r}; choose one of {list(BACKENDS)}")
        if self.address is not None and self.kind != "ray":
            raise ConfigError("--address is for --backend ray")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.llm_capacity < 1:
            raise ConfigError(f"llm_capacity must be >= 1, got {self.llm_capacity}")
        if self.address is not None:
            check_address(self.address)
        if self.is_ray:
            import_ray()  # not installed: said before anything runs

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address, "max_retries": self.max_retries}


LOCAL = Backend()


@dataclass(frozen=True)
class Task:
    """One job: its description (unique within a run), its arguments, its resources."""

    key: str
    args: Any
    num_cpus: float = 1.0
    resources: Mapping[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    """The jobs' results in the order they were given, and each job's attempts (1 unless a
    worker or node died under it)."""

    values: list[Any]
    attempts: list[int]
    nodes: int = 1

    @property
    def retries(self) -> int:
        return sum(a - 1 for a in self.attempts)

    def summary(self, backend: Backend) -> dict[str, Any]:
        """What a report records about where its jobs ran."""
        return {
            **backend.as_dict(),
            "tasks": len(self.values),
            "nodes": self.nodes,
            "retries": self.retries,
        }


# --------------------------------------------------------------------------- LLM resource
def llm_resource(base_url: str | None) -> str:
    """The custom Ray resource of an LLM endpoint: ``llm:`` and 12 hex digits of the sha256
    of its base URL (``None``: ``OPENAI_BASE_URL``, else OpenAI's)."""
    url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    return "llm:" + hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]


def job_cpus(specs: Sequence[str]) -> float:
    """The CPUs a job declares that runs the agents ``specs``: :data:`LLM_JOB_CPUS` when they
    all talk to an LLM endpoint, else 1."""
    return LLM_JOB_CPUS if specs and all(uses_llm(s) for s in specs) else 1.0


# ---------------------------------------------------------------------------------- Ray
def import_ray() -> Any:
    """The ``ray`` module, or a :class:`BackendError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BackendError(
            f"--backend ray needs Ray, which is not installed: {RAY_INSTALL}"
        ) from None
    return ray


_HOST_PORT = re.compile(r"^(?:ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def check_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address, ``None`` for
    ``"auto"``; anything else is a :class:`ConfigError`."""
    if address == "auto":
        return None
    match = _HOST_PORT.match(address.strip())
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(
            f"--address {address!r}: expected auto, host:port (a Ray head node) or "
            "ray://host:port (a Ray client server)"
        )
    return match.group(1).strip("[]"), int(match.group(2))


def _reachable(address: str) -> None:
    """A quick TCP check, so that a wrong host or port is one line at once rather than Ray's
    long wait and its traceback."""
    where = check_address(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=5):
            pass
    except OSError as exc:
        raise BackendError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; start one with "
            "`ray start --head` or check the address"
        ) from None


@contextmanager
def ray_connection(backend: Backend, resources: Sequence[str] = ()) -> Iterator[Any]:
    """Ray, connected as ``backend`` says (a connection already open in this process is used
    as it is), checked to offer the custom ``resources``; disconnected at the end when this
    call connected."""
    ray = import_ray()
    if ray.is_initialized():
        _check_resources(ray, resources)
        yield ray
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if backend.address is None:
        kwargs |= {
            "address": "local",  # a new Ray, even where another one runs on this machine
            "num_cpus": os.cpu_count() or 1,
            "resources": {r: float(backend.llm_capacity) for r in resources},
            "include_dashboard": False,
        }
    else:
        _reachable(backend.address)
        kwargs["address"] = backend.address
    try:
        ray.init(**kwargs)
    except Exception as exc:  # Ray's own errors: ConnectionError, RuntimeError, ValueError
        where = backend.address or "a local Ray"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"cannot start or join Ray ({where}): {first}") from None
    try:
        _check_resources(ray, resources)
        yield ray
    finally:
        ray.shutdown()


def _check_resources(ray: Any, resources: Sequence[str]) -> None:
    have = ray.cluster_resources()
    for name in resources:
        if have.get(name, 0) < 1:
            raise BackendError(
                f"the Ray cluster has no resource {name} for its LLM endpoint: declare the "
                f"endpoint's capacity (request streams at once) on a node, e.g. ray start "
                f"--head --resources='{{\"{name}\": 4}}'"
            )


def _reports_class() -> type:
    """The actor that holds the jobs' progress reports until the driver collects them, on
    the driver's node; made only when the driver asks for reports (``on_report``: an actor
    is a process of its own, a second of CPU to start). Made here, like :func:`_task_body`,
    so that Ray ships it by value: a task holding its handle never imports marketarena to use
    it."""

    class Reports:
        def __init__(self) -> None:
            self.reports: list[tuple[Any, ...]] = []

        def report(self, payload: tuple[Any, ...]) -> None:
            self.reports.append(payload)

        def drain(self) -> list[tuple[Any, ...]]:
            out, self.reports = self.reports, []
            return out

    return Reports


def _task_body() -> Callable[..., Any]:
    """The body of every task, made here so that Ray ships it by value (a worker runs it
    before it imports marketarena)."""

    def run(
        blob: bytes,
        shared: list[Any],
        reports: Any,
        cwd: str,
        env: Mapping[str, str],
        every: float,
    ) -> tuple[int, Any]:
        """Run the job (``blob``: the pickled job function and its arguments) in the driver's
        working directory and environment, with the shared inputs from the object store; send
        its progress (when ``reports`` is an actor) at most every ``every`` seconds, and its
        last report before returning. Returns which attempt of the task this is (Ray's own
        count: 1, or more after a worker or node died under an earlier one) and the result."""
        import os
        import pickle
        import time

        import ray

        # Ray's count of this task's executions so far (0 the first time)
        core = ray._private.worker.global_worker.core_worker  # type: ignore[attr-defined]
        attempt = int(core.get_current_task_attempt_number()) + 1
        if os.path.isdir(cwd):
            os.chdir(cwd)
        os.environ.update(env)
        fn, args = pickle.loads(blob)
        last = [0.0]
        pending: list[tuple[Any, ...]] = []

        def report(*payload: Any) -> None:
            if reports is None:
                return
            now = time.monotonic()
            if now - last[0] >= every:
                reports.report.remote(payload)
                last[0] = now
                pending.clear()
            else:
                pending[:] = [payload]

        out = fn(args, ray.get(shared[0]), report)
        if pending:
            ray.get(reports.report.remote(pending[0]))
        return attempt, out

    return run


#: environment variables a task takes from the driver
_DRIVER_ENV = ("MLFLOW_TRACKING_URI", "OPENAI_BASE_URL", "OPENAI_API_KEY")


def run_tasks(
    backend: Backend,
    fn: JobFn,
    tasks: Sequence[Task],
    shared: Mapping[str, Any] | None = None,
    *,
    progress: Progress | None = None,
    on_report: Callable[..., None] | None = None,
    on_result: Callable[[int, Any], None] | None = None,
    threads: int = 1,
) -> Outcome:
    """Run ``fn(task.args, shared, report)`` for every task; the results in task order.

    ``shared``: inputs every job reads (the market data): passed as they are locally, put in
    Ray's object store once with Ray. ``report(*payload)`` inside a job calls
    ``on_report(*payload)`` on the driver (directly locally; through the reports actor with
    Ray, throttled). ``progress(done, total, description)`` is called before each job locally
    (with the job's key; the caller reports the end), and as jobs finish with Ray (with the
    key of the job that finished). ``threads``: local
    jobs run in that many threads. ``on_result(i, value)`` is called on the driver as each
    job's result arrives (in the order they finish; to save it at once, e.g. for a resume).
    An exception raised by a job is raised here (Ray's wrapper removed: a user error stays
    one line).
    """
    shared = shared or {}
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError(f"task keys must be unique: {keys}")

    def notify(*payload: Any) -> None:
        if on_report is not None:
            on_report(*payload)

    def arrived(i: int, value: Any) -> None:
        if on_result is not None:
            on_result(i, value)

    if not backend.is_ray:
        if threads > 1 and len(tasks) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                values = list(pool.map(lambda t: fn(t.args, shared, notify), tasks))
            for i, value in enumerate(values):
                arrived(i, value)
        else:
            values = []
            for i, task in enumerate(tasks):
                if progress is not None:
                    progress(i, len(tasks), task.key)
                values.append(fn(task.args, shared, notify))
                arrived(i, values[-1])
        return Outcome(values, [1] * len(tasks))
    needed = sorted({r for t in tasks for r in t.resources})
    with ray_connection(backend, needed) as ray:
        return _run_on_ray(
            ray, backend, fn, tasks, shared, progress, notify, arrived, on_report is not None
        )


def _run_on_ray(
    ray: Any,
    backend: Backend,
    fn: JobFn,
    tasks: Sequence[Task],
    shared: Mapping[str, Any],
    progress: Progress | None,
    notify: Callable[..., None],
    arrived: Callable[[int, Any], None],
    on_report_wanted: bool,
) -> Outcome:
    from ray.exceptions import RayTaskError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    reports = None
    if on_report_wanted:
        here = ray.get_runtime_context().get_node_id()
        reports = (
            ray.remote(_reports_class())
            .options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
            )
            .remote()
        )
    from ray import cloudpickle

    # once; every task gets it by reference (inside a list: fetched by the task when it
    # runs, not by Ray before it starts)
    shared_ref = [ray.put(dict(shared))]
    env = {k: os.environ[k] for k in _DRIVER_ENV if k in os.environ}
    remote = ray.remote(_task_body())
    refs = {
        remote.options(
            num_cpus=t.num_cpus,
            resources=dict(t.resources),
            max_retries=backend.max_retries,
            retry_exceptions=False,
            name=t.key[:200],
        ).remote(
            cloudpickle.dumps((fn, t.args)),
            shared_ref,
            reports,
            os.getcwd(),
            env,
            REPORT_EVERY,
        ): i
        for i, t in enumerate(tasks)
    }
    values: list[Any] = [None] * len(tasks)
    attempts = [1] * len(tasks)
    done = 0
    if progress is not None:
        progress(0, len(tasks), f"{len(tasks)} tasks on Ray")

    def collect() -> None:
        if reports is not None:
            for payload in ray.get(reports.drain.remote()):
                notify(*payload)

    try:
        while refs:
            # without reports to collect, the driver sleeps until a task ends
            ready, _ = ray.wait(
                list(refs), num_returns=1, timeout=REPORT_EVERY if reports is not None else 1.0
            )
            collect()
            for ref in ready:
                i = refs.pop(ref)
                try:
                    attempts[i], values[i] = ray.get(ref)
                except RayTaskError as exc:
                    cause = exc.cause
                    if isinstance(cause, BaseException):
                        raise cause from None
                    raise
                arrived(i, values[i])
                done += 1
                if progress is not None:
                    progress(done, len(tasks), tasks[i].key)
        collect()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    finally:
        for ref in refs:  # an error: the tasks still queued are not left running
            ray.cancel(ref, force=True)
    return Outcome(values, attempts, nodes)
