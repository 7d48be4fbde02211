"""An LLM trading through the agent protocol, with any OpenAI-compatible endpoint.

Each decision: a prompt from the env's point-in-time snapshot (``info["snapshot"]``), a
structured answer (a JSON-schema ``response_format`` by default, or a tool call), parsed and
repaired into target weights. One bad answer never ends a backtest.

Repair policy, in order (every step is recorded as a note on the decision):

1. No answer, empty text or text that is not a JSON object → the fallback action (hold the
   current weights); outcome ``empty`` or ``invalid_json``.
2. JSON without weights (no ``weights`` object and no symbol keys at the top level) →
   fallback; outcome ``wrong_schema``.
3. Names that are not symbols (or ``CASH``) are dropped; values that are not finite numbers
   are dropped; negative weights become 0.
4. No positive weight left → all cash. Otherwise, without a ``CASH`` entry, cash is what
   the symbols leave (``1 - sum``) when that is non-negative; in every other case the
   weights are divided by their sum (``renormalised``).

With ``answer="picks"`` the answer is ``{"buy": [names]}``: the names (symbols, and CASH if
the model wants cash) share the portfolio equally; no names: all cash. Unknown or repeated
names are dropped and more than ``max_picks`` are cut to the first ``max_picks`` (each a
note, outcome ``repaired``); no ``buy`` list → fallback, ``wrong_schema``.

Outcomes: ``ok`` (used as given), ``repaired`` (used after step 3 or 4), and for failures
``empty``, ``invalid_json``, ``wrong_schema``, ``oversized`` (an answer longer than
``max_answer_chars``), ``rate_limited``, ``server_error``, ``timeout``, ``connection_error``,
``api_error`` (any other error status, or a success whose body is not a chat completion).
Transport failures come after the client's own retries with exponential backoff (429 honours
``Retry-After``); a whole request, retries included, never outlasts ``deadline`` seconds (a
server that trickles its answer byte by byte is cut off there). After
``max_connection_failures`` connection failures in a row the agent raises
:class:`LLMEndpointDown` instead of holding through a dead endpoint: a persisted run stops at
that step and resumes from it.

Answers go through :class:`~marketarena.agents.llm_cache.LLMCache`, so a rerun replays them
exactly. Transient failures (:data:`TRANSIENT`: timeouts, connection errors, 429 and 5xx after
the retries) are recorded in the run's decisions, not replayed by a read-write cache: a rerun
after an outage asks again (only an offline ``read_only`` replay reproduces them).
``retry_failed`` also asks again for cached answers that were unusable. Tokens, cost (from a
price table) and latency are counted per decision and per run. The API key is read from the
environment when the client is made and is never stored, cached, logged or reported.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from marketarena.agents.base import Resumable, hold, snapshot_of
from marketarena.agents.llm_cache import CacheMode, LLMCache
from marketarena.agents.llm_prompt import (
    CASH,
    PRICE_LEVELS,
    AnswerMode,
    DateMode,
    PriceLevels,
    PromptBuilder,
    PromptSettings,
)
from marketarena.agents.llm_tracing import record_decision
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, MarketArenaError, UnknownNameError
from marketarena.envs.features import available_features, feature_values
from marketarena.envs.indicators import resolve_indicator

OutputMode = Literal["json_schema", "tool"]
#: outcomes that come from the endpoint, not the answer: asked again on a rerun
TRANSIENT = ("rate_limited", "server_error", "timeout", "connection_error")
FAILURES = ("empty", "invalid_json", "wrong_schema", "oversized", *TRANSIENT, "api_error")
TOOL_NAME = "set_target_weights"

_semaphores: dict[str, tuple[threading.BoundedSemaphore, int]] = {}
_semaphores_lock = threading.Lock()


def endpoint_semaphore(base_url: str, limit: int) -> threading.BoundedSemaphore:
    """One semaphore per endpoint: every agent in this process shares its concurrency limit.

    The first agent to use an endpoint sets the limit; a later agent asking for another limit
    on the same endpoint gets the first one, with a warning (the cap is per endpoint, so that
    several agents cannot together exceed it).
    """
    with _semaphores_lock:
        if base_url not in _semaphores:
            _semaphores[base_url] = (threading.BoundedSemaphore(limit), limit)
        semaphore, first = _semaphores[base_url]
    if limit != first:
        warnings.warn(
            f"max_concurrency={limit} ignored for {base_url}: another agent in this process "
            f"set its limit to {first} first",
            stacklevel=3,
        )
    return semaphore


@dataclass(frozen=True)
class LLMConfig:
    """Settings of an :class:`LLMAgent`.

    Attributes:
        model: the model name the endpoint knows.
        base_url: an OpenAI-compatible endpoint; ``None`` uses ``OPENAI_BASE_URL`` or OpenAI.
        api_key_env: the environment variable holding the API key (read, never stored).
        temperature, max_tokens, seed: request parameters.
        timeout: seconds the client waits for any single read; max_retries: the client's
            retries with backoff.
        deadline: seconds one decision's request may take in all, retries and a trickling
            body included (``None``: ``timeout x (max_retries + 1) + 10 x max_retries``).
        max_answer_chars: a longer answer is not used or cached whole (outcome ``oversized``).
        max_connection_failures: connection failures in a row that stop the run
            (:class:`LLMEndpointDown`); 0 never stops.
        retry_failed: ask again when the cache holds an unusable answer or an error for the
            request (transient failures are asked again in any case).
        output: ``"json_schema"`` (response_format) or ``"tool"`` (a function call).
        answer: ``"weights"`` (a weight per symbol and CASH) or ``"picks"`` (up to
            ``max_picks`` names in equal weights, CASH among them if wanted: ~40 tokens
            instead of ~230 for 20 stocks, for small local models).
        close_prices: the last close in the prompt's market table beside the returns (off:
            ~20 % fewer prompt tokens for 20 stocks).
        price_levels: how that close is shown: ``"rebased"`` (default: 100 at the window's
            first session), ``"raw"`` (unadjusted, where the data has ``raw_close``) or
            ``"adjusted"`` (the data's back-adjusted close, which leaks later corporate
            actions); see :mod:`~marketarena.agents.llm_prompt`. Recorded in
            :meth:`LLMAgent.diagnostics`.
        decide_every: ask the model every this many steps and hold in between.
        lookback: sessions of prices in the prompt.
        news, headlines: a news file (:mod:`marketarena.envs.news`) and how many of its latest
            headlines per symbol, published by the decision's close, end the prompt (``None``:
            no news; not with ``anonymize_tickers``).
        indicators: indicators or features by name (``rsi_14``, ``macd_hist_12_26_9``, a
            column of the data such as ``sentiment``) whose values at the decision's close
            are shown per symbol in the prompt (:mod:`marketarena.envs.indicators`; computed
            once over the env's data, point-in-time as every indicator is).
        anonymize_tickers, dates, date_shift_days: see :mod:`~marketarena.agents.llm_prompt`.
        system_template, user_template: prompt files (default: ``agents/prompts/``).
        cache_path, cache_mode: the SQLite cache (``None`` path: no cache).
        prices: USD per million tokens, ``{model: (input, output)}``, for the cost column.
        max_concurrency: requests in flight to one endpoint from this process.
        name: the agent's name (default ``llm:<model>``).
    """

    model: str = "smollm2"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 400
    seed: int | None = 0
    timeout: float = 60.0
    max_retries: int = 3
    deadline: float | None = None
    max_answer_chars: int = 20_000
    max_connection_failures: int = 5
    retry_failed: bool = False
    output: OutputMode = "json_schema"
    answer: AnswerMode = "weights"
    max_picks: int = 5
    close_prices: bool = True
    price_levels: PriceLevels = "rebased"
    decide_every: int = 1
    lookback: int = 20
    news: str | None = None
    headlines: int = 3
    indicators: tuple[str, ...] = ()
    anonymize_tickers: bool = False
    dates: DateMode = "real"
    date_shift_days: int = 0
    system_template: str | None = None
    user_template: str | None = None
    cache_path: str | None = "llm_cache.sqlite"
    cache_mode: CacheMode = "read_write"
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    max_concurrency: int = 4
    name: str | None = None

    def __post_init__(self) -> None:
        if self.output not in ("json_schema", "tool"):
            raise ConfigError(f"output={self.output!r}: choose 'json_schema' or 'tool'")
        if self.answer not in ("weights", "picks"):
            raise ConfigError(f"answer={self.answer!r}: choose 'weights' or 'picks'")
        if isinstance(self.max_picks, bool) or not isinstance(self.max_picks, int):
            raise ConfigError(f"max_picks must be a whole number, got {self.max_picks!r}")
        if self.max_picks < 1:
            raise ConfigError(f"max_picks must be >= 1, got {self.max_picks}")
        if self.decide_every < 1 or self.lookback < 2 or self.max_concurrency < 1:
            raise ConfigError("decide_every and max_concurrency must be >= 1, lookback >= 2")
        if self.price_levels not in PRICE_LEVELS:
            raise ConfigError(
                f"price_levels={self.price_levels!r}: choose one of {list(PRICE_LEVELS)}"
            )
        if self.news is not None:  # the prompt's own check, before any request is made
            PromptSettings(
                anonymize_tickers=self.anonymize_tickers, news=self.news, headlines=self.headlines
            )
        if isinstance(self.indicators, str):
            object.__setattr__(self, "indicators", (self.indicators,))
        if not all(isinstance(n, str) and n for n in self.indicators):
            raise ConfigError(f"indicators must be names, e.g. [rsi_14], got {self.indicators!r}")
        object.__setattr__(self, "indicators", tuple(dict.fromkeys(self.indicators)))
        if self.dates not in ("real", "hidden", "shifted"):
            raise ConfigError(f"dates={self.dates!r}: choose 'real', 'hidden' or 'shifted'")
        if self.timeout <= 0 or self.max_retries < 0 or self.max_answer_chars < 1:
            raise ConfigError("timeout and max_answer_chars must be > 0, max_retries >= 0")
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigError(f"deadline must be > 0 seconds or None, got {self.deadline}")
        if self.max_connection_failures < 0:
            raise ConfigError("max_connection_failures must be >= 0 (0: never stop)")

    @property
    def request_deadline(self) -> float:
        """Seconds one decision's request may take in all (see ``deadline``)."""
        if self.deadline is not None:
            return self.deadline
        return self.timeout * (self.max_retries + 1) + 10.0 * self.max_retries


def _indicator(name: str) -> bool:
    """Whether ``name`` is an indicator with valid parameters (bad parameters of a known
    indicator raise their own ConfigError)."""
    try:
        resolve_indicator(name)
    except UnknownNameError:
        return False
    return True


class LLMEndpointDown(MarketArenaError, RuntimeError):
    """The endpoint failed to connect ``max_connection_failures`` times in a row."""


@dataclass
class Decision:
    """One call (or replay) and what came of it."""

    date: str
    outcome: str
    notes: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    cached: bool = False
    cost: float = 0.0
    confidence: float | None = None


@dataclass
class ParsedAnswer:
    weights: np.ndarray | None  # (N + 1,), or None for the fallback
    outcome: str
    notes: list[str]
    confidence: float | None = None


def parse_answer(text: str | None, builder: PromptBuilder) -> ParsedAnswer:
    """Apply the repair policy (module docstring) to an answer's text."""
    if text is None or not text.strip():
        return ParsedAnswer(None, "empty", ["no answer text"])
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return ParsedAnswer(None, "invalid_json", [f"not JSON: {exc.msg} at {exc.pos}"])
    if not isinstance(doc, dict):
        return ParsedAnswer(None, "invalid_json", [f"a JSON {type(doc).__name__}, not an object"])
    if builder.settings.answer == "picks":
        return _parse_picks(doc, builder)
    flat = "weights" not in doc  # symbol keys at the top level, beside "confidence"
    raw = doc.get("weights", doc)
    if not isinstance(raw, dict) or not any(
        builder.symbol_for(k) or k.strip().upper() == CASH for k in raw
    ):
        return ParsedAnswer(None, "wrong_schema", ["no weights for any known symbol"])
    notes: list[str] = []
    n = len(builder.symbols)
    weights = np.zeros(n + 1)
    cash_given = False
    unknown, bad = [], []
    for key, value in raw.items():
        if flat and key == "confidence":
            continue
        is_cash = key.strip().upper() == CASH
        symbol = None if is_cash else builder.symbol_for(key)
        if symbol is None and not is_cash:
            unknown.append(key)
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            bad.append(key)
            continue
        if is_cash:
            weights[n], cash_given = float(value), True
        else:
            weights[builder.symbols.index(symbol)] = float(value)
    if unknown:
        notes.append(f"dropped unknown symbol(s) {sorted(unknown)}")
    if bad:
        notes.append(f"dropped non-numeric weight(s) for {sorted(bad)}")
    if (weights < 0).any():
        notes.append("clipped negative weight(s) to 0")
        np.maximum(weights, 0.0, out=weights)
    with np.errstate(over="ignore"):
        total = weights.sum()
    if not math.isfinite(total):  # finite but huge weights: scale them before summing
        weights /= weights.max()
        total = weights.sum()
    if total <= 0:
        notes.append("no positive weight: all cash")
        weights[:] = 0.0
        weights[n] = 1.0
    elif not cash_given and weights[:n].sum() <= 1.0 + 1e-9:
        weights[n] = max(0.0, 1.0 - weights[:n].sum())
        if weights[:n].sum() < 1.0 - 1e-9:
            notes.append("no CASH weight: cash is the rest")
    elif abs(total - 1.0) > 1e-6:
        notes.append(f"renormalised: weights summed to {total:.6g}")
        weights /= total
    confidence = doc.get("confidence")
    if isinstance(confidence, bool) or not (
        isinstance(confidence, int | float) and 0 <= confidence <= 1
    ):
        confidence = None
    return ParsedAnswer(weights, "repaired" if notes else "ok", notes, confidence)


def _parse_picks(doc: Mapping[str, Any], builder: PromptBuilder) -> ParsedAnswer:
    """``{"buy": [names]}`` → equal weights over the names, CASH among them (module
    docstring)."""
    picks = doc.get("buy")
    if not isinstance(picks, list):
        return ParsedAnswer(None, "wrong_schema", ['no "buy" list of names'])
    notes: list[str] = []
    n = len(builder.symbols)
    chosen: list[int] = []  # columns of the weight vector; n is cash
    unknown, repeated = [], []
    for name in picks:
        if isinstance(name, str) and name.strip().upper() == CASH:
            column: int | None = n
        else:
            symbol = builder.symbol_for(name) if isinstance(name, str) else None
            column = None if symbol is None else builder.symbols.index(symbol)
        if column is None:
            unknown.append(name)
        elif column in chosen:
            repeated.append(name)
        else:
            chosen.append(column)
    if unknown:
        notes.append(f"dropped unknown pick(s) {unknown}")
    if repeated:
        notes.append(f"dropped repeated pick(s) {repeated}")
    limit = builder.settings.max_picks
    if len(chosen) > limit:
        notes.append(f"kept the first {limit} of {len(chosen)} picks")
        chosen = chosen[:limit]
    weights = np.zeros(n + 1)
    if chosen:
        weights[chosen] = 1.0 / len(chosen)
    else:
        weights[n] = 1.0
    return ParsedAnswer(weights, "repaired" if notes else "ok", notes, None)


class LLMAgent(Resumable):
    """See the module docstring. ``confidence`` holds the last answer's confidence (for
    :class:`~marketarena.evaluation.ensembles.ConfidenceWeightedEnsemble`)."""

    #: the cache connection and the HTTP client are reopened, and the config comes from the
    #: agent's spec (a resumed run may reach its endpoint at another URL), not saved
    _transient: tuple[str, ...] = ("cache", "_client", "config", "_indicator_values")

    def __init__(self, config: LLMConfig = LLMConfig()) -> None:
        self.config = config
        self.name = config.name or f"llm:{config.model}"
        # lookback returns need lookback + 1 closes (the 20-session return spans 21 closes)
        self.snapshot_lookback = config.lookback + 1
        self.cache = LLMCache(config.cache_path, config.cache_mode)
        self.confidence: float | None = None
        self.decisions: list[Decision] = []
        self._client: Any = None
        self._builder: PromptBuilder | None = None
        self._step = 0
        self._connection_failures = 0  # in a row
        #: the prompt's indicators over the env's data (use_data): dates and name -> (T, N)
        self._indicator_values: tuple[np.ndarray, dict[str, np.ndarray]] | None = None

    # ---------------------------------------------------------------- protocol
    def reset(self, *, seed: int | None = None) -> None:
        self._step = 0
        self._connection_failures = 0
        self.decisions = []
        self.confidence = None
        if self._builder is not None:
            self._builder.reset()

    def use_data(self, data: MarketData) -> None:
        """Compute the prompt's ``indicators`` over the env's data once (the runner calls this
        before the first step; :class:`~marketarena.agents.base.ReadsMarketData`). A name
        that is no feature, indicator or column of the data is a ConfigError."""
        names = self.config.indicators
        if not names:
            return
        unknown = [
            n
            for n in names
            if n not in data.feature_names and n not in available_features() and not _indicator(n)
        ]
        if unknown:
            raise ConfigError(
                f"{self.name}: unknown prompt indicator(s) {unknown}; use a feature "
                f"({available_features()}), an indicator with its parameters (e.g. rsi_14: "
                f"marketarena indicators list) or a column of {data.name} "
                f"({list(data.feature_names)})"
            )
        self._indicator_values = (
            np.asarray(data.dates),
            {n: np.asarray(feature_values(data, n), dtype=np.float64) for n in names},
        )

    def _indicators_at(self, snapshot: Any) -> dict[str, np.ndarray] | None:
        """Each prompt indicator's values ``(N,)`` at the snapshot's date (its decision)."""
        if not self.config.indicators:
            return None
        if self._indicator_values is None:
            raise ValueError(
                f"{self.name} shows indicators: give it the env's data first "
                "(agent.use_data(env.data); run_backtest does this)"
            )
        dates, values = self._indicator_values
        row = int(np.searchsorted(dates, np.datetime64(snapshot.date)))
        if row >= len(dates) or dates[row] != np.datetime64(snapshot.date):
            raise ValueError(f"{self.name}: {snapshot.date} is not a date of the data it was given")
        return {name: v[row] for name, v in values.items()}

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        step = self._step
        self._step += 1
        if step % self.config.decide_every:
            return hold(info)
        snapshot = snapshot_of(self, info)
        builder = self._builder_for(snapshot.symbols)
        messages = builder.messages(snapshot, self._indicators_at(snapshot))
        decision, text = self._ask(messages, builder, snapshot.date)
        parsed = parse_answer(text, builder) if decision.outcome == "ok" else None
        if parsed is not None:
            decision.outcome, decision.notes = parsed.outcome, decision.notes + parsed.notes
            decision.confidence = parsed.confidence
        self.confidence = decision.confidence
        self.decisions.append(decision)
        record_decision(self, messages, text, decision)  # when tracing is on
        if parsed is None or parsed.weights is None:
            return hold(info)
        return parsed.weights

    def prompt(self, snapshot: Any) -> list[dict[str, str]]:
        """The messages the agent would send for ``snapshot`` (for inspection and tests)."""
        return self._builder_for(snapshot.symbols).messages(snapshot, self._indicators_at(snapshot))

    def _builder_for(self, symbols: tuple[str, ...]) -> PromptBuilder:
        if self._builder is None or self._builder.symbols != tuple(symbols):
            c = self.config
            settings = PromptSettings(
                lookback=c.lookback,
                anonymize_tickers=c.anonymize_tickers,
                dates=c.dates,
                date_shift_days=c.date_shift_days,
                system_template=c.system_template,
                user_template=c.user_template,
                answer=c.answer,
                max_picks=c.max_picks,
                close_prices=c.close_prices,
                price_levels=c.price_levels,
                news=c.news,
                headlines=c.headlines,
            )
            self._builder = PromptBuilder(symbols, settings)
        return self._builder

    # ------------------------------------------------------------------ calls
    def request(self, messages: list[dict[str, str]], builder: PromptBuilder) -> dict[str, Any]:
        """The request body (everything but the endpoint and the key): also the cache key."""
        c = self.config
        body: dict[str, Any] = {
            "model": c.model,
            "messages": messages,
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
            "seed": c.seed,
        }
        schema = builder.output_schema()
        if c.output == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "target_weights", "schema": schema, "strict": True},
            }
        else:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": TOOL_NAME,
                        "description": "Set the portfolio's target weights.",
                        "parameters": schema,
                    },
                }
            ]
            body["tool_choice"] = {"type": "function", "function": {"name": TOOL_NAME}}
        return body

    def client(self) -> Any:
        if self._client is None:
            import openai

            c = self.config
            key = os.environ.get(c.api_key_env)
            base_url = c.base_url or os.environ.get("OPENAI_BASE_URL")
            if key is None and base_url is None:
                raise ConfigError(
                    f"{self.name}: set {c.api_key_env} (or give base_url for a local endpoint)"
                )
            self._client = openai.OpenAI(
                api_key=key or "not-needed",
                base_url=base_url,
                timeout=c.timeout,
                max_retries=c.max_retries,
            )
        return self._client

    def _ask(
        self, messages: list[dict[str, str]], builder: PromptBuilder, date: str
    ) -> tuple[Decision, str | None]:
        body = self.request(messages, builder)
        cached = self.cache.get(body)
        if cached is not None and not self._ask_again(cached, builder):
            return self._decision(date, cached, 0.0, cached=True), cached.get("text")
        started = time.perf_counter()
        response = self._call(body)
        latency = time.perf_counter() - started
        self._check_endpoint(response)
        if response.get("error") in TRANSIENT:
            self.cache.put_failure(body, response)  # replayed by read_only caches only
        else:
            self.cache.put(body, response)
        return self._decision(date, response, latency, cached=False), response.get("text")

    def _ask_again(self, cached: Mapping[str, Any], builder: PromptBuilder) -> bool:
        """Whether a cached response is asked for again instead of replayed."""
        if self.cache.mode == "read_only":
            return False  # an offline replay reproduces the run, failures included
        if cached.get("error") in TRANSIENT:
            return True  # an older cache that stored an outage
        if not self.config.retry_failed:
            return False
        return "error" in cached or parse_answer(cached.get("text"), builder).weights is None

    def _check_endpoint(self, response: Mapping[str, Any]) -> None:
        """Count connection failures in a row; too many stop the run."""
        if response.get("error") != "connection_error":
            self._connection_failures = 0
            return
        self._connection_failures += 1
        limit = self.config.max_connection_failures
        if limit and self._connection_failures >= limit:
            url = self.config.base_url or os.environ.get("OPENAI_BASE_URL") or "OpenAI"
            raise LLMEndpointDown(
                f"{self.name}: {self._connection_failures} connection failures in a row from "
                f"{url} ({response.get('detail')}); stopped instead of holding through a dead "
                "endpoint. Start the server (or fix --base-url), then resume a persisted backtest "
                "(backtest --resume RUN --base-url URL) or run again; "
                "max_connection_failures=0 holds instead."
            )

    def _call(self, body: dict[str, Any], deadline: float | None = None) -> dict[str, Any]:
        """One request with the client's retries, under the overall deadline (``deadline``
        seconds, default ``config.request_deadline``): the request runs in a worker thread,
        and one still running at the deadline is abandoned (its client is closed, which ends
        the read) and recorded as a timeout."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["response"] = self._request(body)
            except BaseException as exc:  # re-raised below, in the caller's thread
                outcome["raised"] = exc

        if deadline is None:
            deadline = self.config.request_deadline
        worker = threading.Thread(target=run, name=f"{self.name} request", daemon=True)
        worker.start()
        worker.join(deadline)
        if worker.is_alive():
            client, self._client = self._client, None
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            return {"error": "timeout", "detail": f"no complete answer within {deadline:g} s"}
        if "raised" in outcome:
            raise outcome["raised"]
        return self._capped(outcome["response"])

    def _capped(self, response: dict[str, Any]) -> dict[str, Any]:
        """An answer longer than ``max_answer_chars`` becomes an ``oversized`` failure that
        keeps its token counts (they were paid for) but not its text."""
        text, cap = response.get("text"), self.config.max_answer_chars
        if not isinstance(text, str) or len(text) <= cap:
            return response
        kept = {k: v for k, v in response.items() if k != "text"}
        return {
            **kept,
            "error": "oversized",
            "detail": f"answer of {len(text):,} characters > max_answer_chars={cap:,}",
        }

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request with the client's retries; failures become a recorded outcome."""
        completion = self._create(body)
        if isinstance(completion, dict):
            return completion
        try:
            choice = completion.choices[0] if completion.choices else None
            text = None
            if choice is not None:
                calls = choice.message.tool_calls or []
                text = calls[0].function.arguments if calls else choice.message.content
            usage = completion.usage
            return {
                "text": text,
                "finish_reason": getattr(choice, "finish_reason", None),
                "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
            }
        except (AttributeError, TypeError, ValueError) as exc:  # JSON, but not a completion
            return {"error": "api_error", "detail": f"malformed response ({_short(exc)})"}

    def _create(self, body: dict[str, Any]) -> Any:
        """The chat completion for ``body`` (the client's retries included), or a failure's
        ``{"error", "detail"}``."""
        import openai

        client = self.client()
        limit = endpoint_semaphore(str(client.base_url), self.config.max_concurrency)
        try:
            with limit:
                completion = client.chat.completions.create(**body)
        except openai.RateLimitError as exc:
            return {"error": "rate_limited", "detail": _short(exc)}
        except openai.APITimeoutError as exc:
            return {"error": "timeout", "detail": _short(exc)}
        except openai.APIConnectionError as exc:
            return {"error": "connection_error", "detail": _short(exc)}
        except openai.InternalServerError as exc:
            return {"error": "server_error", "detail": _short(exc)}
        except openai.APIError as exc:
            return {"error": "api_error", "detail": _short(exc)}
        except ValueError as exc:  # a success status whose body is not JSON
            return {"error": "api_error", "detail": f"malformed response ({_short(exc)})"}
        return completion

    def _decision(
        self, date: str, response: Mapping[str, Any], latency: float, *, cached: bool
    ) -> Decision:
        c = self.config
        prompt_t = int(response.get("prompt_tokens", 0))
        completion_t = int(response.get("completion_tokens", 0))
        price_in, price_out = c.prices.get(c.model, (0.0, 0.0))
        decision = Decision(
            date=date,
            outcome=response.get("error", "ok"),
            prompt_tokens=prompt_t,
            completion_tokens=completion_t,
            latency=latency,
            cached=cached,
            cost=(prompt_t * price_in + completion_t * price_out) / 1e6,
        )
        if "error" in response:
            decision.notes.append(str(response.get("detail", "")))
        return decision

    # ----------------------------------------------------------- diagnostics
    def diagnostics(self) -> dict[str, Any]:
        """Counts of outcomes, tokens, cost and latency of the run, every decision, and the
        prompt's price levels and date mode."""
        d = self.decisions
        outcomes = Counter(x.outcome for x in d)
        live = [x.latency for x in d if not x.cached]
        return {
            "model": self.config.model,
            "price_levels": self.config.price_levels,
            "indicators": list(self.config.indicators),
            "dates": self.config.dates,
            "decisions": len(d),
            "outcomes": {k: outcomes.get(k, 0) for k in ("ok", "repaired", *FAILURES)},
            "fallbacks": sum(outcomes.get(k, 0) for k in FAILURES),
            "prompt_tokens": sum(x.prompt_tokens for x in d),
            "completion_tokens": sum(x.completion_tokens for x in d),
            "cost_usd": sum(x.cost for x in d),
            "cached": sum(x.cached for x in d),
            "mean_latency_s": float(np.mean(live)) if live else 0.0,
            "log": [asdict(x) for x in d],
        }


def _short(exc: Exception) -> str:
    """An error's class and status, without request details (headers, keys)."""
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")
