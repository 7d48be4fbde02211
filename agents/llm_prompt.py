"""Prompts for the LLM agent, built only from a point-in-time :class:`MarketSnapshot`.

Nothing after the snapshot's date can reach a prompt: every number below comes from the
snapshot's windows, which end at the decision date (a test perturbs the future and compares
prompts byte for byte).

Templates are Python format strings; the defaults live in ``agents/prompts/``. A custom
template may use any of :data:`TEMPLATE_FIELDS`; an unknown field is an error naming the
available ones.

Against memorised history: ``anonymize_tickers`` replaces symbols with stable aliases (``S01``,
``S02``, ... in the data's column order), and ``dates`` can be ``"hidden"`` (sessions are
numbered from the start of the backtest) or ``"shifted"`` by a fixed number of days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from marketarena.envs.errors import ConfigError, DataError, MissingFileError

DateMode = Literal["real", "hidden", "shifted"]
#: ``weights``: a weight for every symbol and CASH (the full portfolio, ~10 tokens a symbol);
#: ``picks``: up to ``max_picks`` names held in equal weights, CASH among them if wanted (a few
#: dozen tokens in all: what a small local model answers in seconds)
AnswerMode = Literal["weights", "picks"]
CASH = "CASH"
TEMPLATE_FIELDS = (
    "date",
    "nav",
    "cash",
    "cash_weight",
    "total_return",
    "lookback",
    "market_table",
    "weights_table",
    "symbols",
    "fill_timing",
    "commission_bps",
    "slippage_bps",
    "answer_format",
)
FILL_TIMING = {
    "next_open": "at the next session's open",
    "next_close": "at the next session's close",
    "close": "at today's close (an optimistic simplification)",
}


def default_template(name: str) -> str:
    return resources.files("marketarena.agents").joinpath("prompts", name).read_text()


def read_template(path: str | Path | None, default: str) -> str:
    if path is None:
        return default_template(default)
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"prompt template not found: {path}")
    return path.read_text()


def _format(template: str, fields: Mapping[str, Any], source: str) -> str:
    try:
        return template.format(**fields)
    except KeyError as exc:
        raise ConfigError(
            f"prompt template {source} uses unknown field {exc.args[0]!r}; "
            f"available: {list(TEMPLATE_FIELDS)}"
        ) from None


@dataclass(frozen=True)
class PromptSettings:
    lookback: int = 20
    anonymize_tickers: bool = False
    dates: DateMode = "real"
    date_shift_days: int = 0
    system_template: str | None = None  # a file path, or None for the default
    user_template: str | None = None
    answer: AnswerMode = "weights"
    max_picks: int = 5
    #: the last close beside each symbol's returns in the market table (about 6 tokens a
    #: symbol; the returns carry what the model can use)
    close_prices: bool = True


class PromptBuilder:
    """Messages for one decision; holds the alias map so answers can be mapped back."""

    def __init__(self, symbols: Sequence[str], settings: PromptSettings) -> None:
        self.symbols = tuple(symbols)
        self.settings = settings
        if settings.anonymize_tickers:
            width = max(2, len(str(len(self.symbols))))
            self.aliases = tuple(f"S{i + 1:0{width}d}" for i in range(len(self.symbols)))
        else:
            self.aliases = self.symbols
        if CASH in self.aliases:
            raise DataError(f"a symbol is named {CASH!r}, which the prompts reserve for cash")
        self.system_template = read_template(settings.system_template, "system.txt")
        self.user_template = read_template(settings.user_template, "user.txt")
        self._first_date: str | None = None

    def reset(self) -> None:
        self._first_date = None

    def date_label(self, date: str) -> str:
        s = self.settings
        if self._first_date is None:
            self._first_date = date
        if s.dates == "real":
            return date
        if s.dates == "shifted":
            return str(np.datetime64(date) + np.timedelta64(s.date_shift_days, "D"))
        sessions = int(np.busday_count(np.datetime64(self._first_date), np.datetime64(date)))
        return f"session {sessions + 1}"

    def messages(self, snapshot: Any) -> list[dict[str, str]]:
        fields = self.fields(snapshot)
        return [
            {"role": "system", "content": _format(self.system_template, fields, "system")},
            {"role": "user", "content": _format(self.user_template, fields, "user")},
        ]

    def fields(self, snapshot: Any) -> dict[str, Any]:
        close = np.asarray(snapshot.close, dtype=float)  # (lookback + 1, N), last row = today
        rules = snapshot.rules
        weights = np.asarray(snapshot.weights, dtype=float)
        return {
            "date": self.date_label(snapshot.date),
            "nav": float(snapshot.nav),
            "cash": float(snapshot.cash),
            "cash_weight": float(weights[-1]),
            "total_return": float(snapshot.nav) / float(snapshot.initial_cash) - 1.0,
            "lookback": len(close) - 1,  # sessions of returns
            "market_table": self.market_table(close),
            "weights_table": self.weights_table(weights),
            "symbols": ", ".join([*self.aliases, CASH]),
            "fill_timing": FILL_TIMING.get(str(rules.get("execution")), "at the next session"),
            "commission_bps": rules.get("commission_bps", 0),
            "slippage_bps": rules.get("slippage_bps", 0),
            "answer_format": self.answer_format(),
        }

    def answer_format(self) -> str:
        """What the answer holds, in words (the system prompt's ``{answer_format}``)."""
        if self.settings.answer == "picks":
            return (
                f'Answer with JSON only: "buy" lists up to {self.settings.max_picks} names to '
                "hold in equal weights; CASH is one of them, so a list with CASH keeps part of "
                "the portfolio in cash."
            )
        # the default prompt's wording and line break, byte for byte: cached answers replay
        return (
            'Answer with JSON only: "weights" gives the target weight of every symbol and of '
            'CASH, and\n"confidence" is a number from 0 to 1.'
        )

    def market_table(self, close: np.ndarray) -> str:
        """One line per symbol: last close (unless ``close_prices`` is off) and its 5- and
        20-session returns (in %); "n/a" where fewer than k + 1 closes exist (early in the
        data)."""

        def ret(k: int, j: int) -> str:
            return (
                f"{(close[-1, j] / close[-1 - k, j] - 1) * 100:+.1f}" if k < len(close) else "n/a"
            )

        if not self.settings.close_prices:
            lines = ["symbol 5d 20d"]
            lines += [f"{alias} {ret(5, j)} {ret(20, j)}" for j, alias in enumerate(self.aliases)]
            return "\n".join(lines)
        lines = ["symbol close 5d 20d"]
        lines += [
            f"{alias} {close[-1, j]:.2f} {ret(5, j)} {ret(20, j)}"
            for j, alias in enumerate(self.aliases)
        ]
        return "\n".join(lines)

    def weights_table(self, weights: np.ndarray) -> str:
        held = [f"{a} {w:.1%}" for a, w in zip(self.aliases, weights[:-1], strict=True) if w > 1e-4]
        return ", ".join([*held, f"{CASH} {weights[-1]:.1%}"])

    def output_schema(self) -> dict[str, Any]:
        """The JSON schema of an answer: a weight per symbol and CASH, and a confidence; or,
        with ``answer="picks"``, the names to hold in equal weights (CASH among them).

        Kept minimal on purpose: every extra field is tokens the model must generate.
        """
        if self.settings.answer == "picks":
            return {
                "type": "object",
                "properties": {
                    "buy": {
                        "type": "array",
                        "items": {"type": "string", "enum": [*self.aliases, CASH]},
                        "maxItems": self.settings.max_picks,
                    },
                },
                "required": ["buy"],
                "additionalProperties": False,
            }
        names = [*self.aliases, CASH]
        weight = {"type": "number", "minimum": 0, "maximum": 1}
        return {
            "type": "object",
            "properties": {
                "weights": {
                    "type": "object",
                    "properties": {n: dict(weight) for n in names},
                    "required": names,
                    "additionalProperties": False,
                },
                "confidence": dict(weight),
            },
            "required": ["weights", "confidence"],
            "additionalProperties": False,
        }

    def symbol_for(self, name: str) -> str | None:
        """The real symbol for a name in an answer (alias or symbol; case-insensitive)."""
        key = name.strip().upper()
        for alias, symbol in zip(self.aliases, self.symbols, strict=True):
            if key in (alias.upper(), symbol.upper()):
                return symbol
        return None
