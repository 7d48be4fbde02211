"""``llm-tools:<model>``: an LLM that decides in steps, calling the point-in-time toolbox.

Each decision (after the close of bar ``t``; orders fill at the next bar, as for every agent)
is a conversation with the model over the OpenAI function-calling API (``tools=``,
``tool_choice``): a system message (the task, the rules, the budget) and a user message (the
date, the symbols, the portfolio), then turns. In each turn the model answers with tool calls,
which run on a :class:`~marketarena.agents.llm_tools.Toolbox` built for the decision (it holds
the data up to ``t`` only), and their results go back as ``tool`` messages. The decision ends
when ``set_target_weights`` succeeds: its weights are the action.

Budgets per decision (:class:`LLMToolConfig`), checked before every turn:

* ``max_tool_calls`` (default 12): tool calls run, a turn with no tool call counting as one
  (the model is reminded to use the tools). Calls beyond the budget in a turn are answered
  with an error; when it is spent, one last turn forces ``set_target_weights``
  (``tool_choice`` names it). ``set_target_weights`` itself is never refused for the budget.
* ``max_decision_tokens`` (default 30,000): prompt + completion tokens of the decision's
  turns; no new turn starts once they are reached.
* ``decision_seconds`` (default 300): the decision's model time, the sum of its turns'
  latencies as recorded (a replay from the cache makes the same choices as the run it
  replays; the tools' own time, milliseconds, is not counted). Each request's deadline is
  the smaller of ``request_deadline`` and what is left.

Fallback: when a budget runs out before an accepted ``set_target_weights`` (outcome
``tool_budget``, ``token_budget`` or ``time_budget``), or a turn fails (the transport outcomes
of :mod:`~marketarena.agents.llm_agent`: ``rate_limited``, ``server_error``, ``timeout``,
``connection_error``, ``api_error``, ``oversized``), the agent holds its current weights, as
:class:`~marketarena.agents.llm_agent.LLMAgent` does; the outcome and a note are recorded.
Connection failures in a row still stop the run (:class:`LLMEndpointDown`).

Cache: every turn's request (model, the whole conversation so far, the tools, tool_choice,
temperature, max_tokens, seed) is a key of :class:`~marketarena.agents.llm_cache.LLMCache`
and its reply (text, tool calls, tokens, latency) the value. Tool results are deterministic,
so a rerun replays every turn, and a ``read_only`` replay needs no server. Transient
failures are kept apart as for ``llm:`` agents.

Record: each decision is a :class:`ToolDecision` in ``agent.decisions`` and in
``diagnostics()["log"]`` (where saved runs and reports read ``llm:`` decisions): outcome,
notes, tokens, cost, latency, tool calls, tool errors, look-ahead refusals, and the
transcript: per turn its reply (text, tool calls) and each call's result. Resumable
(``get_state``/``set_state``) like :class:`LLMAgent`.

Of :class:`LLMConfig`'s fields the tool agent uses the endpoint, request, cache, price,
concurrency, ``decide_every`` and ``news`` settings; the one-prompt agent's prompt and
answer settings (``output``, ``answer``, ``lookback``, ``indicators``, ``price_levels``,
``anonymize_tickers``, ``dates``, templates) do not apply and are ignored: the model asks the
tools for what it wants to see.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from marketarena.agents.base import hold
from marketarena.agents.llm_agent import (
    TRANSIENT,
    Decision,
    LLMAgent,
    LLMConfig,
    _short,
)
from marketarena.agents.llm_prompt import FILL_TIMING
from marketarena.agents.llm_tools import ACTION_TOOL, CASH, Toolbox
from marketarena.agents.llm_tracing import record_decision
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError
from marketarena.envs.news import NewsEvents, load_news

BUDGETS = ("tool_budget", "token_budget", "time_budget")
#: the options only :class:`LLMToolConfig` has (an ``llm:`` agent's spec ignores them)
TOOL_OPTIONS = ("max_tool_calls", "max_decision_tokens", "decision_seconds", "tool_choice")
FAILURES = (*BUDGETS, *TRANSIENT, "api_error", "oversized")

SYSTEM_PROMPT = (
    "You manage a portfolio of stocks and cash. It is after the close of {date}; orders fill "
    "{fill_timing}, with {commission_bps} bps commission and {slippage_bps} bps slippage. Use "
    "the tools to look at prices, indicators{news}, the portfolio and the rules: only data up "
    "to {date} exists. Then call set_target_weights once with the target weight of each symbol "
    "to hold and of CASH (summing to 1). You have {max_tool_calls} tool calls."
)
USER_PROMPT = (
    "Decision after the close of {date}. Symbols: {symbols}. Portfolio: NAV {nav:.2f}, "
    "weights {weights}. Decide."
)
NUDGE = "Call a tool: look something up, or end the decision with set_target_weights."


@dataclass(frozen=True)
class LLMToolConfig(LLMConfig):
    """Settings of an :class:`LLMToolAgent`: those of :class:`LLMConfig` (see the module
    docstring for which apply) and the per-decision budgets.

    Attributes:
        max_tool_calls: tool calls a decision may run (a turn without one counts as one).
        max_decision_tokens: prompt + completion tokens after which no turn starts.
        decision_seconds: model time a decision may take (the sum of its turns' latencies).
        tool_choice: ``"auto"`` (default) or ``"required"`` in the turns before the last.
    """

    max_tool_calls: int = 12
    max_decision_tokens: int = 30_000
    decision_seconds: float = 300.0
    tool_choice: Literal["auto", "required"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_tool_calls", "max_decision_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
        if isinstance(self.decision_seconds, bool) or not isinstance(
            self.decision_seconds, int | float
        ):
            raise ConfigError(f"decision_seconds must be a number, got {self.decision_seconds!r}")
        if self.max_tool_calls < 1 or self.max_decision_tokens < 1:
            raise ConfigError("max_tool_calls and max_decision_tokens must be >= 1")
        if not self.decision_seconds > 0:
            raise ConfigError(f"decision_seconds must be > 0, got {self.decision_seconds}")
        if self.tool_choice not in ("auto", "required"):
            raise ConfigError(f"tool_choice={self.tool_choice!r}: choose 'auto' or 'required'")


@dataclass
class ToolDecision(Decision):
    """One decision of the tool loop: :class:`Decision`'s fields (tokens and latency summed
    over its turns; ``cached`` when every turn was a replay) and the loop's own record."""

    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    look_ahead_refusals: int = 0
    transcript: list[dict[str, Any]] = field(default_factory=list)


class LLMToolAgent(LLMAgent):
    """See the module docstring."""

    _transient: tuple[str, ...] = (*LLMAgent._transient, "_data", "_news")
    config: LLMToolConfig

    def __init__(self, config: LLMToolConfig = LLMToolConfig()) -> None:
        super().__init__(config)
        self.name = config.name or f"llm-tools:{config.model}"
        self.snapshot_lookback = 1  # the portfolio; the history comes from the toolbox
        self.decisions: list[Decision] = []
        self._data: MarketData | None = None
        self._news: NewsEvents | None = None if config.news is None else load_news(config.news)

    def use_data(self, data: MarketData) -> None:
        """Keep the env's panel: each decision's toolbox cuts it at the decision's row (the
        runner calls this before the first step)."""
        self._data = data

    # ------------------------------------------------------------------ protocol
    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        step = self._step
        self._step += 1
        if step % self.config.decide_every:
            return hold(info)
        snapshot = info.get("snapshot")
        if snapshot is None or self._data is None:
            raise ValueError(
                f"{self.name} needs info['snapshot'] and the env's data: build the env with "
                "snapshot_lookback=1 and call agent.use_data(env.data) (run_backtest does both)"
            )
        box = self.toolbox(snapshot)
        messages = self.messages(box)
        decision = self._loop(box, messages)
        self.confidence = decision.confidence
        self.decisions.append(decision)
        record_decision(self, messages, _last_text(decision), decision)  # when tracing is on
        if box.action is None:
            return hold(info)
        return box.action.weights

    def toolbox(self, snapshot: Any) -> Toolbox:
        """The decision's toolbox (the MCP server and teams build theirs the same way)."""
        assert self._data is not None
        return Toolbox(self._data, snapshot, news=self._news)

    def messages(self, box: Toolbox) -> list[dict[str, Any]]:
        """The system and user messages that open a decision's conversation."""
        s = box.snapshot
        rules = s.rules
        weights = np.asarray(s.weights, dtype=float)
        held = [f"{sym} {w:.1%}" for sym, w in zip(box.symbols, weights[:-1], strict=True) if w]
        fields = {
            "date": box.date,
            "fill_timing": FILL_TIMING.get(str(rules.get("execution")), "at the next session"),
            "commission_bps": rules.get("commission_bps", 0),
            "slippage_bps": rules.get("slippage_bps", 0),
            "news": ", news" if box.news is not None else "",
            "max_tool_calls": self.config.max_tool_calls,
            "symbols": ", ".join(box.symbols),
            "nav": float(s.nav),
            "weights": ", ".join([*held, f"{CASH} {weights[-1]:.1%}"]),
        }
        return [
            {"role": "system", "content": SYSTEM_PROMPT.format(**fields)},
            {"role": "user", "content": USER_PROMPT.format(**fields)},
        ]

    # ---------------------------------------------------------------------- loop
    def _loop(self, box: Toolbox, messages: list[dict[str, Any]]) -> ToolDecision:
        c = self.config
        tools = box.openai_tools()
        decision = ToolDecision(date=box.date, outcome="ok", cached=True)
        used = 0  # tool calls run, and turns without one
        while True:
            if decision.prompt_tokens + decision.completion_tokens >= c.max_decision_tokens:
                return self._fallback(decision, "token_budget", f"{c.max_decision_tokens} tokens")
            left = c.decision_seconds - decision.latency
            if left <= 0:
                return self._fallback(decision, "time_budget", f"{c.decision_seconds:g} s")
            forced = used >= c.max_tool_calls
            body = self.turn_request(messages, tools, forced)
            reply, cached = self._turn(body, left)
            decision.turns += 1
            decision.cached &= cached
            decision.latency += float(reply.get("latency", 0.0))
            decision.prompt_tokens += int(reply.get("prompt_tokens", 0))
            decision.completion_tokens += int(reply.get("completion_tokens", 0))
            price_in, price_out = c.prices.get(c.model, (0.0, 0.0))
            decision.cost = (
                decision.prompt_tokens * price_in + decision.completion_tokens * price_out
            ) / 1e6
            turn: dict[str, Any] = {"content": reply.get("text"), "cached": cached, "calls": []}
            decision.transcript.append(turn)
            if "error" in reply:
                turn["error"] = reply["error"]
                outcome = reply["error"]
                if outcome == "timeout" and reply.get("cut_by_budget"):
                    outcome = "time_budget"
                return self._fallback(decision, outcome, str(reply.get("detail", "")))
            calls = reply.get("tool_calls") or []
            messages.append(_assistant_message(reply))
            if not calls:
                if forced:
                    return self._fallback(decision, "tool_budget", f"{c.max_tool_calls} calls")
                used += 1
                messages.append({"role": "user", "content": NUDGE})
                continue
            for call in calls:
                if call["name"] != ACTION_TOOL and used >= c.max_tool_calls:
                    result: dict[str, Any] = {
                        "error": f"the budget of {c.max_tool_calls} tool calls is spent: "
                        "call set_target_weights now",
                        "argument": None,
                    }
                else:
                    result = box.dispatch(call["name"], call["arguments"])
                    used += 1
                turn["calls"].append({**call, "result": result})
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call["id"],
                        "content": json.dumps(result, separators=(",", ":")),
                    }
                )
                if box.action is not None:
                    break
            _count(decision, box)
            if box.action is not None:
                decision.confidence = box.action.confidence
                skipped = len(calls) - len(turn["calls"])
                if skipped:
                    decision.notes.append(f"{skipped} call(s) after set_target_weights not run")
                return decision
            if forced:
                return self._fallback(decision, "tool_budget", f"{c.max_tool_calls} calls")

    def _fallback(self, decision: ToolDecision, outcome: str, detail: str) -> ToolDecision:
        decision.outcome = outcome
        why = {
            "tool_budget": "tool-call budget spent",
            "token_budget": "token budget reached",
            "time_budget": "time budget spent",
        }.get(outcome, outcome)
        decision.notes.append(f"{why} ({detail}) without set_target_weights: hold")
        return decision

    def turn_request(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], forced: bool
    ) -> dict[str, Any]:
        """A turn's request body (everything but the endpoint and the key): the cache key."""
        c = self.config
        choice: Any = c.tool_choice
        if forced:
            choice = {"type": "function", "function": {"name": ACTION_TOOL}}
        return {
            "model": c.model,
            "messages": list(messages),
            "tools": tools,
            "tool_choice": choice,
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
            "seed": c.seed,
        }

    def _turn(self, body: dict[str, Any], left: float) -> tuple[dict[str, Any], bool]:
        """The reply to ``body``: from the cache, else asked under ``min(request_deadline,
        left)`` seconds and stored; and whether it was a replay."""
        cached = self.cache.get(body)
        if cached is not None and not self._ask_turn_again(cached):
            return cached, True
        deadline = min(self.config.request_deadline, left)
        started = time.perf_counter()
        reply = self._call(body, deadline)
        reply["latency"] = time.perf_counter() - started
        if reply.get("error") == "timeout" and deadline < self.config.request_deadline:
            reply["cut_by_budget"] = True
        self._check_endpoint(reply)
        if reply.get("error") in TRANSIENT:
            self.cache.put_failure(body, reply)
        else:
            self.cache.put(body, reply)
        return reply, False

    def _ask_turn_again(self, cached: Mapping[str, Any]) -> bool:
        if self.cache.mode == "read_only":
            return False
        if cached.get("error") in TRANSIENT:
            return True
        return self.config.retry_failed and "error" in cached

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        """One turn's request: the reply's text and tool calls, or a recorded failure."""
        completion = self._create(body)
        if isinstance(completion, dict):
            return completion
        try:
            choice = completion.choices[0] if completion.choices else None
            message = None if choice is None else choice.message
            calls = [
                {"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
                for t in (getattr(message, "tool_calls", None) or [])
            ]
            usage = completion.usage
            text = None if message is None else message.content
            reply: dict[str, Any] = {
                "text": text,
                "tool_calls": calls,
                "finish_reason": getattr(choice, "finish_reason", None),
                "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
            }
        except (AttributeError, TypeError, ValueError) as exc:  # JSON, but not a completion
            return {"error": "api_error", "detail": f"malformed response ({_short(exc)})"}
        size = len(text or "") + sum(len(str(t["arguments"])) for t in calls)
        if size > self.config.max_answer_chars:
            return {
                **{k: v for k, v in reply.items() if k.endswith("_tokens")},
                "error": "oversized",
                "detail": f"reply of {size:,} characters > max_answer_chars="
                f"{self.config.max_answer_chars:,}",
            }
        return reply

    # --------------------------------------------------------------- diagnostics
    def diagnostics(self) -> dict[str, Any]:
        """Outcomes, tokens, cost, latency, tool calls and look-ahead refusals of the run,
        and every decision with its transcript (``log``)."""
        d = [x for x in self.decisions if isinstance(x, ToolDecision)]
        outcomes = Counter(x.outcome for x in d)
        live = [x.latency for x in d if not x.cached]
        return {
            "model": self.config.model,
            "tools": True,
            "decisions": len(d),
            "outcomes": {k: outcomes.get(k, 0) for k in ("ok", *FAILURES)},
            "fallbacks": sum(outcomes.get(k, 0) for k in FAILURES),
            "turns": sum(x.turns for x in d),
            "tool_calls": sum(x.tool_calls for x in d),
            "tool_errors": sum(x.tool_errors for x in d),
            "look_ahead_refusals": sum(x.look_ahead_refusals for x in d),
            "prompt_tokens": sum(x.prompt_tokens for x in d),
            "completion_tokens": sum(x.completion_tokens for x in d),
            "cost_usd": sum(x.cost for x in d),
            "cached": sum(x.cached for x in d),
            "mean_latency_s": float(np.mean(live)) if live else 0.0,
            "log": [asdict(x) for x in d],
        }


def report_transcripts(log: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The decisions of :meth:`LLMToolAgent.diagnostics`'s ``log`` in a team's transcript
    shape, so that :func:`~marketarena.agents.llm_team.transcript_markdown` (and the report)
    renders them: a turn per model turn (``role`` "model"; its text as the answer; its tool
    calls, arguments parsed where they are JSON and as written where not, with their results);
    the decision's tokens and cost are a note (the loop counts them per decision)."""
    out = []
    for d in log:
        totals = (
            f"turns: {d['turns']}, tool calls: {d['tool_calls']}; tokens: "
            f"{d['prompt_tokens']:,} + {d['completion_tokens']:,}, ${d['cost']:.4f}"
        )
        turns = [
            {
                "role": "model",
                "round": k,
                "outcome": turn.get("error", "ok"),
                "fallback": None,
                "request": [],
                "tool_calls": [{**call, "arguments": _parsed(call)} for call in turn["calls"]],
                "answer": turn.get("content") or "(no text)",
                "notes": ["replayed from the cache"] if turn.get("cached") else [],
            }
            for k, turn in enumerate(d["transcript"], 1)
        ]
        notes = [*d["notes"], totals]
        out.append({"date": d["date"], "outcome": d["outcome"], "notes": notes, "turns": turns})
    return out


def _parsed(call: Mapping[str, Any]) -> Any:
    """A call's arguments: the JSON the model wrote, parsed (as written when it is not)."""
    arguments = call.get("arguments")
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def _count(decision: ToolDecision, box: Toolbox) -> None:
    decision.tool_calls = box.calls
    decision.tool_errors = box.errors
    decision.look_ahead_refusals = box.look_ahead_refusals


def _assistant_message(reply: Mapping[str, Any]) -> dict[str, Any]:
    """The model's turn as the next request repeats it."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("text")}
    calls = reply.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [
            {
                "id": t["id"],
                "type": "function",
                "function": {"name": t["name"], "arguments": t["arguments"]},
            }
            for t in calls
        ]
    return message


def _last_text(decision: ToolDecision) -> str | None:
    """The last turn's text, or its last call's arguments (for the trace's output)."""
    if not decision.transcript:
        return None
    last = decision.transcript[-1]
    if last["calls"]:
        return str(last["calls"][-1]["arguments"])
    return last["content"]
