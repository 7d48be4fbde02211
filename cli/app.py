"""``marketarena``: the parser of every command, and ``main``, which runs one.

``main(argv)`` returns the exit code, so tests drive it in-process. (The module is not called
``main``: the package re-exports the function ``main``, which would hide a module of that name.)

A user's mistake (:class:`~marketarena.envs.errors.MarketArenaError`: a bad option, config,
file, date range or agent spec) is one line, ``error: ...``, and exit code 1; Ctrl-C is one
line and exit code 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from marketarena.cli import (
    arena,
    bench,
    data,
    demo,
    evaluate,
    indicators,
    llm,
    mcp,
    paper,
    replay,
    runs,
    schedule,
    selfplay,
    serve,
    training,
)
from marketarena.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_INVALID_DATA, EXIT_OK
from marketarena.envs.errors import MarketArenaError

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_INVALID_DATA", "EXIT_OK", "build_parser", "main"]


def _version() -> str:
    """The installed distribution's version (pyproject.toml's ``version``)."""
    try:
        return importlib.metadata.version("marketarena")
    except importlib.metadata.PackageNotFoundError:  # run from a tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marketarena",
        description="LLM and RL agents trading the same simulated portfolio.",
    )
    parser.add_argument("--version", action="version", version=f"marketarena {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in (demo, evaluate, training, bench, replay, runs, llm, data, indicators, serve, mcp):
        group.register(subparsers)
    schedule.register(subparsers)
    paper.register(subparsers)
    selfplay.register(subparsers)
    arena.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if console is None:
        # no emoji codes: an agent named llm:m prints "llm:m: ..." (":m:" is an emoji code)
        console = Console(emoji=False)
        if not console.is_terminal:  # pipes and CI logs: don't squeeze tables into 80 columns
            console = Console(width=180, emoji=False)
    # MLflow announces database migrations and new experiments at INFO; the CLI says what it
    # logs where itself, so keep MLflow's warnings only (MLflow reads this when imported)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        return args.handler(args, console)
    except MarketArenaError as exc:
        # soft wrap: a long message stays one line in a log (the terminal folds it)
        console.print(
            f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True, emoji=False
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        console.print("interrupted", highlight=False)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
