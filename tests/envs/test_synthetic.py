"""Seeded synthetic markets: determinism, shapes, bar consistency and GBM statistics.

The statistical checks use fixed seeds (so they are deterministic) and tolerances of a few
standard errors computed from the parameters, never hand-tuned bands.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marketarena.envs.data import MarketData
from marketarena.envs.synthetic import gbm_market, regime_switching_market

DT = 1.0 / 252.0
GENERATORS = [gbm_market, regime_switching_market]


def log_returns(data: MarketData, start_price: float = 100.0) -> np.ndarray:
    """Close-to-close log returns, the first one from the start price."""
    prices = np.vstack([np.full((1, data.n_assets), start_price), data.close])
    return np.diff(np.log(prices), axis=0)


def assert_same(a: MarketData, b: MarketData) -> None:
    assert a.fields == b.fields
    for field in a.fields:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    np.testing.assert_array_equal(a.dates, b.dates)
    assert a.symbols == b.symbols
    assert a.content_hash() == b.content_hash()


# ------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("make", GENERATORS)
def test_same_seed_gives_identical_data(make):
    assert_same(make(4, 300, seed=11), make(4, 300, seed=11))


@pytest.mark.parametrize("make", GENERATORS)
def test_different_seed_gives_different_data(make):
    a, b = make(4, 300, seed=11), make(4, 300, seed=12)
    assert a.content_hash() != b.content_hash()
    for field in ("open", "high", "low", "close", "volume"):
        assert not np.allclose(getattr(a, field), getattr(b, field)), field
    np.testing.assert_array_equal(a.dates, b.dates)  # the calendar does not depend on the seed


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("make", GENERATORS)
@pytest.mark.parametrize(("n_assets", "n_periods"), [(1, 2), (3, 10), (7, 250), (12, 31)])
def test_shapes_calendar_and_symbols(make, n_assets, n_periods):
    data = make(n_assets, n_periods, seed=3)
    assert (data.n_periods, data.n_assets) == (n_periods, n_assets)
    assert data.fields == ("open", "high", "low", "close", "volume")
    for field in data.fields:
        assert getattr(data, field).shape == (n_periods, n_assets)
    assert data.dates.shape == (n_periods,)
    expected = pd.bdate_range("2000-01-03", periods=n_periods).to_numpy().astype("M8[D]")
    np.testing.assert_array_equal(data.dates, expected)
    assert str(data.dates[0]) == "2000-01-03"
    assert np.all(pd.DatetimeIndex(data.dates).day_of_week < 5)
    width = 2 if n_assets > 10 else 1
    assert data.symbols == tuple(f"SYN{i:0{width}d}" for i in range(n_assets))


def test_symbol_names_and_dates_pinned():
    data = gbm_market(11, 3, start_date="2021-01-01")  # a Friday
    assert data.symbols[:3] == ("SYN00", "SYN01", "SYN02") and data.symbols[-1] == "SYN10"
    expected = np.array(["2021-01-01", "2021-01-04", "2021-01-05"], dtype="M8[D]")
    np.testing.assert_array_equal(data.dates, expected)
    saturday = gbm_market(1, 2, start_date="2021-01-02")
    assert str(saturday.dates[0]) == "2021-01-04"
    assert gbm_market(3, 5, seed=9).name == "gbm(n=3,seed=9)"
    assert regime_switching_market(2, 5, seed=4).name == "regime(n=2,seed=4)"


# ------------------------------------------------------------------- bar consistency
@pytest.mark.parametrize("make", GENERATORS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bars_are_consistent(make, seed):
    data = make(6, 2000, seed=seed)
    o, h, lo, c, v = data.open, data.high, data.low, data.close, data.volume
    assert np.all(lo <= o) and np.all(o <= h)
    assert np.all(lo <= c) and np.all(c <= h)
    assert np.all(lo > 0) and np.all(np.isfinite(h))
    assert np.all(v >= 0)
    np.testing.assert_array_equal(v, np.round(v))  # whole shares
    # the wicks are real: most bars have high strictly above max(open, close)
    assert np.mean(h > np.maximum(o, c)) > 0.9


def test_zero_volatility_gbm_is_exact_by_hand():
    # sigma = 0: log return mu*dt every day, the open gaps 0.3 of it, no wicks
    data = gbm_market(2, 5, seed=0, mu=[0.08, -0.126], sigma=0.0, start_price=50.0)
    t = np.arange(1, 6)[:, None]
    daily = np.array([0.08, -0.126]) * DT
    close = 50.0 * np.exp(daily * t)
    np.testing.assert_allclose(data.close, close, rtol=1e-13)
    prev = np.vstack([[50.0, 50.0], close[:-1]])
    np.testing.assert_allclose(data.open, prev * np.exp(0.3 * daily), rtol=1e-13)
    np.testing.assert_allclose(data.high, np.maximum(data.open, data.close), rtol=1e-13)
    np.testing.assert_allclose(data.low, np.minimum(data.open, data.close), rtol=1e-13)
    assert data.close[-1, 0] == pytest.approx(50.0 * np.exp(5 * 0.08 / 252), rel=1e-13)


def test_per_asset_sigma_zero_is_deterministic_while_others_move():
    a = gbm_market(3, 50, seed=1, mu=0.05, sigma=[0.0, 0.3, 0.3])
    b = gbm_market(3, 50, seed=2, mu=0.05, sigma=[0.0, 0.3, 0.3])
    np.testing.assert_allclose(a.close[:, 0], 100 * np.exp(0.05 * DT * np.arange(1, 51)))
    np.testing.assert_array_equal(a.close[:, 0], b.close[:, 0])
    assert not np.allclose(a.close[:, 1:], b.close[:, 1:])


# ------------------------------------------------------------------ GBM statistics
def test_gbm_drift_and_volatility_match_parameters():
    n, t = 20, 50_000  # ~198 years per asset; the calendar stays inside pandas' range
    mu = np.linspace(-0.05, 0.15, n)
    sigma = np.linspace(0.1, 0.5, n)
    data = gbm_market(n, t, seed=2024, mu=mu, sigma=sigma, correlation=0.0)
    r = log_returns(data)
    years = t * DT

    # annualised drift of log returns: mu - sigma^2/2, standard error sigma / sqrt(years)
    drift = r.mean(axis=0) / DT
    expected_drift = mu - 0.5 * sigma**2
    se_drift = sigma / np.sqrt(years)
    z = (drift - expected_drift) / se_drift
    assert np.all(np.abs(z) < 4.5), z
    # pooled over the independent assets the error shrinks by sqrt(n): sharp enough to tell
    # mu - sigma^2/2 from mu (mean sigma^2/2 is about 0.048, about 10 standard errors)
    pooled_se = np.sqrt(np.sum(sigma**2)) / n / np.sqrt(years)
    assert abs(np.mean(drift - expected_drift)) < 4 * pooled_se
    assert np.mean(0.5 * sigma**2) > 8 * pooled_se

    # annualised volatility: standard error of a sample standard deviation ~ sigma / sqrt(2T)
    vol = r.std(axis=0, ddof=1) / np.sqrt(DT)
    se_vol = sigma / np.sqrt(2 * t)
    assert np.all(np.abs(vol - sigma) < 5 * se_vol), (vol - sigma) / se_vol

    # arithmetic drift: annualised mean simple return ~ mu (same standard error to first order)
    simple = np.expm1(r).mean(axis=0) / DT
    assert np.all(np.abs(simple - mu) < 4.5 * se_drift)


def test_gbm_correlation_matches_parameter():
    rho, t = 0.5, 20_000
    data = gbm_market(4, t, seed=5, sigma=0.2, correlation=rho)
    corr = np.corrcoef(log_returns(data), rowvar=False)
    pairs = corr[np.triu_indices(4, k=1)]
    se = (1 - rho**2) / np.sqrt(t)
    assert np.all(np.abs(pairs - rho) < 5 * se), pairs
    independent = np.corrcoef(log_returns(gbm_market(4, t, seed=5, correlation=0.0)), rowvar=False)
    assert np.all(np.abs(independent[np.triu_indices(4, k=1)]) < 5 / np.sqrt(t))


# ------------------------------------------------------------------ regime switching
def test_regime_switching_with_one_absorbing_regime_ignores_the_other():
    kwargs = dict(regime_mu=(0.1, -0.5), transition=((1.0, 0.0), (0.0, 1.0)), seed=8)
    a = regime_switching_market(3, 400, regime_sigma=(0.2, 0.9), **kwargs)
    b = regime_switching_market(3, 400, regime_sigma=(0.2, 0.05), **kwargs)
    assert_same(a, b)  # the chain starts in regime 0 and never leaves it


def test_regime_switching_without_noise_or_jumps_is_exact():
    data = regime_switching_market(
        2,
        30,
        regime_mu=(0.12, -0.3),
        regime_sigma=(0.0, 0.0),
        transition=((1.0, 0.0), (0.0, 1.0)),
        jump_intensity=0.0,
        start_price=10.0,
    )
    np.testing.assert_allclose(data.close[:, 1], 10.0 * np.exp(0.12 * DT * np.arange(1, 31)))


def test_regime_switching_jumps_have_the_requested_size_and_rate():
    t, n, intensity = 5000, 4, 126.0  # lambda*dt = 0.5 jumps per asset per day
    data = regime_switching_market(
        n,
        t,
        seed=3,
        regime_mu=(0.0,),
        regime_sigma=(0.0,),
        transition=((1.0,),),
        jump_intensity=intensity,
        jump_mean=-0.02,
        jump_std=0.0,
    )
    jumps = log_returns(data) / -0.02  # every log return is a whole number of jumps
    np.testing.assert_allclose(jumps, np.round(jumps), atol=1e-9)
    lam = intensity * DT
    assert abs(jumps.mean() - lam) < 4 * np.sqrt(lam / (t * n))


def test_regime_switching_volatility_per_regime():
    # equal drifts, very different volatilities, jumps off, sticky regimes
    data = regime_switching_market(
        1,
        40_000,
        seed=6,
        regime_mu=(0.0, 0.0),
        regime_sigma=(0.1, 0.4),
        jump_intensity=0.0,
        transition=((0.99, 0.01), (0.01, 0.99)),
    )
    t, switch = 40_000, 0.01
    var = log_returns(data).var() / DT
    # the stationary distribution is (1/2, 1/2), so the annual variance is (0.1^2 + 0.4^2) / 2.
    # Its error is dominated by the time spent in each regime: for this chain the occupancy
    # fraction f has variance f(1-f)(1+l)/((1-l)T), l = 1 - 2*switch, and var = 0.16 - 0.15 f.
    expected = (0.1**2 + 0.4**2) / 2
    lam = 1 - 2 * switch
    se_f = np.sqrt(0.25 * (1 + lam) / ((1 - lam) * t))
    assert abs(var - expected) < 4 * 0.15 * se_f
    assert 0.1**2 < var < 0.4**2


# ------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_assets": 0}, "n_assets >= 1"),
        ({"n_periods": 1}, "n_periods >= 2"),
        ({"sigma": -0.1}, "sigma must be >= 0"),
        ({"sigma": [0.2, -0.1, 0.2]}, "sigma must be >= 0"),
        ({"correlation": 1.0}, r"correlation must be in \[0, 1\)"),
        ({"correlation": -0.2}, r"correlation must be in \[0, 1\)"),
        ({"mu": [0.1, 0.2]}, "broadcast"),
        ({"start_price": 0.0}, "non-positive"),
    ],
)
def test_gbm_bad_arguments(kwargs, match):
    args = {"n_assets": 3, "n_periods": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        gbm_market(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_assets": 0}, "n_assets >= 1"),
        ({"n_periods": 1}, "n_periods >= 2"),
        ({"regime_sigma": (0.1,)}, "2 regimes need 2 sigmas"),
        ({"transition": ((1.0,),)}, "2x2 transition"),
        ({"transition": ((0.5, 0.4), (0.5, 0.5))}, "summing to 1"),
        ({"transition": ((1.5, -0.5), (0.5, 0.5))}, "probabilities"),
        ({"regime_sigma": (0.1, -0.2)}, "regime_sigma must be >= 0"),
        ({"jump_std": -0.01}, "jump_std must be >= 0"),
        ({"jump_intensity": -1.0}, "jump_intensity"),
        ({"correlation": 1.0}, "correlation"),
    ],
)
def test_regime_switching_bad_arguments(kwargs, match):
    args = {"n_assets": 3, "n_periods": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        regime_switching_market(**args)
