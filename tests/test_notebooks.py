"""The notebooks in notebooks/ run: each is executed top to bottom by a real Jupyter kernel, as
a user would run it from that folder, and its last cell's summary is checked."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: the prefix of the line a notebook's last cell prints: a JSON summary of what it did
MARKER = "NOTEBOOK_SUMMARY "


def test_the_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_own_data_to_evaluation.ipynb",
        "02_llm_agent.ipynb",
        "03_reading_a_report.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id


@pytest.fixture
def run_notebook(tmp_path, monkeypatch):
    """Execute a notebook with cwd a copy of its place in the repository (``notebooks/``,
    with ``examples/`` beside it), on a kernel named ``python3`` that is this interpreter,
    and return its summary."""
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    # JUPYTER_PATH comes before the user's and the system's kernel folders
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    repo = tmp_path / "repo"
    (repo / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "prices.csv", repo / "examples")
    cwd = repo / "notebooks"
    cwd.mkdir()

    def run(name: str) -> tuple[dict, Path]:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        client = NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        )
        client.execute()
        printed = [
            line
            for cell in nb.cells
            if cell.cell_type == "code"
            for output in cell.outputs
            if output.get("name") == "stdout"
            for line in output["text"].splitlines()
        ]
        summaries = [line.removeprefix(MARKER) for line in printed if line.startswith(MARKER)]
        assert len(summaries) == 1, printed[-5:]
        return json.loads(summaries[0]), cwd

    return run


def _finite(values) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


@pytest.mark.slow
def test_own_data_to_evaluation(run_notebook):
    summary, cwd = run_notebook("01_own_data_to_evaluation.ipynb")
    agents = summary["agents"]
    assert agents[0] == "ppo:own_data_ppo" and {"buy_and_hold", "equal_weight"} <= set(agents)
    assert summary["finite"] and _finite(summary["sharpe"].values())
    assert summary["timesteps"] >= 4096
    assert (cwd / summary["report"]).exists()
    assert (cwd / "_out" / "01_own_data" / "report" / "metrics.csv").exists()


@pytest.mark.slow
def test_llm_agent(run_notebook):
    summary, _ = run_notebook("02_llm_agent.ipynb")
    decisions = summary["decisions"]
    assert decisions >= 5
    assert summary["outcomes"]["ok"] == decisions and summary["fallbacks"] == 0
    assert summary["server_requests"] == decisions  # the rerun came from the cache
    assert summary["cached_on_rerun"] == decisions
    assert summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0
    assert _finite(summary["sharpe"].values())
    assert "llm:stand-in" in summary["sharpe"] and "buy_and_hold" in summary["sharpe"]


@pytest.mark.slow
def test_reading_a_report(run_notebook):
    summary, cwd = run_notebook("03_reading_a_report.ipynb")
    assert summary["agents"] == ["random:21", "buy_and_hold", "equal_weight"]
    assert summary["reloaded_equals_written"]
    for agent, (low, high) in summary["sharpe_ci"].items():
        assert low < summary["sharpe"][agent] < high, agent
    assert all(0 <= p <= 1 for p in summary["deflated_sharpe"].values())
    assert summary["drawdowns"] >= 1 and summary["figures"] >= 5
    assert (cwd / summary["report"]).exists()
