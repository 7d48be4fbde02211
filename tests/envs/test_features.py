"""Point-in-time features: hand-computed values, pandas references, and no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from marketarena.envs import features as features_module
from marketarena.envs.data import MarketData
from marketarena.envs.features import (
    available_features,
    compute_features,
    log_return,
    log_return_z,
    momentum_z_20,
    price_to_sma_20,
    register_feature,
    volatility_20,
    volatility_ratio,
)
from marketarena.envs.synthetic import gbm_market

#: first row at which each built-in feature is defined for every symbol
BUILTIN_FIRST_VALID = {
    "log_return": 1,
    "log_return_5": 5,
    "price_to_sma_20": 19,
    "volatility_20": 20,
    "high_low_range": 0,
    "close_to_open": 0,
    "log_volume_change": 1,
    "log_return_z": 21,
    "momentum_z_20": 21,
    "volatility_ratio": 60,
    "log_volatility_20": 20,
}
NORMALISED = ("log_return_z", "momentum_z_20", "volatility_ratio")
OHLC_ONLY = ("high_low_range", "close_to_open", "log_volume_change")


@pytest.fixture
def scratch_registry():
    """Names registered by a test are removed afterwards, so tests stay independent."""
    before = set(features_module._REGISTRY)
    yield
    for name in set(features_module._REGISTRY) - before:
        del features_module._REGISTRY[name]


def days(n: int) -> np.ndarray:
    return np.datetime64("2020-01-01") + np.arange(n)


def three_rows() -> MarketData:
    return MarketData(
        dates=np.array(["2020-01-02", "2020-01-03", "2020-01-06"], dtype="M8[D]"),
        symbols=("AAA", "BBB"),
        close=[[100.0, 50.0], [110.0, 40.0], [99.0, 60.0]],
        name="three",
    )


def ohlcv_panel(seed: int = 1, n_periods: int = 80) -> MarketData:
    return gbm_market(3, n_periods, seed=seed, sigma=0.3)


def spliced(base: MarketData, other: MarketData, t: int) -> MarketData:
    """``base`` up to and including row ``t``, ``other``'s (valid) bars after it."""
    arrays = {
        f: np.vstack([getattr(base, f)[: t + 1], getattr(other, f)[t + 1 :] * 1.7])
        if f != "volume"
        else np.vstack([base.volume[: t + 1], other.volume[t + 1 :] + 12345.0])
        for f in base.fields
    }
    return MarketData(dates=base.dates, symbols=base.symbols, name="spliced", **arrays)


def changed_rows_up_to(fn, base: MarketData, alt: MarketData, t: int) -> np.ndarray:
    """Rows ``<= t`` where ``fn`` differs between the two panels (NaN == NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = np.asarray(fn(base))[: t + 1], np.asarray(fn(alt))[: t + 1]
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return np.flatnonzero(~same.all(axis=1))


# ------------------------------------------------------------------- hand computations
def test_log_return_by_hand():
    values = log_return(three_rows())
    assert values.shape == (3, 2)
    assert np.isnan(values[0]).all()
    np.testing.assert_allclose(
        values[1:],
        [[math.log(110 / 100), math.log(40 / 50)], [math.log(99 / 110), math.log(60 / 40)]],
        rtol=1e-15,
    )


def test_compute_features_log_return_by_hand():
    x, first_valid = compute_features(three_rows(), ["log_return"])
    assert x.shape == (3, 2, 1) and x.dtype == np.float32 and x.flags.c_contiguous
    assert first_valid == 1
    np.testing.assert_array_equal(x[0], 0.0)  # undefined entries before first_valid are zero
    expected = np.float32([[math.log(1.1), math.log(0.8)], [math.log(0.9), math.log(1.5)]])
    np.testing.assert_array_equal(x[1:, :, 0], expected)


def test_default_feature_is_log_return():
    x, first_valid = compute_features(three_rows())
    assert x.shape == (3, 2, 1) and first_valid == 1


def test_log_return_5_by_hand():
    close = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [9.0]])
    data = MarketData(dates=days(7), symbols=("A",), close=close)
    values = features_module.log_return_5(data)
    assert np.isnan(values[:5]).all()
    np.testing.assert_allclose(values[5:, 0], [math.log(6 / 1), math.log(9 / 2)], rtol=1e-15)


def test_ohlc_features_by_hand():
    data = MarketData(
        dates=np.array(["2020-01-02", "2020-01-03"], dtype="M8[D]"),
        symbols=("A",),
        open=[[10.0], [12.0]],
        high=[[12.0], [15.0]],
        low=[[8.0], [11.0]],
        close=[[11.0], [14.0]],
        volume=[[99.0], [0.0]],
    )
    x, first_valid = compute_features(
        data, ["high_low_range", "close_to_open", "log_volume_change"]
    )
    assert first_valid == 1  # volume change needs the previous bar
    np.testing.assert_allclose(x[:, 0, 0], np.float32([math.log(12 / 8), math.log(15 / 11)]))
    np.testing.assert_allclose(x[:, 0, 1], np.float32([math.log(11 / 10), math.log(14 / 12)]))
    np.testing.assert_allclose(x[1, 0, 2], np.float32(math.log(1 / 100)))


# --------------------------------------------------------------- pandas references
def test_price_to_sma_20_matches_pandas_rolling():
    data = gbm_market(4, 300, seed=3)
    close = pd.DataFrame(data.close)
    reference = np.log(close / close.rolling(20).mean()).to_numpy()
    values = price_to_sma_20(data)
    assert np.isnan(values[:19]).all() and np.isfinite(values[19:]).all()
    np.testing.assert_allclose(values[19:], reference[19:], rtol=0, atol=1e-12)


def test_volatility_20_matches_pandas_rolling_population_std():
    # the standard deviation of the last 20 returns, normalised by 20 (ddof=0)
    data = gbm_market(4, 300, seed=3)
    returns = np.log(pd.DataFrame(data.close)).diff()
    reference = returns.rolling(20).std(ddof=0).to_numpy()
    values = volatility_20(data)
    assert np.isnan(values[:20]).all() and np.isfinite(values[20:]).all()
    np.testing.assert_allclose(values[20:], reference[20:], rtol=1e-9, atol=1e-14)
    # and not the sample (ddof=1) version, which differs by sqrt(20/19)
    assert not np.allclose(values[20:], returns.rolling(20).std(ddof=1).to_numpy()[20:])


def test_volatility_20_by_hand_on_alternating_returns():
    # log returns alternate +a, -a: over any 20 of them the mean is 0 and the std is a
    a = 0.01
    close = 100 * np.exp(np.cumsum(np.tile([a, -a], 15)))[:, None]
    data = MarketData(dates=days(30), symbols=("A",), close=close)
    values = volatility_20(data)
    np.testing.assert_allclose(values[20:, 0], a, rtol=1e-9)


# ------------------------------------------------------- per-asset normalised features
LAM = 0.5 ** (1 / 20)  # the EWMA weight of a half-life of 20 bars


def from_log_returns(r: np.ndarray) -> MarketData:
    """A panel whose one-bar log returns are the columns of ``r`` (row 0 has no return)."""
    r = np.asarray(r, dtype=np.float64)
    r = r[:, None] if r.ndim == 1 else r
    close = 100.0 * np.exp(np.vstack([np.zeros((1, r.shape[1])), np.cumsum(r, axis=0)]))
    return MarketData(dates=days(len(close)), symbols=tuple("ABCDEFGH"[: r.shape[1]]), close=close)


def test_log_return_z_by_hand():
    # returns 1..20 alternate +a, -a (mean 0): sample variance (ddof=1) 20 a**2 / 19
    a = 0.01
    data = from_log_returns([*np.tile([a, -a], 10), 2 * a, -a])
    z = log_return_z(data)[:, 0]
    assert np.isnan(z[:21]).all()  # the volatility before row t needs 20 returns up to t-1
    v20 = 20 * a**2 / 19
    assert z[21] == pytest.approx(2 * a / math.sqrt(v20), rel=1e-9)  # = 2 sqrt(19/20)
    v21 = LAM * v20 + (1 - LAM) * (2 * a) ** 2  # r_21 enters the estimate used at row 22
    assert z[22] == pytest.approx(-a / math.sqrt(v21), rel=1e-9)


def test_trailing_variance_matches_a_pandas_ewm_from_the_seed():
    data = gbm_market(3, 200, seed=7)
    r = np.log(pd.DataFrame(data.close)).diff()
    seed = r.iloc[1:21].var(ddof=1)
    series = pd.concat([seed.to_frame().T, r.iloc[21:] ** 2], ignore_index=True)
    reference = series.ewm(alpha=1 - LAM, adjust=False).mean().to_numpy()  # rows 20..199
    sigma = reference[:-1] ** 0.5  # the estimate through t-1, used at row t = 21..199
    expected = np.clip(r.iloc[21:].to_numpy() / sigma, -5, 5)
    np.testing.assert_allclose(log_return_z(data)[21:], expected, rtol=1e-9)
    m20 = np.log(pd.DataFrame(data.close)).diff(20).iloc[21:].to_numpy()
    expected_m = np.clip(m20 / (sigma * math.sqrt(20)), -5, 5)
    np.testing.assert_allclose(momentum_z_20(data)[21:], expected_m, rtol=1e-9)


def test_momentum_z_20_by_hand():
    a = 0.01
    data = from_log_returns([*np.tile([a, -a], 10), 2 * a])
    m = momentum_z_20(data)[:, 0]
    assert np.isnan(m[:21]).all()
    # log(c_21 / c_1) = r_2 + ... + r_21 = (10 * -a + 9 * a) + 2a = a, over sqrt(20 a**2/19 * 20)
    assert m[21] == pytest.approx(math.sqrt(19) / 20, rel=1e-9)


def test_volatility_ratio_by_hand():
    # 60 returns of size a, then 10 of size 2a (signs alternate: the mean plays no part)
    a = 0.01
    signs = np.tile([1.0, -1.0], 35)
    data = from_log_returns(signs * np.r_[np.full(60, a), np.full(10, 2 * a)])
    v = volatility_ratio(data)[:, 0]
    assert np.isnan(v[:60]).all()
    assert v[60] == pytest.approx(0.0, abs=1e-12)  # rms a over both windows
    # row 65: 10 bars = 5 of a, 5 of 2a; 60 bars = 55 of a, 5 of 2a
    assert v[65] == pytest.approx(math.sqrt(2.5) / math.sqrt(75 / 60) - 1, rel=1e-9)
    # row 70: 10 bars of 2a; 60 bars = 50 of a, 10 of 2a
    assert v[70] == pytest.approx(2 / math.sqrt(90 / 60) - 1, rel=1e-9)


def test_normalised_features_are_clipped_and_survive_flat_prices():
    a = 0.01
    r = np.r_[np.tile([a, -a], 35), 1.0, np.zeros(70)]  # a 100-sigma jump, then no moves at all
    data = from_log_returns(r)
    z, m, v = log_return_z(data)[:, 0], momentum_z_20(data)[:, 0], volatility_ratio(data)[:, 0]
    assert z[71] == 5.0 and m[71] == 5.0
    # the 10 bars are inside the 60: the ratio is at most sqrt(60 / 10), the jump comes close
    assert v[71] == pytest.approx(math.sqrt((1 + 9 * a**2) / 10 / ((1 + 59 * a**2) / 60)) - 1)
    assert np.nanmax(v) <= math.sqrt(6) - 1
    assert np.isfinite(z[21:]).all() and np.isfinite(m[21:]).all() and np.isfinite(v[60:]).all()
    assert np.all(z[72:] == 0.0)  # no move is 0 sigma, even once the volatility decays
    assert np.all(v[81:131] == -1.0)  # 10 flat bars inside a 60-bar window that still moved
    assert np.all(v[131:] == 0.0)  # a flat 60-bar window: no regime to compare, 0
    x, first_valid = compute_features(data, NORMALISED)  # no undefined value mid-panel
    assert first_valid == 60 and np.isfinite(x).all()


@pytest.mark.parametrize("fn", [log_return_z, momentum_z_20, volatility_ratio])
def test_normalised_features_are_scale_invariant_per_asset(fn):
    base = np.log(gbm_market(3, 150, seed=5).close)
    r = np.diff(base, axis=0)
    scaled = r * np.array([1.0, 7.0, 0.2])  # one asset 7x as volatile, one a fifth
    v_base, v_scaled = fn(from_log_returns(r)), fn(from_log_returns(scaled))
    np.testing.assert_array_equal(np.isnan(v_base), np.isnan(v_scaled))
    np.testing.assert_allclose(v_scaled, v_base, rtol=1e-9, atol=1e-12)
    # and the unnormalised return is not: the test can tell
    assert not np.allclose(
        log_return(from_log_returns(scaled))[1:], log_return(from_log_returns(r))[1:]
    )


@pytest.mark.parametrize("name", NORMALISED)
@pytest.mark.parametrize("t", [19, 20, 21, 22, 59, 60, 61, 120])
def test_normalised_features_do_not_look_ahead(name, t):
    fn = features_module._REGISTRY[name]
    base = gbm_market(3, 200, seed=1, sigma=0.3)
    alt = spliced(base, gbm_market(3, 200, seed=2, sigma=0.3), t)
    assert changed_rows_up_to(fn, base, alt, t).size == 0
    # the change is real: the next row sees it, or the first row where the feature is defined
    reached = max(t + 1, BUILTIN_FIRST_VALID[name])
    np.testing.assert_array_equal(changed_rows_up_to(fn, base, alt, reached), [reached])


def test_normalised_features_on_sp500_20():
    from marketarena.envs.data import load_dataset

    data = load_dataset("sp500_20")
    x, first_valid = compute_features(data, NORMALISED)
    assert first_valid == 60
    values = x[first_valid:]
    assert np.isfinite(values).all()
    assert values[..., :2].min() >= -5 and values[..., :2].max() <= 5
    assert values[..., 2].min() >= -1 and values[..., 2].max() <= 5
    # per asset the z-score has about unit scale, whatever the asset's own volatility
    spread = values[..., 0].std(axis=0)
    assert np.all((spread > 0.8) & (spread < 1.25)), spread


# ------------------------------------------------------------------- point in time
@pytest.mark.parametrize("name", sorted(BUILTIN_FIRST_VALID))
@pytest.mark.parametrize("t", [0, 4, 18, 19, 20, 45, 78])
def test_every_feature_is_point_in_time(name, t):
    fn = features_module._REGISTRY[name]
    base, alt = ohlcv_panel(1), spliced(ohlcv_panel(1), ohlcv_panel(2), t)
    assert changed_rows_up_to(fn, base, alt, t).size == 0
    # the change after t is real and reaches the feature (so the check above can fail)
    assert changed_rows_up_to(fn, base, alt, base.n_periods - 1).size > 0


def test_all_registered_features_are_covered_and_stacked_point_in_time():
    names = available_features()
    assert set(BUILTIN_FIRST_VALID) <= set(names)
    base = ohlcv_panel(1)
    for t in (0, 19, 20, 50):
        alt = spliced(base, ohlcv_panel(2), t)
        x_base, fv_base = compute_features(base, names)
        x_alt, fv_alt = compute_features(alt, names)
        np.testing.assert_array_equal(x_base[: t + 1], x_alt[: t + 1])
        assert not np.array_equal(x_base[t + 1 :], x_alt[t + 1 :])
        assert fv_base == fv_alt


def test_the_point_in_time_check_catches_look_ahead():
    def peeks_at_tomorrow(data):
        out = np.full(data.close.shape, np.nan)
        out[:-1] = np.log(data.close[1:] / data.close[:-1])
        return out

    base = ohlcv_panel(1)
    alt = spliced(base, ohlcv_panel(2), 30)
    np.testing.assert_array_equal(changed_rows_up_to(peeks_at_tomorrow, base, alt, 30), [30])


# ------------------------------------------------------------------ first valid row
@pytest.mark.parametrize(("name", "first"), sorted(BUILTIN_FIRST_VALID.items()))
def test_first_valid_row_per_feature(name, first):
    data = ohlcv_panel(4)
    x, first_valid = compute_features(data, [name])
    assert first_valid == first
    np.testing.assert_array_equal(x[:first], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = features_module._REGISTRY[name](data)
    assert np.isfinite(raw[first:]).all()
    if first:
        assert not np.isfinite(raw[first - 1]).all()
    np.testing.assert_array_equal(x[first:, :, 0], raw[first:].astype(np.float32))


def test_first_valid_row_of_a_stack_is_the_latest():
    data = ohlcv_panel(4)
    x, first_valid = compute_features(data, ["close_to_open", "volatility_20", "log_return"])
    assert first_valid == 20
    assert x.shape == (80, 3, 3)
    # each feature keeps its own values: log_return is defined from row 1
    assert np.all(x[1:20, :, 2] != 0.0)
    np.testing.assert_array_equal(x[:20, :, 1], 0.0)


def test_feature_never_defined_gives_first_valid_past_the_end():
    data = gbm_market(2, 15, seed=0)  # too short for a 20-bar window
    x, first_valid = compute_features(data, ["volatility_20"])
    assert first_valid == 15
    np.testing.assert_array_equal(x, 0.0)


# ------------------------------------------------------------------------ registry
def test_register_user_feature(scratch_registry):
    @register_feature("test_close_over_100")
    def close_over_100(data):
        return data.close / 100.0

    assert "test_close_over_100" in available_features()
    data = three_rows()
    x, first_valid = compute_features(data, ["test_close_over_100", "log_return"])
    assert first_valid == 1
    np.testing.assert_allclose(x[:, :, 0], [[1.0, 0.5], [1.1, 0.4], [0.99, 0.6]], rtol=1e-7)
    # registering the same function again is harmless
    assert register_feature("test_close_over_100")(close_over_100) is close_over_100


def test_register_rejects_a_duplicate_name(scratch_registry):
    @register_feature("test_dup")
    def first(data):
        return data.close

    with pytest.raises(ValueError, match="feature 'test_dup' is already registered"):

        @register_feature("test_dup")
        def second(data):
            return data.close * 2

    assert features_module._REGISTRY["test_dup"] is first
    with pytest.raises(ValueError, match="'log_return' is already registered"):
        register_feature("log_return")(lambda data: data.close)


def test_feature_undefined_mid_panel_names_feature_symbol_and_date(scratch_registry):
    @register_feature("test_hole")
    def hole(data):
        out = np.log(data.close)
        out[2, 1] = np.nan
        return out

    data = gbm_market(3, 6, seed=0)
    with pytest.raises(ValueError) as info:
        compute_features(data, ["test_hole"])
    message = str(info.value)
    assert "'test_hole'" in message and "SYN1" in message and str(data.dates[2]) in message


def test_feature_with_wrong_shape_is_rejected(scratch_registry):
    register_feature("test_shape")(lambda data: data.close[:-1])
    with pytest.raises(
        ValueError, match=r"'test_shape' returned shape \(5, 2\), expected \(6, 2\)"
    ):
        compute_features(gbm_market(2, 6, seed=0), ["test_shape"])


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("name", "field"),
    [("high_low_range", "high"), ("close_to_open", "open"), ("log_volume_change", "volume")],
)
def test_close_only_panel_and_ohlc_feature(name, field):
    with pytest.raises(ValueError) as info:
        compute_features(three_rows(), ["log_return", name])
    message = str(info.value)
    assert f"feature {name!r} needs {field} prices" in message
    assert "three is close-only" in message


def test_unknown_feature_names_are_listed():
    with pytest.raises(KeyError) as info:
        compute_features(three_rows(), ["log_return", "rsx_14", "macx"])
    message = str(info.value)
    assert "['rsx_14', 'macx']" in message
    assert "indicators: ['atr', 'bb_lower'" in message  # names read as indicators otherwise
    for name in BUILTIN_FIRST_VALID:
        assert name in message  # the available ones are listed too


def test_no_features_requested():
    with pytest.raises(ValueError, match="at least one feature"):
        compute_features(three_rows(), [])


def test_data_supplied_features_are_used_by_name(make_market):
    base = make_market([[10.0, 20.0], [11.0, 19.0], [12.0, 21.0], [12.5, 22.0]])
    user = np.array([[np.nan, np.nan], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])[:, :, None]
    data = MarketData(
        dates=base.dates,
        symbols=base.symbols,
        close=base.close,
        features=user,
        feature_names=("signal",),
    )
    stacked, first_valid = compute_features(data, ("log_return", "signal"))
    assert first_valid == 1
    np.testing.assert_allclose(stacked[1:, :, 1], user[1:, :, 0])
    np.testing.assert_array_equal(stacked[0], 0.0)
    with pytest.raises(KeyError, match=r"in custom: \['signal'\]"):
        compute_features(data, ("nothing",))
