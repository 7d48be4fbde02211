"""Risk rules in evaluate and backtest runs: day-by-day interventions in the result, counts
in the report, the rules in the run's settings, and one-line errors for bad --risk values."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console

from marketarena.agents.baselines import EqualWeightAgent
from marketarena.cli import main
from marketarena.evaluation.runner import BacktestResult, run_backtest

RANGE = ["--start", "2019-01-02", "--end", "2019-06-28"]


def run_cli(*args: str) -> tuple[int, str]:
    console = Console(record=True, width=250)
    code = main(list(args), console=console)
    return code, console.export_text()


def test_a_backtest_result_keeps_each_intervention_and_saves_it(tmp_path):
    env = {"data": "sp500_20", "settings": None, "risk": {"max_weight": 0.04}}
    result = run_backtest(EqualWeightAgent(), env, "2019-01-02", "2019-03-29", seed=0)
    # equal weight asks 5% of each of 20 stocks: the cap moves 1% from each into cash
    first = result.interventions[0]
    assert first["rule"] == "max_weight" and first["date"] == "2019-01-02"
    assert first["amount"] == pytest.approx(20 * (0.05 - 0.04))
    assert result.weights[1, :-1].max() <= 0.04 * 1.1  # filled at the cap, then one day's drift
    counts = result.intervention_counts()["max_weight"]
    assert counts["decisions"] == len(result.interventions)
    for path in (tmp_path / "r.json", tmp_path / "r"):
        again = BacktestResult.load(result.save(path))
        assert again.interventions == result.interventions


def test_evaluate_with_risk_rules_counts_them_per_agent(tmp_path):
    code, text = run_cli(
        "evaluate",
        "--agent",
        "equal_weight",
        *RANGE,
        "--risk",
        "max_weight=0.04",
        "--risk",
        "sector_limit=0.15",
        "--no-baselines",
        "--output",
        str(tmp_path),
    )
    assert code == 0, text
    assert "equal_weight: the risk layer changed" in text
    doc = json.loads((tmp_path / "metrics.json").read_text())
    row = doc["agents"][0]
    assert row["risk_max_weight_decisions"] >= 1
    assert row["risk_sector_limit_decisions"] >= 1  # Health Care: 5 stocks x 4% = 20%
    assert doc["settings"]["risk"]["max_weight"] == 0.04
    assert doc["settings"]["risk"]["sector_limit"] == 0.15


def test_without_risk_rules_nothing_is_recorded(tmp_path):
    result = run_backtest(
        EqualWeightAgent(), {"data": "sp500_20"}, "2019-01-02", "2019-02-28", seed=0
    )
    assert result.interventions == [] and result.intervention_counts() == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--risk", "max_wieght=0.1"], "unknown risk rule"),
        (["--risk", "stop_loss=2"], "risk.stop_loss=2.0: must be in (0, 1]"),
        (["--risk", "drawdown_derisk={0.1: "], "not valid YAML"),
        (["--risk", "max_weight"], "expected key=value"),
        (["--risk", "sector_limit=0.2", "--risk", "sectors=missing.csv"], "sector map not found"),
    ],
)
def test_bad_risk_values_are_one_line_errors(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (
        ["evaluate", "--agent", "equal_weight", *RANGE],
        ["backtest", "--agent", "equal_weight", *RANGE],
    ):
        code, text = run_cli(*command, *args)
        assert code == 1, (command, text)
        assert message in text and "Traceback" not in text
        assert len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "runs.sqlite").exists() or "equal_weight" not in (
        tmp_path / "runs.sqlite"
    ).read_bytes().decode("latin-1")


def test_a_persisted_backtest_keeps_its_rules_and_resumes_under_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(
        "backtest",
        "--agent",
        "equal_weight",
        *RANGE,
        "--risk",
        "max_weight=0.04",
        "--run",
        "capped",
    )
    assert code == 0, text
    from marketarena.evaluation.saved_runs.store import RunStore

    spec = RunStore("runs.sqlite", create=False).run("capped").spec
    assert spec["risk"]["max_weight"] == 0.04
    weights = RunStore("runs.sqlite", create=False).days("capped").attrs["weights"]
    assert weights[:, :-1].max() <= 0.04 * 1.25  # capped at each fill, one day of drift


def test_a_persisted_run_stores_its_interventions_day_by_day(tmp_path):
    from marketarena.evaluation.saved_runs.persisted import load_result, start_backtest
    from marketarena.evaluation.saved_runs.store import RunStore

    store = RunStore(tmp_path / "runs.sqlite")
    start, end = "2020-01-02", "2020-04-30"  # the 2020 crash trips the stop
    risk = {"max_weight": 0.04, "stop_loss": 0.1, "stop_cooldown": 3}
    stored = start_backtest(store, "r", "equal_weight", "sp500_20", start, end, risk=risk)
    direct = run_backtest(EqualWeightAgent(), {"data": "sp500_20", "risk": risk}, start, end, 0)
    assert {r["rule"] for r in direct.interventions} == {"max_weight", "stop_loss"}
    assert stored.interventions == direct.interventions
    again = load_result(RunStore(tmp_path / "runs.sqlite", create=False), "r")
    assert again.intervention_counts() == direct.intervention_counts()


def test_an_evaluation_file_sets_what_the_flags_set_and_flags_override_it(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text(
        "agents: [equal_weight:21, random:21]\n"
        "allocations: [risk_parity]\n"
        "start: 2019-01-02\n"  # a YAML date, not a string
        "end: 2019-06-28\n"
        "include_baselines: false\n"
        "seeds: 3\n"
        "risk: {max_weight: 0.1}\n"
        "rules: {commission_bps: 2}\n"
    )
    flags = [
        "--agent", "equal_weight:21", "--agent", "random:21", "--allocate", "risk_parity",
        *RANGE, "--no-baselines", "--seeds", "2", "--risk", "max_weight=0.1",
        "--rule", "commission_bps=2",
    ]  # fmt: skip
    code, text = run_cli("evaluate", *flags, "--output", str(tmp_path / "a"))
    assert code == 0, text
    # the file, with --seeds 2 over its 3
    code, text = run_cli(
        "evaluate", "--config", str(config), "--seeds", "2", "--output", str(tmp_path / "b")
    )
    assert code == 0, text
    a, b = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in "ab")
    assert [r["agent"] for r in b["agents"]] == [
        "equal_weight:21",
        "random:21",
        "allocate:risk_parity",
    ]
    assert a["agents"] == b["agents"]
    assert b["settings"]["seeds"] == [0, 1]
    assert b["settings"]["risk"]["max_weight"] == 0.1
    assert b["settings"]["rules"]["commission_bps"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("agentz: [random]\n", r"eval.yaml: unknown setting\(s\) \['agentz'\]"),
        ("seeds: three\n", "eval.yaml: seeds='three': takes a whole number"),
        ("agents: random\n", "eval.yaml: agents='random': takes a list of names"),
        ("risk: {max_weight: 2, max_gross: 1}\n", "eval.yaml: risk.max_weight=2.0 exceeds"),
        ("start: 2019-02-30\n", "eval.yaml: not valid YAML: day is out of range"),
        ("[1, 2]\n", "the top level must be a mapping"),
        ("agents: [\n", "not valid YAML"),
    ],
)
def test_a_bad_evaluation_file_is_one_line_naming_it(tmp_path, content, message):
    config = tmp_path / "eval.yaml"
    config.write_text(content)
    code, text = run_cli("evaluate", "--config", str(config), "--output", str(tmp_path / "out"))
    assert code == 1 and "Traceback" not in text
    assert re.search(message, text), text
    code, text = run_cli("evaluate", "--config", str(tmp_path / "none.yaml"))
    assert code == 1 and "evaluation config not found" in text
