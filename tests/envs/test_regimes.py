"""Regime detectors: hand-computed labels, the HMM's filter against hmmlearn, perturb-the-future
(with a smoothed HMM that fails it), the env features, sector rotation, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hmmlearn.hmm import GaussianHMM

from marketarena.envs import regimes as R
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, DataError, UnknownNameError
from marketarena.envs.features import compute_features
from marketarena.envs.synthetic import gbm_market

U = R.UNKNOWN


def switching_prices(n: int = 520, seed: int = 3) -> np.ndarray:
    """Daily returns at 0.5% volatility, 2.5% on rows 220..319: a calm, turbulent, calm path."""
    rng = np.random.default_rng(seed)
    sigma = np.full(n, 0.005)
    sigma[220:320] = 0.025
    r = rng.standard_normal(n) * sigma
    r[0] = 0.0
    return 100.0 * np.exp(np.cumsum(r))


def perturbed(p: np.ndarray, t: int, seed: int = 9) -> np.ndarray:
    """``p`` up to row ``t``; after it, the same level times a random walk with a large jump."""
    rng = np.random.default_rng(seed)
    out = p.copy()
    k = len(p) - t - 1
    out[t + 1 :] = p[t] * np.exp(np.cumsum(rng.standard_normal(k) * 0.04 + 0.01))
    return out


def assert_point_in_time(fn, p: np.ndarray, t: int) -> None:
    """Rows <= t bit-identical after changing every price after t, and something after t
    changed (so the first check could fail)."""
    base, alt = fn(p), fn(perturbed(p, t))
    np.testing.assert_array_equal(base[: t + 1], alt[: t + 1])
    assert not np.array_equal(base[t + 1 :], alt[t + 1 :], equal_nan=True)


# ------------------------------------------------------------------------ market index
def test_market_index_compounds_the_mean_simple_return(make_market):
    data = make_market([[10.0, 20.0], [11.0, 20.0], [11.0, 22.0], [9.9, 22.0]])
    np.testing.assert_allclose(R.market_index(data), [1.0, 1.05, 1.1025, 1.1025 * 0.95])


# ------------------------------------------------------------------------------- trend
TREND = np.array([10, 11, 12, 13, 14, 13, 12, 11, 10, 10.5, 8])


def test_trend_labels_by_hand():
    # SMA3 from row 2: 11 12 13 13.33 13 12 11 10.5 9.5; slope over 2 rows from row 4:
    # + + 0 - - - -; drawdown from the running peak (14 at row 4): row 7 is 11/14-1 = -21%
    kw = {"sma_window": 3, "slope_window": 2, "peak_window": None}
    bull, side, bear = 2, 1, 0
    np.testing.assert_array_equal(
        R.trend_regimes(TREND, drawdown_threshold=0.2, **kw),
        [U, U, U, U, bull, side, side, bear, bear, bear, bear],
    )
    # without the drawdown rule: rows 7, 8, 10 are below a falling average; row 9 sits on it
    np.testing.assert_array_equal(
        R.trend_regimes(TREND, drawdown_threshold=0.5, **kw),
        [U, U, U, U, bull, side, side, bear, bear, side, bear],
    )
    # a 2-row peak window forgets the 14: row 9 (10.5 over a peak of 10.5) is not in drawdown
    labels = R.trend_regimes(
        TREND, drawdown_threshold=0.2, sma_window=3, slope_window=2, peak_window=2
    )
    assert labels[9] == side and labels[7] == bear


def test_trend_is_point_in_time():
    p = switching_prices()
    for t in (230, 300, 450):
        assert_point_in_time(lambda x: R.trend_regimes(x), p, t)


# -------------------------------------------------------------------------- volatility
def prices_from(returns: list[float]) -> np.ndarray:
    return 100.0 * np.exp(np.cumsum([0.0, *returns]))


def test_volatility_labels_by_hand_with_fixed_levels():
    # window 2: vol_t = |r_t - r_{t-1}| / sqrt(2) * sqrt(252) = |r_t - r_{t-1}| * sqrt(126):
    # row 2: 0 (low); row 3: 0.02 * 11.22 = 0.224 (normal); row 4: 0.449 (high); row 5: 0.112
    p = prices_from([0.01, 0.01, 0.03, -0.01, 0.0])
    np.testing.assert_allclose(
        R.realised_volatility(p, 2)[2:], np.array([0, 0.02, 0.04, 0.01]) * np.sqrt(126), atol=1e-12
    )
    labels = R.volatility_regimes(p, window=2, levels=(0.1, 0.3))
    np.testing.assert_array_equal(labels, [U, U, 0, 1, 2, 1])


def test_volatility_quantiles_use_the_history_up_to_t_only():
    p = switching_prices(400)
    labels = R.volatility_regimes(p, window=10, quantiles=(0.25, 0.75), min_history=30)
    vol = R.realised_volatility(p, 10)
    expected = np.full(len(p), U)
    for t in range(10 + 29, len(p)):
        lo, hi = np.quantile(vol[10 : t + 1], [0.25, 0.75])  # numpy, not pandas' expanding
        expected[t] = int(vol[t] >= lo) + int(vol[t] >= hi)
    np.testing.assert_array_equal(labels, expected)
    assert (labels[230:300] == 2).mean() > 0.9  # the turbulent stretch is high volatility


def test_volatility_is_point_in_time():
    p = switching_prices()
    for t in (300, 450):
        assert_point_in_time(lambda x: R.volatility_regimes(x, min_history=100), p, t)
        assert_point_in_time(lambda x: R.volatility_regimes(x, levels=(0.1, 0.2)), p, t)


# --------------------------------------------------------------------------------- HMM
def hmmlearn_model(params: R.HMMParameters) -> GaussianHMM:
    model = GaussianHMM(n_components=len(params.means), covariance_type="diag", init_params="")
    model.startprob_ = params.startprob
    model.transmat_ = params.transmat
    model.means_ = params.means.reshape(-1, 1)
    model.covars_ = params.variances.reshape(-1, 1)
    return model


def test_the_filter_equals_hmmlearn_on_the_last_row_only():
    x = np.diff(np.log(switching_prices())) * 100.0
    params = R.fit_hmm(x[:400], random_state=0)
    assert params.variances[0] < params.variances[1]  # state 0 is the calm one
    model = hmmlearn_model(params)
    for end in (240, 330, 400):
        window = x[:end]
        filtered = R.forward_filter(
            window, params.startprob, params.transmat, params.means, params.variances
        )
        smoothed = model.predict_proba(window.reshape(-1, 1))
        np.testing.assert_allclose(filtered[-1], smoothed[-1], rtol=1e-9, atol=1e-12)
        # earlier rows: the smoother has seen the rows after them, the filter has not
        assert np.abs(filtered[:-1] - smoothed[:-1]).max() > 0.1


def test_hmm_probabilities_are_the_filter_of_the_fit_known_at_t():
    """One fit (at row 300 on returns 1..300), then each row's probability equals hmmlearn's
    predict_proba at the last row of the returns from the fit window's start to that row."""
    p = switching_prices()
    labels, probs = R.hmm_volatility_regimes(p, min_history=300, refit_every=1000, window=None)
    assert (labels[:300] == U).all() and np.isnan(probs[:300]).all()
    x = np.diff(np.log(p)) * 100.0  # x[i] is row i + 1's return
    model = hmmlearn_model(R.fit_hmm(x[:300], random_state=0))
    for t in (300, 310, 420, len(p) - 1):
        np.testing.assert_allclose(
            probs[t], model.predict_proba(x[:t].reshape(-1, 1))[-1], rtol=1e-9
        )
    np.testing.assert_array_equal(labels[300:], probs[300:].argmax(axis=1))


def test_hmm_labels_the_turbulent_stretch_and_orders_states_by_volatility():
    p = switching_prices()
    labels, probs = R.hmm_volatility_regimes(p, min_history=200, refit_every=50, window=300)
    np.testing.assert_allclose(probs[200:].sum(axis=1), 1.0)
    assert (labels[235:320] == 1).mean() > 0.9  # turbulent, once the filter has seen it
    assert (labels[340:] == 0).mean() > 0.9


HMM_KW = {"min_history": 200, "refit_every": 50, "window": 300}


def smoothed_hmm(p: np.ndarray) -> np.ndarray:
    """The look-ahead this module avoids: one fit on the whole sample, then predict_proba
    (forward-backward) over the whole sample."""
    x = (np.diff(np.log(p)) * 100.0).reshape(-1, 1)
    model = GaussianHMM(n_components=2, covariance_type="diag", random_state=0).fit(x)
    return model.predict_proba(x)


@pytest.mark.parametrize("t", [260, 349, 350])  # 350: a refit row, fitted on data up to it
def test_hmm_is_point_in_time_and_a_smoothed_hmm_is_not(t):
    p = switching_prices()
    assert_point_in_time(lambda x: R.hmm_volatility_regimes(x, **HMM_KW)[1], p, t)
    assert_point_in_time(lambda x: R.hmm_volatility_regimes(x, **HMM_KW)[0], p, t)
    # the same check catches the smoother: its rows <= t change when the future does
    with pytest.raises(AssertionError):
        assert_point_in_time(smoothed_hmm, p, t)


def test_hmm_is_seeded_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETARENA_CACHE_DIR", str(tmp_path))
    hits = []
    real = R.cached_array

    def spy(kind, key, compute):
        value, hit = real(kind, key, compute)
        hits.append(hit)
        return value, hit

    monkeypatch.setattr(R, "cached_array", spy)
    p = switching_prices(320)
    kw = {"min_history": 200, "refit_every": 60, "window": None}
    first = R.hmm_volatility_regimes(p, **kw)
    second = R.hmm_volatility_regimes(p, **kw)
    R.hmm_volatility_regimes(p, **{**kw, "refit_every": 61})  # another parameter: a miss
    assert hits == [False, True, False]
    assert len(list((tmp_path / "regime_hmm").glob("*.npy"))) == 2
    np.testing.assert_array_equal(first[1], second[1])
    monkeypatch.setenv("MARKETARENA_CACHE_DIR", "off")
    fresh = R.hmm_volatility_regimes(p, **kw)  # computed again, with the same seed
    np.testing.assert_array_equal(first[1], fresh[1])


# ---------------------------------------------------------------------------- dispatch
def test_detect_regimes_on_a_given_index_and_up_to_an_end_date():
    data = gbm_market(3, 400, seed=2)
    index = MarketData(
        dates=data.dates, symbols=("IDX",), close=data.close[:, :1] * 2.0, name="idx"
    )
    given = R.detect_regimes("trend", data, index=index)
    assert given.source == "IDX"
    np.testing.assert_array_equal(given.labels, R.trend_regimes(data.close[:, 0]))
    own = R.detect_regimes("volatility", data, end=str(data.dates[349]))
    assert own.source == f"equal-weighted index of {data.name}"
    assert len(own.dates) == 350 and own.names == ("low", "normal", "high")
    np.testing.assert_array_equal(own.labels, R.volatility_regimes(R.market_index(data))[:350])
    back = R.Regimes.from_dict(own.to_dict())
    np.testing.assert_array_equal(back.labels, own.labels)
    np.testing.assert_array_equal(back.dates, own.dates)
    # the label known on a date: the last row on or before it
    assert back.labels_at(np.array([data.dates[300]]))[0] == own.labels[300]
    assert back.labels_at(np.array(["1990-01-01"], dtype="datetime64[D]"))[0] == U


# ---------------------------------------------------------------------------- features
def test_regime_features_are_market_wide_and_point_in_time():
    names = ["regime_trend", "regime_vol", "regime_hmm_p_high"]
    base = gbm_market(3, 560, seed=1, sigma=0.3)
    t = 530
    alt_close = base.close.copy()
    alt_close[t + 1 :] *= 1.5
    alt = MarketData(dates=base.dates, symbols=base.symbols, close=alt_close, name="alt")
    x_base, first = compute_features(base, names)
    x_alt, _ = compute_features(alt, names)
    np.testing.assert_array_equal(x_base[: t + 1], x_alt[: t + 1])
    assert not np.array_equal(x_base[t + 1 :], x_alt[t + 1 :])
    assert first == 504  # the HMM's first fit
    # the same value for every symbol; trend in {-1, 0, 1}, volatility band in {0, 1, 2}
    assert (x_base == x_base[:, :1, :]).all()
    assert set(np.unique(x_base[219:, 0, 0])) <= {-1.0, 0.0, 1.0}
    assert set(np.unique(x_base[272:, 0, 1])) <= {0.0, 1.0, 2.0}
    labels = R.trend_regimes(R.market_index(base))
    np.testing.assert_array_equal(x_base[219:, 1, 0], (labels[219:] - 1).astype(np.float32))


def test_regime_features_on_a_short_panel_are_undefined_not_an_error():
    short = gbm_market(2, 100, seed=1)
    x, first = compute_features(short, ["log_return", "regime_trend"])
    assert first == short.n_periods  # never defined: the env names its first usable date
    assert (x[:, :, 1] == 0).all()


# ----------------------------------------------------------------------- sector rotation
def test_sector_rotation_by_hand(make_market):
    data = make_market([[10, 10, 10], [11, 9, 10], [11, 9, 12]], symbols=("A", "B", "C"))
    frame, leader = R.sector_rotation(data, {"A": "X", "B": "X", "C": "Y"}, window=1)
    assert list(frame.columns) == ["X", "Y"]
    assert frame.iloc[0].isna().all() and leader.iloc[0] is None
    np.testing.assert_allclose(frame.iloc[1], [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(frame.iloc[2], [-0.2 / 3, 0.2 - 0.2 / 3])
    assert leader.iloc[2] == "Y"


def test_sector_rotation_uses_the_bundled_map_and_is_point_in_time():
    data = gbm_market(3, 200, seed=4)
    data = MarketData(dates=data.dates, symbols=("AAPL", "JPM", "XOM"), close=data.close)
    frame, leader = R.sector_rotation(data, window=20)
    assert set(frame.columns) == {"Information Technology", "Financials", "Energy"}
    np.testing.assert_allclose(frame.iloc[20:].sum(axis=1), 0.0, atol=1e-12)  # one symbol each
    t = 120
    alt_close = data.close.copy()
    growth = np.linspace(1.1, 2.0, len(data.dates) - t - 1)[:, None]
    alt_close[t + 1 :] *= growth ** np.array([1.0, 2.0, 3.0])  # a different move per sector
    alt = MarketData(dates=data.dates, symbols=data.symbols, close=alt_close)
    frame_alt, leader_alt = R.sector_rotation(alt, window=20)
    pd.testing.assert_frame_equal(frame.iloc[: t + 1], frame_alt.iloc[: t + 1])
    assert not frame.iloc[t + 1 :].equals(frame_alt.iloc[t + 1 :])
    assert list(leader.iloc[: t + 1]) == list(leader_alt.iloc[: t + 1])


# ------------------------------------------------------------------------------ bad input
def test_bad_input_is_a_clear_error(make_market):
    data = gbm_market(2, 100, seed=1)
    with pytest.raises(UnknownNameError, match=r"unknown regime kind 'moon'.*trend"):
        R.detect_regimes("moon", data)
    with pytest.raises(
        DataError,
        match=r"trend regimes need at least 220 rows \(a 200-row average and its 20-row "
        r"slope\), but the series has 100",
    ):
        R.detect_regimes("trend", data)
    with pytest.raises(DataError, match="volatility regimes need at least 273 rows"):
        R.volatility_regimes(R.market_index(data))
    with pytest.raises(
        DataError, match=r"HMM regimes need at least 505 rows \(504 returns before the first fit\)"
    ):
        R.hmm_volatility_regimes(R.market_index(data))
    with pytest.raises(ConfigError, match="n_states must be 2 or 3"):
        R.hmm_volatility_regimes(R.market_index(data), n_states=4, min_history=20)
    with pytest.raises(ConfigError, match="increasing thresholds"):
        R.volatility_regimes(R.market_index(data), levels=(0.3, 0.1))
    with pytest.raises(ConfigError, match="sma_window must be a whole number"):
        R.trend_regimes(R.market_index(data), sma_window=0)
    with pytest.raises(DataError, match=r"row 2 is -1\.0"):
        R.trend_regimes([1.0, 2.0, -1.0])
    uncovered = make_market([[1.0, 2.0], [1.1, 2.1]], symbols=("AAPL", "ZZZZ"))
    with pytest.raises(DataError, match=r"no sector for \['ZZZZ'\]"):
        R.sector_rotation(uncovered, window=1)
    with pytest.raises(DataError, match="more than 63 rows"):
        R.sector_rotation(make_market([[1.0], [1.1]], symbols=("AAPL",)))
