"""Prompts for the LLM agent, built only from a point-in-time :class:`MarketSnapshot`.

Nothing after the snapshot's date can reach a prompt: every number below comes from the
snapshot's windows, which end at the decision date (a test perturbs the future and compares
prompts byte for byte).

Templates are Python format strings; the defaults live in ``agents/prompts/``. A custom
template may use any of :data:`TEMPLATE_FIELDS`; an unknown field is an error naming the
available ones.

Against memorised history: ``anonymize_tickers`` replaces symbols with stable aliases (``S01``,
``S02``, ... in the data's column order), and ``dates`` can be ``"hidden"`` (trading sessions
of the data are numbered from the first decision: ``session 1``, ``session 2``, ... with no gap
over a holiday; the count is the index in the data's dates, kept in the agent's state, so a
resumed or continued run goes on from where it stopped) or ``"shifted"`` by a fixed number of
days.

Price levels (``price_levels``, the market table's level column; returns are scale-free and the
same in every mode, computed from the data's closes):

* ``"rebased"`` (default): each symbol's close over its close at the window's first session,
  times 100 (a symbol listed inside the window: at its first bar). No absolute price, nothing
  to recall.
* ``"raw"``: the unadjusted close as printed that day (the data's ``raw_close``, see
  :mod:`marketarena.envs.data`); data without one is a ConfigError.
* ``"adjusted"``: the data's close as it is. Back-adjusted panels (all the bundled ones) divide
  past prices by every later split and dividend, so such a level reveals future corporate
  actions (AAPL on 2018-01-02 shows 40.83; it traded near $172) and invites recall.

News (``news``: a news file, :mod:`marketarena.envs.news`): the user message ends with the
latest ``headlines`` items per symbol published by the decision's session close (XNYS close
times), newest first, without their times. Headlines name companies, so ``news`` and
``anonymize_tickers`` cannot be combined.

With a point-in-time universe (``missing="point_in_time"``) a symbol the decision cannot
trade (before its first bar, after its last) is left out of the market table, the symbol list
and the answer schema; a position in it still shows in the weights, marked as sold at the next
fill.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from marketarena.envs.errors import ConfigError, DataError, MissingFileError
from marketarena.envs.news import latest_headlines, load_news, session_closes

DateMode = Literal["real", "hidden", "shifted"]
PriceLevels = Literal["rebased", "raw", "adjusted"]
PRICE_LEVELS = ("rebased", "raw", "adjusted")
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
    #: how that level is shown: "rebased" (100 at the window's start), "raw" or "adjusted"
    price_levels: PriceLevels = "rebased"
    #: a news file whose latest ``headlines`` items per symbol end the user message
    news: str | None = None
    headlines: int = 3

    def __post_init__(self) -> None:
        if self.price_levels not in PRICE_LEVELS:
            raise ConfigError(
                f"price_levels={self.price_levels!r}: choose one of {list(PRICE_LEVELS)}"
            )
        if self.news is not None and (self.anonymize_tickers or self.headlines < 1):
            raise ConfigError(
                "news needs headlines >= 1 and no anonymize_tickers (headlines name companies)"
            )


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
        self.news = load_news(settings.news) if settings.news is not None else None
        self._first_session: int | None = None
        #: columns the latest prompt offered (None: all), for the answer schema
        self._offered: tuple[int, ...] | None = None

    def reset(self) -> None:
        self._first_session = None
        self.__dict__.pop("_weekday_origin", None)  # a new episode counts sessions

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a builder from a run's checkpoint. One saved before prompts had price levels,
        headlines and session-counted hidden dates (it has no ``_first_session``) goes on
        making the prompts its run began with: adjusted closes, no headlines, and hidden dates
        numbered by weekdays from its first decision (``_weekday_origin``), so that a resumed
        or continued old run asks what the uninterrupted run asked."""
        state = dict(state)
        if "_first_session" not in state:
            settings = state["settings"]
            for name, before in (("price_levels", "adjusted"), ("news", None), ("headlines", 3)):
                if name not in vars(settings):
                    object.__setattr__(settings, name, before)
            state["_weekday_origin"] = state.pop("_first_date", None)
            state.update(_first_session=None, news=None, _offered=None)
        self.__dict__.update(state)

    def date_label(self, snapshot: Any) -> str:
        """The date as the prompt shows it: real, shifted, or ``session k``, where ``k``
        counts the data's trading dates from the first decision's (``snapshot.session``)."""
        s = self.settings
        date = snapshot.date
        if s.dates == "real":
            return str(date)
        if s.dates == "shifted":
            return str(np.datetime64(date) + np.timedelta64(s.date_shift_days, "D"))
        origin = self.__dict__.get("_weekday_origin")
        if origin is not None:  # a builder saved by an older version: weekdays, as it began
            weekdays = np.busday_count(np.datetime64(origin), np.datetime64(date))
            return f"session {int(weekdays) + 1}"
        if snapshot.session is None:
            raise ValueError("dates='hidden' needs the snapshot's session index")
        if self._first_session is None:
            self._first_session = int(snapshot.session)
        return f"session {int(snapshot.session) - self._first_session + 1}"

    def messages(
        self, snapshot: Any, indicators: Mapping[str, np.ndarray] | None = None
    ) -> list[dict[str, str]]:
        """The system and user messages for ``snapshot``; ``indicators`` (name -> each
        symbol's value at the decision) add a table after the market table's message."""
        fields = self.fields(snapshot)
        user = _format(self.user_template, fields, "user")
        if indicators:
            user += "\n" + self.indicators_text(indicators)
        if self.news is not None:
            user += "\n" + self.headlines_text(snapshot)
        return [
            {"role": "system", "content": _format(self.system_template, fields, "system")},
            {"role": "user", "content": user},
        ]

    def indicators_text(self, indicators: Mapping[str, np.ndarray]) -> str:
        """A table of the indicators' values at the decision's close, a row per symbol the
        prompt offers ("n/a" where one is not yet defined)."""
        names = list(indicators)
        lines = ["Indicators at this session's close:", " ".join(["symbol", *names])]
        for j in self._offered_columns():
            cells = [
                f"{float(indicators[n][j]):.2f}" if np.isfinite(indicators[n][j]) else "n/a"
                for n in names
            ]
            lines.append(" ".join([self.aliases[j], *cells]))
        return "\n".join(lines)

    def headlines_text(self, snapshot: Any) -> str:
        """The latest headlines per symbol published by the snapshot's session close."""
        assert self.news is not None
        close = session_closes([snapshot.date])[0]
        k = self.settings.headlines
        lines = [f"Latest headlines (up to {k} a symbol, newest first):"]
        for alias, symbol in zip(self.aliases, self.symbols, strict=True):
            lines += [
                f"{alias}: {h.headline}" for h in latest_headlines(self.news, symbol, close, k)
            ]
        return "\n".join(lines if len(lines) > 1 else [*lines, "none"])

    def fields(self, snapshot: Any) -> dict[str, Any]:
        close = np.asarray(snapshot.close, dtype=float)  # (lookback + 1, N), last row = today
        rules = snapshot.rules
        weights = np.asarray(snapshot.weights, dtype=float)
        tradable = snapshot.tradable
        self._offered = (
            None if tradable is None else tuple(np.flatnonzero(np.asarray(tradable)).tolist())
        )
        offered = self._offered_aliases()
        return {
            "date": self.date_label(snapshot),
            "nav": float(snapshot.nav),
            "cash": float(snapshot.cash),
            "cash_weight": float(weights[-1]),
            "total_return": float(snapshot.nav) / float(snapshot.initial_cash) - 1.0,
            "lookback": len(close) - 1,  # sessions of returns
            "market_table": self.market_table(close, self.levels(snapshot, close), snapshot.listed),
            "weights_table": self.weights_table(weights),
            "symbols": ", ".join([*offered, CASH]),
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

    def _offered_columns(self) -> range | tuple[int, ...]:
        return range(len(self.symbols)) if self._offered is None else self._offered

    def _offered_aliases(self) -> list[str]:
        return [self.aliases[j] for j in self._offered_columns()]

    def levels(self, snapshot: Any, close: np.ndarray) -> np.ndarray:
        """Today's level of each symbol under ``price_levels`` (module docstring)."""
        mode = self.settings.price_levels
        if mode == "adjusted":
            return close[-1]
        if mode == "raw":
            raw = snapshot.raw_close
            if raw is None:
                raise ConfigError(
                    "price_levels='raw' needs unadjusted closes, and this data has none: load "
                    "a long file with a raw_close or adjustment_factor column (see "
                    "marketarena.envs.data), or use price_levels='rebased'"
                )
            return np.asarray(raw, dtype=float)[-1]
        # before a listing the bookkeeping price is the first close: 100 at the first bar
        return 100.0 * close[-1] / close[0]

    def market_table(
        self, close: np.ndarray, levels: np.ndarray, listed: np.ndarray | None = None
    ) -> str:
        """One line per symbol offered: its level (unless ``close_prices`` is off) and its 5-
        and 20-session returns (in %); "n/a" where fewer than k + 1 closes exist (early in the
        data, or since a symbol's first bar)."""

        def ret(k: int, j: int) -> str:
            if k >= len(close) or (listed is not None and not listed[-1 - k, j]):
                return "n/a"
            return f"{(close[-1, j] / close[-1 - k, j] - 1) * 100:+.1f}"

        columns = self._offered_columns()
        if not self.settings.close_prices:
            lines = ["symbol 5d 20d"]
            lines += [f"{self.aliases[j]} {ret(5, j)} {ret(20, j)}" for j in columns]
            return "\n".join(lines)
        if self.settings.price_levels == "rebased":
            ago = len(close) - 1
            lines = [f"level: close rebased to 100 {ago} sessions ago", "symbol level 5d 20d"]
        else:
            lines = ["symbol close 5d 20d"]
        lines += [f"{self.aliases[j]} {levels[j]:.2f} {ret(5, j)} {ret(20, j)}" for j in columns]
        return "\n".join(lines)

    def weights_table(self, weights: np.ndarray) -> str:
        offered = set(self._offered_columns())
        held = [
            f"{a} {w:.1%}" + ("" if j in offered else " (not tradable: sold at the next fill)")
            for j, (a, w) in enumerate(zip(self.aliases, weights[:-1], strict=True))
            if w > 1e-4
        ]
        return ", ".join([*held, f"{CASH} {weights[-1]:.1%}"])

    def output_schema(self) -> dict[str, Any]:
        """The JSON schema of an answer: a weight per symbol the latest prompt offered and
        CASH, and a confidence; or, with ``answer="picks"``, the names to hold in equal weights
        (CASH among them).

        Kept minimal on purpose: every extra field is tokens the model must generate.
        """
        offered = self._offered_aliases()
        if self.settings.answer == "picks":
            return {
                "type": "object",
                "properties": {
                    "buy": {
                        "type": "array",
                        "items": {"type": "string", "enum": [*offered, CASH]},
                        "maxItems": self.settings.max_picks,
                    },
                },
                "required": ["buy"],
                "additionalProperties": False,
            }
        names = [*offered, CASH]
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
