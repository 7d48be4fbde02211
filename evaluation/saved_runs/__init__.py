"""Saved runs: the run store, persisted backtests and the replay of recorded trade logs.

* :mod:`~marketarena.evaluation.saved_runs.store`: :class:`RunStore`, a SQLite file or a
  PostgreSQL database of runs, each completed day (NAV, holdings, fills) with a checkpoint to
  resume from, and the service's jobs and webhook deliveries; its schema migrations (Alembic)
  ship in ``migrations/``.
* :mod:`~marketarena.evaluation.saved_runs.codec`: the checkpoints' format, JSON with type
  tags and an allowlist of classes, which cannot run code when read.
* :mod:`~marketarena.evaluation.saved_runs.persisted`: backtests recorded day by day in a
  store — start, resume after a crash, continue when new data arrives — and what is read
  back from it: results, positions, holding periods, turnover, the leaderboard.
* :mod:`~marketarena.evaluation.saved_runs.replay`: an AI-Trader trade log through the
  simulator, every day checked against the log's own bookkeeping.
"""

from marketarena.evaluation.saved_runs.persisted import (
    Positions,
    continue_backtest,
    holding_periods,
    leaderboard,
    load_positions,
    load_result,
    mean_holding_period,
    resume_backtest,
    run_report,
    start_backtest,
    turnover_summary,
)
from marketarena.evaluation.saved_runs.replay import (
    ReplayResult,
    TradeLogError,
    read_trade_log,
    replay,
    replay_logs,
    replay_report,
)
from marketarena.evaluation.saved_runs.store import DEFAULT_STORE, RunInfo, RunNotFound, RunStore

__all__ = [
    "DEFAULT_STORE",
    "Positions",
    "ReplayResult",
    "RunInfo",
    "RunNotFound",
    "RunStore",
    "TradeLogError",
    "continue_backtest",
    "holding_periods",
    "leaderboard",
    "load_positions",
    "load_result",
    "mean_holding_period",
    "read_trade_log",
    "replay",
    "replay_logs",
    "replay_report",
    "resume_backtest",
    "run_report",
    "start_backtest",
    "turnover_summary",
]
