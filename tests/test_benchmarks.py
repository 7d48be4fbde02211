"""The benchmark's reference step is a correct portfolio step, and its variants agree."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import Case, time_case
from reference import ReferenceStep


def test_reference_step_by_hand():
    # two assets; returns of +10% / -50% on the first step
    log_returns = np.log(np.array([[1.0, 1.0], [1.1, 0.5], [1.0, 1.0], [1.0, 1.0]]))
    ref = ReferenceStep(log_returns, 1, window=1, cost=0.01, episode_length=2)
    ref.t[:] = 0
    _, reward, _ = ref.step(np.array([[1.0, 1.0, 2.0]]))  # 25% / 25% / 50% cash
    growth = 0.25 * 1.1 + 0.25 * 0.5 + 0.5
    turnover = 0.25 + 0.25 + 0.5  # from all cash
    assert reward[0] == pytest.approx(np.log(growth * (1 - 0.01 * turnover)), rel=1e-12)
    np.testing.assert_allclose(ref.weights[0], [0.275 / growth, 0.125 / growth, 0.5 / growth])


def test_shifted_windows_match_gathered_windows():
    rng = np.random.default_rng(0)
    log_returns = rng.normal(0, 0.01, size=(600, 5))
    a = ReferenceStep(log_returns, 16, window=8, episode_length=20)
    b = ReferenceStep(log_returns, 16, window=8, episode_length=20, shift_windows=True)
    for _ in range(70):  # crosses several auto-resets
        actions = rng.random((16, 6))
        obs_a, r_a, _ = a.step(actions)
        obs_b, r_b, _ = b.step(actions)
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(r_a, r_b)


def test_time_case_counts_env_steps():
    # each call "steps" 4 envs and takes at least 2 ms, so at most 2,000 env-steps/s
    stats = time_case(
        Case("sleep", "test", 1, 4, lambda: time.sleep(0.002)), min_seconds=0.05, repeats=2
    )
    assert 500 < stats["steps_per_second"] <= 2_000
    assert stats["min"] <= stats["steps_per_second"] <= stats["max"]
