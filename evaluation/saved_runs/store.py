"""Persisted runs: every completed day of a backtest in a database, as it happens.

One database holds many runs: a SQLite file (``runs.sqlite`` by default, embedded) or a
PostgreSQL database (a ``postgresql://`` URL), through one implementation on SQLAlchemy Core,
with its schema kept by Alembic migrations that run when a store is opened. Per run: its spec
(agent, data source, dates, rules, seed, ...); per completed day, in one transaction, the
day's NAV, cash, shares, weights, turnover and costs, its fills, and a checkpoint (the env's
and the agent's state after the day, in the codec's JSON: reading a store never runs code
from it), so a run cut short by a crash or Ctrl-C loses nothing it had finished and resumes
from the last completed date. Position history — fills and daily holdings by run, date range
and symbol — is queried from here too.

The service's jobs (simulations run by worker processes) and its webhook deliveries are kept
here as well. Several processes may write one store at once (the API server and its
workers): SQLite runs in WAL mode with a busy timeout and takes its write lock when a write
transaction begins; PostgreSQL uses a connection pool; every transaction is short.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from marketarena.envs.errors import ConfigError, DataError, MissingFileError, UnknownNameError
from marketarena.evaluation.saved_runs import codec

DEFAULT_STORE = "runs.sqlite"
MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0002"  # the newest migration in MIGRATIONS/versions
BASELINE = "0001"  # the schema of stores made before migrations (marketarena 0.1, sqlite3)
BUSY_TIMEOUT_S = 30.0  # how long a SQLite writer waits for another one's lock
# any fixed number: the PostgreSQL advisory lock that serialises migrations of one database
_MIGRATION_LOCK = 0x6D61726B6574

JOB_KINDS = ("simulate", "resume", "continue")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
DELIVERY_STATUSES = ("delivered", "dead")
JOB_FIELDS = ("status", "run_ids", "progress", "error", "started", "finished", "worker_pid")

_DOUBLE = sa.Float(precision=53)
_meta = sa.MetaData()
runs_table = sa.Table(
    "runs",
    _meta,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("symbols", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created", _DOUBLE, nullable=False),
    sa.Column("updated", _DOUBLE, nullable=False),
)
days_table = sa.Table(
    "days",
    _meta,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("date", sa.Text, nullable=False),
    sa.Column("nav", _DOUBLE, nullable=False),
    sa.Column("cash", _DOUBLE, nullable=False),
    sa.Column("turnover", _DOUBLE, nullable=False),
    sa.Column("costs", _DOUBLE, nullable=False),
    sa.Column("shares", sa.Text, nullable=False),
    sa.Column("weights", sa.Text, nullable=False),
)
fills_table = sa.Table(
    "fills",
    _meta,
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("date", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("shares", _DOUBLE, nullable=False),
    sa.Column("price", _DOUBLE, nullable=False),
    sa.Column("cost", _DOUBLE, nullable=False),
)
checkpoints_table = sa.Table(
    "checkpoints",
    _meta,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("env_state", sa.LargeBinary, nullable=False),
    sa.Column("agent_state", sa.LargeBinary, nullable=False),
    sa.Column("format", sa.Text, nullable=False),
)
diagnostics_table = sa.Table(
    "diagnostics",
    _meta,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("diagnostics", sa.Text, nullable=False),
)
interventions_table = sa.Table(
    "interventions",
    _meta,
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("date", sa.Text, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("amount", _DOUBLE, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
)
jobs_table = sa.Table(
    "jobs",
    _meta,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("run_ids", sa.Text, nullable=False),
    sa.Column("progress", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("created", _DOUBLE, nullable=False),
    sa.Column("started", _DOUBLE),
    sa.Column("finished", _DOUBLE),
    sa.Column("worker_pid", sa.Integer),
)
deliveries_table = sa.Table(
    "webhook_deliveries",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created", _DOUBLE, nullable=False),
    sa.Column("updated", _DOUBLE, nullable=False),
)


class RunNotFound(UnknownNameError):
    """No run of that name (or agent) in the store; the message lists the ones there are."""


class JobNotFound(UnknownNameError):
    """No job of that id in the store."""


class PickledCheckpointError(DataError):
    """A checkpoint an older marketarena wrote as a pickle: it is never unpickled on reading
    (a pickle can run code); ``marketarena runs upgrade STORE --trust`` converts it."""


@dataclass(frozen=True)
class RunInfo:
    """A stored run: its spec and symbols, ``running`` or ``finished``, and its last
    completed date and number of completed days (``None`` and 0 before the first)."""

    run_id: str
    spec: dict[str, Any]
    symbols: tuple[str, ...]
    status: str  # "running", "finished"
    last_date: str | None
    days: int


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names a database by URL (``postgresql://...``) rather than a
    SQLite file's path."""
    return isinstance(location, str) and "://" in location


class RunStore:
    """A database of runs and jobs (thread-safe; a pool of connections).

    ``location``: a SQLite file's path (default ``runs.sqlite``) or a database URL
    (``postgresql://user:password@host:port/db``; ``sqlite:///path`` works too).
    ``create=True`` makes the store when there is none (a SQLite file and its folder; the
    tables in an existing PostgreSQL database), as a new run needs; ``create=False`` opens one
    that exists and holds runs, and creates nothing: what reading runs (positions, a
    leaderboard) and resuming or continuing one use, so that a mistyped ``--store`` is an
    error rather than a new empty store. Either way the schema is migrated to the newest
    version on opening (a store made before migrations is recognised and upgraded).

    :attr:`path` names the store in messages (the file, or the URL without its password);
    :attr:`url` is the SQLAlchemy URL without the password, :attr:`connect_url` with it. A
    store's connections are its process's own: another process (a worker) opens its own
    ``RunStore(store.connect_url)``; every method is one short transaction.
    """

    def __init__(self, location: str | Path = DEFAULT_STORE, *, create: bool = True) -> None:
        if is_url(location):
            try:
                url = sa.make_url(str(location))
            except sa.exc.ArgumentError:
                url = None
            backend = url.get_backend_name() if url is not None else None
            if (
                url is None
                or backend not in ("sqlite", "postgresql")
                or (backend == "sqlite" and not url.database)
            ):
                shown = url.render_as_string(hide_password=True) if url else "that URL"
                raise ConfigError(
                    f"cannot open the runs database {shown}: give a SQLite file's path, "
                    "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
                )
            if url.database and backend == "sqlite":
                self._open_sqlite(Path(url.database), create)
            else:
                self._open_server(url, create)
        else:
            self._open_sqlite(Path(location), create)

    # ------------------------------------------------------------ opening
    def _open_sqlite(self, path: Path, create: bool) -> None:
        self.path: Path | str = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise MissingFileError(
                f"no runs database {path}: a new run creates it (marketarena backtest "
                "--agent ...), or give --store the file that holds your runs"
            )
        self._url = sa.URL.create("sqlite", database=str(path))
        self._engine = sa.create_engine(
            self._url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
        )
        sa.event.listen(self._engine, "connect", _sqlite_connect)
        sa.event.listen(self._engine, "begin", _sqlite_begin)
        self._migrate(create)

    def _open_server(self, url: sa.URL, create: bool) -> None:
        self._url = url
        self.path = url.render_as_string(hide_password=True)
        try:
            self._engine = sa.create_engine(_with_driver(url), pool_pre_ping=True)
        except (ImportError, sa.exc.ArgumentError) as exc:
            hint = " (pip install 'marketarena[postgres]')" if isinstance(exc, ImportError) else ""
            raise ConfigError(f"cannot open the runs database {self.path}: {exc}{hint}") from None
        self._migrate(create)

    def _migrate(self, create: bool) -> None:
        """Bring the schema to :data:`HEAD` (creating it where ``create``), in one write
        transaction that also serialises stores opened at once by several processes; a
        database that cannot be opened, or is no runs database, is a :class:`DataError`."""
        try:
            self._upgrade(create)
        except BaseException as exc:
            self._engine.dispose()
            if not isinstance(exc, sa.exc.DBAPIError):
                raise
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if isinstance(exc, sa.exc.OperationalError) or not isinstance(self.path, Path):
                raise DataError(f"cannot open the runs database {self.path}: {reason}") from None
            raise DataError(f"{self.path} is not a runs database: {reason}") from None

    def _upgrade(self, create: bool) -> None:
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            version, has_runs = _schema_version(conn)
            if version == HEAD:
                return
            if version is None and not has_runs and not create:
                raise DataError(f"{self.path} is not a runs database: it has no runs table")
            from alembic import command
            from alembic.config import Config

            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            if version is None and has_runs:  # made before migrations: the 0.1 schema
                command.stamp(config, BASELINE)
            command.upgrade(config, HEAD)

    @property
    def url(self) -> str:
        """The database URL without its password (safe to print and log)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def connect_url(self) -> str:
        """The database URL with its password, to open this store in another process (a
        worker): a secret where there is a password, never to be printed, logged or stored."""
        return self._url.render_as_string(hide_password=False)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back on any error."""
        with self._engine.connect() as conn:
            conn = conn.execution_options(marketarena_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    # ---------------------------------------------------------------- runs
    def require_new(self, run_id: str) -> None:
        """Raise :class:`ConfigError` when ``run_id`` is taken (before any work on a new run;
        :meth:`create_run` checks again)."""
        with self._read() as conn:
            self._require_new(conn, run_id)

    def _require_new(self, conn: Connection, run_id: str) -> None:
        t = runs_table
        if conn.execute(sa.select(t.c.run_id).where(t.c.run_id == run_id)).first():
            raise ConfigError(
                f"run {run_id!r} already exists in {self.path}: --resume it, --continue "
                "it, or choose another name"
            )

    def create_run(self, run_id: str, spec: Mapping[str, Any], symbols: Sequence[str]) -> None:
        now = time.time()
        with self._write() as conn:
            self._require_new(conn, run_id)
            conn.execute(
                runs_table.insert().values(
                    run_id=run_id,
                    spec=json.dumps(dict(spec)),
                    symbols=json.dumps(list(symbols)),
                    status="running",
                    created=now,
                    updated=now,
                )
            )

    def run(self, run_id: str) -> RunInfo:
        t, d = runs_table, days_table
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.c.spec, t.c.symbols, t.c.status).where(t.c.run_id == run_id)
            ).first()
            if row is None:
                known = list(conn.scalars(sa.select(t.c.run_id).order_by(t.c.created)))
                raise RunNotFound(f"no run {run_id!r} in {self.path}; runs: {known}")
            last = conn.execute(
                sa.select(sa.func.max(d.c.date), sa.func.count()).where(d.c.run_id == run_id)
            ).one()
        return RunInfo(
            run_id, json.loads(row[0]), tuple(json.loads(row[1])), row[2], last[0], int(last[1])
        )

    def versions(self) -> dict[str, tuple[str, float]]:
        """Each run's status and last update time (set by every write to the run: a new day,
        its end, a new spec), in one query over the runs table alone: what the service keys
        its cached answers on, so that it re-reads a run only when it changed."""
        t = runs_table
        with self._read() as conn:
            rows = conn.execute(sa.select(t.c.run_id, t.c.status, t.c.updated)).all()
        return {str(r[0]): (str(r[1]), float(r[2])) for r in rows}

    def runs(self) -> list[RunInfo]:
        with self._read() as conn:
            ids = list(conn.scalars(sa.select(runs_table.c.run_id).order_by("created")))
        return [self.run(i) for i in ids]

    def runs_of(self, agent: str) -> list[RunInfo]:
        """The runs of one agent spec (e.g. ``equal_weight:21``), oldest first."""
        found = [r for r in self.runs() if r.spec.get("agent") == agent]
        if not found:
            agents = sorted({str(r.spec.get("agent")) for r in self.runs()})
            raise RunNotFound(f"no run of agent {agent!r} in {self.path}; agents: {agents}")
        return found

    def update_spec(self, run_id: str, spec: Mapping[str, Any], status: str) -> None:
        t = runs_table
        with self._write() as conn:
            conn.execute(
                t.update()
                .where(t.c.run_id == run_id)
                .values(spec=json.dumps(dict(spec)), status=status, updated=time.time())
            )

    def finish(self, run_id: str, diagnostics: Mapping[str, Any]) -> None:
        """Mark a run finished, with its agent's diagnostics over all its days (an LLM's
        outcomes, tokens, latency and decisions)."""
        t, g = runs_table, diagnostics_table
        with self._write() as conn:
            finished = {"status": "finished", "updated": time.time()}
            conn.execute(t.update().where(t.c.run_id == run_id).values(**finished))
            conn.execute(g.delete().where(g.c.run_id == run_id))
            conn.execute(
                g.insert().values(
                    run_id=run_id, diagnostics=json.dumps(dict(diagnostics), default=str)
                )
            )

    def diagnostics(self, run_id: str) -> dict[str, Any]:
        """The agent's diagnostics stored when the run last finished (``{}`` before)."""
        g = diagnostics_table
        with self._read() as conn:
            found = conn.scalar(sa.select(g.c.diagnostics).where(g.c.run_id == run_id))
        return json.loads(found) if found else {}

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
        interventions and the checkpoint after it: all or nothing.

        The states are encoded before the transaction begins: a state the codec cannot
        write is an error (naming the type and where it was) that records nothing.
        """
        env_blob = codec.dumps(env_state, "env_state")
        agent_blob = codec.dumps(agent_state, "agent_state")
        date = day["date"]
        d, f, i, c = days_table, fills_table, interventions_table, checkpoints_table
        with self._write() as conn:
            conn.execute(d.delete().where(d.c.run_id == run_id, d.c.step == step))
            conn.execute(
                d.insert().values(
                    run_id=run_id,
                    step=step,
                    date=date,
                    nav=float(day["nav"]),
                    cash=float(day["cash"]),
                    turnover=float(day["turnover"]),
                    costs=float(day["costs"]),
                    shares=json.dumps(list(map(float, day["shares"]))),
                    weights=json.dumps(list(map(float, day["weights"]))),
                )
            )
            conn.execute(f.delete().where(f.c.run_id == run_id, f.c.step == step))
            if fills:
                conn.execute(
                    f.insert(),
                    [
                        {
                            "run_id": run_id,
                            "step": step,
                            "date": date,
                            "symbol": sym,
                            "side": "buy" if q > 0 else "sell",
                            "shares": float(abs(q)),
                            "price": float(price),
                            "cost": float(cost),
                        }
                        for sym, q, price, cost in fills
                    ],
                )
            conn.execute(i.delete().where(i.c.run_id == run_id, i.c.step == step))
            if interventions:
                conn.execute(
                    i.insert(),
                    [
                        {
                            "run_id": run_id,
                            "step": step,
                            "date": when,
                            "rule": rule,
                            "amount": float(a),
                            "seq": n,
                        }
                        for n, (when, rule, a) in enumerate(interventions)
                    ],
                )
            conn.execute(c.delete().where(c.c.run_id == run_id))
            conn.execute(
                c.insert().values(
                    run_id=run_id,
                    step=step,
                    env_state=env_blob,
                    agent_state=agent_blob,
                    format=codec.FORMAT,
                )
            )
            conn.execute(
                runs_table.update().where(runs_table.c.run_id == run_id).values(updated=time.time())
            )

    def checkpoint(self, run_id: str) -> tuple[int, Any, Any] | None:
        """``(step, env_state, agent_state)`` after the last completed day, or None.

        Raises :class:`PickledCheckpointError` for a checkpoint an older marketarena pickled
        (nothing is unpickled), and the codec's error for a state naming a class outside
        its allowlist (nothing is called).
        """
        c = checkpoints_table
        with self._read() as conn:
            row = conn.execute(
                sa.select(c.c.step, c.c.env_state, c.c.agent_state, c.c.format).where(
                    c.c.run_id == run_id
                )
            ).first()
        if row is None:
            return None
        step, env_blob, agent_blob, form = row
        if form != codec.FORMAT:
            raise PickledCheckpointError(
                f"run {run_id}'s checkpoint was written by an older marketarena as a "
                f"{form}; `marketarena runs upgrade {self.path} --trust` converts it (only "
                "for a store you trust: a pickle can run code)"
            )
        return (
            int(step),
            codec.loads(bytes(env_blob), f"run {run_id}'s env_state"),
            codec.loads(bytes(agent_blob), f"run {run_id}'s agent_state"),
        )

    def pickled_checkpoints(self) -> list[str]:
        """The runs whose checkpoint an older marketarena pickled (none read here)."""
        c = checkpoints_table
        with self._read() as conn:
            found = conn.scalars(
                sa.select(c.c.run_id).where(c.c.format != codec.FORMAT).order_by(c.c.run_id)
            )
            return list(found)

    def upgrade_checkpoints(self, *, trust: bool) -> list[str]:
        """Rewrite every pickled checkpoint in the codec's format; returns the runs converted.

        This unpickles each one, which runs whatever code the pickle names: only for a store
        you trust, said with ``trust=True`` (else :class:`ConfigError`, and nothing is read).
        Each run is converted in its own transaction; a state the codec cannot write is an
        error naming it, leaving that run's pickle (and the runs after it) as they were.
        """
        if not trust:
            raise ConfigError(
                f"upgrading {self.path} unpickles its checkpoints, which can run code: only for "
                "a store you trust, said with --trust"
            )
        import pickle

        c = checkpoints_table
        converted = []
        for run_id in self.pickled_checkpoints():
            with self._write() as conn:
                env_blob, agent_blob = conn.execute(
                    sa.select(c.c.env_state, c.c.agent_state).where(
                        c.c.run_id == run_id, c.c.format == "pickle"
                    )
                ).one()
                # the user said they trust this store: its pickles may run code
                env_state = pickle.loads(env_blob)
                agent_state = pickle.loads(agent_blob)
                conn.execute(
                    c.update()
                    .where(c.c.run_id == run_id)
                    .values(
                        env_state=codec.dumps(env_state, f"run {run_id}'s env_state"),
                        agent_state=codec.dumps(agent_state, f"run {run_id}'s agent_state"),
                        format=codec.FORMAT,
                    )
                )
            converted.append(run_id)
        return converted

    # ------------------------------------------------------------- queries
    def days(self, run_id: str, start: str | None = None, end: str | None = None) -> pd.DataFrame:
        """Daily rows (date, nav, cash, turnover, costs, one column per symbol's shares)."""
        info = self.run(run_id)
        d = days_table
        query = _dated(sa.select(d).where(d.c.run_id == run_id), d.c.date, start, end)
        with self._read() as conn:
            rows = conn.execute(query.order_by(d.c.step)).all()
        frame = pd.DataFrame(rows, columns=list(d.c.keys()))
        if not rows:  # the dtypes a query with rows has
            frame = frame.astype({"step": "int64", **dict.fromkeys(_FLOATS, "float64")})
        n = len(info.symbols)
        shares = np.array([json.loads(s) for s in frame["shares"]]).reshape(len(frame), n)
        held = pd.DataFrame(shares, columns=list(info.symbols), index=frame.index)
        out = pd.concat([frame[["step", "date", *_FLOATS]], held], axis=1)
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
        """Fills (date, symbol, side, shares, price, cost) in step and symbol order."""
        self.run(run_id)
        f = fills_table
        columns = [f.c.date, f.c.symbol, f.c.side, f.c.shares, f.c.price, f.c.cost]
        query = _dated(sa.select(*columns).where(f.c.run_id == run_id), f.c.date, start, end)
        if symbol:
            query = query.where(f.c.symbol == symbol)
        with self._read() as conn:
            rows = conn.execute(query.order_by(f.c.step, f.c.symbol)).all()
        frame = pd.DataFrame(rows, columns=[c.name for c in columns])
        if not rows:
            frame = frame.astype(dict.fromkeys(("shares", "price", "cost"), "float64"))
        return frame

    def interventions(self, run_id: str) -> list[dict[str, Any]]:
        """The risk layer's interventions, ``{"date", "rule", "amount"}`` in step order."""
        self.run(run_id)
        i = interventions_table
        with self._read() as conn:
            rows = conn.execute(
                sa.select(i.c.date, i.c.rule, i.c.amount)
                .where(i.c.run_id == run_id)
                .order_by(i.c.step, i.c.seq)
            ).all()
        return [{"date": d, "rule": rule, "amount": amount} for d, rule, amount in rows]

    # ---------------------------------------------------------------- jobs
    def create_job(self, job_id: str, kind: str, spec: Mapping[str, Any]) -> None:
        """A new job, ``queued``, with no runs and empty progress; :class:`ConfigError` for a
        kind outside :data:`JOB_KINDS` or an id that is taken."""
        if kind not in JOB_KINDS:
            raise ConfigError(f"job kind must be one of {list(JOB_KINDS)}, got {kind!r}")
        with self._write() as conn:
            t = jobs_table
            if conn.execute(sa.select(t.c.id).where(t.c.id == job_id)).first():
                raise ConfigError(f"job {job_id!r} already exists in {self.path}")
            conn.execute(
                t.insert().values(
                    id=job_id,
                    kind=kind,
                    spec=json.dumps(dict(spec)),
                    status="queued",
                    run_ids="[]",
                    progress="{}",
                    created=time.time(),
                )
            )

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set some of a job's :data:`JOB_FIELDS` (``run_ids`` a list, ``progress`` a dict,
        both stored as JSON; ``status`` one of :data:`JOB_STATUSES`); :class:`JobNotFound`
        for an unknown job, :class:`ConfigError` for another field or status."""
        unknown = sorted(set(fields) - set(JOB_FIELDS))
        if unknown:
            raise ConfigError(f"a job has no field(s) {unknown}; fields: {list(JOB_FIELDS)}")
        if "status" in fields and fields["status"] not in JOB_STATUSES:
            raise ConfigError(
                f"job status must be one of {list(JOB_STATUSES)}, got {fields['status']!r}"
            )
        values = dict(fields)
        for name in ("run_ids", "progress"):
            if name in values:
                values[name] = json.dumps(values[name])
        t = jobs_table
        with self._write() as conn:
            if conn.execute(sa.select(t.c.id).where(t.c.id == job_id)).first() is None:
                raise JobNotFound(f"no job {job_id!r} in {self.path}")
            if values:
                conn.execute(t.update().where(t.c.id == job_id).values(**values))

    def job(self, job_id: str) -> dict[str, Any]:
        """One job as a dict of its columns (``spec``, ``run_ids`` and ``progress`` decoded);
        :class:`JobNotFound` when there is none."""
        t = jobs_table
        with self._read() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"no job {job_id!r} in {self.path}")
        return _job_dict(row._mapping)

    def jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every job (or those with ``status``), oldest first, as :meth:`job` gives them."""
        t = jobs_table
        query = sa.select(t).order_by(t.c.created, t.c.id)
        if status is not None:
            query = query.where(t.c.status == status)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_job_dict(r._mapping) for r in rows]

    # ---------------------------------------------------------- webhooks
    def record_delivery(
        self,
        url: str,
        event: str,
        payload: str,
        attempts: int,
        status: str,
        last_error: str | None,
    ) -> int:
        """A webhook delivery's outcome (``status``: ``delivered`` or ``dead``, the
        dead-letter record); returns its id."""
        if status not in DELIVERY_STATUSES:
            raise ConfigError(
                f"delivery status must be one of {list(DELIVERY_STATUSES)}, got {status!r}"
            )
        now = time.time()
        t = deliveries_table
        with self._write() as conn:
            result = conn.execute(
                t.insert()
                .values(
                    url=url,
                    event=event,
                    payload=payload,
                    attempts=attempts,
                    status=status,
                    last_error=last_error,
                    created=now,
                    updated=now,
                )
                .returning(t.c.id)
            )
            return int(result.scalar_one())

    def deliveries(self, status: str | None = None) -> list[dict[str, Any]]:
        """Recorded webhook deliveries (or those with ``status``), oldest first, as dicts."""
        t = deliveries_table
        query = sa.select(t).order_by(t.c.id)
        if status is not None:
            query = query.where(t.c.status == status)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(query).all()]


_FLOATS = ("nav", "cash", "turnover", "costs")


def _job_dict(row: Mapping[Any, Any]) -> dict[str, Any]:
    job = dict(row)
    for name in ("spec", "run_ids", "progress"):
        job[name] = json.loads(job[name])
    return job


def _dated(query: sa.Select, column: sa.ColumnElement, start: str | None, end: str | None):
    if start:
        query = query.where(column >= start)
    if end:
        query = query.where(column <= end)
    return query


def _schema_version(conn: Connection) -> tuple[str | None, bool]:
    """``(alembic revision or None, whether a runs table exists)``."""
    tables = set(sa.inspect(conn).get_table_names())
    version = None
    if "alembic_version" in tables:
        version = conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    return version, "runs" in tables


def _with_driver(url: sa.URL) -> sa.URL:
    """A ``postgresql://`` URL with the driver that is installed: SQLAlchemy's default is
    psycopg 3, and marketarena's ``postgres`` extra installs psycopg2."""
    if url.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None:
        return url.set(drivername="postgresql+psycopg2")
    return url


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # transactions are begun by _sqlite_begin, not by the sqlite3 module's implicit BEGIN
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def _sqlite_begin(conn: Connection) -> None:
    # a writer takes the lock up front: a read transaction that later writes could not wait
    # for another writer (SQLITE_BUSY at once, whatever the busy timeout)
    write = conn.get_execution_options().get("marketarena_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


__all__ = [
    "DEFAULT_STORE",
    "JobNotFound",
    "PickledCheckpointError",
    "RunInfo",
    "RunNotFound",
    "RunStore",
    "is_url",
]
