"""Paper trading: an agent trading each new bar set of a live feed, recorded like a backtest.

A paper run is a persisted run (:mod:`~marketarena.evaluation.saved_runs.persisted`) whose
data grows as bars arrive. It starts from a history (``data``, e.g. ``sp500_20`` or a data
folder) up to ``start``: the run's first mark, all cash. Each arriving daily
:class:`~marketarena.envs.feeds.base.BarSet` becomes one more row of the run's
:class:`~marketarena.envs.data.MarketData`, and the run continues by one decision, through
the same machinery as ``continue_backtest``: a backtest env over the data so far (end = the
new bar), restored from the state the previous bar left, steps once in the runner's episode
loop (:func:`~marketarena.evaluation.runner.run_episode`), whose hook records the bar (NAV,
cash, shares, weights, turnover, costs, fills, risk interventions) with a checkpoint in the
run store. So ``positions``, ``leaderboard`` and the API read a paper run as any other.

Timing, as in every backtest: the decision for bar ``t`` uses data up to the close of ``t``
only and fills at bar ``t + 1`` (its open, or its close for close-only data); the mark is the
close of ``t + 1``. The agent is asked for bar ``t``'s decision when bar ``t + 1`` arrives
(the loop's step); it sees exactly what it would have seen at ``t``'s close, so every number
equals the backtest's over the same bars, bit for bit (a test checks NAVs, fills and weights).

Why this is exact and fast: the env and the agent stay in memory between bars (the agent
object itself; the env's state, handed from one bar's env to the next); only the env is
rebuilt over the grown data (features are point-in-time, so rows already seen do not change;
about 2 ms for sp500_20's 8,300 rows of 20 symbols; a bar takes about 15 ms in all, its
store transaction included), never the run. The checkpoint written with each
bar holds the env's and agent's states and the bars delivered so far (``paper_bars``), in
the same transaction as the bar's record: a crash loses nothing recorded, and
:func:`resume_paper` rebuilds the data (history + delivered bars) and continues from the
last recorded bar; bar sets the feed delivers again (at or before it) are skipped.

Policy for what a feed delivers (counted in :class:`PaperCounts`):

* a bar set dated at or before the last recorded bar (late, replayed after a resume):
  ignored, ``stale``;
* a bar set whose date is not a session of the exchange calendar (``calendar``, default
  XNYS: a weekend or holiday): ignored, ``off_session``; decisions happen inside sessions
  only;
* a bar set that would make invalid data (a price the validation of historical data
  refuses, a symbol of the run missing): ignored, ``rejected``, its reason kept in
  ``problems``; the run goes on with the next set (the pending decision fills there);
* sessions of the calendar skipped between two recorded bars: counted, ``gaps`` (nothing is
  invented for them; the decision fills at the next bar that arrives);
* after a bar whose NAV hits the ruin level (``rules.ruin_fraction``) the run ends, as a
  backtest's episode does: :func:`run_paper` stops there, and the session takes no more bars.

Bar sets the feed forward-filled (a symbol silent past its grace period, see
:mod:`~marketarena.envs.feeds.base`) are traded as delivered; the feed counts them.

Feeds (:func:`open_feed`): a replay server's WebSocket, a local replay of a dataset, a
followed CSV file, a polling REST provider, or several of them as a fallback order; each
asks only for the bar sets after the run's last recorded bar. :func:`run_paper` trades a
feed until it ends (or ``until``/``bars``), then marks the run finished (a leaderboard reads
it); an error, an outage or Ctrl-C leaves it as its last recorded bar left it. Either way
:func:`resume_paper` continues it::

    with start_paper(store, "p", "equal_weight:5", "sp500_20", start="2022-10-31") as s:
        with open_feed("replay:sp500_20", s) as feed:
            run_paper(s, feed, on_bar=print)

Intervals: daily bars (``"1d"``: a row per session, dated by its day) or intraday bars
(``"1min"``, ``"5min"``, ``"15min"``, ``"1h"``), which need intraday history data of that
interval (:class:`~marketarena.envs.data.MarketData` rows stamped with each bar's END in UTC,
``datetime64[s]``); the run store's days, positions and reports then show those timestamps,
and the metrics annualise with ``252 x`` the bars of a 6.5-hour session. An intraday bar set
is traded when its bar lies inside a session of the calendar (its end after the session's
open and at or before its close, early closes included); a bar outside trading hours
(pre-market, after hours, a holiday) is skipped and counted (``off_session``), as a daily
set dated on a holiday is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from marketarena.agents.base import ResumableAgent
from marketarena.envs.data import DataValidationError, MarketData, resolve_data
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.features import compute_features
from marketarena.envs.feeds.adapters import PollingRestFeed
from marketarena.envs.feeds.base import (
    INTERVALS,
    BarSet,
    Feed,
    check_interval,
    daily_bar_end,
    interval_of,
    utc_naive,
)
from marketarena.envs.feeds.fallback import FallbackFeed
from marketarena.envs.feeds.files import FileFeed
from marketarena.envs.feeds.replay import ReplayFeed, ReplayServer
from marketarena.envs.feeds.stream import Backoff
from marketarena.envs.news import DEFAULT_CALENDAR, _calendar
from marketarena.envs.settings import EnvSettings
from marketarena.evaluation.runner import agent_diagnostics, make_backtest_env, snapshot_lookback
from marketarena.evaluation.saved_runs import persisted
from marketarena.evaluation.saved_runs.store import RunStore

#: the intervals a paper run trades (those of its history data)
PAPER_INTERVALS = tuple(INTERVALS)


@dataclass
class PaperCounts:
    """What a paper session did with the bar sets it got (see the module docstring)."""

    received: int = 0
    recorded: int = 0
    stale: int = 0
    off_session: int = 0
    rejected: int = 0
    gaps: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.received} bar set(s) received, {self.recorded} recorded, {self.stale} "
            f"stale, {self.off_session} outside sessions, {self.rejected} rejected, "
            f"{self.gaps} missed session(s)"
        )


@dataclass(frozen=True)
class PaperBar:
    """One recorded bar: the decision taken at ``decided``'s close, filled and marked at
    ``date`` (``end``: that bar's end, UTC)."""

    step: int
    decided: str
    date: str
    end: pd.Timestamp
    nav: float
    cash: float
    turnover: float
    costs: float
    fills: int
    weights: np.ndarray


def _check_interval(interval: str, history: MarketData) -> None:
    """``interval`` must be one of :data:`PAPER_INTERVALS` and the history's own."""
    check_interval(interval)
    own = interval_of(history)
    if interval != own:
        raise ConfigError(
            f"--interval {interval}: {history.name} holds {own} bars; a paper run trades bars "
            "of its history's interval"
        )


def _history(run_id: str, spec: Mapping[str, Any]) -> MarketData:
    """The run's data up to its start, checked against the hash stored when it began."""
    data = resolve_data(spec["data"])
    if spec.get("universe"):
        data = data.select(spec["universe"])
    history = data.slice(None, spec["paper"]["history_end"])
    if history.content_hash() != spec["paper"]["history_sha256"]:
        raise DataError(
            f"{data.name} up to {spec['paper']['history_end']} differs from the history paper "
            f"run {run_id!r} began with: resuming would mix histories"
        )
    return history


class PaperSession:
    """A paper run in progress: the data so far, the env's state and the agent in memory.

    Made by :func:`start_paper` or :func:`resume_paper`; :meth:`add` takes each bar set.
    """

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        spec: dict[str, Any],
        history: MarketData,
        agent: ResumableAgent,
        step: int,
        env_state: dict[str, Any] | None,
        bars: dict[str, Any],
    ) -> None:
        self.store, self.run_id, self.spec = store, run_id, spec
        self.history = history
        self.agent = agent
        self.step = step
        self.env_state = env_state
        self.settings = persisted.spec_settings(spec)
        self.fields = history.fields
        self.lookback = snapshot_lookback(agent)
        self.counts = PaperCounts()
        self.calendar_name = spec["paper"]["calendar"]
        # the delivered bars: dates, and per field a list of (N,) rows
        self._dates: list[str] = list(bars.get("dates", []))
        self._rows: dict[str, list[np.ndarray]] = {
            f: [np.asarray(r, dtype=np.float64) for r in bars.get(f, [])] for f in self.fields
        }
        self.data = self._data(self._dates, self._rows)
        self._cal: Any = None
        rules = self.settings.rules
        #: the NAV hit the ruin level: the episode ended, as a backtest's would; no more bars
        self.ruined = env_state is not None and env_state["nav"] <= (
            rules.ruin_fraction * rules.initial_cash
        )

    # ------------------------------------------------------------------ state
    @property
    def last_date(self) -> str:
        """The last recorded bar's date (the history's end before the first bar)."""
        return str(self.data.dates[-1])

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.history.symbols

    @property
    def timezone(self) -> str:
        """The exchange calendar's time zone (e.g. ``America/New_York``)."""
        return str(self._calendar().tz)

    def _data(self, dates: list[str], rows: Mapping[str, list[np.ndarray]]) -> MarketData:
        h = self.history
        if not dates:
            return h
        prices: dict[str, Any] = {
            f: np.vstack([getattr(h, f), np.array(rows[f])]) for f in self.fields
        }
        return MarketData(
            dates=np.concatenate([h.dates, np.array(dates, dtype=h.dates.dtype)]),
            symbols=h.symbols,
            sectors=h.sectors,
            name=h.name,
            notes=h.notes,
            **prices,
        )

    def _calendar(self) -> Any:
        if self._cal is None:
            start = pd.Timestamp(self.spec["paper"]["history_end"]).normalize()
            end = max(pd.Timestamp.now().normalize(), start) + pd.Timedelta(days=400)
            self._cal = _calendar(self.calendar_name, start, end)
        return self._cal

    def _is_session(self, date: str, end: pd.Timestamp | None = None) -> bool:
        """Whether ``date`` is a session; with ``end`` (an intraday bar's end, UTC), whether
        that bar lies in the session's trading hours (after its open, at or before its close)."""
        cal = self._calendar()
        day = pd.Timestamp(date)
        if not cal.first_session <= day <= cal.last_session:
            return day.weekday() < 5  # beyond the calendar's range: weekdays
        if not cal.is_session(day):
            return False
        if end is None:
            return True
        return bool(cal.session_open(day) < end <= cal.session_close(day))

    def _sessions_between(self, first: str, last: str) -> int:
        """Sessions strictly between two dates."""
        cal = self._calendar()
        lo, hi = pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize()
        lo, hi = max(lo, cal.first_session), min(hi, cal.last_session)
        if hi <= lo:
            return 0
        return max(len(cal.sessions_in_range(lo, hi)) - 2, 0)

    # -------------------------------------------------------------------- bars
    def add(self, bar_set: BarSet) -> PaperBar | None:
        """Take one bar set: record the bar (the previous decision filled and marked at it)
        and return it, or apply the policy (module docstring) and return None."""
        counts = self.counts
        counts.received += 1
        if self.ruined:
            raise ConfigError(
                f"paper run {self.run_id!r} ended on {self.last_date}: its NAV hit the ruin "
                "level, which ends a backtest's episode too"
            )
        if bar_set.interval != self.spec["paper"]["interval"]:
            raise ConfigError(
                f"the feed delivers {bar_set.interval} bars; paper run {self.run_id!r} trades "
                f"{self.spec['paper']['interval']} bars"
            )
        intraday = bar_set.interval != "1d"
        date = str(utc_naive(bar_set.end) if intraday else np.datetime64(bar_set.date, "D"))
        if date <= self.last_date:
            counts.stale += 1
            return None
        if not self._is_session(bar_set.date, bar_set.end if intraday else None):
            counts.off_session += 1
            return None
        missing = [s for s in self.symbols if s not in bar_set.bars]
        if missing:
            return self._reject(f"{date}: no bar for {missing}")
        row = {f: np.array([_field(bar_set.bars[s], f) for s in self.symbols]) for f in self.fields}
        if any(np.isnan(v).any() for v in row.values()):
            absent = [f for f, v in row.items() if np.isnan(v).any()]
            return self._reject(f"{date}: bars without {absent}, which the history has")
        dates = [*self._dates, date]
        rows = {f: [*self._rows[f], row[f]] for f in self.fields}
        try:
            data = self._data(dates, rows)
        except DataValidationError as exc:
            return self._reject(" ".join(str(exc).split()))
        counts.gaps += self._sessions_between(self.last_date, date)
        bar = self._step(data, {"dates": dates, **rows}, bar_set.end)
        self._dates, self._rows, self.data = dates, rows, data
        counts.recorded += 1
        return bar

    def _reject(self, reason: str) -> PaperBar | None:
        """Count and keep the reason of a bar set that is not traded (None: no bar)."""
        self.counts.rejected += 1
        self.counts.problems.append(reason)
        return None

    def _step(self, data: MarketData, bars: dict[str, Any], end: pd.Timestamp) -> PaperBar:
        """One decision, continued on ``data`` (one bar longer), recorded with its checkpoint."""
        env = make_backtest_env(
            {"data": data, "settings": self.settings, "snapshot_lookback": self.lookback},
            end=str(data.dates[-1]),
        )
        observation, info = env.reset(seed=self.spec["seed"])
        if self.env_state is not None:
            observation, info = env.set_state(self.env_state)
        elif str(info["date"]) != self.spec["first_date"]:
            raise DataError(
                f"paper run {self.run_id!r} cannot decide on {self.spec['first_date']}: the "
                f"observation window and features need history up to {info['date']}"
            )
        decided = str(info["date"])
        delivered: dict[str, Any] = {k: np.array(v) for k, v in bars.items() if k != "dates"}
        checkpoint = {"paper_bars": {**delivered, "dates": list(bars["dates"])}}
        persisted.run_days(
            self.store,
            self.run_id,
            env,
            self.agent,
            observation,
            info,
            self.step,
            None,
            checkpoint_extra=checkpoint,
        )
        self.step += 1
        self.env_state = env.get_state()
        self.ruined = bool(env.sim.breached()[0])
        return PaperBar(
            step=self.step,
            decided=decided,
            date=str(data.dates[-1]),
            end=end,
            nav=float(env.sim.nav[0]),
            cash=float(env.sim.cash[0]),
            turnover=float(env._last_result.turnover[0]) if env._last_result else 0.0,
            costs=float(env._last_result.costs[0]) if env._last_result else 0.0,
            fills=len(env.sim.last_fills(0)),
            weights=env.sim.weight[0].copy(),
        )

    def close(self) -> None:
        """Mark the run finished (readable by a leaderboard) with its spec's end and data
        hash brought up to the last recorded bar; :func:`resume_paper` continues it later."""
        spec = dict(self.spec)
        spec["end"] = self.last_date
        spec["data_sha256"] = self.data.content_hash()
        self.store.update_spec(self.run_id, spec, "running")
        self.store.finish(self.run_id, agent_diagnostics(self.agent))
        self.spec = spec


def _field(bar: Any, name: str) -> float:
    value = getattr(bar, name)
    return float("nan") if value is None else float(value)


@contextmanager
def start_paper(
    store: RunStore,
    run_id: str,
    agent: str,
    data: str,
    *,
    start: str | None = None,
    interval: str = "1d",
    calendar: str = DEFAULT_CALENDAR,
    seed: int = 0,
    universe: tuple[str, ...] | None = None,
    llm: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    settings: EnvSettings | None = None,
    **overrides: Any,
) -> Iterator[PaperSession]:
    """A new paper run of ``agent`` (a spec, as for a backtest) from ``data``'s history up to
    ``start`` (default: its last date), the run's first mark, all cash.

    ``interval``: the bars it trades (``"1d"``, or the intraday interval of ``data``: see
    the module docstring); ``calendar``: the
    exchange calendar whose sessions it decides in (``exchange_calendars`` name, default
    XNYS). ``settings``/``overrides`` as for
    :func:`~marketarena.evaluation.saved_runs.persisted.start_backtest` (rules, risk, ...).
    Everything checkable is checked before the run is created.
    """
    check_interval(interval)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    store.require_new(run_id)
    market = resolve_data(data)
    if universe:
        market = market.select(universe)
    if market.features is not None or market.listed is not None:
        raise ConfigError(
            f"{market.name} has user features or a point-in-time universe, which bars from a "
            "feed do not carry: paper runs need OHLCV (or close-only) data"
        )
    history = market.slice(None, start)
    _check_interval(interval, history)
    first = str(history.dates[-1])
    chosen = EnvSettings.resolve(settings, overrides).replace(start=first, end=first)
    day = pd.Timestamp(first).normalize()
    _calendar(calendar, day, day)  # an unknown name: an error
    _, first_valid = compute_features(history, chosen.features)
    if first_valid + chosen.window - 1 > history.n_periods - 1:
        usable = market.dates[min(first_valid + chosen.window - 1, market.n_periods - 1)]
        raise DataError(
            f"{market.name} up to {first} is too short a history for the {chosen.window}-row "
            f"observation window and its features: start on {usable} or later"
        )
    spec: dict[str, Any] = {
        "agent": agent,
        "data": str(data),
        "seed": seed,
        "universe": list(universe) if universe else None,
        "llm": dict(llm or {}),
        "tracking_uri": tracking_uri,
        **chosen.to_dict(),
        "first_date": first,
        "data_sha256": history.content_hash(),
        "paper": {
            "interval": interval,
            "calendar": calendar,
            "history_end": first,
            "history_sha256": history.content_hash(),
        },
    }
    if agent.startswith("llm:"):
        from marketarena.agents.llm_agent import LLMConfig

        spec["llm"].setdefault("price_levels", LLMConfig.price_levels)
    with persisted.serving(spec) as served:
        built = persisted.build_agent(served)
        built.reset(seed=seed)
        store.create_run(run_id, spec, history.symbols)
        yield PaperSession(store, run_id, spec, history, built, 0, None, {})


@contextmanager
def resume_paper(
    store: RunStore, run_id: str, *, llm: Mapping[str, Any] | None = None
) -> Iterator[PaperSession]:
    """Paper run ``run_id`` where its last recorded bar left it (finished or cut short):
    its history and delivered bars rebuilt, the env and the agent restored from the
    checkpoint; ``llm``: this session's endpoint options, as for ``resume_backtest``."""
    info = store.run(run_id)
    if "paper" not in info.spec:
        raise ConfigError(
            f"run {run_id!r} is a backtest, not a paper run: marketarena backtest --resume or "
            "--continue it"
        )
    spec = dict(info.spec)
    history = _history(run_id, spec)
    with persisted.serving(persisted.with_session_llm(run_id, spec, llm)) as served:
        agent = persisted.build_agent(served)
        agent.reset(seed=spec["seed"])
        checkpoint = store.checkpoint(run_id)
        step, env_state, bars = 0, None, {}
        if checkpoint is not None:
            step, env_state, agent_state = checkpoint
            bars = env_state.pop("paper_bars")
            agent.set_state(agent_state)
        if info.status == "finished":
            store.update_spec(run_id, spec, "running")
        yield PaperSession(store, run_id, spec, history, agent, step, env_state, bars)


#: the feed specs :func:`open_feed` takes
FEED_HELP = (
    "replay:ws://HOST:PORT/ws (a running replay server), replay:DATA (a bundled dataset or "
    "data path replayed by a local server this command starts, at --speed sets a second), "
    "file:PATH (a CSV file followed as rows are appended: date,symbol,open,high,low,close,"
    "volume), rest:URL (a polling REST provider, Alpha Vantage/IEX style, its API key in "
    "MARKETARENA_REST_API_KEY); several --feed: tried in that order, the next taking over "
    "after an outage of the one before"
)
FEED_KINDS = ("replay", "file", "rest")
#: where a ``rest:`` provider's API key is read from (never printed or stored)
REST_KEY_ENV = "MARKETARENA_REST_API_KEY"


def check_feed(spec: str) -> str:
    """The target of a feed spec (:data:`FEED_HELP`), or a :class:`ConfigError` naming it."""
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise ConfigError(f"--feed {spec!r}: use {FEED_HELP}")
    if kind not in FEED_KINDS:
        raise ConfigError(f"--feed {spec!r}: unknown feed kind {kind!r}; use {FEED_HELP}")
    if kind == "rest" and not os.environ.get(REST_KEY_ENV):
        raise ConfigError(
            f"--feed {spec!r}: the environment variable {REST_KEY_ENV} holds no API key; set "
            "it to the provider's key"
        )
    return target


@contextmanager
def open_feed(
    spec: str | Sequence[str],
    session: PaperSession,
    *,
    speed: float | None = None,
    backoff: Backoff | None = None,
    idle_timeout: float | None = None,
    poll: float | None = None,
    until: str | None = None,
) -> Iterator[Feed]:
    """The feed ``spec`` names (:data:`FEED_HELP`; several specs: a
    :class:`~marketarena.envs.feeds.fallback.FallbackFeed` over them, in that order) for
    ``session``'s symbols, interval and calendar, delivering bar sets after its last
    recorded bar; closed (and local replay servers stopped) when the block ends.

    ``speed``: bar sets a second of a local replay (default None: at once); ``backoff``:
    the reconnects of network feeds (default: :class:`Backoff`'s); ``idle_timeout``: a
    feed ends after this many seconds without a bar (default None: it waits);
    ``poll``: seconds between a REST provider's polls (default its own, 15); ``until``: a
    date whose session's bar set is the last a feed delivers (default None: no end).
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    if not specs:
        raise ConfigError(f"no --feed given: use {FEED_HELP}")
    targets = [check_feed(s) for s in specs]
    calendar = session.calendar_name
    interval = session.spec["paper"]["interval"]
    after = (
        daily_bar_end(session.last_date, calendar)
        if interval == "1d"
        else pd.Timestamp(session.last_date).tz_localize("UTC")
    )
    common: dict[str, Any] = {
        "calendar": calendar,
        "after": after,
        "idle_timeout": idle_timeout,
        "until": None if until is None else daily_bar_end(until, calendar),
    }
    with ExitStack() as stack:
        feeds: list[Feed] = []
        for one, target in zip(specs, targets, strict=True):
            kind = one.partition(":")[0]
            made: Feed
            if kind == "file":
                made = FileFeed(target, session.symbols, interval, **common)
            elif kind == "rest":
                extra: dict[str, Any] = {} if poll is None else {"poll": poll}
                made = PollingRestFeed(
                    target,
                    session.symbols,
                    interval,
                    api_key_env=REST_KEY_ENV,
                    backoff=backoff,
                    **extra,
                    **common,
                )
            elif target.startswith(("ws://", "wss://")):
                made = ReplayFeed(
                    target, session.symbols, interval=interval, backoff=backoff, **common
                )
            else:
                server = stack.enter_context(ReplayServer(target, speed=speed, calendar=calendar))
                made = ReplayFeed(
                    server.url, session.symbols, interval=interval, backoff=backoff, **common
                )
            stack.callback(made.close)
            feeds.append(made)
        yield feeds[0] if len(feeds) == 1 else FallbackFeed(feeds)


def run_paper(
    session: PaperSession,
    feed: Iterable[BarSet],
    *,
    until: str | None = None,
    bars: int | None = None,
    on_bar: Callable[[PaperBar], None] | None = None,
) -> PaperCounts:
    """Trade each bar set of ``feed`` until it ends, ``bars`` bars are recorded, or a set
    dated after ``until`` (a date) arrives; then close the session (the run is finished and
    can be resumed). An exception or Ctrl-C leaves the run as its last recorded bar left it,
    resumable."""
    if bars is not None and bars < 1:
        raise ConfigError(f"--bars must be >= 1, got {bars}")
    done = 0
    for bar_set in feed:
        if until is not None and bar_set.date > until:
            break
        bar = session.add(bar_set)
        if bar is None:
            continue
        done += 1
        if on_bar is not None:
            on_bar(bar)
        if session.ruined or (bars is not None and done >= bars):
            break
    session.close()
    return session.counts


__all__ = [
    "FEED_HELP",
    "FEED_KINDS",
    "INTERVALS",
    "PAPER_INTERVALS",
    "REST_KEY_ENV",
    "PaperBar",
    "PaperCounts",
    "PaperSession",
    "check_feed",
    "open_feed",
    "resume_paper",
    "run_paper",
    "start_paper",
]
