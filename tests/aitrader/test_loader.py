"""AI-Trader price files (merged.jsonl, daily_prices_<SYM>.json) → validated MarketData."""

from __future__ import annotations

import json

import numpy as np
import pytest

from marketarena.envs.aitrader import is_aitrader_file, load_aitrader, load_benchmark_series
from marketarena.envs.data import DataValidationError, DataWarning, resolve_data

# the fixture market (see conftest.py), columns AAA, BBB, CCC; the last row is 2025-10-07,
# which has opens only and is marked at its open (close = high = low = open, volume 0)
DATES = ["2025-10-01", "2025-10-02", "2025-10-03", "2025-10-06", "2025-10-07"]
OPEN = [[100, 50, 20], [102, 51, 20.5], [104, 52, 21], [106, 50, 21.5], [107, 48.5, 22]]
HIGH = [[102, 51, 20.5], [104, 52, 21], [106, 53, 21.5], [107, 50.5, 22], [107, 48.5, 22]]
LOW = [[99, 49, 19.5], [101, 50, 20], [103, 50.5, 20.5], [104, 48, 21], [107, 48.5, 22]]
CLOSE = [
    [101, 50.5, 20.25],
    [103, 51.5, 20.75],
    [105, 51, 21.25],
    [105.5, 49, 21.75],
    [107, 48.5, 22],
]
VOLUME = [[1000, 2000, 3000], [1100, 2100, 3100], [1200, 2200, 3200], [1300, 2300, 3300], [0, 0, 0]]


def load_quietly(path, **kwargs):
    """Load a market whose last date has opens only: that is announced by a DataWarning."""
    with pytest.warns(DataWarning, match="2025-10-07 has opens only"):
        return load_aitrader(path, **kwargs)


def assert_same_market(a, b):
    assert a.dates.tolist() == b.dates.tolist()
    assert a.symbols == b.symbols
    for field in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.content_hash() == b.content_hash()


def test_merged_jsonl_with_mixed_keys_and_an_open_only_last_date(ai):
    # AAA uses buy/sell price keys, BBB open/close, CCC alternates between them by date
    data = load_quietly(ai.merged())
    assert data.name == "merged.jsonl"
    assert [str(d) for d in data.dates] == DATES
    assert data.symbols == ("AAA", "BBB", "CCC")
    np.testing.assert_array_equal(data.open, OPEN)
    np.testing.assert_array_equal(data.high, HIGH)
    np.testing.assert_array_equal(data.low, LOW)
    np.testing.assert_array_equal(data.close, CLOSE)
    np.testing.assert_array_equal(data.volume, VOLUME)
    assert data.notes == ("2025-10-07 has opens only: its close, high and low are set to the open",)


def test_open_only_last_date_can_be_dropped(ai):
    with pytest.warns(DataWarning, match="dropped 2025-10-07: it has opens only"):
        data = load_aitrader(ai.merged(), last_open_only="drop")
    assert [str(d) for d in data.dates] == DATES[:4]
    np.testing.assert_array_equal(data.close, CLOSE[:4])
    np.testing.assert_array_equal(data.open, OPEN[:4])
    with pytest.raises(ValueError, match="last_open_only='keep'"):
        load_aitrader(ai.merged("again.jsonl"), last_open_only="keep")


def test_complete_files_load_without_any_warning(ai):
    # no open-only date: nothing changed, so nothing to warn about (DataWarning is an error)
    data = load_aitrader(ai.merged(last_open=False))
    assert [str(d) for d in data.dates] == DATES[:4]
    assert data.notes == ()


def test_daily_price_files_give_the_same_market_as_merged_jsonl(ai):
    merged = load_quietly(ai.merged())
    folder = ai.daily_folder()
    assert sorted(p.name for p in folder.iterdir()) == [
        "daily_prices_AAA.json",
        "daily_prices_BBB.json",
        "daily_prices_CCC.json",
    ]
    from_folder = load_quietly(folder)
    assert from_folder.name == "daily"
    assert_same_market(merged, from_folder)
    # an explicit list of files, in any order, is the same market again
    files = sorted(folder.iterdir(), reverse=True)
    assert_same_market(merged, load_quietly(files))


def test_anywhere_data_is_accepted_the_ai_trader_files_are_recognised(ai):
    merged, folder = ai.merged(last_open=False), ai.daily_folder(last_open=False)
    assert is_aitrader_file(merged) and is_aitrader_file(folder)
    assert_same_market(resolve_data(str(merged)), load_aitrader(merged))
    assert_same_market(resolve_data(folder), load_aitrader(merged))
    csv = ai.root / "prices.csv"
    csv.write_text("date,symbol,close\n2025-10-01,AAA,1\n")
    assert not is_aitrader_file(csv)


def test_symbols_filter_keeps_the_named_columns(ai):
    data = load_aitrader(ai.merged(last_open=False), symbols=["CCC", "AAA"])
    assert data.symbols == ("AAA", "CCC")
    np.testing.assert_array_equal(data.close, np.array(CLOSE[:4])[:, [0, 2]])


def test_benchmark_series_reads_one_file_of_closes(ai):
    path = ai.benchmark({"2025-10-01": 600.0, "2025-10-02": 606.0, "2025-10-03": 603.5})
    series = load_benchmark_series(path)
    assert series.name == "QQQ"
    assert [str(d.date()) for d in series.index] == ["2025-10-01", "2025-10-02", "2025-10-03"]
    assert series.tolist() == [600.0, 606.0, 603.5]
    with pytest.raises(DataValidationError, match="expected one series, found 3"):
        load_benchmark_series(ai.merged())


# ---------------------------------------------------------------------- malformed input
def bar(docs, symbol, date):
    doc = next(d for d in docs if d["Meta Data"]["2. Symbol"] == symbol)
    return doc["Time Series (Daily)"][date]


def test_a_value_that_is_not_a_number_names_file_line_symbol_key_and_date(ai):
    def edit(docs):
        bar(docs, "BBB", "2025-10-02")["4. close"] = "51.5O"  # letter O for zero

    path = ai.merged(edit=edit)
    with pytest.raises(DataValidationError) as err:
        load_aitrader(path)
    # BBB is the file's second line
    assert err.value.source == f"{path}:2"
    assert err.value.problems == ["BBB: 4. close value '51.5O' on 2025-10-02 is not a number"]


@pytest.mark.parametrize("value", ["NaN", "nan", float("nan")])
def test_a_nan_value_is_rejected_not_taken_for_a_missing_close(ai, value):
    # on the last date a missing close means "opens only"; a close that is there but NaN is
    # a corrupt value and must not be replaced by the open
    def edit(docs):
        bar(docs, "CCC", "2025-10-07")["4. sell price"] = value
        bar(docs, "CCC", "2025-10-07").update({"2. high": "22.5", "3. low": "21.5"})

    path = ai.merged(edit=edit)
    with pytest.raises(DataValidationError) as err:
        load_aitrader(path)
    assert err.value.source == f"{path}:3"
    assert err.value.problems == [
        f"CCC: 4. sell price value {value!r} on 2025-10-07 is not a number"
    ]


def test_a_nan_close_mid_series_is_rejected(ai):
    def edit(docs):
        bar(docs, "AAA", "2025-10-03")["4. sell price"] = "NaN"

    with pytest.raises(DataValidationError, match=r"AAA: 4. sell price value 'NaN' on 2025-10-03"):
        load_aitrader(ai.merged(edit=edit))


def test_an_infinite_price_is_rejected_naming_symbol_and_date(ai):
    def edit(docs):
        bar(docs, "BBB", "2025-10-03")["2. high"] = "Infinity"

    with pytest.raises(DataValidationError, match=r"BBB: high is NaN or infinite on 2025-10-03"):
        load_aitrader(ai.merged(edit=edit, last_open=False))


def test_a_missing_close_before_the_last_date_is_an_error(ai):
    def edit(docs):
        del bar(docs, "BBB", "2025-10-03")["4. close"]

    path = ai.merged(edit=edit)
    with pytest.raises(DataValidationError) as err:
        load_aitrader(path)
    assert err.value.source == "merged.jsonl"
    assert err.value.problems == ["BBB: no close on 2025-10-03, which is not the last date"]


def test_a_missing_open_is_an_error(ai):
    def edit(docs):
        del bar(docs, "AAA", "2025-10-02")["1. buy price"]

    with pytest.raises(DataValidationError, match=r"AAA: open is missing \(NaN\) on 2025-10-02"):
        load_aitrader(ai.merged(edit=edit, last_open=False))


def test_a_symbol_without_a_bar_on_a_date_others_trade_is_an_error(ai):
    def edit(docs):
        del docs[2]["Time Series (Daily)"]["2025-10-02"]  # CCC

    with pytest.raises(DataValidationError, match=r"CCC: no bar on 2025-10-02"):
        load_aitrader(ai.merged(edit=edit, last_open=False))


def test_a_line_without_a_symbol_names_file_and_line(ai):
    def edit(docs):
        del docs[1]["Meta Data"]["2. Symbol"]

    path = ai.merged(edit=edit)
    with pytest.raises(DataValidationError) as err:
        load_aitrader(path)
    assert err.value.source == f"{path}:2"
    assert "not an AI-Trader series: needs 'Meta Data'/'2. Symbol'" in err.value.problems[0]


def test_a_line_that_is_not_json_names_file_and_line(ai):
    path = ai.merged(last_open=False)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:-1], lines[2]]) + "\n")  # cut the last }
    with pytest.raises(DataValidationError) as err:
        load_aitrader(path)
    assert err.value.source == f"{path}:2"
    assert err.value.problems[0].startswith("not JSON: ")


def test_a_symbol_twice_is_an_error_naming_both_places(ai):
    def edit(docs):
        docs.append(json.loads(json.dumps(docs[0])))  # AAA again, on line 4

    path = ai.merged(edit=edit)
    with pytest.raises(DataValidationError) as err:
        load_aitrader(path)
    assert err.value.problems == [f"AAA: in both {path}:1 and {path}:4"]


def test_the_same_date_twice_in_a_series_is_an_error(ai):
    # the JSON keys differ, the dates do not
    def edit(docs):
        series = docs[0]["Time Series (Daily)"]
        series["2025-10-02 00:00:00"] = dict(series["2025-10-02"])

    with pytest.raises(DataValidationError, match=r"AAA: duplicate rows for 2025-10-02"):
        load_aitrader(ai.merged(edit=edit, last_open=False))


def test_an_unknown_price_key_is_an_error(ai):
    def edit(docs):
        bar(docs, "AAA", "2025-10-01")["6. adjusted close"] = "101.0"

    with pytest.raises(DataValidationError, match=r"AAA: unknown key '6. adjusted close'"):
        load_aitrader(ai.merged(edit=edit, last_open=False))


def test_missing_files_and_empty_folders_are_clear_errors(ai):
    with pytest.raises(FileNotFoundError, match="AI-Trader price data not found"):
        load_aitrader(ai.root / "nope.jsonl")
    (ai.root / "empty").mkdir()
    with pytest.raises(DataValidationError, match=r"no daily_prices_<SYMBOL>.json files"):
        load_aitrader(ai.root / "empty")


@pytest.mark.parametrize("value", [5, "101.0", None, ["101.0", "102.0"]])
def test_a_bar_that_is_not_an_object_names_file_line_symbol_and_date(ai, value):
    def edit(docs):
        docs[1]["Time Series (Daily)"]["2025-10-02"] = value  # BBB, line 2

    path = ai.merged(edit=edit, last_open=False)
    with pytest.raises(DataValidationError) as err:
        load_aitrader(path)
    assert err.value.source == f"{path}:2"
    assert err.value.problems[0].startswith("BBB: the bar on 2025-10-02 must be an object of")
    assert json.dumps(value) in err.value.problems[0]


def test_a_series_that_is_not_a_mapping_of_dates_is_an_error(ai):
    folder = ai.daily_folder(last_open=False)
    doc = json.loads((folder / "daily_prices_CCC.json").read_text())
    doc["Time Series (Daily)"] = [{"1. open": "20.0"}]
    (folder / "daily_prices_CCC.json").write_text(json.dumps(doc))
    with pytest.raises(DataValidationError) as err:
        load_aitrader(folder)
    assert err.value.source == str(folder / "daily_prices_CCC.json")
    assert "CCC: 'Time Series (Daily)' must map dates to bars, not list" in err.value.problems[0]


def test_a_daily_price_file_that_is_not_json_names_the_file(ai):
    folder = ai.daily_folder(last_open=False)
    (folder / "daily_prices_BBB.json").write_text('{"Meta Data": ')
    with pytest.raises(DataValidationError) as err:
        load_aitrader(folder)
    assert err.value.source == str(folder / "daily_prices_BBB.json")
    assert err.value.problems[0].startswith("not JSON: ")
