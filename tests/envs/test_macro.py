"""Economic indicators: vintage-aware, point-in-time alignment of releases to decision rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marketarena.envs.data import MarketData
from marketarena.envs.errors import DataError, MissingFileError, UnknownNameError
from marketarena.envs.features import compute_features
from marketarena.envs.macro import load_macro, macro_values, with_macro
from marketarena.envs.news import session_closes

MACRO = Path(__file__).resolve().parents[1] / "fixtures" / "altdata" / "macro.csv"
# NYSE sessions: 11-28 (Thanksgiving) closed; 11-30 a Saturday
SESSIONS = [
    "2019-11-25",
    "2019-11-26",
    "2019-11-27",
    "2019-11-29",
    "2019-12-02",
    "2019-12-03",
    "2019-12-04",
]
HEADER = "series,observation_date,release_date,value"


def panel(dates: Sequence[str] | np.ndarray = SESSIONS) -> MarketData:
    days = np.asarray(dates, dtype="datetime64[D]")
    close = np.linspace(100, 110, len(days) * 2).reshape(len(days), 2)
    return MarketData(dates=days, symbols=("AAA", "BBB"), close=close, name="thanksgiving")


def write(path: Path, rows: Sequence[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_values_and_changes_by_hand() -> None:
    vintages = load_macro(MACRO)
    assert list(vintages.series) == ["synthetic_cpi", "synthetic_rate"] and vintages.skipped == 1
    values = macro_values(panel(), vintages, change=True)
    # cpi: Sep (99.0, released before the panel) and Oct's first print (100.0, 11-13) are known
    # from row 0; Oct's revision to 100.4 came at 16:30 New York on 11-27, after that close,
    # so rows from 11-29; Nov's 101.0 on 12-03; Nov's revision on 12-06 is after the panel
    np.testing.assert_array_equal(
        values["macro_synthetic_cpi"], [100.0, 100.0, 100.0, 100.4, 100.4, 101.0, 101.0]
    )
    np.testing.assert_allclose(
        values["macro_synthetic_cpi_change"], [1.0, 1.0, 1.0, 1.4, 1.4, 0.6, 0.6], rtol=1e-12
    )
    # rate: 1.75 on 11-25; 1.5 released on Saturday 11-30, visible from Monday 12-02
    np.testing.assert_array_equal(
        values["macro_synthetic_rate"], [1.75, 1.75, 1.75, 1.75, 1.5, 1.5, 1.5]
    )
    np.testing.assert_allclose(
        values["macro_synthetic_rate_change"], [np.nan] * 4 + [-0.25] * 3, rtol=1e-12
    )


def test_a_revision_is_invisible_until_its_release(tmp_path: Path) -> None:
    rows = [
        "gdp,2019-07-01,2019-10-30,2.0",
        "gdp,2019-07-01,2019-11-27,2.5",  # the second estimate, released on 11-27
        "gdp,2019-07-01,2019-12-03T13:00:00-05:00,2.25",  # the third, mid-session on 12-03
    ]
    values = macro_values(panel(), load_macro(write(tmp_path / "gdp.csv", rows)))["macro_gdp"]
    np.testing.assert_array_equal(values, [2.0, 2.0, 2.5, 2.5, 2.5, 2.25, 2.25])
    # the same rows in another order give the same answer: the release decides, not the line
    shuffled = macro_values(panel(), load_macro(write(tmp_path / "r.csv", rows[::-1])))
    np.testing.assert_array_equal(shuffled["macro_gdp"], values)


def test_an_exact_release_time_meets_the_early_close(tmp_path: Path) -> None:
    rows = [
        "a,2019-11-01,2019-11-29T12:59:00-05:00,1",  # before the 13:00 early close
        "b,2019-11-01,2019-11-29T13:01:00-05:00,1",  # after it: Monday
        "c,2019-11-01,2019-11-29T18:00:00Z,1",  # exactly at the close (13:00 EST): visible
    ]
    values = macro_values(panel(), load_macro(write(tmp_path / "t.csv", rows)))
    assert np.flatnonzero(~np.isnan(values["macro_a"]))[0] == 3
    assert np.flatnonzero(~np.isnan(values["macro_b"]))[0] == 4
    assert np.flatnonzero(~np.isnan(values["macro_c"]))[0] == 3
    fixed = macro_values(panel(), load_macro(tmp_path / "t.csv"), calendar=None)
    assert np.flatnonzero(~np.isnan(fixed["macro_b"]))[0] == 3  # fixed 16:00 close


def test_perturbing_releases_after_a_close_leaves_every_earlier_row_unchanged(
    tmp_path: Path,
) -> None:
    days = pd.bdate_range("2019-01-02", "2019-12-31")
    days = days[~days.isin(["2019-05-27", "2019-07-04", "2019-09-02", "2019-11-28"])]
    data = panel(days.to_numpy().astype("datetime64[D]"))
    closes = session_closes(data.dates)
    rng = np.random.default_rng(3)
    base: list[tuple[pd.Timestamp, str, str]] = []  # (release, observation, series)
    for month in pd.date_range("2018-12-01", "2019-12-01", freq="MS"):
        for vintage in range(3):  # a first print and two revisions, weeks apart
            release = month + pd.Timedelta(days=35 + 21 * vintage + int(rng.integers(0, 5)))
            if rng.random() < 0.5:  # an exact time in New York, some after the close
                release = release.tz_localize("America/New_York") + pd.Timedelta(
                    hours=int(rng.integers(7, 20))
                )
            base.append((release, str(month.date()), str(rng.choice(["cpi", "jobs"]))))

    def lines(items: list[tuple[pd.Timestamp, str, str, float]]) -> list[str]:
        out = []
        for release, observed, name, value in items:
            text = str(release.date()) if release.tzinfo is None else release.isoformat()
            out.append(f"{name},{observed},{text},{value}")
        return out

    def visible_by(release: pd.Timestamp, cutoff_day: np.datetime64, cutoff: pd.Timestamp) -> bool:
        if release.tzinfo is None:
            return bool(np.datetime64(release.date(), "D") <= cutoff_day)
        return bool(release <= cutoff)

    values = [round(float(v), 3) for v in rng.normal(100, 5, len(base))]
    items = [(*b, v) for b, v in zip(base, values, strict=True)]
    original = macro_values(
        data, load_macro(write(tmp_path / "base.csv", lines(items))), change=True
    )
    for t in (5, 60, 130, 200, 245):
        cutoff = pd.Timestamp(closes[t], tz="UTC")
        early = [i for i in items if visible_by(i[0], data.dates[t], cutoff)]
        late = [(i[0], i[1], i[2], i[3] + 50.0) for i in items if i not in early]
        extra = [  # revisions of old observations and new series, all released after t
            (cutoff + pd.Timedelta(minutes=1), "2018-12-01", "cpi", -7.0),
            (pd.Timestamp(str(data.dates[t] + 1)), "2019-01-01", "jobs", 9.0),
            (cutoff + pd.Timedelta(days=3), "2019-01-01", "cpi", 1.0),
            (cutoff + pd.Timedelta(minutes=1), str(data.dates[t]), "cpi", 500.0),  # the newest
        ]
        perturbed = load_macro(write(tmp_path / f"p{t}.csv", lines(early + late + extra)))
        changed = macro_values(data, perturbed, change=True)
        for name, series in original.items():
            np.testing.assert_array_equal(changed[name][: t + 1], series[: t + 1], err_msg=name)
        assert not np.array_equal(changed["macro_cpi"][t + 1 :], original["macro_cpi"][t + 1 :])


def test_with_macro_broadcasts_a_market_wide_column() -> None:
    data = with_macro(panel(), MACRO, change=True, series=["synthetic_rate"])
    assert data.feature_names == ("macro_synthetic_rate", "macro_synthetic_rate_change")
    np.testing.assert_array_equal(data.features[:, 0, 0], data.features[:, 1, 0])
    assert data.notes[-1] == (
        "macro: macro_synthetic_rate, macro_synthetic_rate_change from "
        f"{MACRO}; 1 '.' values skipped"
    )
    stacked, first = compute_features(data, ["log_return", "macro_synthetic_rate_change"])
    assert first == 4  # the change is defined once two observations are known (12-02)
    assert stacked[4, 0, 1] == pytest.approx(-0.25)
    with pytest.raises(UnknownNameError, match=r"series \['cpi'\] not in"):
        with_macro(panel(), MACRO, series=["cpi"])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("cpi,2019-10-01,2019-09-15,1.0", r"released 2019-09-15 before its observation date"),
        ("cpi,2019-10-01,2019-11-13T08:30:00,1.0", "release_date .* has a time but no timezone"),
        ("cpi,2019-13-01,2019-11-13,1.0", r"observation_date '2019-13-01' is not a date"),
        ("cpi,2019-10-01,soon,1.0", "release_date 'soon' is neither a date"),
        ("cpi,2019-10-01,2019-11-13,abc", r"value 'abc' is not a finite number"),
        ("cpi,2019-10-01,2019-11-13,inf", r"value 'inf' is not a finite number"),
        ("cpi,2019-10-01,2019-11-13,", r"value '' is not a finite number"),
        ("c p i,2019-10-01,2019-11-13,1", "series 'c p i' must be letters"),
        ("cpi,2019-10-01,2019-11-13", "expected 4 fields"),
        (
            "cpi,2019-09-01,2019-10-10,2.0",
            r"cpi 2019-09-01 released 2019-10-10 again \(first on line 2\)",
        ),
    ],
)
def test_bad_rows_are_errors_naming_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path / "bad.csv", ["cpi,2019-09-01,2019-10-10,1.0", row])
    with pytest.raises(DataError, match=rf"{path}:3: {message}"):
        load_macro(path)


def test_bad_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="macro file not found"):
        load_macro(tmp_path / "none.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("series,date,value\ncpi,2019-10-01,1\n")
    with pytest.raises(DataError, match=r"wrong.csv:1: columns .*a macro file has exactly"):
        load_macro(wrong)
    empty = write(tmp_path / "empty.csv", ["cpi,2019-10-01,2019-11-13,."])
    with pytest.raises(DataError, match="no vintages with a value"):
        load_macro(empty)
