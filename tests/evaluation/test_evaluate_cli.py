"""`marketarena evaluate` in-process: files and numbers, bad input, MLflow, SB3 models, HTML."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from marketarena.cli import main
from marketarena.envs import PortfolioEnv
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation import metrics
from marketarena.evaluation.report import load_report
from marketarena.evaluation.runner import BacktestResult

RANGE = ["--start", "2019-01-02", "--end", "2019-12-31"]


def run_cli(*args: str) -> tuple[int, str]:
    console = Console(record=True, width=250)
    code = main(list(args), console=console)
    return code, console.export_text()


@pytest.fixture(scope="module")
def evaluation_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    code, text = run_cli(
        "evaluate",
        "--agent",
        "random:5",
        "--seeds",
        "3",
        *RANGE,
        "--output",
        str(out),
        "--ensemble",
        "mean",
        "--agent",
        "equal_weight:63",
    )
    assert code == 0, text
    return out, text


def test_files_and_numbers(evaluation_dir):
    out, text = evaluation_dir
    doc = json.loads((out / "metrics.json").read_text())
    rows = {r["agent"]: r for r in doc["agents"]}
    # the listed agents, the baselines alongside, and the ensemble over the listed agents
    assert list(rows) == [
        "random:5",
        "equal_weight:63",
        "buy_and_hold",
        "equal_weight",
        "ensemble:mean",
    ]
    assert rows["random:5"]["seeds"] == [0, 1, 2]
    assert doc["settings"]["benchmark"] == "SP500"
    assert doc["settings"]["start"] == "2019-01-02" and doc["settings"]["end"] == "2019-12-31"
    # the random agent's median Sharpe is the median of its three saved runs
    runs = [BacktestResult.load(out / "results" / f"random_5__seed{s}") for s in range(3)]
    sharpes = [metrics.sharpe_ratio(r.returns) for r in runs]
    assert rows["random:5"]["sharpe"] == pytest.approx(np.median(sharpes))
    assert rows["random:5"]["sharpe_min"] == pytest.approx(min(sharpes))
    # buy-and-hold's numbers, recomputed from its daily CSV
    daily = pd.read_csv(out / "daily_buy_and_hold.csv")
    nav = daily["nav"].to_numpy()
    assert rows["buy_and_hold"]["total_return"] == pytest.approx(nav[-1] / nav[0] - 1)
    assert rows["buy_and_hold"]["max_drawdown"] == pytest.approx(
        (nav / np.maximum.accumulate(nav) - 1).min()
    )
    bench = daily["benchmark"].to_numpy()
    assert rows["buy_and_hold"]["beta"] == pytest.approx(
        metrics.beta(nav[1:] / nav[:-1] - 1, bench[1:] / bench[:-1] - 1)
    )
    drawdown = nav / np.maximum.accumulate(nav) - 1
    assert rows["buy_and_hold"]["max_drawdown_trough"] == daily["date"][int(drawdown.argmin())]
    peak = int(np.argmax(nav[: drawdown.argmin() + 1]))
    assert rows["buy_and_hold"]["max_drawdown_peak"] == daily["date"][peak]
    # five agents are five trials: the deflated Sharpe is below the probabilistic one
    for row in rows.values():
        if len(row["seeds"]) == 1:  # PSR is a median across seeds; DSR is of one run
            assert 0.0 <= row["deflated_sharpe"] <= row["probabilistic_sharpe"] <= 1.0
    lo, hi = rows["buy_and_hold"]["sharpe_ci_low"], rows["buy_and_hold"]["sharpe_ci_high"]
    assert lo < rows["buy_and_hold"]["sharpe"] < hi
    # the CSV holds the same table
    csv = pd.read_csv(out / "metrics.csv")
    assert list(csv["agent"]) == list(rows)
    assert csv["sharpe"].to_numpy() == pytest.approx([rows[a]["sharpe"] for a in rows])
    # the printed table shows the same final NAV, and the Sortino ratio after the Sharpe
    line = next(line for line in text.splitlines() if " buy_and_hold " in line)
    assert f"{nav[-1]:,.2f}" in line
    header = next(line for line in text.splitlines() if " Sharpe " in line)
    cells = [c.strip() for c in re.split(r"[│┃]", header)]
    sortino = cells.index("Sortino")
    assert cells[sortino - 1] == "Sharpe"
    row = [c.strip() for c in re.split(r"[│┃]", line)]
    returns = nav[1:] / nav[:-1] - 1
    assert row[sortino] == f"{metrics.sortino_ratio(returns):.2f}"


def test_report_files_and_rebuild(evaluation_dir):
    out, _ = evaluation_dir
    page = (out / "report.html").read_text()
    # equity, drawdown, return distribution, rolling volatility (and rolling beta with a
    # benchmark), then a monthly-returns heatmap and a weights chart per agent: all plotly
    charts = page.count('class="chart"')
    assert charts in (4 + 2 * 5, 5 + 2 * 5)
    # self-contained: plotly.js inlined once, nothing fetched (the bundle's own defaults name
    # URLs that only map charts would use)
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    bundles = [s for s in scripts if re.search(r"plotly\.js v\d", s)]
    assert len(bundles) == 1
    rest = page.replace(bundles[0], "")
    assert "http://" not in rest and "https://" not in rest
    assert not re.search(r"<script[^>]*\bsrc=", page)
    rebuilt = load_report(out)
    original = json.loads((out / "metrics.json").read_text())["agents"]
    assert [r.agent for r in rebuilt.rows()] == [a["agent"] for a in original]
    again = rebuilt.as_dict()["agents"]
    for a, b in zip(original, again, strict=True):
        assert a["sharpe"] == pytest.approx(b["sharpe"]) and a["cagr"] == pytest.approx(b["cagr"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "foo"], "unknown agent 'foo'; use buy_and_hold, equal_weight[:N]"),
        (["--agent", "equal_weight:x"], "'x' is not a whole number of steps"),
        (["--agent", "nothing.zip"], "no saved model at nothing.zip"),
        (["--data", "nope"], "unknown data 'nope'"),
        (["--start", "2020-06-01", "--end", "2020-01-01"], "empty date range"),
        (["--start", "1980-01-01", "--end", "1985-01-01"], "no trading date on or before"),
        (["--start", "2023-06-01"], "no trading date on or after 2023-06-01"),
        (["--seeds", "0"], "seeds must be >= 1"),
        (["--agent", "random", "--ensemble", "mean"], "an ensemble needs at least two"),
        (["--rule", "comission_bps=3"], "unknown trading rule(s) ['comission_bps']"),
        (["--rule", "commission_bps"], "expected key=value"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    code, text = run_cli("evaluate", *args, "--output", str(tmp_path))
    assert code != 0
    assert message in text.replace("\n", " ")


def test_unknown_data_lists_what_is_available(tmp_path):
    _, text = run_cli("evaluate", "--data", "nope", "--output", str(tmp_path))
    assert "sp500_20" in text and "sp500_ohlcv_30" in text


def test_mlflow_logging_without_secrets(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-do-not-log")
    out = tmp_path / "report"
    code, text = run_cli(
        "evaluate",
        "--agent",
        "equal_weight:21",
        *RANGE,
        "--output",
        str(out),
        "--mlflow",
        "--experiment",
        "test-eval",
    )
    assert code == 0, text
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", text).group(1)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    doc = json.loads((out / "metrics.json").read_text())
    bh = next(r for r in doc["agents"] if r["agent"] == "buy_and_hold")
    assert run.data.metrics["eval/buy_and_hold/sharpe"] == pytest.approx(bh["sharpe"])
    assert run.data.params["start"] == "2019-01-02"
    assert run.data.tags["data_sha256"] == doc["settings"]["data"]["sha256"]
    artifacts = {a.path for a in client.list_artifacts(run_id, "report")}
    assert "report/report.html" in artifacts and "report/metrics.json" in artifacts
    logged = json.dumps(run.data.params) + json.dumps(run.data.tags)
    assert "sk-secret" not in logged
    assert all("sk-secret" not in p.read_text(errors="ignore") for p in out.rglob("*.json"))


@pytest.mark.slow
def test_saved_sb3_model_is_evaluated(tmp_path):
    from stable_baselines3 import PPO

    market = gbm_market(n_assets=3, n_periods=300, seed=5)
    market.to_long_frame().to_csv(tmp_path / "prices.csv", index=False)
    env = PortfolioEnv(market, window=8, episode_length=50)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [8]},
    )
    model.learn(128)
    model.save(tmp_path / "tiny.zip")
    data = str(tmp_path / "prices.csv")
    out = tmp_path / "report"
    code, text = run_cli(
        "evaluate",
        "--agent",
        str(tmp_path / "tiny.zip"),
        "--data",
        data,
        "--window",
        "8",
        "--benchmark",
        "none",
        "--output",
        str(out),
    )
    assert code == 0, text
    rows = {r["agent"] for r in json.loads((out / "metrics.json").read_text())["agents"]}
    assert rows == {"ppo:tiny", "buy_and_hold", "equal_weight"}
    code, text = run_cli(
        "evaluate", "--agent", str(tmp_path / "tiny.zip"), "--data", data, "--output", str(out)
    )  # the default window 32 does not match
    assert code == 1 and "trained on observations of shape (28,), but the env gives (100,)" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None and not os.environ.get("CI"),
    reason="Chromium not installed (.ci/run installs it, and there this test must run)",
)
def test_html_report_renders_its_plots_in_headless_chromium(evaluation_dir, tmp_path):
    out, _ = evaluation_dir
    browser = _chromium()
    assert browser, "CI must have Chromium for this test"
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rendered = re.search(r'data-plots-rendered="(\d+)/(\d+)"', dom)
    assert rendered, dom[:500]
    assert rendered.group(1) == rendered.group(2)
    assert int(rendered.group(2)) in (4 + 2 * 5, 5 + 2 * 5)


@pytest.mark.parametrize(
    ("jobs", "llm", "expected"),
    [(1, {}, None), (3, {}, 1), (3, {"server_threads": 4}, 4)],
)
def test_local_model_threads_follow_the_parallelism(jobs, llm, expected):
    # one agent at a time: None, the served model's default (2 cores: the LLM is all that
    # computes while it answers); agents in parallel threads need the other core
    from marketarena.evaluation.evaluate import EvaluationConfig, local_server_threads

    config = EvaluationConfig(agents=("llm:local",), jobs=jobs, llm=llm)
    assert local_server_threads(config) == expected
