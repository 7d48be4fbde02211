"""Multi-strategy allocation: the methods against hand-computed and closed-form allocations,
sleeves that drift and rebalance, members that keep their own sleeves, no look-ahead, and
clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from marketarena.agents.baselines import BuyAndHoldAgent, EqualWeightAgent
from marketarena.agents.reference import CashAgent
from marketarena.envs.errors import ConfigError
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation.allocation import ALLOCATION_METHODS, SleeveAllocator, allocate
from marketarena.evaluation.evaluate import EvaluationConfig
from marketarena.evaluation.runner import run_backtest


def _returns(seed: int = 0, t: int = 250, vols=(0.01, 0.02, 0.03), corr: float = 0.3):
    rng = np.random.default_rng(seed)
    k = len(vols)
    c = np.full((k, k), corr) + (1 - corr) * np.eye(k)
    cov = c * np.outer(vols, vols)
    return rng.multivariate_normal(np.zeros(k), cov, size=t)


# ------------------------------------------------------------------- the methods
def test_inverse_volatility_by_hand():
    r = _returns()
    inv = 1 / r.std(axis=0, ddof=1)
    np.testing.assert_allclose(allocate("inverse_volatility", r), inv / inv.sum(), rtol=1e-12)


def test_risk_parity_equalises_the_risk_contributions():
    r = _returns()
    w = allocate("risk_parity", r)
    cov = np.cov(r, rowvar=False)
    contributions = w * (cov @ w) / (w @ cov @ w)
    np.testing.assert_allclose(contributions, 1 / 3, atol=2e-3)
    assert w[0] > w[1] > w[2]  # the calmest sleeve gets the most weight


def test_min_variance_matches_the_closed_form_for_two_sleeves():
    r = _returns(vols=(0.01, 0.02), corr=0.2)
    cov = np.cov(r, rowvar=False)
    a, b, c = cov[0, 0], cov[1, 1], cov[0, 1]
    first = (b - c) / (a + b - 2 * c)  # interior here: long-only binds nowhere
    assert 0 < first < 1
    np.testing.assert_allclose(allocate("min_variance", r), [first, 1 - first], atol=1e-4)


def test_hrp_of_two_sleeves_is_inverse_variance():
    # with two sleeves the recursive bisection is one split, weighted by inverse variance
    r = _returns(vols=(0.01, 0.03), corr=0.5)
    var = r.var(axis=0, ddof=1)
    np.testing.assert_allclose(allocate("hrp", r), (1 / var) / (1 / var).sum(), atol=1e-6)


@pytest.mark.parametrize("method", ALLOCATION_METHODS)
def test_every_method_gives_weights_and_copes_with_an_all_cash_sleeve(method):
    r = _returns()
    r[:, 1] = 0.0  # a sleeve in cash: no variance
    market = r.mean(axis=1, keepdims=True) if method == "factor" else None
    w = allocate(method, r, market)
    assert w.shape == (3,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert np.isfinite(w).all()


def _factor_covariance_by_hand(r: np.ndarray, f: np.ndarray) -> np.ndarray:
    """OLS of each sleeve on the factor with an intercept: C = b b' var(f) + diag(var(e))."""
    x = np.column_stack([np.ones(len(f)), f])
    coef, *_ = np.linalg.lstsq(x, r, rcond=None)
    residuals = r - x @ coef
    b = coef[1:]
    return b.T @ np.atleast_2d(np.cov(f, rowvar=False)) @ b + np.diag(residuals.var(axis=0, ddof=1))


def test_factor_allocation_is_risk_parity_on_the_factor_covariance_by_hand():
    rng = np.random.default_rng(4)
    f = rng.normal(0, 0.01, (120, 1))
    betas = np.array([1.2, 0.6, 0.1])
    r = f * betas + rng.normal(0, 0.004, (120, 3))
    w = allocate("factor", r, f)
    cov = _factor_covariance_by_hand(r, f)
    contributions = w * (cov @ w) / (w @ cov @ w)
    np.testing.assert_allclose(contributions, 1 / 3, atol=2e-3)
    assert w[2] > w[1] > w[0]  # the lowest beta carries the least risk per unit


def test_factor_allocation_ignores_residual_correlation_that_the_sample_covariance_sees():
    # two sleeves share a residual component the market factor does not explain: the sample
    # covariance sees it and risk parity cuts them; the one-factor model does not
    rng = np.random.default_rng(5)
    f = rng.normal(0, 0.01, (250, 1))
    common = rng.normal(0, 0.01, 250)
    r = np.column_stack([common, common, np.zeros(250)]) + rng.normal(0, 0.003, (250, 3))
    r += f * np.array([0.5, 0.5, 0.5])
    sample = allocate("risk_parity", r)
    factor = allocate("factor", r, f)
    assert sample[2] > factor[2] + 0.05
    cov = _factor_covariance_by_hand(r, f)
    np.testing.assert_allclose(factor * (cov @ factor) / (factor @ cov @ factor), 1 / 3, atol=2e-3)


def test_factor_allocation_needs_the_factor():
    with pytest.raises(ConfigError, match="factor returns"):
        allocate("factor", _returns())


def test_the_allocators_market_factor_is_the_equal_weighted_universe_return():
    data = gbm_market(3, 60, seed=6)
    allocator = SleeveAllocator(
        [CashAgent(), BuyAndHoldAgent()], method="factor", window=10, min_periods=5
    )
    result = run_backtest(allocator, _env(data, window=2, episode_length=30), seed=0)
    rows = [data.index_of(str(d), "right") for d in result.dates]  # the episode's bars
    simple = data.close[rows][1:] / data.close[rows][:-1] - 1.0
    # the window holds the last 10 periods that ended at a decision (the last step's period
    # ends at the final mark, after the last decision)
    np.testing.assert_allclose(allocator._market.matrix()[:, 0], simple[-11:-1].mean(axis=1))
    assert allocator.diagnostics()["method"] == "factor"


def test_an_unknown_method_lists_the_methods():
    with pytest.raises(ConfigError, match="the methods are"):
        allocate("kelly", _returns())


# ------------------------------------------------------------------- the allocator
def _env(data, **kwargs):
    return {
        "data": data,
        "settings": None,
        "rules": {"commission_bps": 0, "slippage_bps": 0},
        **kwargs,
    }


def test_sleeves_drift_with_their_returns_and_rebalance_on_schedule():
    data = gbm_market(3, 80, seed=1)
    allocator = SleeveAllocator(
        [CashAgent(), BuyAndHoldAgent()], method="equal", rebalance_every=10, min_periods=5
    )
    result = run_backtest(allocator, _env(data, window=2, episode_length=30), seed=0)
    # the portfolio's cash is the cash sleeve plus buy-and-hold's (none): after a rebalance
    # it is 1/2, and between rebalances it drifts as the invested sleeve moves
    cash = result.weights[1:, -1]
    d = allocator.diagnostics()
    assert d["rebalances"] == 3  # steps 0, 10, 20 of 30
    assert d["target_weights"] == [0.5, 0.5]
    invested_growth = result.nav[1:] / result.nav[:-1]
    assert not np.allclose(cash, 0.5)  # drifted
    # a rebalance brings the cash sleeve back to 1/2 of the NAV, at the fill's prices
    np.testing.assert_allclose(cash[[0, 10, 20]], 0.5, atol=0.02)
    assert len(invested_growth) == 30


def test_a_member_that_holds_keeps_its_own_sleeve():
    # buy-and-hold buys once: in its sleeve it holds its shares, and its sleeve is not the
    # whole portfolio's weights (which hold the cash sleeve too)
    data = gbm_market(2, 60, seed=2)
    allocator = SleeveAllocator([CashAgent(), BuyAndHoldAgent()], method="equal", min_periods=5)
    run_backtest(allocator, _env(data, window=2, episode_length=20), seed=0)
    held = allocator._holdings[1]
    assert held[-1] == pytest.approx(0.0)  # buy-and-hold's sleeve is fully invested
    assert allocator._holdings[0][-1] == 1.0  # the cash sleeve is cash


@pytest.mark.parametrize("method", ["risk_parity", "factor"])
def test_the_allocator_reads_no_future_prices(method, perturb_future):
    data = gbm_market(3, 200, seed=3)
    members = lambda: [EqualWeightAgent(5), BuyAndHoldAgent(), CashAgent()]  # noqa: E731
    t = 120
    future = perturb_future(data, t)
    runs = []
    for d in (data, future):
        allocator = SleeveAllocator(members(), method=method, rebalance_every=5)
        runs.append(run_backtest(allocator, _env(d, window=2, episode_length=None), seed=0))
    a, b = runs
    k = t - 2  # the rows before the perturbed dates (the episode starts after the window)
    np.testing.assert_array_equal(a.weights[:k], b.weights[:k])
    assert not np.array_equal(a.weights, b.weights)


def test_costs_are_charged_on_the_netted_trades():
    # two members that trade against each other every day: the allocator's portfolio does
    # not move, so it pays nothing, though each sleeve alone would churn
    data = gbm_market(2, 40, seed=4)

    class Flip:
        def __init__(self, first: int) -> None:
            self.name, self.first = f"flip{first}", first

        def reset(self, *, seed=None):
            self.step = 0

        def act(self, observation, info):
            self.step += 1
            w = np.zeros(3)
            w[(self.first + self.step) % 2] = 1.0
            return w

    allocator = SleeveAllocator([Flip(0), Flip(1)], method="equal", min_periods=5)
    rules = {"commission_bps": 10.0, "slippage_bps": 10.0}
    env = {"data": data, "window": 2, "episode_length": 20, "rules": rules, "random_start": False}
    result = run_backtest(allocator, env, seed=0)
    # each sleeve alone would turn its half over every day (costing what the first day's
    # buy of the whole portfolio cost); netted, only the sleeves' drift is traded
    assert result.costs[1:].mean() < 0.1 * result.costs[0]


def test_bad_allocators_are_refused():
    with pytest.raises(ConfigError, match="at least two strategies"):
        SleeveAllocator([CashAgent()])
    with pytest.raises(ConfigError, match="unknown allocation method"):
        SleeveAllocator([CashAgent(), BuyAndHoldAgent()], method="kelly")
    with pytest.raises(ConfigError, match="drift_band"):
        SleeveAllocator([CashAgent(), BuyAndHoldAgent()], drift_band=1.5)
    with pytest.raises(ConfigError, match="at least two strategies"):
        EvaluationConfig(agents=("equal_weight",), allocations=("hrp",)).validate()
    with pytest.raises(ConfigError, match="unknown allocation method"):
        EvaluationConfig(agents=("a", "b"), allocations=("kelly",)).validate()


def test_sleeves_keep_drifting_after_the_window_is_full():
    # a window of 5 returns fills on step 6; the sleeves must still drift after it
    data = gbm_market(2, 60, seed=5)
    allocator = SleeveAllocator(
        [CashAgent(), BuyAndHoldAgent()], method="equal", window=5, min_periods=5,
        rebalance_every=1000,
    )  # fmt: skip
    result = run_backtest(allocator, _env(data, window=2, episode_length=30), seed=0)
    cash = result.weights[1:, -1]
    assert len(set(np.round(cash[10:], 12))) > 10  # still moving with the invested sleeve
    history = allocator.diagnostics()["sleeve_returns"]
    assert len(history["returns"]) == 29 and len(history["dates"]) == 29
    assert all(r[0] == 0.0 for r in history["returns"])  # the cash sleeve earns nothing


def test_performance_weights_are_a_softmax_of_the_trailing_sharpe_ratios():
    rng = np.random.default_rng(9)
    r = rng.normal(0.0, 0.01, size=(63, 2)) + np.array([0.004, -0.004])
    sharpe = r.mean(axis=0) / r.std(axis=0, ddof=1) * np.sqrt(252)
    expected = np.exp(sharpe - sharpe.max()) / np.exp(sharpe - sharpe.max()).sum()
    np.testing.assert_allclose(allocate("performance", r), expected, rtol=1e-9)
    assert allocate("performance", r)[0] > 0.5
