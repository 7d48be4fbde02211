"""``marketarena serve``: the REST API (and dashboard) over a run store."""

from __future__ import annotations

import argparse

from rich.console import Console

from marketarena.cli.common import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    sv = subparsers.add_parser(
        "serve",
        help="the REST API and dashboard over a run store",
        description="Serve marketarena's REST API (OpenAPI docs at /docs) and dashboard (/) "
        "over the same run store the CLI uses. Binds 127.0.0.1 by default; any other address "
        "needs a token (MARKETARENA_API_TOKEN or --token-file).",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--store", default="runs.sqlite", help="the run store: a path or a URL")
    sv.add_argument("--data-dir", default="data", help="the folder of downloaded data")
    sv.add_argument("--token-file", help="a file whose first line is the API token")
    sv.add_argument("--workers", type=int, default=1, help="simulation jobs at once")
    sv.add_argument(
        "--webhooks",
        metavar="FILE",
        help="a YAML or JSON file of webhook targets (url, secret_env, events; see "
        "marketarena.service.webhooks)",
    )
    sv.set_defaults(handler=handle_serve)


def handle_serve(args: argparse.Namespace, console: Console) -> int:
    import sqlalchemy
    import uvicorn

    from marketarena.evaluation.saved_runs.store import is_url
    from marketarena.service.app import create_app
    from marketarena.service.settings import ServiceSettings, read_token
    from marketarena.service.webhooks import read_webhooks

    settings = ServiceSettings(
        store=args.store,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        token=read_token(args.token_file),
        workers=args.workers,
        webhooks=read_webhooks(args.webhooks) if args.webhooks else (),
    )
    auth = "token required" if settings.token else "no token (loopback only)"
    store = settings.store
    if is_url(store):  # a database URL's password is never printed
        store = sqlalchemy.make_url(store).render_as_string(hide_password=True)
    console.print(
        f"serving {store} on http://{settings.host}:{settings.port} ({auth}); API docs at /docs",
        highlight=False,
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    return EXIT_OK
