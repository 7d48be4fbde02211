"""The read endpoints over a store of runs made in Python: /runs, /runs/{id}/metrics,
/leaderboard, /positions/history, /positions/snapshot; on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from marketarena.envs.data import resolve_data
from marketarena.evaluation.saved_runs.persisted import holding_periods, start_backtest
from marketarena.evaluation.saved_runs.store import RunStore
from marketarena.service.app import create_app
from marketarena.service.settings import ServiceSettings

TOKEN = "runs-api-t0ken"
SHORT = {"start": "2020-01-02", "end": "2020-01-31"}


@pytest.fixture
def stored(store_url):
    """A store with two finished runs over the same dates and a client over it."""
    store = RunStore(store_url)
    results = {
        model: start_backtest(store, f"{model}@2020-01-02", model, "sp500_20", **SHORT, seed=1)
        for model in ("equal_weight:5", "random")
    }
    settings = ServiceSettings(store=store_url, token=TOKEN)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c, store, results


def test_runs_and_their_metrics(stored):
    client, _, results = stored
    runs = client.get("/runs").json()
    assert [(r["run_id"], r["model"], r["status"], r["days"]) for r in runs] == [
        ("equal_weight:5@2020-01-02", "equal_weight:5", "finished", 20),
        ("random@2020-01-02", "random", "finished", 20),
    ]
    assert runs[0]["last_date"] == "2020-01-31" and len(runs[0]["symbols"]) == 20

    r = client.get("/runs/random@2020-01-02/metrics")
    assert r.status_code == 200, r.text
    (row,) = r.json()["metrics"]
    nav = results["random"].nav
    assert row["run_id"] == "random@2020-01-02" and row["model"] == "random"
    assert row["start"] == "2020-01-02" and row["end"] == "2020-01-31"
    assert row["total_return"] == pytest.approx(nav[-1] / nav[0] - 1, rel=1e-12)
    drawdown = (nav / np.maximum.accumulate(nav) - 1).min()
    assert row["max_drawdown"] == pytest.approx(drawdown, rel=1e-12)
    assert {"sharpe", "sortino", "volatility", "sharpe_ci_low", "max_drawdown_peak"} <= set(row)

    r = client.get(
        "/runs/random@2020-01-02/metrics", params={"compare": "equal_weight:5@2020-01-02"}
    )
    rows = r.json()["metrics"]
    assert [x["run_id"] for x in rows] == ["random@2020-01-02", "equal_weight:5@2020-01-02"]
    ew = results["equal_weight:5"].nav
    assert rows[1]["total_return"] == pytest.approx(ew[-1] / ew[0] - 1, rel=1e-12)

    for url in ("/runs/nope/metrics", "/runs/random@2020-01-02/metrics?compare=nope"):
        r = client.get(url)
        assert r.status_code == 404 and "no run 'nope'" in r.json()["error"]


def test_the_leaderboard_ranks_finished_runs(stored):
    client, store, results = stored
    board = client.get("/leaderboard").json()
    finals = sorted(((res.nav[-1], m) for m, res in results.items()), reverse=True)
    assert [(row["rank"], row["model"]) for row in board["rows"]] == [
        (1, finals[0][1]),
        (2, finals[1][1]),
    ]
    assert [row["final_nav"] for row in board["rows"]] == [f for f, _ in finals]
    assert board["title"] == "leaderboard: 2020-01-02 to 2020-01-31"
    one = client.get("/leaderboard", params={"runs": "random@2020-01-02"}).json()
    assert [row["run_id"] for row in one["rows"]] == ["random@2020-01-02"]
    r = client.get("/leaderboard", params={"runs": "nope"})
    assert r.status_code == 404 and "no run 'nope'" in r.json()["error"]
    start_backtest(store, "later", "random", "sp500_20", "2020-02-03", "2020-02-14")
    r = client.get("/leaderboard")
    assert r.status_code == 400
    assert "compares runs over the same dates" in r.json()["error"]
    assert "later 2020-02-03..2020-02-14" in r.json()["error"]


def test_an_empty_store_has_an_empty_leaderboard(tmp_path):
    with TestClient(create_app(ServiceSettings(store=str(tmp_path / "runs.sqlite")))) as c:
        assert c.get("/leaderboard").json() == {
            "title": "leaderboard: no finished runs",
            "rows": [],
        }
        assert c.get("/runs").json() == []


def test_positions_history_is_the_stored_timeline(stored):
    client, store, _ = stored
    run_id = "random@2020-01-02"
    r = client.get(
        "/positions/history",
        params={"model": "random", "start_date": "2020-01-08", "end_date": "2020-01-15"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["run_id"] == run_id and body["model"] == "random"
    days = store.days(run_id, "2020-01-08", "2020-01-15")
    symbols = store.run(run_id).symbols
    assert [d["date"] for d in body["days"]] == list(days["date"])
    assert body["start_date"] == "2020-01-08" and body["end_date"] == "2020-01-15"
    for row, (_, day), weights in zip(
        body["days"], days.iterrows(), days.attrs["weights"], strict=True
    ):
        assert row["nav"] == day["nav"] and row["cash"] == day["cash"]
        assert row["positions"] == {s: day[s] for s in symbols if day[s]}
        assert sum(row["weights"].values()) == pytest.approx(1.0, abs=1e-12)
        assert row["weights"]["CASH"] == weights[-1]
    fills = store.fills(run_id, "2020-01-08", "2020-01-15")
    assert len(body["trades"]) == len(fills) > 0
    assert body["trades"][0] == fills.iloc[0].to_dict()
    assert body["holding_periods"] == holding_periods(days, symbols).to_dict("records")
    assert body["turnover"]["mean_daily_turnover"] == pytest.approx(days["turnover"].mean())
    assert body["turnover"]["total_costs"] == pytest.approx(days["costs"].sum())

    one = client.get("/positions/history", params={"model": run_id, "symbol": "AAPL"}).json()
    assert {t["symbol"] for t in one["trades"]} == {"AAPL"}
    assert all(set(d["positions"]) <= {"AAPL"} for d in one["days"])
    assert [p["symbol"] for p in one["holding_periods"]] == ["AAPL"]


def test_positions_history_refuses_what_is_not_there(stored):
    client, _, _ = stored

    def get(status: int, **params) -> str:
        r = client.get("/positions/history", params=params)
        assert r.status_code == status, r.text
        return r.json()["error"]

    assert "no run or model 'momentum'" in get(404, model="momentum")
    assert "trades no symbol 'TSLA'" in get(404, model="random", symbol="TSLA")
    assert "has no completed day from 2020-01-04 to 2020-01-05" in get(
        404, model="random", start_date="2020-01-04", end_date="2020-01-05"
    )
    assert "query.start_date: Input should be a valid date" in get(
        422, model="random", start_date="2020-02-31"
    )
    assert "end_date 2020-01-03 is before start_date 2020-01-10" in get(
        422, model="random", start_date="2020-01-10", end_date="2020-01-03"
    )
    assert "query.model: Field required" in get(422)


def test_a_snapshot_is_the_holdings_after_a_close(stored):
    client, store, _ = stored
    close = resolve_data("sp500_20")
    r = client.get("/positions/snapshot", params={"model": "equal_weight:5", "date": "2020-01-12"})
    assert r.status_code == 200, r.text
    snap = r.json()
    assert snap["date"] == "2020-01-10"  # a Sunday: the Friday before
    # marked at that day's close: cash + shares x close is the NAV
    row = int(np.flatnonzero(close.dates == np.datetime64("2020-01-10"))[0])
    prices = dict(zip(close.symbols, close.close[row], strict=True))
    marked = snap["cash"] + sum(p["shares"] * prices[p["symbol"]] for p in snap["positions"])
    assert marked == pytest.approx(snap["nav"], rel=1e-12)
    assert sum(p["value"] for p in snap["positions"]) + snap["cash"] == pytest.approx(snap["nav"])
    fills = store.fills("equal_weight:5@2020-01-02", "2020-01-10", "2020-01-10")
    assert len(snap["trades"]) == len(fills)

    last = client.get("/positions/snapshot", params={"model": "equal_weight:5"}).json()
    assert last["date"] == "2020-01-31"
    for date, what in (("2019-12-31", "its first is 2020-01-03"), ("2020-02-03", "its last")):
        r = client.get("/positions/snapshot", params={"model": "random", "date": date})
        assert r.status_code == 404 and what in r.json()["error"]
    r = client.get("/positions/snapshot", params={"model": "random", "date": "2020-1-3x"})
    assert r.status_code == 422 and "query.date" in r.json()["error"]


def test_the_latest_run_of_a_model_answers_for_it(stored):
    client, store, _ = stored
    start_backtest(store, "random-later", "random", "sp500_20", "2020-02-03", "2020-02-14")
    assert client.get("/positions/snapshot", params={"model": "random"}).json()["run_id"] == (
        "random-later"
    )


def test_every_read_needs_the_token(stored):
    client, _, _ = stored
    for url in (
        "/runs",
        "/runs/random@2020-01-02/metrics",
        "/leaderboard",
        "/positions/history?model=random",
        "/positions/snapshot?model=random",
    ):
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
            r = client.get(url, headers=headers)
            assert r.status_code == 401 and TOKEN not in r.text, url
