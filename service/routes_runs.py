"""Reading runs: the stored runs, their metrics, positions over time and the leaderboard.

A ``model`` parameter is a run id, or an agent spec (``equal_weight:5``) meaning that
agent's latest run; the response names the run it read. An unknown run, model, symbol or
day is a 404 naming it; a date that is no date is a 422 naming the parameter. Numbers that do
not exist (a Sharpe ratio over one day) are ``null``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from marketarena.evaluation.report import EvaluationReport
from marketarena.evaluation.runner import AgentEvaluation
from marketarena.evaluation.saved_runs import persisted
from marketarena.evaluation.saved_runs.store import RunInfo, RunNotFound, RunStore
from marketarena.service.cache import cache_of
from marketarena.service.jobs import manager_of, not_found

router = APIRouter(tags=["runs"])

Model = Annotated[
    str, Query(min_length=1, description="a run id, or an agent spec (its latest run)")
]


def store_of(request: Request) -> RunStore:
    """The app's run store (opened at startup, with the job manager)."""
    return manager_of(request).store


def plain(value: Any) -> Any:
    """``value`` with numpy and pandas scalars as Python ones and NaN or infinite floats as
    None, so that it is valid JSON."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp | dt.date | np.datetime64):
        return str(value)[:10]
    return value


def run_of(store: RunStore, model: str) -> RunInfo:
    """The run named ``model``, else the latest run of the agent spec ``model``; 404
    naming it when there is neither."""
    try:
        return store.run(model)
    except RunNotFound:
        pass
    try:
        return store.runs_of(model)[-1]
    except RunNotFound as exc:
        raise HTTPException(404, f"no run or model {model!r}: {exc}") from None


def _run_row(info: RunInfo) -> dict[str, Any]:
    spec = info.spec
    return {
        "run_id": info.run_id,
        "model": spec.get("agent"),
        "status": info.status,
        "data": spec.get("data"),
        "start": spec.get("start"),
        "end": spec.get("end"),
        "last_date": info.last_date,
        "days": info.days,
        "seed": spec.get("seed"),
        "symbols": list(info.symbols),
    }


@router.get("/runs", response_model=list[dict[str, Any]])
def list_runs(request: Request) -> Response:
    """Every stored run: model, status, dates, completed days."""
    store = store_of(request)
    key = ("runs", tuple(sorted(store.versions().items())))
    return cache_of(request).response(key, lambda: [_run_row(r) for r in store.runs()])


@router.get("/runs/{run_id:path}/metrics")
def run_metrics(
    run_id: str,
    request: Request,
    compare: Annotated[
        str | None, Query(description="more run ids to compare with, comma-separated")
    ] = None,
) -> dict[str, Any]:
    """The full metrics of a run (and of the ``compare`` runs, in the same table): returns,
    risk, drawdowns with dates, turnover, costs, confidence intervals, diagnostics."""
    store = store_of(request)
    ids = [run_id, *[r.strip() for r in (compare or "").split(",") if r.strip()]]
    with not_found(RunNotFound):
        results = [persisted.load_result(store, r) for r in ids]
    empty = [r.settings["run_id"] for r in results if len(r.nav) < 2]
    if empty:
        raise HTTPException(404, f"run(s) {empty} have no completed day yet: no metrics")
    report = EvaluationReport(
        f"runs {', '.join(ids)}",
        [AgentEvaluation(r.settings["run_id"], [r]) for r in results],
    )
    rows = report.as_dict()["agents"]
    for row, result in zip(rows, results, strict=True):
        row["run_id"] = row.pop("agent")
        row["model"] = result.agent
        row["start"], row["end"] = str(result.dates[0]), str(result.dates[-1])
    return plain({"runs": ids, "metrics": rows})


@router.get("/leaderboard", response_model=dict[str, Any])
def get_leaderboard(
    request: Request,
    runs: Annotated[
        list[str], Query(description="run ids to rank (default: every finished run); repeat")
    ] = [],  # noqa: B006 (FastAPI copies query defaults)
) -> Response | dict[str, Any]:
    """Finished runs over the same dates and data, best final NAV first (``rows`` is empty
    while no run has finished; runs over different dates are a 400 listing them)."""
    store = store_of(request)
    versions = store.versions()
    with not_found(RunNotFound):
        for r in runs:
            if r not in versions:
                store.run(r)  # the 404, naming the runs there are
    ranked = runs or [r for r, (status, _) in versions.items() if status == "finished"]
    if not any(versions[r][0] == "finished" for r in ranked):
        return {"title": "leaderboard: no finished runs", "rows": []}

    def compute() -> dict[str, Any]:
        report = persisted.leaderboard(store, runs)
        rows = report.as_dict()["agents"]
        for rank, (row, evaluation) in enumerate(zip(rows, report.evaluations, strict=True), 1):
            row["rank"] = rank
            row["run_id"] = row.pop("agent")
            row["model"] = evaluation.results[0].agent
            row["final_nav"] = float(evaluation.results[0].nav[-1])
        return plain({"title": report.title, "rows": rows})

    # what the ranking reads: the chosen runs (default: the finished ones) as they are now
    key = ("leaderboard", tuple(runs), tuple((r, versions[r]) for r in ranked))
    return cache_of(request).response(key, compute)


def _check_range(start_date: dt.date | None, end_date: dt.date | None) -> None:
    if start_date and end_date and end_date < start_date:
        raise HTTPException(
            422, f"invalid request: end_date {end_date} is before start_date {start_date}"
        )


def _day_rows(
    days: pd.DataFrame, every: tuple[str, ...], symbols: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Each row of ``days`` (a run of ``every`` symbol) with the non-zero positions and
    weights among ``symbols``."""
    weights = days.attrs["weights"]
    out = []
    for i, row in enumerate(days.to_dict("records")):
        shares = {s: row[s] for s in every}
        out.append(
            {
                "date": row["date"],
                "nav": row["nav"],
                "cash": row["cash"],
                "turnover": row["turnover"],
                "costs": row["costs"],
                "positions": {s: shares[s] for s in symbols if shares[s]},
                "weights": {
                    **{s: weights[i][every.index(s)] for s in symbols if shares[s]},
                    "CASH": weights[i][-1],
                },
            }
        )
    return out


@router.get("/positions/history", response_model=dict[str, Any])
def positions_history(
    request: Request,
    model: Model,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
    symbol: Annotated[str | None, Query(description="one symbol's positions only")] = None,
) -> Response:
    """A run's timeline from ``start_date`` to ``end_date`` (default: all of it): each
    completed day's NAV, cash, positions and weights, every trade, the holding periods per
    symbol and the turnover."""
    _check_range(start_date, end_date)
    store = store_of(request)
    info = run_of(store, model)
    if symbol is not None and symbol not in info.symbols:
        raise HTTPException(
            404, f"run {info.run_id!r} trades no symbol {symbol!r}; symbols: {list(info.symbols)}"
        )
    start = start_date.isoformat() if start_date else None
    end = end_date.isoformat() if end_date else None
    key = ("positions/history", model, info.run_id, info.status, info.days, start, end, symbol)
    return cache_of(request).response(key, lambda: _history(store, model, info, start, end, symbol))


def _history(
    store: RunStore,
    model: str,
    info: RunInfo,
    start: str | None,
    end: str | None,
    symbol: str | None,
) -> dict[str, Any]:
    positions = persisted.load_positions(store, info.run_id, start, end, symbol)
    if positions.days.empty:
        raise HTTPException(
            404,
            f"run {info.run_id!r} has no completed day from {start or 'its start'} to "
            f"{end or 'its end'} (its last completed day: {info.last_date or 'none'})",
        )
    periods = positions.holding_periods()
    return plain(
        {
            "model": model,
            "run_id": info.run_id,
            "start_date": positions.days["date"].iloc[0],
            "end_date": positions.last_date,
            "days": _day_rows(positions.days, info.symbols, positions.symbols),
            "trades": positions.fills.to_dict("records"),
            "holding_periods": periods.to_dict("records"),
            "mean_holding_period": persisted.mean_holding_period(periods),
            "turnover": persisted.turnover_summary(positions.days),
        }
    )


@router.get("/positions/snapshot")
def positions_snapshot(
    request: Request,
    model: Model,
    date: Annotated[
        dt.date | None,
        Query(
            description="the holdings after this day's close (the last completed day on or "
            "before it; default: the run's last completed day)"
        ),
    ] = None,
) -> dict[str, Any]:
    """A run's holdings after one day: NAV, cash, each position's shares, weight and value,
    and that day's trades."""
    store = store_of(request)
    info = run_of(store, model)
    if info.last_date is None:
        raise HTTPException(404, f"run {info.run_id!r} has no completed day yet")
    day = date.isoformat() if date else info.last_date
    if day > info.last_date:
        raise HTTPException(
            404,
            f"run {info.run_id!r} has no completed day on {day}: its last is {info.last_date}",
        )
    days = store.days(info.run_id, None, day)
    if days.empty:
        first = store.days(info.run_id)["date"].iloc[0]
        raise HTTPException(
            404, f"run {info.run_id!r} has no completed day on {day}: its first is {first}"
        )
    last = days.iloc[[-1]].reset_index(drop=True)
    last.attrs["weights"] = days.attrs["weights"][-1:]
    row = _day_rows(last, info.symbols, info.symbols)[0]
    nav = row["nav"]
    weights = row["weights"]
    return plain(
        {
            "model": model,
            "run_id": info.run_id,
            "date": row["date"],
            "nav": nav,
            "cash": row["cash"],
            "cash_weight": weights["CASH"],
            "positions": [
                {"symbol": s, "shares": q, "weight": weights[s], "value": weights[s] * nav}
                for s, q in row["positions"].items()
            ],
            "trades": store.fills(info.run_id, row["date"], row["date"]).to_dict("records"),
        }
    )
