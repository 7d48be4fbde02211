"""Data providers, the data directory, rate limits, the fallback order and plug-in discovery."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import marketarena.envs.providers as providers
from marketarena.envs.data import DataValidationError, load_dataset, resolve_data
from marketarena.envs.errors import ConfigError, UnknownNameError
from marketarena.envs.providers import (
    ENTRY_POINT_GROUP,
    DataDir,
    Downloader,
    LocalProvider,
    Provider,
    TokenBucket,
    available_providers,
    make_provider,
    validate_bars,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_local_provider_serves_the_bundled_bars_exactly():
    frame = LocalProvider().fetch(["AXP", "AAPL", "NOPE"], "2009-09-01", "2009-09-30")
    assert set(frame["symbol"]) == {"AXP", "AAPL"}  # NOPE is in no bundled dataset
    ohlcv = load_dataset("sp500_ohlcv_30").select(["AXP"]).slice("2009-09-01", "2009-09-30")
    axp = frame[frame["symbol"] == "AXP"]
    assert list(axp["date"]) == [str(d) for d in ohlcv.dates]
    for f in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(axp[f].to_numpy(), getattr(ohlcv, f)[:, 0])
    closes = load_dataset("sp500_20").select(["AAPL"]).slice("2009-09-01", "2009-09-30")
    aapl = frame[frame["symbol"] == "AAPL"]  # close-only: its OHLV columns are empty
    np.testing.assert_array_equal(aapl["close"].to_numpy(), closes.close[:, 0])
    assert aapl["open"].isna().all()


def test_downloads_merge_without_duplicating_dates_and_load_as_market_data(tmp_path):
    folder = DataDir(tmp_path / "data")
    first = Downloader().download(folder, ["AXP", "BA"], "2009-09-01", "2009-09-30", ["local"])
    # the bundled OHLCV sample has 20 bars in September 2009 (it lacks the 8th)
    assert first.added == {"AXP": 20, "BA": 20} and first.failures == [] and first.missing == []
    # a stored value stays as it is when the same date comes again
    stored = folder.read("AXP")
    stored.loc[0, "volume"] = 1.0
    folder._write("AXP", stored)
    again = Downloader().download(folder, ["AXP"], "2009-09-15", "2009-10-15", ["local"])
    expected = load_dataset("sp500_ohlcv_30").slice("2009-10-01", "2009-10-15").n_periods
    assert again.added == {"AXP": expected}
    axp = folder.read("AXP")
    assert axp["date"].is_unique and axp["date"].is_monotonic_increasing
    assert axp.loc[0, "volume"] == 1.0
    assert folder.manifest()["local"]["symbols"] == ["AXP"]
    # the folder loads through resolve_data, as --data <dir> does
    folder.delete_range(["AXP"], "2009-10-01", None)
    loaded = resolve_data(str(folder.path))
    bundled = load_dataset("sp500_ohlcv_30").select(["AXP", "BA"]).slice("2009-09-01", "2009-09-30")
    assert loaded.symbols == ("AXP", "BA") and loaded.name == "data"
    np.testing.assert_array_equal(loaded.dates, bundled.dates)
    np.testing.assert_array_equal(loaded.close, bundled.close)
    np.testing.assert_array_equal(loaded.volume[1:], bundled.volume[1:])


def test_coverage_counts_gaps_against_the_other_symbols(tmp_path):
    folder = DataDir(tmp_path)
    Downloader().download(folder, ["AXP", "BA"], "2009-09-01", "2009-09-30", ["local"])
    folder.delete_range(["BA"], "2009-09-10", "2009-09-11")  # two trading days out
    by_symbol = {c.symbol: c for c in folder.coverage()}
    assert (by_symbol["BA"].rows, by_symbol["BA"].gaps) == (18, 2)
    assert (by_symbol["AXP"].rows, by_symbol["AXP"].gaps) == (20, 0)
    assert by_symbol["BA"].first_date == "2009-09-01" and by_symbol["BA"].last_date == "2009-09-30"
    rows = folder.rows_in_range(["BA", "AXP"], "2009-09-29", None)
    assert [(r.symbol, r.rows, r.first_date) for r in rows] == [
        ("BA", 2, "2009-09-29"),
        ("AXP", 2, "2009-09-29"),
    ]
    assert folder.delete_range(["AXP"], None, None) == {"AXP": 20}
    assert folder.symbols() == ["BA"]  # a symbol with no rows left loses its file


def _bars(**change) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "date": ["2020-01-02", "2020-01-03"],
            "symbol": ["X", "X"],
            "open": [10.0, 11.0],
            "high": [11.0, 12.0],
            "low": [9.0, 10.0],
            "close": [10.5, 11.5],
            "volume": [100.0, 200.0],
        }
    )
    for column, (row, value) in change.items():
        frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"high": (1, 9.5)}, "X: high < low on 2020-01-03"),
        ({"close": (0, float("nan"))}, "X: close is missing (NaN) on 2020-01-02"),
        ({"close": (1, -1.0)}, "X"),
        ({"date": (1, "2020-01-02")}, "X: duplicate rows for 2020-01-02"),
        ({"date": (1, "2020-02-03")}, "X: bar on 2020-02-03 outside 2020-01-01..2020-01-31"),
        ({"symbol": (1, "Y")}, "symbol(s) not asked for: ['Y']"),
    ],
)
def test_bad_bars_are_refused_naming_symbol_and_date(change, message):
    with pytest.raises(DataValidationError) as err:
        validate_bars(_bars(**change), ["X"], "2020-01-01", "2020-01-31", "provider 'p'")
    assert message in str(err.value)
    if "close" in change and change["close"][1] == -1.0:
        assert "2020-01-03" in str(err.value)


def test_a_symbol_that_would_escape_the_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"symbol '\.\./etc'"):
        Downloader().download(DataDir(tmp_path), ["../etc"], "2020-01-01", "2020-01-31", ["local"])
    assert list(tmp_path.iterdir()) == []


def test_token_bucket_refills_at_its_rate():
    clock = FakeClock()
    bucket = TokenBucket(2, clock=clock)  # 2 per minute, bursts of 2
    assert bucket.try_acquire() == 0.0 and bucket.try_acquire() == 0.0
    assert bucket.try_acquire() == pytest.approx(30.0)  # one token takes 30 s
    clock.now += 29.0
    assert bucket.try_acquire() == pytest.approx(1.0)
    clock.now += 1.0
    assert bucket.try_acquire() == 0.0
    clock.now += 600.0  # never more than the capacity
    assert [bucket.try_acquire() == 0.0 for _ in range(3)] == [True, True, False]
    with pytest.raises(ConfigError, match="must be > 0"):
        TokenBucket(0)


class Failing:
    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    def fetch(self, symbols, start, end):
        self.calls += 1
        raise ConnectionError("upstream unreachable")


class BadBars:
    name = "badbars"

    def fetch(self, symbols, start, end):
        return _bars(high=(0, 1.0)).assign(symbol=symbols[0])


class Partial:
    """Has AXP only, with made-up prices (so the test can tell who served what)."""

    name = "partial"
    requests_per_minute = 1.0

    def fetch(self, symbols, start, end):
        return _bars().assign(symbol="AXP", date=["2009-09-01", "2009-09-02"])


def test_fallback_order_reports_each_failure_and_the_next_provider_serves(tmp_path, monkeypatch):
    failing = Failing()
    made = {
        "failing": failing,
        "badbars": BadBars(),
        "partial": Partial(),
        "local": LocalProvider(),
    }
    # the test's providers stand in for installed plug-ins (discovery: the test below)
    known = dict.fromkeys(made, "test")
    monkeypatch.setattr(providers, "available_providers", lambda: known)
    clock = FakeClock()
    loader = Downloader(make=made.__getitem__, clock=clock)
    folder = DataDir(tmp_path)
    order = ["failing", "badbars", "partial", "local"]
    report = loader.download(folder, ["AXP", "BA"], "2009-09-01", "2009-09-30", order)
    assert [f["provider"] for f in report.failures] == ["failing", "badbars", "partial"]
    assert report.failures[0]["error"] == "ConnectionError: upstream unreachable"
    assert "AXP: high < low on 2020-01-02" in report.failures[1]["error"]
    assert report.failures[2]["error"] == "no bars for ['BA'] in 2009-09-01..2009-09-30"
    assert report.sources == {"AXP": "partial", "BA": "local"}
    assert report.added == {"AXP": 2, "BA": 20} and report.missing == []
    assert list(folder.read("AXP")["close"]) == [10.5, 11.5]
    # partial allows 1 request a minute (its own default): the second is skipped
    again = loader.download(folder, ["AXP"], "2009-09-01", "2009-09-30", ["partial"])
    assert again.failures == [
        {"provider": "partial", "error": "DataError: rate limited: next request in 60.0 s"}
    ]
    assert again.missing == ["AXP"] and again.added == {}
    clock.now += 60.0
    assert loader.download(folder, ["AXP"], "2009-09-01", "2009-09-30", ["partial"]).failures == []
    # a limit from the settings overrides the provider's: none left after one request
    limited = Downloader({"local": 1}, make=made.__getitem__, clock=clock)
    assert limited.download(folder, ["KO"], "2009-09-01", "2009-09-30", ["local"]).added
    second = limited.download(folder, ["PG"], "2009-09-01", "2009-09-30", ["local"])
    assert second.missing == ["PG"] and "rate limited" in second.failures[0]["error"]
    assert failing.calls == 1


def test_an_unknown_provider_is_refused_before_any_request(tmp_path):
    with pytest.raises(UnknownNameError, match=r"no provider 'nope'; providers: \['local'\]"):
        Downloader().download(
            DataDir(tmp_path), ["AXP"], "2009-09-01", "2009-09-30", ["nope", "local"]
        )
    assert list(tmp_path.iterdir()) == []


def _install_plugin(site: Path, entry_points: dict[str, str], module: str) -> None:
    """What ``pip install`` of a provider package leaves: its module and a ``.dist-info``
    folder with ``METADATA`` and ``entry_points.txt``."""
    (site / "demo_provider.py").write_text(module)
    info = site / "demo_provider-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-provider\nVersion: 0.1.0\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


PLUGIN = """
import pandas as pd

class Constant:
    name = "constant"

    def fetch(self, symbols, start, end):
        dates = pd.bdate_range(start, end).strftime("%Y-%m-%d")
        return pd.DataFrame(
            [{"date": d, "symbol": s, "close": 42.0} for s in symbols for d in dates]
        )

class NotAProvider:
    pass

def broken():
    raise RuntimeError("no credentials")
"""


def test_plugins_are_discovered_through_entry_points(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _install_plugin(
        site,
        {
            "constant": "demo_provider:Constant",
            "notaprovider": "demo_provider:NotAProvider",
            "broken": "demo_provider:broken",
        },
        PLUGIN,
    )
    assert "constant" not in available_providers()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "demo_provider", raising=False)
    assert available_providers() == {
        "local": "marketarena",
        "constant": "demo-provider",
        "notaprovider": "demo-provider",
        "broken": "demo-provider",
    }
    assert isinstance(make_provider("constant"), Provider)
    with pytest.raises(ConfigError, match="made NotAProvider, which has no name and fetch"):
        make_provider("notaprovider")
    folder = DataDir(tmp_path / "data")
    report = Downloader().download(
        folder, ["ZZZ"], "2024-01-01", "2024-01-05", ["broken", "constant"]
    )
    assert report.failures == [
        {
            "provider": "broken",
            "error": "ConfigError: provider plug-in 'broken' = 'demo_provider:broken' failed "
            "to load (RuntimeError: no credentials)",
        }
    ]
    assert report.added == {"ZZZ": 5} and report.sources == {"ZZZ": "constant"}
    assert resolve_data(str(folder.path)).close[:, 0].tolist() == [42.0] * 5
