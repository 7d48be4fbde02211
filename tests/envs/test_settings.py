"""`EnvSettings`: one default per env parameter, keyword overrides, checks, round trips."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import marketarena.envs  # noqa: F401  (registers the ids)
from marketarena.envs.core import ActionSpec, PortfolioCore
from marketarena.envs.features import compute_features
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.envs.settings import (
    OBSERVATION_SETTINGS,
    EnvSettings,
    check_settings,
    file_fields,
    setting_names,
)
from marketarena.envs.simulator import RULE_PRESETS, TradingRules
from marketarena.envs.synthetic import gbm_market
from marketarena.envs.vector_env import PortfolioVectorEnv


@pytest.fixture(scope="module")
def market():
    return gbm_market(n_assets=3, n_periods=300, seed=5)


def test_every_env_takes_its_defaults_from_the_settings(market):
    defaults = EnvSettings()
    assert PortfolioEnv(market).settings == defaults
    assert PortfolioVectorEnv(2, market).settings == defaults
    assert PortfolioCore(market).settings == defaults
    env = PortfolioEnv(market)
    assert (env.window, env.feature_names) == (defaults.window, defaults.features)
    assert (env.episode_length, env.random_start) == (
        defaults.episode_length,
        defaults.random_start,
    )
    assert env.action_mapping == defaults.action_mapping
    # what else restates them reads them from here
    assert ActionSpec() == ActionSpec.from_settings(defaults)
    assert np.array_equal(
        compute_features(market)[0], compute_features(market, defaults.features)[0]
    )


def test_settings_and_keywords_build_the_same_env(market):
    values = {
        "window": 5,
        "features": ("log_return", "volatility_20"),
        "episode_length": 40,
        "action_mapping": "softmax",
        "softmax_scale": 2.0,
    }
    settings = EnvSettings(**values)
    by_settings = PortfolioEnv(market, settings)
    by_keywords = PortfolioEnv(market, **values)
    assert by_settings.settings == by_keywords.settings == settings
    a, _ = by_settings.reset(seed=3)
    b, _ = by_keywords.reset(seed=3)
    np.testing.assert_array_equal(a, b)
    action = np.linspace(-1, 1, 4)
    np.testing.assert_array_equal(by_settings.step(action)[0], by_keywords.step(action)[0])


def test_keywords_override_the_settings(market):
    settings = EnvSettings(window=5, episode_length=40)
    env = PortfolioEnv(market, settings, episode_length=None, random_start=False)
    assert env.settings == settings.replace(episode_length=None, random_start=False)
    assert env.episode_length is None and not env.random_start
    assert settings.episode_length == 40  # frozen: the given settings are unchanged
    venv = PortfolioVectorEnv(2, market, settings, price_dtype=np.float32, copy=False)
    assert venv.settings.price_dtype == "float32" and venv.settings.window == 5
    assert venv.sim._close.dtype == np.float32


def test_registered_ids_take_settings_and_keywords():
    env = gym.make(
        "marketarena/Portfolio-v0",
        settings=EnvSettings(window=4),
        start="2010-01-04",
        episode_length=None,
    )
    s = env.unwrapped.settings
    assert (s.window, s.start, s.episode_length) == (4, "2010-01-04", None)
    venv = gym.make_vec(
        "marketarena/Portfolio-v0", num_envs=2, vectorization_mode="vector_entry_point", window=4
    )
    assert venv.settings.window == 4


def test_unknown_names_list_the_valid_ones(market):
    for call in (
        lambda: EnvSettings().replace(windw=5),
        lambda: EnvSettings.from_dict({"windw": 5}),
        lambda: PortfolioEnv(market, windw=5),
        lambda: PortfolioVectorEnv(2, market, windw=5),
    ):
        with pytest.raises(
            ValueError, match=r"unknown env setting\(s\) \['windw'\]; valid: .*'window'"
        ):
            call()
    with pytest.raises(TypeError, match="settings must be an EnvSettings"):
        PortfolioEnv(market, {"window": 5})


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"window": 0}, "window must be >= 1, got 0"),
        ({"window": "eight"}, "window='eight'"),
        ({"episode_length": 0}, "episode_length must be >= 1 or None, got 0"),
        ({"softmax_scale": 0.0}, "softmax_scale must be > 0"),
        ({"discrete_levels": 1}, "discrete_levels must be >= 2"),
        ({"rebalance_band": 1.0}, "rebalance_band must be < 1"),
        ({"relative_band": -0.1}, "relative_band must be >= 0"),
        ({"action_mapping": "sigmoid"}, r"action_mapping='sigmoid': choose one of \['normalize'"),
        ({"price_dtype": "float16"}, "price_dtype='float16': choose one of"),
        ({"rules": {"comission_bps": 5}}, r"unknown trading rule\(s\) \['comission_bps'\]"),
        ({"rules": "nasdaq"}, "unknown rules preset 'nasdaq'"),
        ({"action_mapping": "signed"}, "needs rules.allow_short=True"),
        ({"reward": "sortino"}, "unknown reward 'sortino'"),
        ({"reward_kwargs": {"scale": 2}}, r"'log_return': unknown argument\(s\) \['scale'\]"),
    ],
)
def test_bad_values_name_the_setting(market, values, match):
    with pytest.raises(ValueError, match=match):
        EnvSettings(**values)
    with pytest.raises(ValueError, match=match):
        PortfolioEnv(market, **values)


def test_values_are_converted_once():
    s = EnvSettings(
        window=np.int64(5),
        features="log_return",
        rules="aitrader",
        reward_kwargs=None,
        price_dtype=np.float32,
        softmax_scale=2,
    )
    assert s.window == 5 and type(s.window) is int
    assert s.features == ("log_return",)
    assert s.rules == RULE_PRESETS["aitrader"]
    assert s.reward_kwargs == {} and s.price_dtype == "float32"
    assert s.softmax_scale == 2.0 and type(s.softmax_scale) is float
    assert EnvSettings(rules={"preset": "aitrader", "lot_size": 100}).rules.lot_size == 100
    assert EnvSettings(rules=None).rules == TradingRules()
    assert check_settings(window=7.0) == {"window": 7}


def test_to_dict_is_json_and_round_trips():
    s = EnvSettings(
        start="2001-01-02",
        window=5,
        features=("log_return", "volatility_20"),
        reward="differential_sharpe",
        reward_kwargs={"eta": 0.05},
        rules={"preset": "aitrader", "allow_short": True},
        episode_length=None,
        action_mapping="signed",
        rebalance_band=0.05,
        price_dtype="float32",
    )
    d = s.to_dict()
    assert list(d) == list(setting_names())
    again = EnvSettings.from_dict(json.loads(json.dumps(d)))
    assert again == s and again.to_dict() == d
    assert d["rules"] == s.rules.to_dict() and d["features"] == ["log_return", "volatility_20"]
    # a subset is the rest's defaults
    assert EnvSettings.from_dict({"window": 5}) == EnvSettings(window=5)
    # dates given as numpy values are written as dates
    assert EnvSettings(start=np.datetime64("2001-01-02")).to_dict()["start"] == "2001-01-02"


def test_a_reward_function_is_written_by_name(market):
    def reward(result):
        return np.zeros(len(result.nav))

    s = EnvSettings(reward=reward)
    assert s.to_dict()["reward"].endswith("reward")
    json.dumps(s.to_dict())
    PortfolioEnv(market, s).reset(seed=0)


def test_file_fields_are_the_settings():
    fields = {f.name: f for f in file_fields()}
    assert tuple(fields) == setting_names()
    assert fields["window"].default == EnvSettings().window and fields["window"].bounds == {"ge": 1}
    # a config file holds a reward by name and the rules as a dict of fields (empty: defaults)
    assert fields["reward"].type is str
    assert fields["rules"].default_factory() == {}
    assert set(OBSERVATION_SETTINGS) <= set(fields)
    assert EnvSettings(window=3).observation() == {"window": 3, "features": ("log_return",)}


def test_reward_scale_multiplies_every_reward(market):
    """``reward_scale`` (added in envs/settings.py and read in envs/core.py only): the same
    actions give the same NAVs and exactly ``scale x`` the rewards, and results carry it."""
    plain = PortfolioVectorEnv(4, market, window=5, episode_length=20)
    scaled = PortfolioVectorEnv(4, market, window=5, episode_length=20, reward_scale=100.0)
    plain.reset(seed=3)
    scaled.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(25):  # past an episode's end: autoreset too
        action = rng.random((4, market.n_assets + 1))
        _, r_plain, *_ = plain.step(action)
        _, r_scaled, *_ = scaled.step(action)
        np.testing.assert_array_equal(r_scaled, r_plain * 100.0)
        np.testing.assert_array_equal(scaled.sim.nav, plain.sim.nav)
    assert scaled.settings.to_dict()["reward_scale"] == 100.0
    assert EnvSettings.from_dict(scaled.settings.to_dict()) == scaled.settings
    with pytest.raises(ValueError, match="reward_scale must be > 0"):
        EnvSettings(reward_scale=0)
