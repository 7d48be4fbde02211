"""Each LLM decision as an MLflow trace (MLflow's GenAI view: the Traces tab).

Off unless switched on, by :func:`llm_tracing` (a context manager; ``marketarena evaluate
--mlflow`` uses it), :func:`enable_tracing`, or the environment variable
``MARKETARENA_LLM_TRACING=1`` (traces then go to MLflow's active experiment:
``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``). Off, a decision costs one check and
MLflow is never imported.

One trace per request sent to the endpoint: a ``CHAT_MODEL`` span named after the agent,
timed as the request (its latency, retries included), with

* inputs ``{"model": ..., "messages": [...]}``: the prompt as sent (the UI previews the user
  message); outputs ``{"choices": [{"message": {"role": "assistant", "content": TEXT}}]}``:
  the answer's text as it came (a tool call's arguments in ``output="tool"``), in a chat
  completion's shape so the UI shows it as the assistant's message (``None`` when no answer
  came back);
* attributes ``model``, ``date``, ``outcome``, ``notes``, ``prompt_tokens``,
  ``completion_tokens``, ``latency_s``, ``cached``, ``cost_usd``, ``confidence``, and MLflow's
  own ``mlflow.llm.model`` and ``mlflow.chat.tokenUsage`` (the token columns of the traces
  view), and ``mlflow.llm.cost`` where the agent's price table prices the model (else MLflow
  may estimate the cost from its own prices);
* trace tags ``marketarena.agent``, ``marketarena.date``, ``marketarena.outcome`` (search
  with ``tag.marketarena.outcome = 'invalid_json'``);
* status ``ERROR`` (described by the decision's notes) when the decision fell back to
  holding (every outcome but ``ok`` and ``repaired``).

Answers replayed from the cache are not traced: no request was made (the one that was made
was traced when it was, if tracing was on), and a replay traced again would count its tokens
twice. The decision log of the backtest still lists them (``cached: true``).

A team's decision (:mod:`~marketarena.agents.llm_team`, :func:`record_team_decision`) is one
trace: an ``AGENT`` span named after the team (inputs: the date; outputs: the target weights;
attributes: outcome, notes, tokens and cost of the decision) with one ``CHAT_MODEL`` child span
per role turn, named ``role`` or ``role round k``, carrying the turn's request, answer, tool
calls, outcome, fallback, tokens and cost. A decision whose every turn came from the cache is not
traced.

Only the messages and the answer are recorded: never the API key, the headers or the
endpoint. Tracing never stops a backtest: a failure to record warns once and the run goes on
untraced.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from marketarena.agents.llm_agent import Decision

ENV_VAR = "MARKETARENA_LLM_TRACING"
_OFF = ("", "0", "false", "no", "off")
#: outcomes after which the agent still trades the answer (the span's status stays OK)
_USED = ("ok", "repaired")


@dataclass
class _Target:
    experiment_id: str | None
    trace_ids: list[str] | None = None  # collected for the caller of llm_tracing()
    warned: bool = False


@dataclass
class _State:
    target: _Target | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()


def enable_tracing(experiment_id: str | None = None) -> None:
    """Trace every live LLM decision from now on, into ``experiment_id`` (``None``: MLflow's
    active experiment), until :func:`disable_tracing`."""
    _state.target = _Target(experiment_id)


def disable_tracing() -> None:
    """Stop tracing (the environment variable, if set, still switches it on)."""
    _state.target = None


def tracing_enabled() -> bool:
    """Whether decisions are traced now."""
    return _state.target is not None or _env_on()


@contextmanager
def llm_tracing(experiment_id: str | None = None) -> Iterator[list[str]]:
    """Trace every live LLM decision made inside the block (in any thread) into
    ``experiment_id``; yields the ids of the traces written, filled as decisions are made.
    On exit the traces are flushed to the store and the earlier setting comes back."""
    ids: list[str] = []
    previous = _state.target
    _state.target = _Target(experiment_id, ids)
    try:
        yield ids
    finally:
        _state.target = previous
        if ids:
            import mlflow

            mlflow.flush_trace_async_logging()


def record_decision(
    agent: Any, messages: Sequence[Mapping[str, Any]], text: str | None, decision: Decision
) -> str | None:
    """Record one decision of ``agent`` (an :class:`~marketarena.agents.llm_agent.LLMAgent`)
    as a trace if tracing is on and the decision was a request (not a cache replay); returns
    the trace id, or ``None``."""
    target = _live_target()
    if target is None or decision.cached:
        return None
    return _guarded(target, lambda: _record(agent, messages, text, decision, target.experiment_id))


def _env_on() -> bool:
    return os.environ.get(ENV_VAR, "").strip().lower() not in _OFF


def _record(
    agent: Any,
    messages: Sequence[Mapping[str, Any]],
    text: str | None,
    decision: Decision,
    experiment_id: str | None,
) -> str:
    import mlflow
    from mlflow.entities import SpanStatus, SpanStatusCode, SpanType

    model = str(agent.config.model)
    end_ns = time.time_ns()
    start_ns = end_ns - int(decision.latency * 1e9)
    usage = {
        "input_tokens": decision.prompt_tokens,
        "output_tokens": decision.completion_tokens,
        "total_tokens": decision.prompt_tokens + decision.completion_tokens,
    }
    attributes: dict[str, Any] = {
        "model": model,
        "date": decision.date,
        "outcome": decision.outcome,
        "notes": list(decision.notes),
        "prompt_tokens": decision.prompt_tokens,
        "completion_tokens": decision.completion_tokens,
        "latency_s": decision.latency,
        "cached": decision.cached,
        "cost_usd": decision.cost,
        "confidence": decision.confidence,
        "mlflow.llm.model": model,
        "mlflow.chat.tokenUsage": usage,
    }
    price = agent.config.prices.get(model)
    if price is not None:
        input_cost = decision.prompt_tokens * price[0] / 1e6
        output_cost = decision.completion_tokens * price[1] / 1e6
        attributes["mlflow.llm.cost"] = {
            "input_cost": input_cost,
            "output_cost": output_cost,
            "total_cost": input_cost + output_cost,
        }
    span = mlflow.start_span_no_context(
        name=str(agent.name),
        span_type=SpanType.CHAT_MODEL,
        inputs={"model": model, "messages": [dict(m) for m in messages]},
        attributes=attributes,
        tags={
            "marketarena.agent": str(agent.name),
            "marketarena.date": decision.date,
            "marketarena.outcome": decision.outcome,
        },
        experiment_id=experiment_id,
        start_time_ns=start_ns,
    )
    if decision.outcome in _USED:
        status = SpanStatus(SpanStatusCode.OK)
    else:
        why = "; ".join(n for n in decision.notes if n) or decision.outcome
        status = SpanStatus(SpanStatusCode.ERROR, f"{decision.outcome}: {why}")
    # a chat completion's shape, so that the UI shows the answer as the assistant's message
    # and keeps its text as written (a bare JSON string would be stored decoded)
    outputs = None
    if text is not None:
        outputs = {"choices": [{"message": {"role": "assistant", "content": text}}]}
    span.end(outputs=outputs, status=status, end_time_ns=end_ns)
    return str(span.trace_id)


def record_team_decision(
    agent: Any, decision: Mapping[str, Any], live: Sequence[tuple[float, bool]]
) -> str | None:
    """Record a team's decision (a transcript of
    :class:`~marketarena.agents.llm_team.TeamAgent`) as one trace with a span per role turn,
    if tracing is on and some turn was a request; ``live`` holds each turn's (seconds,
    cached). Returns the trace id, or ``None``."""
    target = _live_target()
    if target is None or all(cached for _, cached in live):
        return None
    return _guarded(target, lambda: _record_team(agent, decision, live, target.experiment_id))


def _live_target() -> _Target | None:
    """Where traces go now: the ``llm_tracing`` block's target, the default experiment when
    the environment variable turns tracing on, else None (off)."""
    target = _state.target
    if target is None and _env_on():
        return _Target(None)
    return target


def _guarded(target: _Target, record: Callable[[], str]) -> str | None:
    """``record()``'s trace id, kept in ``target``; a failure warns once per target and
    returns None: tracing must never end a backtest."""
    try:
        trace_id = record()
    except Exception as exc:
        with _state.lock:
            warned, target.warned = target.warned, True
        if not warned:
            warnings.warn(
                f"LLM tracing failed ({type(exc).__name__}); decisions go on untraced",
                RuntimeWarning,
                stacklevel=3,
            )
        return None
    if target.trace_ids is not None:
        with _state.lock:
            target.trace_ids.append(trace_id)
    return trace_id


def _record_team(
    agent: Any,
    decision: Mapping[str, Any],
    live: Sequence[tuple[float, bool]],
    experiment_id: str | None,
) -> str:
    import mlflow
    from mlflow.entities import SpanStatus, SpanStatusCode, SpanType

    turns = decision["turns"]
    end_ns = time.time_ns()
    start_ns = end_ns - int(sum(seconds for seconds, _ in live) * 1e9)
    prompt = sum(t["prompt_tokens"] for t in turns)
    completion = sum(t["completion_tokens"] for t in turns)
    attributes: dict[str, Any] = {
        "date": decision["date"],
        "outcome": decision["outcome"],
        "notes": list(decision["notes"]),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": sum(t["cost"] for t in turns),
    }
    root = mlflow.start_span_no_context(
        name=str(agent.name),
        span_type=SpanType.AGENT,
        inputs={"date": decision["date"]},
        attributes=attributes,
        tags={
            "marketarena.agent": str(agent.name),
            "marketarena.date": decision["date"],
            "marketarena.outcome": decision["outcome"],
        },
        experiment_id=experiment_id,
        start_time_ns=start_ns,
    )
    at = start_ns
    for turn, (seconds, cached) in zip(turns, live, strict=True):
        model = str(agent.role_model(turn["role"]).model)
        name = turn["role"] if turn["round"] == 1 else f"{turn['role']} round {turn['round']}"
        turn_attributes: dict[str, Any] = {
            "role": turn["role"],
            "round": turn["round"],
            "outcome": turn["outcome"],
            "fallback": turn["fallback"],
            "notes": list(turn["notes"]),
            "tool_calls": list(turn["tool_calls"]),
            "message": turn["message"],
            "prompt_tokens": turn["prompt_tokens"],
            "completion_tokens": turn["completion_tokens"],
            "cost_usd": turn["cost"],
            "cached": cached,
            "mlflow.llm.model": model,
            "mlflow.chat.tokenUsage": {
                "input_tokens": turn["prompt_tokens"],
                "output_tokens": turn["completion_tokens"],
                "total_tokens": turn["prompt_tokens"] + turn["completion_tokens"],
            },
        }
        span = mlflow.start_span_no_context(
            name=name,
            span_type=SpanType.CHAT_MODEL,
            parent_span=root,
            inputs={"model": model, "messages": [dict(m) for m in turn["request"]]},
            attributes=turn_attributes,
            start_time_ns=at,
        )
        at += int(seconds * 1e9)
        ok = turn["message"] is not None or turn["fallback"] is None
        status = (
            SpanStatus(SpanStatusCode.OK)
            if ok
            else SpanStatus(SpanStatusCode.ERROR, f"{turn['outcome']}: {turn['fallback']}")
        )
        text = turn["answer"]
        outputs = None
        if text is not None:
            outputs = {"choices": [{"message": {"role": "assistant", "content": text}}]}
        span.end(outputs=outputs, status=status, end_time_ns=at)
    held = decision["weights"] is None
    root.end(
        outputs={"weights": decision["weights"]},
        status=SpanStatus(SpanStatusCode.ERROR, decision["outcome"])
        if held
        else SpanStatus(SpanStatusCode.OK),
        end_time_ns=max(at, end_ns),
    )
    return str(root.trace_id)
