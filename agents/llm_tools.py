"""A point-in-time toolbox for LLM agents: what a model may look up at one decision, as tools.

Timing: the decision at row ``t`` comes after the close of bar ``t`` (orders fill at the next
bar, see :class:`~marketarena.envs.PortfolioEnv`). A :class:`Toolbox` is built for one decision
and holds the market data **cut at row t** (``data.slice(end=date)``): every tool computes from
that panel, so nothing after the decision can reach a result, whatever the tool's code does.
A request that reaches past the decision (``end`` after its date) is refused with an error
object (``"look_ahead": true``) the model reads, and counted in :attr:`Toolbox.look_ahead_refusals`.

API (shared by the agent loop :mod:`~marketarena.agents.llm_tool_agent`, the MCP server and
agent teams)::

    box = Toolbox(data, snapshot, news=events, risk=risk_dict)   # or Toolbox.from_env(env)
    box.openai_tools()            # [{"type": "function", "function": {name, description,
                                  #   parameters}}]: the ``tools=`` of a chat completion
    box.tool_specs()              # [{"name", "description", "input_schema"}]: generic (MCP)
    result = box.dispatch("get_prices", '{"symbols": ["AAA"], "last": 5}')
    box.action                    # TargetWeights once set_target_weights succeeded, else None
    box.look_ahead_refusals, box.errors, box.calls   # counters

``dispatch(name, arguments)`` takes the arguments as a JSON string (as a model sends them), a
mapping or ``None``, and returns a JSON-serialisable ``dict``; it never raises for bad input.
A bad call returns ``{"error": "<what is wrong>", "argument": "<its name>"}`` (``argument`` is
``null`` when the whole call is wrong: unknown tool, arguments that are not a JSON object);
a look-ahead refusal adds ``"look_ahead": true``. Results are deterministic: the same data,
decision and call give the same ``dict`` (the agent caches its conversations on that).

Tools (``news`` only when the toolbox has news events):

* ``get_prices``: OHLCV history of symbols (default all) over ``start``..``end`` or the
  ``last`` sessions (default 20) to ``end`` (default: the decision date). Up to
  :data:`MAX_ROWS` sessions and :data:`MAX_CELLS` numbers a call. A bar before a symbol's
  listing (point-in-time universe) is ``null``.
* ``get_indicator``: an indicator of the registry with its parameters (``rsi_14``,
  ``macd_hist_12_26_9``), a registered feature, or a column of the data (``sentiment``), over
  the same kind of range (default: the last session); ``null`` where not yet defined.
* ``list_indicators``: the indicators, features and data columns ``get_indicator`` knows.
* ``get_news``: the latest items (newest first, default 10, at most 50) published by the
  decision's session close (XNYS close times, as the prompts' headlines), for symbols or all;
  ``end`` may move the cut earlier, never later. Each item: time (UTC), symbol, headline, the
  file's score (``null`` where it gives none) and event kind.
* ``get_portfolio``: date, NAV, cash, initial cash, total return, weights and shares.
* ``get_rules``: the trading rules (costs, fill timing, lots, shorting), the risk settings
  when given, the symbols tradable at this decision.
* ``calculate``: arithmetic on numbers (``+ - * / // % **``, comparisons, ``abs min max round
  sqrt log exp mean stdev``, ``pi`` and ``e``) through :mod:`simpleeval`, never ``eval``:
  names, attributes, strings, lambdas and calls of anything else are errors. The result must
  be a finite number.
* ``set_target_weights`` (:data:`ACTION_TOOL`): ends the decision. ``weights`` maps symbols
  (case-insensitive) and ``CASH`` to weights in ``[0, 1]``; without ``CASH``, cash is what the
  symbols leave; the weights must sum to 1 (within 1e-6) with CASH, or at most 1 without. A
  symbol that is unknown or not tradable at the decision is an error naming it. The first
  valid call sets :attr:`Toolbox.action`; later calls are refused ("the decision has ended").
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from simpleeval import InvalidExpression, SimpleEval

from marketarena.envs.data import MarketData
from marketarena.envs.errors import MarketArenaError
from marketarena.envs.features import available_features, feature_values
from marketarena.envs.indicators import available_indicators, resolve_indicator
from marketarena.envs.news import NewsEvents, session_closes

ACTION_TOOL = "set_target_weights"
CASH = "CASH"
#: sessions one history call may return
MAX_ROWS = 260
#: numbers one history call may return (sessions x symbols x fields)
MAX_CELLS = 5_000
#: characters of a calculator expression
MAX_EXPRESSION = 500
PriceField = Literal["open", "high", "low", "close", "volume"]


# ------------------------------------------------------------------------- arguments
class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Range(_Arguments):
    symbols: list[str] | None = Field(None, description="symbols to return (default: every symbol)")
    start: str | None = Field(None, description="first date, YYYY-MM-DD (inclusive)")
    end: str | None = Field(
        None, description="last date, YYYY-MM-DD (inclusive; default and latest: the decision date)"
    )
    last: int | None = Field(
        None, ge=1, le=MAX_ROWS, description="sessions ending at end (when start is not given)"
    )


class PricesArguments(_Range):
    fields: list[PriceField] = Field(
        default_factory=lambda: list[PriceField](["close"]),
        description="price fields (default: close)",
    )


class IndicatorArguments(_Range):
    name: str = Field(description="e.g. rsi_14, macd_hist_12_26_9, sma_20 (see list_indicators)")


class NewsArguments(_Arguments):
    symbols: list[str] | None = Field(None, description="symbols (default: every symbol)")
    limit: int = Field(10, ge=1, le=50, description="items, newest first")
    end: str | None = Field(
        None, description="latest publication date, YYYY-MM-DD (default: the decision's close)"
    )


class NoArguments(_Arguments):
    pass


class CalculateArguments(_Arguments):
    expression: str = Field(
        max_length=MAX_EXPRESSION, description="e.g. (105.2 / 98.7 - 1) * 100 or mean(1, 2, 3)"
    )


class WeightsArguments(_Arguments):
    weights: dict[str, float] = Field(
        description="target weight of symbols and CASH, each in [0, 1], summing to 1"
    )
    confidence: float | None = Field(None, ge=0, le=1, description="how sure, 0 to 1")


@dataclass(frozen=True)
class Tool:
    """One tool: its name, what it does, its arguments (a pydantic model, whose JSON schema
    the model sees) and the function computing its result from the toolbox."""

    name: str
    description: str
    arguments: type[_Arguments]
    function: Callable[[Toolbox, Any], dict[str, Any]]

    def schema(self) -> dict[str, Any]:
        """The arguments' JSON schema (without pydantic's titles: tokens the model reads)."""
        return _untitled(self.arguments.model_json_schema())


@dataclass(frozen=True)
class TargetWeights:
    """What the action tool decided: ``weights`` ``(N + 1,)`` (symbols, then cash)."""

    weights: np.ndarray
    confidence: float | None


class ToolError(Exception):
    """A bad call, turned into an error object by :meth:`Toolbox.dispatch`."""

    def __init__(self, message: str, argument: str | None = None, look_ahead: bool = False):
        super().__init__(message)
        self.argument = argument
        self.look_ahead = look_ahead

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": str(self), "argument": self.argument}
        if self.look_ahead:
            out["look_ahead"] = True
        return out


# --------------------------------------------------------------------------- toolbox
class Toolbox:
    """The tools of one decision (see the module docstring).

    Args:
        data: the env's panel (any length: it is cut at the decision's row here).
        snapshot: the env's :class:`~marketarena.envs.MarketSnapshot` at the decision
            (``info["snapshot"]``): date, portfolio, rules, tradable symbols.
        news: news events (:func:`~marketarena.envs.news.load_news`), or None (no news tool).
        risk: the env's risk settings as a dict, shown by ``get_rules`` (None: not shown).

    Raises:
        ValueError: ``snapshot`` is not a decision of ``data`` (another panel's date or symbols).
    """

    def __init__(
        self,
        data: MarketData,
        snapshot: Any,
        *,
        news: NewsEvents | None = None,
        risk: Mapping[str, Any] | None = None,
    ) -> None:
        t = snapshot.session if snapshot.session is not None else data.index_of(snapshot.date)
        t = int(t)
        if not 0 <= t < data.n_periods or str(data.dates[t]) != str(snapshot.date):
            raise ValueError(
                f"the snapshot's date {snapshot.date} is not row {t} of {data.name}: give the "
                "toolbox the env's own data"
            )
        if tuple(data.symbols) != tuple(snapshot.symbols):
            raise ValueError("the snapshot's symbols are not the data's: give the env's data")
        self.data = data.slice(end=str(data.dates[t]))  # rows <= t: nothing later exists here
        self.t = t
        self.date = str(snapshot.date)
        self.snapshot = snapshot
        self.news = news
        self.risk = None if risk is None else dict(risk)
        self.symbols: tuple[str, ...] = tuple(data.symbols)
        self._upper = {s.upper(): s for s in self.symbols}
        self.action: TargetWeights | None = None
        self.calls = 0
        self.errors = 0
        self.look_ahead_refusals = 0
        self.tools: dict[str, Tool] = {
            tool.name: tool for tool in TOOLS if tool.name != "get_news" or news is not None
        }

    @classmethod
    def from_env(cls, env: Any, *, news: NewsEvents | None = None) -> Toolbox:
        """The toolbox of a :class:`~marketarena.envs.PortfolioEnv`'s current decision (its
        data, a snapshot of the decision, its risk settings)."""
        return cls(env.data, env.market_snapshot(1), news=news, risk=env.settings.risk.to_dict())

    # ------------------------------------------------------------------ exports
    def openai_tools(self) -> list[dict[str, Any]]:
        """The tools in the OpenAI function-calling format (``tools=``)."""
        return [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": s},
            }
            for t, s in ((t, t.schema()) for t in self.tools.values())
        ]

    def tool_specs(self) -> list[dict[str, Any]]:
        """The tools in a generic form: ``name``, ``description``, ``input_schema``."""
        return [
            {"name": t.name, "description": t.description, "input_schema": t.schema()}
            for t in self.tools.values()
        ]

    # ----------------------------------------------------------------- dispatch
    def dispatch(self, name: str, arguments: str | Mapping[str, Any] | None) -> dict[str, Any]:
        """Run tool ``name`` with ``arguments`` (a JSON object as text, a mapping or None);
        the result or an error object, never an exception for bad input."""
        self.calls += 1
        try:
            result = self._run(name, arguments)
        except ToolError as exc:
            self.errors += 1
            self.look_ahead_refusals += exc.look_ahead
            return exc.result()
        return result

    def _run(self, name: str, arguments: str | Mapping[str, Any] | None) -> dict[str, Any]:
        tool = self.tools.get(name)
        if tool is None:
            raise ToolError(f"unknown tool {name!r}; the tools are {list(self.tools)}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolError(f"arguments are not JSON: {exc.msg} at {exc.pos}") from None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        try:
            parsed = tool.arguments.model_validate(dict(arguments))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            raise ToolError(f"{where or 'arguments'}: {first['msg']}", where) from None
        return tool.function(self, parsed)

    # ------------------------------------------------------------------ helpers
    def columns(self, symbols: list[str] | None) -> list[int]:
        """Column indices of ``symbols`` (case-insensitive; None: all)."""
        if symbols is None:
            return list(range(len(self.symbols)))
        if not symbols:
            raise ToolError("symbols: give at least one symbol, or leave it out for all", "symbols")
        out = []
        for s in symbols:
            symbol = self._upper.get(str(s).strip().upper())
            if symbol is None:
                shown = list(self.symbols[:50]) + (["..."] if len(self.symbols) > 50 else [])
                raise ToolError(f"unknown symbol {s!r}; the symbols are {shown}", "symbols")
            out.append(self.symbols.index(symbol))
        return list(dict.fromkeys(out))

    def date_row(self, text: str, argument: str, side: Literal["left", "right"]) -> int:
        """The first row on or after (``left``) or last on or before (``right``) a date; a
        date after the decision is a counted look-ahead refusal."""
        try:
            at = np.datetime64(text.strip())
        except ValueError:
            raise ToolError(f"{argument}: {text!r} is not a date (YYYY-MM-DD)", argument) from None
        if np.isnat(at):
            raise ToolError(f"{argument}: {text!r} is not a date (YYYY-MM-DD)", argument)
        dates = self.data.dates
        if at.astype(dates.dtype) > dates[-1]:
            raise ToolError(
                f"{argument}: {text} is after the decision date {self.date}; only data up to "
                "the decision's close exists",
                argument,
                look_ahead=True,
            )
        return int(np.searchsorted(dates, at.astype(dates.dtype), side)) - (side == "right")

    def rows(self, args: _Range, default_last: int) -> tuple[int, int]:
        """Inclusive row bounds of a range's arguments (``end`` defaults to the decision)."""
        hi = self.t if args.end is None else self.date_row(args.end, "end", "right")
        if hi < 0:
            raise ToolError(f"end: no session on or before {args.end}", "end")
        if args.start is not None:
            if args.last is not None:
                raise ToolError("last: give start or last, not both", "last")
            lo = self.date_row(args.start, "start", "left")
            if lo > hi:
                raise ToolError(
                    f"start: no session from {args.start} to {self.data.dates[hi]}", "start"
                )
            if hi - lo + 1 > MAX_ROWS:
                raise ToolError(
                    f"start: {hi - lo + 1} sessions asked, at most {MAX_ROWS} a call", "start"
                )
        else:
            lo = max(0, hi - (args.last or default_last) + 1)
        return lo, hi

    def table(self, values: np.ndarray, lo: int, hi: int, cols: list[int]) -> dict[str, list]:
        """``{symbol: [value per session]}`` with ``null`` where undefined or not listed."""
        listed = self.data.listed
        out = {}
        for j in cols:
            column = values[lo : hi + 1, j]
            known = np.ones(len(column), bool) if listed is None else listed[lo : hi + 1, j]
            out[self.symbols[j]] = [
                _number(v) if ok else None for v, ok in zip(column, known, strict=True)
            ]
        return out

    def dates(self, lo: int, hi: int) -> list[str]:
        return [str(d) for d in self.data.dates[lo : hi + 1]]


def _number(value: float) -> float | None:
    v = float(value)
    return round(v, 6) if math.isfinite(v) else None


def _untitled(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _untitled(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


def _check_cells(rows: int, cols: int, fields: int) -> None:
    if rows * cols * fields > MAX_CELLS:
        raise ToolError(
            f"symbols: {rows} sessions x {cols} symbols x {fields} fields is more than "
            f"{MAX_CELLS} numbers; ask for fewer symbols or a shorter range",
            "symbols",
        )


# ----------------------------------------------------------------------------- tools
def get_prices(box: Toolbox, args: PricesArguments) -> dict[str, Any]:
    lo, hi = box.rows(args, default_last=20)
    cols = box.columns(args.symbols)
    fields = list(dict.fromkeys(args.fields))
    missing = [f for f in fields if getattr(box.data, f) is None]
    if missing:
        raise ToolError(
            f"fields: this data has no {missing}; it has {list(box.data.fields)}", "fields"
        )
    _check_cells(hi - lo + 1, len(cols), len(fields))
    out: dict[str, Any] = {"dates": box.dates(lo, hi)}
    for f in fields:
        out[f] = box.table(getattr(box.data, f), lo, hi, cols)
    return out


def get_indicator(box: Toolbox, args: IndicatorArguments) -> dict[str, Any]:
    name = args.name.strip()
    lo, hi = box.rows(args, default_last=1)
    cols = box.columns(args.symbols)
    _check_cells(hi - lo + 1, len(cols), 1)
    try:
        values = _indicator_values(box.data, name)
    except (MarketArenaError, ValueError) as exc:
        raise ToolError(f"name: {exc}", "name") from None
    return {"name": name, "dates": box.dates(lo, hi), "values": box.table(values, lo, hi, cols)}


def _indicator_values(data: MarketData, name: str) -> np.ndarray:
    """``name``'s values on the cut panel: a data column or registered feature
    (:func:`feature_values`), else the registry's function on the cut arrays directly (the
    on-disk indicator cache would store one entry per decision)."""
    if name in data.feature_names or name in available_features():
        return np.asarray(feature_values(data, name), dtype=np.float64)
    resolved = resolve_indicator(name)  # UnknownNameError / ConfigError name the problem
    spec = resolved.spec
    arrays = []
    for field in spec.inputs:
        values = getattr(data, field)
        if values is None:
            raise ValueError(f"{resolved.name} needs {field} prices, which this data lacks")
        arrays.append(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.array(spec.function(*arrays, **resolved.params), dtype=np.float64)
    if out.shape != (data.n_periods, data.n_assets):
        raise ValueError(f"{resolved.name} ({spec.source}) returned the shape {out.shape}")
    out[: resolved.lookback] = np.nan
    return out


def list_indicators(box: Toolbox, args: NoArguments) -> dict[str, Any]:
    return {
        "indicators": [
            {"name": s.name, "parameters": dict(s.defaults), "about": s.doc}
            for s in available_indicators()
        ],
        "features": available_features(),
        "data_columns": list(box.data.feature_names),
        "usage": "get_indicator name = base name then parameters joined by _, e.g. rsi_14",
    }


def get_news(box: Toolbox, args: NewsArguments) -> dict[str, Any]:
    assert box.news is not None  # the tool exists only with news
    events = box.news
    cols = box.columns(args.symbols)
    row = box.t if args.end is None else box.date_row(args.end, "end", "right")
    if row < 0:
        raise ToolError(f"end: no session on or before {args.end}", "end")
    cut = session_closes([box.data.dates[row]])[0]  # datetime64[ns], UTC
    end = int(np.searchsorted(events.published_at, cut, "right"))
    wanted = {box.symbols[j] for j in cols}
    items = []
    for i in range(end - 1, -1, -1):
        if events.symbols[i] in wanted:
            score = float(events.scores[i])
            items.append(
                {
                    "published_at": str(np.datetime64(events.published_at[i], "s")) + "Z",
                    "symbol": events.symbols[i],
                    "headline": events.headlines[i],
                    "score": round(score, 6) if math.isfinite(score) else None,
                    "event": events.kinds[i] or None,
                }
            )
            if len(items) == args.limit:
                break
    return {"until": str(np.datetime64(cut, "s")) + "Z", "items": items}


def get_portfolio(box: Toolbox, args: NoArguments) -> dict[str, Any]:
    s = box.snapshot
    weights = np.asarray(s.weights, dtype=float)
    return {
        "date": box.date,
        "nav": _number(s.nav),
        "cash": _number(s.cash),
        "initial_cash": _number(s.initial_cash),
        "total_return": _number(float(s.nav) / float(s.initial_cash) - 1.0),
        "weights": {
            **{sym: _number(w) for sym, w in zip(box.symbols, weights[:-1], strict=True)},
            CASH: _number(weights[-1]),
        },
        "shares": {
            sym: _number(n)
            for sym, n in zip(box.symbols, np.asarray(s.positions, float), strict=True)
            if n != 0
        },
    }


def get_rules(box: Toolbox, args: NoArguments) -> dict[str, Any]:
    tradable = box.snapshot.tradable
    symbols = (
        list(box.symbols)
        if tradable is None
        else [s for s, ok in zip(box.symbols, np.asarray(tradable), strict=True) if ok]
    )
    return {
        "decision": f"after the close of {box.date}",
        "rules": json.loads(json.dumps(dict(box.snapshot.rules), default=str)),
        "risk": box.risk,
        "tradable": symbols,
    }


_FUNCTIONS: dict[str, Callable[..., float]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "mean": lambda *xs: statistics.fmean(xs),
    "stdev": lambda *xs: statistics.stdev(xs),
}


def calculate(box: Toolbox, args: CalculateArguments) -> dict[str, Any]:
    evaluator = SimpleEval(functions=_FUNCTIONS, names={"pi": math.pi, "e": math.e})
    try:
        value = evaluator.eval(args.expression)
    except (InvalidExpression, SyntaxError, ArithmeticError, ValueError, TypeError) as exc:
        raise ToolError(f"expression: {type(exc).__name__}: {exc}", "expression") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ToolError(f"expression: the result {value!r} is not a finite number", "expression")
    return {"expression": args.expression, "value": value}


def set_target_weights(box: Toolbox, args: WeightsArguments) -> dict[str, Any]:
    if box.action is not None:
        raise ToolError("the decision has ended: set_target_weights was already called")
    n = len(box.symbols)
    weights = np.zeros(n + 1)
    tradable = box.snapshot.tradable
    cash_given = False
    for key, value in args.weights.items():
        where = f"weights.{key}"
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise ToolError(f"{where}: {value} is not a weight in [0, 1]", where)
        if key.strip().upper() == CASH:
            weights[n], cash_given = value, True
            continue
        symbol = box._upper.get(key.strip().upper())
        if symbol is None:
            raise ToolError(f"{where}: unknown symbol {key!r}; use {[*box.symbols, CASH]}", where)
        j = box.symbols.index(symbol)
        if tradable is not None and not tradable[j] and value > 0:
            raise ToolError(f"{where}: {box.symbols[j]} is not tradable at this decision", where)
        weights[j] += value
    total = weights.sum()
    if cash_given and abs(total - 1.0) > 1e-6:
        raise ToolError(f"weights: they sum to {total:.6g}, not 1", "weights")
    if not cash_given:
        if total > 1.0 + 1e-6:
            raise ToolError(f"weights: the symbols' weights sum to {total:.6g} > 1", "weights")
        weights[n] = max(0.0, 1.0 - total)
    weights /= weights.sum()
    box.action = TargetWeights(weights, args.confidence)
    return {
        "accepted": True,
        "weights": {
            **{s: _number(w) for s, w in zip(box.symbols, weights[:-1], strict=True) if w > 0},
            CASH: _number(weights[-1]),
        },
        "fills": str(box.snapshot.rules.get("execution", "next bar")),
    }


TOOLS: tuple[Tool, ...] = (
    Tool(
        "get_prices",
        "Price and volume history (one value per session) up to the decision date.",
        PricesArguments,
        get_prices,
    ),
    Tool(
        "get_indicator",
        "An indicator's values per symbol up to the decision date (default: the last session).",
        IndicatorArguments,
        get_indicator,
    ),
    Tool("list_indicators", "The names get_indicator accepts.", NoArguments, list_indicators),
    Tool(
        "get_news",
        "The latest news items (newest first) published by the decision's close.",
        NewsArguments,
        get_news,
    ),
    Tool(
        "get_portfolio",
        "The portfolio now: NAV, cash, weights, shares.",
        NoArguments,
        get_portfolio,
    ),
    Tool(
        "get_rules",
        "Trading rules (costs, fill timing), risk limits and the tradable symbols.",
        NoArguments,
        get_rules,
    ),
    Tool("calculate", "Evaluate an arithmetic expression.", CalculateArguments, calculate),
    Tool(
        ACTION_TOOL,
        "Set the portfolio's target weights and end the decision (orders fill at the next bar).",
        WeightsArguments,
        set_target_weights,
    ),
)
