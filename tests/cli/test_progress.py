"""The progress bars of long phases: counts and an ETA, per backtest and per validation."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from marketarena.cli.common import backtest_progress
from marketarena.training.callbacks import RichProgress


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, color_system=None, width=140), out


def test_a_backtest_bar_shows_its_place_the_days_done_of_the_total_and_an_eta():
    console, out = terminal()
    with backtest_progress(console) as update:
        update("ppo", 0, 0, 40)
        update("ppo", 0, 17, 40)
        update("llm:local", 1, 0, 40)
        update("llm:local", 1, 40, 40)  # done: its bar goes
    text = out.getvalue()
    assert "backtest 1: ppo (seed 0)" in text
    assert "backtest 2: llm:local (seed 1)" in text
    assert "17/40 days" in text
    assert "ETA" in text


def test_nothing_is_drawn_before_the_first_backtest():
    """The demo trains inside the backtest progress context: until a backtest reports, the
    training bar has the terminal to itself."""
    console, out = terminal()
    with backtest_progress(console):
        pass  # what the demo's training does, as far as this bar is concerned
    assert out.getvalue() == ""  # a started display writes at least its cursor codes


def test_training_shows_a_validation_backtest_beside_its_bar():
    console, _ = terminal()
    bar = RichProgress(total=1000, start=0, description="ppo demo")
    bar.validation(5, 20)  # before training starts: nothing to draw on, no error
    bar._progress = Progress(console=console)  # what _on_training_start builds
    bar._task = bar._progress.add_task("ppo demo", total=1000)
    bar._progress.start()
    bar.validation(0, 20)
    bar.validation(7, 20)
    task = bar._progress.tasks[-1]
    assert (task.description, task.completed, task.total) == ("validation backtest", 7, 20)
    bar.validation(20, 20)
    assert [t.description for t in bar._progress.tasks] == ["ppo demo"]  # removed when done
    bar.close()
