"""``marketarena demo``: agents on the bundled 20-stock panel (``marketarena.training.demo``)."""

from __future__ import annotations

import argparse

from rich.console import Console

from marketarena.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    backtest_progress,
    parse_date,
    print_report,
    shell_path,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="agents on the bundled 20-stock panel, 2018-2022")
    # no defaults here: DemoConfig (training/demo.py) is the one place they are written, and
    # importing it (torch, SB3) would slow every command's start
    demo.add_argument("--start", help="first decision date (default: the demo's)")
    demo.add_argument("--end", help="last mark date (default: the demo's)")
    demo.add_argument("--output", default="reports/demo", help="report folder ('' for none)")
    demo.add_argument(
        "--ppo-timesteps",
        type=int,
        help="PPO training steps before the comparison (default: the demo's; 0: no PPO)",
    )
    demo.add_argument(
        "--llm-decide-every",
        type=int,
        help="sessions between the local LLM's decisions (default: the demo's, 252: one a "
        "year; 0: no LLM)",
    )
    demo.add_argument(
        "--llm-answer",
        choices=["picks", "weights"],
        help="the local LLM's answer: up to 5 names held in equal weights, CASH among them "
        "(the demo's default: a short answer), or a weight per symbol",
    )
    demo.set_defaults(handler=handle_demo)


def handle_demo(args: argparse.Namespace, console: Console) -> int:
    from marketarena.training.demo import DemoConfig, run_demo
    from marketarena.training.train import TrainingInterrupted

    given = {
        "start": parse_date(args.start, "--start") if args.start else None,
        "end": parse_date(args.end, "--end") if args.end else None,
        "ppo_timesteps": args.ppo_timesteps,
        "llm_decide_every": args.llm_decide_every,
        "llm_answer": args.llm_answer,
    }
    config = DemoConfig(**{key: value for key, value in given.items() if value is not None})
    console.print(
        f"[bold]marketarena demo[/bold]: {config.data} from {config.start} to {config.end}; "
        "decisions after each close, fills at the next close, "
        f"{config.commission_bps:g} bps commission + {config.slippage_bps:g} bps slippage",
        highlight=False,
    )
    try:
        with backtest_progress(console) as progress:
            report = run_demo(
                config,
                announce=lambda text: console.print(text, highlight=False),
                progress=progress,
            )
    except KeyboardInterrupt as stop:
        # the demo itself does not resume: it runs again from the start, quickly where the
        # local LLM's answers are cached (each is stored as it arrives)
        line = "interrupted: run marketarena demo again to start over"
        if isinstance(stop, TrainingInterrupted):
            line += f" (the interrupted PPO run is in {shell_path(stop.run_dir)})"
        elif config.llm_decide_every > 0:
            line += "; the local LLM's answers so far are cached and replay in seconds"
        console.print(line, highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    print_report(report, console)
    if args.output:
        files = report.write(args.output)
        console.print(f"report: {files['html']}", highlight=False)
    return EXIT_OK
