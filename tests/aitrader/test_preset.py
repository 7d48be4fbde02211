"""The ``aitrader`` rules preset: by name wherever rules are accepted, and what it does."""

from __future__ import annotations

import numpy as np
import pytest

from marketarena.envs import PortfolioEnv
from marketarena.envs.aitrader import load_aitrader
from marketarena.envs.core import build_rules
from marketarena.envs.data import load_dataset
from marketarena.envs.simulator import RULE_PRESETS, Simulator, TradingRules

AITRADER = {
    "initial_cash": 10_000.0,
    "execution": "next_open",
    "commission_bps": 0.0,
    "min_fee": 0.0,
    "slippage_bps": 0.0,
    "lot_size": 1,
    "allow_short": False,
}


def test_the_preset_holds_ai_traders_rules():
    rules = RULE_PRESETS["aitrader"].to_dict()
    assert {k: rules[k] for k in AITRADER} == AITRADER
    # everything else is the default, e.g. no volume cap, no weight cap, no borrow
    defaults = TradingRules().to_dict()
    assert {k: v for k, v in rules.items() if k not in AITRADER} == {
        k: v for k, v in defaults.items() if k not in AITRADER
    }


def test_build_rules_takes_the_preset_by_name_or_as_a_key_with_overrides():
    assert build_rules("aitrader") == RULE_PRESETS["aitrader"]
    assert build_rules({"preset": "aitrader"}) == RULE_PRESETS["aitrader"]
    custom = build_rules({"preset": "aitrader", "initial_cash": 5_000, "commission_bps": 2})
    assert custom.initial_cash == 5_000 and custom.commission_bps == 2
    assert {
        k: v for k, v in custom.to_dict().items() if k not in ("initial_cash", "commission_bps")
    } == {
        k: v
        for k, v in RULE_PRESETS["aitrader"].to_dict().items()
        if k not in ("initial_cash", "commission_bps")
    }
    # without a preset, the fields are plain rules on the defaults
    assert build_rules({"lot_size": 1}) == TradingRules(lot_size=1)


def test_build_rules_rejects_unknown_presets_and_fields():
    with pytest.raises(
        ValueError,
        match=r"unknown rules preset 'ai-trader'; available: "
        r"\['aitrader', 'default'\]",
    ):
        build_rules("ai-trader")
    with pytest.raises(ValueError, match=r"unknown trading rule\(s\) \['cash'\]"):
        build_rules({"preset": "aitrader", "cash": 1})
    with pytest.raises(ValueError, match=r"TradingRules.initial_cash=-1"):
        build_rules({"preset": "aitrader", "initial_cash": -1})


def test_the_preset_needs_opens_and_says_so_on_close_only_data():
    with pytest.raises(
        ValueError,
        match=r"execution='next_open' needs open prices, but "
        r"sp500_20 is close-only",
    ):
        Simulator(load_dataset("sp500_20"), build_rules("aitrader"))


@pytest.fixture
def market(ai):
    return load_aitrader(ai.merged(last_open=False))


def test_env_by_name_fills_at_the_next_open_in_whole_shares_without_costs(market):
    env = PortfolioEnv(
        market, rules="aitrader", window=1, episode_length=None, random_start=False, record=True
    )
    assert env.rules == RULE_PRESETS["aitrader"]
    _, info = env.reset(seed=0)
    # log returns need one earlier close: the first decision is after the close of 10-02
    assert str(info["date"]) == "2025-10-02" and info["nav"] == 10_000.0
    # 30% in AAA and 30% in CCC, sized at the 10-02 closes (AAA 103, CCC 20.75):
    #   AAA 3000 / 103 = 29.13 -> 29 shares;  CCC 3000 / 20.75 = 144.58 -> 144 shares
    # filled at the opens of 10-03, AI-Trader's decision day (AAA 104, CCC 21), no costs:
    #   29 * 104 + 144 * 21 = 3016 + 3024 = 6040;  cash 10000 - 6040 = 3960
    # marked at the 10-03 closes (AAA 105, CCC 21.25):
    #   29 * 105 + 144 * 21.25 + 3960 = 3045 + 3060 + 3960 = 10065
    _, _, _, _, info = env.step(np.array([0.3, 0.0, 0.3, 0.4]))
    assert str(info["date"]) == "2025-10-03"
    np.testing.assert_array_equal(env.sim.shares[0], [29, 0, 144])
    assert info["cash"] == 3960.0
    assert info["nav"] == 10065.0
    assert info["costs"] == 0.0
    assert info["turnover"] == pytest.approx(6040 / 10_000, abs=1e-12)
    fills = env.sim.history(0).fills_frame()
    assert fills[["symbol", "side", "shares", "price", "cost"]].values.tolist() == [
        ["AAA", "buy", 29.0, 104.0, 0.0],
        ["CCC", "buy", 144.0, 21.0, 0.0],
    ]
    assert [str(d.date()) for d in fills["date"]] == ["2025-10-03", "2025-10-03"]
    # holding trades nothing; marked at the 10-06 closes (AAA 105.5, CCC 21.75):
    #   29 * 105.5 + 144 * 21.75 + 3960 = 3059.5 + 3132 + 3960 = 10151.5
    _, _, terminated, truncated, info = env.step(info["weights"])
    assert info["nav"] == 10151.5 and info["turnover"] == 0.0
    assert truncated and not terminated


def test_buys_the_cash_cannot_pay_are_scaled_down_to_whole_shares(market):
    sim = Simulator(market, build_rules("aitrader"), record=True)
    sim.reset(1)  # decide after the 10-02 close
    # half in AAA, half in BBB, sized at the 10-02 closes (103, 51.5):
    #   5000 / 103 = 48.54 -> 48;  5000 / 51.5 = 97.09 -> 97
    # at the 10-03 opens (104, 52) that costs 48 * 104 + 97 * 52 = 4992 + 5044 = 10036 > 10000,
    # so both buys shrink by 10000 / 10036 to whole shares: 47.83 -> 47, 96.65 -> 96
    #   47 * 104 + 96 * 52 = 4888 + 4992 = 9880;  cash 120
    # marked at the 10-03 closes (105, 51): 47 * 105 + 96 * 51 + 120 = 4935 + 4896 + 120 = 9951
    sim.step_weights(np.array([[0.5, 0.5, 0.0]]))
    np.testing.assert_array_equal(sim.shares[0], [47, 96, 0])
    assert sim.cash[0] == 120.0
    assert sim.nav[0] == 9951.0
