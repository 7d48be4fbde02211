"""Webhooks: the config file, signed deliveries checked by a real receiving server, retries then
a dead letter, and the secret nowhere but in the signature; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from marketarena.cli import main
from marketarena.cli.common import EXIT_ERROR
from marketarena.envs.errors import ConfigError, MissingFileError
from marketarena.evaluation.saved_runs.store import RunStore
from marketarena.service.webhooks import read_webhooks, signature

SECRET = "whsec-9f2c-never-shown"
SECRET_ENV = "MARKETARENA_TEST_WEBHOOK_SECRET"
TOKEN = "webhooks-api-t0ken"
SHORT = {"start": "2020-01-02", "end": "2020-01-17"}


class Receiver:
    """A real HTTP server on loopback that checks each delivery's signature with the secret
    (its own HMAC, not the library's) and answers ``status``."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Marketarena-Timestamp"]
                mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256)
                receiver.received.append(
                    {
                        "event": self.headers["X-Marketarena-Event"],
                        "valid": hmac.compare_digest(
                            self.headers["X-Marketarena-Signature"], "sha256=" + mac.hexdigest()
                        ),
                        "fresh": abs(time.time() - int(stamp)) < 60,
                        "payload": json.loads(body),
                        "raw": body.decode() + str(dict(self.headers)),
                    }
                )
                time.sleep(receiver.delay_s)
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, name: str) -> list[dict]:
        return [r for r in self.received if r["event"] == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    made: list[Receiver] = []

    def make(status: int = 200, delay_s: float = 0.0) -> Receiver:
        made.append(Receiver(status, delay_s))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_the_signature_is_an_hmac_of_timestamp_and_body():
    body = b'{"event": "job.completed"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("k", "1700000000", body) == f"sha256={expected}"
    assert signature("k", "1700000001", body) != signature("k", "1700000000", body)


def test_the_config_file_names_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    path = tmp_path / "hooks.yaml"

    def error(text: str) -> str:
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            read_webhooks(path)
        assert SECRET not in str(info.value)
        return str(info.value)

    good = f"url: http://127.0.0.1:9/h\n    secret_env: {SECRET_ENV}"
    assert "webhooks[0].url: an http:// or https:// URL is needed, got 'ftp://x'" in error(
        f"webhooks:\n  - url: ftp://x\n    secret_env: {SECRET_ENV}\n"
    )
    assert "webhooks[0].secret_env: environment variable NOT_SET_ANYWHERE is not set" in error(
        "webhooks:\n  - url: http://127.0.0.1:9/h\n    secret_env: NOT_SET_ANYWHERE\n"
    )
    assert "webhooks[0].secret_env: the name of the environment variable" in error(
        "webhooks:\n  - url: http://127.0.0.1:9/h\n"
    )
    assert "webhooks[0].events: unknown event(s) ['job.started']" in error(
        f"webhooks:\n  - {good}\n    events: [job.started]\n"
    )
    assert "webhooks[0].events: a non-empty list" in error(
        f"webhooks:\n  - {good}\n    events: job.failed\n"
    )
    assert "webhooks[0].retries: a whole number in 0..20, got -1" in error(
        f"webhooks:\n  - {good}\n    retries: -1\n"
    )
    assert "webhooks[0].backoff_s: a number of seconds > 0, got 0" in error(
        f"webhooks:\n  - {good}\n    backoff_s: 0\n"
    )
    assert "webhooks[0]: unknown key(s) ['secret']" in error(
        f"webhooks:\n  - {good}\n    secret: {SECRET}\n"
    )
    assert "unknown key(s) ['hooks']; expected 'webhooks'" in error("hooks: []\n")
    assert "'webhooks' must be a list of targets" in error("webhooks: 3\n")
    assert "not YAML or JSON" in error("webhooks: [\n")
    assert "hooks.yaml: webhooks[1]: must be a mapping" in error(
        f"webhooks:\n  - {good}\n  - just a string\n"
    )
    with pytest.raises(MissingFileError, match=r"webhooks file .*nope\.json: not found"):
        read_webhooks(tmp_path / "nope.json")
    as_json = tmp_path / "hooks.json"
    as_json.write_text(json.dumps([{"url": "https://example.org/h", "secret_env": SECRET_ENV}]))
    assert read_webhooks(as_json) == ({"url": "https://example.org/h", "secret_env": SECRET_ENV},)


def test_serve_refuses_a_bad_webhooks_file_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(f"webhooks:\n  - url: http://127.0.0.1:9/h\n    secret_env: {SECRET_ENV}\n")
    out = io.StringIO()
    code = main(["serve", "--webhooks", str(hooks)], console=Console(file=out, width=300))
    assert code == EXIT_ERROR
    assert out.getvalue().strip() == (
        f"error: webhooks file {hooks}: webhooks[0].secret_env: environment variable "
        f"{SECRET_ENV} is not set"
    )


def _hooks(url: str, **more) -> tuple[dict, ...]:
    return ({"url": url, "secret_env": SECRET_ENV, **more},)


def test_events_are_signed_and_delivered(store_url, live_server, receiver, wait, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    hook = receiver()
    server = live_server(store=store_url, token=TOKEN, webhooks=_hooks(hook.url))
    client = server.client
    responses = []
    job = client.post("/simulate", json={"models": ["equal_weight:5"], **SHORT})
    responses.append(job.text)
    done = wait(lambda: hook.events("job.completed"), 60, "job.completed")[0]["payload"]
    assert done["event"] == "job.completed" and done["data"]["id"] == job.json()["id"]
    assert done["data"]["status"] == "done"
    # a trade.executed per day with fills, the fills as the store has them
    store = RunStore(store_url, create=False)
    fills = store.fills("equal_weight:5@2020-01-02")
    trades = hook.events("trade.executed")
    assert [t["payload"]["data"]["date"] for t in trades] == sorted(set(fills["date"]))
    sent = [
        {"date": t["payload"]["data"]["date"], **f}
        for t in trades
        for f in t["payload"]["data"]["fills"]
    ]
    assert sent == fills.to_dict("records")
    assert {t["payload"]["data"]["run_id"] for t in trades} == {"equal_weight:5@2020-01-02"}

    # a killed worker: job.failed and error
    long = client.post(
        "/simulate", json={"models": ["random"], "start": "2018-01-02", "end": "2019-06-28"}
    )
    responses.append(long.text)

    def running_pid():
        j = client.get(f"/jobs/{long.json()['id']}")
        responses.append(j.text)
        return j.json()["progress"]["random@2018-01-02"].get("done") and j.json()["worker_pid"]

    os.kill(wait(running_pid, 60, "the worker's first day"), signal.SIGKILL)
    failed = wait(lambda: hook.events("job.failed"), 30, "job.failed")[0]["payload"]
    assert failed["data"]["id"] == long.json()["id"] and "exit code -9" in failed["data"]["error"]
    error = wait(lambda: hook.events("error"), 30, "error")[0]["payload"]
    assert f"job {long.json()['id']}: the worker process died" in error["data"]["message"]

    assert all(r["valid"] and r["fresh"] for r in hook.received)
    assert len({r["payload"]["id"] for r in hook.received}) == len(hook.received)
    responses += [client.get("/jobs").text, client.get("/runs").text]
    server.stop()
    _nowhere(responses, caplog, store, store_url)
    assert store.deliveries() == []  # nothing failed


def test_a_failing_receiver_is_retried_then_dead_lettered(
    store_url, live_server, receiver, wait, caplog
):
    caplog.set_level(logging.DEBUG)
    hook = receiver(status=500)
    hooks = _hooks(hook.url, events=["job.completed"], retries=2, backoff_s=0.05)
    server = live_server(store=store_url, webhooks=hooks)
    job = server.client.post("/simulate", json={"models": ["random"], **SHORT}).json()
    store = RunStore(store_url, create=False)
    (dead,) = wait(lambda: store.deliveries(status="dead"), 60, "the dead letter")
    assert len(hook.received) == 3  # the first attempt and two retries
    assert all(r["valid"] for r in hook.received)
    # the same delivery each time (one id), 50 ms then 100 ms apart at least
    assert len({r["payload"]["id"] for r in hook.received}) == 1
    assert dead["url"] == hook.url and dead["event"] == "job.completed"
    assert dead["attempts"] == 3 and dead["last_error"] == "HTTP 500"
    assert json.loads(dead["payload"])["data"]["id"] == job["id"]
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retried) == 2 and "attempt 1 failed (HTTP 500); retrying in 0.05 s" in retried[0]
    server.stop()
    _nowhere([], caplog, store, store_url)


def test_a_stopping_server_dead_letters_the_retries_still_waiting(
    live_server, receiver, wait, tmp_path
):
    hook = receiver(status=500)
    hooks = _hooks(hook.url, events=["job.completed"], retries=3, backoff_s=30)
    server = live_server(store=str(tmp_path / "runs.sqlite"), webhooks=hooks)
    server.client.post("/simulate", json={"models": ["random"], **SHORT})
    wait(lambda: hook.received, 30, "the first attempt")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5  # no waiting on a retry due in 30 s
    (dead,) = RunStore(tmp_path / "runs.sqlite", create=False).deliveries(status="dead")
    assert dead["attempts"] == 1 and dead["event"] == "job.completed"
    assert dead["last_error"] == "HTTP 500; the server stopped before it was delivered"


def test_a_slow_receiver_never_holds_up_a_job(live_server, receiver, wait, tmp_path):
    hook = receiver(delay_s=0.25)
    hooks = _hooks(hook.url, events=["trade.executed"])
    server = live_server(store=str(tmp_path / "runs.sqlite"), webhooks=hooks)
    started = time.monotonic()
    job = server.client.post("/simulate", json={"models": ["random"], **SHORT})
    assert job.status_code == 202 and time.monotonic() - started < 1.0
    wait(lambda: server.client.get(f"/jobs/{job.json()['id']}").json()["status"] == "done", 30, "")
    # 11 days of trades, a quarter of a second each at the receiver: most are still to come
    assert len(hook.received) < 11 and server.app.state.jobs.webhooks.pending() > 0
    wait(lambda: len(hook.received) == 11, 30, "every day's trades")


def _nowhere(responses: list[str], caplog, store: RunStore, store_url: str) -> None:
    """The secret is in no response, log record, job or delivery, nor in the store's file."""
    assert not any(SECRET in text for text in responses)
    assert not any(SECRET in r.getMessage() for r in caplog.records)
    assert SECRET not in json.dumps([store.jobs(), store.deliveries()], default=str)
    if os.path.isfile(store_url):
        for path in (store_url, f"{store_url}-wal"):
            if os.path.exists(path):
                assert SECRET.encode() not in Path(path).read_bytes()
