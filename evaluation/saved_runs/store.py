"""Persisted runs: every completed day of a backtest in SQLite, as it happens.

One file (``runs.sqlite`` by default) holds many runs. Per run: its spec (agent, data source,
dates, rules, seed, ...); per completed day, in one transaction, the day's NAV, cash, shares,
weights, turnover and costs, its fills, and a checkpoint (the env's and the agent's state
after the day), so a run cut short by a crash or Ctrl-C loses nothing it had finished and
resumes from the last completed date. Position history — fills and daily holdings by run,
date range and symbol — is queried from here too.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marketarena.envs.errors import ConfigError, DataError, MissingFileError, UnknownNameError

DEFAULT_STORE = "runs.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, spec TEXT NOT NULL, symbols TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS days (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, date TEXT NOT NULL, nav REAL NOT NULL,
    cash REAL NOT NULL, turnover REAL NOT NULL, costs REAL NOT NULL, shares TEXT NOT NULL,
    weights TEXT NOT NULL, PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS fills (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, date TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, shares REAL NOT NULL, price REAL NOT NULL, cost REAL NOT NULL);
CREATE INDEX IF NOT EXISTS fills_by_run ON fills (run_id, date);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT PRIMARY KEY, step INTEGER NOT NULL, env_state BLOB NOT NULL,
    agent_state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS diagnostics (run_id TEXT PRIMARY KEY, diagnostics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS interventions (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, date TEXT NOT NULL, rule TEXT NOT NULL,
    amount REAL NOT NULL);
CREATE INDEX IF NOT EXISTS interventions_by_run ON interventions (run_id, step);
"""


class RunNotFound(UnknownNameError):
    """No run of that name (or agent) in the store; the message lists the ones there are."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    spec: dict[str, Any]
    symbols: tuple[str, ...]
    status: str  # "running", "finished"
    last_date: str | None
    days: int


class RunStore:
    """A SQLite file of runs (thread-safe; one connection).

    ``create=True`` makes the file (and its folder) when there is none, as a new run needs;
    ``create=False`` opens one that exists and holds runs, and creates nothing: what reading
    runs (positions, a leaderboard) and resuming or continuing one use, so that a mistyped
    ``--store`` is an error rather than a new empty file.
    """

    def __init__(self, path: str | Path = DEFAULT_STORE, *, create: bool = True) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
            return
        if not self.path.is_file():
            raise MissingFileError(
                f"no runs database {self.path}: a new run creates it (marketarena backtest "
                "--agent ...), or give --store the file that holds your runs"
            )
        # mode=rw: read and write an existing file, never create one
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            found = self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:  # e.g. "file is not a database"
            self._db.close()
            raise DataError(f"{self.path} is not a runs database: {exc}") from None
        if found is None:
            self._db.close()
            raise DataError(f"{self.path} is not a runs database: it has no runs table")
        self._db.executescript(SCHEMA)  # tables added since the file was made (no data moves)

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- runs
    def require_new(self, run_id: str) -> None:
        """Raise :class:`ConfigError` when ``run_id`` is taken (before any work on a new run;
        :meth:`create_run` checks again)."""
        with self._lock:
            self._require_new(run_id)

    def _require_new(self, run_id: str) -> None:
        exists = self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if exists:
            raise ConfigError(
                f"run {run_id!r} already exists in {self.path}: --resume it, --continue "
                "it, or choose another name"
            )

    def create_run(self, run_id: str, spec: Mapping[str, Any], symbols: Sequence[str]) -> None:
        with self._lock:
            self._require_new(run_id)
            now = time.time()
            self._db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, json.dumps(dict(spec)), json.dumps(list(symbols)), now, now),
            )

    def run(self, run_id: str) -> RunInfo:
        with self._lock:
            row = self._db.execute(
                "SELECT spec, symbols, status FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                known = [r[0] for r in self._db.execute("SELECT run_id FROM runs")]
                raise RunNotFound(f"no run {run_id!r} in {self.path}; runs: {known}")
            last = self._db.execute(
                "SELECT MAX(date), COUNT(*) FROM days WHERE run_id = ?", (run_id,)
            ).fetchone()
        return RunInfo(
            run_id, json.loads(row[0]), tuple(json.loads(row[1])), row[2], last[0], int(last[1])
        )

    def runs(self) -> list[RunInfo]:
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT run_id FROM runs ORDER BY created")]
        return [self.run(i) for i in ids]

    def runs_of(self, agent: str) -> list[RunInfo]:
        """The runs of one agent spec (e.g. ``equal_weight:21``), oldest first."""
        found = [r for r in self.runs() if r.spec.get("agent") == agent]
        if not found:
            agents = sorted({str(r.spec.get("agent")) for r in self.runs()})
            raise RunNotFound(f"no run of agent {agent!r} in {self.path}; agents: {agents}")
        return found

    def update_spec(self, run_id: str, spec: Mapping[str, Any], status: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET spec = ?, status = ?, updated = ? WHERE run_id = ?",
                (json.dumps(dict(spec)), status, time.time(), run_id),
            )

    def finish(self, run_id: str, diagnostics: Mapping[str, Any]) -> None:
        """Mark a run finished, with its agent's diagnostics over all its days (an LLM's
        outcomes, tokens, latency and decisions)."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE runs SET status = 'finished', updated = ? WHERE run_id = ?",
                (time.time(), run_id),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO diagnostics VALUES (?, ?)",
                (run_id, json.dumps(dict(diagnostics), default=str)),
            )

    def diagnostics(self, run_id: str) -> dict[str, Any]:
        """The agent's diagnostics stored when the run last finished (``{}`` before)."""
        with self._lock:
            row = self._db.execute(
                "SELECT diagnostics FROM diagnostics WHERE run_id = ?", (run_id,)
            ).fetchone()
        return json.loads(row[0]) if row else {}

    # ---------------------------------------------------------------- days
    def record_day(
        self,
        run_id: str,
        step: int,
        day: Mapping[str, Any],
        fills: Sequence[tuple[str, float, float, float]],
        env_state: Any,
        agent_state: Any,
        interventions: Sequence[tuple[str, str, float]] = (),
    ) -> None:
        """One completed day, its fills, the risk layer's ``(decision date, rule, amount)``
        interventions and the checkpoint after it: all or nothing."""
        date = day["date"]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO days VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        step,
                        date,
                        day["nav"],
                        day["cash"],
                        day["turnover"],
                        day["costs"],
                        json.dumps(list(map(float, day["shares"]))),
                        json.dumps(list(map(float, day["weights"]))),
                    ),
                )
                self._db.execute("DELETE FROM fills WHERE run_id = ? AND step = ?", (run_id, step))
                self._db.executemany(
                    "INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (run_id, step, date, sym, "buy" if q > 0 else "sell", abs(q), price, cost)
                        for sym, q, price, cost in fills
                    ],
                )
                self._db.execute(
                    "DELETE FROM interventions WHERE run_id = ? AND step = ?", (run_id, step)
                )
                self._db.executemany(
                    "INSERT INTO interventions VALUES (?, ?, ?, ?, ?)",
                    [(run_id, step, d, rule, float(a)) for d, rule, a in interventions],
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                    (run_id, step, pickle.dumps(env_state), pickle.dumps(agent_state)),
                )
                self._db.execute(
                    "UPDATE runs SET updated = ? WHERE run_id = ?", (time.time(), run_id)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def checkpoint(self, run_id: str) -> tuple[int, Any, Any] | None:
        """``(step, env_state, agent_state)`` after the last completed day, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT step, env_state, agent_state FROM checkpoints WHERE run_id = ?", (run_id,)
            ).fetchone()
        if row is None:
            return None
        # our own file, written by record_day
        return int(row[0]), pickle.loads(row[1]), pickle.loads(row[2])

    # ------------------------------------------------------------- queries
    def days(self, run_id: str, start: str | None = None, end: str | None = None) -> pd.DataFrame:
        """Daily rows (date, nav, cash, turnover, costs, one column per symbol's shares)."""
        info = self.run(run_id)
        query, args = _range("SELECT * FROM days WHERE run_id = ?", run_id, start, end)
        with self._lock:
            frame = pd.read_sql_query(query + " ORDER BY step", self._db, params=args)
        n = len(info.symbols)
        shares = np.array([json.loads(s) for s in frame["shares"]]).reshape(len(frame), n)
        held = pd.DataFrame(shares, columns=list(info.symbols), index=frame.index)
        out = pd.concat([frame[["step", "date", "nav", "cash", "turnover", "costs"]], held], axis=1)
        weights = np.array([json.loads(w) for w in frame["weights"]]).reshape(len(frame), n + 1)
        out.attrs["weights"] = weights
        return out

    def fills(
        self,
        run_id: str,
        start: str | None = None,
        end: str | None = None,
        symbol: str | None = None,
    ) -> pd.DataFrame:
        self.run(run_id)
        query, args = _range(
            "SELECT date, symbol, side, shares, price, cost FROM fills WHERE run_id = ?",
            run_id,
            start,
            end,
        )
        if symbol:
            query += " AND symbol = ?"
            args.append(symbol)
        with self._lock:
            return pd.read_sql_query(query + " ORDER BY step, symbol", self._db, params=args)

    def interventions(self, run_id: str) -> list[dict[str, Any]]:
        """The risk layer's interventions, ``{"date", "rule", "amount"}`` in step order."""
        self.run(run_id)
        with self._lock:
            rows = self._db.execute(
                "SELECT date, rule, amount FROM interventions WHERE run_id = ? "
                "ORDER BY step, rowid",
                (run_id,),
            ).fetchall()
        return [{"date": d, "rule": rule, "amount": amount} for d, rule, amount in rows]


def _range(query: str, run_id: str, start: str | None, end: str | None) -> tuple[str, list]:
    args: list[Any] = [run_id]
    if start:
        query += " AND date >= ?"
        args.append(start)
    if end:
        query += " AND date <= ?"
        args.append(end)
    return query, args
