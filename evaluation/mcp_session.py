"""A persisted backtest driven from outside, one decision at a time (``marketarena mcp serve``).

A :class:`DrivenBacktest` is a backtest whose agent is whoever calls its tools: an MCP client
(:mod:`marketarena.service.mcp_server`), so an AI-Trader-style agent trades in this env
unchanged. At each decision it offers the point-in-time :class:`~marketarena.agents.llm_tools.
Toolbox` of that decision; :meth:`DrivenBacktest.call` runs one tool call.

Two tool sets, chosen when the run starts and stored with it (``tools``): ``"marketarena"``
(the toolbox, whose action tool is ``set_target_weights``) and ``"aitrader"``
(:class:`~marketarena.agents.aitrader_tools.AITraderTools`: AI-Trader's ``buy``, ``sell``,
``get_price_local``, ``add``, ``multiply`` and ``get_information`` with its answer shapes,
over the same data cut; ``buy``/``sell`` book share orders checked at the decision's closes
and ``finish_session``, the one added tool, is the action: the book's share counts, as
target weights at those closes, fill at the next bar). That module says what differs from
AI-Trader (fill price and time, the finish signal) and why.

Timing, as in every backtest: the decision at row ``t`` comes after the close of bar ``t``.
Every read tool answers for the **current** decision only: its data is cut at row ``t``, and a
request for a later date is refused with the toolbox's error (``"look_ahead": true``), counted
in the decision's record. The action tool (``set_target_weights`` or ``finish_session``)
ends the decision: the env steps (orders fill at the open of ``t+1``, or its close for
close-only data, per the run's rules), the day is recorded, and the session moves to the next
decision. Its answer says what
filled, at which date and price, the NAV marked at the close of ``t+1`` and the next decision;
after the last decision it says that the backtest is over and where its results are.

The run is recorded like any persisted backtest
(:mod:`marketarena.evaluation.saved_runs.persisted`): the episode runs through the same loop,
:func:`~marketarena.evaluation.saved_runs.persisted.run_days`, which stores every completed
day (NAV, cash, shares, weights, fills) with a checkpoint in a
:class:`~marketarena.evaluation.saved_runs.store.RunStore`; ``marketarena positions`` and
``leaderboard`` read it like any run. Its agent is :class:`ExternalAgent` (spec ``"mcp"``),
whose state holds the decision records: per decision its date, every call (tool, arguments,
result) and its look-ahead refusals; they are in each checkpoint and, when the run finishes,
in its diagnostics (``log``). A server that crashed resumes with :meth:`DrivenBacktest.resume`
at the decision after the last completed day; the calls of a decision that had not been acted
on when it stopped were not stored, and that decision's record starts afresh.

The episode loop runs in a thread of its own, which the external calls feed: the agent's
``act`` hands each decision over and waits for the action. :meth:`DrivenBacktest.call` is
serialised (one call at a time, each against the decision current when it runs).
"""

from __future__ import annotations

import json
import queue
import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from marketarena.agents.aitrader_tools import AITraderTools, answer_text, positions
from marketarena.agents.base import Resumable
from marketarena.agents.llm_tools import ACTION_TOOL, CASH, Toolbox
from marketarena.envs.data import MarketData, resolve_data
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.news import NewsEvents, load_news
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.envs.settings import EnvSettings
from marketarena.evaluation.runner import agent_diagnostics, make_backtest_env
from marketarena.evaluation.saved_runs.persisted import (
    DRIVEN_AGENT,
    Progress,
    run_days,
    spec_settings,
)
from marketarena.evaluation.saved_runs.store import RunStore

#: the agent spec stored with a driven run
AGENT_SPEC = DRIVEN_AGENT
#: the tool sets a session serves: ours (the Toolbox) or AI-Trader's (AITraderTools)
TOOL_SETS = ("marketarena", "aitrader")


class SessionClosed(Exception):
    """Raised inside the episode loop when the session closes before the run is over: the
    run stays ``running`` in the store, to be resumed."""


class ExternalAgent(Resumable):
    """The agent of a driven run: ``act`` hands the decision to the session and waits for
    the target weights an outside caller sets.

    ``decisions``: one record per decision, ``{"date", "calls": [{"tool", "arguments",
    "result", "error"}], "look_ahead_refusals"}``; saved with every checkpoint.
    """

    name = AGENT_SPEC
    _transient = ("_hand_over",)

    def __init__(self, hand_over: Any) -> None:
        self._hand_over = hand_over
        self.decisions: list[dict[str, Any]] = []

    def reset(self, *, seed: int | None = None) -> None:
        self.decisions = []

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        self.decisions.append({"date": str(info["date"]), "calls": [], "look_ahead_refusals": 0})
        return self._hand_over()

    def diagnostics(self) -> dict[str, Any]:
        """Decisions, tool calls, errors and look-ahead refusals, and every decision's record."""
        calls = [c for d in self.decisions for c in d["calls"]]
        return {
            "decisions": len(self.decisions),
            "tool_calls": len(calls),
            "tool_errors": sum(bool(c["error"]) for c in calls),
            "look_ahead_refusals": sum(d["look_ahead_refusals"] for d in self.decisions),
            "log": self.decisions,
        }


@dataclass(frozen=True)
class Answer:
    """One tool call's result (a JSON object), whether it is an MCP tool error, and its text
    (the JSON object; for AI-Trader's one-value tools, the value)."""

    result: dict[str, Any]
    error: bool
    text: str = ""

    def __post_init__(self) -> None:
        if not self.text:
            object.__setattr__(self, "text", json.dumps(self.result))


class DrivenBacktest:
    """A persisted run whose decisions come from :meth:`call` (see the module docstring).

    Build one with :meth:`start` or :meth:`resume`, then :meth:`open` it (the episode loop
    starts and waits for the first action) and :meth:`close` it when done (an unfinished run
    stays resumable). ``progress(date, fraction)`` is called after every completed day.
    """

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        env: PortfolioEnv,
        news: NewsEvents | None,
        step: int,
        agent_state: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        tools: str = "marketarena",
    ) -> None:
        self.store, self.run_id, self.env, self.news = store, run_id, env, news
        self.tools = tools
        self._step, self._progress = step, progress
        self._actions: queue.Queue[np.ndarray | None] = queue.Queue()
        # from the episode thread: "decision" (waiting for an action), "over", or its error
        self._events: queue.Queue[str | BaseException] = queue.Queue()
        self._lock = threading.Lock()
        self.agent = ExternalAgent(self._wait_for_action)
        if agent_state is not None:
            self.agent.set_state(agent_state)
        # the current decision's tools; None once over
        self.toolbox: Toolbox | AITraderTools | None = None
        self.failure: str | None = None  # why the episode loop stopped, when it failed
        self._thread: threading.Thread | None = None
        self._initial: tuple[np.ndarray, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def start(
        cls,
        store: RunStore,
        run_id: str,
        data: str,
        start: str,
        end: str,
        *,
        seed: int = 0,
        news: str | None = None,
        progress: Progress | None = None,
        options: Mapping[str, Any] | None = None,
        settings: EnvSettings | None = None,
        tools: str = "marketarena",
        **overrides: Any,
    ) -> DrivenBacktest:
        """A new run ``run_id`` in ``store`` over ``data`` from ``start`` to ``end``.

        ``settings`` (default: the defaults) with keyword ``overrides`` of its fields
        (``rules``, ``risk``, ...) are the env's, stored in the run's spec as
        :func:`~marketarena.evaluation.saved_runs.persisted.start_backtest` stores them.
        ``news``: a news file for the ``get_news`` tool (its content hash is stored: a
        resume refuses a changed file). ``options``: how the run was asked for (the
        command's options), stored so that :meth:`resume` can refuse other ones. ``tools``:
        the tool set served, ``"marketarena"`` (default: the toolbox) or ``"aitrader"``
        (AI-Trader's, :mod:`~marketarena.agents.aitrader_tools`), stored with the run.
        Everything is checked before the run is created.
        """
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
        if tools not in TOOL_SETS:
            raise ConfigError(f"tools {tools!r}: choose {' or '.join(TOOL_SETS)}")
        store.require_new(run_id)
        chosen = EnvSettings.resolve(settings, overrides).replace(start=start, end=end)
        events = load_news(news) if news is not None else None
        spec: dict[str, Any] = {
            "agent": AGENT_SPEC,
            "data": str(data),
            "seed": seed,
            "universe": None,
            "llm": {},
            "tracking_uri": None,
            "news": None if news is None else str(news),
            "news_sha256": None if events is None else events.content_hash,
            "options": dict(options or {}),
            "tools": tools,
            **chosen.to_dict(),
        }
        market, env = _build(spec, end)
        spec.update(env.settings.to_dict())  # as run: one episode over the whole range
        spec["end"] = str(market.dates[env.core.last_decision + 1])
        spec["data_sha256"] = market.slice(None, spec["end"]).content_hash()
        observation, info = env.reset(seed=seed)
        spec["first_date"] = str(info["date"])
        store.create_run(run_id, spec, market.symbols)
        session = cls(store, run_id, env, events, 0, progress=progress, tools=tools)
        session._initial = (observation, info)
        return session

    @classmethod
    def resume(
        cls,
        store: RunStore,
        run_id: str,
        progress: Progress | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> DrivenBacktest:
        """Run ``run_id`` (a driven run cut short) from the decision after its last completed
        day: the env and the decision records come back from its checkpoint. ``options``
        given (not None) must be those the run was started with."""
        info = store.run(run_id)
        spec = info.spec
        if spec.get("agent") != AGENT_SPEC:
            raise ConfigError(
                f"run {run_id!r} is a backtest of {spec.get('agent')!r}, not a run driven over "
                f"MCP: resume it with marketarena backtest --resume {run_id}"
            )
        if info.status == "finished":
            raise ConfigError(
                f"run {run_id!r} in {store.path} is finished ({info.days} days): choose "
                "another --run name for a new run"
            )
        stored = spec.get("options", {})
        changed = {k: v for k, v in (options or {}).items() if v is not None and stored.get(k) != v}
        if changed:
            raise ConfigError(
                f"run {run_id!r} was started with { {k: stored.get(k) for k in changed} }, not "
                f"{changed}: resume it with the options it was started with (or --run "
                f"{run_id} alone), or choose another --run name for a new run"
            )
        events = load_news(spec["news"]) if spec.get("news") else None
        if events is not None and events.content_hash != spec.get("news_sha256"):
            raise DataError(
                f"news file {spec['news']} changed since run {run_id!r} started: resuming "
                "would show its decisions other news"
            )
        market, env = _build(spec, spec["end"])
        if market.slice(None, spec["end"]).content_hash() != spec["data_sha256"]:
            raise DataError(
                f"{market.name} differs from the data run {run_id!r} was started on, up to "
                f"{spec['end']}: resuming would mix histories"
            )
        observation, env_info = env.reset(seed=spec["seed"])
        checkpoint = store.checkpoint(run_id)
        step, agent_state = 0, None
        if checkpoint is not None:
            step, env_state, agent_state = checkpoint
            observation, env_info = env.set_state(env_state)
        tools = spec.get("tools", "marketarena")
        session = cls(store, run_id, env, events, step, agent_state, progress, tools)
        session._initial = (observation, env_info)
        return session

    # ------------------------------------------------------------------- running
    def open(self) -> None:
        """Start the episode loop; returns once the first decision (or the end) is ready."""
        if self._thread is not None or self._initial is None:
            raise RuntimeError("a session opens once")
        observation, info = self._initial
        self._thread = threading.Thread(
            target=self._run, args=(observation, info), name=f"run {self.run_id}", daemon=True
        )
        self._thread.start()
        self._next()

    def close(self) -> None:
        """Stop waiting for actions (after the call in progress, if any); an unfinished run
        stays resumable from its last completed day."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._actions.put(None)
                self._thread.join()

    def _run(self, observation: np.ndarray, info: Mapping[str, Any]) -> None:
        try:
            run_days(
                self.store,
                self.run_id,
                self.env,
                self.agent,
                observation,
                info,
                self._step,
                self._progress,
            )
            self.store.finish(self.run_id, agent_diagnostics(self.agent))
        except SessionClosed:
            return
        except BaseException as exc:  # the caller re-raises it
            self._events.put(exc)
            return
        self._events.put("over")

    def _wait_for_action(self) -> np.ndarray:
        """The agent's act: hand the decision over, wait for its weights (episode thread)."""
        self._events.put("decision")
        action = self._actions.get()
        if action is None:
            raise SessionClosed
        return action

    def _next(self) -> None:
        """Wait until the episode loop waits for the next decision or has ended."""
        event = self._events.get()
        self.toolbox = None
        if isinstance(event, BaseException):
            self.failure = f"{type(event).__name__}: {event}"
            raise event
        if event == "decision":
            self.toolbox = self._tools_now()

    def _tools_now(self) -> Toolbox | AITraderTools:
        """The tools of the env's current decision, of this session's tool set."""
        box = Toolbox.from_env(self.env, news=self.news)
        return AITraderTools(box) if self.tools == "aitrader" else box

    @property
    def over(self) -> bool:
        """No decision is open: the run finished (or its episode loop stopped on an error)."""
        return self.toolbox is None

    def tool_specs(self) -> list[dict[str, Any]]:
        """The tools (``name``, ``description``, ``input_schema``): the same at every decision."""
        box = self._tools_now() if self.toolbox is None else self.toolbox
        return box.tool_specs()

    def call(self, name: str, arguments: Mapping[str, Any] | str | None) -> Answer:
        """Run one tool call against the current decision (serialised with every other call).

        A read tool answers point in time (the toolbox's result or error object); the action
        tool (``set_target_weights``, or ``finish_session`` of AI-Trader's set), once it
        succeeds, steps the run and answers with what filled and the next decision (or that
        the run is over). Every call is kept in the decision's record. An MCP tool error is
        the toolbox's error object; AI-Trader's tools flag only bad arguments and unknown
        tools, their own error dicts being ordinary answers as in AI-Trader.
        """
        with self._lock:
            box = self.toolbox
            if self.failure is not None:
                return Answer(
                    {
                        "error": f"the run stopped on an error ({self.failure}); its completed "
                        "days are stored: restart the server to resume it",
                        "argument": None,
                    },
                    error=True,
                )
            if box is None:
                return Answer(self._over_message(), error=True)
            result = box.dispatch(name, arguments)
            record = self.agent.decisions[-1]
            record["calls"].append(
                {
                    "tool": name,
                    "arguments": _plain(arguments),
                    "result": result,
                    "error": "error" in result,
                }
            )
            record["look_ahead_refusals"] = box.look_ahead_refusals
            if isinstance(box, AITraderTools):
                action_tool, failed = box.action_tool, box.last_call_failed
                text = answer_text(name, result)
            else:
                action_tool, failed, text = ACTION_TOOL, "error" in result, ""
            if name != action_tool or box.action is None or "error" in result:
                return Answer(result, error=failed, text=text)
            return Answer(self._act(box, result), error=False)

    def _act(self, box: Toolbox | AITraderTools, accepted: dict[str, Any]) -> dict[str, Any]:
        """Step the run with the decided weights; what filled and what comes next."""
        assert box.action is not None
        decided = box.date
        self._actions.put(np.asarray(box.action.weights, dtype=np.float64))
        self._next()
        env = self.env
        fills = [
            {
                "symbol": s,
                "side": "buy" if q > 0 else "sell",
                "shares": abs(q),
                "price": p,
                "cost": c,
            }
            for s, q, p, c in env.sim.last_fills(0)
        ]
        weights = env.current_weights()
        out: dict[str, Any] = {
            **accepted,
            "decided": decided,
            "filled_on": str(env.date_history[-1]),
            "filled": fills,
            "nav": float(env.sim.nav[0]),
            "cash": float(env.sim.cash[0]),
            "holdings": {
                **{
                    s: float(w)
                    for s, w in zip(env.data.symbols, weights[:-1], strict=True)
                    if w != 0
                },
                CASH: float(weights[-1]),
            },
        }
        if self.tools == "aitrader":  # the position dict AI-Trader's next session starts from
            out["positions"] = positions(env.data.symbols, env.sim.shares[0], env.sim.cash[0])
        if self.toolbox is None:
            out.update(self._over_message())
        else:
            out["next_decision"] = self.toolbox.date
        return out

    def _over_message(self) -> dict[str, Any]:
        info = self.store.run(self.run_id)
        return {
            "over": True,
            "message": f"the backtest is over: run {self.run_id} ({info.days} days, last "
            f"{info.last_date}) is stored in {self.store.path}; see marketarena positions "
            f"--run {shlex.quote(self.run_id)} --store {shlex.quote(str(self.store.path))}",
            "run": self.run_id,
            "store": str(self.store.path),
        }


def _build(spec: Mapping[str, Any], end: str) -> tuple[MarketData, PortfolioEnv]:
    data = resolve_data(spec["data"])
    env = make_backtest_env({"data": data, "settings": spec_settings(spec)}, end=end)
    return data, env


def _plain(arguments: Mapping[str, Any] | str | None) -> Any:
    """Arguments as recorded: a mapping as JSON values, text as it came."""
    if isinstance(arguments, Mapping):
        return json.loads(json.dumps(dict(arguments), default=str))
    return arguments
