"""``marketarena selfplay``: self-play PPO in the arena from a YAML config."""

from __future__ import annotations

import argparse

from rich.console import Console

from marketarena.cli.common import EXIT_INTERRUPTED, EXIT_OK, shell_path
from marketarena.envs.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser(
        "selfplay",
        help="train PPO by self-play against a league in the arena",
        description="Self-play PPO: one policy trades the learner seats of several arena "
        "markets against the latest self, past snapshots and fixed opponents; logs to MLflow. "
        "See configs/selfplay/sp500.yaml.",
    )
    sp.add_argument("--config", help="YAML config (see configs/selfplay/sp500.yaml)")
    sp.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set algo.total_timesteps=5000 --set league.snapshot_every=1024",
    )
    sp.set_defaults(handler=handle_selfplay)


def handle_selfplay(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.tracking import tracking_uri, ui_command
    from marketarena.training.selfplay import (
        league_record_lines,
        load_selfplay_config,
        train_selfplay,
    )

    if not args.config and not args.set:
        raise ConfigError(
            "give --config FILE (see configs/selfplay/sp500.yaml) and/or --set key=value"
        )
    config = load_selfplay_config(args.config, args.set or ())
    try:
        result = train_selfplay(config)
    except KeyboardInterrupt:
        console.print("interrupted: self-play runs do not resume; start it again", highlight=False)
        return EXIT_INTERRUPTED
    members = [m["name"] for m in result.league["members"]]
    console.print(f"[bold]trained[/bold] {result.timesteps:,} timesteps", highlight=False)
    console.print(f"league: {', '.join(members)}", highlight=False, soft_wrap=True)
    for line in league_record_lines(result.record):
        console.print(line, highlight=False)
    console.print(f"model: {shell_path(result.model_dir)}", highlight=False, soft_wrap=True)
    console.print(f"run folder: {shell_path(result.run_dir)}", highlight=False, soft_wrap=True)
    if result.run_id:
        console.print(
            f"MLflow run {result.run_id} in {tracking_uri()}; view it: {ui_command()}",
            highlight=False,
            soft_wrap=True,
        )
    return EXIT_OK
