"""PortfolioEnv: API conformance, timing, look-ahead, mapping, episodes, rewards, rendering."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import marketarena.envs  # noqa: F401  (registers the ids)
from marketarena.envs import ENV_IDS, MarketData, PortfolioEnv, TradingRules
from marketarena.envs.errors import ConfigError
from marketarena.envs.synthetic import gbm_market

FREE = {"commission_bps": 0.0, "slippage_bps": 0.0}


@pytest.fixture(scope="module")
def market() -> MarketData:
    return gbm_market(n_assets=4, n_periods=300, seed=3)


def make_env(data: MarketData, **kwargs) -> PortfolioEnv:
    kwargs.setdefault("window", 5)
    kwargs.setdefault("episode_length", 40)
    return PortfolioEnv(data, **kwargs)


# --------------------------------------------------------------------- conformance
# Unbounded feature boxes are deliberate (bounds taken from the data would leak its future),
# and the normalize mapping's Box(0, 1) is the weights simplex users pass directly.
@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value")
@pytest.mark.filterwarnings("ignore:We recommend you to use a symmetric and normalized Box")
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_envs_pass_both_checkers(env_id):
    env = gym.make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)
    env.close()


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value")
@pytest.mark.parametrize("mapping", ["normalize", "softmax"])
def test_checker_with_other_mappings_and_rewards(market, mapping):
    env = make_env(market, action_mapping=mapping, reward="differential_sharpe")
    gym_check_env(env, skip_render_check=True)


def test_same_seed_same_episode(market):
    def rollout(seed: int) -> tuple[np.ndarray, list[float]]:
        env = make_env(market, rules={"commission_bps": 5.0})
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        observations, rewards = [obs], []
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(env.action_space.sample())
            observations.append(obs)
            rewards.append(r)
            done = term or trunc
        return np.array(observations), rewards

    a, b, c = rollout(7), rollout(7), rollout(8)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert a[1] != c[1]


# ----------------------------------------------------------------------- look-ahead
@pytest.mark.parametrize("execution", ["next_open", "next_close"])
def test_no_look_ahead_future_prices_change_nothing_up_to_t(market, execution):
    """Perturb every bar after t: observations and state up to t must not move."""
    features = ("log_return", "high_low_range", "close_to_open", "volatility_20")
    rng = np.random.default_rng(0)
    actions = rng.dirichlet(np.ones(5), size=30)
    start = str(market.dates[60])

    def run(data: MarketData, steps: int):
        env = make_env(data, features=features, rules={"execution": execution, **FREE})
        obs, info = env.reset(seed=0, options={"start": start})
        for a in actions[:steps]:
            obs, _, _, _, info = env.step(a)
        return obs, info, env

    steps = 20
    obs, info, env = run(market, steps)
    t = int(env.sim.t[0])
    future = rng.uniform(0.5, 1.5, size=(market.n_periods - t - 1, market.n_assets))

    def perturb(values: np.ndarray | None) -> np.ndarray | None:
        if values is None:
            return None
        out = values.copy()
        out[t + 1 :] *= future
        return out

    perturbed = MarketData(
        dates=market.dates,
        symbols=market.symbols,
        close=perturb(market.close),
        open=perturb(market.open),
        high=perturb(market.high),
        low=perturb(market.low),
        volume=perturb(market.volume),
    )
    assert not np.allclose(perturbed.close[t + 1 :], market.close[t + 1 :])
    obs2, info2, env2 = run(perturbed, steps)
    np.testing.assert_array_equal(obs, obs2)
    np.testing.assert_array_equal(env.nav_history, env2.nav_history)
    np.testing.assert_array_equal(env.sim.shares, env2.sim.shares)
    assert info["nav"] == info2["nav"] and info["date"] == info2["date"]
    snap, snap2 = env.market_snapshot(lookback=50), env2.market_snapshot(lookback=50)
    for field in ("close", "open", "high", "low", "volume", "positions", "weights"):
        np.testing.assert_array_equal(getattr(snap, field), getattr(snap2, field))
    assert snap.dates == snap2.dates and snap.nav == snap2.nav
    # the next step is where the future enters: the fill and the mark differ
    _, _, _, _, after = env.step(actions[steps])
    _, _, _, _, after2 = env2.step(actions[steps])
    assert after["nav"] != after2["nav"]


# ---------------------------------------------------------------------- observation
def test_observation_layout(market):
    env = make_env(market, window=3, rules=FREE)
    obs, info = env.reset(seed=1)
    t = int(env.sim.t[0])
    n = market.n_assets
    c = market.close
    expected_window = np.log(c[t - 2 : t + 1] / c[t - 3 : t])  # (3, N) rows t-2..t
    np.testing.assert_allclose(obs[: 3 * n].reshape(3, n), expected_window, rtol=1e-6)
    np.testing.assert_array_equal(obs[3 * n : -1], 0.0)
    assert obs[-1] == 1.0
    obs, _, _, _, info = env.step(np.array([0.25, 0.25, 0.0, 0.0, 0.5]))
    np.testing.assert_allclose(obs[3 * n : -1], info["weights"][:-1], rtol=1e-6)
    assert obs[-1] == pytest.approx(info["weights"][-1], rel=1e-6)
    assert info["weights"].sum() == pytest.approx(1.0)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape


# --------------------------------------------------------------------- the mapping
def test_normalize_mapping(market):
    env = make_env(market)
    np.testing.assert_allclose(
        env.action_to_weights(np.array([2.0, -1.0, 1.0, 0.0, 1.0])), [0.5, 0.0, 0.25, 0.0]
    )
    np.testing.assert_array_equal(env.action_to_weights(np.zeros(5)), np.zeros(4))


def test_softmax_mapping(market):
    env = make_env(market, action_mapping="softmax", softmax_scale=2.0)
    a = np.array([0.5, -0.5, 0.0, 1.0, 0.0])
    z = np.exp(2.0 * a)
    np.testing.assert_allclose(env.action_to_weights(a), (z / z.sum())[:4])


def test_signed_mapping_requires_shorting(market):
    with pytest.raises(ValueError, match="allow_short"):
        make_env(market, action_mapping="signed")
    env = make_env(
        market, action_mapping="signed", rules={"allow_short": True, "max_gross_leverage": 2.0}
    )
    w = env.action_to_weights(np.array([-1.0, 1.0, 1.0, 1.0, 0.0]))
    np.testing.assert_allclose(w, [-0.5, 0.5, 0.5, 0.5])
    assert env.action_space.low.min() == -1.0


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.array([np.nan, 0, 0, 0, 1.0]), r"NaN or inf at \['SYN0'\]"),
        (np.array([0, 0, 0, 0, np.inf]), r"\['cash'\]"),
        (np.ones(4), r"shape \(4,\)"),
        (np.ones((1, 5)), r"shape \(1, 5\)"),
    ],
)
def test_bad_actions_raise_clear_errors(market, action, match):
    env = make_env(market)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


# ------------------------------------------------------------------------ episodes
def test_date_range_bounds_the_episode(market):
    start, end = str(market.dates[100]), str(market.dates[150])
    env = PortfolioEnv(
        market,
        start=start,
        end=end,
        window=5,
        episode_length=None,
        random_start=False,
        rules=FREE,
    )
    _, info = env.reset(seed=0)
    assert str(info["date"]) == start
    steps, done = 0, False
    while not done:
        _, _, term, trunc, info = env.step(env.action_space.sample())
        steps += 1
        done = term or trunc
    assert trunc and not term
    assert str(info["date"]) == end
    assert steps == 50
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())


def test_random_starts_stay_inside_the_range(market):
    env = PortfolioEnv(
        market,
        start=str(market.dates[50]),
        end=str(market.dates[120]),
        window=10,
        episode_length=20,
    )
    starts = set()
    for seed in range(40):
        _, info = env.reset(seed=seed)
        i = market.index_of(info["date"])
        assert 50 <= i <= 120 - 20
        starts.add(i)
    assert len(starts) > 10


def test_window_warm_up_uses_earlier_rows(market):
    env = PortfolioEnv(market, window=10, episode_length=None, random_start=False)
    _, info = env.reset()
    assert info["date"] == market.dates[10]  # 10 returns need rows 0..10


def test_fixed_start_option_and_bad_start(market):
    env = make_env(market)
    _, info = env.reset(options={"start": str(market.dates[77])})
    assert info["date"] == market.dates[77]
    with pytest.raises(ValueError, match="outside the eligible start dates"):
        env.reset(options={"start": str(market.dates[-1])})


def test_construction_errors_name_the_problem(market):
    with pytest.raises(ValueError, match="episode_length=1000"):
        make_env(market, episode_length=1000)
    with pytest.raises(ValueError, match=r"unknown trading rule\(s\) \['comission_bps'\]"):
        make_env(market, rules={"comission_bps": 5})
    with pytest.raises(ValueError, match="no decision date"):
        PortfolioEnv(market, start=str(market.dates[0]), end=str(market.dates[3]), window=5)
    with pytest.raises(ValueError, match="unknown reward"):
        make_env(market, reward="sortino")
    with pytest.raises(ValueError, match="unknown data"):
        PortfolioEnv("no_such_dataset")


def test_a_stop_loss_exits_to_cash_and_the_episode_goes_on(make_market):
    close = [[100.0]] * 6 + [[50.0]] * 4
    kwargs = dict(window=1, episode_length=None, random_start=False)
    rules = {**FREE, "execution": "close"}
    # the old rule ended the episode at the drop, still holding: it is now the risk layer's
    with pytest.raises(ConfigError, match=r"rules\.stop_loss is now risk\.stop_loss"):
        PortfolioEnv(make_market(close), rules={**rules, "stop_loss": 0.2}, **kwargs)
    env = PortfolioEnv(
        make_market(close), rules=rules, risk={"stop_loss": 0.2, "stop_cooldown": 10}, **kwargs
    )
    env.reset()
    weights = []
    for _ in range(8):
        _, _, term, trunc, info = env.step(np.array([1.0, 0.0]))
        assert not term
        weights.append(info["weights"][0])
        if trunc:
            break
    # the drop to 50 is marked by the 5th step; the 6th decision sells (at its close here)
    np.testing.assert_allclose(weights[:5], 1.0, atol=1e-9)
    assert len(weights) > 6
    np.testing.assert_allclose(weights[5:], 0.0, atol=1e-12)


# ------------------------------------------------------------------------- rewards
def run_rewards(market, reward, actions, **kwargs):
    env = make_env(market, reward=reward, rules={"commission_bps": 10.0}, **kwargs)
    env.reset(seed=5)
    rewards = []
    for a in actions:
        _, r, _, _, _ = env.step(a)
        rewards.append(r)
    return np.array(rewards), env.nav_history


def test_log_return_reward_sums_to_log_growth_after_costs(market):
    actions = np.random.default_rng(1).dirichlet(np.ones(5), size=25)
    rewards, navs = run_rewards(market, "log_return", actions)
    assert rewards.sum() == pytest.approx(np.log(navs[-1] / navs[0]))
    np.testing.assert_allclose(rewards, np.log(navs[1:] / navs[:-1]))


def test_differential_sharpe_matches_a_plain_loop(market):
    actions = np.random.default_rng(2).dirichlet(np.ones(5), size=25)
    rewards, navs = run_rewards(
        market, "differential_sharpe", actions, reward_kwargs={"eta": 0.1, "warmup": 0}
    )
    a = b = 0.0
    expected = []
    for r in navs[1:] / navs[:-1] - 1.0:
        var = b - a * a
        expected.append((b * (r - a) - 0.5 * a * (r * r - b)) / var**1.5 if var > 1e-12 else 0.0)
        a, b = a + 0.1 * (r - a), b + 0.1 * (r * r - b)
    np.testing.assert_allclose(rewards, expected, rtol=1e-9)
    assert np.count_nonzero(rewards) >= 20


def test_drawdown_penalized_reward(market):
    actions = np.tile([1.0, 0.0, 0.0, 0.0, 0.0], (25, 1))
    rewards, navs = run_rewards(
        market, "drawdown_penalized", actions, reward_kwargs={"penalty": 2.0}
    )
    peak = np.maximum.accumulate(navs)
    expected = np.log(navs[1:] / navs[:-1]) - 2.0 * (1 - navs[1:] / peak[1:])
    np.testing.assert_allclose(rewards, expected)
    assert np.any(peak[1:] > navs[1:])  # the case exercises a drawdown


def test_callable_reward_sees_costs(market):
    env = make_env(market, reward=lambda res: -res.costs, rules={"commission_bps": 10.0})
    env.reset(seed=0)
    _, buy, _, _, info = env.step(np.array([0.5, 0.5, 0, 0, 0]))
    _, hold, _, _, _ = env.step(info["weights"])
    assert buy == pytest.approx(-info["costs"]) and buy < 0
    assert hold == 0.0


# -------------------------------------------------------------- snapshot and render
@pytest.mark.parametrize("price_dtype", ["float64", "float32"])
def test_a_restored_env_continues_bit_for_bit(market, price_dtype):
    """get_state in one env, set_state in a fresh one: the rest of the episode is the same."""
    actions = np.random.default_rng(5).random((30, 5)).astype(np.float32)
    env = make_env(market, price_dtype=price_dtype, rules=TradingRules(min_fee=1.0))
    env.reset(seed=1)
    for a in actions[:10]:
        last_obs, *_ = env.step(a)
    saved = env.get_state()
    other = make_env(market, price_dtype=price_dtype, rules=TradingRules(min_fee=1.0))
    other.reset(seed=2)
    obs, info = other.set_state(saved)
    assert obs.tobytes() == last_obs.tobytes()
    assert info["nav"] == saved["nav"] and info["date"] == env.date_history[-1]
    for a in actions[10:]:
        o1, r1, term1, trunc1, info1 = env.step(a)
        o2, r2, term2, trunc2, info2 = other.step(a)
        assert o1.tobytes() == o2.tobytes() and (r1, term1, trunc1) == (r2, term2, trunc2)
        assert info1["weights"].tobytes() == info2["weights"].tobytes()
        assert (info1["nav"], info1["cash"], info1["costs"]) == (
            info2["nav"],
            info2["cash"],
            info2["costs"],
        )
    np.testing.assert_array_equal(env.nav_history, other.nav_history)


def test_core_step_returns_the_simulators_step_result(market):
    env = make_env(market)
    env.reset(seed=0)
    result, reward, terminated, truncated = env.core.step(np.full((1, 5), 0.2))
    assert result.nav is env.sim.nav and result.costs[0] > 0.0
    assert reward.shape == terminated.shape == truncated.shape == (1,)


def test_market_snapshot_is_point_in_time(market):
    env = make_env(market)
    env.reset(seed=0)
    env.step(np.array([0.5, 0.5, 0, 0, 0]))
    snap = env.market_snapshot(lookback=10)
    t = int(env.sim.t[0])
    assert snap.date == str(market.dates[t]) and snap.dates[-1] == snap.date
    np.testing.assert_array_equal(snap.close, market.close[t - 9 : t + 1])
    np.testing.assert_array_equal(snap.positions, env.sim.shares[0])
    assert snap.nav == pytest.approx(snap.cash + snap.positions @ market.close[t])


def test_render_modes(market):
    env = make_env(market, render_mode="ansi")
    env.reset(seed=0)
    env.step(np.array([1.0, 0, 0, 0, 0]))
    text = env.render()
    assert "NAV" in text and "SYN0 " in text
    env = make_env(market, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0  # something was drawn
    with pytest.raises(ValueError, match="render_mode"):
        make_env(market, render_mode="human")


def test_rgb_render_leaves_the_backend_and_pyplot_alone(market):
    import matplotlib
    import matplotlib.pyplot as plt

    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # what a notebook or a GUI would have chosen
    try:
        open_figures = plt.get_fignums()
        env = make_env(market, render_mode="rgb_array")
        env.reset(seed=0)
        env.step(env.action_space.sample())
        assert env.render().ndim == 3
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == open_figures
    finally:
        matplotlib.use(previous)


def test_rules_object_and_execution_reported(market):
    env = make_env(market, rules=TradingRules(execution="next_close", commission_bps=1.0))
    assert env.rules.execution == "next_close"
    assert env.market_snapshot().rules["commission_bps"] == 1.0


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value")
def test_discrete_mapping(market):
    env = make_env(market, action_mapping="discrete", discrete_levels=3)
    assert env.action_space == gym.spaces.MultiDiscrete([3] * 5)
    np.testing.assert_allclose(env.action_to_weights(np.array([2, 0, 1, 0, 1])), [0.5, 0, 0.25, 0])
    np.testing.assert_array_equal(env.action_to_weights(np.zeros(5, dtype=int)), np.zeros(4))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"in 0\.\.2, got 0\.\.3"):
        env.step(np.array([3, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="whole levels"):
        env.step(np.array([0.5, 0, 0, 0, 1.0]))
    gym_check_env(env, skip_render_check=True)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ([1e308] * 6, [1 / 6] * 5),  # their sum overflows: equal weights, not all cash
        ([1e308, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0]),
        ([1e308, 1e308, 0, 0, 0, 2e307], [5 / 11, 5 / 11, 0, 0, 0]),
        ([0.3, 0.3, 0.2, 0.1, 0.1, 0.0], [0.3, 0.3, 0.2, 0.1, 0.1]),  # unchanged path
    ],
)
def test_huge_finite_actions_are_scaled_before_normalising(action, expected):
    from marketarena.envs.core import ActionSpec

    weights = ActionSpec("normalize").to_weights(np.array([action]))
    np.testing.assert_allclose(weights[0], expected, rtol=1e-12)


@pytest.mark.parametrize(("n_periods", "window"), [(10, 32), (10, 10)])
def test_a_window_as_long_as_the_data_is_a_clear_error(n_periods: int, window: int) -> None:
    from marketarena.envs.errors import DataError

    short = gbm_market(3, n_periods, seed=0)
    with pytest.raises(DataError, match=rf"window={window} needs more than {window} rows"):
        PortfolioEnv(short, window=window)
    PortfolioEnv(short, window=n_periods - 2, episode_length=None)  # one decision left
