"""The MCP server of a driven backtest: the point-in-time toolbox over the Model Context
Protocol (the official ``mcp`` SDK's low-level server), for ``marketarena mcp serve``.

The tools are the :class:`~marketarena.agents.llm_tools.Toolbox`'s (prices, indicators,
news when the run has a news file, portfolio, rules, calculator, and the action tool
``set_target_weights``), listed with their JSON schemas; or, for a session started with
``tools="aitrader"``, AI-Trader's (``buy``, ``sell``, ``get_price_local``, ``add``,
``multiply``, ``get_information``) plus ``finish_session``, with AI-Trader's answer shapes
(:mod:`marketarena.agents.aitrader_tools`: what differs from AI-Trader and why). Each call goes to
:meth:`~marketarena.evaluation.mcp_session.DrivenBacktest.call`: a read tool answers for the
current decision only (a date after it is refused and counted); the action tool fills the
decision at the next bar, records the day and moves to the next decision. Results are JSON
objects, as text content and as structured content (AI-Trader's one-value tools: the value
as text, ``{"result": value}`` structured, as its FastMCP servers answer). An unknown tool,
bad arguments (naming the argument), a refused look-ahead request and any call after the run
is over come back as MCP tool errors (``isError``) whose text is the error object; AI-Trader's
tools answer their own error dicts as ordinary results, as AI-Trader does.

Several clients: one run is one portfolio, so calls are serialised: each runs alone, against
the decision current when it runs, whichever client sent it. Over stdio there is one client
by construction; over HTTP a second client that trades the same run takes turns with the
first (its action decides whatever decision is current), so give each agent its own server
and run. The HTTP transport has no authentication: it binds 127.0.0.1 by default, and
``marketarena mcp serve`` refuses any address that is not a loopback one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mcp import types
from mcp.server import Server
from mcp.server.stdio import stdio_server

from marketarena.evaluation.mcp_session import DrivenBacktest

SERVER_NAME = "marketarena"


def build_server(session: DrivenBacktest) -> Server[Any]:
    """An MCP server whose tools trade ``session`` (opened by the caller)."""

    async def list_tools(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=spec["name"],
                    description=spec["description"],
                    input_schema=spec["input_schema"],
                )
                for spec in session.tool_specs()
            ]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        # in a worker thread: an action waits for the env to step and the day to be stored
        answer = await asyncio.to_thread(session.call, params.name, params.arguments)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=answer.text)],
            structured_content=answer.result,
            is_error=answer.error,
        )

    if session.tools == "aitrader":
        instructions = (
            f"A marketarena backtest, run {session.run_id}, with AI-Trader's tools: each "
            "trading session is the decision after a close; buy and sell book orders checked "
            "at that close, get_price_local reads any date up to it, and finish_session ends "
            "the session: the orders fill at the next bar's open and the next session starts."
        )
    else:
        instructions = (
            f"A marketarena backtest, run {session.run_id}: read the market up to the current "
            "decision's close with the tools, then call set_target_weights to decide; orders "
            "fill at the next bar and the session moves to the next decision."
        )
    return Server(
        SERVER_NAME,
        instructions=instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def serve_stdio(server: Server[Any]) -> None:
    """Serve one client over this process's stdin and stdout until it disconnects."""

    async def run() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    asyncio.run(run())


def serve_http(server: Server[Any], host: str, port: int) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` until interrupted."""
    import uvicorn

    app = server.streamable_http_app(host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning")
