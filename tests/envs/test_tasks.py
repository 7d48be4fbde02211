"""The diagnostic tasks: deterministic generators, planted rules pinned on hand-checked cases,
no look-ahead in any rule or task env, the no-trade band, and clear errors."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

import marketarena.envs  # noqa: F401  (registers the task ids)
from marketarena.agents.reference import CashAgent, SignalAgent
from marketarena.agents.registry import make_agent
from marketarena.envs import TASKS, PortfolioEnv, get_task, resolve_data, task_env_kwargs
from marketarena.envs import tasks as T
from marketarena.envs.core import ActionSpec
from marketarena.envs.errors import ConfigError
from marketarena.evaluation.runner import run_backtest

PLANTED = [name for name, task in TASKS.items() if task.known_optimum]
GENERATORS = [
    T.momentum_market,
    T.mean_reversion_market,
    T.volatility_regime_market,
    T.lead_lag_market,
    T.noise_market,
]


# ---------------------------------------------------------------------- generators
@pytest.mark.parametrize("generate", GENERATORS)
def test_generators_are_deterministic_per_seed(generate):
    a, b, c = generate(3, n_periods=300), generate(3, n_periods=300), generate(4, n_periods=300)
    np.testing.assert_array_equal(a.close, b.close)
    assert not np.allclose(a.close, c.close)
    assert a.open is None and np.all(a.close > 0)  # close-only: fills at the next close


def test_six_planted_tasks_and_one_real_panel():
    assert len(PLANTED) >= 6
    assert {"Momentum", "MeanReversion", "VolTiming", "LeadLag", "CostAware", "Noise"} <= set(
        PLANTED
    )
    assert not TASKS["SP500"].known_optimum


@pytest.mark.parametrize("name", list(TASKS))
def test_splits_are_fixed_ordered_and_cover_the_data(name):
    task = get_task(name)
    splits = task.splits()
    dates = [splits[k] for k in ("train", "validation", "test")]
    flat = [d for pair in dates for d in pair]
    assert flat == sorted(flat)
    assert splits["validation"][0] == task.split_starts()[0]
    assert splits["test"][0] == task.split_starts()[1]
    assert splits["test"][1] == str(task.market().dates[-1])


def test_momentum_planted_structure_is_there():
    # the drift sign persists: 20-session returns predict the next 20 on average
    data = T.momentum_market(0)
    r = np.diff(np.log(data.close), axis=0)
    past = np.add.reduceat(r, np.arange(0, len(r) - 20, 20))
    corr = np.corrcoef(past[:-1].ravel(), past[1:].ravel())[0, 1]
    noise = np.corrcoef(*np.diff(np.log(T.noise_market(0).close), axis=0)[:-1:2].T[:2])[0, 1]
    assert corr > 0.3
    assert abs(noise) < 0.45  # (the noise assets are only correlated through a common factor)


def test_vol_timing_splits_each_hold_the_turbulent_regime():
    # the regime path is redrawn until each split spends 1/3 +- 0.1 of its rows turbulent;
    # without it seed 0's validation split had one short spell (9%) and could not tell a
    # policy that times volatility from one that holds
    splits = (T.TRAIN_ROWS, T.TRAIN_ROWS + T.VALIDATION_ROWS)
    bounds = [0, *splits, T.N_PERIODS]

    def shares(regime):
        return [regime[a:b].mean() for a, b in itertools.pairwise(bounds)]

    first = T.balanced_regime_chain(np.random.default_rng(0), T.N_PERIODS, (150.0, 75.0))
    regime = T.balanced_regime_chain(np.random.default_rng(0), T.N_PERIODS, (150.0, 75.0), splits)
    assert shares(first)[1] < 0.15  # the unbalanced draw
    assert all(abs(s - 1 / 3) <= 0.1 for s in shares(regime))
    # the task's market is that regime path: turbulent rows move ~6x as much as calm ones
    close = get_task("VolTiming").market().close
    moves = np.abs(np.diff(np.log(close), axis=0)).mean(axis=1)
    assert moves[regime[1:] == 1].mean() > 4 * moves[regime[1:] == 0].mean()
    np.testing.assert_array_equal(
        close, T.volatility_regime_market(0, balanced_splits=splits).close
    )
    with pytest.raises(ConfigError, match="no regime path"):
        T.volatility_regime_market(0, n_periods=400, balanced_splits=(10,), balance_tolerance=0.01)


# -------------------------------------------------------------------- rules pinned
def test_momentum_rule_by_hand():
    # asset 0 rises, asset 1 falls: after 2 returns (lookback 2) hold 1/2 in asset 0 only
    close = np.array([[100, 100], [101, 99], [102, 98], [100.5, 99.5]], dtype=float)
    w = T.momentum_rule(close, lookback=2)
    assert np.isnan(w[:2]).all()
    np.testing.assert_allclose(w[2], [0.5, 0.0])
    # row 3: asset 0's 2-session log return log(100.5/101) < 0, asset 1's log(99.5/99) > 0
    np.testing.assert_allclose(w[3], [0.0, 0.5])


def test_reversion_rule_by_hand():
    # lookback 1: the gap is 0 for all; lookback 2, hold 1: the asset furthest below its mean
    close = np.array([[100, 100, 100], [110, 100, 90], [100, 100, 100]], dtype=float)
    w = T.reversion_rule(close, lookback=2, hold=1)
    assert np.isnan(w[0]).all()
    np.testing.assert_allclose(w[1], [0, 0, 1])  # asset 2 fell below its 2-session mean
    np.testing.assert_allclose(w[2], [1, 0, 0])  # asset 0 is now below its mean


def test_volatility_rule_by_hand():
    calm = np.full((30, 2), 0.0005)
    wild = np.tile([[0.04, -0.04], [-0.04, 0.04]], (10, 1)).reshape(20, 2)
    wild = np.stack([wild[:, 0], wild[:, 0]], axis=1)  # both assets swing together
    close = 100 * np.exp(np.cumsum(np.vstack([calm, wild]), axis=0))
    w = T.volatility_rule(close, lookback=5, threshold=0.25)
    np.testing.assert_allclose(w[20], [0.5, 0.5])  # calm: equal weight
    np.testing.assert_allclose(w[45], [0.0, 0.0])  # 4% daily swings: ~63% a year -> cash


def test_lead_lag_rule_by_hand():
    close = np.array([[100, 50], [101, 50], [102, 51], [100.5, 51], [100, 50]], dtype=float)
    w = T.lead_lag_rule(close, lag_window=2)
    assert np.isnan(w[:2]).all()
    np.testing.assert_allclose(w[2], [0, 1])  # leader up over 2 sessions: hold the follower
    np.testing.assert_allclose(w[3], [0, 0])  # log(100.5/101) < 0: down
    np.testing.assert_allclose(w[4], [0, 0])


# --------------------------------------------------------------------- look-ahead
@pytest.mark.parametrize("name", [n for n in PLANTED if TASKS[n].rule is not None])
def test_rules_use_no_future_prices(name):
    task = get_task(name)
    close = np.asarray(task.market().close)
    before = task.rule(close)
    rng = np.random.default_rng(0)
    for t in (40, 1000, 4000):
        perturbed = close.copy()
        perturbed[t + 1 :] *= np.exp(rng.normal(0, 0.1, perturbed[t + 1 :].shape))
        after = task.rule(perturbed)
        np.testing.assert_array_equal(after[: t + 1], before[: t + 1])
        assert not np.array_equal(after[t + 1 :], before[t + 1 :], equal_nan=True)


@pytest.mark.parametrize("name", PLANTED)
def test_task_env_observations_use_no_future_prices(name):
    features = ("log_return", "log_return_z", "volatility_ratio")
    kwargs = task_env_kwargs(name, "validation", window=8, features=features)
    data = kwargs.pop("data")
    t = data.index_of(kwargs["start"]) + 30
    close = np.array(data.close)
    close[t + 1 :] *= 1.5
    perturbed = type(data)(dates=data.dates, symbols=data.symbols, close=close, name="p")

    def observations(market):
        env = PortfolioEnv(market, **kwargs, episode_length=None, random_start=False)
        obs, info = env.reset(seed=0)
        out = [obs]
        while data.index_of(str(info["date"])) < t:
            obs, *_, info = env.step(np.append(np.ones(data.n_assets), 0.0))
            out.append(obs)
        return np.array(out)

    np.testing.assert_array_equal(observations(data), observations(perturbed))


# ---------------------------------------------------------------------- agents
def test_signal_agent_follows_the_table_and_trades_only_on_changes():
    result = run_backtest(SignalAgent("Momentum"), task_env_kwargs("Momentum", "test"), seed=0)
    table = get_task("Momentum").signal_weights()
    data = get_task("Momentum").market()
    rows = [data.index_of(str(d)) for d in result.dates[:-1]]
    targets = table[rows]
    changes = np.any(targets[1:] != targets[:-1], axis=1)
    traded = result.turnover[1:] > 1e-9
    assert traded.sum() > 10
    assert np.all(traded <= changes)  # never trades without a change of target


def test_reference_and_baseline_specs_name_the_tasks_agents():
    assert make_agent("reference:Momentum").name == "reference:Momentum"
    assert isinstance(make_agent("baseline:SP500"), CashAgent)
    assert isinstance(make_agent("signal:marketarena/LeadLag-v0"), SignalAgent)


def test_reference_beats_baseline_on_every_planted_tasks_test_split():
    from marketarena.evaluation.task_scores import task_anchor_scores

    for name in PLANTED:
        anchors = task_anchor_scores(name)
        assert anchors["reference"]["growth"] > anchors["baseline"]["growth"] + 0.02, name


# ---------------------------------------------------------------------- the band
def test_band_by_hand():
    spec = ActionSpec("softmax", rebalance_band=0.05)
    current = np.array([[0.30, 0.30, 0.30]])
    # asset 0 within the band keeps 0.30; assets 1 and 2 move; 0.36 + 0.40 > 0.70 of room
    target = np.array([[0.33, 0.36, 0.40]])
    out = spec.apply_band(target, current)
    np.testing.assert_allclose(out, [[0.30, 0.36 * 0.70 / 0.76, 0.40 * 0.70 / 0.76]])
    # a move of exactly the band is inside it
    np.testing.assert_allclose(spec.apply_band(np.array([[0.35, 0.3, 0.3]]), current), current)
    np.testing.assert_allclose(spec.apply_band(current + 0.04, current), current)
    assert ActionSpec("softmax").apply_band(target, current) is target


def test_relative_band_by_hand():
    # the 5/25 rule: band = min(0.05, 0.25 * max(target, current))
    spec = ActionSpec("softmax", rebalance_band=0.05, relative_band=0.25)
    current = np.array([[0.0, 0.40, 0.04, 0.20]])
    target = np.array([[0.047, 0.44, 0.05, 0.22]])
    # asset 0: 0.047 > min(0.05, 0.0118) -> buys (an absolute 5% band alone would not)
    # asset 1: 0.04 <= min(0.05, 0.11) -> held; asset 2: 0.01 <= min(0.05, 0.0125) -> held
    # asset 3: 0.02 <= min(0.05, 0.055) -> held
    np.testing.assert_allclose(spec.apply_band(target, current), [[0.047, 0.40, 0.04, 0.20]])
    absolute = ActionSpec("softmax", rebalance_band=0.05)
    np.testing.assert_allclose(absolute.apply_band(target, current), current)
    with pytest.raises(ValueError, match="relative_band"):
        ActionSpec("softmax", relative_band=1.5)


def test_band_makes_small_moves_free_in_the_env():
    kwargs = task_env_kwargs("Noise", "validation", action_mapping="softmax", rebalance_band=0.1)
    env = PortfolioEnv(**kwargs, episode_length=20, random_start=False)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(6))  # softmax of equal scores: 1/6 each
    assert info["turnover"] > 0.8  # from all cash to 5/6 invested
    rng = np.random.default_rng(0)
    for _ in range(5):  # scores that move weights by less than the band: no trade, no cost
        _, _, _, _, info = env.step(rng.normal(0, 0.05, 6))
        assert info["turnover"] == 0.0 and info["costs"] == 0.0


# ------------------------------------------------------------------- bad input
def test_unknown_task_lists_the_tasks():
    for call in (
        lambda: get_task("marketarena/Foo-v0"),
        lambda: resolve_data("marketarena/Foo-v0"),
        lambda: make_agent("reference:Foo"),
    ):
        with pytest.raises(ValueError, match=r"unknown task .*marketarena/Momentum-v0"):
            call()
    with pytest.raises(gym.error.Error):
        gym.make("marketarena/Foo-v0")


def test_a_task_split_too_short_for_the_window_says_so():
    kwargs = task_env_kwargs("Momentum", "train", window=3100)
    with pytest.raises(ValueError, match="observation window"):
        PortfolioEnv(**kwargs)
    with pytest.raises(ValueError, match="split must be one of"):
        task_env_kwargs("Momentum", "holdout")


def test_registered_task_env_is_the_train_split():
    env = gym.make("marketarena/Momentum-v0", episode_length=None, random_start=False)
    _, info = env.reset(seed=0)
    train = get_task("Momentum").splits()["train"]
    assert str(info["date"]) >= train[0]
    assert env.unwrapped.data.dates[env.unwrapped.core.last_decision] < np.datetime64(train[1])
