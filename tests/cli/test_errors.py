"""The command line's errors: a user's mistake is one line and exit code 1, a bug a traceback.

Every user error is a :class:`~marketarena.envs.errors.MarketArenaError`, which also is the
builtin that callers caught before (``ValueError``, ``KeyError``, ``FileNotFoundError``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from contextlib import closing

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
from marketarena.evaluation.saved_runs.store import RunNotFound, RunStore


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
        # a rule of the wrong type: named with the type it takes, not a numpy message
        ([*EVALUATE, "--rule", "lot_size=abc"], "--rule lot_size='abc': lot_size takes a number"),
        ([*EVALUATE, "--rule", "max_weight=[1,2]"], "--rule max_weight=[1, 2]: max_weight takes"),
        ([*EVALUATE, "--rule", "allow_short=maybe"], "allow_short takes true or false"),
        # dates are dates, not strings compared as strings
        (
            [*EVALUATE, "--start", "2018-13-45", "--end", "2018-12-01"],
            "--start '2018-13-45' is not a date: write it as YYYY-MM-DD",
        ),
        ([*EVALUATE, "--start", "2018-01-02", "--end", "13/01/2019"], "--end '13/01/2019' is not"),
        (
            ["backtest", "--agent", "random", "--start", "2020-02-30", "--end", "2020-03-31"],
            "--start '2020-02-30' is not a date",
        ),
        ([*EVALUATE, "--window", "0"], "window must be >= 1, got 0"),
        (["evaluate", "--agent", "reference:Nope"], "unknown task 'Nope'; the tasks are: "),
        # saved runs: reading one or resuming one needs the database it is in
        (["positions", "--run", "nope"], "no runs database runs.sqlite: a new run creates it"),
        (["leaderboard"], "no runs database runs.sqlite"),
        (["backtest", "--resume", "nope"], "no runs database runs.sqlite"),
        (["backtest", "--continue", "nope", "--end", "2021-01-04"], "no runs database"),
        (["backtest", "--agent", "random"], "a new run needs --start and --end"),
        (
            [
                "backtest",
                "--agent",
                "random",
                "--start",
                "2020-01-02",
                "--end",
                "2020-02-03",
                "--seed",
                "-1",
            ],
            "seed must be a whole number >= 0, got -1",
        ),
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
    RunStore("runs.sqlite").close()  # the leaderboard reads an existing database
    with pytest.raises(bug, match="a bug in the library"):
        run(["leaderboard"])


def test_ctrl_c_is_one_line_and_exit_code_130(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(persisted, "leaderboard", interrupted)
    RunStore("runs.sqlite").close()
    code, text = run(["leaderboard"])
    assert code == EXIT_INTERRUPTED == 130 and text.strip() == "interrupted"


BACKTEST = ["backtest", "--agent", "equal_weight:5", "--start", "2020-01-02", "--end", "2020-02-03"]


def test_ctrl_c_in_a_backtest_prints_how_to_resume_it(monkeypatch):
    record_day, days = RunStore.record_day, []

    def interrupted_on_day_3(self, *args, **kwargs):
        record_day(self, *args, **kwargs)
        days.append(args[1])
        if len(days) == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(RunStore, "record_day", interrupted_on_day_3)
        code, text = run([*BACKTEST, "--store", "my runs.sqlite"])
    assert code == EXIT_INTERRUPTED
    hint = (
        "interrupted after 3 completed day(s): resume with marketarena backtest --resume "
        "equal_weight:5@2020-01-02 --store 'my runs.sqlite'"
    )
    assert text.strip() == hint
    # the command it prints finishes the run
    resume = ["--resume", "equal_weight:5@2020-01-02", "--store", "my runs.sqlite"]
    code, text = run(["backtest", *resume])
    assert code == 0, text
    with closing(RunStore("my runs.sqlite", create=False)) as store:
        assert store.run("equal_weight:5@2020-01-02").status == "finished"


def test_ctrl_c_before_a_backtest_stored_anything_says_so(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(persisted, "_build", interrupted)
    code, text = run(BACKTEST)
    assert code == EXIT_INTERRUPTED
    assert text.strip() == "interrupted before the run started: nothing was stored"


def test_a_refused_backtest_leaves_its_name_free():
    code, text = run([*BACKTEST, "--seed", "-1"])
    assert code == EXIT_ERROR and "seed must be a whole number >= 0" in text
    code, text = run(BACKTEST)  # the same name, now with a valid seed
    assert code == 0, text
    code, text = run(BACKTEST)
    assert code == EXIT_ERROR and "run 'equal_weight:5@2020-01-02' already exists" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["positions", "--run", "nope", "--store", "typo.sqlite"],
        ["leaderboard", "--store", "typo.sqlite"],
        ["backtest", "--resume", "nope", "--store", "typo.sqlite"],
    ],
)
def test_reading_runs_never_creates_a_database(tmp_path, argv):
    code, text = run(argv)
    assert code == EXIT_ERROR and "no runs database typo.sqlite" in text
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_runs_database_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not SQLite")
    code, text = run(["leaderboard", "--store", "notes.txt"])
    assert code == EXIT_ERROR and "notes.txt is not a runs database" in text
    assert (tmp_path / "notes.txt").read_text() == "not SQLite"


def test_the_installed_command_prints_a_mistake_without_a_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "marketarena.cli", "evaluate", "--agent", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
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


def test_an_llm_run_of_thousands_of_requests_needs_yes(tmp_path):
    """No date range: an LLM agent would decide daily over 33 years. The run is refused
    before any request, with the count and the estimated tokens."""
    from rich.console import Console

    from marketarena.agents.llm_server import free_port
    from marketarena.cli import main

    dead = f"http://127.0.0.1:{free_port()}/v1"  # any request would fail: none is made
    console = Console(record=True, width=400)
    code = main(
        ["evaluate", "--agent", "llm:gpt-x", "--base-url", dead, "--output", str(tmp_path / "out")],
        console=console,
    )
    text = console.export_text()
    assert code == 1 and "Traceback" not in text
    assert re.search(r"llm:gpt-x would make 8,\d{3} requests \(more than 1,000\)", text), text
    assert "--yes" in text and "prompt" in text and "cost unknown" in text


def test_llm_request_estimates_count_decisions_tokens_and_cost():
    from marketarena.evaluation.evaluate import EvaluationConfig, llm_request_estimates

    config = EvaluationConfig(
        agents=("equal_weight", "llm:m"),
        data="sp500_20",
        start="2019-01-02",
        end="2019-12-31",
        llm={"decide_every": 21, "prices": {"m": (1.0, 4.0)}},
    )
    (estimate,) = llm_request_estimates(config)
    sessions = 251  # 252 trading dates in 2019: 251 decisions, one every 21 -> 12
    assert estimate.requests == -(-sessions // 21) == 12
    assert estimate.prompt_tokens == 12 * (180 + 30 * 20)
    assert estimate.completion_tokens == 12 * 12 * 20
    assert estimate.cost_usd == pytest.approx((9360 * 1.0 + 2880 * 4.0) / 1e6)
    assert llm_request_estimates(EvaluationConfig(agents=("equal_weight",))) == []


def test_version_prints_the_installed_version(capsys):
    import importlib.metadata

    from marketarena.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert (
        capsys.readouterr().out.strip()
        == f"marketarena {importlib.metadata.version('marketarena')}"
    )
