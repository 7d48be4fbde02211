"""The command line's errors: a user's mistake is one line and exit code 1, a bug a traceback.

Every user error is a :class:`~marketarena.envs.errors.MarketArenaError`, which also is the
builtin that callers caught before (``ValueError``, ``KeyError``, ``FileNotFoundError``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from rich.console import Console

from marketarena.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from marketarena.envs import (
    ConfigError,
    DataError,
    DataValidationError,
    MarketArenaError,
    MissingFileError,
    UnknownNameError,
)
from marketarena.evaluation.saved_runs import persisted, read_trade_log
from marketarena.evaluation.saved_runs.store import RunNotFound


def run(argv: list[str]) -> tuple[int, str]:
    console = Console(record=True, width=120)  # narrow: a long error must still be one line
    code = main(argv, console=console)
    return code, console.export_text()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a command might write lands in the repository
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


EVALUATE = ["evaluate", "--agent", "equal_weight", "--no-baselines"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # an agent spec, a data source, dates, rules: each from its own layer
        (["evaluate", "--agent", "nope"], "unknown agent 'nope'; use buy_and_hold, "),
        (["evaluate", "--agent", "equal_weight:0"], "the rebalancing period must be >= 1"),
        (["evaluate", "--agent", "missing.zip"], "agent 'missing.zip': no saved model at"),
        ([*EVALUATE, "--data", "nowhere.csv"], "unknown data 'nowhere.csv': not a bundled"),
        ([*EVALUATE, "--start", "2030-01-02"], "no trading date on or after 2030-01-02"),
        ([*EVALUATE, "--start", "2020-01-02", "--end", "2019-01-02"], "empty date range"),
        ([*EVALUATE, "--rule", "comission_bps=1"], "unknown trading rule(s) ['comission_bps']"),
        ([*EVALUATE, "--rule", "commission_bps=-1"], "TradingRules.commission_bps=-1: must be"),
        ([*EVALUATE, "--rule", "preset=nasdaq"], "unknown rules preset 'nasdaq'"),
        ([*EVALUATE, "--rule", "lot_size"], "expected key=value, got 'lot_size'"),
        ([*EVALUATE, "--window", "0"], "window must be >= 1, got 0"),
        (["evaluate", "--agent", "reference:Nope"], "unknown task 'Nope'; the tasks are: "),
        # saved runs
        (["positions", "--run", "nope"], "no run 'nope' in runs.sqlite; runs: []"),
        (["leaderboard"], "no finished runs in runs.sqlite"),
        (["backtest", "--resume", "nope"], "no run 'nope' in runs.sqlite"),
        (["backtest", "--agent", "random"], "a new run needs --start and --end"),
        # configs and files
        (["train", "--config", "missing.yaml"], "config file not found: missing.yaml"),
        (["train", "--set", "seed"], "override 'seed': expected key.sub=value"),
    ],
)
def test_a_users_mistake_is_one_line_and_exit_code_1(argv, message):
    code, text = run(argv)
    assert code == EXIT_ERROR == 1, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], text


def test_a_config_with_several_problems_lists_them_under_one_error():
    code, text = run(["train", "--set", "env.windw=3", "--set", "algo.nme=ppo"])
    assert code == EXIT_ERROR
    assert text.strip().splitlines() == [
        "error: invalid config in defaults with overrides env.windw=3 algo.nme=ppo:",
        "  - env.windw: unknown key",
        "  - algo.nme: unknown key",
    ]


@pytest.mark.parametrize("bug", [KeyError, ValueError, FileNotFoundError, TypeError])
def test_a_bug_is_a_traceback(monkeypatch, bug):
    """What ``main`` caught before (KeyError, ValueError, FileNotFoundError) is no longer
    mistaken for the user's: it propagates, and Python prints its traceback."""

    def broken(*args, **kwargs):
        raise bug("a bug in the library")

    monkeypatch.setattr(persisted, "leaderboard", broken)
    with pytest.raises(bug, match="a bug in the library"):
        run(["leaderboard"])


def test_ctrl_c_is_one_line_and_exit_code_130(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(persisted, "leaderboard", interrupted)
    code, text = run(["leaderboard"])
    assert code == EXIT_INTERRUPTED == 130 and text.strip() == "interrupted"


def test_the_installed_command_prints_a_mistake_without_a_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "marketarena.cli", "evaluate", "--agent", "nope"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stdout.strip().splitlines()  # however long: the terminal folds it, not rich
    assert len(lines) == 1 and lines[0].startswith("error: unknown agent 'nope'; use "), lines
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ConfigError, ValueError),
        (DataError, ValueError),
        (DataValidationError, ValueError),
        (UnknownNameError, KeyError),
        (RunNotFound, KeyError),
        (MissingFileError, FileNotFoundError),
    ],
)
def test_user_errors_are_also_the_builtins_callers_catch(error, builtin):
    assert issubclass(error, MarketArenaError) and issubclass(error, builtin)


def test_a_missing_trade_log_is_a_missing_file():
    with pytest.raises(MissingFileError, match=r"trade log not found: x\.jsonl"):
        read_trade_log("x.jsonl")


def test_an_unknown_name_prints_as_its_message():
    # KeyError's own str() is the repr of its argument, quotes and all
    assert str(UnknownNameError("no run 'x'")) == "no run 'x'"
    assert str(MissingFileError("no file x")) == "no file x"
