"""PortfolioVectorEnv: parity with PortfolioEnv, autoreset, registration, the SB3 adapter."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import marketarena.envs  # noqa: F401  (registers the ids)
from marketarena.envs import MarketData, PortfolioEnv, PortfolioVectorEnv
from marketarena.envs.synthetic import regime_switching_market

# Parity is exact: the single env is a batch of one of the same code.
RTOL = 0.0  # exact: every row sum is one BLAS dot per row, whatever the batch size

SETTINGS = {
    "plain": {},
    "costs+lots+stop": {
        "rules": {
            "commission_bps": 10.0,
            "slippage_bps": 5.0,
            "min_fee": 1.0,
            "lot_size": 1,
        },
        "risk": {"stop_loss": 0.08, "stop_cooldown": 3, "max_weight": 0.3},
        "reward": "differential_sharpe",
    },
    "short+softmax-free": {
        "rules": {"allow_short": True, "max_gross_leverage": 1.5, "borrow_rate": 0.05},
        "action_mapping": "signed",
        "reward": "drawdown_penalized",
    },
    "features": {"features": ("log_return", "volatility_20", "close_to_open")},
    "discrete": {"action_mapping": "discrete", "discrete_levels": 4},
}


@pytest.fixture(scope="module")
def market() -> MarketData:
    return regime_switching_market(n_assets=6, n_periods=400, seed=4)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_env_matches_a_single_env_step_for_step(market, name):
    kwargs = {"window": 8, "episode_length": 30, **SETTINGS[name]}
    n_envs, seed, steps = 4, 21, 100
    venv = PortfolioVectorEnv(n_envs, market, **kwargs)
    singles = [PortfolioEnv(market, **kwargs) for _ in range(n_envs)]
    space = venv.single_action_space
    rng = np.random.default_rng(0)
    if isinstance(space, gym.spaces.MultiDiscrete):
        actions = rng.integers(0, space.nvec[0], size=(steps, n_envs, 7))
    else:
        actions = rng.uniform(space.low[0], 1.0, size=(steps, n_envs, 7))

    obs, _ = venv.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs, np.stack(single_obs))
    ends = 0
    for k in range(steps):
        obs, reward, term, trunc, info = venv.step(actions[k])
        for i, env in enumerate(singles):
            o, r, te, tr, inf = env.step(actions[k, i])
            assert (te, tr) == (term[i], trunc[i]), (k, i)
            np.testing.assert_allclose(reward[i], r, rtol=RTOL, atol=1e-15)
            np.testing.assert_allclose(info["nav"][i], inf["nav"], rtol=RTOL)
            if te or tr:
                ends += 1
                np.testing.assert_allclose(info["final_obs"][i], o, rtol=1e-6)
                o, _ = env.reset()
            np.testing.assert_allclose(obs[i], o, rtol=1e-6, atol=1e-7)
    assert ends >= n_envs * 3  # several episodes per env, so the autoreset path ran


def test_float32_prices_stay_close_to_float64(market):
    kwargs = {"window": 8, "episode_length": None, "random_start": False}
    exact = PortfolioVectorEnv(3, market, **kwargs)
    single = PortfolioVectorEnv(3, market, price_dtype=np.float32, **kwargs)
    exact.reset(seed=0)
    single.reset(seed=0)
    actions = np.random.default_rng(1).uniform(0, 1, size=(300, 3, 7)).astype(np.float32)
    for a in actions:
        _, _, _, trunc, info64 = exact.step(a)
        _, _, _, _, info32 = single.step(a)
        if trunc.any():
            break
    np.testing.assert_allclose(info32["nav"], info64["nav"], rtol=1e-5)
    assert not np.array_equal(info32["nav"], info64["nav"])  # float32 really was used


def test_make_vec_uses_the_vector_entry_point():
    venv = gym.make_vec(
        "marketarena/Portfolio-v0", num_envs=3, vectorization_mode="vector_entry_point"
    )
    assert isinstance(venv.unwrapped, PortfolioVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, 32 * 20 + 21) and obs.dtype == np.float32
    obs, reward, term, _, info = venv.step(venv.action_space.sample())
    assert reward.shape == (3,) and term.dtype == bool and info["nav"].shape == (3,)


def test_copy_semantics(market):
    venv = PortfolioVectorEnv(2, market, window=8, copy=False)
    first, _ = venv.reset(seed=0)
    kept = first.copy()
    second = venv.step(np.full((2, 7), 0.5))[0]
    third = venv.step(np.full((2, 7), 0.5))[0]
    assert second is not first and third is first  # two buffers, used in turn
    assert not np.array_equal(third, kept)
    copying = PortfolioVectorEnv(2, market, window=8)
    a, _ = copying.reset(seed=0)
    b = copying.step(np.full((2, 7), 0.5))[0]
    c = copying.step(np.full((2, 7), 0.5))[0]
    assert a is not c and not np.shares_memory(a, c) and not np.shares_memory(b, c)


def test_step_results_are_not_overwritten_by_later_steps_or_resets(market):
    venv = PortfolioVectorEnv(2, market, window=8, episode_length=5)
    venv.reset(seed=0)
    infos = [venv.step(np.full((2, 7), 0.5))[4] for _ in range(6)]
    navs = [i["nav"].copy() for i in infos]
    for info, nav in zip(infos, navs, strict=True):
        np.testing.assert_array_equal(info["nav"], nav)
    assert infos[4]["_final_obs"].all()  # both envs ended at step 5
    assert infos[4]["nav"][0] != 10_000.0  # the finished episode's NAV, not the reset one


def test_bad_actions_name_the_env(market):
    venv = PortfolioVectorEnv(3, market, window=8)
    venv.reset(seed=0)
    actions = np.full((3, 7), 0.5)
    actions[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"env 2 SYN1"):
        venv.step(actions)
    with pytest.raises(ValueError, match=r"shape \(2, 7\)"):
        venv.step(np.full((2, 7), 0.5))


def test_seeds_per_env_and_fixed_start(market):
    venv = PortfolioVectorEnv(3, market, window=8, episode_length=20)
    venv.reset(seed=[5, 6, 7])
    starts_list = venv.sim.t.copy()
    venv.reset(seed=5)
    np.testing.assert_array_equal(venv.sim.t, starts_list)
    venv.reset(options={"start": str(market.dates[100])})
    assert (venv.sim.t == 100).all()


def test_sb3_ppo_trains_on_the_adapter(market):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env  # noqa: F401
    from stable_baselines3.common.vec_env import VecMonitor

    from marketarena.envs.sb3_vec_env import SB3PortfolioVecEnv

    venv = VecMonitor(
        SB3PortfolioVecEnv(PortfolioVectorEnv(8, market, window=8, episode_length=16))
    )
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=32,
        batch_size=64,
        n_epochs=1,
        seed=0,
        policy_kwargs={"net_arch": [16]},
        device="cpu",
    )
    model.learn(total_timesteps=8 * 32 * 2)
    assert model.num_timesteps == 512
    assert len(model.ep_info_buffer) >= 8 * 2  # episodes ended and were counted


def test_sb3_adapter_infos_follow_sb3_conventions(market):
    from marketarena.envs.sb3_vec_env import SB3PortfolioVecEnv

    inner = PortfolioVectorEnv(3, market, window=8, episode_length=4)
    venv = SB3PortfolioVecEnv(inner)
    venv.seed(3)
    obs = venv.reset()
    assert obs.shape == (3, 8 * 6 + 7)
    for _ in range(4):
        final_t = inner.sim.t + 1
        obs, rewards, dones, infos = venv.step(np.full((3, 7), 1.0))
    assert dones.all() and len(infos) == 3
    core = inner.core
    for i in range(3):
        assert infos[i]["TimeLimit.truncated"] is True
        terminal = infos[i]["terminal_observation"]
        # the window of the last date of the finished episode, not of the new one
        np.testing.assert_array_equal(
            terminal[: core.window_size], core.windows[final_t[i] - core.window + 1]
        )
        assert not np.array_equal(terminal, obs[i])
    assert rewards.dtype == np.float32
