"""An indicator-driven rule agent: ``rule:"rsi_14 < 30"`` tests a signal without training.

At the decision after bar ``t`` the agent holds equal weights in the symbols for which the
rule is true at row ``t``, and all cash where it is true for none. It trades only when that set
of symbols changes; between changes the positions drift with prices (no rebalancing costs), as
:class:`~marketarena.agents.reference.SignalAgent` does. A rule that is never true holds cash
and never trades.

A rule is a Python-like condition over indicator and feature names, parsed with :mod:`ast`
into a safe evaluator (nothing is ``eval``-ed). Allowed: comparisons (``< <= > >= == !=``,
chained as ``20 < rsi_14 < 40``), ``and``/``or``/``not``, ``+ - * /``, unary ``-``, numbers,
and names: the bar's prices (``open``, ``high``, ``low``, ``close``, ``volume``), registered
features (``log_return``, :mod:`marketarena.envs.features`) and indicators with their
parameters (``rsi_14``, ``bb_pctb_20_2``, :mod:`marketarena.envs.indicators`), e.g.
``close > bb_upper_20_2``. Anything else (a call, an attribute, a subscript, an
unknown name, a rule that is a number rather than a condition) is a
:class:`~marketarena.envs.errors.ConfigError` naming the offending part. A symbol is selected
only where every name in the rule is defined (NaN before an indicator's lookback is "not
selected", also under ``not``).

Timing and data: the rule is evaluated once, vectorised over every row of the env's panel
(indicators come from the on-disk cache), and each decision reads the row of its date
(``info["date"]``). The panel reaches the agent through
:class:`~marketarena.agents.base.ReadsMarketData`: the backtest runner calls
:meth:`RuleAgent.use_data` with the env's data before the first step. The agent thus holds
later rows too, but what it reads at row ``t`` uses rows ``<= t`` only, because every feature
and indicator is point-in-time (each has its perturb-the-future test, and so does this agent).
This is exact and cheap: rebuilding the indicators from ``info["snapshot"]`` windows each step
would cost a recomputation per step and change recursive indicators (Wilder's RSI, EMAs, OBV),
whose values depend on where the window starts.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from marketarena.agents.base import Resumable, hold, n_assets
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, UnknownNameError
from marketarena.envs.features import available_features, feature_values
from marketarena.envs.indicators import INPUTS, available_indicators, resolve_indicator

_COMPARISONS: dict[type[ast.cmpop], Callable[[Any, Any], np.ndarray]] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], np.ndarray]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
}
_NOT_ALLOWED: dict[type[ast.AST], str] = {
    ast.Call: "a call",
    ast.Attribute: "an attribute",
    ast.Subscript: "a subscript",
    ast.Lambda: "a lambda",
    ast.IfExp: "a conditional expression",
}


class Rule:
    """A parsed, checked rule; :meth:`evaluate` gives its ``(T, N)`` boolean table.

    Raises:
        ConfigError: a syntax error, a construct that is not allowed, an unknown name, or a
            rule that is not a condition; the message quotes the offending part.
    """

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        if not self.text:
            raise ConfigError('empty rule; write a condition, e.g. rule:"rsi_14 < 30"')
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as exc:
            raise ConfigError(
                f"rule {self.text!r} is not a valid expression: {exc.msg} (at column {exc.offset})"
            ) from None
        self.body = tree.body
        self.names: list[str] = []
        #: names that are no price, feature or indicator: columns the data must have
        self.data_columns: list[str] = []
        if self._check(self.body) != "condition":
            raise ConfigError(
                f"rule {self.text!r} is a number, not a condition; compare it, e.g. {self.text} > 0"
            )

    def _part(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or ast.unparse(node)

    def _refuse(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(
            f"rule {self.text!r}: {what} is not allowed: {self._part(node)!r} (use comparisons, "
            "and/or/not, + - * /, numbers, prices and indicator or feature names)"
        )

    def _check(self, node: ast.AST) -> str:
        """``"number"`` or ``"condition"``: what ``node`` evaluates to; raises on the rest."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self._refuse(node, "a constant other than a number")
            return "number"
        if isinstance(node, ast.Name):
            self._check_name(node)
            return "number"
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            self._expect(node.left, "number")
            self._expect(node.right, "number")
            return "number"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            self._expect(node.operand, "number")
            return "number"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._expect(node.operand, "condition")
            return "condition"
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._expect(value, "condition")
            return "condition"
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARISONS:
                    raise self._refuse(node, f"the operator {type(op).__name__}")
            for value in (node.left, *node.comparators):
                self._expect(value, "number")
            return "condition"
        what = _NOT_ALLOWED.get(type(node))
        if what is None:
            what = "the operator" if isinstance(node, ast.BinOp | ast.UnaryOp) else "this"
        raise self._refuse(node, what)

    def _expect(self, node: ast.AST, kind: str) -> None:
        if self._check(node) != kind:
            other = "a condition" if kind == "number" else "a number"
            raise ConfigError(
                f"rule {self.text!r}: {self._part(node)!r} is {other} where {'a ' + kind} is needed"
            )

    def _check_name(self, node: ast.Name) -> None:
        name = node.id
        if name not in INPUTS and name not in available_features():
            try:
                resolve_indicator(name)  # bad parameters of a known indicator raise here
            except UnknownNameError:
                # perhaps a column of the data (news sentiment, a macro series): checked
                # against the data when it comes (use_data), before the first decision
                if name not in self.data_columns:
                    self.data_columns.append(name)
        if name not in self.names:
            self.names.append(name)

    def evaluate(self, data: MarketData) -> np.ndarray:
        """The ``(T, N)`` boolean table: the rule at every row and symbol, False where any
        name it uses is undefined (NaN). Row ``t`` uses rows ``<= t`` only."""
        missing = [n for n in self.data_columns if n not in data.feature_names]
        if missing:
            raise ConfigError(
                f"rule {self.text!r}: unknown name(s) {missing}; use a price "
                f"({', '.join(INPUTS)}), a feature ({available_features()}), an indicator "
                f"with its parameters ({[s.name for s in available_indicators()]}, e.g. "
                f"rsi_14) or a column of {data.name} ({list(data.feature_names)})"
            )
        values = {name: self._values(data, name) for name in self.names}
        defined = np.ones((data.n_periods, data.n_assets), dtype=bool)
        for array in values.values():
            defined &= np.isfinite(array)
        with np.errstate(divide="ignore", invalid="ignore"):
            result = self._value(self.body, values)
        return np.asarray(result, dtype=bool) & defined

    def _values(self, data: MarketData, name: str) -> np.ndarray:
        if name not in INPUTS:
            return feature_values(data, name)
        prices = getattr(data, name)
        if prices is None:
            raise ConfigError(
                f"rule {self.text!r} uses {name}, but {data.name} has only {list(data.fields)}"
            )
        return np.asarray(prices, dtype=np.float64)

    def _value(self, node: ast.AST, values: Mapping[str, np.ndarray]) -> Any:
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, int | float)  # _check admitted numbers only
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp):
            op = _ARITHMETIC[type(node.op)]
            return op(self._value(node.left, values), self._value(node.right, values))
        if isinstance(node, ast.UnaryOp):
            operand = self._value(node.operand, values)
            if isinstance(node.op, ast.Not):
                return np.logical_not(operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            parts = [self._value(v, values) for v in node.values]
            out = parts[0]
            for part in parts[1:]:
                out = combine(out, part)
            return out
        assert isinstance(node, ast.Compare)  # _check admitted nothing else
        left = self._value(node.left, values)
        out = True
        for comparison, right_node in zip(node.ops, node.comparators, strict=True):
            right = self._value(right_node, values)
            out = np.logical_and(out, _COMPARISONS[type(comparison)](left, right))
            left = right
        return out


class RuleAgent(Resumable):
    """Holds equal weights in the symbols where ``rule`` is true; see the module docstring.

    Args:
        rule: the condition, e.g. ``"rsi_14 < 30"`` (checked now: a bad rule raises
            :class:`~marketarena.envs.errors.ConfigError` here).
        name: the agent's label (default ``rule:<rule>``).
    """

    _transient = ("_rule", "_table", "_dates")

    def __init__(self, rule: str, name: str | None = None) -> None:
        self._rule = Rule(rule)
        self.rule = self._rule.text
        self.name = name or f"rule:{self.rule}"
        self._table: np.ndarray | None = None
        self._dates: np.ndarray | None = None
        self._last: np.ndarray | None = None

    def use_data(self, data: MarketData) -> None:
        """Evaluate the rule over ``data``'s panel (the env's), once."""
        self._table = self._rule.evaluate(data)
        self._dates = data.dates

    def selected(self, date: Any) -> np.ndarray:
        """The boolean row of the symbols the rule selects on ``date``."""
        if self._table is None or self._dates is None:
            raise ConfigError(
                f"{self.name}: no market data yet; run it with run_backtest (which passes the "
                "env's data) or call use_data(data) first"
            )
        day = np.datetime64(date, "D")
        row = int(np.searchsorted(self._dates, day))
        if row >= len(self._dates) or self._dates[row] != day:
            raise ConfigError(f"{self.name}: {day} is not a date of the data it was given")
        return self._table[row]

    def reset(self, *, seed: int | None = None) -> None:
        self._last = None

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        chosen = self.selected(info["date"])
        if n_assets(info) != len(chosen):
            raise ConfigError(
                f"{self.name} was given data of {len(chosen)} symbols, but the env trades "
                f"{n_assets(info)}"
            )
        if self._last is not None and np.array_equal(chosen, self._last):
            return hold(info)
        self._last = chosen.copy()
        target = np.zeros(len(chosen) + 1)
        if chosen.any():
            target[:-1][chosen] = 1.0 / chosen.sum()
        else:
            target[-1] = 1.0
        return target
