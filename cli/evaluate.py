"""``marketarena evaluate``: compare agents over one date range."""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from rich.console import Console

from marketarena.agents.registry import SPEC_HELP
from marketarena.cli.common import (
    EXIT_OK,
    RISK_HELP,
    add_backend_options,
    add_llm_options,
    add_yes_option,
    backend_line,
    backend_options,
    backtest_progress,
    confirm_llm_requests,
    llm_options,
    parse_date,
    parse_risk,
    parse_rules,
    print_report,
)
from marketarena.envs.data import BUNDLED
from marketarena.envs.regimes import REGIME_KINDS
from marketarena.evaluation.allocation import ALLOCATION_METHODS
from marketarena.evaluation.ensembles import ENSEMBLE_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "evaluate",
        help="compare agents over one date range",
        description="Backtest agents (with buy-and-hold and equal weight alongside) and "
        "write a metrics table, plots and an HTML report.",
    )
    ev.add_argument(
        "--config",
        metavar="FILE",
        help="a YAML file of evaluation settings (agents, data, start, end, seeds, ensembles, "
        "allocations, rules, risk, window, ...); flags given here override it (--rule and "
        "--risk add to its rules and risk)",
    )
    ev.add_argument("--agent", action="append", metavar="SPEC", help=f"repeatable: {SPEC_HELP}")
    ev.add_argument(
        "--ensemble",
        action="append",
        choices=list(ENSEMBLE_KINDS),
        help="repeatable: an ensemble over all --agent members",
    )
    ev.add_argument(
        "--allocate",
        action="append",
        choices=list(ALLOCATION_METHODS),
        help="repeatable: a multi-strategy allocator with a sleeve per --agent member, "
        "weighted by this method from the sleeves' trailing returns (skfolio)",
    )
    ev.add_argument(
        "--regimes",
        action="append",
        choices=list(REGIME_KINDS),
        help="repeatable: split every agent's performance by market regime (trend: bull/bear/"
        "sideways; volatility: low/normal/high bands; hmm: a filtered Gaussian HMM's calm/"
        "turbulent states), detected point-in-time on the universe's equal-weighted index",
    )
    ev.add_argument(
        "--data", help=f"bundled name {sorted(BUNDLED)} or a CSV/Parquet path (default sp500_20)"
    )
    ev.add_argument(
        "--news",
        metavar="FILE",
        help="news events (CSV/JSONL: published_at with timezone, symbol, headline, optional "
        "body, score, event): news_count, sentiment and event_<kind> features, and the latest "
        "headlines in llm: agents' prompts",
    )
    ev.add_argument(
        "--macro",
        metavar="FILE",
        help="economic indicators (CSV: series, observation_date, release_date, value; a row "
        "per vintage): macro_<series> features, each visible from its release",
    )
    ev.add_argument("--start", help="first date (default: the data's first usable date)")
    ev.add_argument("--end", help="last date (default: the data's last)")
    ev.add_argument("--seeds", type=int, help="seeds per agent (0..N-1; default 1)")
    ev.add_argument(
        "--benchmark",
        help="bundled name or path of a one-column series; 'auto' (the default) or 'none'",
    )
    ev.add_argument(
        "--rule",
        action="append",
        metavar="KEY=VALUE",
        help="a trading rule, e.g. --rule commission_bps=2 --rule lot_size=1",
    )
    ev.add_argument("--risk", action="append", metavar="KEY=VALUE", help=RISK_HELP)
    ev.add_argument(
        "--window",
        type=int,
        help="observation window (default: what the trained models expect, else the env's default)",
    )
    ev.add_argument("--periods-per-year", type=int, help="bars per year (default 252)")
    ev.add_argument("--risk-free", type=float, help="annual risk-free rate (default 0)")
    ev.add_argument(
        "--no-baselines", action="store_true", help="do not add buy-and-hold and equal weight"
    )
    ev.add_argument(
        "--jobs",
        "--n-jobs",  # tune's spelling: the same flag works in both commands
        dest="jobs",
        type=int,
        help="agents backtested in parallel threads (default 1)",
    )
    add_yes_option(ev)
    add_backend_options(ev, "every (agent, seed) backtest a Ray task, the report the same")
    add_llm_options(ev)
    ev.add_argument("--output", default="reports/evaluation", help="report folder")
    ev.add_argument("--mlflow", action="store_true", help="log the evaluation as an MLflow run")
    ev.add_argument("--experiment", default="marketarena-evaluation")
    ev.set_defaults(handler=handle_evaluate)


def handle_evaluate(args: argparse.Namespace, console: Console) -> int:
    from marketarena.evaluation.evaluate import (
        EvaluationConfig,
        evaluate,
        llm_request_estimates,
        load_evaluation_file,
    )
    from marketarena.evaluation.tracking import tracking_uri

    settings = load_evaluation_file(args.config) if args.config else {}
    rules = {**(settings.pop("rules", None) or {}), **parse_rules(args.rule)}
    risk = {**(settings.pop("risk", None) or {}), **parse_risk(args.risk)}
    given = {
        "agents": tuple(args.agent) if args.agent else None,
        "data": args.data,
        "start": parse_date(args.start, "--start"),
        "end": parse_date(args.end, "--end"),
        "seeds": args.seeds,
        "benchmark": args.benchmark,
        "ensembles": tuple(args.ensemble) if args.ensemble else None,
        "allocations": tuple(args.allocate) if args.allocate else None,
        "regimes": tuple(args.regimes) if args.regimes else None,
        "news": args.news,
        "macro": args.macro,
        "include_baselines": False if args.no_baselines else None,
        "window": args.window,
        "periods_per_year": args.periods_per_year,
        "risk_free": args.risk_free,
        "jobs": args.jobs,
    }
    settings.update({k: v for k, v in given.items() if v is not None})
    settings.setdefault("agents", ())
    if settings.get("benchmark") == "none":
        settings["benchmark"] = None
    llm = {**(settings.pop("llm", None) or {}), **llm_options(args)}
    config = EvaluationConfig(
        tracking_uri=tracking_uri(),
        llm=llm,
        rules=rules,
        risk=risk,
        backend=backend_options(args),
        **settings,
    )
    estimates = llm_request_estimates(config)
    confirm_llm_requests(estimates, args.yes, console)
    # with --mlflow, every LLM decision is a trace in the evaluation's experiment
    tracing: AbstractContextManager[list[str]] = nullcontext([])
    if args.mlflow and estimates:
        from marketarena.evaluation.tracking import traced_llm_decisions

        tracing = traced_llm_decisions(args.experiment)
    with tracing as trace_ids, backtest_progress(console) as update:
        report = evaluate(config, progress=update)
    print_report(report, console)
    where = backend_line(report.settings.get("backend"))
    if where:
        console.print(where, highlight=False)
    for table in report.regime_tables():
        console.print(table)
    files = report.write(args.output)
    console.print(
        f"wrote {args.output}: metrics.json, metrics.csv, plots, {files['html'].name}",
        highlight=False,
    )
    if args.mlflow:
        from marketarena.evaluation.tracking import log_evaluation, ui_command

        run_id = log_evaluation(
            report, Path(args.output), experiment=args.experiment, trace_ids=trace_ids
        )
        traced = f", {len(trace_ids)} LLM requests traced" if estimates else ""
        console.print(
            f"MLflow run {run_id}{traced} in {tracking_uri()}; view it: {ui_command()}",
            highlight=False,
        )
    return EXIT_OK
