"""`parse_answer`: the repair policy of the LLM agent's module docstring, case by case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from marketarena.agents.llm_agent import FAILURES, parse_answer
from marketarena.agents.llm_prompt import PromptBuilder, PromptSettings

SYMBOLS = ("AAPL", "JNJ", "XOM")


@pytest.fixture
def builder() -> PromptBuilder:
    return PromptBuilder(SYMBOLS, PromptSettings())


@pytest.fixture
def anonymous() -> PromptBuilder:
    return PromptBuilder(SYMBOLS, PromptSettings(anonymize_tickers=True))


def doc(weights: object, confidence: object = 0.5) -> str:
    return json.dumps({"weights": weights, "confidence": confidence})


def test_clean_answer_is_used_exactly(builder):
    p = parse_answer(doc({"AAPL": 0.5, "JNJ": 0.25, "XOM": 0.125, "CASH": 0.125}, 0.8), builder)
    assert p.outcome == "ok" and p.notes == []
    np.testing.assert_array_equal(p.weights, [0.5, 0.25, 0.125, 0.125])
    assert p.confidence == 0.8


def test_names_are_case_and_space_insensitive(builder):
    p = parse_answer(doc({" aapl": 0.5, "Jnj ": 0.5, "cash": 0.0}), builder)
    assert p.outcome == "ok"
    np.testing.assert_array_equal(p.weights, [0.5, 0.5, 0.0, 0.0])


def test_flat_dict_without_weights_key(builder):
    p = parse_answer(json.dumps({"AAPL": 0.25, "JNJ": 0.25, "XOM": 0.25, "CASH": 0.25}), builder)
    assert p.outcome == "ok", p.notes
    np.testing.assert_array_equal(p.weights, [0.25, 0.25, 0.25, 0.25])


def test_flat_dict_keeps_its_confidence_without_calling_it_a_symbol(builder):
    text = json.dumps({"AAPL": 0.5, "XOM": 0.5, "CASH": 0.0, "confidence": 0.7})
    p = parse_answer(text, builder)
    assert p.outcome == "ok", p.notes
    np.testing.assert_array_equal(p.weights, [0.5, 0.0, 0.5, 0.0])
    assert p.confidence == 0.7


def test_unknown_tickers_are_dropped_and_named(builder):
    p = parse_answer(doc({"AAPL": 0.5, "TSLA": 0.3, "GME": 0.1, "CASH": 0.5}), builder)
    assert p.outcome == "repaired"
    note = next(n for n in p.notes if "unknown" in n)
    assert "TSLA" in note and "GME" in note and "AAPL" not in note
    np.testing.assert_array_equal(p.weights, [0.5, 0.0, 0.0, 0.5])


def test_negative_weights_are_clipped(builder):
    p = parse_answer(doc({"AAPL": -0.4, "JNJ": 0.6, "XOM": 0.4, "CASH": 0.0}), builder)
    assert p.outcome == "repaired"
    assert any("negative" in n for n in p.notes)
    np.testing.assert_array_equal(p.weights, [0.0, 0.6, 0.4, 0.0])


def test_weights_summing_to_seven_are_renormalised(builder):
    p = parse_answer(doc({"AAPL": 3, "JNJ": 2, "XOM": 1, "CASH": 1}), builder)
    assert p.outcome == "repaired"
    assert any("renormalised" in n and "7" in n for n in p.notes)
    np.testing.assert_allclose(p.weights, [3 / 7, 2 / 7, 1 / 7, 1 / 7], rtol=0, atol=1e-15)


def test_without_cash_the_remainder_is_cash(builder):
    p = parse_answer(doc({"AAPL": 0.5, "JNJ": 0.2}), builder)
    assert p.outcome == "repaired"
    assert any("cash is the rest" in n for n in p.notes)
    np.testing.assert_allclose(p.weights, [0.5, 0.2, 0.0, 0.3], atol=1e-15)


def test_without_cash_summing_to_one_is_fully_invested(builder):
    p = parse_answer(doc({"AAPL": 0.5, "JNJ": 0.25, "XOM": 0.25}), builder)
    assert p.outcome == "ok", p.notes
    np.testing.assert_array_equal(p.weights, [0.5, 0.25, 0.25, 0.0])


def test_without_cash_summing_above_one_is_renormalised(builder):
    p = parse_answer(doc({"AAPL": 0.8, "JNJ": 0.6, "XOM": 0.6}), builder)
    assert p.outcome == "repaired"
    assert any("renormalised" in n for n in p.notes)
    np.testing.assert_allclose(p.weights, [0.4, 0.3, 0.3, 0.0], atol=1e-15)


def test_cash_given_and_sum_below_one_is_renormalised(builder):
    p = parse_answer(doc({"AAPL": 0.2, "JNJ": 0.1, "XOM": 0.1, "CASH": 0.1}), builder)
    assert p.outcome == "repaired"
    np.testing.assert_allclose(p.weights, [0.4, 0.2, 0.2, 0.2], atol=1e-15)


@pytest.mark.parametrize(
    "weights", [{"AAPL": 0, "JNJ": 0, "XOM": 0, "CASH": 0}, {"AAPL": -1, "CASH": -0.5}]
)
def test_no_positive_weight_is_all_cash(builder, weights):
    p = parse_answer(doc(weights), builder)
    assert p.outcome == "repaired"
    assert any("all cash" in n for n in p.notes)
    np.testing.assert_array_equal(p.weights, [0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("bad", ["0.5", None, True, False, [0.5], {"w": 0.5}])
def test_non_numeric_values_are_dropped(builder, bad):
    p = parse_answer(doc({"AAPL": bad, "JNJ": 0.5, "XOM": 0.5, "CASH": 0.0}), builder)
    assert p.outcome == "repaired"
    assert any("non-numeric" in n and "AAPL" in n for n in p.notes)
    np.testing.assert_array_equal(p.weights, [0.0, 0.5, 0.5, 0.0])


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_dropped(builder, token):
    # Python's json accepts these non-standard tokens; a model may write them
    text = '{"weights": {"AAPL": TOKEN, "JNJ": 0.5, "XOM": 0.5, "CASH": 0}}'.replace("TOKEN", token)
    p = parse_answer(text, builder)
    assert p.outcome == "repaired"
    assert np.isfinite(p.weights).all()
    np.testing.assert_array_equal(p.weights, [0.0, 0.5, 0.5, 0.0])


@pytest.mark.parametrize("text", [None, "", "   \n\t "])
def test_empty_answers_fall_back(builder, text):
    p = parse_answer(text, builder)
    assert p.outcome == "empty" and p.weights is None


@pytest.mark.parametrize(
    "text",
    [
        "I would buy AAPL.",
        '{"weights": {"AAPL": 0.5',
        "```json\n{}\n```",
        "[0.5, 0.5]",
        '"AAPL"',
        "0.5",
    ],
)
def test_text_that_is_not_a_json_object_falls_back(builder, text):
    p = parse_answer(text, builder)
    assert p.outcome == "invalid_json" and p.weights is None
    assert p.notes


@pytest.mark.parametrize(
    "answer",
    [
        {"weights": {"TSLA": 1.0}},
        {"weights": {}},
        {"weights": [0.5, 0.5, 0.0]},
        {"answer": "buy"},
        {},
        {"weights": "AAPL"},
    ],
)
def test_json_without_known_symbols_is_wrong_schema(builder, answer):
    p = parse_answer(json.dumps(answer), builder)
    assert p.outcome == "wrong_schema" and p.weights is None
    assert {"empty", "invalid_json", "wrong_schema"} <= set(FAILURES)


def test_aliases_and_real_tickers_both_map_when_anonymised(anonymous):
    assert anonymous.aliases == ("S01", "S02", "S03")
    p = parse_answer(doc({"S01": 0.25, "JNJ": 0.25, "s03": 0.25, "CASH": 0.25}), anonymous)
    assert p.outcome == "ok", p.notes
    np.testing.assert_array_equal(p.weights, [0.25, 0.25, 0.25, 0.25])
    # an alias that does not exist is an unknown symbol
    p = parse_answer(doc({"S04": 0.5, "S02": 0.5, "CASH": 0.5}), anonymous)
    assert p.outcome == "repaired" and any("S04" in n for n in p.notes)
    np.testing.assert_array_equal(p.weights, [0.0, 0.5, 0.0, 0.5])


def test_aliases_mean_nothing_without_anonymisation(builder):
    p = parse_answer(doc({"S01": 1.0}), builder)
    assert p.outcome == "wrong_schema"


@pytest.mark.parametrize(
    ("confidence", "kept"),
    [
        (0, 0),
        (1, 1),
        (0.35, 0.35),
        (-0.1, None),
        (1.5, None),
        ("0.5", None),
        (None, None),
        (True, None),
        (False, None),
        ([0.5], None),
    ],
)
def test_confidence_is_kept_only_in_unit_interval(builder, confidence, kept):
    p = parse_answer(doc({"AAPL": 1.0, "CASH": 0.0}, confidence), builder)
    assert p.outcome == "ok"
    assert p.confidence == kept and type(p.confidence) is type(kept)


def test_nan_confidence_is_dropped(builder):
    p = parse_answer('{"weights": {"AAPL": 1, "CASH": 0}, "confidence": NaN}', builder)
    assert p.confidence is None


def test_weights_always_a_long_only_allocation(builder):
    """Whatever the repair, the weights are N + 1 finite non-negative numbers summing to 1."""
    answers = [
        {"AAPL": 3, "JNJ": 2, "XOM": 1, "CASH": 1},
        {"AAPL": 0.1},
        {"AAPL": -5, "JNJ": 1e-12},
        {"AAPL": 1e308, "JNJ": 1e308},
        {"XOM": 0.9999999999, "CASH": 1e-10},
        {"CASH": 2.0},
    ]
    for weights in answers:
        p = parse_answer(doc(weights), builder)
        assert p.weights is not None and p.weights.shape == (4,)
        assert np.isfinite(p.weights).all() and (p.weights >= 0).all(), weights
        assert p.weights.sum() == pytest.approx(1.0, abs=1e-9), weights
