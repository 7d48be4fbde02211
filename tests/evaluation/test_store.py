"""The run store on SQLite and PostgreSQL: days, fills, interventions and checkpoints; jobs
and webhook deliveries; migrations (a new store at head, a store from before migrations
upgraded, its pickles never read); several processes writing one store; the CLI on a URL.

Every test that takes ``store_url`` (the root conftest) runs on both backends, each in a
fresh database: a SQLite file, or a PostgreSQL schema of its own.
"""

from __future__ import annotations

import pickle
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from rich.console import Console

from marketarena.agents.registry import make_agent
from marketarena.cli import EXIT_ERROR, EXIT_OK, main
from marketarena.envs.errors import ConfigError, DataError, MissingFileError
from marketarena.evaluation.runner import run_backtest
from marketarena.evaluation.saved_runs.codec import StateEncodeError
from marketarena.evaluation.saved_runs.persisted import load_result
from marketarena.evaluation.saved_runs.store import (
    HEAD,
    MIGRATIONS,
    JobNotFound,
    PickledCheckpointError,
    RunNotFound,
    RunStore,
)

OLD_STORE = Path(__file__).parent.parent / "fixtures" / "old_runs" / "llm_hidden_2019.sqlite"


@pytest.fixture
def store(store_url):
    s = RunStore(store_url)
    yield s
    s.close()


def marketarena() -> list[str]:
    """The ``marketarena`` console script beside this Python (or ``python -c`` its main)."""
    script = Path(sys.executable).with_name("marketarena")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from marketarena.cli import main; sys.exit(main())"]


def run_cli(argv: list[str]) -> tuple[int, str]:
    console = Console(record=True, width=300)
    code = main(argv, console=console)
    return code, console.export_text()


def engine_of(store: RunStore) -> sa.Engine:
    """A connection of the test's own to the store's database (an independent reader)."""
    url = sa.make_url(store.connect_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    return sa.create_engine(url)


def day(date: str, nav: float, shares: list[float], weights: list[float]) -> dict:
    return {
        "date": date,
        "nav": nav,
        "cash": nav - 100.0,
        "turnover": 0.125,
        "costs": 0.1 + 0.2,  # 0.30000000000000004: stored to the last bit
        "shares": np.array(shares),
        "weights": np.array(weights),
    }


# ------------------------------------------------------------------------------ runs
def test_days_fills_interventions_and_the_checkpoint_come_back_as_recorded(store):
    spec = {"agent": "random:5", "data": "sp500_20", "seed": 3, "risk": {"max_weight": 0.3}}
    store.create_run("r", spec, ["AAA", "BBB"])
    rng = np.random.default_rng(7)
    rng.random(3)
    store.record_day(
        "r",
        1,
        day("2020-01-03", 10_000.5, [1.0, 2.0], [0.25, 0.25, 0.5]),
        [("AAA", 1.0, 100.25, 0.5), ("BBB", 2.0, 50.0, 0.25)],
        {"t": 1},
        {"rng": rng, "last": (1, 2)},
        [("2020-01-02", "stop_loss", 0.5), ("2020-01-02", "max_weight", 0.25)],
    )
    # a day recorded again (a resumed run redoing it) replaces its rows, never adds to them
    for again in range(2):
        store.record_day(
            "r",
            2,
            day("2020-01-06", 9_999.25, [0.0, 2.5], [0.0, 0.5, 0.5]),
            [("AAA", -1.0, 99.0, 0.125), ("BBB", 0.5, 49.0, 0.0)],
            {"t": 2, "again": again},
            {"rng": rng},
            [("2020-01-03", "max_weight", 1.5)],
        )
    info = store.run("r")
    assert (info.spec, info.symbols, info.status) == (spec, ("AAA", "BBB"), "running")
    assert (info.last_date, info.days) == ("2020-01-06", 2)
    days = store.days("r")
    assert list(days.columns) == ["step", "date", "nav", "cash", "turnover", "costs", "AAA", "BBB"]
    assert days.values.tolist() == [
        [1, "2020-01-03", 10_000.5, 9_900.5, 0.125, 0.30000000000000004, 1.0, 2.0],
        [2, "2020-01-06", 9_999.25, 9_899.25, 0.125, 0.30000000000000004, 0.0, 2.5],
    ]
    assert str(days["step"].dtype) == "int64" and str(days["nav"].dtype) == "float64"
    assert days.attrs["weights"].tolist() == [[0.25, 0.25, 0.5], [0.0, 0.5, 0.5]]
    assert store.days("r", start="2020-01-04").values.tolist()[0][:2] == [2, "2020-01-06"]
    assert store.fills("r").values.tolist() == [
        ["2020-01-03", "AAA", "buy", 1.0, 100.25, 0.5],
        ["2020-01-03", "BBB", "buy", 2.0, 50.0, 0.25],
        ["2020-01-06", "AAA", "sell", 1.0, 99.0, 0.125],
        ["2020-01-06", "BBB", "buy", 0.5, 49.0, 0.0],
    ]
    assert store.fills("r", symbol="BBB", end="2020-01-05").values.tolist() == [
        ["2020-01-03", "BBB", "buy", 2.0, 50.0, 0.25]
    ]
    assert store.fills("r", symbol="CCC").empty
    # in the order recorded within a day (not alphabetical)
    assert store.interventions("r") == [
        {"date": "2020-01-02", "rule": "stop_loss", "amount": 0.5},
        {"date": "2020-01-02", "rule": "max_weight", "amount": 0.25},
        {"date": "2020-01-03", "rule": "max_weight", "amount": 1.5},
    ]
    step, env_state, agent_state = store.checkpoint("r")
    assert (step, env_state) == (2, {"t": 2, "again": 1})
    assert agent_state["rng"].random() == rng.random()
    assert store.diagnostics("r") == {}
    store.finish("r", {"outcomes": {"ok": 2}, "when": np.datetime64("2020-01-06")})
    store.finish("r", {"outcomes": {"ok": 3}})  # finishing again replaces them
    assert store.run("r").status == "finished"
    assert store.diagnostics("r") == {"outcomes": {"ok": 3}}
    store.update_spec("r", {**spec, "end": "2020-02-03"}, "running")
    assert store.run("r").spec["end"] == "2020-02-03" and store.run("r").status == "running"


def test_unknown_and_taken_runs_are_named(store):
    assert store.runs() == [] and store.checkpoint("none") is None
    store.create_run("a", {"agent": "cash"}, ["X"])
    store.create_run("b", {"agent": "random"}, ["X"])
    assert [r.run_id for r in store.runs()] == ["a", "b"]
    assert [r.run_id for r in store.runs_of("cash")] == ["a"]
    with pytest.raises(RunNotFound, match=r"^no run 'c' in .*; runs: \['a', 'b'\]$"):
        store.run("c")
    with pytest.raises(RunNotFound, match=r"no run of agent 'ppo' in .*; agents: \['cash', "):
        store.runs_of("ppo")
    with pytest.raises(ConfigError, match=r"run 'a' already exists in .*: --resume it"):
        store.require_new("a")
    with pytest.raises(ConfigError, match="run 'b' already exists"):
        store.create_run("b", {"agent": "cash"}, ["X"])
    with pytest.raises(RunNotFound):
        store.days("c")


class Unlisted:
    pass


def test_a_state_the_codec_cannot_write_records_nothing(store):
    store.create_run("r", {"agent": "x"}, ["AAA"])
    with pytest.raises(StateEncodeError, match=r"cannot store agent_state\['helper'\]: it is a"):
        store.record_day(
            "r", 1, day("2020-01-03", 1.0, [0.0], [0.0, 1.0]), [], {}, {"helper": Unlisted()}
        )
    assert store.run("r").days == 0 and store.checkpoint("r") is None


# ------------------------------------------------------------------------------ jobs
def test_jobs_are_created_updated_listed_and_named_when_unknown(store):
    store.create_job("j1", "simulate", {"agents": ["random"], "start": "2020-01-02"})
    store.create_job("j2", "continue", {"end": "2021-01-04"})
    job = store.job("j1")
    created = job.pop("created")
    assert isinstance(created, float) and created > 1e9
    assert job == {
        "id": "j1",
        "kind": "simulate",
        "spec": {"agents": ["random"], "start": "2020-01-02"},
        "status": "queued",
        "run_ids": [],
        "progress": {},
        "error": None,
        "started": None,
        "finished": None,
        "worker_pid": None,
    }
    store.update_job("j1", status="running", started=1.5, worker_pid=4321)
    store.update_job("j1", run_ids=["random@2020-01-02"], progress={"random": [3, 10]})
    store.update_job("j2", status="failed", error="worker died", finished=2.5)
    store.update_job("j2")  # nothing to change: fine for a job that exists
    job = store.job("j1")
    assert (job["status"], job["started"], job["worker_pid"]) == ("running", 1.5, 4321)
    assert job["run_ids"] == ["random@2020-01-02"] and job["progress"] == {"random": [3, 10]}
    assert [j["id"] for j in store.jobs()] == ["j1", "j2"]
    assert [j["id"] for j in store.jobs("failed")] == ["j2"] and store.jobs("done") == []
    assert store.job("j2")["error"] == "worker died"
    with pytest.raises(JobNotFound, match=r"^no job 'j3' in "):
        store.job("j3")
    with pytest.raises(JobNotFound, match="no job 'j3'"):
        store.update_job("j3", status="done")
    with pytest.raises(ConfigError, match=r"job kind must be one of \['simulate', 'resume', "):
        store.create_job("j4", "train", {})
    with pytest.raises(ConfigError, match="job 'j1' already exists"):
        store.create_job("j1", "simulate", {})
    with pytest.raises(ConfigError, match=r"job status must be one of .* got 'paused'"):
        store.update_job("j1", status="paused")
    with pytest.raises(ConfigError, match=r"a job has no field\(s\) \['kind'\]"):
        store.update_job("j1", kind="resume")
    assert store.job("j1")["status"] == "running"


def test_webhook_deliveries_are_recorded_with_the_dead_letters_apart(store):
    first = store.record_delivery(
        "http://127.0.0.1:9/h", "job.done", '{"a": 1}', 1, "delivered", None
    )
    second = store.record_delivery("http://127.0.0.1:9/h", "trade", "{}", 5, "dead", "HTTP 500")
    assert second == first + 1
    dead = store.deliveries("dead")
    assert len(dead) == 1 and dead[0]["id"] == second
    assert {k: dead[0][k] for k in ("url", "event", "payload", "attempts", "last_error")} == {
        "url": "http://127.0.0.1:9/h",
        "event": "trade",
        "payload": "{}",
        "attempts": 5,
        "last_error": "HTTP 500",
    }
    assert [d["status"] for d in store.deliveries()] == ["delivered", "dead"]
    with pytest.raises(ConfigError, match="delivery status must be one of"):
        store.record_delivery("http://x", "e", "{}", 1, "retrying", None)


# ------------------------------------------------------------------------ migrations
def test_a_new_store_is_made_at_the_newest_schema_and_reopened_as_it_is(store):
    with engine_of(store).connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == HEAD
        tables = set(sa.inspect(conn).get_table_names())
    assert {"runs", "days", "fills", "checkpoints", "jobs", "webhook_deliveries"} <= tables
    store.create_job("j", "resume", {})
    again = RunStore(store.connect_url, create=False)
    assert again.job("j")["kind"] == "resume"
    again.close()


def test_head_is_the_newest_migration_shipped():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(MIGRATIONS)).get_current_head() == HEAD


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("sqlite://", "sqlite://"),  # in memory: nothing would be kept
        ("mysql://u:secret@localhost/db", "mysql://u:***@localhost/db"),
        ("nonsense://", "nonsense://"),
    ],
)
def test_a_url_of_another_kind_is_refused_naming_it_without_its_password(location, shown):
    with pytest.raises(ConfigError) as caught:
        RunStore(location)
    assert str(caught.value) == (
        f"cannot open the runs database {shown}: give a SQLite file's path, sqlite:///PATH or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    )


def test_opening_without_create_makes_nothing(store_url, tmp_path):
    if store_url.endswith(".sqlite"):
        with pytest.raises(MissingFileError, match=r"no runs database .*runs\.sqlite: a new run"):
            RunStore(store_url, create=False)
        assert not Path(store_url).exists()
        return
    with pytest.raises(DataError, match="is not a runs database: it has no runs table"):
        RunStore(store_url, create=False)
    created = RunStore(store_url)
    with engine_of(created).connect() as conn:  # the refused open left the schema empty
        assert conn.scalar(sa.text("SELECT COUNT(*) FROM runs")) == 0
    created.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_postgres_password_never_shows(store_url):
    store = RunStore(store_url)
    password = sa.make_url(store_url).password
    assert password and password not in store.url + str(store.path)
    assert password in store.connect_url
    wrong = sa.make_url(store_url).set(password="not-" + password)
    with pytest.raises(DataError, match="cannot open the runs database postgresql://") as caught:
        RunStore(wrong.render_as_string(hide_password=False))
    assert password not in str(caught.value) and "***" in str(caught.value)
    store.close()


class Planted:
    """Unpickling this creates ``marker``: proof of whether a pickle was read."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def planted_store(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the store marketarena 0.1 wrote, its checkpoint replaced by a planted pickle."""
    path, marker = tmp_path / "old.sqlite", tmp_path / "unpickled"
    shutil.copy(OLD_STORE, path)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE checkpoints SET env_state = ?", (pickle.dumps(Planted(marker)),))
    return path, marker


def test_a_store_from_before_migrations_is_upgraded_and_its_pickles_are_never_read(tmp_path):
    path, marker = planted_store(tmp_path)
    with closing(sqlite3.connect(path)) as db:  # what the old file holds, read directly
        old_days = db.execute("SELECT step, date, nav FROM days ORDER BY step").fetchall()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "alembic_version" not in tables and "jobs" not in tables
    store = RunStore(path, create=False)
    with engine_of(store).connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == HEAD
        assert conn.scalar(sa.text("SELECT format FROM checkpoints")) == "pickle"
    assert [r.run_id for r in store.runs()] == ["r"] and store.pickled_checkpoints() == ["r"]
    days = store.days("r")
    assert list(zip(days["step"], days["date"], days["nav"], strict=True)) == old_days
    store.create_job("j", "continue", {"run": "r"})  # the new tables are there
    with pytest.raises(PickledCheckpointError) as caught:
        store.checkpoint("r")
    assert str(caught.value) == (
        "run r's checkpoint was written by an older marketarena as a pickle; "
        f"`marketarena runs upgrade {path} --trust` converts it (only for a store you trust: "
        "a pickle can run code)"
    )
    with pytest.raises(ConfigError, match="unpickles its checkpoints, which can run code"):
        store.upgrade_checkpoints(trust=False)
    store.close()
    code, text = run_cli(["runs", "upgrade", str(path)])
    assert code == EXIT_ERROR and "said with --trust" in text
    code, text = run_cli(["leaderboard", "--store", str(path)])  # the same one line
    assert code == EXIT_ERROR and text.startswith("error: run r's checkpoint was written by")
    assert not marker.exists()  # nothing above unpickled anything
    # --trust does unpickle (the plant runs), and the codec refuses what came out of it
    code, text = run_cli(["runs", "upgrade", str(path), "--trust"])
    assert marker.exists()
    assert code == EXIT_ERROR
    assert "cannot store run r's env_state: it is a _io.TextIOWrapper" in text


def test_the_upgrade_converts_a_real_old_checkpoint_to_the_same_state(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(OLD_STORE, path)
    with closing(sqlite3.connect(path)) as db:
        env_blob, agent_blob = db.execute(
            "SELECT env_state, agent_state FROM checkpoints"
        ).fetchone()
    env_state, agent_state = pickle.loads(env_blob), pickle.loads(agent_blob)  # our own fixture
    code, text = run_cli(["runs", "upgrade", str(path), "--trust"])
    assert code == EXIT_OK and "run r: checkpoint rewritten in the safe format" in text
    store = RunStore(path, create=False)
    step, env_back, agent_back = store.checkpoint("r")
    assert store.pickled_checkpoints() == []
    assert step == store.run("r").days
    assert pickle.dumps(env_back) == pickle.dumps(env_state)
    assert vars(agent_back["_builder"]) == vars(agent_state["_builder"])
    assert agent_back["decisions"] == agent_state["decisions"]
    store.close()
    code, text = run_cli(["runs", "upgrade", str(path), "--trust"])
    assert code == EXIT_OK and "no pickled checkpoints, nothing to upgrade" in text


# ----------------------------------------------------------------------- concurrency
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from marketarena.evaluation.saved_runs.store import RunStore

    url, me = sys.argv[1], sys.argv[2]
    store = RunStore(url)  # every writer opens (and migrates) the new store at once
    store.create_run(me, {"agent": "x"}, ["AAA"])
    for n in range(15):
        job = f"{me}-{n}"
        store.create_job(job, "simulate", {"by": me})
        store.update_job(job, status="running", worker_pid=n)
        state = {"rng": np.random.default_rng(n), "n": n}
        day = {"date": f"2020-01-{n + 1:02d}", "nav": 1.0 + n, "cash": 0.0, "turnover": 0.0,
               "costs": 0.0, "shares": [1.0], "weights": [1.0, 0.0]}
        store.record_day(me, n + 1, day, [("AAA", 1.0, 1.0, 0.0)], state, state)
        store.update_job(job, status="done", progress={"day": n + 1})
        store.record_delivery("http://h", "job.done", job, 1, "delivered", None)
    store.close()
    """
)


def test_several_processes_write_one_store_at_once(store_url):
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, store_url, f"w{k}"], stderr=subprocess.PIPE)
        for k in range(4)
    ]
    for proc in writers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    store = RunStore(store_url, create=False)
    jobs = store.jobs()
    assert len(jobs) == 60 and {j["status"] for j in jobs} == {"done"}
    assert store.jobs("done")[0]["progress"]["day"] >= 1
    assert len(store.deliveries("delivered")) == 60
    for k in range(4):
        info = store.run(f"w{k}")
        assert (info.days, info.last_date) == (15, "2020-01-15")
        assert store.days(f"w{k}")["nav"].tolist() == [1.0 + n for n in range(15)]
        assert store.checkpoint(f"w{k}")[2]["n"] == 14
    if store_url.endswith(".sqlite"):
        with closing(sqlite3.connect(store_url)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.close()


def test_threads_of_one_process_share_a_store(store):
    """As a server's request threads do: each call takes a pooled connection of its own."""
    from concurrent.futures import ThreadPoolExecutor

    store.create_run("r", {"agent": "x"}, ["AAA"])

    def work(k: int) -> int:
        store.create_job(f"j{k}", "simulate", {"k": k})
        store.update_job(f"j{k}", status="done", progress={"k": k})
        return len(store.jobs()) + store.run("r").days

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(work, range(40)))
    assert min(seen) >= 1 and max(seen) == 40
    assert sorted(j["progress"]["k"] for j in store.jobs("done")) == list(range(40))


# ------------------------------------------------------------------------------- CLI
def test_the_cli_backtests_continues_and_reads_runs_in_a_store_given_by_url(store_url):
    url = store_url if "://" in store_url else f"sqlite:///{store_url}"
    agent, start, middle, end, seed = "random:5", "2020-01-02", "2020-02-14", "2020-03-31", 4
    dates = ["--start", start, "--end", middle, "--seed", str(seed)]
    # the installed command, in a process of its own
    done = subprocess.run(
        [*marketarena(), "backtest", "--agent", agent, *dates, "--run", "r", "--store", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert "run r stored in" in done.stdout
    code, text = run_cli(["backtest", "--continue", "r", "--end", end, "--store", url])
    assert code == EXIT_OK, text
    password = sa.make_url(url).password
    assert not password or password not in text + done.stdout + done.stderr
    store = RunStore(url, create=False)
    stored = load_result(store, "r")
    store.close()
    # the evaluation runner's uninterrupted backtest of the same spec: the same NAVs, exactly
    direct = run_backtest(make_agent(agent), {"data": "sp500_20"}, start, end, seed)
    assert str(stored.dates[-1]) == str(direct.dates[-1]) == "2020-03-31"
    np.testing.assert_array_equal(stored.nav, direct.nav)
    code, text = run_cli(["positions", "--run", "r", "--store", url, "--limit", "1"])
    assert code == EXIT_OK and "holdings of r on 2020-03-31" in text
    code, text = run_cli(["leaderboard", "--store", url])
    assert code == EXIT_OK and "leaderboard: 2020-01-02 to 2020-03-31" in text, text
