"""Dates as dates: the loaders read ISO dates and refuse guessing day-first from month-first;
a date given as an option or a split is checked as a real date (issue 14).

(The loaders' other tests are in ``tests/envs/test_data.py``.)
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from marketarena.envs.data import (
    DataValidationError,
    coverage_report,
    from_long_frame,
    from_wide_frame,
    load_file,
)
from marketarena.envs.errors import ConfigError
from marketarena.envs.splits import DateRange, iso_date, split_by_dates


def long_frame(dates: list[object]) -> pd.DataFrame:
    return pd.DataFrame({"date": dates, "symbol": "AAA", "close": np.arange(1.0, len(dates) + 1)})


def closes_by_date(data) -> dict[str, float]:
    return {str(d): float(c) for d, c in zip(data.dates, data.close[:, 0], strict=True)}


# ------------------------------------------------------------------------- loaders
@pytest.mark.parametrize(
    "dates",
    [
        ["2020-01-13", "2020-02-01"],
        ["2020-01-13 00:00:00", "2020-02-01T00:00:00"],
        ["20200113", "20200201"],
        [20200113, 20200201],
        ["2020-01-13T00:00:00Z", "2020-02-01T00:00:00+00:00"],
        [pd.Timestamp("2020-01-13"), pd.Timestamp("2020-02-01")],
        [dt.date(2020, 1, 13), dt.date(2020, 2, 1)],
    ],
)
def test_iso_dates_need_no_format(dates):
    data = from_long_frame(long_frame(dates))
    assert closes_by_date(data) == {"2020-01-13": 1.0, "2020-02-01": 2.0}


def test_day_first_dates_are_not_half_swapped(tmp_path):
    """13/01/2020 can only be day first and 02/01/2020 reads both ways: guessing each row
    made the second the 1st of February. Without a format they are an error; with one,
    every date reads the same way."""
    path = tmp_path / "eu.csv"
    long_frame(["13/01/2020", "02/01/2020"]).to_csv(path, index=False)
    with pytest.raises(DataValidationError) as info:
        load_file(path)
    (problem,) = info.value.problems
    assert problem.startswith("2 date(s) not written as YYYY-MM-DD, e.g. '13/01/2020' at row 0")
    assert "date_format='%d/%m/%Y'" in problem
    data = load_file(path, date_format="%d/%m/%Y")
    assert closes_by_date(data) == {"2020-01-02": 2.0, "2020-01-13": 1.0}
    coverage = coverage_report(pd.read_csv(path), date_format="%d/%m/%Y")
    assert (coverage[0].first_date, coverage[0].last_date) == ("2020-01-02", "2020-01-13")


def test_month_first_dates_with_their_format():
    frame = pd.DataFrame({"Date": ["01/13/2020", "02/01/2020"], "AAA": [1.0, 2.0]})
    with pytest.raises(DataValidationError, match="not written as YYYY-MM-DD"):
        from_wide_frame(frame)
    data = from_wide_frame(frame, date_format="%m/%d/%Y")
    assert closes_by_date(data) == {"2020-01-13": 1.0, "2020-02-01": 2.0}


def test_a_date_that_does_not_fit_the_format_is_named():
    frame = long_frame(["13/01/2020", "2020-01-14"])
    with pytest.raises(DataValidationError) as info:
        from_long_frame(frame, date_format="%d/%m/%Y")
    assert info.value.problems == [
        "AAA: date '2020-01-14' at row 1 is not in the format '%d/%m/%Y'"
    ]


def test_no_date_at_all_is_still_unparseable():
    with pytest.raises(DataValidationError) as info:
        from_long_frame(long_frame(["2020-01-02", "soon", "2020-13-45"]))
    assert info.value.problems == [
        "AAA: unparseable date 'soon' at row 1",
        "AAA: unparseable date '2020-13-45' at row 2",
    ]


# ---------------------------------------------------------------- dates as options
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-01-02", "2020-01-02"),
        (" 2020-01-02 ", "2020-01-02"),
        ("20200102", "2020-01-02"),
        (dt.date(2020, 1, 2), "2020-01-02"),
        (dt.datetime(2020, 1, 2, 15, 30), "2020-01-02"),
        (np.datetime64("2020-01-02"), "2020-01-02"),
    ],
)
def test_iso_date(value, expected):
    assert iso_date(value) == expected


@pytest.mark.parametrize("value", ["2018-13-45", "2020-02-30", "13/01/2020", "abc", "", None, 5])
def test_what_is_not_a_date_is_named(value):
    with pytest.raises(ConfigError, match=r"^--start .* is not a date: write it as YYYY-MM-DD$"):
        iso_date(value, "--start")


def test_date_lookups_refuse_what_is_not_a_date(make_market):
    data = make_market([[1.0], [2.0], [3.0]])
    with pytest.raises(ConfigError, match="'2018-13-45' is not a date"):
        data.index_of("2018-13-45")
    with pytest.raises(ConfigError, match="is not a date"):
        data.slice("2024-01-01", "someday")


def test_splits_and_ranges_are_dates(make_market):
    data = make_market([[1.0]] * 6)  # business days from 2024-01-01
    splits = split_by_dates(data, dt.date(2024, 1, 3), "20240105")
    assert splits.validation.as_kwargs() == {"start": "2024-01-03", "end": "2024-01-04"}
    assert splits.test.start == "2024-01-05"
    with pytest.raises(ConfigError, match="test_start '2024-01-32' is not a date"):
        split_by_dates(data, "2024-01-03", "2024-01-32")
    # a range's ends are ISO dates, compared as dates
    with pytest.raises(ConfigError, match="DateRange end '2024-1-9' is not a date"):
        DateRange("2024-01-02", "2024-1-9")
    with pytest.raises(ConfigError, match="DateRange end 2024-01-09 is before start 2024-01-10"):
        DateRange("20240110", "2024-01-09")
