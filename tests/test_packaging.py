"""Packaging: one `marketarena` namespace in the wheel, package data included, console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("marketarena-*.whl"))


@pytest.mark.slow
def test_wheel_has_only_the_marketarena_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("marketarena-")}
    assert top == {"marketarena"}
    for sub in ("envs", "agents", "training", "evaluation"):
        assert f"marketarena/{sub}/__init__.py" in names
    for data in ("sp500_20.csv.gz", "sp500_ohlcv_30.csv.gz", "LICENSE-skfolio-BSD-3-Clause.txt"):
        assert f"marketarena/envs/datasets/{data}" in names


@pytest.mark.slow
def test_installed_wheel_imports_and_loads_bundled_data(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import marketarena.envs as e; print(e.__file__); "
        "print(e.load_dataset('sp500_20').n_assets)"
    )
    # run from tmp_path so the repository's own folders cannot shadow the installed copy
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0].startswith(str(target)) and out[1] == "20"


def test_console_script():
    exe = shutil.which("marketarena", path=str(Path(sys.executable).parent))
    assert exe, "the marketarena console script is not installed next to this Python"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("demo", "data"):
        assert command in out
