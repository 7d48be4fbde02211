"""`marketarena demo` in-process: the table it prints matches an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from marketarena.cli import main
from marketarena.envs import load_dataset
from marketarena.training.demo import DemoConfig, run_demo


def buy_and_hold_reference(config: DemoConfig) -> float:
    """Equal weight sized at the first decision close, filled at the next close, then held."""
    data = load_dataset(config.data)
    t0 = data.index_of(config.start)
    t_end = data.index_of(config.end, side="right")
    slip, comm = config.slippage_bps / 1e4, config.commission_bps / 1e4
    shares = (10_000 / data.n_assets) / data.close[t0]
    outlay = shares @ data.close[t0 + 1] * (1 + slip)
    scale = min(1.0, 10_000 / (outlay * (1 + comm)))
    cash = 10_000 - scale * outlay * (1 + comm)
    return cash + scale * shares @ data.close[t_end]


def demo_results() -> dict:
    report = run_demo(DemoConfig(ppo_timesteps=0, llm_decide_every=0))
    return {e.agent: e.results[0] for e in report.evaluations}


def test_demo_results_match_reference():
    config = DemoConfig()
    results = demo_results()
    assert set(results) == {"buy_and_hold", "equal_weight", "random:21"}
    bh = results["buy_and_hold"]
    assert bh.nav[-1] == pytest.approx(buy_and_hold_reference(config), rel=1e-11)
    assert str(bh.dates[0]) == "2018-01-02" and str(bh.dates[-1]) == "2022-12-28"
    assert bh.benchmark_name == "SP500" and bh.benchmark is not None
    ew = results["equal_weight"]
    assert np.count_nonzero(ew.turnover) == len(range(0, len(ew.turnover), 21))


def test_demo_command_prints_the_table_and_writes_the_report(tmp_path):
    console = Console(record=True, width=200)
    args = ["demo", "--ppo-timesteps", "0", "--llm-decide-every", "0", "--output", str(tmp_path)]
    assert main(args, console=console) == 0
    out = console.export_text()
    for name, res in demo_results().items():
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert f"{res.nav[-1]:,.2f}" in line
        assert f"{res.nav[-1] / 1e4 - 1:+.2%}" in line
    for name in ("report.html", "metrics.json", "metrics.csv", "equity.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_demo_rejects_a_range_outside_the_data():
    console = Console(record=True, width=160)
    args = ["demo", "--start", "2030-01-01", "--end", "2031-01-01", "--output", ""]
    assert main(args, console=console) == 1
    assert "no trading date on or after 2030-01-01" in console.export_text()
    assert main(["demo", "--start", "2030-01-01", "--output", ""], console=console) == 1
    assert "empty date range: start 2030-01-01 is after end 2022-12-28" in console.export_text()


@pytest.mark.slow
def test_demo_trains_ppo_and_evaluates_it_on_unseen_dates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    report = run_demo(DemoConfig(ppo_timesteps=1024, llm_decide_every=0))
    rows = {r.agent: r for r in report.rows()}
    assert "ppo:demo_ppo" in rows
    ppo = rows["ppo:demo_ppo"].representative
    assert str(ppo.dates[0]) == "2018-01-02"  # the test period, after training and validation
    (run,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["splits"]["train"]["end"] < manifest["splits"]["validation"]["start"]
    assert manifest["splits"]["validation"]["end"] < "2018-01-02"


def test_demo_ppo_uses_the_bench_settings():
    """The demo's PPO trains with the shipped defaults measured on the diagnostic tasks
    (configs/bench/ppo.yaml), on the demo's own data, splits, costs and budget."""
    from marketarena.training.config import build_config, load_config
    from marketarena.training.demo import ppo_config

    root = Path(__file__).resolve().parents[2]
    bench = load_config(root / "configs" / "bench" / "ppo.yaml")
    demo = build_config(ppo_config(DemoConfig()), "the demo's PPO config")
    own = ("data", "splits", "rules")
    assert demo.env.model_dump(exclude=set(own)) == bench.env.model_dump(exclude=set(own))
    assert demo.algo.model_dump(exclude={"total_timesteps"}) == bench.algo.model_dump(
        exclude={"total_timesteps"}
    )
    assert demo.env.data == "sp500_20" and demo.env.rules == {
        "commission_bps": 5.0,
        "slippage_bps": 5.0,
    }
    assert demo.algo.total_timesteps == DemoConfig().ppo_timesteps


AGAIN = "interrupted: run marketarena demo again to start over"


@pytest.mark.parametrize(
    ("stop", "args", "line"),
    [
        ("training", [], AGAIN + " (the interrupted PPO run is in runs/demo_ppo__ppo__0__x)"),
        (
            "comparison",
            [],
            AGAIN + "; the local LLM's answers so far are cached and replay in seconds",
        ),
        ("comparison", ["--llm-decide-every", "0"], AGAIN),
    ],
)
def test_ctrl_c_in_the_demo_says_how_to_run_it_again(tmp_path, monkeypatch, stop, args, line):
    from marketarena.training import demo
    from marketarena.training.train import TrainingInterrupted

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "demo_ppo__ppo__0__x"

    def interrupted(config, announce=None, progress=None):
        if stop == "training":
            raise TrainingInterrupted(run_dir, None)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupted)
    console = Console(record=True, width=80)
    assert main(["demo", *args], console=console) == 130
    assert console.export_text().strip().splitlines()[-1] == line
