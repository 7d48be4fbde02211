"""What several commands share: exit codes, ``key=value`` options, the LLM options, the report."""

from __future__ import annotations

import argparse
import shlex
import threading
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from marketarena.envs.errors import ConfigError

if TYPE_CHECKING:
    from marketarena.evaluation.backends import Backend
    from marketarena.evaluation.evaluate import LLMRequestEstimate
    from marketarena.evaluation.report import EvaluationReport
    from marketarena.evaluation.runner import BacktestProgress

#: success; a user's mistake (one ``error:`` line); invalid market data (``data validate``);
#: Ctrl-C (128 + SIGINT, as a shell reports it)
EXIT_OK, EXIT_ERROR, EXIT_INVALID_DATA, EXIT_INTERRUPTED = 0, 1, 2, 130


def print_report(report: EvaluationReport, console: Console) -> None:
    """The metrics table, then a line per LLM agent (outcomes, tokens, latency)."""
    console.print(report.table())
    for note in report.notes():
        console.print(note, highlight=False)


def parse_assignments(items: Sequence[str] | None) -> dict[str, object]:
    """``key=value`` pairs; values parsed as YAML scalars (numbers, true/false, null)."""
    import yaml

    out: dict[str, object] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not a YAML value"
            raise ConfigError(f"{item!r}: the value is not valid YAML ({problem})") from None
    return out


def add_yes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--yes",
        action="store_true",
        help="run LLM agents past 1,000 requests (without it such a run is refused, with the "
        "count and the estimated tokens and cost)",
    )


def confirm_llm_requests(
    estimates: Sequence[LLMRequestEstimate], yes: bool, console: Console
) -> None:
    """Print what each LLM agent would ask for; refuse more than
    ``LLM_REQUESTS_CONFIRM_ABOVE`` requests without ``--yes``."""
    from marketarena.evaluation.evaluate import LLM_REQUESTS_CONFIRM_ABOVE

    for estimate in estimates:
        console.print(estimate.line(), highlight=False, soft_wrap=True)
        if estimate.requests > LLM_REQUESTS_CONFIRM_ABOVE and not yes:
            up_to = "up to " if estimate.upper_bound else ""
            raise ConfigError(
                f"{estimate.agent} would make {up_to}{estimate.requests:,} requests (more than "
                f"{LLM_REQUESTS_CONFIRM_ABOVE:,}): pass --yes to run it, or narrow "
                "--start/--end or raise --llm-decide-every"
            )


def parse_rules(items: Sequence[str] | None) -> dict[str, object]:
    """``--rule key=value`` pairs (:func:`parse_assignments`), each value checked against
    the type of its :class:`~marketarena.envs.simulator.TradingRules` field, so that
    ``lot_size=abc`` or ``max_weight=[1,2]`` is refused with the type it needs. Unknown names
    and ``preset`` are left to the rules themselves, which list the valid ones."""
    from marketarena.envs.settings import rule_type_error

    rules = parse_assignments(items)
    for key, value in rules.items():
        needed = rule_type_error(key, value)
        if needed:
            raise ConfigError(f"--rule {key}={value!r}: {needed}")
    return rules


def parse_risk(items: Sequence[str] | None) -> dict[str, object]:
    """``--risk key=value`` pairs (:func:`parse_assignments`), checked as risk rules
    (:class:`~marketarena.envs.risk.RiskSettings`) before anything runs, e.g. ``--risk
    max_weight=0.2 --risk drawdown_derisk="{0.1: 0.5}"``."""
    from marketarena.envs.risk import build_risk

    risk = parse_assignments(items)
    try:
        build_risk(risk)
    except ConfigError as exc:
        raise ConfigError(f"--risk: {exc}") from None
    return risk


RISK_HELP = (
    "a risk rule, e.g. --risk max_weight=0.2 --risk stop_loss=0.15 --risk sector_limit=0.4; "
    "rules: stop_loss, stop_cooldown, drawdown_derisk, vol_target, vol_lookback, max_weight, "
    "sector_limit, sector_limits, sectors, max_gross, max_net, min_net, max_turnover"
)


@typing.overload
def parse_date(value: str, option: str) -> str: ...
@typing.overload
def parse_date(value: None, option: str) -> None: ...
def parse_date(value: str | None, option: str) -> str | None:
    """A date option (``--start``, ``--end``) as ``YYYY-MM-DD``, or None when not given; a
    value that is no real date is an error naming the option."""
    from marketarena.envs.splits import iso_date

    return None if value is None else iso_date(value, option)


def shell_path(path: str | Path) -> str:
    """``path`` as a command to paste would hold it: relative to the working directory when
    inside it, quoted for the shell when needed."""
    path, cwd = Path(path).resolve(), Path.cwd().resolve()
    return shlex.quote(str(path.relative_to(cwd) if path.is_relative_to(cwd) else path))


def add_llm_options(parser: argparse.ArgumentParser) -> None:
    llm = parser.add_argument_group("LLM agents (--agent llm:<model> or llm:local)")
    llm.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL)")
    llm.add_argument(
        "--llm-cache",
        help="SQLite cache of requests/responses (default llm_cache.sqlite; '' for none)",
    )
    llm.add_argument("--llm-cache-mode", choices=["read_write", "read_only", "off"])
    llm.add_argument("--llm-decide-every", type=int, help="ask every N sessions, hold between")
    llm.add_argument("--llm-output", choices=["json_schema", "tool"])
    llm.add_argument(
        "--llm-answer",
        choices=["weights", "picks"],
        help="a weight per symbol (default), or up to 5 names held in equal weights, CASH "
        "among them: a short answer, for small local models",
    )
    llm.add_argument("--llm-anonymize", action="store_true", help="aliases instead of tickers")
    llm.add_argument("--llm-dates", choices=["real", "hidden", "shifted"])
    llm.add_argument("--llm-lookback", type=int, help="sessions of prices in the prompt")
    llm.add_argument(
        "--llm-indicator",
        action="append",
        metavar="NAME",
        help="an indicator or feature whose value at each decision is shown per symbol in the "
        "prompt, e.g. --llm-indicator rsi_14 (repeatable; marketarena indicators list)",
    )
    llm.add_argument(
        "--llm-price-levels",
        choices=["rebased", "raw", "adjusted"],
        help="price levels in the prompt: rebased to 100 at the window's start (default), raw "
        "(as printed that day; data with raw_close or adjustment_factor) or adjusted (the "
        "back-adjusted closes, which reveal later splits and dividends)",
    )
    llm.add_argument(
        "--llm-timeout",
        type=float,
        metavar="SECONDS",
        help="the longest wait for any read from the endpoint (default 60)",
    )
    llm.add_argument(
        "--llm-max-retries",
        type=int,
        metavar="N",
        help="retries of a failed request, with backoff (default 3)",
    )
    llm.add_argument(
        "--llm-deadline",
        type=float,
        metavar="SECONDS",
        help="the longest one decision's request may take in all, retries included "
        "(default: timeout x (retries + 1) + 10 s x retries)",
    )
    llm.add_argument(
        "--llm-retry-failed",
        action="store_true",
        help="ask again where the cache holds an unusable answer or an error",
    )


def add_backend_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("where the jobs run")
    group.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help=f'local (default: this process) or ray: {what} (needs pip install "marketarena[ray]")',
    )
    group.add_argument(
        "--address",
        help="with --backend ray: auto, host:port of a head node or ray://host:port "
        "(default: a local Ray started on demand with this machine's CPUs)",
    )
    group.add_argument(
        "--max-retries",
        type=int,
        default=3,
        help="with --backend ray: runs of a task whose worker or node died (default 3)",
    )


def backend_options(args: argparse.Namespace) -> Backend:
    """The :class:`~marketarena.evaluation.backends.Backend` the flags ask for, checked."""
    from marketarena.evaluation.backends import Backend

    backend = Backend(args.backend, args.address, args.max_retries)
    backend.validate()
    return backend


def backend_line(summary: dict[str, object] | None) -> str | None:
    """``ray: 12 tasks on 2 nodes, 1 retried after a worker or node failure`` (None for a
    local run)."""
    if not summary:
        return None
    retries = summary["retries"]
    return (
        f"ray: {summary['tasks']} tasks on {summary['nodes']} node(s), {retries} "
        f"retried after a worker or node failure"
    )


def llm_options(args: argparse.Namespace) -> dict[str, object]:
    """``LLMConfig`` fields from the ``--llm-*`` and ``--base-url`` flags that were given."""
    llm = {
        key: value
        for key, value in (
            ("base_url", args.base_url),
            ("cache_path", args.llm_cache or None),
            ("cache_mode", args.llm_cache_mode),
            ("decide_every", args.llm_decide_every),
            ("output", args.llm_output),
            ("answer", args.llm_answer),
            ("anonymize_tickers", args.llm_anonymize or None),
            ("dates", args.llm_dates),
            ("lookback", args.llm_lookback),
            ("price_levels", args.llm_price_levels),
            ("indicators", list(args.llm_indicator) if args.llm_indicator else None),
            ("timeout", args.llm_timeout),
            ("max_retries", args.llm_max_retries),
            ("deadline", args.llm_deadline),
            ("retry_failed", args.llm_retry_failed or None),
        )
        if value is not None
    }
    if args.llm_cache == "":
        llm["cache_path"] = None
    return llm


@contextmanager
def backtest_progress(console: Console) -> Iterator[BacktestProgress]:
    """A progress bar per backtest (``backtest 2: llm:local (seed 0)``) with its days counted,
    the time taken and an ETA; an LLM agent's bar moves with its decisions."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    started: dict[tuple[str, int], TaskID] = {}
    # shown from the first backtest update on, not before: a command that trains first (the
    # demo) has training's own bar on screen until then, and two live displays would fight
    progress = Progress(*columns, console=console, transient=True)
    lock = threading.Lock()  # evaluate --jobs N reports from several threads

    def update(agent: str, seed: int, step: int, total: int) -> None:
        key = (agent, seed)
        with lock:
            if key not in started:
                if not started:
                    progress.start()
                description = f"backtest {len(started) + 1}: {agent} (seed {seed})"
                started[key] = progress.add_task(description, total=total)
            task = started[key]
        progress.update(task, completed=step, total=total)
        if step >= total:
            progress.remove_task(task)

    try:
        yield update
    finally:
        if started:
            progress.stop()
