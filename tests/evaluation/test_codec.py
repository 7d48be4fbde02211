"""The checkpoint codec: JSON with type tags, exact round trips, no code run on reading.

Round trips are checked bit for bit (``tobytes`` and dtype, not approximate equality); a
random generator must go on with the very numbers the original would have drawn; shared
references and cycles stay shared. Reading refuses anything outside the allowlist before it
imports or calls anything; writing refuses what it cannot store, naming the type and where.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from marketarena.agents.llm_agent import Decision
from marketarena.agents.llm_prompt import PromptBuilder, PromptSettings
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.news import NewsEvents
from marketarena.evaluation.saved_runs import codec
from marketarena.evaluation.saved_runs.codec import StateEncodeError, UnsafeStateError

NEWS = Path(__file__).parent.parent / "fixtures" / "altdata" / "news.csv"


def round_trip(value: object) -> object:
    return codec.loads(codec.dumps(value))


def assert_same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes(order="A") == b.tobytes(order="A")
    assert a.flags.f_contiguous == b.flags.f_contiguous and b.flags.writeable


@pytest.mark.parametrize(
    "array",
    [
        np.array([1.5, -0.0, np.nan, np.inf, -np.inf, 5e-324, np.pi]),
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array([[True, False]]),
        np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        np.array([1, 2], dtype=">u2"),  # big-endian stays big-endian
        np.array([1 + 2j, np.nan * 1j]),
        np.array(["2019-07-03", "NaT"], dtype="datetime64[D]"),
        np.array([1_562_112_000_123_456_789], dtype="datetime64[ns]"),
        np.array([3, 4], dtype="timedelta64[s]"),
        np.array(["AAPL", "MSFT", ""]),
        np.array(7.25),  # 0-d
        np.empty((0, 3)),
    ],
    ids=lambda a: f"{a.dtype}{list(a.shape)}",
)
def test_arrays_round_trip_bit_for_bit(array: np.ndarray) -> None:
    assert_same_array(array, round_trip(array))


def test_arrays_are_stored_as_raw_bytes_with_dtype_and_shape() -> None:
    doc = json.loads(codec.dumps(np.array([[1.0, 2.0]])))
    node = doc["value"]
    assert doc["format"] == "marketarena-state" and doc["version"] == 1
    assert {k: node[k] for k in ("$t", "dtype", "shape", "order")} == {
        "$t": "nd",
        "dtype": "<f8",
        "shape": [1, 2],
        "order": "C",
    }
    assert base64.b64decode(node["b64"]) == np.array([1.0, 2.0]).tobytes()


def test_an_object_array_stores_its_items() -> None:
    array = np.empty(3, dtype=object)
    array[:] = ["a", (1, 2), None]
    back = round_trip(array)
    assert back.dtype == object and back.tolist() == ["a", (1, 2), None]


@pytest.mark.parametrize(
    "scalar",
    [
        np.float64(0.1),
        np.float32(1 / 3),
        np.int8(-5),
        np.uint64(2**64 - 1),
        np.bool_(True),
        np.datetime64("2019-07-03"),
        np.datetime64("2019-07-03T14:30:00.000000001"),
        np.timedelta64(3, "D"),
        np.str_("MSFT"),
        np.complex64(1 - 2j),
    ],
    ids=repr,
)
def test_numpy_scalars_keep_their_type_and_bits(scalar: np.generic) -> None:
    back = round_trip(scalar)
    assert type(back) is type(scalar) and back.dtype == scalar.dtype
    assert back.tobytes() == scalar.tobytes()


def test_python_containers_and_values_round_trip_exactly() -> None:
    state = {
        "floats": [0.1, -0.0, float("nan"), float("inf"), 1e308],
        "big": 2**200,
        "tuple": (1, "a", (2.5, None)),
        "bytes": b"\x00\xffpickle?",
        "set": {3, 1, 2},
        "frozen": frozenset({"x"}),
        "deque": deque([1, 2, 3], maxlen=3),
        "int keys": {1: "one", (2, 3): "pair", None: 0},
        "$t": "a key that looks like a tag",
        "nested": {"$t": "obj", "cls": "os.system"},  # plain data, not an instruction
    }
    back = round_trip(state)
    assert json.dumps(back["floats"]) == json.dumps(state["floats"])  # NaN included, -0.0 kept
    assert back["big"] == 2**200 and back["tuple"] == (1, "a", (2.5, None))
    assert type(back["tuple"][2]) is tuple and back["bytes"] == state["bytes"]
    assert back["set"] == {1, 2, 3} and type(back["frozen"]) is frozenset
    assert type(back["deque"]) is deque and back["deque"].maxlen == 3
    assert list(back["deque"]) == [1, 2, 3]
    assert back["int keys"] == state["int keys"] and back["$t"] == state["$t"]
    assert back["nested"] == {"$t": "obj", "cls": "os.system"}


@pytest.mark.parametrize("bit_generator", ["PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"])
def test_a_generator_goes_on_with_the_numbers_it_would_have_drawn(bit_generator: str) -> None:
    rng = np.random.Generator(getattr(np.random, bit_generator)(12345))
    rng.random(7)  # mid-stream
    rng.standard_normal()  # a cached value in some bit generators
    back = round_trip({"rng": rng})["rng"]
    assert type(back.bit_generator).__name__ == bit_generator
    np.testing.assert_array_equal(back.random(100), rng.random(100))
    np.testing.assert_array_equal(back.integers(0, 10**9, 50), rng.integers(0, 10**9, 50))


def test_a_legacy_random_state_and_a_bare_bit_generator_go_on_too() -> None:
    legacy = np.random.RandomState(3)
    legacy.rand(5)
    legacy.randn()  # leaves a cached gaussian
    bits = np.random.PCG64(9)
    bits.advance(17)
    back_legacy, back_bits = round_trip((legacy, bits))
    np.testing.assert_array_equal(back_legacy.randn(20), legacy.randn(20))
    assert type(back_bits) is np.random.PCG64
    assert back_bits.random_raw(10).tolist() == bits.random_raw(10).tolist()


def test_shared_references_and_cycles_stay_shared() -> None:
    rng = np.random.default_rng(0)
    history: list = [1.0]
    array = np.zeros(3)
    state = {"a": history, "b": history, "rng": rng, "again": rng, "x": array, "y": [array]}
    state["self"] = state
    back = round_trip(state)
    assert back["a"] is back["b"] and back["rng"] is back["again"] and back["self"] is back
    assert back["x"] is back["y"][0]
    back["a"].append(2.0)
    assert back["b"] == [1.0, 2.0]
    # drawing from one draws from the other, as in the original
    assert back["rng"].random() == rng.random() and back["again"].random() == rng.random()


def test_llm_decisions_and_the_prompt_builder_with_its_news_round_trip() -> None:
    settings = PromptSettings(lookback=10, news=str(NEWS), headlines=2)
    builder = PromptBuilder(("AAPL", "MSFT", "NVDA"), settings)
    builder._first_session = 4
    assert isinstance(builder.news, NewsEvents)
    decisions = [
        Decision("2019-07-03", "ok", ["note"], 10, 2, 0.25, False, 0.001, 0.7),
        Decision("2019-07-05", "fallback"),
    ]
    back = round_trip({"_builder": builder, "decisions": decisions, "confidence": None})
    restored = back["_builder"]
    assert type(restored) is PromptBuilder and restored.settings == settings
    assert vars(restored).keys() == vars(builder).keys()
    assert restored.aliases == builder.aliases and restored._first_session == 4
    news = restored.news
    assert type(news) is NewsEvents and news.headlines == builder.news.headlines
    assert_same_array(builder.news.published_at, news.published_at)
    assert back["decisions"] == decisions and type(back["decisions"][0]) is Decision


def test_reading_refuses_a_class_outside_the_allowlist_and_calls_nothing(tmp_path) -> None:
    marker = tmp_path / "ran"
    crafted = {
        "format": "marketarena-state",
        "version": 1,
        "value": {"$t": "obj", "cls": "os.system", "state": f"touch {marker}"},
    }
    with pytest.raises(UnsafeStateError, match=r"class 'os\.system' is not one checkpoints"):
        codec.loads(json.dumps(crafted).encode(), "agent_state")
    for node in (
        {"$t": "obj", "cls": "pathlib.Path.touch", "state": {}},
        {"$t": "enum", "cls": "subprocess.Popen", "name": "x"},
        {"$t": "obj", "cls": "marketarena.evaluation.saved_runs.store.RunStore", "state": {}},
    ):
        with pytest.raises(UnsafeStateError, match="refused"):
            codec.loads(json.dumps({**crafted, "value": node}).encode())
    assert not marker.exists()


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"$t": "reduce", "args": []}, "unknown type tag 'reduce'"),
        ({"$t": "nd", "dtype": "O", "shape": [1], "order": "C", "b64": ""}, "dtype 'O'"),
        ({"$t": "nd", "dtype": "<f8", "shape": [2], "order": "C", "b64": "AAAA"}, "3 bytes"),
        ({"$t": "rng", "bit_generator": "os", "state": {}}, "unknown bit generator 'os'"),
        ({"$t": "ref", "id": 9}, "unknown value 9"),
        ({"$t": "tuple"}, "malformed 'tuple'"),
    ],
)
def test_malformed_states_are_clear_errors(node: dict, message: str) -> None:
    data = json.dumps({"format": "marketarena-state", "version": 1, "value": {"x": [node]}})
    with pytest.raises(UnsafeStateError, match=message) as caught:
        codec.loads(data.encode(), "env_state")
    assert str(caught.value).startswith("env_state['x'][0]: ")
    assert isinstance(caught.value, DataError)


def test_reading_something_else_is_a_clear_error() -> None:
    with pytest.raises(UnsafeStateError, match="run r's env_state is not a stored state"):
        codec.loads(b"\x80\x04\x95pickle", "run r's env_state")
    with pytest.raises(UnsafeStateError, match="has state version 2"):
        codec.loads(b'{"format": "marketarena-state", "version": 2, "value": 1}')


class Unlisted:
    def __init__(self) -> None:
        self.x = 1


@dataclass
class PluginState:
    level: float
    history: list[float]


def test_writing_names_the_type_and_where_it_was() -> None:
    state = {"members": [{"own": {"helper": Unlisted()}}]}
    with pytest.raises(StateEncodeError) as caught:
        codec.dumps(state, "agent_state")
    name = f"{Unlisted.__module__}.Unlisted"
    assert str(caught.value).startswith(
        f"cannot store agent_state['members'][0]['own']['helper']: it is a {name}, which is "
        "not a class checkpoints may hold"
    )
    assert isinstance(caught.value, ConfigError)
    with pytest.raises(StateEncodeError, match=r"env_state\['f'\]: it is a builtins.function"):
        codec.dumps({"f": lambda: 0}, "env_state")
    with pytest.raises(StateEncodeError, match=r"state\[0\]: it is a class"):
        codec.dumps([Unlisted])
    with pytest.raises(StateEncodeError, match=r"a structured array"):
        codec.dumps(np.zeros(2, dtype=[("a", "<f8")]))


def test_a_plugin_allows_its_own_class(monkeypatch) -> None:
    monkeypatch.setattr(codec, "_registered", {})  # this test's registrations only
    with pytest.raises(StateEncodeError, match="PluginState"):
        codec.dumps(PluginState(1.0, [2.0]))
    assert codec.allow_state_class(PluginState) is PluginState
    back = codec.loads(codec.dumps(PluginState(1.0, [2.0])))
    assert type(back) is PluginState and back == PluginState(1.0, [2.0])


def ensembles() -> list:
    from marketarena.agents.baselines import BuyAndHoldAgent, EqualWeightAgent, RandomAgent
    from marketarena.evaluation.allocation import SleeveAllocator
    from marketarena.evaluation.ensembles import (
        PerformanceWeightedEnsemble,
        SelectionEnsemble,
        VotingEnsemble,
        WeightedAverageEnsemble,
    )

    def members() -> list:
        return [RandomAgent(rebalance_every=3), EqualWeightAgent(), BuyAndHoldAgent()]

    return [
        WeightedAverageEnsemble(members()),
        VotingEnsemble(members()),
        PerformanceWeightedEnsemble(members(), window=10, min_periods=5),
        SelectionEnsemble(members(), rebalance_every=5, validation_window=10),
        SleeveAllocator(members(), method="risk_parity", window=10, min_periods=5),
    ]


@pytest.mark.parametrize("index", range(5))
def test_ensembles_and_allocators_states_round_trip(index: int) -> None:
    """Their members' states and their own (shadow returns in deques, selections, numpy
    generators), after a backtest has filled them."""
    from marketarena.evaluation.runner import run_backtest

    agent = ensembles()[index]
    run_backtest(agent, {"data": "sp500_20"}, "2020-01-02", "2020-04-30", 3)
    state = agent.get_state()
    back = codec.loads(codec.dumps(state, "agent_state"))
    assert_same_state(back, state)
    twin = ensembles()[index]
    twin.set_state(back)
    assert_same_state(twin.get_state(), state)


def assert_same_state(a: object, b: object, where: str = "state") -> None:
    """``a`` and ``b`` hold the same types and values, arrays and floats bit for bit."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple, deque)):
        assert len(a) == len(b) and getattr(a, "maxlen", None) == getattr(b, "maxlen", None)
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{n}]")
    elif isinstance(a, np.ndarray):
        assert_same_array(b, a)
    elif isinstance(a, np.random.Generator):
        assert_same_state(a.bit_generator.state, b.bit_generator.state, f"{where}.state")
    elif isinstance(a, (float, np.generic)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), where
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        assert_same_state(vars(a), vars(b), f"{where}.__dict__")
    else:
        assert a == b, where
