"""AssetwisePolicy: one network for every asset, so permuting the assets permutes the
scores, leaves the value alone, and the same parameters serve any universe size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from marketarena.agents.policies import AssetwisePolicy
from marketarena.agents.sb3_agent import SB3Agent
from marketarena.envs import PortfolioVectorEnv
from marketarena.envs.sb3_vec_env import SB3PortfolioVecEnv
from marketarena.envs.synthetic import gbm_market

WINDOW, FEATURES = 6, ("log_return", "volatility_20")


def make_model(n_assets: int, seed: int = 0) -> PPO:
    data = gbm_market(n_assets=n_assets, n_periods=200, seed=1)
    venv = PortfolioVectorEnv(
        4, data, window=WINDOW, features=FEATURES, action_mapping="softmax", episode_length=30
    )
    return PPO(
        AssetwisePolicy,
        SB3PortfolioVecEnv(venv),
        n_steps=16,
        batch_size=32,
        seed=seed,
        policy_kwargs={"n_features": len(FEATURES), "net_arch": [16, 16]},
        device="cpu",
    )


def permute(obs: torch.Tensor, perm: list[int], n: int) -> torch.Tensor:
    """The same observation with the assets reordered by ``perm``."""
    f, w = len(FEATURES), WINDOW
    out = obs.clone()
    out[:, : w * n * f] = obs[:, : w * n * f].reshape(-1, w, n, f)[:, :, perm].reshape(len(obs), -1)
    out[:, w * n * f : w * n * f + n] = obs[:, w * n * f : w * n * f + n][:, perm]
    return out


@pytest.fixture(scope="module")
def trained() -> PPO:
    model = make_model(5)
    model.learn(256)  # away from the initial near-zero scores
    return model


def test_scores_are_permutation_equivariant_and_the_value_invariant(trained):
    policy = trained.policy
    obs = torch.randn(7, policy.observation_space.shape[0])
    perm = [3, 0, 4, 1, 2]
    with torch.no_grad():
        mean, value = policy.mlp_extractor.forward_actor(obs), policy.predict_values(obs)
        mean_p, value_p = (
            policy.mlp_extractor.forward_actor(permute(obs, perm, 5)),
            policy.predict_values(permute(obs, perm, 5)),
        )
    assert mean.abs().max() > 1e-3  # not trivially constant
    torch.testing.assert_close(mean_p[:, :5], mean[:, perm])
    torch.testing.assert_close(mean_p[:, 5], mean[:, 5])  # cash
    torch.testing.assert_close(value_p, value)
    # an ordinary MLP policy is not equivariant: the test can tell the difference
    mlp = PPO("MlpPolicy", trained.env, device="cpu", seed=0)
    with torch.no_grad():
        a = mlp.policy.get_distribution(obs).distribution.mean
        b = mlp.policy.get_distribution(permute(obs, perm, 5)).distribution.mean
    assert not torch.allclose(b[:, :5], a[:, perm], atol=1e-4)


def test_exploration_noise_is_shared_by_the_assets(trained):
    dist = trained.policy.get_distribution(
        torch.zeros(1, trained.policy.observation_space.shape[0])
    )
    std = dist.distribution.stddev[0]
    assert torch.allclose(std[:5], std[0].expand(5))
    assert trained.policy.log_std.shape == (2,)


def test_one_set_of_parameters_serves_any_universe_size():
    small, large = make_model(3), make_model(9)
    count = [sum(p.numel() for p in m.policy.parameters()) for m in (small, large)]
    assert count[0] == count[1]
    large.policy.load_state_dict(small.policy.state_dict())  # same shapes throughout


def test_a_saved_assetwise_model_loads_and_acts_through_sb3agent(tmp_path, trained):
    trained.save(tmp_path / "model.zip")
    agent = SB3Agent.from_file(tmp_path / "model.zip", "ppo")
    obs = np.zeros(trained.policy.observation_space.shape, dtype=np.float32)
    action = agent.act(obs, {"weights": np.append(np.zeros(5), 1.0)})
    assert action.shape == (6,) and np.isfinite(action).all()


def test_a_bad_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="does not split into"):
        from marketarena.agents.policies import AssetwiseExtractor

        AssetwiseExtractor(
            obs_dim=50, n_assets=5, n_features=2, hidden=[8], activation=torch.nn.Tanh
        )


def test_a_model_trained_with_a_band_holds_inside_it(trained):
    from marketarena.envs.core import ActionSpec

    agent = SB3Agent(trained, "ppo", action_spec=ActionSpec("softmax", rebalance_band=0.9))
    obs = np.zeros(trained.policy.observation_space.shape, dtype=np.float32)
    held = np.array([0.1, 0.2, 0.1, 0.2, 0.1, 0.3])
    np.testing.assert_array_equal(agent.act(obs, {"weights": held}), held)  # nothing moves 0.9
    obs[-6:] = held  # without info (an MLflow pyfunc call), the observation's tail is read
    np.testing.assert_allclose(agent.act(obs, {}), held, rtol=1e-6)  # float32 observation
    no_band = SB3Agent(trained, "ppo", action_spec=ActionSpec("softmax"))
    assert not np.array_equal(no_band.act(obs, {"weights": held}), held)
