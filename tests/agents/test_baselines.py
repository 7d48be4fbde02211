"""Baseline agents behave as named: buy-and-hold never trades again, equal weight rebalances
on schedule, random is reproducible from its seed."""

from __future__ import annotations

import numpy as np
import pytest

from marketarena.agents import Agent, BuyAndHoldAgent, EqualWeightAgent, RandomAgent
from marketarena.envs import PortfolioEnv
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation.runner import run_backtest


@pytest.fixture(scope="module")
def env_factory():
    data = gbm_market(n_assets=5, n_periods=200, seed=11)

    def make(**rules):
        return PortfolioEnv(
            data,
            window=5,
            episode_length=60,
            random_start=False,
            record=True,
            rules={"commission_bps": 5.0, "slippage_bps": 5.0, **rules},
        )

    return make


@pytest.mark.parametrize("cls", [BuyAndHoldAgent, EqualWeightAgent, RandomAgent])
def test_baselines_follow_the_protocol(cls):
    assert isinstance(cls(), Agent)


def test_buy_and_hold_trades_once(env_factory):
    env = env_factory()
    result = run_backtest(BuyAndHoldAgent(), env, seed=0)
    history = env.sim.history(0)
    fills = history.fills_frame()
    assert fills["date"].nunique() == 1 and len(fills) == 5
    np.testing.assert_array_equal(history.shares[1], history.shares[-1])
    assert result.costs[0] > 0 and np.all(result.costs[1:] == 0)
    assert np.all(result.turnover[1:] == 0)


def test_buy_and_hold_custom_weights(env_factory):
    env = env_factory(commission_bps=0.0, slippage_bps=0.0, execution="close")
    result = run_backtest(BuyAndHoldAgent(weights=[0.6, 0, 0, 0, 0.2]), env, seed=0)
    t0 = env.data.index_of(result.dates[0])
    shares = env.sim.history(0).shares[1]
    np.testing.assert_allclose(shares * env.data.close[t0], [6_000.0, 0, 0, 0, 2_000.0])
    assert result.weights[0][-1] == 1.0  # all cash before the first fill
    with pytest.raises(ValueError, match="5 non-negative numbers"):
        run_backtest(BuyAndHoldAgent(weights=[0.5, 0.6]), env_factory(), seed=0)


def test_equal_weight_rebalances_on_schedule(env_factory):
    env = env_factory(execution="close", commission_bps=0.0, slippage_bps=0.0)
    result = run_backtest(EqualWeightAgent(rebalance_every=10), env, seed=0)
    traded_steps = np.flatnonzero(result.turnover > 0)
    np.testing.assert_array_equal(traded_steps, np.arange(0, 60, 10))
    # with same-bar fills and no costs the weights right after a rebalance are exactly equal
    # at the fill; they have drifted by the next close, so check the shares instead
    history = env.sim.history(0)
    close = env.data.close
    for k in traded_steps:
        t = env.data.index_of(history.snapshot_dates[k])
        values = history.shares[k + 1] * close[t]
        np.testing.assert_allclose(values, values.mean(), rtol=1e-9)


def test_random_agent_is_seeded(env_factory):
    a = run_backtest(RandomAgent(), env_factory(), seed=3)
    b = run_backtest(RandomAgent(), env_factory(), seed=3)
    c = run_backtest(RandomAgent(), env_factory(), seed=4)
    np.testing.assert_array_equal(a.nav, b.nav)
    assert not np.array_equal(a.nav, c.nav)
    assert np.all(a.turnover > 0)  # redraws every step by default


def test_rebalance_every_validated():
    with pytest.raises(ValueError, match="rebalance_every"):
        EqualWeightAgent(rebalance_every=0)
    with pytest.raises(ValueError, match="rebalance_every"):
        RandomAgent(rebalance_every=0)
