"""The on-disk array cache: a hit, a miss when any part of the key changes, corruption
recovered by recomputing, an unwritable folder, and caching switched off."""

from __future__ import annotations

import numpy as np
import pytest

from marketarena.envs.cache import CacheWarning, cache_key, cached_array, source_hash


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETARENA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_a_second_call_reads_the_stored_array(folder):
    compute, calls = counting(np.arange(6.0).reshape(2, 3))
    first, hit1 = cached_array("indicator", {"data": "abc", "period": 14}, compute)
    second, hit2 = cached_array("indicator", {"period": 14, "data": "abc"}, compute)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    np.testing.assert_array_equal(first, second)
    assert len(list((folder / "indicator").glob("*.npy"))) == 1


@pytest.mark.parametrize("change", [{"data": "abd"}, {"period": 15}, {"source": "other"}])
def test_any_change_of_the_key_is_a_miss(folder, change):
    compute, calls = counting(np.ones(3))
    key = {"data": "abc", "period": 14, "source": "s1"}
    cached_array("indicator", key, compute)
    _, hit = cached_array("indicator", {**key, **change}, compute)
    assert not hit and len(calls) == 2


def test_the_kind_is_part_of_the_key():
    assert cache_key("indicator", {"a": 1}) != cache_key("sentiment", {"a": 1})


def test_editing_a_function_changes_its_source_hash():
    namespace: dict = {}
    exec("def f(x):\n    return x + 1\n", namespace)
    before = source_hash(namespace["f"])
    exec("def f(x):\n    return x + 2\n", namespace)
    assert source_hash(namespace["f"]) != before
    assert source_hash(test_the_kind_is_part_of_the_key) == source_hash(
        test_the_kind_is_part_of_the_key
    )


@pytest.mark.parametrize("damage", [b"", b"not a numpy file at all", "truncate"])
def test_a_corrupted_entry_is_recomputed_and_rewritten(folder, damage):
    compute, calls = counting(np.arange(100.0))
    cached_array("indicator", {"k": 1}, compute)
    (path,) = (folder / "indicator").glob("*.npy")
    path.write_bytes(path.read_bytes()[:60] if damage == "truncate" else damage)
    with pytest.warns(CacheWarning, match="unreadable.*recomputing"):
        value, hit = cached_array("indicator", {"k": 1}, compute)
    assert not hit and len(calls) == 2
    np.testing.assert_array_equal(value, np.arange(100.0))
    again, hit = cached_array("indicator", {"k": 1}, compute)  # rewritten whole
    assert hit and len(calls) == 2
    np.testing.assert_array_equal(again, np.arange(100.0))


def test_an_unwritable_folder_warns_and_still_returns_the_value(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("MARKETARENA_CACHE_DIR", str(blocker))
    with pytest.warns(CacheWarning, match="could not write"):
        value, hit = cached_array("indicator", {"k": 1}, lambda: np.ones(2))
    assert not hit and value.tolist() == [1.0, 1.0]


def test_caching_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETARENA_CACHE_DIR", "off")
    compute, calls = counting(np.ones(2))
    cached_array("indicator", {"k": 1}, compute)
    _, hit = cached_array("indicator", {"k": 1}, compute)
    assert not hit and len(calls) == 2
