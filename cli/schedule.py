"""``marketarena schedule FILE``: scheduled simulations from a YAML file (see
:mod:`marketarena.service.schedule` for the file, the timing and the history)."""

from __future__ import annotations

import argparse
import threading

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from marketarena.cli.common import EXIT_INTERRUPTED, EXIT_OK, shell_path


def register(subparsers: argparse._SubParsersAction) -> None:
    sc = subparsers.add_parser(
        "schedule",
        help="scheduled simulations (continue backtests, trade paper runs) from a YAML file",
        description="Validate a schedule file (cron, after_close or interval entries with time "
        "zones; each continues a stored backtest or trades a paper run), print every entry's "
        "next firings in its time zone, then run them until Ctrl-C. Every firing, skip, miss, "
        "success and failure is logged and appended to the history file (JSON lines).",
    )
    sc.add_argument("file", help="the schedule's YAML file")
    sc.add_argument(
        "--dry-run", action="store_true", help="print the next firings and exit without running"
    )
    sc.add_argument("--count", type=int, default=3, help="next firings printed per entry")
    sc.set_defaults(handler=handle_schedule)


def handle_schedule(args: argparse.Namespace, console: Console) -> int:
    from marketarena.service.schedule import ScheduleEvent, Scheduler, load_schedule, utc_now

    schedule = load_schedule(args.file)
    now = utc_now()
    table = Table(title=f"schedule {args.file}: next firings", title_justify="left")
    for col in ("entry", "when", "time zone", "action", "next firings"):
        table.add_column(col)
    for entry in schedule.entries:
        firings = entry.next_firings(now, max(args.count, 1))
        table.add_row(
            entry.name,
            entry.when,
            str(entry.timezone),
            f"{entry.action} {entry.run}",
            "\n".join(f.strftime("%Y-%m-%d %H:%M:%S %Z") for f in firings) or "never",
        )
    console.print(table)
    if args.dry_run:
        return EXIT_OK

    tenths: dict[str, int] = {}  # per entry, the tenth of its run last printed

    def progress(entry: str, date: str, fraction: float) -> None:
        if fraction == fraction:  # known: a line for each tenth of the run done
            if tenths.get(entry) == int(fraction * 10):
                return
            tenths[entry] = int(fraction * 10)
            console.print(f"  {escape(entry)}: {date} ({fraction:.0%})", highlight=False)
        else:
            console.print(f"  {escape(entry)}: {date}", highlight=False)

    def show(event: ScheduleEvent) -> None:
        if event.event == "fired":
            tenths.pop(event.entry, None)
        when = event.time.strftime("%Y-%m-%d %H:%M:%S UTC")
        colour = {"failed": "red", "missed": "yellow", "skipped": "yellow"}.get(event.event)
        name = f"[{colour}]{event.event}[/{colour}]" if colour else event.event
        console.print(
            f"{when} {escape(event.entry)}: {name} {escape(event.detail)}",
            highlight=False,
            soft_wrap=True,
        )

    console.print(
        f"running until Ctrl-C; history in {shell_path(schedule.history)}", highlight=False
    )
    scheduler = Scheduler(schedule, report=show, progress=progress)
    stop = threading.Event()
    try:
        scheduler.run(stop)
    except KeyboardInterrupt:
        stop.set()
        running = scheduler.running()
        console.print(
            "stopped"
            + (
                f"; still running: {', '.join(running)} (a run stopped mid-way is resumed by "
                "its next firing)"
                if running
                else ""
            ),
            highlight=False,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK
