"""`marketarena demo` in-process: the table it prints matches an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from marketarena.envs import load_dataset
from marketarena.evaluation.cli import main
from marketarena.evaluation.demo import DemoConfig, run_demo


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


def test_demo_results_match_reference():
    config = DemoConfig()
    results = {r.agent: r for r in run_demo(config)}
    assert set(results) == {"buy_and_hold", "equal_weight (monthly)", "random (monthly)"}
    bh = results["buy_and_hold"]
    assert bh.nav[-1] == pytest.approx(buy_and_hold_reference(config), rel=1e-12)
    assert str(bh.dates[0]) == "2018-01-02" and str(bh.dates[-1]) == "2022-12-28"
    ew = results["equal_weight (monthly)"]
    assert np.count_nonzero(ew.turnover) == len(range(0, len(ew.turnover), 21))


def test_demo_command_prints_the_table():
    console = Console(record=True, width=160)
    assert main(["demo"], console=console) == 0
    out = console.export_text()
    results = {r.agent: r for r in run_demo(DemoConfig())}
    for name, res in results.items():
        line = next(line for line in out.splitlines() if name in line)
        assert f"{res.nav[-1]:,.2f}" in line
        assert f"{res.nav[-1] / 1e4 - 1:+.2%}" in line


def test_demo_rejects_a_range_outside_the_data():
    console = Console(record=True, width=160)
    assert main(["demo", "--start", "2030-01-01"], console=console) == 1
    assert "no trading date on or after 2030-01-01" in console.export_text()
