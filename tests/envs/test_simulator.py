"""The simulator against hand-computed two-asset cases, the accounting identity and properties.

The hand cases share one market (A, B) and start from 10,000 cash:

    close  A: 100, 110, 121, 133.1     B: 50, 50, 40, 44
    open   A: 100, 105, 120, 130       B: 50, 52, 41, 43
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketarena.envs.data import MarketData
from marketarena.envs.simulator import Simulator, TradingRules, project_weights
from marketarena.envs.synthetic import gbm_market

CLOSE = [[100.0, 50.0], [110.0, 50.0], [121.0, 40.0], [133.1, 44.0]]
OPEN = [[100.0, 50.0], [105.0, 52.0], [120.0, 41.0], [130.0, 43.0]]
FREE = {"commission_bps": 0.0, "slippage_bps": 0.0}


@pytest.fixture
def market(make_market) -> MarketData:
    return make_market(CLOSE, open=OPEN, volume=[[1000.0, 1000.0]] * 4)


def sim_for(market: MarketData, n_envs: int = 1, record: bool = False, **rules) -> Simulator:
    sim = Simulator(market, TradingRules(**{**FREE, **rules}), n_envs=n_envs, record=record)
    sim.reset(0)
    return sim


def step(sim: Simulator, *weights: float):
    return sim.step_weights(np.array([weights]))


# --------------------------------------------------------------------- execution timing
def test_next_close_fills_at_next_close_and_marks_there(market):
    sim = sim_for(market, execution="next_close")
    res = step(sim, 0.4, 0.4)  # sized at close 0: 40 A, 80 B; filled at 110 / 50
    np.testing.assert_allclose(sim.shares[0], [40.0, 80.0])
    assert sim.cash[0] == pytest.approx(10_000 - 40 * 110 - 80 * 50)  # 1,600
    assert res.nav[0] == pytest.approx(10_000.0)
    step(sim, *sim.weight[0, :-1])  # hold
    assert sim.nav[0] == pytest.approx(1_600 + 40 * 121 + 80 * 40)  # 9,640


def test_next_open_fills_at_next_open(market):
    sim = sim_for(market, execution="next_open")
    res = step(sim, 0.4, 0.4)
    assert sim.cash[0] == pytest.approx(10_000 - 40 * 105 - 80 * 52)  # 1,640
    assert res.nav[0] == pytest.approx(1_640 + 40 * 110 + 80 * 50)  # 10,040


def test_close_execution_is_the_optimistic_same_bar_fill(market):
    sim = sim_for(market, execution="close")
    res = step(sim, 0.4, 0.4)
    assert sim.cash[0] == pytest.approx(2_000.0)
    assert res.nav[0] == pytest.approx(2_000 + 40 * 110 + 80 * 50)  # 10,400


def test_default_execution_depends_on_available_prices(market, make_market):
    assert Simulator(market).rules.execution == "next_open"
    assert Simulator(make_market(CLOSE)).rules.execution == "next_close"
    with pytest.raises(ValueError, match="close-only"):
        Simulator(make_market(CLOSE), TradingRules(execution="next_open"))


# ---------------------------------------------------------------------------- costs
def test_commission_in_bps_of_notional(market):
    sim = sim_for(market, execution="next_close", commission_bps=10.0)
    res = step(sim, 0.4, 0.4)
    assert res.commission[0] == pytest.approx(8.4)  # 10 bps of 8,400
    assert sim.cash[0] == pytest.approx(1_600 - 8.4)
    assert res.nav[0] == pytest.approx(10_000 - 8.4)
    assert res.costs[0] == pytest.approx(8.4)


def test_slippage_moves_fill_price_against_the_trader(market):
    sim = sim_for(market, execution="next_close", slippage_bps=20.0)
    res = step(sim, 0.4, 0.4)
    assert sim.cash[0] == pytest.approx(10_000 - 40 * 110.22 - 80 * 50.1)  # 1,583.2
    assert res.slippage[0] == pytest.approx(16.8)
    assert res.nav[0] == pytest.approx(10_000 - 16.8)
    # selling receives less than the reference price
    step(sim, 0.0, 0.0)
    proceeds = 40 * 121 * 0.998 + 80 * 40 * 0.998
    assert sim.cash[0] == pytest.approx(1_583.2 + proceeds)


def test_minimum_fee_per_fill(market):
    sim = sim_for(market, execution="next_close", commission_bps=1.0, min_fee=5.0)
    res = step(sim, 0.4, 0.4)  # 0.44 and 0.40 of commission, each raised to 5
    assert res.commission[0] == pytest.approx(10.0)
    assert sim.cash[0] == pytest.approx(1_600 - 10.0)


def test_sell_that_cannot_pay_the_minimum_fee_is_not_sent(market):
    sim = sim_for(market, execution="next_close", commission_bps=1.0, min_fee=50.0)
    step(sim, 0.4, 0.4)
    shares_before = sim.shares[0].copy()
    # sell 0.1 share of B (~4 of proceeds): not worth a fee of 50
    res = sim.step_orders(np.array([[0.0, -0.1]]))
    np.testing.assert_array_equal(sim.shares[0], shares_before)
    assert res.commission[0] == 0.0


# ----------------------------------------------------------------- cash and sizing
def test_buys_scaled_so_cash_never_goes_negative(market):
    sim = sim_for(market, execution="next_close", commission_bps=10.0)
    step(sim, 0.5, 0.5)  # 50 A at 110 + 100 B at 50 = 10,500 > 10,000
    scale = 10_000 / (10_500 * 1.001)
    np.testing.assert_allclose(sim.shares[0], [50 * scale, 100 * scale])
    assert sim.cash[0] == pytest.approx(0.0, abs=1e-6)  # a hair is left, never below 0
    assert sim.cash[0] >= 0.0


def test_sells_execute_first_and_fund_buys(market):
    sim = sim_for(market, execution="next_close")
    step(sim, 0.5, 0.0)  # 50 A filled at 110; cash 4,500
    assert sim.cash[0] == pytest.approx(4_500.0)
    step(sim, 0.0, 1.0)  # NAV 10,000 at close 1: B target 200; sell 50 A at 121, buy 200 B at 40
    np.testing.assert_allclose(sim.shares[0], [0.0, 200.0])
    assert sim.cash[0] == pytest.approx(4_500 + 50 * 121 - 200 * 40)  # 2,550
    assert sim.nav[0] == pytest.approx(10_550.0)


def test_whole_shares_round_toward_zero(market):
    sim = sim_for(market, execution="next_close", lot_size=1)
    step(sim, 0.335, 0.335)  # 33.5 A -> 33, 67 B
    np.testing.assert_array_equal(sim.shares[0], [33.0, 67.0])
    assert sim.cash[0] == pytest.approx(10_000 - 33 * 110 - 67 * 50)


def test_whole_shares_scaled_buys_floor_to_lots(market):
    sim = sim_for(market, execution="next_close", lot_size=1)
    step(sim, 0.5, 0.5)  # scale 10,000 / 10,500 -> 47.6 A, 95.2 B -> 47, 95
    np.testing.assert_array_equal(sim.shares[0], [47.0, 95.0])
    assert sim.cash[0] == pytest.approx(10_000 - 47 * 110 - 95 * 50)  # 80


def test_board_lots(market):
    sim = sim_for(market, execution="next_close", lot_size=50)
    step(sim, 0.4, 0.4)  # 40 A -> 0 lots, 80 B -> 1 lot of 50
    np.testing.assert_array_equal(sim.shares[0], [0.0, 50.0])


def test_volume_cap(market):
    sim = sim_for(market, execution="next_close", max_volume_fraction=0.01)
    step(sim, 0.4, 0.4)  # at most 10 shares each of 1,000 volume
    np.testing.assert_array_equal(sim.shares[0], [10.0, 10.0])


def _one_asset(close: list[float], volume: list[float] | None = None) -> MarketData:
    n = len(close)
    return MarketData(
        dates=np.datetime64("2024-01-01") + np.arange(n),
        symbols=("A",),
        close=np.array(close, dtype=float)[:, None],
        volume=None if volume is None else np.array(volume, dtype=float)[:, None],
    )


def _capped_lots(data: MarketData, initial_cash: float = 10_000.0) -> Simulator:
    """Lots of 100, fills capped at 10% of the bar's volume, no costs, next-close fills."""
    rules = TradingRules(
        initial_cash=initial_cash,
        commission_bps=0,
        slippage_bps=0,
        lot_size=100,
        max_volume_fraction=0.1,
        execution="next_close",
    )
    return Simulator(data, rules)


def test_volume_capped_sells_are_whole_lots():
    # 1,000 shares held; the sell bar's volume caps a fill at 10% of 8,766 = 876.6 shares. The
    # cap used to come after the lot rounding: the position ended at 123.4 shares
    sim = _capped_lots(_one_asset([10.0] * 5, [1e9, 1e9, 8766.0, 1e9, 1e9]), 100_000)
    sim.reset(0)
    sim.step_orders(np.array([[1000.0]]))
    sim.step_orders(np.array([[-1000.0]]))  # capped at 876.6 -> 8 lots
    np.testing.assert_array_equal(sim.shares, [[200.0]])
    assert sim.cash[0] == pytest.approx(100_000 - 1000 * 10 + 800 * 10)


def test_volume_capped_buys_are_whole_lots_up_to_the_cap():
    sim = _capped_lots(_one_asset([10.0] * 4, [1e9, 8766.0, 1e9, 1e9]))
    sim.reset(0)
    sim.step_orders(np.array([[950.0]]))  # capped at 876.6, then 8 whole lots
    np.testing.assert_array_equal(sim.shares, [[800.0]])


@pytest.mark.parametrize("relative", [1e-12, 5e-12, 1e-11])
def test_a_lot_rounded_up_by_the_float_guard_never_overdraws_the_cash(relative):
    # the fill is a hair above the price the order was sized at, so the cash cuts the order
    # by that hair; rounding it back up to 10 lots used to leave cash at about -5e-8
    data = _one_asset([10.0, 10.0 * (1 + relative), 10.0])
    rules = TradingRules(commission_bps=0, slippage_bps=0, lot_size=100, execution="next_close")
    sim = Simulator(data, rules)
    sim.reset(0)
    sim.step_weights(np.array([[1.0]]))
    np.testing.assert_array_equal(sim.shares, [[900.0]])
    assert sim.cash[0] >= 0.0
    assert sim.cash[0] == pytest.approx(10_000 - 900 * 10.0 * (1 + relative))


def test_an_exact_fit_still_buys_every_lot():
    # the float guard's purpose: the scale's 1 + 1e-12 safety must not cost a whole lot
    data = _one_asset([10.0, 10.0, 10.0])
    rules = TradingRules(commission_bps=0, slippage_bps=0, lot_size=100, execution="next_close")
    sim = Simulator(data, rules)
    sim.reset(0)
    sim.step_weights(np.array([[1.0]]))
    np.testing.assert_array_equal(sim.shares, [[1000.0]])
    assert sim.cash[0] == 0.0


def test_volume_cap_needs_volume(make_market):
    with pytest.raises(ValueError, match="volume"):
        Simulator(make_market(CLOSE), TradingRules(max_volume_fraction=0.1))


def test_long_only_cannot_sell_more_than_held(market):
    sim = sim_for(market, execution="next_close")
    step(sim, 0.4, 0.4)
    sim.step_orders(np.array([[-100.0, 0.0]]))
    np.testing.assert_allclose(sim.shares[0], [0.0, 80.0])


def test_holding_current_weights_trades_nothing(market):
    sim = sim_for(market, execution="next_open", commission_bps=10, slippage_bps=10)
    step(sim, 0.3, 0.6)
    shares = sim.shares[0].copy()
    for _ in range(2):
        res = step(sim, *sim.weight[0, :-1])
        np.testing.assert_array_equal(sim.shares[0], shares)
        assert res.costs[0] == 0.0
        assert res.turnover[0] == 0.0


# ------------------------------------------------------------------------- shorting
def test_short_sale_with_daily_borrow_cost(market):
    sim = sim_for(
        market,
        execution="next_close",
        allow_short=True,
        max_gross_leverage=2.0,
        borrow_rate=0.252,
        periods_per_year=252,
    )
    res = step(sim, -0.5, 0.5)  # short 50 A at 110 (+5,500), buy 100 B at 50 (-5,000)
    np.testing.assert_allclose(sim.shares[0], [-50.0, 100.0])
    assert res.borrow[0] == pytest.approx(0.001 * 50 * 110)
    assert sim.cash[0] == pytest.approx(10_500 - 5.5)
    assert res.nav[0] == pytest.approx(10_000 - 5.5)
    res = step(sim, *sim.weight[0, :-1])  # hold: A 121, B 40
    assert res.borrow[0] == pytest.approx(0.001 * 50 * 121)
    assert res.nav[0] == pytest.approx(10_494.5 - 6.05 - 50 * 121 + 100 * 40)


def test_long_only_rules_ignore_negative_weights(market):
    sim = sim_for(market, execution="next_close")
    step(sim, -0.5, 0.5)
    np.testing.assert_allclose(sim.shares[0], [0.0, 100.0])


@pytest.mark.parametrize(
    ("weights", "rules", "expected"),
    [
        ([0.2, -0.1, 0.3], {}, [0.2, 0.0, 0.3]),
        ([0.8, 0.4, 0.0], {}, [2 / 3, 1 / 3, 0.0]),
        ([0.5, 0.2, 0.3], {"max_weight": 0.4}, [0.4, 0.2, 0.3]),
        # gross 3 > 2: scaled by 2/3 -> (-0.667, 0.667, 0.667), net 0.667 <= 1
        (
            [-1.0, 1.0, 1.0],
            {"allow_short": True, "max_gross_leverage": 2.0},
            [-2 / 3, 2 / 3, 2 / 3],
        ),
        # gross 1.6 ok, net 1.4 > 1: longs 1.5 shrink to 1.1
        ([-0.1, 0.75, 0.75], {"allow_short": True, "max_gross_leverage": 2.0}, [-0.1, 0.55, 0.55]),
    ],
)
def test_project_weights(weights, rules, expected):
    out = project_weights(np.array([weights]), TradingRules(**rules))
    np.testing.assert_allclose(out[0], expected)


def test_rules_reject_bad_values():
    for bad in (
        {"initial_cash": 0},
        {"commission_bps": -1},
        {"execution": "tomorrow"},
        {"lot_size": 0},
        {"max_gross_leverage": 2.0},
        {"max_volume_fraction": 2.0},
        {"slippage_bps": float("nan")},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TradingRules(**bad)


# ---------------------------------------------------------------- bounds and state
def test_cannot_step_past_the_data(market):
    sim = sim_for(market)
    for _ in range(3):
        step(sim, 0.5, 0.5)
    with pytest.raises(RuntimeError, match="last decision date"):
        step(sim, 0.5, 0.5)


def test_reset_rejects_out_of_range_start(market):
    sim = Simulator(market)
    with pytest.raises(ValueError, match="outside"):
        sim.reset(3)


def test_breached_on_ruin(make_market):
    crash = make_market([[100.0], [100.0], [60.0], [10.0]])
    sim = Simulator(crash, TradingRules(**FREE, execution="close"))
    sim.reset(0)
    sim.step_weights(np.array([[1.0]]))
    sim.step_weights(sim.weight[:, :-1])  # -40% from the peak: no rule of the simulator's
    assert not sim.breached()[0]
    sim2 = Simulator(crash, TradingRules(**FREE, ruin_fraction=0.2, execution="close"))
    sim2.reset(1)
    sim2.step_weights(np.array([[1.0]]))
    assert not sim2.breached()[0]  # NAV 6,000 > 2,000
    sim2.step_weights(sim2.weight[:, :-1])
    assert sim2.breached()[0]  # NAV 1,000


# ---------------------------------------------------------------------- save/restore
def bits(*arrays: np.ndarray) -> list[bytes]:
    """The arrays' bytes: equal only if every float is the same bit for bit (signed zeros too)."""
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


@pytest.mark.parametrize("execution", ["next_open", "next_close", "close"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_envs", [1, 3])
def test_set_state_then_step_equals_the_uninterrupted_run_bit_for_bit(execution, dtype, n_envs):
    data = gbm_market(n_assets=4, n_periods=40, seed=1)
    rules = TradingRules(execution=execution, commission_bps=5.0, slippage_bps=5.0, min_fee=1.0)
    weights = np.random.default_rng(0).dirichlet(np.ones(5), size=(12, n_envs))[:, :, :4]
    starts = np.arange(n_envs) * 2
    whole = Simulator(data, rules, n_envs, dtype=dtype)
    whole.reset(starts)
    for w in weights[:6]:
        whole.step_weights(w)
    saved = [whole.get_state(i) for i in range(n_envs)]
    resumed = Simulator(data, rules, n_envs, dtype=dtype)
    resumed.reset(np.full(n_envs, 20))  # elsewhere: set_state replaces the whole portfolio
    resumed.step_weights(weights[0])
    for i, state in enumerate(saved):
        resumed.set_state(state, i)
    for w in weights[6:]:
        a, b = whole.step_weights(w), resumed.step_weights(w)
        fields = ("nav_before", "nav", "peak_nav", "commission", "slippage", "costs", "turnover")
        assert bits(*(getattr(a, f) for f in fields)) == bits(*(getattr(b, f) for f in fields))
        assert bits(whole.shares, whole.holdings, whole.mark, whole.t) == bits(
            resumed.shares, resumed.holdings, resumed.mark, resumed.t
        )


def test_get_state_is_a_copy_and_set_state_checks_the_date(market):
    sim = sim_for(market, execution="next_close")
    step(sim, 0.4, 0.4)
    state = sim.get_state()
    assert state["t"] == 1 and state["nav"] == sim.nav[0]
    state["shares"][:] = 0.0
    state["holdings"][:] = 0.0
    assert sim.shares[0].sum() > 0 and sim.holdings[0, :-1].sum() > 0
    with pytest.raises(ValueError, match="outside"):
        sim.set_state({**sim.get_state(), "t": len(market.dates)})


# ------------------------------------------------------------------------ recording
def test_history_records_fills_and_daily_snapshots(market):
    sim = sim_for(market, execution="next_close", commission_bps=10.0, record=True)
    step(sim, 0.5, 0.0)
    step(sim, 0.0, 1.0)
    hist = sim.history(0)
    dates = market.dates
    np.testing.assert_array_equal(hist.snapshot_dates, dates[:3])
    np.testing.assert_allclose(hist.nav, [10_000.0, sim.history(0).nav[1], sim.nav[0]])
    np.testing.assert_allclose(hist.cash[-1], sim.cash[0])
    np.testing.assert_allclose(hist.shares[-1], sim.shares[0])
    fills = hist.fills_frame()
    assert list(fills["symbol"]) == ["A", "A", "B"]
    assert list(fills["side"]) == ["buy", "sell", "buy"]
    assert list(fills["date"].dt.strftime("%Y-%m-%d")) == [
        str(dates[1]),
        str(dates[2]),
        str(dates[2]),
    ]
    np.testing.assert_allclose(fills["price"], [110.0, 121.0, 40.0])
    np.testing.assert_allclose(fills["cost"], fills["shares"] * fills["price"] * 0.001)
    # cash reconciles from the fills alone
    signed = np.where(fills["side"] == "buy", 1.0, -1.0)
    cash = 10_000 - np.sum(signed * fills["shares"] * fills["price"] + fills["cost"])
    assert cash == pytest.approx(sim.cash[0])


def test_history_restarts_at_reset(market):
    sim = sim_for(market, record=True)
    step(sim, 0.5, 0.5)
    sim.reset(1)
    step(sim, 0.2, 0.2)
    hist = sim.history(0)
    assert len(hist.nav) == 2
    assert hist.snapshot_dates[0] == market.dates[1]
    assert len(hist.fills_frame()) == 2


def test_history_requires_recording(market):
    with pytest.raises(RuntimeError, match="record=True"):
        sim_for(market).history()


# ------------------------------------------------------------------ batch semantics
def test_batch_envs_are_independent_and_match_single_runs(market):
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(3), size=(3, 3))[:, :, :2]  # (steps, envs, assets)
    rules = dict(commission_bps=7.0, slippage_bps=3.0, min_fee=0.5, lot_size=1)
    batch = sim_for(market, n_envs=3, **rules)
    singles = [sim_for(market, **rules) for _ in range(3)]
    for k in range(3):
        batch.step_weights(weights[k])
        for i, s in enumerate(singles):
            s.step_weights(weights[k, i : i + 1])
    for i, s in enumerate(singles):
        assert batch.nav[i] == s.nav[0]
        np.testing.assert_array_equal(batch.shares[i], s.shares[0])


# ------------------------------------------------------ the identity and properties
def check_identity(sim: Simulator, before: dict, res) -> None:
    """NAV(t+1) = NAV(t) + PnL - costs, with PnL split at the fill price."""
    t0 = before["t"]
    data, execution = sim.data, sim.rules.execution
    fill = {"next_open": data.open, "next_close": data.close, "close": data.close}[execution][
        t0 if execution == "close" else t0 + 1
    ]
    close_t, close_next = data.close[t0], data.close[t0 + 1]
    pnl = (before["shares"] * (fill - close_t)).sum(1) + (sim.shares * (close_next - fill)).sum(1)
    expected = before["nav"] + pnl - res.costs
    np.testing.assert_allclose(sim.nav, expected, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(sim.nav, sim.cash + (sim.shares * close_next).sum(1), rtol=1e-12)


prices = st.lists(st.floats(0.5, 500.0), min_size=3, max_size=3)


@settings(max_examples=150, deadline=None)
@given(
    close=st.lists(prices, min_size=6, max_size=6),
    gaps=st.lists(st.lists(st.floats(0.9, 1.1), min_size=3, max_size=3), min_size=6, max_size=6),
    actions=st.lists(
        st.lists(st.floats(-1.0, 2.0), min_size=3, max_size=3), min_size=5, max_size=5
    ),
    execution=st.sampled_from(["next_open", "next_close", "close"]),
    commission=st.sampled_from([0.0, 5.0, 50.0]),
    slippage=st.sampled_from([0.0, 10.0]),
    min_fee=st.sampled_from([0.0, 1.0]),
    lot=st.sampled_from([None, 1.0, 7.0]),
    volume=st.lists(st.floats(1.0, 400.0), min_size=6, max_size=6),
    cap=st.sampled_from([None, 0.5]),
)
def test_long_only_invariants(
    close, gaps, actions, execution, commission, slippage, min_fee, lot, volume, cap
):
    """Random prices and actions: cash >= 0, shares >= 0 (whole lots with a lot size, also
    under a volume cap), and the identity holds every step."""
    close_arr = np.array(close)
    open_arr = close_arr * np.array(gaps)
    data = MarketData(
        dates=np.datetime64("2024-01-01") + np.arange(6),
        symbols=("A", "B", "C"),
        close=close_arr,
        open=open_arr,
        high=np.maximum(open_arr, close_arr),
        low=np.minimum(open_arr, close_arr),
        volume=np.repeat(np.array(volume)[:, None], 3, axis=1),
    )
    rules = TradingRules(
        execution=execution,
        commission_bps=commission,
        slippage_bps=slippage,
        min_fee=min_fee,
        lot_size=lot,
        max_volume_fraction=cap,
    )
    sim = Simulator(data, rules)
    sim.reset(0)
    for a in actions:
        before = {"t": sim.t.copy(), "shares": sim.shares.copy(), "nav": sim.nav.copy()}
        res = sim.step_weights(np.array([a]))
        assert sim.cash[0] >= 0.0
        assert np.all(sim.shares >= 0.0)
        if lot:
            np.testing.assert_allclose(sim.shares / lot, np.round(sim.shares / lot), atol=1e-9)
        check_identity(sim, before, res)


@settings(max_examples=100, deadline=None)
@given(
    close=st.lists(prices, min_size=6, max_size=6),
    actions=st.lists(
        st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3), min_size=5, max_size=5
    ),
    leverage=st.sampled_from([1.0, 1.5, 3.0]),
)
def test_short_invariants(close, actions, leverage):
    """With shorting: targets within the leverage cap, identity holds, trades never overdraw."""
    data = MarketData(
        dates=np.datetime64("2024-01-01") + np.arange(6),
        symbols=("A", "B", "C"),
        close=np.array(close),
    )
    rules = TradingRules(
        allow_short=True,
        max_gross_leverage=leverage,
        borrow_rate=0.05,
        commission_bps=5.0,
        slippage_bps=5.0,
    )
    sim = Simulator(data, rules)
    sim.reset(0)
    for a in actions:
        w = project_weights(np.array([a]), rules)
        assert np.abs(w).sum() <= leverage + 1e-9
        assert w.sum() <= 1.0 + 1e-9
        before = {"t": sim.t.copy(), "shares": sim.shares.copy(), "nav": sim.nav.copy()}
        cash_before = sim.cash[0]
        res = sim.step_weights(np.array([a]))
        check_identity(sim, before, res)
        if cash_before >= 0.0:  # trading never overdraws; only the borrow charge can
            assert sim.cash[0] + res.borrow[0] >= -1e-9 * abs(before["nav"][0])  # float dust


def test_simulator_module_imports_neither_gymnasium_nor_pandas_at_module_level():
    import ast
    import inspect

    import marketarena.envs.simulator as module

    tree = ast.parse(inspect.getsource(module))
    top_level = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert "gymnasium" not in top_level and "pandas" not in top_level
