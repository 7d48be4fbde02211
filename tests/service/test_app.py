"""The service's frame: token authentication, body limits, error shapes, the bind rule."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import BaseModel

from marketarena.envs.errors import ConfigError, MissingFileError
from marketarena.service import app as app_module
from marketarena.service.settings import ServiceSettings, is_loopback, read_token


class Echo(BaseModel):
    name: str
    count: int


def client(monkeypatch, **settings) -> TestClient:
    router = APIRouter()

    @router.post("/echo")
    def echo(body: Echo) -> dict:
        return body.model_dump()

    @router.get("/fail")
    def fail() -> dict:
        raise ConfigError("a user mistake, in one line")

    monkeypatch.setattr(app_module, "_routers", lambda: [router])
    return TestClient(app_module.create_app(ServiceSettings(**settings)))


def test_health_answers_without_a_token_and_routes_need_it(monkeypatch):
    c = client(monkeypatch, token="s3cret-token")
    assert c.get("/health").json() == {"status": "ok"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        r = c.post("/echo", json={"name": "a", "count": 1}, headers=headers)
        assert r.status_code == 401
        assert "s3cret-token" not in r.text
        assert r.json()["error"].startswith("missing or wrong token")
    ok = c.post(
        "/echo", json={"name": "a", "count": 1}, headers={"Authorization": "Bearer s3cret-token"}
    )
    assert ok.status_code == 200 and ok.json() == {"name": "a", "count": 1}


def test_without_a_token_loopback_needs_none(monkeypatch):
    assert client(monkeypatch).post("/echo", json={"name": "a", "count": 2}).status_code == 200


def test_validation_errors_name_the_fields(monkeypatch):
    r = client(monkeypatch).post("/echo", json={"name": "a", "count": "many"})
    assert r.status_code == 422
    body = r.json()
    assert body["fields"] == [
        {
            "field": "count",
            "error": "Input should be a valid integer, unable to parse string as an integer",
        }
    ]
    assert body["error"].startswith("invalid request: count: Input should be a valid integer")


def test_a_library_error_is_a_400_with_its_message(monkeypatch):
    r = client(monkeypatch).get("/fail")
    assert r.status_code == 400 and r.json() == {"error": "a user mistake, in one line"}


def test_bodies_over_the_limit_are_413(monkeypatch):
    c = client(monkeypatch, max_body_bytes=2048)
    big = {"name": "x" * 4000, "count": 1}
    r = c.post("/echo", json=big)
    assert r.status_code == 413 and "over the 2048-byte limit" in r.json()["error"]
    # a body sent without a Content-Length (chunked) is measured as read
    chunks = iter([b'{"name": "' + b"y" * 3000 + b'", "count": 1}'])
    r = c.post("/echo", content=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_beyond_loopback_a_token_is_required():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(ConfigError, match=r"refusing to serve on 0\.0\.0\.0 without a token"):
        ServiceSettings(host="0.0.0.0")
    assert ServiceSettings(host="0.0.0.0", token="t").token == "t"


def test_the_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETARENA_API_TOKEN", "from-env")
    assert read_token() == "from-env"
    f = tmp_path / "token"
    f.write_text("from-file\nignored\n")
    assert read_token(str(f)) == "from-file"
    f.write_text("\n")
    with pytest.raises(ConfigError, match="first line is empty"):
        read_token(str(f))
    with pytest.raises(MissingFileError, match="not found"):
        read_token(str(tmp_path / "nope"))
    monkeypatch.delenv("MARKETARENA_API_TOKEN")
    assert read_token() is None
