"""``marketarena demo``: agents on the bundled 20-stock panel (``marketarena.training.demo``)."""

from __future__ import annotations

import argparse

from rich.console import Console

from marketarena.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    parse_date,
    print_report,
    shell_path,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="agents on the bundled 20-stock panel, 2018-2022")
    demo.add_argument("--start", default="2018-01-02", help="first decision date")
    demo.add_argument("--end", default="2022-12-28", help="last mark date")
    demo.add_argument("--output", default="reports/demo", help="report folder ('' for none)")
    demo.add_argument(
        "--ppo-timesteps",
        type=int,
        default=8192,
        help="PPO training steps before the comparison (0: no PPO)",
    )
    demo.add_argument(
        "--llm-decide-every",
        type=int,
        default=63,
        help="sessions between the local LLM's decisions (0: no LLM)",
    )
    demo.set_defaults(handler=handle_demo)


def handle_demo(args: argparse.Namespace, console: Console) -> int:
    from marketarena.training.demo import DemoConfig, run_demo
    from marketarena.training.train import TrainingInterrupted

    config = DemoConfig(
        start=parse_date(args.start, "--start"),
        end=parse_date(args.end, "--end"),
        ppo_timesteps=args.ppo_timesteps,
        llm_decide_every=args.llm_decide_every,
    )
    console.print(
        f"[bold]marketarena demo[/bold]: {config.data} from {config.start} to {config.end}; "
        "decisions after each close, fills at the next close, "
        f"{config.commission_bps:g} bps commission + {config.slippage_bps:g} bps slippage",
        highlight=False,
    )
    try:
        report = run_demo(config, announce=lambda text: console.print(text, highlight=False))
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
