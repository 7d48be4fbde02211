"""``marketarena arena``: a tournament of agents trading one market at once."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from marketarena.agents.registry import SPEC_HELP
from marketarena.cli.common import (
    EXIT_OK,
    add_backend_options,
    add_llm_options,
    add_yes_option,
    backend_line,
    backend_options,
    confirm_llm_requests,
    llm_options,
    parse_assignments,
    parse_date,
    parse_rules,
)
from marketarena.envs.arena import REWARD_MODES
from marketarena.envs.data import BUNDLED
from marketarena.envs.errors import ConfigError
from marketarena.evaluation.ensembles import ENSEMBLE_KINDS

if TYPE_CHECKING:
    from marketarena.evaluation.arena import Match, TournamentProgress, TournamentResult


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "arena",
        help="a tournament: agents trade one market at once, rated by TrueSkill",
        description="Play a tournament in the arena (every pair of agents, or all at once, "
        "per period and seed; their orders move prices through the impact model) and write "
        "the match results, TrueSkill ratings, head-to-head table and per-agent report. "
        "Run the same command again to resume an interrupted tournament.",
    )
    p.add_argument("--agent", action="append", metavar="SPEC", help=f"repeatable: {SPEC_HELP}")
    p.add_argument(
        "--ensemble",
        action="append",
        choices=list(ENSEMBLE_KINDS),
        help="repeatable: an ensemble over all --agent members, as one more competitor",
    )
    p.add_argument(
        "--data", help=f"bundled name {sorted(BUNDLED)} or a CSV/Parquet path (default sp500_20)"
    )
    p.add_argument("--start", help="first date of the one period (default: the data's first)")
    p.add_argument("--end", help="last date of the one period (default: the data's last)")
    p.add_argument(
        "--period",
        action="append",
        metavar="START:END",
        help="repeatable, instead of --start/--end: a period YYYY-MM-DD:YYYY-MM-DD (either "
        "side may be empty: the data's end)",
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per period (default 1)")
    p.add_argument(
        "--impact",
        action="append",
        metavar="KEY=VALUE",
        help="the impact model, e.g. --impact eta=0.1 --impact gamma=0.05; keys: eta, beta, "
        "gamma, window, noise_scale (default: no impact); impact needs data with volume, e.g. "
        "--data sp500_ohlcv_30",
    )
    p.add_argument(
        "--reward",
        choices=list(REWARD_MODES),
        default="absolute",
        help="the arena's reward (agents are ranked by return whatever it is)",
    )
    p.add_argument(
        "--format",
        choices=["pairs", "all"],
        default="pairs",
        help="pairs: every pair meets (default); all: every agent in every match",
    )
    p.add_argument(
        "--rule",
        action="append",
        metavar="KEY=VALUE",
        help="a trading rule for every seat, e.g. --rule commission_bps=2",
    )
    p.add_argument(
        "--window",
        type=int,
        help="observation window (default: what trained models expect, else the env's)",
    )
    add_yes_option(p)
    add_backend_options(p, "every match a Ray task, the ratings and tables the same")
    add_llm_options(p)
    p.add_argument("--out", default="reports/arena", help="output folder (default reports/arena)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the tournament in --out (refused if there is none); the same command "
        "without it resumes too",
    )
    p.add_argument("--mlflow", action="store_true", help="log the tournament as an MLflow run")
    p.add_argument("--experiment", default="marketarena-arena")
    p.set_defaults(handler=handle_arena)


def parse_periods(
    items: Sequence[str] | None, start: str | None, end: str | None
) -> tuple[tuple[str | None, str | None], ...]:
    """``--period START:END`` (repeatable) or ``--start``/``--end`` (one period)."""
    if items and (start or end):
        raise ConfigError("give --period or --start/--end, not both")
    if not items:
        return ((parse_date(start, "--start"), parse_date(end, "--end")),)
    out = []
    for item in items:
        first, sep, last = item.partition(":")
        if not sep:
            raise ConfigError(f"--period {item!r}: expected START:END, e.g. 2019-01-02:2019-12-31")
        option = f"--period {item}:"
        out.append((parse_date(first or None, option), parse_date(last or None, option)))
    return tuple(out)


def handle_arena(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.arena import (
        Tournament,
        llm_request_estimates,
        log_tournament,
        run_tournament,
    )
    from marketarena.evaluation.tracking import tracking_uri

    settings: dict[str, Any] = {}
    if args.data:
        settings["data"] = args.data
    config = Tournament(
        agents=tuple(args.agent or ()),
        ensembles=tuple(args.ensemble or ()),
        periods=parse_periods(args.period, args.start, args.end),
        seeds=args.seeds,
        impact=parse_assignments(args.impact),
        reward=args.reward,
        format=args.format,
        rules=parse_rules(args.rule),
        window=args.window,
        llm=llm_options(args),
        tracking_uri=tracking_uri(),
        backend=backend_options(args),
        **settings,
    )
    config.validate()  # before the estimates: they resolve the periods
    confirm_llm_requests(llm_request_estimates(config), args.yes, console)
    with tournament_progress(console) as update:
        result = run_tournament(config, args.out, resume=args.resume, progress=update)
    if result.skipped:
        console.print(
            f"resumed: {result.skipped} of {len(result.records)} matches were already played",
            highlight=False,
        )
    console.print(ratings_table(result))
    console.print(head_to_head_table(result))
    where = backend_line(result.settings.get("backend"))
    if where:
        console.print(where, highlight=False)
    console.print(
        f"wrote {args.out}: matches.jsonl, ratings.csv, head_to_head.csv, report.md, "
        "agents/ (metrics per agent, report.html)",
        highlight=False,
    )
    if args.mlflow:
        from marketarena.evaluation.tracking import ui_command

        run_id = log_tournament(result, experiment=args.experiment)
        console.print(
            f"MLflow run {run_id} in {tracking_uri()}; view it: {ui_command()}", highlight=False
        )
    return EXIT_OK


def ratings_table(result: TournamentResult) -> Table:
    level = result.settings["bootstrap"]["level"]
    table = Table(
        title=f"TrueSkill ratings after {len(result.records)} matches",
        title_justify="left",
        caption=f"conservative = mu - 3 sigma; \\[brackets]: {level:.0%} bootstrap interval "
        "of the mean match return",
        caption_justify="left",
    )
    for name in ("agent", "conservative", "mu", "sigma", "matches", "W-D-L", "mean return"):
        table.add_column(name, justify="left" if name == "agent" else "right", no_wrap=True)
    for r in result.ratings:
        table.add_row(
            escape(r["agent"]),
            f"{r['conservative']:.2f}",
            f"{r['mu']:.2f}",
            f"{r['sigma']:.2f}",
            str(r["matches"]),
            f"{r['wins']}-{r['draws']}-{r['losses']}",
            f"{_pct(r['mean_return'])} \\[{_pct(r['mean_return_ci_low'])}, "
            f"{_pct(r['mean_return_ci_high'])}]",
        )
    return table


def head_to_head_table(result: TournamentResult) -> Table:
    table = Table(
        title="Head to head (the agent's wins-draws-losses against the opponent)",
        title_justify="left",
    )
    for name in ("agent", "opponent", "matches", "W-D-L", "mean return difference"):
        table.add_column(name, justify="left" if name in ("agent", "opponent") else "right")
    for r in result.head_to_head:
        table.add_row(
            escape(r["agent"]),
            escape(r["opponent"]),
            str(r["matches"]),
            f"{r['wins']}-{r['draws']}-{r['losses']}",
            _pct(r["mean_return_difference"]),
        )
    return table


def _pct(value: float) -> str:
    return "nan" if value != value else f"{value:+.2%}"


@contextmanager
def tournament_progress(console: Console) -> Iterator[TournamentProgress]:
    """Two bars: matches done of all (with the time taken and an ETA), and the playing
    match's days."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}
    current: list[int] = []

    def update(done: int, total: int, match: Match, step: int, steps: int) -> None:
        if not tasks:
            progress.start()
            tasks["all"] = progress.add_task("matches", total=total, completed=done)
            tasks["match"] = progress.add_task("", total=steps)
        progress.update(tasks["all"], completed=done)
        if current != [match.index]:
            current[:] = [match.index]
            label = f"match {match.index + 1}: {' vs '.join(match.agents)} (seed {match.seed})"
            progress.reset(tasks["match"], total=steps, description=label)
        progress.update(tasks["match"], completed=step, total=steps)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()
