"""The risk layer: each rule on hand-computed cases, limits that hold on 20,000 random cases,
no look-ahead, a stop-loss that exits and pays its costs, the envs under it, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from marketarena.envs import PortfolioEnv, PortfolioVectorEnv
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, DataError, MissingFileError
from marketarena.envs.risk import RiskLayer, RiskSettings, build_risk, load_sectors

SYMBOLS = ("A", "B", "C")
SECTORS = {"A": "Tech", "B": "Tech", "C": "Energy"}


def layer(n_envs: int = 1, close: np.ndarray | None = None, **rules) -> RiskLayer:
    close = np.full((40, 3), 100.0) if close is None else close
    return RiskLayer(RiskSettings(**rules), SYMBOLS, close, n_envs)


def apply(risk: RiskLayer, target, current=(0.0, 0.0, 0.0), nav=100.0, t=30) -> np.ndarray:
    return risk.apply(
        np.array([target], dtype=float),
        np.array([current], dtype=float),
        np.array([nav]),
        np.array([t]),
    )[0]


# ------------------------------------------------------------------- each rule by hand
def test_max_weight_clips_each_symbol_and_records_the_excess():
    risk = layer(max_weight=0.3)
    np.testing.assert_allclose(apply(risk, [0.5, 0.3, 0.2]), [0.3, 0.3, 0.2])
    assert risk.last["max_weight"][0] == pytest.approx(0.2)
    np.testing.assert_allclose(apply(risk, [-0.5, 0.1, 0.0]), [-0.3, 0.1, 0.0])  # shorts too


def test_sector_limit_scales_the_sector_down():
    risk = layer(sector_limit=0.4, sectors=SECTORS)
    # Tech (A + B) holds 0.6 > 0.4: scaled by 2/3; Energy 0.3 is under the cap
    np.testing.assert_allclose(apply(risk, [0.3, 0.3, 0.3]), [0.2, 0.2, 0.3])
    assert risk.last["sector_limit"][0] == pytest.approx(0.2)


def test_a_per_sector_limit_overrides_the_default():
    risk = layer(sector_limit=0.9, sector_limits={"Energy": 0.1}, sectors=SECTORS)
    np.testing.assert_allclose(apply(risk, [0.3, 0.3, 0.3]), [0.3, 0.3, 0.1])
    only = layer(sector_limits={"Tech": 0.2}, sectors=SECTORS)  # no default: Energy is free
    np.testing.assert_allclose(apply(only, [0.3, 0.1, 0.5]), [0.15, 0.05, 0.5])


def test_max_gross_scales_everything():
    risk = layer(max_gross=0.8)
    np.testing.assert_allclose(apply(risk, [0.5, 0.5, 0.0]), [0.4, 0.4, 0.0])
    np.testing.assert_allclose(apply(risk, [0.6, -0.4, 0.0]), [0.48, -0.32, 0.0])


def test_net_limits_trim_one_side():
    # net 0.8 > 0.5: the longs (0.9) give up 0.3 -> x 2/3; the short stays
    risk = layer(max_net=0.5)
    np.testing.assert_allclose(apply(risk, [0.6, 0.3, -0.1]), [0.4, 0.2, -0.1])
    assert risk.last["max_net"][0] == pytest.approx(0.3)
    # net -0.4 < -0.2: the shorts (0.5) give up 0.2 -> x 0.6
    low = layer(min_net=-0.2)
    np.testing.assert_allclose(apply(low, [0.1, -0.5, 0.0]), [0.1, -0.3, 0.0])


def test_max_turnover_shortens_the_move():
    risk = layer(max_turnover=0.4)
    # from [0.5, 0.5, 0] toward [1, 0, 0]: a move of 1.0 cut to 0.4
    np.testing.assert_allclose(apply(risk, [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]), [0.7, 0.3, 0.0])
    assert risk.last["max_turnover"][0] == pytest.approx(0.6)
    np.testing.assert_allclose(apply(risk, [0.6, 0.4, 0.0], [0.5, 0.5, 0.0]), [0.6, 0.4, 0.0])


def test_max_turnover_yields_to_the_hard_limits():
    # the current weights break the symbol cap (prices drifted): the cap still holds after
    risk = layer(max_turnover=0.1, max_weight=0.4)
    out = apply(risk, [0.4, 0.4, 0.2], [0.7, 0.1, 0.2])
    assert out.max() <= 0.4 + 1e-12
    assert set(risk.last) == {"max_turnover", "max_weight"}


def test_drawdown_derisk_steps():
    risk = layer(drawdown_derisk={0.1: 0.5, 0.2: 0.25})
    assert apply(risk, [0.5, 0.5, 0.0], nav=100.0).sum() == pytest.approx(1.0)  # the peak
    np.testing.assert_allclose(apply(risk, [0.5, 0.5, 0.0], nav=95.0), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(apply(risk, [0.5, 0.5, 0.0], nav=85.0), [0.25, 0.25, 0.0])
    np.testing.assert_allclose(apply(risk, [0.5, 0.5, 0.0], nav=79.0), [0.125, 0.125, 0.0])
    np.testing.assert_allclose(apply(risk, [0.5, 0.5, 0.0], nav=101.0), [0.5, 0.5, 0.0])


def test_stop_loss_exits_waits_and_reenters_from_a_fresh_peak():
    risk = layer(stop_loss=0.1, stop_cooldown=1)
    target = [0.4, 0.4, 0.2]
    np.testing.assert_allclose(apply(risk, target, nav=100.0), target)
    np.testing.assert_allclose(apply(risk, target, nav=110.0), target)  # the peak
    np.testing.assert_allclose(apply(risk, target, nav=99.5), target)  # -9.5%: holds
    np.testing.assert_allclose(apply(risk, target, nav=99.0), 0.0)  # -10%: exit
    assert risk.last["stop_loss"][0] == pytest.approx(1.0)
    np.testing.assert_allclose(apply(risk, target, nav=99.0), 0.0)  # the cool-down decision
    np.testing.assert_allclose(apply(risk, target, nav=99.0), target)  # re-entry
    assert risk.peak[0] == 99.0  # the drawdown now counts from the re-entry
    np.testing.assert_allclose(apply(risk, target, nav=95.0), target)  # -4% from 99


def test_stop_loss_without_cooldown_reenters_at_the_next_decision():
    risk = layer(stop_loss=0.2)
    apply(risk, [1.0, 0, 0], nav=100.0)
    np.testing.assert_allclose(apply(risk, [1.0, 0, 0], nav=80.0), 0.0)
    np.testing.assert_allclose(apply(risk, [1.0, 0, 0], nav=80.0), [1.0, 0, 0])


def test_vol_target_scales_to_the_target_from_trailing_returns():
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0, 0.02, size=(40, 3))
    close = 100 * np.exp(np.cumsum(returns, axis=0))
    risk = layer(close=close, vol_target=0.1, vol_lookback=20)
    w = np.array([0.5, 0.3, 0.2])
    t = 30
    r = np.diff(np.log(close[t - 20 : t + 1]), axis=0)  # the 20 returns up to t
    vol = np.sqrt(w @ np.cov(r, rowvar=False) @ w * 252)  # ~0.2: above the target
    assert vol > 0.1
    np.testing.assert_allclose(apply(risk, w, t=t), w * 0.1 / vol, rtol=1e-12)
    calm = layer(close=close, vol_target=vol * 1.01, vol_lookback=20)
    np.testing.assert_allclose(apply(calm, w, t=t), w)  # below the target: never levered up
    np.testing.assert_allclose(apply(risk, w, t=10), w)  # too few sessions: no estimate


# ------------------------------------------------------------------- properties
def _random_rules(rng: np.random.Generator) -> dict:
    rules: dict = {}
    if rng.random() < 0.6:
        rules["max_weight"] = float(rng.uniform(0.05, 0.6))
    if rng.random() < 0.5:
        rules["sector_limit"] = float(rng.uniform(0.1, 0.8))
        rules["sectors"] = SECTORS
    if rng.random() < 0.5:
        rules["max_gross"] = float(rng.uniform(max(rules.get("max_weight", 0.2), 0.2), 1.5))
    if rng.random() < 0.4:
        rules["max_net"] = float(rng.uniform(0.0, 1.0))
    if rng.random() < 0.4:
        rules["min_net"] = float(rng.uniform(-1.0, min(rules.get("max_net", 0.0), 0.0)))
    if rng.random() < 0.5:
        rules["max_turnover"] = float(rng.uniform(0.05, 1.0))
    if rng.random() < 0.3:
        rules["vol_target"] = float(rng.uniform(0.05, 0.5))
    return rules


def test_no_limit_is_ever_exceeded_after_the_layer():
    """20 random rule sets x 1,000 random portfolios each (20,000 cases, shorts included)."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(60, 3)), axis=0))
    masks = np.array([[1, 1, 0], [0, 0, 1]], dtype=bool)  # Tech, Energy
    cases = 0
    for _ in range(20):
        rules = _random_rules(rng)
        n = 1000
        risk = RiskLayer(RiskSettings(**rules), SYMBOLS, close, n)
        target = rng.uniform(-1, 1, size=(n, 3)) * rng.uniform(0, 2, size=(n, 1))
        current = rng.uniform(-1, 1, size=(n, 3))
        nav = rng.uniform(50, 150, size=n)
        t = rng.integers(0, 60, size=n)
        out = risk.apply(target, current, nav, t)
        tol = 1e-12
        if "max_weight" in rules:
            assert np.abs(out).max() <= rules["max_weight"] + tol
        if "sector_limit" in rules:
            assert (np.abs(out) @ masks.T).max() <= rules["sector_limit"] + tol
        if "max_gross" in rules:
            assert np.abs(out).sum(axis=1).max() <= rules["max_gross"] + tol
        if "max_net" in rules:
            assert out.sum(axis=1).max() <= rules["max_net"] + tol
        if "min_net" in rules:
            assert out.sum(axis=1).min() >= rules["min_net"] - tol
        # the layer only trims: never more gross exposure than the target (or the turnover
        # cap's blend with the current weights) asked for
        start = np.abs(target).sum(axis=1)
        if "max_turnover" in rules:
            start = np.maximum(start, np.abs(current).sum(axis=1))
        assert (np.abs(out).sum(axis=1) <= start + tol).all()
        cases += n
    assert cases >= 10_000


def test_the_layer_reads_no_future_prices():
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(80, 3)), axis=0))
    t = 40
    future = close.copy()
    future[t + 1 :] *= np.exp(rng.normal(0, 0.2, size=future[t + 1 :].shape))
    target = np.array([[0.5, 0.3, 0.2]])
    args = (np.zeros((1, 3)), np.array([100.0]), np.array([t]))
    rules = {"vol_target": 0.05, "vol_lookback": 20, "max_weight": 0.4}
    a = RiskLayer(RiskSettings(**rules), SYMBOLS, close, 1).apply(target, *args)
    b = RiskLayer(RiskSettings(**rules), SYMBOLS, future, 1).apply(target, *args)
    np.testing.assert_array_equal(a, b)
    past = close.copy()
    past[t] *= 1.5  # the decision's own close is known, and does change the estimate
    c = RiskLayer(RiskSettings(**rules), SYMBOLS, past, 1).apply(target, *args)
    assert not np.array_equal(a, c)


# ------------------------------------------------------------------- in the env
def _falling_market() -> MarketData:
    # flat for 15 sessions, then -3% a session: a 10% stop is hit on the 4th fall
    close = np.concatenate([np.full(15, 100.0), 100.0 * 0.97 ** np.arange(1, 46)])
    close = np.stack([close, close], axis=1)
    dates = np.datetime64("2020-01-01") + np.arange(len(close))
    return MarketData(dates=dates, symbols=("A", "B"), close=close, name="falling")


def test_a_stop_loss_run_exits_pays_the_costs_and_goes_on():
    env = PortfolioEnv(
        _falling_market(),
        window=5,
        features=["log_return"],
        episode_length=50,
        random_start=False,
        risk={"stop_loss": 0.1, "stop_cooldown": 100},
        rules={"commission_bps": 10.0, "slippage_bps": 10.0, "execution": "next_close"},
    )
    env.reset()
    invested = np.array([0.5, 0.5, 0.0])
    navs, infos = [], []
    terminated = False
    for _ in range(30):
        _, _, terminated, _, info = env.step(invested)
        navs.append(info["nav"])
        infos.append(info)
        assert not terminated  # the stop exits; it does not end the episode
    exit_step = next(i for i, info in enumerate(infos) if "stop_loss" in info.get("risk", {}))
    exit_info = infos[exit_step]
    before, held = navs[exit_step - 1], infos[exit_step - 1]["weights"][:-1].sum()
    # the decision came at a drawdown of 10% or more; its orders sold everything at the next
    # close (3% lower: the fill comes after the decision), paying 10 bps of slippage and
    # 10 bps of commission on the proceeds after it
    assert before <= 0.9 * max([*navs[: exit_step - 1], env.rules.initial_cash])
    assert exit_info["weights"][-1] == pytest.approx(1.0)
    sold = before * held * 0.97
    assert exit_info["costs"] == pytest.approx(sold * (0.001 + 0.999 * 0.001), rel=1e-9)
    assert navs[exit_step] == pytest.approx(before - before * held * 0.03 - exit_info["costs"])
    # afterwards it holds cash (the cool-down), so the NAV no longer falls
    assert navs[-1] == pytest.approx(navs[exit_step])


def test_the_vector_env_trains_under_the_rules_and_resumes_exactly():
    kwargs = dict(window=4, episode_length=30, risk={"max_weight": 0.2, "stop_loss": 0.05})
    env = PortfolioVectorEnv(4, "sp500_20", **kwargs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.random((40, 4, 21)) ** 8  # concentrated targets
    clipped = 0
    for a in actions[:20]:
        _, _, _, _, info = env.step(a)
        clipped += int((info["risk"].get("max_weight", np.zeros(4)) > 0).sum())
        # filled within the cap at the close; one session's moves cannot double a weight
        assert env.core.sim.weight[:, :-1].max() < 0.2 * 1.5
    assert clipped > 10
    state = env.get_state()
    first = [env.step(a)[1] for a in actions[20:]]
    other = PortfolioVectorEnv(4, "sp500_20", **kwargs)
    other.reset(seed=0)
    other.set_state(state)
    second = [other.step(a)[1] for a in actions[20:]]
    np.testing.assert_array_equal(np.array(first), np.array(second))


def test_env_settings_carry_the_risk_rules():
    env = PortfolioEnv("sp500_20", window=4, risk={"max_weight": 0.1})
    assert env.core.settings.to_dict()["risk"]["max_weight"] == 0.1
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.ones(21))
    assert info["risk"] == {}  # equal weights of 1/21 are within every limit
    _, _, _, _, info = env.step(np.r_[np.ones(1), np.zeros(20)])
    assert info["risk"]["max_weight"] == pytest.approx(0.9)
    assert PortfolioEnv("sp500_20", window=4).core.risk is None  # off: no layer at all


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"max_wieght": 0.1}, "unknown risk rule"),
        ({"max_weight": -0.1}, r"risk.max_weight=-0.1: must be > 0"),
        ({"max_weight": "big"}, "takes a number"),
        ({"stop_loss": 1.5}, r"risk.stop_loss=1.5: must be in \(0, 1\]"),
        ({"vol_target": 0}, "vol_target"),
        ({"min_net": 0.2}, "never adds positions"),
        ({"max_net": -0.5}, "trims longs"),
        ({"max_weight": 0.5, "max_gross": 0.3}, "no portfolio can reach it"),
        ({"drawdown_derisk": {0.1: 0.2, 0.2: 0.5}}, "must not allow more exposure"),
        ({"drawdown_derisk": {1.5: 0.2}}, r"drawdowns must be in \(0, 1\)"),
        ({"stop_cooldown": -1}, "stop_cooldown"),
        ({"vol_lookback": 1}, "vol_lookback"),
    ],
)
def test_bad_rules_are_named(rules, message):
    with pytest.raises(ConfigError, match=message):
        build_risk(rules)
    with pytest.raises(ConfigError, match=message):
        PortfolioEnv("sp500_20", window=4, risk=rules)


def test_a_symbol_without_a_sector_or_an_unknown_sector_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"no sector for \['C'\]"):
        layer(sector_limit=0.3, sectors={"A": "Tech", "B": "Tech"})
    with pytest.raises(ConfigError, match=r"sector\(s\) \['Utilities'\]"):
        layer(sector_limits={"Utilities": 0.1}, sectors=SECTORS)
    with pytest.raises(MissingFileError, match="sector map not found"):
        layer(sector_limit=0.3, sectors=str(tmp_path / "none.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("ticker,industry\nA,Tech\n")
    with pytest.raises(DataError, match="needs the columns symbol and sector"):
        load_sectors(str(bad))


def test_the_bundled_sector_map_covers_the_bundled_panels():
    from marketarena.envs.data import load_dataset

    sectors = load_sectors("bundled")
    for name in ("sp500_20", "sp500_ohlcv_30"):
        assert set(load_dataset(name).symbols) <= set(sectors)
    assert sectors["AAPL"] == "Information Technology" and sectors["XOM"] == "Energy"
    env = PortfolioEnv("sp500_20", window=4, risk={"sector_limit": 0.2})
    assert "Health Care" in env.core.risk.sector_names  # JNJ, LLY, MRK, PFE, UNH


def test_a_reset_clears_the_last_interventions():
    env = PortfolioEnv("sp500_20", window=4, episode_length=5, risk={"max_weight": 0.1})
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.r_[np.ones(1), np.zeros(20)])
    assert info["risk"]["max_weight"] > 0
    _, info = env.reset(seed=1)
    assert info["risk"] == {}  # the new episode has changed nothing yet


def test_a_saved_state_without_the_risk_layers_is_refused_clearly():
    from marketarena.envs.errors import DataError

    plain = PortfolioVectorEnv(2, "sp500_20", window=4, episode_length=30)
    plain.reset(seed=0)
    ruled = PortfolioVectorEnv(2, "sp500_20", window=4, episode_length=30, risk={"max_weight": 0.1})
    ruled.reset(seed=0)
    with pytest.raises(DataError, match="no risk-layer state"):
        ruled.set_state(plain.get_state())
