"""Simulation jobs through a real server: worker processes, progress, cancel, 409s, a killed
worker resumed bit for bit, server restarts; on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
from fastapi.testclient import TestClient

from marketarena.evaluation.saved_runs.persisted import load_result, start_backtest
from marketarena.evaluation.saved_runs.store import RunStore
from marketarena.service.app import create_app
from marketarena.service.settings import ServiceSettings

TOKEN = "jobs-api-t0ken"
SHORT = {"start": "2020-01-02", "end": "2020-01-17"}
# long enough (a year and a half of days) that a worker is caught mid-run
LONG = {"start": "2018-01-02", "end": "2019-06-28"}


def finished(client, job_id: str, wait, timeout: float = 60) -> dict:
    """The job once it is no longer queued or running."""

    def ended():
        job = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] not in ("queued", "running") else None

    return wait(ended, timeout, f"job {job_id} to end")


def python_navs(tmp_path, model: str, start: str, end: str, **spec) -> np.ndarray:
    """The same run by start_backtest in Python, in a store of its own: the reference."""
    store = RunStore(tmp_path / f"reference-{model.replace(':', '_')}.sqlite")
    return start_backtest(store, "ref", model, "sp500_20", start, end, **spec).nav


def test_simulate_runs_each_model_in_a_worker(store_url, live_server, wait, tmp_path):
    server = live_server(store=store_url, token=TOKEN)
    r = server.client.post(
        "/simulate",
        json={
            "models": ["equal_weight:5", "random"],
            **SHORT,
            "seed": 3,
            "risk": {"max_weight": 0.2},
        },
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "simulate" and job["status"] in ("queued", "running")
    assert job["run_ids"] == ["equal_weight:5@2020-01-02", "random@2020-01-02"]
    done = finished(server.client, job["id"], wait)
    assert done["status"] == "done", done
    assert done["worker_pid"] not in (None, os.getpid())
    days = len(load_result(RunStore(store_url, create=False), "random@2020-01-02").nav) - 1
    assert days == 11  # the sessions from 2020-01-03 to 2020-01-17
    for run_id in done["run_ids"]:
        assert done["progress"][run_id] == {
            "status": "done",
            "done": days,
            "total": days,
            "date": "2020-01-17",
        }
    store = RunStore(store_url, create=False)
    for model in ("equal_weight:5", "random"):
        api = load_result(store, f"{model}@2020-01-02").nav
        ref = python_navs(tmp_path, model, **SHORT, seed=3, risk={"max_weight": 0.2})
        assert np.array_equal(api, ref)
    assert [j["id"] for j in server.client.get("/jobs").json()] == [job["id"]]
    assert server.client.get("/jobs", params={"status": "failed"}).json() == []


def test_a_killed_worker_fails_its_job_and_the_resume_is_bit_identical(
    store_url, live_server, wait, tmp_path
):
    server = live_server(store=store_url, token=TOKEN)
    client = server.client
    job = client.post("/simulate", json={"models": ["random"], **LONG, "seed": 7}).json()

    def some_days_done():
        j = client.get(f"/jobs/{job['id']}").json()
        p = j["progress"]["random@2018-01-02"]
        return j if p.get("done", 0) >= 5 else None

    running = wait(some_days_done, 60, "the worker's first days")
    total = running["progress"]["random@2018-01-02"]["total"]
    os.kill(running["worker_pid"], signal.SIGKILL)
    failed = finished(client, job["id"], wait)
    assert failed["status"] == "failed"
    assert f"pid {running['worker_pid']}, exit code -9" in failed["error"]
    assert "POST /simulate/resume" in failed["error"]
    store = RunStore(store_url, create=False)
    cut = store.run("random@2018-01-02")
    assert cut.status == "running" and 5 <= cut.days < total

    resumed = client.post("/simulate/resume")  # the last incomplete job
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["kind"] == "resume" and resumed.json()["spec"]["resumes"] == job["id"]
    task = resumed.json()["spec"]["tasks"][0]
    assert task["action"] == "resume" and task["last_completed"] == cut.last_date
    done = finished(client, resumed.json()["id"], wait)
    assert done["status"] == "done", done
    assert done["progress"]["random@2018-01-02"]["done"] == total
    api = load_result(store, "random@2018-01-02").nav
    ref = python_navs(tmp_path, "random", **LONG, seed=7)
    assert len(api) == total + 1 and np.array_equal(api, ref)
    # nothing left to resume
    again = client.post("/simulate/resume")
    assert again.status_code == 404 and "no failed or cancelled job" in again.json()["error"]


def test_cancel_stops_after_a_day_and_the_models_resume(live_server, wait, tmp_path):
    server = live_server(store=str(tmp_path / "runs.sqlite"), token=TOKEN)
    client = server.client
    job = client.post("/simulate", json={"models": ["equal_weight:3"], **LONG}).json()
    run_id = "equal_weight:3@2018-01-02"
    wait(lambda: client.get(f"/jobs/{job['id']}").json()["status"] == "running", 30, "running")
    # the same model while the job runs: 409 naming the job
    clash = client.post("/simulate", json={"models": ["equal_weight:3"], **SHORT})
    assert clash.status_code == 409
    assert f"model 'equal_weight:3' is being simulated by job {job['id']}" in clash.json()["error"]
    clash = client.post("/simulate/resume", params={"models": "equal_weight:3"})
    assert clash.status_code == 409 and job["id"] in clash.json()["error"]
    clash = client.post("/simulate", json={"models": ["random"], "run_ids": [run_id], **SHORT})
    assert (
        clash.json()["error"] == f"run {run_id!r} is being simulated by job {job['id']} (running)"
    )

    wait(
        lambda: client.get(f"/jobs/{job['id']}").json()["progress"][run_id].get("done"), 30, "a day"
    )
    r = client.delete(f"/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    # cancelled at once; 'finished' is set when the worker has stopped after its day
    ended = wait(
        lambda: (
            client.get(f"/jobs/{job['id']}").json()["finished"]
            and (client.get(f"/jobs/{job['id']}").json())
        ),
        30,
        "the worker to stop",
    )
    assert ended["status"] == "cancelled"
    wait(lambda: not server.app.state.jobs._procs, 30, "the worker to exit")
    store = RunStore(tmp_path / "runs.sqlite", create=False)
    stopped = store.run(run_id)
    assert stopped.status == "running" and stopped.days < ended["progress"][run_id]["total"]
    assert client.delete(f"/jobs/{job['id']}").status_code == 409  # ended: nothing to cancel

    r = client.post("/simulate/resume", params={"models": "equal_weight:3"})
    assert r.status_code == 202, r.text
    assert [t["run_id"] for t in r.json()["spec"]["tasks"]] == [run_id]
    assert finished(client, r.json()["id"], wait)["status"] == "done"
    ref = python_navs(tmp_path, "equal_weight:3", **LONG)
    assert np.array_equal(load_result(store, run_id).nav, ref)
    # every run of the model is finished now
    r = client.post("/simulate/resume", params={"models": "equal_weight:3"})
    assert r.status_code == 409 and "no unfinished run" in r.json()["error"]


def test_a_queued_job_cancels_before_it_starts(live_server, wait, tmp_path):
    server = live_server(store=str(tmp_path / "runs.sqlite"), token=TOKEN, workers=1)
    client = server.client
    first = client.post("/simulate", json={"models": ["random"], **LONG}).json()
    second = client.post("/simulate", json={"models": ["equal_weight:2"], **SHORT}).json()
    assert client.get(f"/jobs/{second['id']}").json()["status"] == "queued"  # one worker
    r = client.delete(f"/jobs/{second['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    client.delete(f"/jobs/{first['id']}")
    finished(client, first["id"], wait)
    wait(lambda: not server.app.state.jobs._procs, 30, "the worker to exit")
    assert client.get(f"/jobs/{second['id']}").json()["started"] is None
    store = RunStore(tmp_path / "runs.sqlite", create=False)
    assert [r.run_id for r in store.runs()] == ["random@2018-01-02"]


def test_continue_extends_finished_runs_as_one_run(store_url, live_server, wait, tmp_path):
    server = live_server(store=store_url, token=TOKEN)
    client = server.client
    job = client.post("/simulate", json={"models": ["equal_weight:5"], **SHORT}).json()
    assert finished(client, job["id"], wait)["status"] == "done"
    early = client.post("/simulate/continue", json={"end": "2020-01-10"})
    assert early.status_code == 400
    assert (
        "end 2020-01-10: must be after the end of run 'equal_weight:5@2020-01-02'"
        in (early.json()["error"])
    )
    r = client.post("/simulate/continue", json={"end": "2020-02-14"})  # every finished model
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["tasks"][0]["action"] == "continue"
    assert finished(client, r.json()["id"], wait)["status"] == "done"
    store = RunStore(store_url, create=False)
    extended = load_result(store, "equal_weight:5@2020-01-02").nav
    ref = python_navs(tmp_path, "equal_weight:5", SHORT["start"], "2020-02-14")
    assert np.array_equal(extended, ref)
    missing = client.post(
        "/simulate/continue", params={"models": "momentum"}, json={"end": "2021-01-04"}
    )
    assert missing.status_code == 404 and "no run of agent 'momentum'" in missing.json()["error"]


def test_requests_are_checked_before_anything_is_queued(tmp_path):
    settings = ServiceSettings(store=str(tmp_path / "runs.sqlite"), token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(settings), headers=auth) as client:

        def refused(body: dict, status: int) -> dict:
            r = client.post("/simulate", json=body)
            assert r.status_code == status, r.text
            return r.json()

        ok = {"models": ["random"], **SHORT}
        assert refused({k: v for k, v in ok.items() if k != "start"}, 422)["fields"][0] == {
            "field": "start",
            "error": "Field required",
        }
        assert (
            "end: Value error, end 2020-01-02 must be after start 2020-01-17"
            in refused({**ok, "start": "2020-01-17", "end": "2020-01-02"}, 422)["error"]
        )
        assert (
            "end: Input should be a valid date"
            in refused({**ok, "end": "2020-02-30"}, 422)["error"]
        )
        assert (
            "seed: Input should be greater than or equal to 0"
            in refused({**ok, "seed": -1}, 422)["error"]
        )
        assert (
            "models: List should have at least 1 item"
            in refused({**ok, "models": []}, 422)["error"]
        )
        assert (
            "models: Value error, a model is named twice"
            in refused({**ok, "models": ["random", "random"]}, 422)["error"]
        )
        assert (
            "run_ids: Value error, 2 run ids for 1 models"
            in refused({**ok, "run_ids": ["a", "b"]}, 422)["error"]
        )
        assert (
            "rules: Value error, lot_size='abc'"
            in refused({**ok, "rules": {"lot_size": "abc"}}, 422)["error"]
        )
        assert (
            "risk: Value error, risk.stop_loss=2.0: must be in (0, 1]"
            in (refused({**ok, "risk": {"stop_loss": 2}}, 422)["error"])
        )
        assert (
            "colour: Extra inputs are not permitted" in refused({**ok, "colour": 1}, 422)["error"]
        )
        assert (
            "llm: Value error, LLM options, but no model is an LLM"
            in (refused({**ok, "llm": {"base_url": "http://127.0.0.1:1/v1"}}, 422)["error"])
        )
        assert (
            "llm: Value error, unknown LLM option(s) ['api_key']"
            in (refused({**ok, "models": ["llm:gpt-4o"], "llm": {"api_key": "sk-x"}}, 422)["error"])
        )
        r = client.post("/simulate/resume", json={"llm": {"lookback": 5}})
        assert r.status_code == 422
        assert (
            "llm: Value error, ['lookback']: a resumed or continued run keeps"
            in (r.json()["error"])
        )
        assert "unknown agent 'momentumz'" in refused({**ok, "models": ["momentumz"]}, 400)["error"]
        assert "unknown data 'nope'" in refused({**ok, "data": "nope"}, 400)["error"]
        assert (
            "start 2023-01-03: the data sp500_20 ends on 2022-12-28"
            in refused({**ok, "start": "2023-01-03", "end": "2023-02-01"}, 400)["error"]
        )
        assert (
            "end 1989-02-01: the data sp500_20 starts on 1990-01-02"
            in refused({**ok, "start": "1989-01-03", "end": "1989-02-01"}, 400)["error"]
        )
        assert client.get("/jobs").json() == []

        r = client.get("/jobs/abc123")
        assert r.status_code == 404 and "no job 'abc123'" in r.json()["error"]
        assert client.delete("/jobs/abc123").status_code == 404
        r = client.get("/jobs", params={"status": "sleeping"})
        assert r.status_code == 422 and "query.status" in r.json()["error"]
        r = client.post("/simulate/resume")
        assert r.status_code == 404 and "no failed or cancelled job" in r.json()["error"]
        r = client.post("/simulate/resume", params={"models": "random"})
        assert r.status_code == 404 and "no run of agent 'random'" in r.json()["error"]
        r = client.post("/simulate/continue", json={})
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "end"
        r = client.post("/simulate/continue", json={"end": "2021-01-04"})
        assert r.status_code == 404 and "no finished run to continue" in r.json()["error"]

        for method, url in [
            ("POST", "/simulate"),
            ("POST", "/simulate/resume"),
            ("POST", "/simulate/continue"),
            ("GET", "/jobs"),
            ("GET", "/jobs/abc"),
            ("DELETE", "/jobs/abc"),
        ]:
            r = client.request(method, url, headers={"Authorization": "Bearer wrong"}, json=ok)
            assert r.status_code == 401 and TOKEN not in r.text
        assert client.get("/jobs").json() == []


def test_a_taken_run_id_is_a_409(tmp_path):
    path = tmp_path / "runs.sqlite"
    start_backtest(RunStore(path), "mine", "random", "sp500_20", **SHORT)
    with TestClient(create_app(ServiceSettings(store=str(path)))) as client:
        r = client.post("/simulate", json={"models": ["random"], "run_ids": ["mine"], **SHORT})
        assert r.status_code == 409
        assert r.json()["error"] == (
            "run 'mine' already exists: resume it (POST /simulate/resume), continue it "
            "(POST /simulate/continue) or name the new run (run_ids)"
        )
        assert client.get("/jobs").json() == []


def test_a_restarted_server_fails_running_jobs_and_runs_queued_ones(store_url, wait):
    store = RunStore(store_url)
    task = {
        "action": "start",
        "model": "random",
        "run_id": "random@2020-01-02",
        "data": "sp500_20",
        "seed": 0,
        "rules": {},
        "risk": {},
        "window": None,
        "llm": {},
        **SHORT,
    }
    spec = {"tasks": [task]}
    # what a server killed mid-job leaves: a running job, a queued one, a finished one
    store.create_job("left-running", "simulate", spec)
    store.update_job("left-running", status="running", started=time.time(), worker_pid=999999)
    store.create_job("left-done", "simulate", {"tasks": []})
    store.update_job("left-done", status="done", finished=time.time())
    queued = {"tasks": [{**task, "model": "equal_weight:2", "run_id": "ew2"}]}
    store.create_job("left-queued", "simulate", queued)
    with TestClient(create_app(ServiceSettings(store=store_url))) as client:
        jobs = {j["id"]: j for j in client.get("/jobs").json()}
        assert jobs["left-running"]["status"] == "failed"
        assert (
            "the server stopped while the job ran (worker pid 999999)"
            in (jobs["left-running"]["error"])
        )
        assert jobs["left-done"]["status"] == "done"
        assert finished(client, "left-queued", wait)["status"] == "done"
        # the failed one resumes: its run was never created, so it starts as asked
        r = client.post("/simulate/resume")
        assert r.json()["spec"]["tasks"] == spec["tasks"]
        assert finished(client, r.json()["id"], wait)["status"] == "done"
    assert store.run("random@2020-01-02").status == "finished"
    assert store.run("ew2").status == "finished"


def test_workers_run_jobs_side_by_side(live_server, wait, tmp_path):
    workers = 2
    server = live_server(store=str(tmp_path / "runs.sqlite"), workers=workers)
    client = server.client
    ids = [
        client.post("/simulate", json={"models": [m], **SHORT}).json()["id"]
        for m in ("random", "equal_weight:2", "equal_weight:4")
    ]
    statuses = [client.get(f"/jobs/{i}").json()["status"] for i in ids]
    assert statuses.count("queued") >= 1 and statuses.count("running") <= workers
    for i in ids:
        assert finished(client, i, wait)["status"] == "done"
    pids = {client.get(f"/jobs/{i}").json()["worker_pid"] for i in ids}
    assert len(pids) == 3  # a process per job
