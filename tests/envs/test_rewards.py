"""Rewards on hand-made step results: the differential Sharpe warm-up, floor and per-env state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marketarena.envs import DifferentialSharpeReward, PortfolioEnv
from marketarena.envs.rewards import make_reward
from marketarena.envs.simulator import StepResult


def step_result(returns: list[float] | np.ndarray) -> StepResult:
    """A step whose simple return per env is ``returns`` (NAV 1 before, no costs)."""
    r = np.asarray(returns, dtype=np.float64)
    zeros = np.zeros_like(r)
    nav_before = np.ones_like(r)
    nav = 1.0 + r
    return StepResult(
        nav_before=nav_before,
        nav=nav,
        peak_nav=np.maximum(nav, nav_before),
        commission=zeros,
        slippage=zeros,
        borrow=zeros,
        costs=zeros,
        turnover=zeros,
    )


def feed(reward: DifferentialSharpeReward, returns: np.ndarray) -> np.ndarray:
    """Rewards for ``returns`` of shape ``(steps, n_envs)``, one call per step."""
    return np.array([reward(step_result(r)).copy() for r in returns])


def as_seen(returns: np.ndarray) -> np.ndarray:
    """The returns as the reward reads them back from NAVs (``(1 + r) / 1 - 1``, rounded)."""
    return (1.0 + returns) - 1.0


def old_loop(returns: np.ndarray, eta: float) -> list[float]:
    """The reward before the warm-up (EMA from zero, 0 while the variance is <= 1e-12)."""
    a = b = 0.0
    out = []
    for r in returns:
        var = b - a * a
        out.append((b * (r - a) - 0.5 * a * (r * r - b)) / var**1.5 if var > 1e-12 else 0.0)
        a, b = a + eta * (r - a), b + eta * (r * r - b)
    return out


# ------------------------------------------------------------------- hand computations
def test_differential_sharpe_by_hand_with_warmup_2():
    reward = DifferentialSharpeReward(eta=0.5, warmup=2)
    reward.reset(1)
    got = feed(reward, np.array([[0.01], [0.03], [0.02], [-0.01]]))[:, 0]
    # step 1 (warm-up): reward 0; A = 0.01, B = 0.0001 (means of one return)
    # step 2 (warm-up): reward 0; A = (0.01 + 0.03) / 2 = 0.02, B = (0.0001 + 0.0009) / 2 = 0.0005
    # step 3: var = 0.0005 - 0.02**2 = 0.0001; R - A = 0, R**2 - B = 0.0004 - 0.0005 = -0.0001
    #   D = (0.0005 * 0 - 0.5 * 0.02 * -0.0001) / 0.0001**1.5 = 1e-6 / 1e-6 = 1
    #   then EMA: A = 0.02 + 0.5 * 0 = 0.02, B = 0.0005 + 0.5 * -0.0001 = 0.00045
    # step 4: var = 0.00045 - 0.0004 = 0.00005; R - A = -0.03, R**2 - B = 0.0001 - 0.00045
    #   D = (0.00045 * -0.03 - 0.5 * 0.02 * -0.00035) / 0.00005**1.5
    #     = (-1.35e-5 + 3.5e-6) / (5e-5 * sqrt(5e-5)) = -0.2 / sqrt(5e-5) = -20 * sqrt(2)
    assert got[0] == 0.0 and got[1] == 0.0
    np.testing.assert_allclose(got[2:], [1.0, -20.0 * math.sqrt(2.0)], rtol=1e-9)
    np.testing.assert_allclose(reward._a, [0.02 + 0.5 * (-0.03)], rtol=1e-9)
    np.testing.assert_allclose(reward._b, [0.00045 + 0.5 * (0.0001 - 0.00045)], rtol=1e-9)


def test_warmup_moments_are_plain_means_not_an_ema_from_zero():
    returns = np.random.default_rng(0).normal(0.0005, 0.01, size=(20, 3))
    reward = DifferentialSharpeReward(eta=0.01, warmup=20)
    reward.reset(3)
    assert np.all(feed(reward, returns) == 0.0)
    np.testing.assert_allclose(reward._a, returns.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(reward._b, (returns**2).mean(axis=0), rtol=1e-9)
    # the first rewarded step divides by the sample variance of the warm-up, not ~eta * R**2
    r = np.array([0.01, -0.01, 0.0])
    a, b = returns.mean(axis=0), (returns**2).mean(axis=0)
    expected = (b * (r - a) - 0.5 * a * (r * r - b)) / returns.var(axis=0) ** 1.5
    np.testing.assert_allclose(reward(step_result(r)), expected, rtol=1e-9)


def test_flat_warmup_is_bounded_by_the_variance_floor():
    # all-cash warm-up: A = B = 0, so the numerator is 0 too and D stays 0
    reward = DifferentialSharpeReward(warmup=3)
    reward.reset(1)
    assert np.all(feed(reward, np.array([[0.0], [0.0], [0.0], [0.02]])) == 0.0)
    # constant 0.1% warm-up returns: B - A**2 = 0, the floor 1e-8 stands in for the variance
    reward = DifferentialSharpeReward(warmup=2, var_floor=1e-8)
    reward.reset(1)
    got = feed(reward, np.array([[0.001], [0.001], [0.002]]))[:, 0]
    # A = 0.001, B = 1e-6: D = (1e-6 * 0.001 - 0.5 * 0.001 * (4e-6 - 1e-6)) / (1e-8)**1.5
    #   = (1e-9 - 1.5e-9) / 1e-12 = -500 (finite; without the floor a division by ~0)
    assert np.isfinite(got).all()
    assert got[2] == pytest.approx(-500.0, rel=1e-6)


@pytest.mark.parametrize("eta", [0.01, 0.1, 0.5])
def test_warmup_0_is_the_old_reward_while_the_variance_is_above_the_floor(eta):
    returns = as_seen(np.random.default_rng(1).normal(0.0, 0.02, size=40))
    reward = DifferentialSharpeReward(eta=eta, warmup=0)
    reward.reset(1)
    got = feed(reward, returns[:, None])[:, 0]
    expected = old_loop(returns, eta)
    assert got[0] == expected[0] == 0.0  # A = B = 0 on the first step: numerator 0
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_warmup_0_differs_from_the_old_reward_only_where_the_floor_binds():
    # a tiny first return: the old variance estimate at step 2 is 0.99e-12, below its 1e-12 cut
    returns = as_seen(np.array([1e-5, 0.01, -0.02, 0.005]))
    reward = DifferentialSharpeReward(eta=0.01, warmup=0)
    reward.reset(1)
    got = feed(reward, returns[:, None])[:, 0]
    expected = old_loop(returns, 0.01)
    assert expected[1] == 0.0 and got[1] != 0.0  # the old one gave 0 below 1e-12; now the floor
    a, b = 0.01 * 1e-5, 0.01 * 1e-10
    assert got[1] == pytest.approx((b * (0.01 - a) - 0.5 * a * (1e-4 - b)) / 1e-12, rel=1e-6)


# ------------------------------------------------------------------------ per-env state
def test_reset_of_some_envs_leaves_the_others_untouched():
    rng = np.random.default_rng(2)
    before, after = rng.normal(0, 0.01, size=(6, 3)), rng.normal(0, 0.01, size=(30, 3))
    reward = DifferentialSharpeReward(eta=0.1, warmup=4)
    reward.reset(3)
    feed(reward, before)
    state = {k: v.copy() for k, v in vars(reward).items() if isinstance(v, np.ndarray)}
    reward.reset(3, np.array([1]))
    for name, value in state.items():  # envs 0 and 2 keep their moments and step counts
        np.testing.assert_array_equal(getattr(reward, name)[[0, 2]], value[[0, 2]])
    assert reward._a[1] == reward._b[1] == 0.0 and reward._n[1] == 0
    got = feed(reward, after)

    # envs 0 and 2 continue as if nothing happened; env 1 starts over, warm-up included
    uninterrupted = DifferentialSharpeReward(eta=0.1, warmup=4)
    uninterrupted.reset(3)
    reference = feed(uninterrupted, np.vstack([before, after]))[len(before) :]
    np.testing.assert_array_equal(got[:, [0, 2]], reference[:, [0, 2]])
    fresh = DifferentialSharpeReward(eta=0.1, warmup=4)
    fresh.reset(1)
    np.testing.assert_array_equal(got[:, 1], feed(fresh, after[:, [1]])[:, 0])
    assert np.all(got[:4, 1] == 0.0) and np.all(got[4:, 1] != 0.0)


def test_reset_with_a_boolean_mask_and_a_new_batch_size():
    reward = DifferentialSharpeReward(warmup=1)
    reward.reset(2)
    feed(reward, np.full((3, 2), 0.01))
    reward.reset(2, np.array([False, True]))
    np.testing.assert_array_equal(reward._n, [3, 0])
    reward.reset(4)  # a different batch: fresh state for every env
    assert reward._a.shape == reward._b.shape == reward._n.shape == (4,)
    assert np.all(reward._n == 0)


def test_arguments_are_checked_and_passed_by_name():
    reward = make_reward("differential_sharpe", eta=0.05, warmup=5, var_floor=1e-6)
    assert isinstance(reward, DifferentialSharpeReward)
    assert (reward.eta, reward.warmup, reward.var_floor) == (0.05, 5, 1e-6)
    assert DifferentialSharpeReward(warmup=3.0).warmup == 3  # a whole float, e.g. from YAML
    assert DifferentialSharpeReward().warmup == 20
    for kwargs, match in [
        ({"eta": 0.0}, "eta"),
        ({"warmup": -1}, "warmup"),
        ({"warmup": 2.5}, "warmup"),
        ({"var_floor": 0.0}, "var_floor"),
    ]:
        with pytest.raises(ValueError, match=match):
            DifferentialSharpeReward(**kwargs)


def test_env_state_round_trip_mid_warmup():
    env = PortfolioEnv("sp500_20", reward="differential_sharpe", episode_length=60, window=4)
    env.reset(seed=3)
    actions = np.random.default_rng(3).dirichlet(np.ones(21), size=40)
    for a in actions[:10]:
        env.step(a)
    saved = env.get_state()
    first = [env.step(a)[1] for a in actions[10:]]
    env.reset(seed=3)
    env.set_state(saved)
    again = [env.step(a)[1] for a in actions[10:]]
    assert first == again
    assert first[:10] == [0.0] * 10 and all(r != 0.0 for r in first[10:])


# ---------------------------------------------------------------- no step dominates
def episode_rewards(warmup: int, episodes: int = 20, length: int = 252) -> np.ndarray:
    """Rewards ``(episodes, length)`` of a seeded random policy on the bundled sp500_20."""
    env = PortfolioEnv(
        "sp500_20",
        reward="differential_sharpe",
        reward_kwargs={"warmup": warmup},
        episode_length=length,
        window=4,
    )
    out = np.zeros((episodes, length))
    for ep in range(episodes):
        env.reset(seed=ep)
        env.action_space.seed(ep)
        for k in range(length):
            _, out[ep, k], terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                assert k == length - 1  # full episodes: no ruin or stop-loss under these rules
                break
    return out


def dominance(rewards: np.ndarray, warmup: int) -> tuple[float, float]:
    """Worst ratio of an early step's median |r| to the later median, and worst share.

    The ratio is over the first 5 rewarded steps, each step's median across episodes against the
    median of every later step, whichever way round; the share is the largest ``|r|`` of one
    step over its episode's sum of ``|r|``.
    """
    mag = np.abs(rewards)
    first = max(warmup, 1)  # without a warm-up, step 1 is 0 by construction (A = B = 0)
    early = np.median(mag[:, first : first + 5], axis=0)
    later = np.median(mag[:, first + 5 :])
    ratio = float(np.max(np.maximum(early / later, later / early)))
    share = float(np.max(mag / mag.sum(axis=1, keepdims=True)))
    return ratio, share


def test_no_single_step_dominates_an_episode():
    # the issue: from zero moments the 2nd step's median |D| was ~100x the later ones, and one
    # step could carry almost all of an episode's reward; the warm-up removes both
    ratio, share = dominance(episode_rewards(warmup=20), warmup=20)
    assert ratio < 5.0 and share < 0.2, (ratio, share)


def test_the_dominance_check_fails_without_a_warmup():
    ratio, share = dominance(episode_rewards(warmup=0), warmup=0)
    assert ratio > 5.0 and share > 0.2, (ratio, share)


# ------------------------------------------------------------------- turnover penalty
def test_turnover_penalty_subtracts_k_times_turnover():
    """By hand: NAV 1 -> 1.02 with turnover 0.5 and k = 0.1 gives log(1.02) - 0.05."""
    result = step_result([0.02, -0.01])
    result.turnover = np.array([0.5, 0.0])
    reward = make_reward("log_return", turnover_penalty=0.1)
    got = reward(result)
    assert got[0] == pytest.approx(math.log(1.02) - 0.05, rel=1e-12)
    assert got[1] == pytest.approx(math.log(0.99), rel=1e-12)  # no trade, no penalty
    assert type(make_reward("log_return", turnover_penalty=0.0)).__name__ == "LogReturnReward"


def test_turnover_penalty_wraps_a_stateful_reward_and_resets_it():
    plain = make_reward("differential_sharpe", warmup=0)
    penalised = make_reward("differential_sharpe", warmup=0, turnover_penalty=0.2)
    plain.reset(3)
    penalised.reset(3)
    rng = np.random.default_rng(0)
    for returns in rng.normal(0, 0.01, size=(30, 3)):
        result = step_result(returns)
        result.turnover = rng.uniform(0, 1, size=3)
        a, b = plain(result).copy(), penalised(result)
        np.testing.assert_allclose(b, a - 0.2 * result.turnover, rtol=0, atol=1e-15)
    penalised.reset(3, np.array([1]))
    plain.reset(3, np.array([1]))
    result = step_result([0.01, 0.02, 0.03])
    np.testing.assert_allclose(penalised(result), plain(result), atol=1e-15)  # turnover 0


def test_turnover_penalty_in_the_env_equals_the_traded_value():
    """In a real env the penalty is ``k * info['turnover']`` on top of the costs."""
    kw = {"window": 4, "episode_length": 20, "features": ("log_return",)}
    plain = PortfolioEnv("sp500_20", **kw)
    penalised = PortfolioEnv("sp500_20", reward_kwargs={"turnover_penalty": 0.5}, **kw)
    plain.reset(seed=3)
    penalised.reset(seed=3)
    rng = np.random.default_rng(1)
    traded = 0
    for _ in range(15):
        action = rng.dirichlet(np.ones(plain.action_space.shape[0]))
        _, r0, *_, info = plain.step(action)
        _, r1, *_ = penalised.step(action)
        assert r1 == pytest.approx(r0 - 0.5 * info["turnover"], abs=1e-12)
        traded += info["turnover"] > 0
    assert traded > 10
