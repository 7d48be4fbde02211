"""``marketarena arena``: the printed tables, MLflow, a real killed-and-resumed tournament,
and bad input as one ``error:`` line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from rich.console import Console

from marketarena.cli import EXIT_ERROR, main
from marketarena.envs.synthetic import gbm_market


def run(*argv: str) -> tuple[int, str]:
    console = Console(record=True, width=160)
    code = main(list(argv), console=console)
    return code, console.export_text()


@pytest.fixture
def prices(tmp_path, monkeypatch) -> str:
    """A synthetic market with volume as a CSV (400 sessions from 2000-01-03, SYN0..SYN2)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = tmp_path / "prices.csv"
    gbm_market(n_assets=3, n_periods=400, seed=11).to_long_frame().to_csv(path, index=False)
    return str(path)


def test_a_tournament_prints_its_tables_and_logs_to_mlflow(prices, tmp_path):
    code, text = run(
        "arena",
        "--agent", "equal_weight:5",
        "--agent", "random:3",
        "--agent", "buy_and_hold",
        "--data", prices,
        "--window", "5",
        "--period", "2000-01-10:2000-03-31",
        "--period", "2000-04-03:2000-06-30",
        "--seeds", "2",
        "--impact", "eta=0.2",
        "--impact", "gamma=0.1",
        "--reward", "relative",
        "--out", "arena",
        "--mlflow",
    )  # fmt: skip
    assert code == 0, text
    assert "TrueSkill ratings after 12 matches" in text
    assert "Head to head" in text
    for name in ("equal_weight:5", "random:3", "buy_and_hold"):
        assert name in text
    assert "wrote arena: matches.jsonl, ratings.csv, head_to_head.csv" in text
    settings = json.loads((tmp_path / "arena" / "tournament.json").read_text())
    assert settings["reward"] == "relative" and settings["impact"]["gamma"] == 0.1
    assert [p["start"] for p in settings["periods"]] == ["2000-01-10", "2000-04-03"]
    run_id = text.split("MLflow run ")[1].split()[0]
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    logged = client.get_run(run_id)
    assert logged.data.tags["data_sha256"] == settings["data"]["sha256"]
    assert logged.data.params["format"] == "pairs"
    assert "arena/equal_weight_5/conservative" in logged.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id, "arena")}
    assert {"arena/ratings.csv", "arena/matches.jsonl", "arena/report.md"} <= artifacts


def _files(folder) -> dict[str, bytes]:
    """Every output file, minus timings: elapsed_s of each match line, and report.html,
    whose plotly figures carry random element ids."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == "report.html":
            continue
        data = path.read_bytes()
        if path.name == "matches.jsonl":
            lines = [json.loads(line) for line in data.decode().splitlines()]
            clean = [{k: v for k, v in r.items() if k != "elapsed_s"} for r in lines]
            data = json.dumps(clean).encode()
        out[str(path.relative_to(folder))] = data
    return out


def test_a_killed_tournament_resumes_to_the_uninterrupted_result(prices, tmp_path):
    args = [
        "arena",
        "--agent", "equal_weight:5",
        "--agent", "random:3",
        "--agent", "buy_and_hold",
        "--agent", "cash",
        "--data", prices,
        "--window", "5",
        "--seeds", "2",
        "--impact", "eta=0.3",
        "--impact", "noise_scale=0.02",
    ]  # fmt: skip
    killed = tmp_path / "killed"
    lines = killed / "matches.jsonl"
    cmd = [sys.executable, "-m", "marketarena.cli", *args, "--out", str(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (lines.exists() and lines.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "no match finished within 60 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = lines.read_bytes().count(b"\n")
    assert 1 <= finished < 12  # 6 pairs x 2 seeds: killed part-way
    with lines.open("ab") as fh:  # and as if the kill had torn the next line's write
        fh.write(b'{"match": 99, "period": [nu')
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed: {finished} of 12 matches were already played" in resumed.stdout
    code, text = run(*args, "--out", str(tmp_path / "whole"))
    assert code == 0, text
    assert _files(killed) == _files(tmp_path / "whole")
    assert len(_files(killed)) > 30  # settings, lines, tables, 24 match files, the report
    code, text = run(*args, "--seeds", "3", "--out", str(killed))
    assert code == EXIT_ERROR
    assert "holds another tournament (matches: 18 here, 12 there; seeds: [0, 1, 2] here" in text


def test_llm_requests_past_a_thousand_need_yes(prices):
    """llm:gpt-x plays 2 matches a seed (3 competitors in pairs), 5 seeds, 399 sessions each:
    3,990 requests, refused without --yes before anything runs."""
    code, text = run(
        "arena",
        "--agent", "llm:gpt-x",
        "--agent", "cash",
        "--agent", "buy_and_hold",
        "--seeds", "5",
        "--base-url", "http://127.0.0.1:9/v1",
        "--data", prices,
        "--window", "5",
        "--out", "llm",
    )  # fmt: skip
    assert code == EXIT_ERROR
    assert "llm:gpt-x: 3,990 LLM requests" in text
    assert "error: llm:gpt-x would make 3,990 requests (more than 1,000): pass --yes" in text
    assert not os.path.exists("llm")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--agent", "equal_weight:5"], "error: the arena needs at least two agents, got 1"),
        (
            ["--agent", "cash", "--agent", "buy_and_hold", "--impact", "eta=-0.1"],
            "error: impact.eta must be a finite number >= 0, got -0.1",
        ),
        (["--agent", "cash", "--agent", "nobody"], "error: unknown agent 'nobody'"),
        (
            ["--agent", "cash", "--agent", "buy_and_hold", "--period", "2000-03-01"],
            "error: --period '2000-03-01': expected START:END",
        ),
        (
            ["--agent", "cash", "--agent", "buy_and_hold", "--period", "2000-02-30:2000-03-31"],
            "error: --period 2000-02-30:2000-03-31: '2000-02-30' is not a date",
        ),
        (
            ["--agent", "cash", "--agent", "buy_and_hold", "--period", "2000-06-01:2000-03-01"],
            "error: empty period 2000-06-01:2000-03-01: the start is after the end",
        ),
        (
            ["--agent", "cash", "--agent", "buy_and_hold", "--impact", "speed=1"],
            "error: unknown impact setting(s) ['speed']",
        ),
        (["--agent", "cash", "--agent", "buy_and_hold", "--resume"], "holds no tournament"),
    ],
)
def test_bad_input_is_one_error_line(prices, extra, message):
    code, text = run("arena", *extra, "--data", prices, "--window", "5", "--out", "bad")
    assert code == EXIT_ERROR
    assert message in text
    assert len(text.strip().splitlines()) == 1, text
    assert "Traceback" not in text
