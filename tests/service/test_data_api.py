"""The /data endpoints: coverage, status, downloads through providers, range deletion."""

from __future__ import annotations

import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from marketarena.envs.data import load_dataset
from marketarena.envs.errors import DataError
from marketarena.envs.providers import ENTRY_POINT_GROUP, DataDir, Downloader
from marketarena.evaluation.saved_runs.persisted import continue_backtest, start_backtest
from marketarena.evaluation.saved_runs.store import RunStore
from marketarena.service.app import create_app
from marketarena.service.cache import JsonCache
from marketarena.service.settings import ServiceSettings

TOKEN = "data-api-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _client(tmp_path: Path, **settings) -> TestClient:
    chosen = {
        "store": str(tmp_path / "runs.sqlite"),
        "data_dir": str(tmp_path / "data"),
        "token": TOKEN,
        **settings,
    }
    return TestClient(create_app(ServiceSettings(**chosen)), headers=AUTH)


def _download(client: TestClient, symbols, start, end, **more) -> dict:
    body = {"symbols": symbols, "start": start, "end": end, **more}
    r = client.post("/data/download", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_data_endpoint_needs_the_token(tmp_path):
    client = _client(tmp_path)
    calls = [
        ("GET", "/data/coverage"),
        ("GET", "/data/status"),
        ("DELETE", "/data/range?symbols=AXP"),
        ("POST", "/data/download"),
    ]
    for method, url in calls:
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
            r = client.request(method, url, headers=headers, json={})
            assert r.status_code == 401, (method, url)
            assert TOKEN not in r.text and r.json()["error"].startswith("missing or wrong token")
    assert not (tmp_path / "data").exists()


def test_download_then_coverage_and_status(tmp_path):
    client = _client(tmp_path)
    assert client.get("/data/coverage").json() == []  # no folder yet: nothing covered
    got = _download(client, ["AXP", "BA", "NOPE"], "2009-09-01", "2009-12-31")
    bundled = load_dataset("sp500_ohlcv_30").slice("2009-09-01", "2009-12-31")
    assert got["added"] == {"AXP": bundled.n_periods, "BA": bundled.n_periods}
    assert got["sources"] == {"AXP": "local", "BA": "local"}
    assert got["missing"] == ["NOPE"]
    assert got["failures"] == [
        {"provider": "local", "error": "no bars for ['NOPE'] in 2009-09-01..2009-12-31"}
    ]
    # a second, overlapping download adds only the new dates
    more = _download(client, ["BA"], "2009-12-01", "2010-01-15")
    january = load_dataset("sp500_ohlcv_30").slice("2010-01-01", "2010-01-15")
    assert more["added"] == {"BA": january.n_periods}
    coverage = client.get("/data/coverage").json()
    first, last = str(bundled.dates[0]), str(bundled.dates[-1])
    n_ba = load_dataset("sp500_ohlcv_30").slice("2009-09-01", "2010-01-15").n_periods
    assert coverage == [
        {"symbol": "AXP", "first_date": first, "last_date": last, "rows": bundled.n_periods,
         "gaps": 0},
        {"symbol": "BA", "first_date": first, "last_date": "2010-01-15", "rows": n_ba, "gaps": 0},
    ]  # fmt: skip
    only = client.get("/data/coverage", params={"symbols": "BA"}).json()
    assert [c["symbol"] for c in only] == ["BA"]
    status = client.get("/data/status").json()
    files = sorted((tmp_path / "data").glob("*.csv"))
    assert status["symbols"] == ["AXP", "BA"] == [f.stem for f in files]
    assert (status["first_date"], status["last_date"]) == (first, "2010-01-15")
    assert status["rows"] == bundled.n_periods + n_ba
    assert status["size_bytes"] == sum(f.stat().st_size for f in files)
    assert status["downloads"]["local"]["symbols"] == ["BA"]  # the last download's
    assert status["downloads"]["local"]["rows_added"] == more["added"]["BA"]
    assert status["providers"] == {
        "default_order": ["local"],
        "available": {"local": "marketarena"},
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"symbols": ["AXP"], "start": "01/09/2009", "end": "2009-12-31"}, "start"),
        ({"symbols": ["AXP"], "start": "2009-12-31", "end": "2009-09-01"}, "end"),
        ({"symbols": ["../etc/passwd"], "start": "2009-09-01", "end": "2009-12-31"}, "symbols.0"),
        ({"symbols": [], "start": "2009-09-01", "end": "2009-12-31"}, "symbols"),
        ({"start": "2009-09-01", "end": "2009-12-31"}, "symbols"),
        ({"symbols": ["AXP"], "start": "2009-09-01", "end": "2009-12-31", "providers": []},
         "providers"),
    ],
)  # fmt: skip
def test_download_validation_errors_name_the_field(tmp_path, body, field):
    r = _client(tmp_path).post("/data/download", json=body)
    assert r.status_code == 422
    assert field in [f["field"] for f in r.json()["fields"]]
    assert not (tmp_path / "data").exists()


def test_an_unknown_provider_is_a_404_before_any_request(tmp_path):
    body = {"symbols": ["AXP"], "start": "2009-09-01", "end": "2009-09-30"}
    r = _client(tmp_path).post("/data/download", json={**body, "providers": ["local", "nope"]})
    assert r.status_code == 404
    assert r.json() == {"error": "no provider 'nope'; providers: ['local']"}
    assert not (tmp_path / "data").exists()


FLAKY = """
class Flaky:
    name = "flaky"

    def fetch(self, symbols, start, end):
        raise TimeoutError("upstream timed out after 10 s")
"""


def test_a_failing_plugin_provider_falls_back_to_the_next(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "flaky_provider-0.1.0.dist-info"
    info.mkdir(parents=True)
    (site / "flaky_provider.py").write_text(FLAKY)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flaky-provider\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nflaky = flaky_provider:Flaky\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "flaky_provider", raising=False)
    client = _client(tmp_path, providers=("flaky", "local"))
    got = _download(client, ["KO"], "2009-09-01", "2009-09-30")  # the server's default order
    assert got["failures"] == [
        {"provider": "flaky", "error": "TimeoutError: upstream timed out after 10 s"}
    ]
    assert got["sources"] == {"KO": "local"} and got["missing"] == []
    status = client.get("/data/status").json()
    assert status["providers"]["available"]["flaky"] == "flaky-provider"
    assert list(status["downloads"]) == ["local"]


def test_rate_limits_span_requests(tmp_path):
    client = _client(tmp_path, provider_limits={"local": 1})  # one request a minute
    assert _download(client, ["KO"], "2009-09-01", "2009-09-30")["added"]
    second = _download(client, ["PG"], "2009-09-01", "2009-09-30")
    assert second["added"] == {} and second["missing"] == ["PG"]
    [failure] = second["failures"]
    assert failure["provider"] == "local"
    assert re.fullmatch(
        r"DataError: rate limited: next request in (59\.\d|60\.0) s", failure["error"]
    )


def test_coverage_of_an_unknown_or_malformed_symbol(tmp_path):
    client = _client(tmp_path)
    _download(client, ["AXP"], "2009-09-01", "2009-09-30")
    r = client.get("/data/coverage", params={"symbols": "AXP,QQQ"})
    assert r.status_code == 404
    assert r.json()["error"].startswith("no data for symbol(s) ['QQQ'] in ")
    r = client.get("/data/coverage", params={"symbols": "AXP,../x"})
    assert r.status_code == 422 and "'../x' is not a symbol" in r.json()["error"]


@pytest.fixture
def with_run(tmp_path, store_url):
    """A data folder (AXP, BA, KO from 2009-08-21 to 2009-12-31) and a stored run of
    AXP and BA on it from 2009-09-15 to 2009-10-28 (the bundled sample then skips to
    2009-11-05), in a store on SQLite and on PostgreSQL."""
    client = _client(tmp_path, store=store_url)
    _download(client, ["AXP", "BA", "KO"], "2009-08-21", "2009-12-31")
    store = RunStore(store_url)
    data = str(tmp_path / "data")
    start_backtest(
        store, "ew", "equal_weight", data, "2009-09-15", "2009-10-28", universe=("AXP", "BA")
    )
    assert store.run("ew").spec["end"] == "2009-10-28"
    yield client, store
    store.close()


def test_deleting_rows_a_stored_run_depends_on_is_refused_unless_forced(tmp_path, with_run):
    client, store = with_run
    folder = DataDir(tmp_path / "data")
    before = {s: folder.read(s) for s in folder.symbols()}
    run = "run 'ew' (data through 2009-10-28)"
    for params, why in (
        # the same dates of every symbol: the folder loads, the run's data differs
        (
            {"symbols": "AXP,BA,KO", "start": "2009-10-01", "end": "2009-10-02"},
            f"{run}: its data up to 2009-10-28 would change (AXP 2009-10-01..2009-10-02, "
            "BA 2009-10-01..2009-10-02, KO 2009-10-01..2009-10-02)",
        ),
        # before the run's start: its features and its hash start at the first date
        (
            {"symbols": "AXP,BA,KO", "end": "2009-08-24"},
            f"{run}: its data up to 2009-10-28 would change (AXP 2009-08-21..2009-08-24, "
            "BA 2009-08-21..2009-08-24, KO 2009-08-21..2009-08-24)",
        ),
        # a symbol outside the run's universe, left with holes: the folder no longer loads
        (
            {"symbols": "KO", "start": "2009-12-01"},
            f"{run}: the folder would no longer load (invalid market data in data: 2 problem(s))",
        ),
        ({"symbols": "BA"}, f"{run}: its symbol(s) ['BA'] would be gone"),
    ):
        r = client.delete("/data/range", params=params)
        assert r.status_code == 409, params
        assert r.json() == {
            "error": f"refused: stored runs depend on these rows ({why}); pass force=true to "
            "delete them anyway"
        }
    assert all(folder.read(s).equals(before[s]) for s in before)
    # rows after the run's end, and all of a symbol it does not hold, are free to go
    r = client.delete("/data/range", params={"symbols": "AXP,BA,KO", "start": "2009-11-02"})
    assert r.status_code == 200
    n_after = load_dataset("sp500_ohlcv_30").slice("2009-11-02", "2009-12-31").n_periods
    assert r.json() == {"deleted": dict.fromkeys(("AXP", "BA", "KO"), n_after), "forced_over": []}
    covered = client.get("/data/coverage").json()  # answered from the cache until a change
    assert [c["symbol"] for c in covered] == ["AXP", "BA", "KO"]
    r = client.delete("/data/range", params={"symbols": "KO"})
    assert r.status_code == 200 and r.json()["forced_over"] == []
    assert folder.symbols() == ["AXP", "BA"]
    assert [c["symbol"] for c in client.get("/data/coverage").json()] == ["AXP", "BA"]
    assert client.get("/data/status").json()["symbols"] == ["AXP", "BA"]
    # forced: the rows go, and the run can no longer continue on this data
    params = {"symbols": "AXP,BA", "start": "2009-09-01", "end": "2009-09-02", "force": "true"}
    r = client.delete("/data/range", params=params)
    assert r.status_code == 200
    assert r.json() == {
        "deleted": {"AXP": 2, "BA": 2},
        "forced_over": [
            f"{run}: its data up to 2009-10-28 would change (AXP 2009-09-01..2009-09-02, "
            "BA 2009-09-01..2009-09-02)"
        ],
    }
    assert "2009-09-01" not in set(folder.read("AXP")["date"])
    _download(client, ["AXP", "BA"], "2009-11-02", "2009-12-31")
    with pytest.raises(DataError, match="differs from the data run 'ew' was computed on"):
        continue_backtest(store, "ew", "2009-12-15")


def test_a_deletion_the_run_survives_leaves_it_continuable(tmp_path, with_run):
    client, store = with_run
    r = client.delete("/data/range", params={"symbols": "AXP,BA,KO", "start": "2009-12-01"})
    assert r.status_code == 200 and r.json()["forced_over"] == []
    continued = continue_backtest(store, "ew", "2009-11-30")
    assert str(continued.dates[-1]) == "2009-11-30"


def test_delete_range_errors(tmp_path, with_run):
    client, _ = with_run
    r = client.delete("/data/range", params={"symbols": "AXP,QQQ"})
    assert r.status_code == 404 and "['QQQ']" in r.json()["error"]
    for params, field in (
        ({}, "symbols"),
        ({"symbols": "AXP", "start": "2009/09/01"}, "start"),
        ({"symbols": "AXP", "start": "2009-10-01", "end": "2009-09-01"}, "end"),
        ({"symbols": "AXP", "force": "maybe"}, "force"),
    ):
        r = client.delete("/data/range", params=params)
        assert r.status_code == 422, params
        assert field in r.json()["error"]


def test_the_response_cache_computes_each_key_once():
    cache = JsonCache(size=2)
    calls: list[str] = []
    gate = threading.Event()

    def slow() -> dict:
        calls.append("slow")
        gate.wait(5)
        return {"value": 1.5}

    with ThreadPoolExecutor(8) as pool:  # eight requests miss the same key at once
        answers = [pool.submit(cache.response, ("k", 1), slow) for _ in range(8)]
        time.sleep(0.2)
        gate.set()
        bodies = {f.result().body for f in answers}
    assert bodies == {b'{"value":1.5}'} and calls == ["slow"]
    assert (cache.hits, cache.misses) == (7, 1)
    # a new version is a new key; the oldest key goes beyond the size
    cache.response(("k", 2), lambda: {"value": 2})
    cache.response(("k", 3), lambda: {"value": 3})
    assert cache.response(("k", 1), lambda: {"value": "again"}).body == b'{"value":"again"}'


def test_cached_run_answers_follow_the_store(tmp_path, store_url):
    """/runs, /leaderboard and /positions/history come from the response cache, keyed on the
    runs' versions: a run written by another connection (a worker) shows at once."""
    data = DataDir(tmp_path / "data")
    Downloader().download(data, ["AXP", "BA"], "2009-08-21", "2009-12-31", ["local"])
    writer = RunStore(store_url)
    start_backtest(writer, "a", "equal_weight", str(data.path), "2009-09-15", "2009-10-28")
    settings = ServiceSettings(store=store_url, data_dir=str(data.path), token=TOKEN)
    with TestClient(create_app(settings), headers=AUTH) as client:
        assert [r["run_id"] for r in client.get("/runs").json()] == ["a"]
        assert [r["run_id"] for r in client.get("/leaderboard").json()["rows"]] == ["a"]
        before = client.get("/positions/history", params={"model": "a"}).json()
        assert before["end_date"] == "2009-10-28"
        version = writer.versions()["a"]
        start_backtest(writer, "b", "buy_and_hold", str(data.path), "2009-09-15", "2009-10-28")
        continue_backtest(writer, "a", "2009-12-15")
        assert writer.versions()["a"] != version and writer.versions()["a"][0] == "finished"
        runs = {r["run_id"]: r for r in client.get("/runs").json()}
        assert sorted(runs) == ["a", "b"] and runs["a"]["last_date"] == "2009-12-15"
        after = client.get("/positions/history", params={"model": "a"}).json()
        assert after["end_date"] == "2009-12-15" and len(after["days"]) > len(before["days"])
        board = client.get("/leaderboard", params={"runs": ["b"]}).json()
        assert [r["run_id"] for r in board["rows"]] == ["b"]
    writer.close()
