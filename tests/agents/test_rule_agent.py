"""The rule agent: the safe parser, the rule table on a hand-made market, a backtest computed by
hand, a rule that is never true, no look-ahead, and the ``rule:`` spec."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from marketarena.agents.baselines import EqualWeightAgent
from marketarena.agents.registry import make_agent
from marketarena.agents.rule_agent import Rule, RuleAgent
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError
from marketarena.envs.simulator import TradingRules
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation.ensembles import make_ensemble
from marketarena.evaluation.runner import run_backtest

FREE = TradingRules(commission_bps=0.0, slippage_bps=0.0)


@pytest.fixture
def hand() -> MarketData:
    """Five closes of three symbols; one-bar log returns by row:
    row 1: A +, B -, C 0; row 2: A -, B +, C 0; row 3: A +, B -, C 0; row 4: A +, B +, C 0."""
    close = np.array(
        [[10, 10, 10], [11, 9, 10], [10.5, 9.5, 10], [12, 9, 10], [13, 9.9, 10]], dtype=float
    )
    dates = pd.bdate_range("2024-01-01", periods=5).to_numpy()
    return MarketData(dates=dates, symbols=("A", "B", "C"), close=close, name="hand")


def info_at(data: MarketData, row: int) -> dict:
    weights = np.zeros(data.n_assets + 1)
    weights[-1] = 1.0
    return {"date": data.dates[row], "weights": weights, "prices": data.close[row]}


# ------------------------------------------------------------------------- the table
def test_a_column_of_the_data_is_a_name_and_an_unknown_one_fails_on_the_data(hand):
    from marketarena.envs.news import add_feature_columns

    sentiment = np.array([[0, 0, 0], [0.5, -0.2, 0], [0, 0, 0.1], [0, 0, 0], [-1, 1, 0]])
    data = add_feature_columns(hand, {"sentiment": sentiment}, "hand-made sentiment")
    table = Rule("sentiment > 0").evaluate(data)
    np.testing.assert_array_equal(table, sentiment > 0)
    with pytest.raises(ConfigError) as caught:
        Rule("foo < 3 and sentiment > 0").evaluate(data)
    message = str(caught.value)
    assert "unknown name(s) ['foo']; use a price (open, high, low, close, volume)" in message
    assert "or a column of hand (['sentiment'])" in message
    agent = RuleAgent("foo < 3")
    with pytest.raises(ConfigError, match=r"unknown name\(s\) \['foo'\]"):
        agent.use_data(hand)


def test_the_rule_table_by_hand(hand):
    table = Rule("log_return > 0").evaluate(hand)
    expected = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]
    np.testing.assert_array_equal(table, np.array(expected, dtype=bool))
    # chained comparison, arithmetic: -0.1 < r < 0.06 (log(1.1) = 0.095, log(0.9) = -0.105)
    chained = Rule("-0.1 < log_return * 2 / 2 < 0.03 + 0.03").evaluate(hand)
    np.testing.assert_array_equal(chained[1:3], [[0, 0, 1], [1, 1, 1]])
    either = Rule("log_return > 0.09 or not log_return >= 0").evaluate(hand)
    np.testing.assert_array_equal(either[1:3], [[1, 1, 0], [1, 0, 0]])


def test_prices_are_names_too(hand):
    from marketarena.envs.indicators import compute_indicator

    table = Rule("close > bb_upper_3_1").evaluate(hand)
    upper = compute_indicator(hand, "bb_upper_3_1")
    np.testing.assert_array_equal(table, np.nan_to_num(upper, nan=np.inf) < hand.close)
    assert table.any()
    np.testing.assert_array_equal(Rule("close >= 10.5").evaluate(hand), hand.close >= 10.5)
    with pytest.raises(ConfigError, match=r"uses volume, but hand has only \['close'\]"):
        Rule("volume > 0").evaluate(hand)


def test_undefined_rows_are_never_selected_even_under_not(hand):
    assert not Rule("not log_return > 0").evaluate(hand)[0].any()  # row 0: no return yet
    table = Rule("not log_return > 0 and xs_rank_2 >= 0").evaluate(hand)
    assert not table[:2].any() and table[2:].sum() > 0  # xs_rank_2 starts at row 2


def test_indicators_in_rules_equal_the_indicators(hand):
    from marketarena.envs.indicators import compute_indicator

    table = Rule("zscore_3 > 0.5").evaluate(hand)
    z = compute_indicator(hand, "zscore_3")
    np.testing.assert_array_equal(table, np.nan_to_num(z, nan=-1) > 0.5)
    assert table[2:].any()


@pytest.mark.parametrize(
    ("rule", "part"),
    [
        ("abs(log_return) > 0", "a call is not allowed: 'abs(log_return)'"),
        ("log_return.real > 0", "an attribute is not allowed: 'log_return.real'"),
        ("log_return[0] > 0", "a subscript is not allowed: 'log_return[0]'"),
        ("__import__('os').system('true')", "a call is not allowed"),
        ("(lambda: 1)() > 0", "a call is not allowed"),
        ("log_return ** 2 > 0", "the operator is not allowed: 'log_return ** 2'"),
        ("log_return in (1, 2)", "the operator In is not allowed"),
        ("log_return > 0 and True", "a constant other than a number is not allowed: 'True'"),
        ("log_return > 'x'", "a constant other than a number is not allowed: \"'x'\""),
        ("rsi_x < 30", "indicator 'rsi_x': period must be a whole number"),
        ("rsi_14 + 1", "is a number, not a condition"),
        ("(rsi_14 < 30) < 2", "'rsi_14 < 30' is a condition where a number is needed"),
        ("not rsi_14", "'rsi_14' is a number where a condition is needed"),
        ("rsi_14 <", "is not a valid expression"),
        ("  ", "empty rule"),
    ],
)
def test_anything_else_is_a_config_error_naming_the_part(rule, part):
    with pytest.raises(ConfigError) as caught:
        Rule(rule)
    assert part in str(caught.value)


# ------------------------------------------------------------------------ the agent
def test_actions_are_equal_weights_where_true_and_cash_otherwise(hand):
    agent = RuleAgent("log_return >= 0")
    agent.use_data(hand)
    agent.reset()
    np.testing.assert_array_equal(agent.act(np.zeros(1), info_at(hand, 0)), [0, 0, 0, 1])
    np.testing.assert_array_equal(agent.act(np.zeros(1), info_at(hand, 1)), [0.5, 0, 0.5, 0])
    np.testing.assert_array_equal(agent.act(np.zeros(1), info_at(hand, 2)), [0, 0.5, 0.5, 0])
    np.testing.assert_array_equal(agent.act(np.zeros(1), info_at(hand, 3)), [0.5, 0, 0.5, 0])
    np.testing.assert_array_equal(
        agent.act(np.zeros(1), info_at(hand, 4)), [1 / 3, 1 / 3, 1 / 3, 0]
    )


def test_an_unchanged_selection_holds_the_drifted_positions(hand):
    agent = RuleAgent("log_return > 0")
    agent.use_data(hand)
    agent.reset()
    agent.act(np.zeros(1), info_at(hand, 1))  # A
    drifted = {**info_at(hand, 3), "weights": np.array([0.9, 0.0, 0.0, 0.1])}
    agent._last = np.array([True, False, False])  # as if row 3's selection had been bought
    np.testing.assert_array_equal(agent.act(np.zeros(1), drifted), drifted["weights"])


def test_a_backtest_computed_by_hand(hand):
    """Decisions after rows 1, 2, 3 pick A, B, A; each sizes shares at the decision's close
    (NAV / close) and fills at the next close (close-only data)."""
    result = run_backtest(RuleAgent("log_return > 0"), {"data": hand, "window": 1, "rules": FREE})
    assert [str(d) for d in result.dates] == [
        "2024-01-02",
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
    ]
    nav2 = 10_000 + 10_000 / 11 * (12 - 10.5)  # A bought at 10.5, sold at 12
    nav3 = nav2 + 10_000 / 9.5 * (9.9 - 9)  # B sized at 9.5 with NAV 10,000, bought at 9
    np.testing.assert_allclose(result.nav, [10_000, 10_000, nav2, nav3])
    held = result.weights[:, :-1] > 0
    np.testing.assert_array_equal(held, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    fills = {
        str(date)[:10]: set(zip(group["symbol"], group["side"], strict=True))
        for date, group in result.fills.groupby("date")
    }
    assert fills == {
        "2024-01-03": {("A", "buy")},
        "2024-01-04": {("A", "sell"), ("B", "buy")},
        "2024-01-05": {("B", "sell"), ("A", "buy")},
    }


def test_an_always_true_rule_buys_once_and_holds(hand):
    result = run_backtest(RuleAgent("log_return > -1"), {"data": hand, "window": 1, "rules": FREE})
    assert result.turnover[0] > 0 and (result.turnover[1:] == 0).all()
    # a third of the NAV each, sized at row 1's closes; filled at row 2's, which cost more
    # than the cash, so the buys are scaled down to the cash (cash never goes negative)
    shares = 10_000 / 3 / hand.close[1]
    shares *= 10_000 / (shares @ hand.close[2])
    value = shares * hand.close[4]
    cash = 10_000 - shares @ hand.close[2]
    np.testing.assert_allclose(result.nav[-1], value.sum() + cash)
    np.testing.assert_allclose(result.weights[-1, :-1], value / (value.sum() + cash))


def test_a_rule_that_is_never_true_holds_cash():
    data = gbm_market(4, 120, seed=1)
    result = run_backtest(make_agent('rule:"rsi_14 < 0"'), {"data": data, "window": 5})
    assert (result.nav == 10_000).all() and (result.turnover == 0).all()
    assert result.fills.empty and (result.weights[:, -1] == 1).all()


def test_members_of_an_ensemble_get_the_data(hand):
    ensemble = make_ensemble("mean", [RuleAgent("log_return > 0"), EqualWeightAgent()])
    result = run_backtest(ensemble, {"data": hand, "window": 1, "rules": FREE})
    assert len(result.nav) == 4 and result.weights[1, 0] > result.weights[1, 1]


# ------------------------------------------------------------------ no look-ahead
def test_changing_the_future_leaves_every_earlier_action_unchanged():
    data = gbm_market(6, 260, seed=7)
    t = 150
    scale = np.ones(data.close.shape)
    scale[t + 1 :] = np.random.default_rng(0).uniform(0.6, 1.4, (259 - t, 6))
    changed = dataclasses.replace(
        data, **{f: getattr(data, f) * scale for f in ("open", "high", "low", "close")}
    )
    rule = (
        "rsi_14 < 50 and bb_pctb_20_2 < 0.6 or macd_hist > 0 and atr_14 / close_to_open > 0 "
        "or close > bb_upper_20_1"
    )
    actions = []
    for market in (data, changed):
        agent = RuleAgent(rule)
        agent.use_data(market)
        agent.reset()
        actions.append(np.array([agent.act(np.zeros(1), info_at(market, r)) for r in range(260)]))
    np.testing.assert_array_equal(actions[0][: t + 1], actions[1][: t + 1])
    assert not np.array_equal(actions[0][t + 1 :], actions[1][t + 1 :])
    assert len({tuple(a) for a in actions[0][: t + 1]}) > 3  # the rule does select, and varies


# ------------------------------------------------------------------ spec and errors
def test_the_spec_strips_quotes_and_names_the_agent():
    for spec in ('rule:"rsi_14 < 30"', "rule:'rsi_14 < 30'", "rule: rsi_14 < 30"):
        agent = make_agent(spec)
        assert isinstance(agent, RuleAgent) and agent.name == "rule:rsi_14 < 30"
    with pytest.raises(ConfigError, match="empty rule"):
        make_agent('rule:""')
    with pytest.raises(ConfigError, match="a call is not allowed"):
        make_agent('rule:"max(rsi_14, 3) > 2"')


def test_acting_without_data_or_on_other_data_is_a_config_error(hand):
    agent = RuleAgent("log_return > 0")
    with pytest.raises(ConfigError, match="no market data yet"):
        agent.act(np.zeros(1), info_at(hand, 1))
    agent.use_data(hand)
    with pytest.raises(ConfigError, match="2023-01-02 is not a date of the data"):
        agent.act(np.zeros(1), {**info_at(hand, 1), "date": np.datetime64("2023-01-02")})
    with pytest.raises(ConfigError, match="data of 3 symbols, but the env trades 2"):
        agent.act(np.zeros(1), {**info_at(hand, 1), "weights": np.array([0.0, 0.0, 1.0])})


def test_the_state_to_persist_is_the_last_selection_not_the_table(hand):
    agent = RuleAgent("log_return > 0")
    agent.use_data(hand)
    agent.act(np.zeros(1), info_at(hand, 1))
    state = agent.get_state()
    assert set(state) == {"rule", "name", "_last"}
    fresh = make_agent(f"rule:{agent.rule}")
    fresh.set_state(state)
    fresh.use_data(hand)
    held = {**info_at(hand, 3), "weights": np.array([0.7, 0.0, 0.0, 0.3])}
    np.testing.assert_array_equal(fresh.act(np.zeros(1), held), held["weights"])  # still A


def test_a_persisted_run_continued_equals_one_run(tmp_path):
    """Resumed and continued runs rebuild the agent from its spec; the runner hands the
    rebuilt agent the (longer) data, and earlier rows read the same."""
    from marketarena.evaluation.saved_runs.persisted import continue_backtest, start_backtest
    from marketarena.evaluation.saved_runs.store import RunStore

    store = RunStore(tmp_path / "runs.sqlite")
    spec = 'rule:"rsi_14 < 45 or xs_rank_10 > 0.8"'
    start_backtest(store, "parts", spec, "sp500_ohlcv_30", "2009-10-01", "2010-02-26")
    parts = continue_backtest(store, "parts", "2010-06-30")
    whole = start_backtest(store, "whole", spec, "sp500_ohlcv_30", "2009-10-01", "2010-06-30")
    assert len(whole.nav) > 150 and (whole.turnover > 0).sum() > 5
    np.testing.assert_array_equal(parts.dates, whole.dates)
    np.testing.assert_allclose(parts.nav, whole.nav, rtol=1e-12)
