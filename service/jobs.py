"""Simulation jobs: persisted backtests run in worker processes, tracked in the run store.

A job is a list of tasks, one per run: ``start`` a new run of a model (an agent spec),
``resume`` an unfinished run from its last completed day, or ``continue`` a finished run to a
later end. The request handler only checks the request and writes the job as ``queued`` in the
store's jobs table; a :class:`JobManager` thread starts each queued job in a worker process of
its own (``multiprocessing`` with the ``spawn`` context, at most ``settings.workers`` at once),
which reopens the store by URL and runs the tasks through
:mod:`~marketarena.evaluation.saved_runs.persisted`, one after another. After every completed
day the worker writes the job's progress (``done``/``total`` days per run) and checks whether
the job was cancelled; a cancelled job stops after its current day, its runs resumable.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. A job is
``cancelled`` as soon as it is cancelled; its ``finished`` time is set when its worker has
stopped (after the day it was computing). A worker that dies
(killed, out of memory) leaves its job ``running``: the manager sees the dead process on its
next poll (every ``POLL_S`` seconds, and on every ``GET /jobs``) and marks the job ``failed``
with the exit code; its runs keep every completed day and resume bit for bit.

Server restarts: a new server marks the jobs a previous server left ``running`` as ``failed``
(resumable with ``POST /simulate/resume``), and runs the ones it left ``queued``. A worker
whose server is gone stops after its current day. So one server serves a store at a time: a
second one started over the same database would take the first one's running jobs for
leftovers.

Two jobs never simulate the same model at once: a request naming a model that a queued or
running job (or a cancelled one whose worker is still finishing its day) covers is refused
with 409 naming that job.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from multiprocessing.process import BaseProcess
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from marketarena.envs.errors import ConfigError, MarketArenaError
from marketarena.evaluation.saved_runs.store import JobNotFound, RunInfo, RunNotFound, RunStore
from marketarena.service.settings import ServiceSettings
from marketarena.service.webhooks import WebhookSender, webhook_targets

POLL_S = 0.25
ACTIVE = ("queued", "running")
log = logging.getLogger(__name__)


# ------------------------------------------------------------------ requests
class SimulateRequest(BaseModel):
    """A new simulation: one persisted run per model over the same data, dates and rules."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        min_length=1,
        description="agent specs, as the CLI's --agent takes them: equal_weight:5, random, "
        "llm:gpt-4o-mini, rule:'rsi_14 < 30', a saved SB3 model...",
    )
    run_ids: list[str] | None = Field(
        None, description="a name per model (default: '<model>@<start>')"
    )
    data: str = Field("sp500_20", description="a bundled dataset name or a data file's path")
    start: dt.date
    end: dt.date
    rules: dict[str, Any] = Field(
        default_factory=dict, description="trading rules, e.g. {'preset': 'aitrader'}"
    )
    risk: dict[str, Any] = Field(
        default_factory=dict, description="risk rules, e.g. {'max_weight': 0.2}"
    )
    window: int | None = Field(None, ge=1, description="observation window (default: the env's)")
    seed: int = Field(0, ge=0)
    llm: dict[str, Any] = Field(
        default_factory=dict,
        description="LLM options (LLMConfig fields: base_url, decide_every, lookback, ...)",
    )

    @field_validator("models")
    @classmethod
    def _distinct_models(cls, models: list[str]) -> list[str]:
        if any(not m.strip() for m in models):
            raise ValueError("a model spec is empty")
        if len(set(models)) != len(models):
            raise ValueError(f"a model is named twice: {models}")
        return [m.strip() for m in models]

    @field_validator("run_ids")
    @classmethod
    def _a_name_per_model(cls, run_ids: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if run_ids is None:
            return None
        models = info.data.get("models") or []
        if len(run_ids) != len(models):
            raise ValueError(f"{len(run_ids)} run ids for {len(models)} models: give one each")
        if len(set(run_ids)) != len(run_ids) or any(not r.strip() for r in run_ids):
            raise ValueError(f"run ids must be distinct and non-empty: {run_ids}")
        return run_ids

    @field_validator("llm")
    @classmethod
    def _for_llm_models(cls, llm: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        import dataclasses

        from marketarena.agents.llm_agent import LLMConfig

        if llm and not any(m.startswith("llm:") for m in info.data.get("models") or []):
            raise ValueError("LLM options, but no model is an LLM (llm:<model>)")
        options = sorted({f.name for f in dataclasses.fields(LLMConfig)} - {"model", "name"})
        unknown = sorted(set(llm) - set(options))
        if unknown:
            raise ValueError(f"unknown LLM option(s) {unknown}; options: {options}")
        return llm

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: dt.date, info: ValidationInfo) -> dt.date:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError(f"end {end} must be after start {start}")
        return end

    @field_validator("rules")
    @classmethod
    def _known_rule_types(cls, rules: dict[str, Any]) -> dict[str, Any]:
        from marketarena.envs.settings import build_rules, rule_type_error

        for key, value in rules.items():
            needed = rule_type_error(key, value)
            if needed:
                raise ValueError(f"{key}={value!r}: {needed}")
        build_rules(rules)  # unknown names and bad presets, listing the valid ones
        return rules

    @field_validator("risk")
    @classmethod
    def _valid_risk(cls, risk: dict[str, Any]) -> dict[str, Any]:
        from marketarena.envs.risk import build_risk

        build_risk(risk)
        return risk


def _session_options(llm: dict[str, Any]) -> dict[str, Any]:
    """``llm`` when it holds only options a resumed or continued run may change."""
    from marketarena.evaluation.saved_runs.persisted import SESSION_LLM_OPTIONS

    other = sorted(set(llm) - set(SESSION_LLM_OPTIONS))
    if other:
        raise ValueError(
            f"{other}: a resumed or continued run keeps its LLM options; only "
            f"{list(SESSION_LLM_OPTIONS)} may be given"
        )
    return llm


class ContinueRequest(BaseModel):
    """Extend finished runs to a later end date (on newer data whose earlier days match)."""

    model_config = ConfigDict(extra="forbid")

    end: dt.date
    data: str | None = Field(None, description="newer data (default: the run's own)")
    llm: dict[str, Any] = Field(
        default_factory=dict, description="this session's LLM endpoint options (base_url, ...)"
    )

    _session = field_validator("llm")(_session_options)


class ResumeRequest(BaseModel):
    """Options of a resumed run's session (nothing that shapes its decisions)."""

    model_config = ConfigDict(extra="forbid")

    llm: dict[str, Any] = Field(
        default_factory=dict, description="this session's LLM endpoint options (base_url, ...)"
    )

    _session = field_validator("llm")(_session_options)


# ------------------------------------------------------------------ the worker
class JobCancelled(Exception):
    """The job was cancelled (``DELETE /jobs/{id}``): stop after the current day."""


class ServerGone(Exception):
    """The server that started this worker has exited: stop after the current day."""


def run_job(store_url: str, job_id: str) -> None:
    """A worker process's body: run job ``job_id``'s tasks from the store at ``store_url``
    (its connect URL, password included: passed to the process, never shown),
    writing progress after every day; the job ends ``done``, ``failed`` (with the error) or
    stays ``cancelled``."""
    from marketarena.evaluation.saved_runs import persisted

    store = RunStore(store_url)
    job = store.job(job_id)
    progress: dict[str, dict[str, Any]] = dict(job.get("progress") or {})
    server = os.getppid()
    current: dict[str, str] = {}

    def on_day(date: str, fraction: float) -> None:
        run_id = current["run_id"]
        done = int(store.run(run_id).days)
        total = round(done / fraction) if fraction > 0 else done
        progress[run_id] = {"status": "running", "done": done, "total": total, "date": date}
        store.update_job(job_id, progress=progress)
        if store.job(job_id)["status"] == "cancelled":
            raise JobCancelled
        if os.getppid() != server:
            raise ServerGone

    try:
        for task in job["spec"]["tasks"]:
            run_id = task["run_id"]
            if progress.get(run_id, {}).get("status") == "done":
                continue
            current["run_id"] = run_id
            if task["action"] == "start":
                persisted.start_backtest(
                    store,
                    run_id,
                    task["model"],
                    task["data"],
                    task["start"],
                    task["end"],
                    seed=task["seed"],
                    llm=task["llm"],
                    progress=on_day,
                    rules=task["rules"] or None,
                    risk=task["risk"] or None,
                    **({"window": task["window"]} if task["window"] is not None else {}),
                )
            elif task["action"] == "resume":
                persisted.resume_backtest(store, run_id, progress=on_day, llm=task["llm"])
            else:
                persisted.continue_backtest(
                    store,
                    run_id,
                    task["end"],
                    data=task["data"],
                    progress=on_day,
                    llm=task["llm"],
                )
            info = store.run(run_id)
            progress[run_id] = {
                **progress.get(run_id, {}),
                "status": "done",
                "done": info.days,
                "total": info.days,
                "date": info.last_date,
            }
            store.update_job(job_id, progress=progress)
    except JobCancelled:
        store.update_job(job_id, finished=time.time())
    except ServerGone:
        _fail(store, job_id, "the server stopped while the job ran; POST /simulate/resume")
    except MarketArenaError as exc:
        _fail(store, job_id, str(exc))
    except Exception as exc:  # a bug: the job says what, the worker's stderr has the traceback
        traceback.print_exc()
        _fail(store, job_id, f"{type(exc).__name__}: {exc}")
    else:
        if store.job(job_id)["status"] != "cancelled":
            store.update_job(job_id, status="done", finished=time.time())
    finally:
        store.close()


def _fail(store: RunStore, job_id: str, error: str) -> None:
    store.update_job(job_id, status="failed", error=error, finished=time.time())


# ------------------------------------------------------------------ the manager
class JobManager:
    """The jobs of one server: queues them, starts their worker processes, notices when they
    end or die, and sends their webhooks.

    Opening it marks the jobs a previous server left ``running`` as failed (see the module
    docstring); :meth:`start` starts its polling thread, :meth:`stop` cancels nothing but
    terminates the workers (their jobs end ``failed``, resumable) and stops the webhooks.
    """

    def __init__(self, settings: ServiceSettings, store: RunStore | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else RunStore(settings.store)
        self.webhooks = WebhookSender(webhook_targets(settings.webhooks), self.store)
        self._context = multiprocessing.get_context("spawn")
        self._procs: dict[str, BaseProcess] = {}
        #: per running job and run: the last date whose fills were sent as trade.executed
        self._sent: dict[str, dict[str, str | None]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobs", daemon=True)
        for job in self.store.jobs(status="running"):
            self.store.update_job(
                job["id"],
                status="failed",
                finished=time.time(),
                error="the server stopped while the job ran (worker pid "
                f"{job.get('worker_pid')}); its runs are resumable: POST /simulate/resume",
            )

    def start(self) -> None:
        self.webhooks.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                proc.terminate()
                proc.join(timeout=10)
                if self.store.job(job_id)["status"] in ACTIVE:
                    self._record_death(job_id, proc, "the server stopped")
            self._procs.clear()
        self.webhooks.close()

    # -------------------------------------------------------------- requests
    def submit(self, kind: str, tasks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Queue a job of ``tasks`` (409 when one of their models is being simulated)."""
        with self._lock:
            self._refuse_overlaps([t["model"] for t in tasks], [t["run_id"] for t in tasks])
            job_id = uuid.uuid4().hex[:12]
            self.store.create_job(job_id, kind, {"tasks": tasks, **extra})
            self.store.update_job(
                job_id,
                run_ids=[t["run_id"] for t in tasks],
                progress={t["run_id"]: {"status": "pending"} for t in tasks},
            )
            self._dispatch()
            return self.store.job(job_id)

    def simulate(self, request: SimulateRequest) -> dict[str, Any]:
        """A ``start`` task per model; names and specs checked before anything is queued."""
        from marketarena.agents.registry import make_agent
        from marketarena.envs.data import resolve_data

        with self._lock:  # no other request takes a run id between check and queue
            market = resolve_data(request.data)  # an unknown name or a missing file: a 400
            start, end = request.start.isoformat(), request.end.isoformat()
            first, last = str(market.dates[0]), str(market.dates[-1])
            if start >= last:
                raise ConfigError(f"start {start}: the data {request.data} ends on {last}")
            if end <= first:
                raise ConfigError(f"end {end}: the data {request.data} starts on {first}")
            run_ids = request.run_ids or [f"{m}@{start}" for m in request.models]
            self._refuse_overlaps(request.models, run_ids)  # before a worker's run is "taken"
            tasks = []
            for model, run_id in zip(request.models, run_ids, strict=True):
                # every option checked (none holds a secret: keys come from api_key_env); the
                # bundled model's server starts when the job runs, so a placeholder stands in here
                local = {"base_url": "http://127.0.0.1:1/v1"} if model == "llm:local" else {}
                make_agent(model, None, {**request.llm, **local})
                try:
                    self.store.require_new(run_id)
                except ConfigError:  # the store's message speaks of the CLI's options
                    raise HTTPException(
                        409,
                        f"run {run_id!r} already exists: resume it (POST /simulate/resume), "
                        "continue it (POST /simulate/continue) or name the new run (run_ids)",
                    ) from None
                tasks.append(
                    {
                        "action": "start",
                        "model": model,
                        "run_id": run_id,
                        "data": request.data,
                        "start": start,
                        "end": end,
                        "seed": request.seed,
                        "rules": request.rules,
                        "risk": request.risk,
                        "window": request.window,
                        "llm": request.llm,
                    }
                )
            return self.submit("simulate", tasks)

    def resume(self, models: Sequence[str], llm: Mapping[str, Any]) -> dict[str, Any]:
        """With ``models``: each model's unfinished runs, from their last completed day.
        Without: what the last failed or cancelled job left undone."""
        with self._lock:
            if models:
                self._refuse_overlaps(models)
                tasks = []
                for model in models:
                    runs = self.store.runs_of(model)
                    unfinished = [r for r in runs if r.status != "finished"]
                    if not unfinished:
                        raise HTTPException(
                            409,
                            f"model {model!r} has no unfinished run to resume (its runs "
                            f"{[r.run_id for r in runs]} are finished; POST /simulate/continue "
                            "extends one)",
                        )
                    tasks += [
                        _task("resume", r, llm=dict(llm), last_completed=r.last_date)
                        for r in unfinished
                    ]
                return self.submit("resume", tasks)
            for job in sorted(self.store.jobs(), key=lambda j: j["created"], reverse=True):
                if job["status"] in ("failed", "cancelled"):
                    tasks = self._left_undone(job, llm)
                    if tasks:
                        return self.submit("resume", tasks, resumes=job["id"])
            raise HTTPException(
                404,
                "no failed or cancelled job with work left to resume; name the models "
                "(?models=...) to resume their unfinished runs",
            )

    def extend(
        self, models: Sequence[str], end: str, data: str | None, llm: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Each model's latest finished run continued to ``end`` (every model with a
        finished run when ``models`` is empty)."""
        with self._lock:
            if not models:
                models = sorted(
                    {str(r.spec["agent"]) for r in self.store.runs() if r.status == "finished"}
                )
                if not models:
                    raise HTTPException(404, "no finished run to continue")
            self._refuse_overlaps(models)
            tasks = []
            for model in models:
                runs = self.store.runs_of(model)
                finished = [r for r in runs if r.status == "finished"]
                if not finished:
                    raise HTTPException(
                        409,
                        f"model {model!r} has no finished run to continue (its runs "
                        f"{[r.run_id for r in runs]} are unfinished: POST /simulate/resume)",
                    )
                run = finished[-1]
                if end <= run.spec["end"]:
                    raise ConfigError(
                        f"end {end}: must be after the end of run {run.run_id!r} "
                        f"({run.spec['end']})"
                    )
                tasks.append(_task("continue", run, end=end, data=data, llm=dict(llm)))
            return self.submit("continue", tasks)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job (it never starts) or a running one (its worker stops after the
        current day); a job that has ended is a 409."""
        with self._lock:
            job = self.store.job(job_id)
            if job["status"] not in ACTIVE:
                raise HTTPException(
                    409, f"job {job_id} is {job['status']}: only a queued or running job cancels"
                )
            fields: dict[str, Any] = {"status": "cancelled"}
            if job["status"] == "queued":
                fields["finished"] = time.time()
            self.store.update_job(job_id, **fields)
            return self.store.job(job_id)

    def jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        self.poll()
        return self.store.jobs(status=status)

    def job(self, job_id: str) -> dict[str, Any]:
        self.poll()
        return self.store.job(job_id)

    # -------------------------------------------------------------- internals
    def _refuse_overlaps(self, models: Sequence[str], run_ids: Sequence[str] = ()) -> None:
        """409 when a queued or running job covers one of ``models`` or ``run_ids``."""
        active = self.store.jobs(status="queued") + self.store.jobs(status="running")
        # a cancelled job's worker may still be computing its last day
        active += [
            job
            for job in (self.store.job(j) for j, p in self._procs.items() if p.is_alive())
            if job["status"] == "cancelled"
        ]
        for job in active:
            covered = {t["model"] for t in job["spec"]["tasks"]}
            for run_id in set(run_ids) & {t["run_id"] for t in job["spec"]["tasks"]}:
                raise HTTPException(
                    409, f"run {run_id!r} is being simulated by job {job['id']} ({job['status']})"
                )
            for model in models:
                if model in covered:
                    raise HTTPException(
                        409,
                        f"model {model!r} is being simulated by job {job['id']} "
                        f"({job['status']}); wait for it or cancel it (DELETE /jobs/"
                        f"{job['id']})",
                    )

    def _left_undone(self, job: Mapping[str, Any], llm: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The tasks of ``job`` that did not complete, as a new job's tasks: a run cut short
        resumes, a run never created starts (and a continue never begun continues)."""
        progress = job.get("progress") or {}
        tasks = []
        for task in job["spec"]["tasks"]:
            if progress.get(task["run_id"], {}).get("status") == "done":
                continue
            try:
                info = self.store.run(task["run_id"])
            except RunNotFound:
                tasks.append(task)  # never created: start it as asked
                continue
            if info.status != "finished":
                session = dict(llm or task.get("llm") or {})
                tasks.append(_task("resume", info, llm=session, last_completed=info.last_date))
            elif task["action"] == "continue" and info.spec["end"] < task["end"]:
                tasks.append(task)
        return tasks

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except Exception:  # a store hiccup: log it, try again on the next poll
                log.exception("polling the jobs failed")

    def poll(self) -> None:
        """Send the new days' trades, notice workers that ended or died, start queued jobs."""
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                self._send_trades(job_id)
                if proc.is_alive():
                    continue
                proc.join()
                del self._procs[job_id]
                self._sent.pop(job_id, None)
                job = self.store.job(job_id)
                if job["status"] in ACTIVE:
                    self._record_death(job_id, proc, "the worker process died")
                elif job["status"] == "done":
                    self.webhooks.send("job.completed", job)
                elif job["status"] == "failed":
                    self.webhooks.send("job.failed", job)
            self._dispatch()

    def _record_death(self, job_id: str, proc: BaseProcess, what: str) -> None:
        error = (
            f"{what} (pid {proc.pid}, exit code {proc.exitcode}); its runs keep their "
            "completed days: POST /simulate/resume"
        )
        self.store.update_job(job_id, status="failed", error=error, finished=time.time())
        job = self.store.job(job_id)
        self.webhooks.send("job.failed", job)
        self.webhooks.send("error", {"message": f"job {job_id}: {error}", "job": job})

    def _dispatch(self) -> None:
        if self._stop.is_set():
            return
        queued = sorted(self.store.jobs(status="queued"), key=lambda j: j["created"])
        for job in queued:
            if len(self._procs) >= self.settings.workers:
                return
            job_id = job["id"]
            self._sent[job_id] = {
                t["run_id"]: _last_date(self.store, t["run_id"]) for t in job["spec"]["tasks"]
            }
            self.store.update_job(job_id, status="running", started=time.time())
            proc = self._context.Process(
                target=run_job,
                args=(self.store.connect_url, job_id),
                name=f"marketarena-job-{job_id}",
                daemon=True,
            )
            try:
                proc.start()
            except OSError as exc:
                _fail(self.store, job_id, f"the worker process did not start: {exc}")
                self.webhooks.send("error", {"message": f"job {job_id}: {exc}"})
                continue
            self._procs[job_id] = proc
            self.store.update_job(job_id, worker_pid=proc.pid)

    def _send_trades(self, job_id: str) -> None:
        """A ``trade.executed`` event per run and day with fills that completed since the
        last poll."""
        if not any("trade.executed" in t.events for t in self.webhooks.targets):
            return
        for run_id, sent in self._sent.get(job_id, {}).items():
            last = _last_date(self.store, run_id)
            if last is None or (sent is not None and last <= sent):
                continue
            fills = self.store.fills(run_id, sent, last)
            if sent is not None:
                fills = fills[fills["date"] > sent]
            for date, day in fills.groupby("date", sort=True):
                self.webhooks.send(
                    "trade.executed",
                    {
                        "job_id": job_id,
                        "run_id": run_id,
                        "date": str(date),
                        "fills": day.drop(columns="date").to_dict("records"),
                    },
                )
            self._sent[job_id][run_id] = last


def _task(action: str, run: RunInfo, **fields: Any) -> dict[str, Any]:
    """A job's task on an existing run (a resume's ``last_completed``: the day it goes on
    from, as the store had it when the job was made)."""
    return {"action": action, "model": str(run.spec["agent"]), "run_id": run.run_id, **fields}


def _last_date(store: RunStore, run_id: str) -> str | None:
    try:
        return store.run(run_id).last_date
    except RunNotFound:
        return None


@contextmanager
def not_found(*kinds: type[Exception]) -> Iterator[None]:
    """Turn the store's missing-run or missing-job errors into 404s with their message."""
    try:
        yield
    except kinds as exc:
        raise HTTPException(404, str(exc)) from None


# ------------------------------------------------------------------ routes
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's job manager (``app.state.jobs``) from startup to shutdown."""
    manager = JobManager(app.state.settings)
    app.state.jobs = manager
    manager.start()
    try:
        yield
    finally:
        manager.stop()
        manager.store.close()


router = APIRouter(tags=["jobs"], lifespan=lifespan)


def manager_of(request: Request) -> JobManager:
    """The app's :class:`JobManager` (made at startup)."""
    manager: JobManager | None = getattr(request.app.state, "jobs", None)
    if manager is None:
        raise RuntimeError(
            "the job manager starts with the app's lifespan: run the app under uvicorn, or "
            "enter `with TestClient(app)`"
        )
    return manager


Models = Annotated[
    list[str],
    Query(description="the models (agent specs) to act on; repeat: ?models=a&models=b"),
]


@router.post("/simulate", status_code=202)
def simulate(body: SimulateRequest, request: Request) -> dict[str, Any]:
    """Queue a simulation: one persisted run per model (run ids ``<model>@<start>`` unless
    given). 409 when a model is being simulated by another job or a run id is taken."""
    return manager_of(request).simulate(body)


@router.post("/simulate/resume", status_code=202)
def simulate_resume(
    request: Request,
    models: Models = [],  # noqa: B006 (FastAPI copies query defaults)
    body: Annotated[ResumeRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Resume: the chosen models' unfinished runs from each one's last completed day, or,
    without ``models``, what the last failed or cancelled job left undone."""
    with not_found(RunNotFound, JobNotFound):
        return manager_of(request).resume(models, (body or ResumeRequest()).llm)


@router.post("/simulate/continue", status_code=202)
def simulate_continue(
    body: ContinueRequest,
    request: Request,
    models: Models = [],  # noqa: B006 (FastAPI copies query defaults)
) -> dict[str, Any]:
    """Extend each chosen model's latest finished run (every model's, by default) to ``end``."""
    with not_found(RunNotFound, JobNotFound):
        return manager_of(request).extend(models, body.end.isoformat(), body.data, body.llm)


@router.get("/jobs")
def list_jobs(
    request: Request,
    status: Annotated[
        str | None,
        Query(pattern="^(queued|running|done|failed|cancelled)$", description="only these"),
    ] = None,
) -> list[dict[str, Any]]:
    """Every job (or those with ``status``), with progress and errors."""
    return manager_of(request).jobs(status)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request) -> dict[str, Any]:
    """One job: status, progress (days done/total per run), error."""
    with not_found(RunNotFound, JobNotFound):
        return manager_of(request).job(job_id)


@router.delete("/jobs/{job_id}")
def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    """Cancel a queued or running job; a running one stops after its current day and its runs
    stay resumable."""
    with not_found(RunNotFound, JobNotFound):
        return manager_of(request).cancel(job_id)
