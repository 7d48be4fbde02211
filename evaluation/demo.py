"""The demo: baseline agents trading the bundled 20-stock panel over a fixed test period."""

from __future__ import annotations

from dataclasses import dataclass

from marketarena.agents.baselines import BuyAndHoldAgent, EqualWeightAgent, RandomAgent
from marketarena.envs.data import load_dataset
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.envs.simulator import TradingRules
from marketarena.evaluation.runner import BacktestResult, run_backtest


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; every field has the default ``marketarena demo`` uses."""

    data: str = "sp500_20"
    start: str = "2018-01-02"
    end: str = "2022-12-28"
    seed: int = 0
    commission_bps: float = 5.0
    slippage_bps: float = 5.0


def run_demo(config: DemoConfig = DemoConfig()) -> list[BacktestResult]:
    """Backtest the baselines over ``config``'s date range; one result per agent."""
    data = load_dataset(config.data)
    rules = TradingRules(commission_bps=config.commission_bps, slippage_bps=config.slippage_bps)
    agents = [
        BuyAndHoldAgent(),
        EqualWeightAgent(rebalance_every=21, name="equal_weight (monthly)"),
        RandomAgent(rebalance_every=21, name="random (monthly)"),
    ]
    results = []
    for agent in agents:
        env = PortfolioEnv(
            data, start=config.start, end=config.end, rules=rules, episode_length=None,
            random_start=False,
        )  # fmt: skip
        results.append(run_backtest(agent, env, seed=config.seed))
    return results
