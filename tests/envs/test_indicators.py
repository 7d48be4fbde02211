"""Indicators: the standard set against TA-Lib (and pandas), names with parameters, the lookback,
no look-ahead, the on-disk cache, and plugin discovery through a real entry point.

TA-Lib conventions, and where ours differ (checked below):

* RSI, ATR (Wilder): the same seeding (the mean of the first ``period`` changes / true ranges)
  and recursion: equal wherever TA-Lib is defined, NaN exactly where TA-Lib is. On a flat
  stretch TA-Lib's RSI is 0 and ours 50 (neutral): tested separately.
* MACD: TA-Lib seeds both EMAs at row ``slow-1`` (the fast one with the mean of its last
  ``fast`` closes), which we follow: line, signal and histogram equal TA-Lib's. TA-Lib reports
  the line from row ``slow+signal-2`` only; ours from ``slow-1``. A standalone EMA
  (``talib.EMA(close, 12)``) seeds at row ``fast-1``: the difference decays, shown below.
* Bollinger bands: SMA +- k population standard deviations, as TA-Lib's BBANDS; %b and width
  are not TA-Lib outputs and are checked against formulas on TA-Lib's bands.
* OBV: TA-Lib starts at the first bar's volume; so do we.
* z-score (sample std, ``ddof=1``) and cross-sectional rank: against pandas.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from marketarena.envs import indicators as ind
from marketarena.envs.cache import CacheWarning
from marketarena.envs.data import MarketData, load_dataset
from marketarena.envs.errors import ConfigError, UnknownNameError
from marketarena.envs.features import compute_features
from marketarena.envs.synthetic import gbm_market

BUILTIN = (
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_lower",
    "bb_pctb",
    "bb_width",
    "atr",
    "obv",
    "zscore",
    "xs_rank",
)
PLUGIN = Path(__file__).resolve().parents[1] / "fixtures" / "indicator_plugin"


@pytest.fixture(scope="module")
def ohlcv() -> MarketData:
    """Four symbols of the bundled OHLCV sample (245 daily bars, 2009-2010)."""
    return load_dataset("sp500_ohlcv_30").select(["AXP", "BA", "C", "KO"])


def per_symbol(fn, *columns: np.ndarray) -> np.ndarray:
    return np.column_stack([fn(*(c[:, j] for c in columns)) for j in range(columns[0].shape[1])])


def assert_matches_talib(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-10) -> None:
    defined = ~np.isnan(ref)
    assert defined.sum() > 100  # past TA-Lib's warm-up there is plenty to compare
    np.testing.assert_allclose(ours[defined], ref[defined], rtol=rtol, atol=1e-9)


# ------------------------------------------------------------------ against TA-Lib
def test_rsi_equals_talib_and_is_nan_exactly_where_talib_is(ohlcv):
    ref = per_symbol(lambda c: talib.RSI(c, timeperiod=14), ohlcv.close)
    ours = ind.compute_indicator(ohlcv, "rsi_14")
    assert_matches_talib(ours, ref)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ref7 = per_symbol(lambda c: talib.RSI(c, timeperiod=7), ohlcv.close)
    assert_matches_talib(ind.compute_indicator(ohlcv, "rsi_7"), ref7)


def test_macd_line_signal_and_histogram_equal_talib(ohlcv):
    line, signal, hist = (
        per_symbol(lambda c, k=k: talib.MACD(c, 12, 26, 9)[k], ohlcv.close) for k in range(3)
    )
    ours = ind.compute_indicator(ohlcv, "macd_12_26_9")
    assert_matches_talib(ours, line)
    assert_matches_talib(ind.compute_indicator(ohlcv, "macd_signal"), signal)
    assert_matches_talib(ind.compute_indicator(ohlcv, "macd_hist_12_26_9"), hist)
    # TA-Lib hides the line's first signal-1 values; ours starts at slow-1 = 25
    assert np.isnan(ours[:25]).all() and np.isfinite(ours[25:]).all()
    assert np.isnan(line[:33]).all()


def test_macd_seeding_differs_from_standalone_emas_only_at_the_start(ohlcv):
    c = ohlcv.close
    standalone = per_symbol(lambda x: talib.EMA(x, 12) - talib.EMA(x, 26), c)
    ours = ind.compute_indicator(ohlcv, "macd")
    assert np.abs(ours[25] - standalone[25]).max() > 1e-6  # the seeds differ...
    np.testing.assert_allclose(ours[200:], standalone[200:], rtol=0, atol=1e-9)  # ...then decay


def test_bollinger_bands_equal_talib_and_pctb_and_width_follow(ohlcv):
    c = ohlcv.close
    upper, middle, lower = (
        per_symbol(lambda x, k=k: talib.BBANDS(x, 20, 2.0, 2.0, 0)[k], c) for k in range(3)
    )
    # TA-Lib's variance is E[x^2] - E[x]^2 from running sums, ours two-pass: ~1e-12 apart
    assert_matches_talib(ind.compute_indicator(ohlcv, "bb_upper_20_2"), upper, rtol=1e-9)
    assert_matches_talib(ind.compute_indicator(ohlcv, "bb_lower_20_2"), lower, rtol=1e-9)
    assert_matches_talib(
        ind.compute_indicator(ohlcv, "bb_pctb_20_2"), (c - lower) / (upper - lower), rtol=1e-6
    )
    assert_matches_talib(
        ind.compute_indicator(ohlcv, "bb_width_20_2"), (upper - lower) / middle, rtol=1e-8
    )
    wide = per_symbol(lambda x: talib.BBANDS(x, 10, 1.5, 1.5, 0)[0], c)
    assert_matches_talib(ind.compute_indicator(ohlcv, "bb_upper_10_1.5"), wide, rtol=1e-9)


def test_atr_equals_talib(ohlcv):
    ref = per_symbol(lambda h, lo, c: talib.ATR(h, lo, c, 14), ohlcv.high, ohlcv.low, ohlcv.close)
    ours = ind.compute_indicator(ohlcv, "atr_14")
    assert_matches_talib(ours, ref)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))


def test_obv_equals_talib(ohlcv):
    ref = per_symbol(talib.OBV, ohlcv.close, ohlcv.volume)
    np.testing.assert_array_equal(ind.compute_indicator(ohlcv, "obv"), ref)


def test_zscore_equals_pandas_rolling(ohlcv):
    frame = pd.DataFrame(ohlcv.close)
    roll = frame.rolling(10)
    ref = ((frame - roll.mean()) / roll.std()).to_numpy()  # pandas: ddof=1
    ours = ind.compute_indicator(ohlcv, "zscore_10")
    np.testing.assert_allclose(ours[9:], ref[9:], rtol=1e-9)
    assert np.isnan(ours[:9]).all()


def test_cross_sectional_rank_equals_pandas_with_ties():
    close = np.array(
        [[10.0, 10, 10, 10], [11, 12, 10, 11], [12, 12, 12, 9], [13, 15, 11, 12], [1, 2, 3, 4]]
    )
    data = MarketData(
        dates=pd.bdate_range("2024-01-01", periods=5).to_numpy(),
        symbols=("A", "B", "C", "D"),
        close=close,
    )
    ours = ind.compute_indicator(data, "xs_rank_1")
    ret = pd.DataFrame(close).pct_change()
    ref = ((ret.rank(axis=1, method="average") - 1) / 3).to_numpy()
    np.testing.assert_allclose(ours[1:], ref[1:], rtol=1e-12)
    # returns A 0.1, B 0.2, C 0, D 0.1: C ranks 1, B 4, A and D tie for 2 and 3 (2.5 each)
    np.testing.assert_allclose(ours[1], [(2.5 - 1) / 3, 1.0, 0.0, (2.5 - 1) / 3])
    assert np.isnan(ours[0]).all() and ((ours[1:] >= 0) & (ours[1:] <= 1)).all()


def test_cross_sectional_rank_on_real_data_equals_pandas(ohlcv):
    ret = pd.DataFrame(ohlcv.close).pct_change(20)
    ref = ((ret.rank(axis=1) - 1) / (ohlcv.n_assets - 1)).to_numpy()
    np.testing.assert_allclose(ind.compute_indicator(ohlcv, "xs_rank")[20:], ref[20:])


# ---------------------------------------------------------- lookback, flat prices
@pytest.mark.parametrize("base", BUILTIN)
def test_nan_before_the_lookback_and_finite_from_it(ohlcv, base):
    resolved = ind.resolve_indicator(base)
    values = ind.compute_indicator(ohlcv, base)
    assert np.isnan(values[: resolved.lookback]).all()
    assert np.isfinite(values[resolved.lookback :]).all()


def test_flat_prices_have_defined_neutral_values(make_market):
    close = np.full((40, 2), 50.0)
    close[:, 1] = np.linspace(50, 60, 40)
    data = make_market(close, open=close, volume=np.ones((40, 2)))
    assert (ind.compute_indicator(data, "rsi_14")[14:, 0] == 50.0).all()  # TA-Lib says 0
    assert (ind.compute_indicator(data, "rsi_14")[14:, 1] == 100.0).all()  # only gains
    assert (ind.compute_indicator(data, "bb_pctb")[19:, 0] == 0.5).all()
    assert (ind.compute_indicator(data, "bb_width")[19:, 0] == 0.0).all()
    assert (ind.compute_indicator(data, "zscore")[19:, 0] == 0.0).all()
    features, first = compute_features(data, [f"{b}" for b in BUILTIN])  # no NaN mid-panel
    assert first == 33 and np.isfinite(features).all()


# ------------------------------------------------------------------ no look-ahead
@pytest.mark.parametrize("base", BUILTIN)
def test_changing_the_future_leaves_the_past_bit_identical(base):
    data = gbm_market(5, 300, seed=3)
    t = 150
    rng = np.random.default_rng(0)
    scale = np.ones((300, 5))
    scale[t + 1 :] = rng.uniform(0.5, 1.5, (300 - t - 1, 5))
    # the same factor on every price of a bar keeps it a valid bar; volume changes too
    changed = dataclasses.replace(
        data,
        **{f: getattr(data, f) * scale for f in ("open", "high", "low", "close")},
        volume=data.volume * scale[:, ::-1],
    )
    before = ind.compute_indicator(data, base)
    after = ind.compute_indicator(changed, base)
    np.testing.assert_array_equal(before[: t + 1], after[: t + 1])
    assert not np.allclose(before[t + 1 :], after[t + 1 :])


# ------------------------------------------------------------------------ names
def test_names_carry_parameters_in_declared_order():
    assert ind.resolve_indicator("rsi").params == {"period": 14}
    assert ind.resolve_indicator("rsi_7").params == {"period": 7}
    hist = ind.resolve_indicator("macd_hist_5_35_5")
    assert hist.spec.name == "macd_hist"  # the longest registered base, not "macd"
    assert hist.params == {"fast": 5, "slow": 35, "signal": 5}
    assert hist.name == "macd_hist_5_35_5" and hist.lookback == 38
    bb = ind.resolve_indicator("bb_pctb_20_2.5")
    assert bb.params == {"period": 20, "k": 2.5} and bb.name == "bb_pctb_20_2.5"
    assert ind.resolve_indicator("bb_pctb_10").name == "bb_pctb_10_2"  # trailing default
    assert ind.resolve_indicator("xs_rank").name == "xs_rank_20"


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        ("rsx_14", UnknownNameError, ["rsx_14", "'rsi'", "'macd_hist'"]),
        ("rsi_14_3", ConfigError, ["rsi_14_3", "1 parameter", "rsi_<period>"]),
        ("rsi_x", ConfigError, ["period must be a whole number", "'x'"]),
        ("rsi_2.5", ConfigError, ["period must be a whole number"]),
        ("rsi_0", ConfigError, ["period must be positive"]),
        ("bb_pctb_20_nan", ConfigError, ["k must be positive"]),
    ],
)
def test_bad_names_are_clear_errors(name, error, words):
    with pytest.raises(error) as caught:
        ind.resolve_indicator(name)
    for word in words:
        assert word in str(caught.value)


def test_bad_parameter_combinations_are_config_errors(ohlcv):
    with pytest.raises(
        ConfigError, match=r"fast period \(26\) must be shorter than the slow \(12\)"
    ):
        ind.compute_indicator(ohlcv, "macd_26_12_9")
    with pytest.raises(ConfigError, match="window must be at least 2"):
        ind.compute_indicator(ohlcv, "zscore_1")


def test_a_lookback_longer_than_the_data_names_indicator_lookback_and_length(ohlcv):
    with pytest.raises(ConfigError) as caught:
        ind.compute_indicator(ohlcv, "rsi_300")
    message = str(caught.value)
    assert "'rsi_300'" in message and "lookback of 300" in message and "only 245 rows" in message
    ind.compute_indicator(ohlcv, "rsi_244")  # the last row is defined: no error


def test_an_input_the_data_lacks_is_a_config_error(make_market):
    data = make_market(np.full((30, 2), 10.0))
    with pytest.raises(ConfigError, match="'atr_14' needs high prices"):
        ind.compute_indicator(data, "atr_14")


def test_registration_rejects_bad_names_and_duplicates(monkeypatch):
    monkeypatch.setattr(ind, "_REGISTRY", dict(ind._REGISTRY))
    with pytest.raises(ValueError, match="digits after '_' are read as parameters"):
        ind.indicator("sma_5")
    with pytest.raises(ValueError, match="inputs must be among"):
        ind.indicator("thing", inputs=("vwap",))

    def other_rsi(close: np.ndarray) -> np.ndarray:
        return close

    with pytest.raises(ValueError, match="'rsi' is already registered"):
        ind.indicator("rsi")(other_rsi)


def test_the_framework_enforces_the_declared_lookback_and_shape(monkeypatch, make_market):
    monkeypatch.setattr(ind, "_REGISTRY", dict(ind._REGISTRY))

    @ind.indicator("early", lookback=3)
    def early(close: np.ndarray) -> np.ndarray:
        return close.copy()  # claims values before its lookback

    @ind.indicator("wrong_shape")
    def wrong_shape(close: np.ndarray) -> np.ndarray:
        return close[:, 0]

    @ind.indicator("negative", lookback=-1)
    def negative(close: np.ndarray) -> np.ndarray:
        return close.copy()

    data = make_market([[1.0, 2.0]] * 6)
    with pytest.raises(ValueError, match=r"'negative' .* declares a negative lookback"):
        ind.compute_indicator(data, "negative")
    values = ind.compute_indicator(data, "early")
    assert np.isnan(values[:3]).all() and (values[3:] == data.close[3:]).all()
    with pytest.raises(ValueError, match=r"'wrong_shape' .* returned shape \(6,\)"):
        ind.compute_indicator(data, "wrong_shape")


# ------------------------------------------------------------------------ cache
@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETARENA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "indicator"


def test_the_second_computation_is_a_cache_hit(ohlcv, cache_folder):
    first, hit1 = ind.compute_indicator_cached(ohlcv, "rsi_14")
    second, hit2 = ind.compute_indicator_cached(ohlcv, "rsi_14")
    assert (hit1, hit2) == (False, True)
    np.testing.assert_array_equal(first, second)
    assert ind.compute_indicator_cached(ohlcv, "rsi")[1]  # the same indicator, other spelling
    assert not ind.compute_indicator_cached(ohlcv, "rsi_15")[1]  # a parameter changed
    other = dataclasses.replace(ohlcv, volume=ohlcv.volume * 2.0)
    assert not ind.compute_indicator_cached(other, "rsi_14")[1]  # the data changed
    assert len(list(cache_folder.glob("*.npy"))) == 3


def _plugin_module(folder: Path, name: str, body: str):
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            import numpy as np
            from marketarena.envs.indicators import indicator

            @indicator("edited")
            def edited(close):
                return {body}
            """
        )
    )
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_editing_the_function_recomputes(tmp_path, monkeypatch, cache_folder, make_market):
    monkeypatch.setattr(ind, "_REGISTRY", dict(ind._REGISTRY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edited_indicator", raising=False)
    data = make_market([[1.0, 2.0], [3.0, 4.0]])
    _plugin_module(tmp_path, "edited_indicator", "close * 2.0")
    assert ind.compute_indicator_cached(data, "edited")[1] is False
    assert ind.compute_indicator_cached(data, "edited")[1] is True
    _plugin_module(tmp_path, "edited_indicator", "close * 3.0")  # the same name, new source
    values, hit = ind.compute_indicator_cached(data, "edited")
    assert not hit
    np.testing.assert_array_equal(values, data.close * 3.0)


def test_a_corrupted_cache_file_is_recomputed(ohlcv, cache_folder):
    expected, _ = ind.compute_indicator_cached(ohlcv, "atr_14")
    (path,) = cache_folder.glob("*.npy")
    path.write_bytes(path.read_bytes()[:100])  # truncated mid-array
    with pytest.warns(CacheWarning, match="unreadable"):
        values, hit = ind.compute_indicator_cached(ohlcv, "atr_14")
    assert not hit
    np.testing.assert_array_equal(values, expected)
    assert ind.compute_indicator_cached(ohlcv, "atr_14")[1]  # rewritten whole


# ---------------------------------------------------------------------- plugins
def _install_dist_info(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """What ``pip install`` leaves for the metadata lookup: a ``.dist-info`` folder with
    ``METADATA`` and ``entry_points.txt``."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = [f"[{ind.ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def fresh_registry(monkeypatch):
    """A copy of the registry, plugins not yet loaded, and the demo modules forgotten after."""
    monkeypatch.setattr(ind, "_REGISTRY", dict(ind._REGISTRY))
    monkeypatch.setattr(ind, "_plugins_loaded", False)
    yield
    for module in [m for m in sys.modules if m.startswith("demo_indicators")]:
        del sys.modules[module]
    importlib.invalidate_caches()


def test_plugins_are_discovered_from_an_installed_package(
    tmp_path, monkeypatch, fresh_registry, make_market
):
    # a real installation: pip builds the fixture package (offline, from a copy, so nothing
    # is written into the repository) into a site folder that then goes on sys.path
    source = shutil.copytree(PLUGIN, tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    site = tmp_path / "site"
    subprocess.run([*pip, "--no-build-isolation", "--target", str(site), str(source)], check=True)
    assert (site / "demo_indicators" / "__init__.py").exists()
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    assert "demo_change" not in ind._REGISTRY

    by_name = {s.name: s for s in ind.available_indicators()}
    assert by_name["demo_change"].source == "marketarena-demo-indicators (entry point demo)"
    assert by_name["demo_double"].source == "marketarena-demo-indicators (entry point demo_hook)"
    assert by_name["rsi"].source == "marketarena"
    data = make_market([[1.0], [2.0], [4.0], [7.0], [11.0]])
    values = ind.compute_indicator(data, "demo_change_2")
    np.testing.assert_array_equal(values[:, 0], [np.nan, np.nan, 3.0, 5.0, 7.0])
    np.testing.assert_array_equal(ind.compute_indicator(data, "demo_double"), 2 * data.close)
    features, _ = compute_features(data, ["demo_change_2"])  # usable as an env feature
    assert features[4, 0, 0] == 7.0


def test_a_broken_plugin_is_a_warning_naming_it(tmp_path, monkeypatch, fresh_registry):
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    _install_dist_info(tmp_path / "site", project["name"], {"demo": "demo_indicators"})
    _install_dist_info(
        tmp_path / "site", "broken-indicators", {"broken": "demo_indicators.not_there"}
    )
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    with pytest.warns(
        ind.PluginWarning, match="'broken' = 'demo_indicators.not_there' from broken"
    ):
        names = [s.name for s in ind.available_indicators()]
    assert "demo_change" in names and "rsi" in names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loaded once: no second warning
        ind.available_indicators()


# ------------------------------------------------------------------ env features
def test_indicators_are_env_features_by_name(ohlcv):
    from marketarena.envs.portfolio_env import PortfolioEnv

    names = ["log_return", "rsi_14", "bb_pctb_20_2"]
    env = PortfolioEnv(data=ohlcv, features=names, window=2, episode_length=50)
    observation, info = env.reset(seed=0)
    t = int(np.flatnonzero(ohlcv.dates == info["date"])[0])
    window = observation[: 2 * 4 * 3].reshape(2, 4, 3)
    rsi = ind.compute_indicator(ohlcv, "rsi_14")
    np.testing.assert_allclose(window[:, :, 1], rsi[t - 1 : t + 1], rtol=1e-6)  # float32
    with pytest.raises(ConfigError, match="indicator 'rsi_0': period must be positive"):
        PortfolioEnv(data=ohlcv, features=["rsi_0"])
