"""The run store's migrations ship in the wheel: an installed copy creates a new store at the
newest schema and upgrades a store from before migrations, from its own package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from marketarena.evaluation.saved_runs.store import HEAD

ROOT = Path(__file__).resolve().parents[2]
OLD_STORE = ROOT / "tests" / "fixtures" / "old_runs" / "llm_hidden_2019.sqlite"

CHECK = """
import sqlite3, sys
from marketarena.evaluation.saved_runs import store
print(store.__file__)
for path, create in (("new.sqlite", True), ("old.sqlite", False)):
    store.RunStore(path, create=create).close()
    db = sqlite3.connect(path)
    print(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])
"""


@pytest.mark.slow
def test_an_installed_wheel_migrates_stores_with_its_own_migrations(tmp_path):
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("marketarena-*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "work"  # not the repository: its folders cannot shadow the installed copy
    work.mkdir()
    shutil.copy(OLD_STORE, work / "old.sqlite")
    done = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    where, new, old = done.stdout.split()
    assert where.startswith(str(target))
    assert new == old == HEAD
