"""The arena: PettingZoo's API and seed tests, equality with PortfolioEnv, the impact model on
hand-computed cases, conservation, no look-ahead, determinism and bad input."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import yaml
from pettingzoo.test import parallel_api_test, parallel_seed_test

from marketarena.envs import PortfolioEnv, PortfolioVectorEnv
from marketarena.envs.arena import ArenaEnv, ImpactModel, ImpactSettings, ImpactSimulator
from marketarena.envs.core import PortfolioCore
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.settings import EnvSettings
from marketarena.envs.simulator import Simulator, TradingRules
from marketarena.envs.synthetic import gbm_market

SMALL = {"window": 5, "episode_length": 30}
NOISY = {"eta": 0.5, "gamma": 0.2, "noise_scale": 0.1}
STRONG = {"eta": 1.0, "gamma": 0.5, "noise_scale": 0.2}


@pytest.fixture(scope="module")
def market() -> MarketData:
    return gbm_market(3, 120, seed=7)


def _actions(env: ArenaEnv, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = env.core.n_assets + 1
    return {a: rng.random(n).astype(np.float32) for a in env.agents}


def _hand_market() -> MarketData:
    """Two assets over 6 days; A's closes move by hand-picked returns, B is flat."""
    close_a = [100.0, 110.0, 99.0, 104.0, 100.0, 102.0]
    close_b = [50.0] * 6
    close = np.array([close_a, close_b]).T
    opens = close * 1.01
    volume = np.array([[1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0], [500.0] * 6]).T
    return MarketData(
        dates=np.datetime64("2024-01-01") + np.arange(6),
        symbols=("A", "B"),
        close=close,
        open=opens,
        high=np.maximum(close, opens),
        low=np.minimum(close, opens),
        volume=volume,
    )


_FREE = TradingRules(commission_bps=0, slippage_bps=0)


# ----------------------------------------------------------------- PettingZoo
def test_pettingzoo_api_and_seed(market):
    env = ArenaEnv(3, market, impact=NOISY, **SMALL)
    parallel_api_test(env, num_cycles=40)
    parallel_seed_test(
        lambda: ArenaEnv(
            3,
            market,
            impact=NOISY,
            observe_flow=True,
            **SMALL,
        )
    )


# ---------------------------------------------------- equals PortfolioEnv
@pytest.mark.parametrize("execution", ["next_open", "next_close"])
def test_one_agent_without_impact_is_portfolio_env(market, execution):
    rules = TradingRules(commission_bps=10, slippage_bps=5, execution=execution)
    arena = ArenaEnv(1, market, rules=rules, **SMALL)
    single = PortfolioEnv(market, rules=rules, **SMALL)
    obs_a, info_a = arena.reset(seed=11)
    obs_s, info_s = single.reset(seed=11)
    d = single.observation_space.shape[0]
    rng = np.random.default_rng(0)
    for _ in range(40):
        np.testing.assert_array_equal(obs_a["agent_0"][:d], obs_s)
        np.testing.assert_array_equal(obs_a["agent_0"][d:], np.ones(3, dtype=np.float32))
        assert info_a["agent_0"]["nav"] == info_s["nav"]
        assert info_a["agent_0"]["cash"] == info_s["cash"]
        assert info_a["agent_0"]["date"] == info_s["date"]
        np.testing.assert_array_equal(info_a["agent_0"]["prices"], info_s["prices"])
        np.testing.assert_array_equal(info_a["agent_0"]["weights"], info_s["weights"])
        if not arena.agents:
            break
        action = rng.random(4).astype(np.float32)
        obs_a, rew_a, term_a, trunc_a, info_a = arena.step({"agent_0": action})
        obs_s, rew_s, term_s, trunc_s, info_s = single.step(action)
        assert rew_a["agent_0"] == rew_s
        assert (term_a["agent_0"], trunc_a["agent_0"]) == (term_s, trunc_s)
        assert info_a["agent_0"]["costs"] == info_s["costs"]
        assert info_a["agent_0"]["turnover"] == info_s["turnover"]
        assert info_a["agent_0"]["impact_cost"] == 0.0
    else:
        pytest.fail("the episode did not end")
    assert not arena.agents and trunc_s


# -------------------------------------------------------- the impact model
def test_trailing_volatility_and_volume_by_hand():
    data = _hand_market()
    model = ImpactModel(data, ImpactSettings(eta=1.0, gamma=1.0, window=3))
    close = [100.0, 110.0, 99.0, 104.0, 100.0, 102.0]
    r = [math.log(close[i] / close[i - 1]) for i in range(1, 6)]

    def std(xs):
        m = sum(xs) / len(xs)
        return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))

    # t = 0: no return yet; t = 1: one return (std 0); t = 3: returns 1..3; t = 5: 3..5
    expected = [0.0, 0.0, std(r[0:2]), std(r[0:3]), std(r[1:4]), std(r[2:5])]
    np.testing.assert_allclose(model.sigma[:, 0], expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(model.sigma[:, 1], 0.0)
    np.testing.assert_allclose(model.volume[:, 0], [1000, 1500, 2000, 3000, 4000, 5000], rtol=1e-15)


def test_one_buyer_moves_fill_and_later_prices_by_hand():
    data = _hand_market()
    eta, beta, gamma = 0.8, 0.5, 0.3
    env = ArenaEnv(
        2, data, rules=_FREE, window=1, episode_length=2, random_start=False,
        impact={"eta": eta, "beta": beta, "gamma": gamma, "window": 3},
    )  # fmt: skip
    obs, _ = env.reset(options={"start": "2024-01-04"})  # t = 3
    close_a = 104.0
    sigma = np.std(np.log([110.0 / 100.0, 99.0 / 110.0, 104.0 / 99.0]))  # bars 1..3, ddof 0
    volume = (2000.0 + 3000.0 + 4000.0) / 3
    # agent 0 puts everything into A, agent 1 stays in cash
    q = 10_000.0 / close_a  # shares, sized at the close of t
    obs, rewards, _, _, info = env.step(
        {"agent_0": np.array([1.0, 0.0, 0.0]), "agent_1": np.array([0.0, 0.0, 1.0])}
    )
    ref = 101.0  # the open of t + 1 = 4 (1% over its close of 100)
    fill = ref * math.exp(eta * sigma * (q / volume) ** beta)
    factor = math.exp(gamma * sigma * q / volume)
    bought = q  # the fill (about 103) is below the close of t: the cash pays the whole order
    assert fill > ref and factor > 1 and bought * fill < 10_000.0
    np.testing.assert_allclose(env.sim.last_fill[0], [fill, data.open[4, 1]], rtol=1e-13)
    np.testing.assert_allclose(env.sim.shares[0], [bought, 0.0], rtol=1e-12)
    mark = 100.0 * factor
    assert info["agent_0"]["nav"] == pytest.approx(bought * mark + 10_000.0 - bought * fill)
    assert info["agent_0"]["impact_cost"] == pytest.approx(bought * (fill - ref), rel=1e-12)
    np.testing.assert_allclose(info["agent_0"]["prices"], [mark, 50.0], rtol=1e-13)
    assert info["agent_1"]["nav"] == 10_000.0 and rewards["agent_1"] == 0.0
    assert rewards["agent_0"] == pytest.approx(math.log(info["agent_0"]["nav"] / 10_000.0))
    d = env.core.obs_dim
    np.testing.assert_allclose(obs["agent_1"][d:], [factor, 1.0], rtol=1e-6)  # public prices


def test_permanent_impact_persists_without_flow():
    """A buy moves A's later prices for good; a step without flow moves them no further."""
    data = _hand_market()
    env = ArenaEnv(
        2, data, rules=_FREE, window=1, episode_length=3, random_start=False,
        impact={"eta": 2.0, "gamma": 2.0, "window": 3},
    )  # fmt: skip
    env.reset(options={"start": "2024-01-03"})
    cash = np.array([0.0, 0.0, 1.0])
    env.step({"agent_0": np.array([1.0, 0.0, 0.0]), "agent_1": cash})
    factor = env.sim.factor.copy()
    assert factor[0] > 1.0 and factor[1] == 1.0
    _, _, _, _, info = env.step({"agent_0": env.sim.weight[0], "agent_1": cash})  # both hold
    np.testing.assert_array_equal(env.sim.last_flow, [0.0, 0.0])
    np.testing.assert_array_equal(env.sim.factor, factor)
    np.testing.assert_array_equal(env.sim.last_fill[0], data.open[4] * factor)
    np.testing.assert_array_equal(info["agent_1"]["prices"], data.close[4] * factor)
    assert info["agent_0"]["impact_cost"] == 0.0


# ----------------------------------------------------------- conservation
def test_accounting_holds_for_every_agent_every_step(market):
    rules = TradingRules(commission_bps=10, slippage_bps=5)
    env = ArenaEnv(
        4, market, rules=rules, impact=STRONG, observe_flow=True, **SMALL,
    )  # fmt: skip
    env.reset(seed=3)
    sim = env.sim
    rng = np.random.default_rng(1)
    steps = 0
    while env.agents:
        t = int(sim.t[0])
        shares0, cash0, nav0 = sim.shares.copy(), sim.cash.copy(), sim.nav.copy()
        mark0, factor0 = sim.mark.copy(), sim.factor.copy()
        _, _, _, _, info = env.step(_actions(env, rng))
        steps += 1
        traded = sim.shares - shares0
        fill, mark = sim.last_fill, sim.mark
        ref = market.open[t + 1] * factor0
        np.testing.assert_allclose(
            mark, np.broadcast_to(market.close[t + 1] * sim.factor, mark.shape), rtol=1e-14
        )
        for i, a in enumerate(env.possible_agents):
            costs = info[a]["costs"]
            # cash: pays the fills at the impacted price plus costs
            assert sim.cash[i] == pytest.approx(cash0[i] - traded[i] @ fill[i] - costs, abs=1e-7)
            assert sim.cash[i] >= 0.0
            # NAV identity and its change: PnL on the book, on the fills, less costs
            assert info[a]["nav"] == pytest.approx(sim.cash[i] + sim.shares[i] @ mark[i], rel=1e-13)
            pnl = shares0[i] @ (mark[i] - mark0[i]) + traded[i] @ (mark[i] - fill[i])
            assert info[a]["nav"] == pytest.approx(nav0[i] + pnl - costs, abs=1e-7)
            # impact cost: what the fills paid over the pre-trade public price
            assert info[a]["impact_cost"] == pytest.approx(traded[i] @ (fill[i] - ref), abs=1e-7)
        # all agents share one market: one flow, one fill price per asset
        np.testing.assert_array_equal(fill, np.broadcast_to(fill[0], fill.shape))
    assert steps == 30


def test_one_ruined_agent_ends_the_episode_for_all(market):
    """Ruin terminates that agent; the others are truncated, and no agent is left."""
    rules = TradingRules(commission_bps=100, slippage_bps=0, ruin_fraction=0.995)
    env = ArenaEnv(2, market, rules=rules, **SMALL)
    env.reset(seed=1)
    _, _, term, trunc, info = env.step(
        {"agent_0": np.array([1.0, 1.0, 1.0, 0.0]), "agent_1": np.array([0.0, 0.0, 0.0, 1.0])}
    )
    assert info["agent_0"]["nav"] < 0.995 * 10_000.0
    assert term == {"agent_0": True, "agent_1": False}
    assert trunc == {"agent_0": False, "agent_1": True}
    assert env.agents == []
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({})


# ---------------------------------------------------------- no look-ahead
def test_no_look_ahead(market):
    t_cut = 40
    future = dataclasses.replace(
        market,
        close=np.where(np.arange(120)[:, None] > t_cut, market.close * 1.7, market.close),
        open=np.where(np.arange(120)[:, None] > t_cut, market.open * 0.6, market.open),
        high=np.where(np.arange(120)[:, None] > t_cut, market.high * 1.7, market.high),
        low=np.where(np.arange(120)[:, None] > t_cut, market.low * 0.6, market.low),
        volume=np.where(np.arange(120)[:, None] > t_cut, market.volume * 9, market.volume),
    )
    kwargs = dict(
        impact=STRONG, observe_flow=True,
        random_start=False, window=5, episode_length=60,
    )  # fmt: skip
    runs = []
    for data in (market, future):
        env = ArenaEnv(3, data, **kwargs)
        obs, _ = env.reset(seed=5)
        rng = np.random.default_rng(2)
        seen = [obs]
        while int(env.sim.t[0]) < t_cut:
            obs, *_ = env.step(_actions(env, rng))
            seen.append(obs)
        assert int(env.sim.t[0]) == t_cut
        runs.append(seen)
    for a_obs, b_obs in zip(*runs, strict=True):
        for agent in a_obs:
            np.testing.assert_array_equal(a_obs[agent], b_obs[agent])


# ------------------------------------------------------------ determinism
def _run(market, seed, reward_mode="absolute"):
    env = ArenaEnv(
        3, market, impact={**STRONG, "noise_scale": 0.3}, observe_flow=True,
        reward_mode=reward_mode, **SMALL,
    )  # fmt: skip
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(9)
    out = [np.concatenate(list(obs.values()))]
    rewards = []
    while env.agents:
        obs, rew, *_ = env.step(_actions(env, rng))
        out.append(np.concatenate(list(obs.values())))
        rewards.append(np.array(list(rew.values())))
    return np.array(out), np.array(rewards)


def test_deterministic_per_seed(market):
    obs1, rew1 = _run(market, 4)
    obs2, rew2 = _run(market, 4)
    np.testing.assert_array_equal(obs1, obs2)
    np.testing.assert_array_equal(rew1, rew2)
    obs3, _ = _run(market, 5)
    assert obs3.shape != obs1.shape or not np.array_equal(obs1, obs3)


def test_relative_and_rank_rewards(market):
    _, absolute = _run(market, 4)
    _, relative = _run(market, 4, "relative")
    _, rank = _run(market, 4, "rank")
    for r, rel, rk in zip(absolute, relative, rank, strict=True):
        for i in range(3):
            others = [r[j] for j in range(3) if j != i]
            assert rel[i] == pytest.approx(r[i] - sum(others) / 2, abs=1e-15)
            beat = sum(r[i] > o for o in others) - sum(r[i] < o for o in others)
            assert rk[i] == beat / 2
    assert np.abs(relative.sum(axis=1)).max() < 1e-12  # zero-sum across agents
    assert set(np.unique(rank)) <= {-1.0, -0.5, 0.0, 0.5, 1.0}


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_agents": 0}, "n_agents must be an integer >= 1"),
        ({"impact": {"eta": -0.1}}, r"impact\.eta must be a finite number >= 0"),
        ({"impact": {"gamma": -1.0}}, r"impact\.gamma must be a finite number >= 0"),
        ({"impact": {"beta": 0.0}}, r"impact\.beta must be a finite number > 0"),
        ({"impact": {"window": 1}}, r"impact\.window must be >= 2"),
        ({"impact": {"window": 2.5}}, r"impact\.window=2\.5: takes a whole number"),
        ({"impact": {"eta": "big"}}, r"impact\.eta='big': takes a number"),
        ({"impact": {"noise_scale": -1.0}}, r"impact\.noise_scale must be a finite number >= 0"),
        ({"impact": {"etta": 0.1}}, r"unknown impact setting\(s\) \['etta'\]; valid: \['eta'"),
        ({"impact": 0.1}, "impact=0.1: takes a mapping"),
        ({"reward_mode": "sharpe"}, "reward_mode='sharpe': choose one of"),
        ({"n_agents": 1, "reward_mode": "relative"}, "needs n_agents >= 2, got 1"),
        ({"n_agents": 1, "reward_mode": "rank"}, "needs n_agents >= 2, got 1"),
    ],
)
def test_bad_config_is_rejected(market, kwargs, match):
    kwargs = {"n_agents": 2, **kwargs}
    with pytest.raises(ConfigError, match=match):
        ArenaEnv(data=market, **SMALL, **kwargs)


def test_impact_without_volume_is_rejected(market):
    no_volume = dataclasses.replace(market, volume=None)
    ArenaEnv(2, no_volume, **SMALL)  # no impact: volume not needed
    with pytest.raises(ConfigError, match="has no volume"):
        ArenaEnv(2, no_volume, impact={"eta": 0.1}, **SMALL)


def test_bad_actions_are_rejected(market):
    env = ArenaEnv(2, market, **SMALL)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({})
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"missing \['agent_1'\]"):
        env.step({"agent_0": np.ones(4)})
    with pytest.raises(ValueError, match=r"unknown or finished \['agent_9'\]"):
        env.step({"agent_0": np.ones(4), "agent_1": np.ones(4), "agent_9": np.ones(4)})
    with pytest.raises(ValueError, match="agent_1's action has shape"):
        env.step({"agent_0": np.ones(4), "agent_1": np.ones(3)})
    with pytest.raises(ValueError, match="agent_0's action has shape \\(1, 4\\)"):
        env.step({"agent_0": np.ones((1, 4)), "agent_1": np.ones((1, 4))})
    with pytest.raises(TypeError, match="actions must be a dict of agent name to action, got list"):
        env.step([np.ones(4), np.ones(4)])
    with pytest.raises(ValueError, match="agent_0's action is not an array of numbers"):
        env.step({"agent_0": ["a"] * 4, "agent_1": [None] * 4})
    env.step({"agent_0": [0.0, 0.0, 0.0, 1.0], "agent_1": (1, 0, 0, 0)})  # any array-like


# ------------------------------------------------------------ impact settings
def test_impact_settings_nest_in_env_settings_and_configs(tmp_path):
    from marketarena.training.config import load_config

    settings = EnvSettings(impact={"eta": 0.3, "noise_scale": 0.1})
    assert settings.impact == ImpactSettings(eta=0.3, noise_scale=0.1)
    assert settings.to_dict()["impact"] == {
        "eta": 0.3, "beta": 0.5, "gamma": 0.0, "window": 20, "noise_scale": 0.1,
    }  # fmt: skip
    assert EnvSettings.from_dict(settings.to_dict()) == settings
    assert EnvSettings().impact == ImpactSettings() and ImpactSettings().inert
    path = tmp_path / "arena.yaml"
    path.write_text(yaml.safe_dump({"env": {"impact": {"eta": 0.2, "window": 5}}}))
    loaded = load_config(path, ["env.impact.gamma=0.1"]).env.to_settings()
    assert loaded.impact == ImpactSettings(eta=0.2, gamma=0.1, window=5)
    path.write_text(yaml.safe_dump({"env": {"impact": {"gama": 0.1}}}))
    with pytest.raises(ConfigError, match=r"unknown impact setting\(s\) \['gama'\]"):
        load_config(path)


def test_arena_takes_impact_from_settings_or_overrides(market):
    settings = EnvSettings(window=5, episode_length=30, impact=STRONG)
    from_settings = ArenaEnv(2, market, settings)
    from_overrides = ArenaEnv(2, market, window=5, episode_length=30, impact=STRONG)
    for env in (from_settings, from_overrides):
        assert env.settings.impact == ImpactSettings(**STRONG)
        assert (env.impact.eta, env.impact.gamma, env.sim.noise_scale) == (1.0, 0.5, 0.2)
    # overrides on top of settings replace the impact whole, as for risk
    env = ArenaEnv(2, market, settings, impact={"gamma": 0.1})
    assert env.settings.impact == ImpactSettings(gamma=0.1)


@pytest.mark.parametrize("impact", [{"eta": 0.1}, {"gamma": 0.1}, {"noise_scale": 0.1}])
def test_single_and_vector_envs_refuse_impact(market, impact):
    """One PortfolioEnv has no other agents: impact there is an error pointing to the arena
    with one agent, not a setting silently ignored."""
    with pytest.raises(ConfigError, match=r"ArenaEnv\(n_agents=1, impact=\.\.\.\)"):
        PortfolioEnv(market, impact=impact, **SMALL)
    with pytest.raises(ConfigError, match="does not model price impact"):
        PortfolioVectorEnv(2, market, impact=impact, **SMALL)
    PortfolioEnv(market, impact={"window": 5, "beta": 0.7}, **SMALL)  # inert: allowed
    ArenaEnv(1, market, impact=impact, **SMALL)


def test_core_builds_the_simulator_it_is_given(market):
    built = []

    def factory(data, rules, n_envs, *, record, dtype):
        sim = Simulator(data, rules, n_envs, record=record, dtype=dtype)
        built.append((data, n_envs, record, dtype))
        return sim

    core = PortfolioCore(market, 3, record=True, simulator=factory, price_dtype="float32", **SMALL)
    assert built == [(market, 3, True, np.float32)] and core.sim.n_envs == 3
    arena = ArenaEnv(2, market, impact=STRONG, **SMALL)
    assert arena.core.sim is arena.sim and isinstance(arena.sim, ImpactSimulator)


# ------------------------------------------------------------- save/restore
RESUMABLE = {
    "impact": {"eta": 1.0, "gamma": 0.5, "noise_scale": 0.3},
    "observe_flow": True,
    "reward": "differential_sharpe",
    "risk": {"stop_loss": 0.02, "stop_cooldown": 2, "max_turnover": 0.8},
    **SMALL,
}


def _continue(env: ArenaEnv, seed: int, steps: int) -> list:
    """``steps`` more steps from where ``env`` is (or until the episode ends), with actions
    from ``seed``: everything the env returns."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        if not env.agents:
            break
        out.append(env.step(_actions(env, rng)))
    return out


def _assert_same(a, b) -> None:
    """Equal, bit for bit, through dicts, lists, tuples and arrays."""
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), (a, b)


@pytest.mark.parametrize(
    ("via_json", "cash"),
    # an integer initial cash (as `--rule initial_cash=50000000` gives) once left a fresh
    # simulator's NAV an integer array, which truncated the restored NAV
    [(False, 10_000.0), (True, 10_000.0), (False, 50_000_000)],
)
def test_restored_arena_continues_bit_for_bit(market, via_json, cash):
    from marketarena.evaluation.saved_runs import codec

    kwargs = {**RESUMABLE, "rules": TradingRules(initial_cash=cash)}
    env = ArenaEnv(3, market, reward_mode="relative", **kwargs)
    env.reset(seed=8)
    obs_k, *_, infos_k = _continue(env, 1, 7)[-1]  # k = 7 steps
    state = env.get_state()
    if via_json:
        state = codec.loads(codec.dumps(state, "env_state"), "env_state")
    expected = _continue(env, 2, 12)  # m = 12 more
    assert np.ptp(env.sim.factor) > 0 and np.abs(env.sim.last_flow).min() > 0  # impact, noise

    fresh = ArenaEnv(3, market, reward_mode="relative", **kwargs)
    obs, infos = fresh.set_state(state)
    assert fresh.agents == ["agent_0", "agent_1", "agent_2"]
    # what the saved arena saw after step k (impact factors, last flow, prices), bar the
    # step's own results, which set_state does not replay
    _assert_same(obs, obs_k)
    step_results = ("turnover", "costs", "impact_cost")
    for agent, info in infos_k.items():
        assert infos[agent]["step"] == 7
        _assert_same(
            {k: v for k, v in infos[agent].items() if k not in step_results},
            {k: v for k, v in info.items() if k not in step_results},
        )
    _assert_same(_continue(fresh, 2, 12), expected)
    # the env's RNG carried over too: the next episodes start and trade alike
    env.reset(), fresh.reset()
    _assert_same(_continue(fresh, 3, 5), _continue(env, 3, 5))


def test_restoring_a_finished_episode_and_bad_states(market):
    env = ArenaEnv(2, market, **RESUMABLE)
    env.reset(seed=1)
    _continue(env, 1, 100)
    assert env.agents == []
    fresh = ArenaEnv(2, market, **RESUMABLE)
    assert fresh.set_state(env.get_state()) == ({}, {})
    with pytest.raises(RuntimeError, match="call reset"):
        fresh.step({})
    state = env.get_state()
    with pytest.raises(DataError, match="saved state has 2 agents; this arena has 3"):
        ArenaEnv(3, market, **RESUMABLE).set_state(state)
    uneven = copy.deepcopy(state)
    uneven["portfolios"][1]["t"] -= 1
    with pytest.raises(DataError, match=r"decision indices \[\d+, \d+\]; they must share one"):
        fresh.set_state(uneven)
    with pytest.raises(DataError, match="live and end together"):
        fresh.set_state({**state, "agents": ["agent_1"]})
    with pytest.raises(DataError, match="no risk-layer state"):
        fresh.set_state({k: v for k, v in state.items() if k != "risk"})
    other = ArenaEnv(2, gbm_market(4, 120, seed=7), **RESUMABLE)
    other.reset(seed=1)
    with pytest.raises(DataError, match="factor has shape"):
        other.set_state({**state, "portfolios": other.get_state()["portfolios"]})


# ----------------------------------------------- noise traders and observed flow
def test_noise_flow_moves_prices_but_no_agent_s_book(market):
    """Agents that hold trade nothing: their cash and shares stay as they are, while the
    noise traders' flow (replayed from a copy of the noise RNG) moves the public prices."""
    impact = {"eta": 1.0, "gamma": 0.5, "noise_scale": 0.3}
    env = ArenaEnv(3, market, impact=impact, **SMALL)
    env.reset(seed=2)
    sim, model = env.sim, env.impact
    env.step(_actions(env, np.random.default_rng(0)))  # everyone takes positions
    for _ in range(8):
        t = int(sim.t[0])
        shares0, cash0, factor0 = sim.shares.copy(), sim.cash.copy(), sim.factor.copy()
        z = copy.deepcopy(sim.rng).standard_normal(3)
        hold = {a: sim.weight[i] for i, a in enumerate(env.possible_agents)}
        _, _, _, _, info = env.step(hold)
        np.testing.assert_array_equal(sim.shares, shares0)
        np.testing.assert_array_equal(sim.cash, cash0)
        noise = 0.3 * model.volume[t] * z
        np.testing.assert_array_equal(sim.last_flow, noise)  # the agents' flow is 0
        expected = factor0 * np.exp(0.5 * model.sigma[t] * noise / model.volume[t])
        np.testing.assert_allclose(sim.factor, expected, rtol=1e-14)
        assert not np.array_equal(sim.factor, factor0)
        for i, a in enumerate(env.possible_agents):
            assert info[a]["costs"] == 0.0 and info[a]["impact_cost"] == 0.0
            marks = market.close[t + 1] * sim.factor
            assert info[a]["nav"] == pytest.approx(cash0[i] + shares0[i] @ marks, rel=1e-13)


def test_observed_flow_is_the_last_bar_s_flow_only(market):
    """The flow an agent sees after the step decided at ``t - 1`` is that step's net orders
    (here all filled: no costs, no noise) over the trailing volume at ``t - 1``, and stays
    the same when the volume after ``t`` changes."""
    t_cut = 45
    later = np.arange(120)[:, None] > t_cut
    future = dataclasses.replace(market, volume=np.where(later, market.volume * 7, market.volume))
    kwargs = dict(
        rules=_FREE, impact={"eta": 0.5, "gamma": 0.3}, observe_flow=True,
        random_start=False, window=5, episode_length=60,
    )  # fmt: skip
    seen = []
    for data in (market, future):
        env = ArenaEnv(2, data, **kwargs)
        env.reset(seed=4)
        sim, d, n = env.sim, env.core.obs_dim, 3
        rng = np.random.default_rng(6)
        flows = []
        while int(sim.t[0]) < t_cut:
            t, shares0 = int(sim.t[0]), sim.shares.copy()
            obs, *_ = env.step(_actions(env, rng))
            traded = (sim.shares - shares0).sum(axis=0)  # the orders, as filled
            by_hand = traded / env.impact.volume[t]
            for a in env.possible_agents:
                np.testing.assert_allclose(obs[a][d + n :], by_hand, rtol=1e-6, atol=1e-9)
            flows.append(obs["agent_0"][d + n :])
        seen.append(np.array(flows))
    np.testing.assert_array_equal(seen[0], seen[1])
    assert np.abs(seen[0]).max() > 0
