"""MarketData, the loaders, validation, missing-data policies and coverage reports.

Every expected number here is written out by hand from the small frames in this file.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib

import numpy as np
import pandas as pd
import pytest

from marketarena.envs.data import (
    BUNDLED,
    DataValidationError,
    DataWarning,
    MarketData,
    SymbolCoverage,
    bundled_path,
    coverage_report,
    from_long_frame,
    from_wide_frame,
    load_csv,
    load_dataset,
    load_file,
    load_parquet,
    read_raw,
    resolve_data,
)

COLS = ["date", "symbol", "open", "high", "low", "close", "volume"]

# Two symbols, three dates (Thu 2020-01-02, Fri 01-03, Mon 01-06). Rows deliberately not in
# (date, symbol) order and BBB before AAA, so the loader has to sort.
BARS = [
    ["2020-01-03", "BBB", 20.5, 22.0, 20.0, 21.0, 210.0],
    ["2020-01-02", "BBB", 20.0, 21.0, 19.0, 20.5, 200.0],
    ["2020-01-02", "AAA", 10.0, 11.0, 9.0, 10.5, 100.0],
    ["2020-01-03", "AAA", 10.5, 12.0, 10.0, 11.0, 110.0],
    ["2020-01-06", "AAA", 11.0, 12.0, 10.5, 11.5, 120.0],
    ["2020-01-06", "BBB", 21.0, 21.5, 19.5, 19.8, 220.0],
]
DATES = np.array(["2020-01-02", "2020-01-03", "2020-01-06"], dtype="datetime64[D]")


def long_frame(rows=None) -> pd.DataFrame:
    return pd.DataFrame([list(r) for r in (BARS if rows is None else rows)], columns=COLS)


def with_cell(symbol: str, date: str, column: str, value) -> pd.DataFrame:
    """BARS with one cell replaced."""
    frame = long_frame()
    hit = (frame["symbol"] == symbol) & (frame["date"] == date)
    assert hit.sum() == 1
    frame[column] = frame[column].astype(object)
    frame.loc[hit, column] = value
    return frame


def small_panel(**overrides) -> MarketData:
    kwargs = dict(
        dates=DATES,
        symbols=("AAA", "BBB"),
        open=[[10.0, 20.0], [10.5, 20.5], [11.0, 21.0]],
        high=[[11.0, 21.0], [12.0, 22.0], [12.0, 21.5]],
        low=[[9.0, 19.0], [10.0, 20.0], [10.5, 19.5]],
        close=[[10.5, 20.5], [11.0, 21.0], [11.5, 19.8]],
        volume=[[100.0, 200.0], [110.0, 210.0], [120.0, 220.0]],
        name="small",
    )
    kwargs.update(overrides)
    return MarketData(**kwargs)


def wide_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"Date": ["2020-01-02", "2020-01-03", "2020-01-06"], "XX": [1.0, 2.0, 4.0], "YY": [5, 6, 7]}
    )


# ------------------------------------------------------------------------ long format
def test_from_long_frame_sorts_and_pivots_by_hand():
    data = from_long_frame(long_frame(), name="bars")
    assert data.name == "bars"
    assert data.symbols == ("AAA", "BBB")
    np.testing.assert_array_equal(data.dates, DATES)
    assert data.dates.dtype == np.dtype("datetime64[D]")
    assert data.fields == ("open", "high", "low", "close", "volume")
    assert data.has_ohlc
    assert (data.n_periods, data.n_assets) == (3, 2)
    np.testing.assert_array_equal(data.close, [[10.5, 20.5], [11.0, 21.0], [11.5, 19.8]])
    np.testing.assert_array_equal(data.open, [[10.0, 20.0], [10.5, 20.5], [11.0, 21.0]])
    np.testing.assert_array_equal(data.high, [[11.0, 21.0], [12.0, 22.0], [12.0, 21.5]])
    np.testing.assert_array_equal(data.low, [[9.0, 19.0], [10.0, 20.0], [10.5, 19.5]])
    np.testing.assert_array_equal(data.volume, [[100, 200], [110, 210], [120, 220]])
    assert data.close.dtype == np.float64 and data.close.flags.c_contiguous
    assert data.notes == ()
    assert data.content_hash() == small_panel().content_hash()


def test_close_only_long_frame_has_no_ohlc():
    data = from_long_frame(long_frame()[["date", "symbol", "close"]])
    assert data.fields == ("close",)
    assert data.open is None and data.high is None and data.low is None and data.volume is None
    assert not data.has_ohlc
    np.testing.assert_array_equal(data.close[:, 1], [20.5, 21.0, 19.8])


def test_sector_column_is_kept_per_symbol_and_conflicts_rejected():
    frame = long_frame().assign(sector=lambda f: f["symbol"].map({"AAA": "Tech", "BBB": "Bank"}))
    assert from_long_frame(frame).sectors == ("Tech", "Bank")
    frame.loc[(frame["symbol"] == "BBB") & (frame["date"] == "2020-01-06"), "sector"] = "Oil"
    with pytest.raises(DataValidationError, match="BBB: more than one sector"):
        from_long_frame(frame)


def test_symbols_argument_restricts_and_rejects_unknown():
    data = from_long_frame(long_frame(), symbols=["BBB"])
    assert data.symbols == ("BBB",)
    np.testing.assert_array_equal(data.close[:, 0], [20.5, 21.0, 19.8])
    with pytest.raises(DataValidationError, match=r"ZZZ"):
        from_long_frame(long_frame(), symbols=["BBB", "ZZZ"])


def test_integer_yyyymmdd_dates_are_parsed():
    frame = long_frame()
    frame["date"] = frame["date"].str.replace("-", "").astype(int)
    np.testing.assert_array_equal(from_long_frame(frame).dates, DATES)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_csv_round_trip(tmp_path, suffix):
    path = tmp_path / f"bars{suffix}"
    long_frame().to_csv(path, index=False)
    if suffix == ".csv.gz":
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # really gzipped
        assert gzip.decompress(path.read_bytes()).startswith(b"date,symbol,open")
    data = load_csv(path)
    assert data.name == f"bars{suffix}"
    assert data.content_hash() == small_panel().content_hash()
    assert load_file(path, name="given").name == "given"


def test_parquet_round_trip(tmp_path):
    original = small_panel()
    path = tmp_path / "bars.parquet"
    original.to_long_frame().to_parquet(path)
    data = load_parquet(path)
    assert data.name == "bars.parquet"
    assert data.content_hash() == original.content_hash()
    np.testing.assert_array_equal(data.volume, original.volume)


def test_wide_parquet_round_trip(tmp_path):
    path = tmp_path / "wide.parquet"
    wide_frame().to_parquet(path)
    data = load_parquet(path)
    assert data.fields == ("close",)
    assert data.symbols == ("XX", "YY")
    np.testing.assert_array_equal(data.close, [[1, 5], [2, 6], [4, 7]])


def test_load_file_layout_argument(tmp_path):
    path = tmp_path / "bars.csv"
    long_frame().to_csv(path, index=False)
    with pytest.raises(ValueError, match="layout='diagonal'"):
        load_file(path, layout="diagonal")
    # forcing the wide layout on a long file: one row per (date, symbol) repeats each date
    with pytest.raises(DataValidationError, match="duplicate date 2020-01-02"):
        load_file(path, layout="wide")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_csv(tmp_path / "nope.csv")


# ------------------------------------------------------------------------ wide format
def test_wide_frame_with_date_column():
    data = from_wide_frame(wide_frame(), name="w")
    assert data.symbols == ("XX", "YY")
    np.testing.assert_array_equal(data.dates, DATES)
    np.testing.assert_array_equal(data.close, [[1.0, 5.0], [2.0, 6.0], [4.0, 7.0]])
    assert data.fields == ("close",)
    assert not data.has_ohlc and data.open is None and data.volume is None


def test_wide_frame_with_date_index_matches_date_column():
    by_column = from_wide_frame(wide_frame())
    indexed = wide_frame().set_index("Date")
    indexed.index = pd.DatetimeIndex(indexed.index)
    assert from_wide_frame(indexed).content_hash() == by_column.content_hash()
    string_index = wide_frame().set_index("Date")  # ISO strings in the index
    assert from_wide_frame(string_index).content_hash() == by_column.content_hash()


def test_wide_frame_explicit_date_column():
    frame = wide_frame().rename(columns={"Date": "when"})
    data = from_wide_frame(frame, date_column="when")
    np.testing.assert_array_equal(data.dates, DATES)
    with pytest.raises(DataValidationError, match="date column 'nope' not found"):
        from_wide_frame(frame, date_column="nope")


def test_wide_csv_auto_layout(tmp_path):
    path = tmp_path / "closes.csv"
    wide_frame().to_csv(path, index=False)
    data = load_csv(path)
    assert data.symbols == ("XX", "YY")
    np.testing.assert_array_equal(data.close[:, 1], [5.0, 6.0, 7.0])


# ---------------------------------------------------------------------------- aliases
@pytest.mark.parametrize(
    "names",
    [
        {"date": "Date", "symbol": "Ticker", "close": "Adj Close"},
        {"date": "timestamp", "symbol": "tic", "close": "adjusted_close"},
        {"date": "Datetime", "symbol": "SYMBOL", "close": "adj_close"},
        {"date": "time", "symbol": " Ticker ", "close": " Close "},
        {"open": "Open", "high": "HIGH", "low": "Low", "volume": "Volume", "date": "DATE"},
    ],
)
def test_column_aliases(names):
    frame = long_frame().rename(columns=names)
    assert from_long_frame(frame).content_hash() == small_panel().content_hash()


def test_two_columns_for_one_field_is_an_error():
    frame = long_frame().assign(**{"Adj Close": long_frame()["close"]})
    with pytest.raises(DataValidationError, match=r"same field twice: \['close'\]"):
        from_long_frame(frame)


# ---------------------------------------------------------------------- bundled data
SP500_20 = [
    "AAPL",
    "AMD",
    "BAC",
    "BBY",
    "CVX",
    "GE",
    "HD",
    "JNJ",
    "JPM",
    "KO",
    "LLY",
    "MRK",
    "MSFT",
    "PEP",
    "PFE",
    "PG",
    "RRC",
    "UNH",
    "WMT",
    "XOM",
]
OHLCV_30 = [
    "AXP",
    "BA",
    "BAC",
    "C",
    "CAT",
    "CVX",
    "DIS",
    "GE",
    "GS",
    "HD",
    "HON",
    "HPQ",
    "IBM",
    "JNJ",
    "JPM",
    "KO",
    "MCD",
    "MMM",
    "MRK",
    "NKE",
    "PEP",
    "PFE",
    "PG",
    "T",
    "TXN",
    "UNH",
    "VZ",
    "WFC",
    "WMT",
    "XOM",
]
OHLCV = ("open", "high", "low", "close", "volume")

EXPECTED_BUNDLED = {
    "sp500_20": (8313, 20, "1990-01-02", "2022-12-28", ("close",)),
    "sp500_index": (8313, 1, "1990-01-02", "2022-12-28", ("close",)),
    "sp500_ohlcv_30": (245, 30, "2009-08-21", "2010-08-20", OHLCV),
}


def test_every_bundled_dataset_is_covered_here():
    assert set(BUNDLED) == set(EXPECTED_BUNDLED)


@pytest.mark.parametrize("name", sorted(EXPECTED_BUNDLED))
def test_load_dataset_shapes_and_dates(name):
    t, n, first, last, fields = EXPECTED_BUNDLED[name]
    data = load_dataset(name)
    assert data.name == name
    assert (data.n_periods, data.n_assets) == (t, n)
    assert data.close.shape == (t, n)
    assert str(data.dates[0]) == first and str(data.dates[-1]) == last
    assert data.fields == fields
    assert data.notes == ()
    assert np.all(np.diff(data.dates.astype("int64")) > 0)
    assert bundled_path(name).name == BUNDLED[name].filename
    assert load_dataset(name) is data  # cached
    assert resolve_data(name) is data


def test_bundled_values_spot_checked_against_the_files():
    sp = load_dataset("sp500_20")
    assert sp.symbols == tuple(SP500_20)
    # first and last-but-... rows as they appear in sp500_20.csv.gz
    assert sp.close[0, sp.symbols.index("AAPL")] == 0.264
    assert sp.close[0, sp.symbols.index("XOM")] == 4.068
    assert sp.close[1, sp.symbols.index("AMD")] == 4.0
    index = load_dataset("sp500_index")
    assert index.symbols == ("SP500",)
    assert index.close[0, 0] == 359.69 and index.close[1, 0] == 358.76
    np.testing.assert_array_equal(index.dates, sp.dates)
    ohlcv = load_dataset("sp500_ohlcv_30")
    assert ohlcv.symbols == tuple(OHLCV_30)
    j = ohlcv.symbols.index("AXP")
    bar = [ohlcv.open[0, j], ohlcv.high[0, j], ohlcv.low[0, j], ohlcv.close[0, j]]
    assert bar == [32.96, 33.07, 32.5, 32.85]
    assert ohlcv.volume[0, j] == 122772


def test_unknown_bundled_name():
    with pytest.raises(KeyError, match="sp500_20"):
        load_dataset("sp999")
    with pytest.raises(ValueError, match="no such file"):
        resolve_data("sp999")


def test_resolve_data_passes_market_data_through_and_loads_paths(tmp_path):
    data = small_panel()
    assert resolve_data(data) is data
    path = tmp_path / "b.csv"
    long_frame().to_csv(path, index=False)
    assert resolve_data(path).content_hash() == data.content_hash()


# ----------------------------------------------------------------------- immutability
def test_arrays_are_read_only_and_copied():
    close = np.array([[10.5, 20.5], [11.0, 21.0], [11.5, 19.8]])
    data = small_panel(close=close)
    close[0, 0] = 999.0  # the caller's array is not shared
    assert data.close[0, 0] == 10.5
    for field in ("open", "high", "low", "close", "volume", "dates"):
        array = getattr(data, field)
        assert not array.flags.writeable, field
        with pytest.raises(ValueError, match="read-only"):
            array[0] = array[1]
    assert not data.slice("2020-01-03", None).close.flags.writeable
    assert not data.select(["BBB"]).close.flags.writeable


def test_dataclass_is_frozen():
    data = small_panel()
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.close = np.ones((3, 2))  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.name = "other"  # type: ignore[misc]
    assert isinstance(data.symbols, tuple)


# ------------------------------------------------------------------------ content hash
def test_content_hash_follows_its_documented_recipe():
    data = small_panel()
    h = hashlib.sha256()
    h.update(DATES.astype("int64").tobytes())
    h.update(b"AAA\x1fBBB")
    for field in ("open", "high", "low", "close", "volume"):
        h.update(field.encode())
        h.update(np.ascontiguousarray(getattr(data, field), dtype=np.float64).tobytes())
    assert data.content_hash() == h.hexdigest()


def test_content_hash_stable_and_sensitive_to_one_cell():
    base = small_panel().content_hash()
    assert len(base) == 64 and small_panel().content_hash() == base
    assert small_panel(name="renamed").content_hash() == base  # name is a label, not content
    for field in ("open", "high", "low", "close", "volume"):
        values = np.array(getattr(small_panel(), field))
        values[2, 1] = values[2, 1] * (1 + 1e-12) if field != "low" else 19.4
        assert small_panel(**{field: values}).content_hash() != base, field
    moved = DATES.copy()
    moved[2] = np.datetime64("2020-01-07")
    assert small_panel(dates=moved).content_hash() != base
    assert small_panel(symbols=("AAA", "BBC")).content_hash() != base
    close_only = MarketData(dates=DATES, symbols=("AAA", "BBB"), close=small_panel().close)
    assert close_only.content_hash() != base


# ----------------------------------------------------------- slice, select, index_of
def test_index_of_left_and_right():
    data = small_panel()
    assert data.index_of("2020-01-03") == 1
    assert data.index_of("2020-01-03", "right") == 1
    assert data.index_of("2020-01-04") == 2  # Saturday -> next trading date (Mon 01-06)
    assert data.index_of("2020-01-04", "right") == 1  # -> previous (Fri 01-03)
    assert data.index_of(np.datetime64("2019-12-31")) == 0
    assert data.index_of(pd.Timestamp("2021-01-01"), "right") == 2
    with pytest.raises(ValueError, match=r"no trading date on or after 2020-01-07.*2020-01-06"):
        data.index_of("2020-01-07")
    with pytest.raises(ValueError, match=r"no trading date on or before 2020-01-01.*2020-01-02"):
        data.index_of("2020-01-01", "right")


def test_date_range_indices():
    data = small_panel()
    assert data.date_range_indices(None, None) == (0, 2)
    assert data.date_range_indices("2020-01-03", None) == (1, 2)
    assert data.date_range_indices(None, "2020-01-05") == (0, 1)
    assert data.date_range_indices("2020-01-04", "2020-01-06") == (2, 2)
    with pytest.raises(ValueError, match="no trading dates between 2020-01-04 and 2020-01-05"):
        data.date_range_indices("2020-01-04", "2020-01-05")


def test_slice_is_inclusive_and_keeps_labels():
    data = small_panel(sectors=("Tech", "Bank"))
    part = data.slice("2020-01-03", "2020-01-06")
    np.testing.assert_array_equal(part.dates, DATES[1:])
    np.testing.assert_array_equal(part.close, [[11.0, 21.0], [11.5, 19.8]])
    np.testing.assert_array_equal(part.volume, [[110, 210], [120, 220]])
    assert (part.name, part.symbols, part.sectors) == ("small", ("AAA", "BBB"), ("Tech", "Bank"))
    np.testing.assert_array_equal(data.slice(None, "2020-01-05").dates, DATES[:2])
    assert data.slice().content_hash() == data.content_hash()
    with pytest.raises(ValueError, match="no trading dates between"):
        data.slice("2020-01-04", "2020-01-05")
    with pytest.raises(ValueError, match="no trading date on or after"):
        data.slice("2021-01-01")


def test_select_reorders_and_rejects_unknown():
    data = small_panel(sectors=("Tech", "Bank"))
    picked = data.select(["BBB", "AAA"])
    assert picked.symbols == ("BBB", "AAA") and picked.sectors == ("Bank", "Tech")
    np.testing.assert_array_equal(picked.close, [[20.5, 10.5], [21.0, 11.0], [19.8, 11.5]])
    np.testing.assert_array_equal(picked.high[:, 0], [21.0, 22.0, 21.5])
    one = data.select(["BBB"])
    assert one.n_assets == 1 and one.volume[2, 0] == 220.0
    with pytest.raises(KeyError, match=r"unknown symbol\(s\) \['ZZZ'\]"):
        data.select(["AAA", "ZZZ"])
    with pytest.raises(DataValidationError, match="duplicate symbols"):
        data.select(["AAA", "AAA"])


# --------------------------------------------------------------------- exports
def test_to_long_frame_layout_and_round_trip():
    data = small_panel()
    frame = data.to_long_frame()
    assert list(frame.columns) == COLS
    assert len(frame) == 6
    first = frame.iloc[1]
    assert first["symbol"] == "BBB" and pd.Timestamp(first["date"]) == pd.Timestamp("2020-01-02")
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (
        20.0,
        21.0,
        19.0,
        20.5,
        200.0,
    )
    back = from_long_frame(frame, name="small")
    assert back.content_hash() == data.content_hash()
    np.testing.assert_array_equal(back.dates, data.dates)


def test_to_long_frame_round_trip_keeps_sectors():
    data = small_panel(sectors=("Tech", "Bank"))
    back = from_long_frame(data.to_long_frame())
    assert back.sectors == ("Tech", "Bank")


def test_manifest():
    data = small_panel()
    assert data.manifest() == {
        "universe_policy": "full_panel",
        "name": "small",
        "sha256": data.content_hash(),
        "symbols": ["AAA", "BBB"],
        "fields": ["open", "high", "low", "close", "volume"],
        "feature_names": [],
        "first_date": "2020-01-02",
        "last_date": "2020-01-06",
        "n_periods": 3,
        "notes": [],
    }
    assert "3 dates 2020-01-02..2020-01-06" in repr(data)


# -------------------------------------------------------------------------- validation
BAD_CELLS = [
    # (column, value, words that must describe the problem)
    ("close", np.nan, "close is missing (NaN)"),
    ("close", np.inf, "close is NaN or infinite"),
    ("open", -np.inf, "open is NaN or infinite"),
    ("close", 0.0, "non-positive close"),
    ("low", -1.0, "non-positive low"),
    ("high", 19.0, "high < low"),
    ("open", 22.5, "open or close outside [low, high]"),
    ("close", 19.9, "open or close outside [low, high]"),
    ("volume", -5.0, "negative volume"),
    ("close", "abc", "close value 'abc'"),
    ("volume", "1,000", "volume value '1,000'"),
]


@pytest.mark.parametrize(("column", "value", "words"), BAD_CELLS)
def test_long_frame_bad_cell_names_symbol_and_date(column, value, words):
    frame = with_cell("BBB", "2020-01-03", column, value)
    with pytest.raises(DataValidationError) as info:
        from_long_frame(frame, name="bad")
    message = str(info.value)
    assert "BBB" in message and "2020-01-03" in message
    assert words in message
    assert "AAA" not in message  # only the offending symbol is named
    assert info.value.source == "bad"
    assert all(p.startswith("BBB: ") for p in info.value.problems)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("close", np.nan, "close is NaN or infinite"),
        ("close", -2.0, "non-positive close"),
        ("high", 10.0, "high < low"),
        ("volume", -1.0, "negative volume"),
    ],
)
def test_market_data_constructor_validates(field, value, words):
    values = np.array(getattr(small_panel(), field))
    values[1, 1] = value
    with pytest.raises(DataValidationError) as info:
        small_panel(**{field: values})
    assert f"BBB: {words} on 2020-01-03" in str(info.value)


def test_bad_cells_on_several_dates_are_counted():
    frame = with_cell("BBB", "2020-01-03", "volume", -1.0)
    frame.loc[(frame["symbol"] == "BBB") & (frame["date"] == "2020-01-06"), "volume"] = -2.0
    with pytest.raises(DataValidationError) as info:
        from_long_frame(frame)
    assert info.value.problems == ["BBB: negative volume on 2020-01-03 (and 1 more date(s))"]


def test_constructor_rejects_unsorted_and_duplicate_dates():
    with pytest.raises(
        DataValidationError, match="dates not sorted: 2020-01-03 follows 2020-01-06"
    ):
        small_panel(dates=np.array(["2020-01-02", "2020-01-06", "2020-01-03"]))
    with pytest.raises(DataValidationError, match="duplicate date 2020-01-03"):
        small_panel(dates=np.array(["2020-01-02", "2020-01-03", "2020-01-03"]))


def test_constructor_rejects_mismatched_shapes():
    with pytest.raises(DataValidationError, match="1 symbols for 2 price columns"):
        small_panel(symbols=("AAA",))
    with pytest.raises(DataValidationError, match=r"volume has shape \(2, 2\)"):
        small_panel(volume=[[1.0, 1.0], [1.0, 1.0]])
    with pytest.raises(DataValidationError, match="empty panel"):
        MarketData(dates=np.array([], dtype="datetime64[D]"), symbols=(), close=np.empty((0, 0)))


def test_duplicate_rows_name_symbol_and_date():
    frame = pd.concat([long_frame(), long_frame().iloc[[3]]], ignore_index=True)  # AAA 01-03
    with pytest.raises(DataValidationError) as info:
        from_long_frame(frame)
    assert info.value.problems == ["AAA: duplicate rows for 2020-01-03"]


def test_unparseable_date_in_long_frame_names_symbol_and_value():
    frame = long_frame()
    frame.loc[1, "date"] = "2020-13-45"  # the BBB row of 2020-01-02
    with pytest.raises(DataValidationError) as info:
        from_long_frame(frame)
    message = str(info.value)
    assert "BBB" in message and "'2020-13-45'" in message and "row 1" in message
    assert "np.int64" not in message


def test_missing_symbol_cell_is_an_error_naming_the_date():
    frame = long_frame()
    frame["symbol"] = frame["symbol"].astype(object)
    frame.loc[3, "symbol"] = None  # AAA's row of 2020-01-03
    with pytest.raises(DataValidationError, match="missing symbol on 2020-01-03 at row 3"):
        from_long_frame(frame)
    frame.loc[3, "symbol"] = "  "
    with pytest.raises(DataValidationError, match="missing symbol on 2020-01-03"):
        from_long_frame(frame)


def test_missing_symbol_cell_in_csv(tmp_path):
    path = tmp_path / "nosym.csv"
    path.write_text("date,symbol,close\n2020-01-02,AAA,1\n2020-01-02,,2\n")
    with pytest.raises(DataValidationError, match="missing symbol on 2020-01-02"):
        load_csv(path)


def test_unknown_column_is_named():
    with pytest.raises(DataValidationError, match=r"unknown column\(s\) \['shares_out'\]"):
        from_long_frame(long_frame().assign(shares_out=1.0))


def test_missing_close_column():
    with pytest.raises(DataValidationError, match="missing required column 'close'"):
        from_long_frame(long_frame().drop(columns="close"))
    with pytest.raises(DataValidationError, match="missing required column 'symbol'"):
        from_long_frame(long_frame().drop(columns="symbol"))


@pytest.mark.parametrize("drop", [["open"], ["high", "low"], ["low"]])
def test_partial_ohlc_is_an_error(drop):
    with pytest.raises(DataValidationError, match="open/high/low must come together") as info:
        from_long_frame(long_frame().drop(columns=drop))
    kept = sorted({"open", "high", "low"} - set(drop))
    assert f"got only {kept}" in str(info.value)


def test_empty_inputs(tmp_path):
    with pytest.raises(DataValidationError, match="empty input: no rows"):
        from_long_frame(pd.DataFrame(columns=COLS))
    with pytest.raises(DataValidationError, match="empty input"):
        from_wide_frame(pd.DataFrame())
    header_only = tmp_path / "header.csv"
    header_only.write_text("date,symbol,close\n")
    with pytest.raises(DataValidationError, match="empty input: no rows"):
        load_csv(header_only)
    zero_bytes = tmp_path / "zero.csv"
    zero_bytes.write_bytes(b"")
    with pytest.raises(DataValidationError, match="could not parse file"):
        load_csv(zero_bytes)
    with pytest.raises(DataValidationError, match="no symbol columns besides the date"):
        from_wide_frame(pd.DataFrame({"date": ["2020-01-02"]}))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0.0, "non-positive close"),
        (-3.0, "non-positive close"),
        (np.inf, "close is NaN or infinite"),
        ("n/a!", "value 'n/a!'"),
    ],
)
def test_wide_frame_bad_cell_names_symbol_and_date(value, words):
    frame = wide_frame()
    frame["YY"] = frame["YY"].astype(object)
    frame.loc[1, "YY"] = value
    with pytest.raises(DataValidationError) as info:
        from_wide_frame(frame)
    message = str(info.value)
    assert "YY" in message and "2020-01-03" in message and words in message
    assert "XX" not in message


def test_wide_frame_duplicate_dates():
    frame = wide_frame()
    frame.loc[2, "Date"] = "2020-01-03"
    with pytest.raises(DataValidationError, match="duplicate date 2020-01-03"):
        from_wide_frame(frame)


def test_wide_frame_unsorted_dates_name_both_dates():
    frame = wide_frame().iloc[[0, 2, 1]]
    with pytest.raises(DataValidationError) as info:
        from_wide_frame(frame)
    assert "dates not sorted: 2020-01-03 follows 2020-01-06" in str(info.value)


def test_wide_frame_unparseable_date():
    frame = wide_frame()
    frame.loc[2, "Date"] = "someday"
    with pytest.raises(DataValidationError, match="unparseable date 'someday' at row 2"):
        from_wide_frame(frame)


def test_error_message_lists_at_most_twenty_problems():
    n = 25
    symbols = [f"S{i:02d}" for i in range(n)]
    close = np.ones((2, n))
    close[1] = -1.0
    with pytest.raises(DataValidationError) as info:
        MarketData(dates=DATES[:2], symbols=symbols, close=close)
    assert len(info.value.problems) == n
    message = str(info.value)
    assert "25 problem(s)" in message and "... and 5 more" in message
    assert "S19: non-positive close" in message and "S20:" not in message


# ----------------------------------------------------------------------- ragged data
# AAA trades 01-02, 01-03, 01-06, 01-07; BBB misses 01-03 and 01-06.
RAGGED = [
    ["2020-01-02", "AAA", 10.0, 11.0, 9.0, 10.5, 100.0],
    ["2020-01-02", "BBB", 20.0, 21.0, 19.0, 20.5, 200.0],
    ["2020-01-03", "AAA", 10.5, 12.0, 10.0, 11.0, 110.0],
    ["2020-01-06", "AAA", 11.0, 12.0, 10.5, 11.5, 120.0],
    ["2020-01-07", "AAA", 11.5, 12.0, 11.0, 11.8, 130.0],
    ["2020-01-07", "BBB", 20.0, 22.0, 19.5, 21.5, 300.0],
]


def test_ragged_default_policy_names_symbol_and_first_missing_date():
    with pytest.raises(DataValidationError) as info:
        from_long_frame(long_frame(RAGGED))
    message = str(info.value)
    assert "BBB: no bar on 2020-01-03 and 1 other date(s) where other symbols trade" in message
    assert "missing='drop_symbol'" in message and "missing='ffill'" in message
    assert "AAA" not in message


def test_ragged_drop_symbol_warns_and_records_note():
    with pytest.warns(DataWarning, match=r"dropped 1 symbol\(s\) with incomplete coverage"):
        data = from_long_frame(long_frame(RAGGED), name="r", missing="drop_symbol")
    assert data.symbols == ("AAA",)
    np.testing.assert_array_equal(data.close[:, 0], [10.5, 11.0, 11.5, 11.8])
    assert data.notes == ("dropped 1 symbol(s) with incomplete coverage: ['BBB']",)
    assert data.manifest()["notes"] == list(data.notes)


def test_ragged_drop_symbol_cannot_drop_everything():
    rows = [r for r in RAGGED if r[1] == "BBB"] + [["2020-01-03", "CCC", 1, 1, 1, 1, 1]]
    with pytest.raises(DataValidationError, match="would drop every symbol"):
        from_long_frame(long_frame(rows), missing="drop_symbol")


def test_ragged_ffill_by_hand():
    with pytest.warns(DataWarning, match=r"forward-filled 2 missing bar\(s\) in 1 symbol\(s\)"):
        data = from_long_frame(long_frame(RAGGED), missing="ffill")
    assert data.symbols == ("AAA", "BBB")
    np.testing.assert_array_equal(
        data.dates, np.array(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"], "M8[D]")
    )
    # BBB on 01-03 and 01-06 takes the 01-02 close 20.5 as open, high, low and close, volume 0
    np.testing.assert_array_equal(data.close[:, 1], [20.5, 20.5, 20.5, 21.5])
    np.testing.assert_array_equal(data.open[:, 1], [20.0, 20.5, 20.5, 20.0])
    np.testing.assert_array_equal(data.high[:, 1], [21.0, 20.5, 20.5, 22.0])
    np.testing.assert_array_equal(data.low[:, 1], [19.0, 20.5, 20.5, 19.5])
    np.testing.assert_array_equal(data.volume[:, 1], [200.0, 0.0, 0.0, 300.0])
    # AAA untouched
    np.testing.assert_array_equal(data.close[:, 0], [10.5, 11.0, 11.5, 11.8])
    np.testing.assert_array_equal(data.volume[:, 0], [100.0, 110.0, 120.0, 130.0])
    assert data.notes == ("forward-filled 2 missing bar(s) in 1 symbol(s): BBB (2)",)


def test_ffill_fills_a_trailing_gap():
    rows = [r for r in RAGGED if not (r[1] == "BBB" and r[0] == "2020-01-07")]
    with pytest.warns(DataWarning, match="forward-filled 3 missing bar"):
        data = from_long_frame(long_frame(rows), missing="ffill")
    np.testing.assert_array_equal(data.close[:, 1], [20.5, 20.5, 20.5, 20.5])


def test_ffill_rejects_a_symbol_that_starts_late():
    rows = [r for r in RAGGED if not (r[1] == "BBB" and r[0] == "2020-01-02")]
    with pytest.raises(DataValidationError) as info:
        from_long_frame(long_frame(rows), missing="ffill")
    message = str(info.value)
    assert "BBB: first bar on 2020-01-07, after the panel starts on 2020-01-02" in message


def test_wide_ragged_policies():
    frame = pd.DataFrame(
        {
            "date": ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"],
            "XX": [1.0, 2.0, 3.0, 4.0],
            "YY": [5.0, np.nan, np.nan, 8.0],
            "ZZ": [np.nan, 1.0, 1.5, 2.0],
        }
    )
    with pytest.raises(DataValidationError) as info:
        from_wide_frame(frame)
    message = str(info.value)
    assert "YY: no bar on 2020-01-03 and 1 other date(s)" in message
    assert "ZZ: no bar on 2020-01-02 where other symbols trade" in message
    with pytest.warns(DataWarning, match=r"\['YY', 'ZZ'\]"):
        dropped = from_wide_frame(frame, missing="drop_symbol")
    assert dropped.symbols == ("XX",)
    with pytest.raises(DataValidationError, match="ZZ: first bar on 2020-01-03"):
        from_wide_frame(frame, missing="ffill")
    with pytest.warns(DataWarning, match="YY \\(2\\)"):
        filled = from_wide_frame(frame.drop(columns="ZZ"), missing="ffill")
    np.testing.assert_array_equal(filled.close[:, 1], [5.0, 5.0, 5.0, 8.0])
    assert filled.fields == ("close",)


def test_ffill_with_a_symbol_that_has_no_bars_at_all():
    frame = pd.DataFrame(
        {"date": ["2020-01-02", "2020-01-03"], "XX": [1.0, 2.0], "EMPTY": [np.nan, np.nan]}
    )
    with pytest.raises(DataValidationError, match="EMPTY: no bars at all"):
        from_wide_frame(frame, missing="ffill")


def test_unknown_missing_policy():
    with pytest.raises(ValueError, match="missing='zero'"):
        from_long_frame(long_frame(RAGGED), missing="zero")


# ---------------------------------------------------------------------- coverage
def test_coverage_report_long_by_hand():
    rows = [
        *[[d, "AAA", 1.0] for d in ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]],
        ["2020-01-08", "AAA", 1.0],
        ["2020-01-02", "BBB", 2.0],
        ["2020-01-07", "BBB", 2.0],
        ["2020-01-06", "CCC", 3.0],
        ["2020-01-07", "CCC", np.nan],  # a row without a close does not count
        ["2020-01-08", "CCC", 3.0],
        ["2020-01-03", "DDD", 4.0],
    ]
    frame = pd.DataFrame(rows, columns=["Date", "Ticker", "Close"])
    assert coverage_report(frame) == [
        SymbolCoverage("AAA", "2020-01-02", "2020-01-08", 5, 0),
        SymbolCoverage("BBB", "2020-01-02", "2020-01-07", 2, 2),
        SymbolCoverage("CCC", "2020-01-06", "2020-01-08", 2, 1),
        SymbolCoverage("DDD", "2020-01-03", "2020-01-03", 1, 0),
    ]


def test_coverage_report_wide_by_hand():
    dates = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08"]
    frame = pd.DataFrame(
        {
            "X": [1.0, 2.0, 3.0, 4.0, 5.0],
            "Y": [np.nan, 2.0, np.nan, np.nan, 5.0],
            "Z": [1.0, 2.0, "n/a", np.nan, np.nan],
            "W": [np.nan] * 5,
        },
        index=pd.Index(dates, name="date"),
    )
    expected = [
        SymbolCoverage("X", "2020-01-02", "2020-01-08", 5, 0),
        SymbolCoverage("Y", "2020-01-03", "2020-01-08", 2, 2),
        SymbolCoverage("Z", "2020-01-02", "2020-01-03", 2, 0),
        SymbolCoverage("W", "-", "-", 0, 0),
    ]
    assert coverage_report(frame) == expected
    assert coverage_report(frame.reset_index()) == expected  # date as a column


def test_coverage_report_errors():
    with pytest.raises(DataValidationError, match="empty input"):
        coverage_report(pd.DataFrame(columns=["date", "symbol", "close"]))
    with pytest.raises(DataValidationError, match="missing required column 'date'"):
        coverage_report(pd.DataFrame({"symbol": ["A"], "close": [1.0]}))
    with pytest.raises(DataValidationError, match="unparseable date 'x'"):
        coverage_report(pd.DataFrame({"date": ["x"], "symbol": ["A"], "close": [1.0]}))


def test_read_raw_returns_the_file_unvalidated(tmp_path):
    path = tmp_path / "raw.csv"
    long_frame(RAGGED).to_csv(path, index=False)
    raw = read_raw(path)
    assert list(raw.columns) == COLS and len(raw) == 6
    assert [c.gaps for c in coverage_report(raw)] == [0, 2]


# ----------------------------------------------------------------------- user features
def test_feature_columns_become_named_features(tmp_path):
    frame = long_frame().assign(sentiment=[0.5, np.nan, 0.1, 0.2, 0.3, -0.4])
    data = from_long_frame(frame, feature_columns=["sentiment"])
    assert data.feature_names == ("sentiment",) and data.features.shape == (3, 2, 1)
    # rows sorted by date, columns AAA, BBB; BBB's 2020-01-02 value was NaN (not yet defined)
    np.testing.assert_array_equal(data.features[:, :, 0], [[0.1, np.nan], [0.2, 0.5], [0.3, -0.4]])
    assert not data.features.flags.writeable
    # they travel through slice/select, the hash and the long frame
    assert data.slice("2020-01-03").features.shape == (2, 2, 1)
    assert data.select(["BBB"]).features[:, 0, 0][-1] == -0.4
    assert data.content_hash() != from_long_frame(long_frame()).content_hash()
    path = tmp_path / "f.csv"
    data.to_long_frame().to_csv(path, index=False)
    again = load_csv(path, feature_columns=["sentiment"])
    np.testing.assert_array_equal(again.features, data.features)


def test_feature_column_errors():
    frame = long_frame().assign(sentiment=["x", 1, 2, 3, 4, 5])
    with pytest.raises(DataValidationError, match="BBB: sentiment value 'x' on 2020-01-03"):
        from_long_frame(frame, feature_columns=["sentiment"])
    with pytest.raises(DataValidationError, match=r"feature column\(s\) \['nope'\] not found"):
        from_long_frame(long_frame(), feature_columns=["nope"])
    with pytest.raises(DataValidationError, match="clash with price columns"):
        from_long_frame(long_frame(), feature_columns=["close"])
    inf = long_frame().assign(sentiment=[np.inf, 0, 0, 0, 0, 0])
    with pytest.raises(DataValidationError, match="BBB: a feature is infinite on 2020-01-03"):
        from_long_frame(inf, feature_columns=["sentiment"])
    with pytest.raises(DataValidationError, match="feature names for"):
        small_panel(features=np.zeros((3, 2, 2)), feature_names=("a",))


def _bars(closes: list[float]) -> pd.DataFrame:
    dates = pd.bdate_range("2024-01-01", periods=len(closes))
    return pd.DataFrame(
        {
            "date": dates,
            "symbol": "A",
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
            "volume": 1.0,
        }
    )


def test_a_self_consistent_absurd_bar_is_refused(monkeypatch):
    from marketarena.envs import data as data_module
    from marketarena.envs.data import DataValidationError, from_long_frame

    frame = _bars([10.0, 10.5, 1e300, 10.2, 10.1])  # open = high = low = close: consistent
    with pytest.raises(
        DataValidationError,
        match=r"A: close moves more than 10000x in one session .* on 2024-01-03",
    ):
        from_long_frame(frame)
    ok = from_long_frame(_bars([10.0, 10.5, 11.0, 10.2, 10.1]))  # ordinary moves pass
    assert ok.n_periods == 5
    monkeypatch.setattr(data_module, "IMPLAUSIBLE_MOVE", None)  # the check can be turned off
    assert from_long_frame(frame).close[2, 0] == 1e300
