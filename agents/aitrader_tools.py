"""AI-Trader's MCP tools over one point-in-time decision (``marketarena mcp serve --tools
aitrader``), so that an agent written for HKUDS/AI-Trader's tool servers trades here unchanged.

Timing: as every decision here, the session at row ``t`` comes after the close of bar ``t``;
its data is the :class:`~marketarena.agents.llm_tools.Toolbox`'s, **cut at row t**. The
session's orders fill when it ends (:data:`FINISH_TOOL`), at the run's fill price: the
**open of t+1** (``execution="next_open"``, the default for data with opens, AI-Trader's
data included) or the close of ``t+1`` on close-only data. So AI-Trader's "trading day D,
buying at D's open" is here the decision after the close of the session before ``D``, filled
at ``D``'s open: the same fill, decided without seeing ``D``'s bar.

The tools, with AI-Trader's names, argument names and answer shapes:

* ``buy(symbol: str, amount: int)``, ``sell(symbol: str, amount: int)``: add the order to
  the session's **share book** and answer with the new position dict, every symbol's shares
  and ``CASH`` (``{"AAPL": 110, ..., "CASH": 5000.0}``), or AI-Trader's error dicts:
  ``{"error": "Insufficient cash! This action will not be allowed.", "required_cash",
  "cash_available", "symbol", "date"}``, ``{"error": "Insufficient shares! This action will
  not be allowed.", "have", "want_to_sell", "symbol", "date"}``, ``{"error": "Symbol X not
  found! This action will not be allowed.", "symbol", "date"}``. The book starts at the
  portfolio held at the decision (the simulator's shares and cash) and is valued at the
  **decision's closes** (the last prices known: AI-Trader validated at the day's open, which
  is not known when the decision is made); ``amount`` is a whole number >= 1 (AI-Trader
  accepted any integer; a negative one bought cash). Several calls per session accumulate.
  A symbol outside the point-in-time universe at the decision is "not tradable".
* ``get_price_local(symbol: str, date: str)``: ``{"symbol", "date", "ohlcv": {"open",
  "high", "low", "close", "volume"}}`` of one session (``null`` for a field the data lacks
  or a bar outside the symbol's listing). AI-Trader served any date, the future included;
  here a date after the decision is refused (``{"error": ..., "symbol", "date",
  "look_ahead": true}``) and counted. A date that is no session: AI-Trader's "Data not found
  for date ..." with the five latest sessions up to the decision; an unknown symbol: "No
  records found for stock X in local data"; a malformed date: "date must be in YYYY-MM-DD
  format".
* ``add(a: float, b: float)``, ``multiply(a: float, b: float)``: a float, as in AI-Trader's
  ``tool_math.py`` (structured as ``{"result": x}``, the text the number).
* ``get_information(query: str)``: AI-Trader's web search is offline here. With a news file
  (``--news``) it answers from it: the items published by the decision's session close
  whose symbol or headline contains a word of the query, newest first (at most
  :data:`SEARCH_RESULTS`), as text in AI-Trader's result layout; with no match, AI-Trader's
  "found no results" line; without a news file, AI-Trader's failure line saying there is no
  search source.
* :data:`FINISH_TOOL` (``finish_session()``), **the one addition**: AI-Trader ends a session
  when the model prints its finish signal, which an MCP server never sees. It ends the
  decision: the book's share counts become the decision (:meth:`AITraderTools.target_weights`:
  each symbol's book value at the decision's closes over the NAV there, the rest cash), so
  the simulator, which sizes orders at those same closes, orders exactly the book's shares
  (to floating-point precision; with ``lot_size`` rounded to lots). What fills can still
  differ from the book, as the timing rules require and AI-Trader's same-bar fills hid: the
  fill price is the next bar's (open), costs are charged, and when the cash after sells does
  not cover the buys at that price, the buys are scaled down together (cash never goes
  negative); risk limits, when set, apply as for every agent.

Errors: AI-Trader's tools return their error dicts as ordinary results, and so do these
(the MCP result is not flagged ``isError``); arguments of the wrong type or missing (which
AI-Trader's FastMCP refused before the tool ran) and an unknown tool are MCP tool errors,
``{"error": "<argument>: <what>", "argument": "<argument>"}``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from marketarena.agents.llm_tools import CASH, TargetWeights, Toolbox, ToolError
from marketarena.envs.news import session_closes

FINISH_TOOL = "finish_session"
#: news items one get_information call returns
SEARCH_RESULTS = 5
NOT_ALLOWED = "This action will not be allowed."
#: decimal places of the shares and cash in a position dict
DECIMALS = 6
#: under lot_size a bought symbol's target grows, a sold one's shrinks, by this fraction, so
#: that the simulator's flooring of orders to whole lots does not lose a lot to
#: floating-point error (an order of 2 computed as 1.9999999999999998)
_LOT_HAIR = 1e-12


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TradeArguments(_Arguments):
    symbol: str = Field(description='Stock symbol, such as "AAPL", "MSFT", etc.')
    amount: int = Field(ge=1, description="how many shares, a positive whole number")


class PriceArguments(_Arguments):
    symbol: str = Field(description="Stock symbol, e.g. 'AAPL'")
    date: str = Field(description="Date in 'YYYY-MM-DD' format (at most the decision date)")


class MathArguments(_Arguments):
    a: float
    b: float


class QueryArguments(_Arguments):
    query: str = Field(description="key information or search terms")


class NoArguments(_Arguments):
    pass


DESCRIPTIONS: dict[str, tuple[str, type[_Arguments]]] = {
    "buy": (
        "Buy amount shares of symbol (AI-Trader's tool): added to this session's book, checked "
        "against the book's cash at the decision's closes; returns the new position dict. "
        "Orders fill when finish_session is called, at the next bar's open.",
        TradeArguments,
    ),
    "sell": (
        "Sell amount shares of symbol (AI-Trader's tool): added to this session's book, checked "
        "against the book's shares; returns the new position dict. Orders fill when "
        "finish_session is called, at the next bar's open.",
        TradeArguments,
    ),
    "get_price_local": (
        "Read OHLCV data for a stock on one date, up to the decision date (AI-Trader's tool).",
        PriceArguments,
    ),
    "add": ("Add two numbers (supports int and float)", MathArguments),
    "multiply": ("Multiply two numbers (supports int and float)", MathArguments),
    "get_information": (
        "Search the news published up to the decision (AI-Trader's search, offline: answered "
        "from the server's news file).",
        QueryArguments,
    ),
    FINISH_TOOL: (
        "End this trading session: the book's orders fill at the next bar's open and the "
        "session moves to the next trading day (the one tool AI-Trader does not have).",
        NoArguments,
    ),
}
#: tools whose answer is one value (AI-Trader returns a float or a string): structured as
#: ``{"result": value}``, the text being the value itself
SCALAR_TOOLS = frozenset({"add", "multiply", "get_information"})


def answer_text(name: str, result: Mapping[str, Any]) -> str:
    """The text content of ``name``'s answer: the value of a scalar tool's result (a float
    as JSON, a string as is), else the JSON object."""
    if name in SCALAR_TOOLS and set(result) == {"result"}:
        value = result["result"]
        return value if isinstance(value, str) else json.dumps(value)
    return json.dumps(result)


def positions(symbols: tuple[str, ...], shares: np.ndarray, cash: float) -> dict[str, Any]:
    """AI-Trader's position dict: every symbol's shares, then ``CASH``, each rounded to
    :data:`DECIMALS` places (a fill of the book's 50 shares through target weights holds
    50 to floating-point precision, 50.00000000000001: shown 50); whole shares as ints."""
    out: dict[str, Any] = {}
    for symbol, n in zip(symbols, np.asarray(shares, dtype=float), strict=True):
        value = round(float(n), DECIMALS) + 0.0  # + 0.0: no -0.0
        out[symbol] = int(value) if value.is_integer() else value
    out[CASH] = round(float(cash), DECIMALS) + 0.0
    return out


class AITraderTools:
    """AI-Trader's tools at one decision, over that decision's :class:`Toolbox` (its data
    cut at the decision, snapshot and news). Same interface as the toolbox for the MCP
    session: :meth:`tool_specs`, :meth:`dispatch`, :attr:`action` (set by
    :data:`FINISH_TOOL`), :attr:`action_tool`, :attr:`date` and the counters; plus
    :attr:`last_call_failed` (the last call was an MCP tool error, not one of AI-Trader's
    error dicts) and the book, :attr:`shares` and :attr:`cash`."""

    action_tool = FINISH_TOOL

    def __init__(self, box: Toolbox) -> None:
        self.box = box
        snapshot = box.snapshot
        self.date = box.date
        self.symbols = box.symbols
        self.closes = np.asarray(snapshot.close, dtype=np.float64)[-1]  # at the decision
        self.nav = float(snapshot.nav)
        self.shares = np.asarray(snapshot.positions, dtype=np.float64).copy()
        self.cash = float(snapshot.cash)
        self.orders: list[dict[str, Any]] = []  # each accepted buy or sell, in order
        self.action: TargetWeights | None = None
        self.calls = self.errors = self.look_ahead_refusals = 0
        self.last_call_failed = False

    def tool_specs(self) -> list[dict[str, Any]]:
        """The tools: ``name``, ``description``, ``input_schema`` (the same at every decision)."""
        return [
            {"name": name, "description": text, "input_schema": _schema(model)}
            for name, (text, model) in DESCRIPTIONS.items()
        ]

    def dispatch(self, name: str, arguments: str | Mapping[str, Any] | None) -> dict[str, Any]:
        """Run tool ``name``: its answer (AI-Trader's shape, or its error dict), or an error
        object for an unknown tool or bad arguments (:attr:`last_call_failed`)."""
        self.calls += 1
        self.last_call_failed = False
        try:
            parsed = self._parse(name, arguments)
        except ToolError as exc:
            self.errors += 1
            self.last_call_failed = True
            return exc.result()
        if self.action is not None:
            result: dict[str, Any] = {
                "error": f"the session of {self.date} has ended: {FINISH_TOOL} was already called"
            }
        else:
            result = getattr(self, f"_{name}")(parsed)
        self.errors += "error" in result
        return result

    def _parse(self, name: str, arguments: str | Mapping[str, Any] | None) -> Any:
        if name not in DESCRIPTIONS:
            raise ToolError(f"unknown tool {name!r}; the tools are {list(DESCRIPTIONS)}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolError(f"arguments are not JSON: {exc.msg} at {exc.pos}") from None
        if not isinstance(arguments or {}, Mapping):
            raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        try:
            return DESCRIPTIONS[name][1].model_validate(dict(arguments or {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            raise ToolError(f"{where or 'arguments'}: {first['msg']}", where) from None

    # -------------------------------------------------------------------- trades
    def _column(self, symbol: str) -> int | dict[str, Any]:
        """The column of a tradable ``symbol`` (case-insensitive), or AI-Trader's error."""
        j = self.box._upper.get(symbol.strip().upper())
        if j is None:
            return {
                "error": f"Symbol {symbol} not found! {NOT_ALLOWED}",
                "symbol": symbol,
                "date": self.date,
            }
        column = self.symbols.index(j)
        tradable = self.box.snapshot.tradable
        if tradable is not None and not tradable[column]:
            return {
                "error": f"Symbol {j} is not tradable at the decision of {self.date}! "
                f"{NOT_ALLOWED}",
                "symbol": j,
                "date": self.date,
            }
        return column

    def _buy(self, args: TradeArguments) -> dict[str, Any]:
        j = self._column(args.symbol)
        if isinstance(j, dict):
            return j
        required = float(self.closes[j]) * args.amount
        if self.cash - required < 0:
            return {
                "error": f"Insufficient cash! {NOT_ALLOWED}",
                "required_cash": round(required, DECIMALS),
                "cash_available": round(self.cash, DECIMALS),
                "symbol": self.symbols[j],
                "date": self.date,
            }
        self.cash -= required
        self.shares[j] += args.amount
        return self._booked("buy", j, args.amount)

    def _sell(self, args: TradeArguments) -> dict[str, Any]:
        j = self._column(args.symbol)
        if isinstance(j, dict):
            return j
        have = float(self.shares[j])
        if have < args.amount:
            return {
                "error": f"Insufficient shares! {NOT_ALLOWED}",
                "have": int(have) if have.is_integer() else have,
                "want_to_sell": args.amount,
                "symbol": self.symbols[j],
                "date": self.date,
            }
        self.cash += float(self.closes[j]) * args.amount
        self.shares[j] -= args.amount
        return self._booked("sell", j, args.amount)

    def _booked(self, side: str, j: int, amount: int) -> dict[str, Any]:
        self.orders.append({"action": side, "symbol": self.symbols[j], "amount": amount})
        return positions(self.symbols, self.shares, self.cash)

    def _finish_session(self, args: NoArguments) -> dict[str, Any]:
        weights = self.target_weights()
        self.action = TargetWeights(weights, None)
        return {
            "accepted": True,
            "orders": list(self.orders),
            "book": positions(self.symbols, self.shares, self.cash),
            "fills": str(self.box.snapshot.rules.get("execution", "next bar")),
        }

    def target_weights(self) -> np.ndarray:
        """The book as the env's action ``(N + 1,)``: each symbol's shares times the
        decision's close over the NAV there, cash the rest (the book's cash over the NAV,
        >= 0 since every buy was checked against it). With ``lot_size`` a bought symbol's
        target is a hair (:data:`_LOT_HAIR`) higher and a sold one's a hair lower: the
        simulator floors orders to whole lots, and an order of 2 computed as
        1.9999999999999998 would trade 1."""
        target = self.shares.copy()
        if self.box.snapshot.rules.get("lot_size"):
            held = np.asarray(self.box.snapshot.positions, dtype=np.float64)
            target[target > held] *= 1.0 + _LOT_HAIR
            target[target < held] *= 1.0 - _LOT_HAIR
        weights = np.zeros(len(self.symbols) + 1)
        weights[:-1] = target * self.closes / self.nav
        weights[-1] = max(0.0, self.cash / self.nav)
        return weights

    # --------------------------------------------------------------------- reads
    def _get_price_local(self, args: PriceArguments) -> dict[str, Any]:
        symbol, text = args.symbol, args.date
        where = {"symbol": symbol, "date": text}
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            return {"error": "date must be in YYYY-MM-DD format", **where}
        j = self.box._upper.get(symbol.strip().upper())
        if j is None:
            return {"error": f"No records found for stock {symbol} in local data", **where}
        try:
            self.box.date_row(text, "date", "right")
        except ToolError as exc:  # not a date, or after the decision
            self.look_ahead_refusals += exc.look_ahead
            return {"error": str(exc), **where, **({"look_ahead": True} if exc.look_ahead else {})}
        data = self.box.data
        dates = data.dates
        t = int(np.searchsorted(dates, np.datetime64(text.strip(), "D").astype(dates.dtype)))
        column = self.symbols.index(j)
        listed = data.listed
        if (
            t >= len(dates)
            or str(dates[t]) != text.strip()
            or (listed is not None and not listed[t, column])
        ):
            latest = [str(d) for d in dates[::-1][:5]]
            return {
                "error": f"Data not found for date {text}. Please verify the date exists in "
                f"data. Sample available dates: {latest}",
                **where,
            }

        def value(field: str) -> float | None:
            values = getattr(data, field)
            if values is None:
                return None
            v = float(values[t, column])
            return v if math.isfinite(v) else None

        return {
            "symbol": j,
            "date": str(dates[t]),
            "ohlcv": {f: value(f) for f in ("open", "high", "low", "close", "volume")},
        }

    def _add(self, args: MathArguments) -> dict[str, Any]:
        return {"result": float(args.a) + float(args.b)}

    def _multiply(self, args: MathArguments) -> dict[str, Any]:
        return {"result": float(args.a) * float(args.b)}

    def _get_information(self, args: QueryArguments) -> dict[str, Any]:
        query = args.query
        news = self.box.news
        if news is None:
            return {
                "result": "❌ Search tool execution failed: no search source: this server was "
                "started without a news file (--news) and never searches the internet"
            }
        words = {w for w in re.findall(r"\w+", query.upper()) if len(w) > 1}
        cut = session_closes([self.box.data.dates[-1]])[0]
        end = int(np.searchsorted(news.published_at, cut, "right"))
        found = []
        for i in range(end - 1, -1, -1):
            headline = news.headlines[i]
            if news.symbols[i].upper() in words or words & set(
                re.findall(r"\w+", headline.upper())
            ):
                when = str(np.datetime64(news.published_at[i], "s")).replace("T", " ")
                score = float(news.scores[i])
                found.append(
                    f"\nSymbol: {news.symbols[i]}\nTitle: {headline}\n"
                    f"Publish Time: {when} UTC\n"
                    + (f"Score: {score:g}\n" if math.isfinite(score) else "")
                    + (f"Content: {news.bodies[i][:1000]}\n" if news.bodies[i] else "")
                )
                if len(found) == SEARCH_RESULTS:
                    break
        if not found:
            return {"result": f"⚠️ Search query '{query}' found no results."}
        return {"result": "\n".join(found)}


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema
