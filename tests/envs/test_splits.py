"""Date splits and walk-forward folds on a 20-business-day synthetic panel.

The panel's dates, by index (business days from Mon 2000-01-03, no holidays):

     0 01-03   1 01-04   2 01-05   3 01-06   4 01-07
     5 01-10   6 01-11   7 01-12   8 01-13   9 01-14
    10 01-17  11 01-18  12 01-19  13 01-20  14 01-21
    15 01-24  16 01-25  17 01-26  18 01-27  19 01-28
"""

from __future__ import annotations

import numpy as np
import pytest

from marketarena.envs.splits import (
    DateRange,
    DateSplits,
    split_by_dates,
    split_by_fractions,
    walk_forward,
)
from marketarena.envs.synthetic import gbm_market


@pytest.fixture(scope="module")
def panel():
    data = gbm_market(2, 20, seed=0)
    assert str(data.dates[0]) == "2000-01-03" and str(data.dates[-1]) == "2000-01-28"
    return data


def R(start: str, end: str) -> DateRange:
    return DateRange(f"2000-{start}", f"2000-{end}")


def indices(data, r: DateRange) -> np.ndarray:
    lo, hi = data.date_range_indices(r.start, r.end)
    return np.arange(lo, hi + 1)


def assert_contiguous_partition(data, ranges) -> None:
    """The ranges are in order, do not overlap, leave no gap, and cover every date."""
    covered = np.concatenate([indices(data, r) for r in ranges])
    np.testing.assert_array_equal(covered, np.arange(data.n_periods))


# ----------------------------------------------------------------------- DateRange
def test_date_range_basics():
    r = R("01-03", "01-07")
    assert r.as_kwargs() == {"start": "2000-01-03", "end": "2000-01-07"}
    assert DateRange("2000-01-05", "2000-01-05").start == "2000-01-05"
    with pytest.raises(ValueError, match="end 2000-01-04 is before start 2000-01-05"):
        DateRange("2000-01-05", "2000-01-04")


# ------------------------------------------------------------------ split_by_dates
def test_split_by_dates_exact_boundaries(panel):
    splits = split_by_dates(panel, "2000-01-17", "2000-01-24")
    assert splits == DateSplits(
        train=R("01-03", "01-14"), validation=R("01-17", "01-21"), test=R("01-24", "01-28")
    )
    assert_contiguous_partition(panel, [splits.train, splits.validation, splits.test])
    assert splits["validation"] == splits.validation
    with pytest.raises(KeyError, match="unknown split 'holdout'"):
        splits["holdout"]


def test_split_by_dates_on_non_trading_days_moves_to_the_next_trading_day(panel):
    # Sat 01-15 -> Mon 01-17; Sun 01-23 -> Mon 01-24
    splits = split_by_dates(panel, "2000-01-15", "2000-01-23")
    assert splits.train == R("01-03", "01-14")
    assert splits.validation == R("01-17", "01-21")
    assert splits.test == R("01-24", "01-28")


def test_split_by_dates_single_date_ranges(panel):
    splits = split_by_dates(panel, "2000-01-04", "2000-01-28")
    assert splits.train == R("01-03", "01-03")
    assert splits.validation == R("01-04", "01-27")
    assert splits.test == R("01-28", "01-28")
    assert_contiguous_partition(panel, [splits.train, splits.validation, splits.test])


@pytest.mark.parametrize(
    ("validation_start", "test_start"),
    [
        ("2000-01-03", "2000-01-24"),  # no training dates
        ("1999-12-01", "2000-01-24"),  # before the data: still no training dates
        ("2000-01-24", "2000-01-17"),  # test before validation
        ("2000-01-17", "2000-01-17"),  # empty validation
        ("2000-01-15", "2000-01-16"),  # both map to 01-17: empty validation
    ],
)
def test_split_by_dates_impossible(panel, validation_start, test_start):
    with pytest.raises(ValueError, match="need data start < validation_start"):
        split_by_dates(panel, validation_start, test_start)


def test_split_by_dates_after_the_data(panel):
    with pytest.raises(ValueError, match="no trading date on or after 2000-02-01"):
        split_by_dates(panel, "2000-01-17", "2000-02-01")


# -------------------------------------------------------------- split_by_fractions
def test_split_by_fractions_exact_boundaries(panel):
    # 20 dates: train round(20*0.5)=10 dates, validation up to round(20*0.75)=15, test 5
    splits = split_by_fractions(panel, train=0.5, validation=0.25)
    assert splits.train == R("01-03", "01-14")
    assert splits.validation == R("01-17", "01-21")
    assert splits.test == R("01-24", "01-28")
    assert_contiguous_partition(panel, [splits.train, splits.validation, splits.test])


def test_split_by_fractions_default(panel):
    # 0.7 -> 14 training dates (idx 0..13), 0.85 -> validation idx 14..16, test idx 17..19
    splits = split_by_fractions(panel)
    assert splits.train == R("01-03", "01-20")
    assert splits.validation == R("01-21", "01-25")
    assert splits.test == R("01-26", "01-28")
    sizes = [len(indices(panel, r)) for r in (splits.train, splits.validation, splits.test)]
    assert sizes == [14, 3, 3]


@pytest.mark.parametrize(
    ("train", "validation"),
    [(0.0, 0.2), (0.5, 0.0), (0.8, 0.2), (0.9, 0.3), (-0.1, 0.5)],
)
def test_split_by_fractions_bad_fractions(panel, train, validation):
    with pytest.raises(ValueError, match="must be > 0, sum < 1"):
        split_by_fractions(panel, train=train, validation=validation)


def test_split_by_fractions_too_few_dates(panel):
    tiny = panel.slice(None, "2000-01-05")  # 3 dates
    with pytest.raises(ValueError, match="3 dates are too few"):
        split_by_fractions(tiny, train=0.1, validation=0.1)  # round(0.3) = 0 training dates
    with pytest.raises(ValueError, match="too few"):
        split_by_fractions(tiny, train=0.5, validation=0.1)  # validation rounds to empty


# --------------------------------------------------------------------- walk_forward
def test_walk_forward_rolling_by_hand(panel):
    folds = walk_forward(panel, train_periods=6, validation_periods=3)
    assert folds == [
        (R("01-03", "01-10"), R("01-11", "01-13")),
        (R("01-06", "01-13"), R("01-14", "01-18")),
        (R("01-11", "01-18"), R("01-19", "01-21")),
        (R("01-14", "01-21"), R("01-24", "01-26")),
    ]
    for train, validation in folds:
        t, v = indices(panel, train), indices(panel, validation)
        assert len(t) == 6 and len(v) == 3
        assert v[0] == t[-1] + 1  # validation starts right after training, no overlap
    # rolling with step == validation_periods: the validation ranges tile without overlap
    val = np.concatenate([indices(panel, v) for _, v in folds])
    np.testing.assert_array_equal(val, np.arange(6, 18))


def test_walk_forward_expanding_by_hand(panel):
    folds = walk_forward(panel, train_periods=6, validation_periods=3, expanding=True)
    assert [train for train, _ in folds] == [
        R("01-03", "01-10"),
        R("01-03", "01-13"),
        R("01-03", "01-18"),
        R("01-03", "01-21"),
    ]
    rolling = walk_forward(panel, train_periods=6, validation_periods=3)
    assert [v for _, v in folds] == [v for _, v in rolling]
    assert [len(indices(panel, t)) for t, _ in folds] == [6, 9, 12, 15]


def test_walk_forward_step(panel):
    folds = walk_forward(panel, train_periods=10, validation_periods=4, step=5)
    # train_start 0, 5: val ends at 13, 18; train_start 10 would need val up to 23
    assert folds == [
        (R("01-03", "01-14"), R("01-17", "01-20")),
        (R("01-10", "01-21"), R("01-24", "01-27")),
    ]
    # a step of one date gives every admissible fold: 20 - (10 + 4) + 1
    assert len(walk_forward(panel, train_periods=10, validation_periods=4, step=1)) == 7


def test_walk_forward_n_folds_keeps_the_latest(panel):
    all_folds = walk_forward(panel, train_periods=6, validation_periods=3)
    assert walk_forward(panel, train_periods=6, validation_periods=3, n_folds=2) == all_folds[-2:]
    assert walk_forward(panel, train_periods=6, validation_periods=3, n_folds=1) == [
        (R("01-14", "01-21"), R("01-24", "01-26"))
    ]
    assert walk_forward(panel, train_periods=6, validation_periods=3, n_folds=99) == all_folds


def test_walk_forward_start_end_window(panel):
    # Mon 01-10 (idx 5) .. Fri 01-21 (idx 14): ten dates hold one fold of 6 + 3
    folds = walk_forward(
        panel, train_periods=6, validation_periods=3, start="2000-01-10", end="2000-01-21"
    )
    assert folds == [(R("01-10", "01-17"), R("01-18", "01-20"))]
    expanding = walk_forward(
        panel,
        train_periods=4,
        validation_periods=2,
        start="2000-01-08",
        end="2000-01-20",
        expanding=True,
    )
    # window idx 5..13; folds train 5-8/val 9-10, train 5-10/val 11-12
    assert expanding == [
        (R("01-10", "01-13"), R("01-14", "01-17")),
        (R("01-10", "01-17"), R("01-18", "01-19")),
    ]


def test_walk_forward_exact_fit(panel):
    assert walk_forward(panel, train_periods=17, validation_periods=3) == [
        (R("01-03", "01-25"), R("01-26", "01-28"))
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_periods": 18, "validation_periods": 3}, "20 dates cannot hold one fold"),
        ({"train_periods": 1, "validation_periods": 3}, "must be >= 2"),
        ({"train_periods": 6, "validation_periods": 1}, "must be >= 2"),
        ({"train_periods": 6, "validation_periods": 3, "n_folds": 0}, "n_folds must be >= 1"),
        ({"train_periods": 6, "validation_periods": 3, "step": 0}, "step must be >= 1"),
        ({"train_periods": 6, "validation_periods": 3, "step": -2}, "step must be >= 1"),
        (
            {"train_periods": 6, "validation_periods": 3, "start": "2000-01-24"},
            "5 dates cannot hold one fold",
        ),
        (
            {"train_periods": 6, "validation_periods": 3, "start": "2000-02-01"},
            "no trading date on or after",
        ),
    ],
)
def test_walk_forward_impossible(panel, kwargs, match):
    with pytest.raises(ValueError, match=match):
        walk_forward(panel, **kwargs)
