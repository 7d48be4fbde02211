"""The backtest runner: any agent, one episode of a :class:`PortfolioEnv`, one result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marketarena.agents.base import Agent
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.evaluation import metrics


@dataclass
class BacktestResult:
    """One agent's run over one date range.

    ``dates``, ``nav`` and ``weights`` have one entry per mark: the start date (all cash)
    and the close after every step. ``turnover`` and ``costs`` have one entry per step.
    """

    agent: str
    data_name: str
    symbols: tuple[str, ...]
    dates: np.ndarray
    nav: np.ndarray
    weights: np.ndarray
    turnover: np.ndarray
    costs: np.ndarray
    terminated: bool = False
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def returns(self) -> np.ndarray:
        """Simple returns per step, after costs."""
        return self.nav[1:] / self.nav[:-1] - 1.0

    def summary(self, periods_per_year: int = metrics.PERIODS_PER_YEAR) -> dict[str, float]:
        r = self.returns
        return {
            "final_nav": float(self.nav[-1]),
            "total_return": metrics.total_return(r),
            "cagr": metrics.annualized_return(r, periods_per_year),
            "volatility": metrics.annualized_volatility(r, periods_per_year),
            "sharpe": metrics.sharpe_ratio(r, periods_per_year=periods_per_year),
            "max_drawdown": metrics.max_drawdown(r),
            "total_costs": float(self.costs.sum()),
            "mean_turnover": float(self.turnover.mean()) if len(self.turnover) else float("nan"),
        }


def run_backtest(
    agent: Agent,
    env: PortfolioEnv,
    *,
    seed: int | None = None,
    start: str | None = None,
) -> BacktestResult:
    """Run ``agent`` for one episode of ``env`` and collect the result.

    ``seed`` seeds both the env's reset and the agent; ``start`` fixes the first decision date
    (otherwise the env chooses, e.g. randomly when ``random_start=True``).
    """
    base = env.unwrapped
    if not isinstance(base, PortfolioEnv):
        raise TypeError(f"run_backtest needs a PortfolioEnv, got {type(base).__name__}")
    options = {"start": start} if start is not None else None
    observation, info = env.reset(seed=seed, options=options)
    agent.reset(seed=seed)
    dates, navs, weights = [info["date"]], [info["nav"]], [info["weights"]]
    turnover, costs = [], []
    terminated = truncated = False
    while not (terminated or truncated):
        action = agent.act(observation, info)
        observation, _, terminated, truncated, info = env.step(action)
        dates.append(info["date"])
        navs.append(info["nav"])
        weights.append(info["weights"])
        turnover.append(info["turnover"])
        costs.append(info["costs"])
    return BacktestResult(
        agent=agent.name,
        data_name=base.data.name,
        symbols=base.data.symbols,
        dates=np.asarray(dates, dtype="datetime64[D]"),
        nav=np.asarray(navs),
        weights=np.vstack(weights),
        turnover=np.asarray(turnover),
        costs=np.asarray(costs),
        terminated=bool(terminated),
    )
