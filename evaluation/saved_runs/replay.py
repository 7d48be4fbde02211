"""Replay an AI-Trader trade log (``position.jsonl``) through the simulator.

Each line of the log is one action: ``date``, ``id``, ``this_action`` (``buy``, ``sell`` or
``no_trade`` with ``symbol`` and ``amount``) and the resulting ``positions`` (shares per symbol
and ``CASH``); the first line (no action) is the starting portfolio. A day's actions become
share orders filled by the same simulator every other agent trades through, under the
``aitrader`` rules (whole shares, no costs, filled at the open of the action's date, marked at
its close), so the replay yields an ordinary :class:`BacktestResult` with daily NAV and the
full metrics.

The log's own bookkeeping is checked against the simulator's every day: a share count or a
cash balance that differs, an order the simulator could not fill in full (selling shares
that are not held, buying without the cash), a symbol the price data lacks. Each difference
is reported with its date; none is absorbed silently.

Under risk rules (``risk=``, ``replay --risk key=value``; :mod:`marketarena.envs.risk`) the
log is the agent: each session its book (the positions it logged after its last action of the
day, or the standing positions on a day without one) is the target, valued at the decision's
closes, and the rules trim it before the fill exactly as they trim any agent's target. Where a
rule changes a symbol's weight, its shares are the trimmed weight at those closes, rounded
down to whole lots; everywhere else the log's share count is kept, so a rule that never binds
replays the log exactly. Every intervention is recorded (``result.interventions``); the
differences against the log then show what the rules changed.

``replay_logs`` replays several logs and ranks them by final NAV, as AI-Trader's leaderboard
does; ``replay_report`` turns them into a metrics report with the benchmark alongside.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marketarena.envs.core import build_rules
from marketarena.envs.data import MarketData
from marketarena.envs.errors import DataError, MissingFileError
from marketarena.envs.risk import RiskLayer, RiskSettings, build_risk
from marketarena.envs.simulator import Simulator, TradingRules
from marketarena.evaluation.report import EvaluationReport
from marketarena.evaluation.runner import AgentEvaluation, BacktestResult, align_benchmark

ACTIONS = ("buy", "sell", "no_trade")


class TradeLogError(DataError):
    """A trade log line is malformed; the message names the file and line."""


@dataclass(frozen=True)
class LogEntry:
    line: int
    date: str
    id: int
    action: str | None
    symbol: str
    amount: float
    positions: dict[str, float]
    cash: float


@dataclass(frozen=True)
class Difference:
    """One way the log and the simulator disagree on a day."""

    date: str
    kind: str  # "shares", "cash", "unfilled"
    symbol: str | None
    log: float
    simulator: float

    def __str__(self) -> str:
        what = f"{self.symbol} " if self.symbol else ""
        return f"{self.date} {self.kind}: {what}log {self.log:g}, simulator {self.simulator:g}"


@dataclass
class ReplayResult:
    name: str
    result: BacktestResult
    differences: list[Difference] = field(default_factory=list)
    actions: int = 0

    @property
    def days_with_differences(self) -> list[str]:
        return sorted({d.date for d in self.differences})

    @property
    def summary(self) -> str:
        """Trades, and where the log and the simulator disagree, in one line."""
        if not self.differences:
            return f"{self.actions} trades; matches the simulator on every day"
        return (
            f"{self.actions} trades; {len(self.differences)} difference(s) on "
            f"{len(self.days_with_differences)} day(s)"
        )


def read_trade_log(path: str | Path) -> list[LogEntry]:
    """Parse and check a ``position.jsonl``; errors name the file and the line."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"trade log not found: {path}")
    entries = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            doc = json.loads(text)
            date, ident, positions = str(doc["date"]), int(doc["id"]), dict(doc["positions"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TradeLogError(
                f"{where}: not a trade log line ({type(exc).__name__}: {exc})"
            ) from None
        if "CASH" not in positions:
            raise TradeLogError(f"{where}: positions have no CASH")
        action = doc.get("this_action")
        kind, symbol, amount = None, "", 0.0
        if action is not None:
            kind = action.get("action")
            if kind not in ACTIONS:
                raise TradeLogError(f"{where}: unknown action {kind!r}; expected {ACTIONS}")
            symbol = str(action.get("symbol", "")).strip()
            amount = action.get("amount", 0)
            if not isinstance(amount, int | float) or not math.isfinite(amount) or amount < 0:
                raise TradeLogError(f"{where}: amount {amount!r} is not a non-negative number")
            if kind != "no_trade" and not symbol:
                raise TradeLogError(f"{where}: a {kind} without a symbol")
        cash = float(positions.pop("CASH"))
        shares = {k: float(v) for k, v in positions.items()}
        entries.append(LogEntry(number, date, ident, kind, symbol, float(amount), shares, cash))
    if not entries:
        raise TradeLogError(f"{path}: empty trade log")
    if entries[0].action is not None:
        raise TradeLogError(
            f"{path}:{entries[0].line}: the first line must be the starting "
            "portfolio (no this_action)"
        )
    dates = [e.date for e in entries]
    if dates != sorted(dates):
        raise TradeLogError(f"{path}: lines are not in date order")
    return entries


def replay(
    log: str | Path | list[LogEntry],
    data: MarketData,
    *,
    rules: TradingRules | str | dict | None = "aitrader",
    benchmark: Any = None,
    name: str | None = None,
    cash_tolerance: float = 1e-6,
    risk: RiskSettings | dict | None = None,
) -> ReplayResult:
    """Replay a trade log over ``data``, under risk rules when ``risk`` sets any; see the
    module docstring."""
    entries = log if isinstance(log, list) else read_trade_log(log)
    label = name or (Path(log).stem if not isinstance(log, list) else "log")
    start = entries[0]
    if any(v != 0 for v in start.positions.values()):
        raise TradeLogError(f"{label}: the replay needs a log that starts from cash")
    base = build_rules(rules) or TradingRules()
    base = dataclasses.replace(base, initial_cash=start.cash)
    unknown = sorted({e.symbol for e in entries if e.symbol} - set(data.symbols))
    if unknown:
        first = next(e for e in entries if e.symbol in unknown)
        raise TradeLogError(
            f"{label}: the price data has no {unknown} (first traded on {first.date}, line "
            f"{first.line})"
        )
    t0 = data.index_of(start.date, "right")
    last = data.index_of(entries[-1].date, "right")
    if str(data.dates[t0]) != start.date:
        raise TradeLogError(f"{label}: the log starts on {start.date}, not a trading date")
    risk_settings = build_risk(risk)
    layer = (
        RiskLayer(risk_settings, data.symbols, data.close, 1, base.periods_per_year)
        if risk_settings.active
        else None
    )
    sim = Simulator(data, base, record=True)
    sim.reset(t0)
    book = np.zeros(data.n_assets)  # the log's positions, for the rules' targets
    interventions: list[dict[str, Any]] = []
    by_date: dict[str, list[LogEntry]] = defaultdict(list)
    for e in entries[1:]:
        by_date[e.date].append(e)
    trading = {str(d) for d in data.dates[t0 + 1 : last + 1]}
    off_calendar = sorted(set(by_date) - trading)
    if off_calendar:
        raise TradeLogError(f"{label}: actions on non-trading dates {off_calendar}")
    index = {s: j for j, s in enumerate(data.symbols)}
    differences: list[Difference] = []
    navs, weights, turnover, costs = [sim.nav[0]], [sim.weight[0]], [], []
    for t in range(t0, last):
        date = str(data.dates[t + 1])
        day = by_date.get(date, [])
        orders = np.zeros(data.n_assets)
        for e in day:
            if e.action == "buy":
                orders[index[e.symbol]] += e.amount
            elif e.action == "sell":
                orders[index[e.symbol]] -= e.amount
        if day:
            book = np.array([day[-1].positions.get(symbol, 0.0) for symbol in data.symbols])
        if layer is not None:
            orders = _risk_orders(layer, sim, book, t, base.lot_size)
            for rule, amount in layer.last.items():
                if amount[0] > 0:
                    interventions.append(
                        {"date": str(data.dates[t]), "rule": rule, "amount": float(amount[0])}
                    )
        before = sim.shares[0].copy()
        result = sim.step_orders(orders[None, :])
        filled = sim.shares[0] - before
        for j in np.flatnonzero(np.abs(filled - orders) > 1e-9):
            differences.append(Difference(date, "unfilled", data.symbols[j], orders[j], filled[j]))
        if day:
            final = day[-1]
            for symbol, k in index.items():
                logged = final.positions.get(symbol, 0.0)
                if abs(logged - sim.shares[0, k]) > 1e-9:
                    differences.append(Difference(date, "shares", symbol, logged, sim.shares[0, k]))
            if abs(final.cash - sim.cash[0]) > cash_tolerance * max(1.0, abs(final.cash)):
                differences.append(Difference(date, "cash", None, final.cash, float(sim.cash[0])))
        navs.append(float(sim.nav[0]))
        weights.append(sim.weight[0])
        turnover.append(float(result.turnover[0]))
        costs.append(float(result.costs[0]))
    dates = data.dates[t0 : last + 1]
    bench, bench_name = (None, None)
    if benchmark is not None:
        bench, bench_name = align_benchmark(benchmark, dates)
    backtest = BacktestResult(
        agent=label,
        data_name=data.name,
        symbols=data.symbols,
        dates=dates,
        nav=np.asarray(navs),
        weights=np.vstack(weights),
        turnover=np.asarray(turnover),
        costs=np.asarray(costs),
        fills=sim.history(0).fills_frame(),
        benchmark=bench,
        benchmark_name=bench_name,
        settings={
            "data": data.manifest(),
            "rules": base.to_dict(),
            "log": str(log) if not isinstance(log, list) else None,
            **({"risk": risk_settings.to_dict()} if layer is not None else {}),
        },
        interventions=interventions,
        diagnostics={
            "actions": sum(1 for e in entries if e.action in ("buy", "sell")),
            "differences": len(differences),
            "days_with_differences": len({d.date for d in differences}),
        },
    )
    actions = sum(1 for e in entries if e.action in ("buy", "sell"))
    return ReplayResult(label, backtest, differences, actions)


def _risk_orders(
    layer: RiskLayer,
    sim: Simulator,
    book: np.ndarray,
    t: int,
    lot: float | None,
) -> np.ndarray:
    """The day's share orders after the rules: from the simulator's shares to the log's book,
    trimmed at the decision's closes (row ``t``); symbols no rule changed keep the book's
    share count (so while the simulator holds the log's book, they trade the log's orders)."""
    close = sim.data.close[t]
    nav = sim.nav[:1]
    target = book * close / nav[0]
    trimmed = layer.apply(target[None, :], sim.weight[:1, :-1], nav, np.array([t]))[0]
    changed = np.abs(trimmed - target) > 1e-12
    shares = trimmed * nav[0] / close
    if lot is not None:
        shares = np.trunc(shares / lot + 1e-9) * lot  # toward zero: a trim never grows
    return np.where(changed, shares, book) - sim.shares[0]


def differences_frame(results: list[ReplayResult]) -> pd.DataFrame:
    rows = [
        {
            "log": r.name,
            "date": d.date,
            "kind": d.kind,
            "symbol": d.symbol,
            "log_value": d.log,
            "simulator_value": d.simulator,
        }
        for r in results
        for d in r.differences
    ]
    return pd.DataFrame(
        rows, columns=["log", "date", "kind", "symbol", "log_value", "simulator_value"]
    )


def benchmark_run(result: BacktestResult) -> BacktestResult:
    """Buy-and-hold of ``result``'s benchmark over the same dates, as a leaderboard row."""
    levels = result.benchmark
    if levels is None:
        raise ValueError(f"{result.agent} has no benchmark to buy and hold")
    n = len(result.dates)
    weights = np.zeros((n, 2))
    weights[:, 0] = 1.0
    return BacktestResult(
        agent=f"{result.benchmark_name} (benchmark)",
        data_name=str(result.benchmark_name),
        symbols=(str(result.benchmark_name),),
        dates=result.dates,
        nav=result.nav[0] * levels / levels[0],
        weights=weights,
        turnover=np.zeros(n - 1),
        costs=np.zeros(n - 1),
        benchmark=levels,
        benchmark_name=result.benchmark_name,
        fills_recorded=False,
    )


def replay_logs(
    logs: Sequence[str | Path],
    data: MarketData,
    *,
    rules: TradingRules | str | dict | None = "aitrader",
    benchmark: Any = None,
    risk: RiskSettings | dict | None = None,
) -> list[ReplayResult]:
    """Replay every log over ``data`` (under ``risk`` rules when given); the best final NAV
    first, as AI-Trader ranks."""
    replays = [replay(log, data, rules=rules, benchmark=benchmark, risk=risk) for log in logs]
    replays.sort(key=lambda r: -r.result.nav[-1])
    return replays


def replay_report(
    replays: Sequence[ReplayResult], data: MarketData, logs: Sequence[str | Path] = ()
) -> EvaluationReport:
    """The leaderboard of ``replays`` in their order, then the benchmark's buy-and-hold when
    the replays have a benchmark; ``logs`` are recorded in the settings."""
    first = replays[0].result
    evaluations = [AgentEvaluation(r.name, [r.result]) for r in replays]
    if first.benchmark is not None:
        bench = benchmark_run(first)
        evaluations.append(AgentEvaluation(bench.agent, [bench]))
    return EvaluationReport(
        title=f"AI-Trader replay: {data.name}, {first.dates[0]} to {first.dates[-1]}",
        evaluations=evaluations,
        settings={
            "data": data.manifest(),
            "rules": first.settings["rules"],
            **({"risk": first.settings["risk"]} if "risk" in first.settings else {}),
            "logs": [str(p) for p in logs],
            "benchmark": first.benchmark_name,
        },
    )
