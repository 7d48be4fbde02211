"""Benchmark aggregate statistics pinned on hand-computed cases, and their properties.

Hand cases:

* IQM cuts ``floor(N / 4)`` values at each end. [1..7, 100] (N = 8) keeps 3, 4, 5, 6 → 4.5
  (the plain mean is 128 / 8 = 16); [1..9, 1000] (N = 10, cut 2) keeps 3..8 → 5.5.
* ``SMALL`` = [[0, 2, 0.2], [1, 0.5, 0.4]] (2 seeds x 3 tasks): task means 0.5, 1.25, 0.3 →
  mean 2.05 / 3, median 0.5; sorted values [0, 0.2, 0.4, 0.5, 1, 2], cut 1 → IQM
  (0.2 + 0.4 + 0.5 + 1) / 4 = 0.525; gaps max(0, 1 - s) = [1, 0, 0.8, 0, 0.5, 0.6] → 2.9 / 6.
* Two runs [0, 1] on one task: a resample draws (0, 0), (0, 1), (1, 0) or (1, 1), so its mean
  is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4. The 95% percentile interval is therefore
  (0, 1) and the 40% one (30th to 70th percentile) is (0.5, 0.5).
"""

from __future__ import annotations

import numpy as np
import pytest

from marketarena.evaluation import bench_stats as bs

SMALL = np.array([[0.0, 2.0, 0.2], [1.0, 0.5, 0.4]])
METRICS = ("iqm", "median", "mean", "optimality_gap")


def _noisy(n_seeds: int, n_tasks: int = 4, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.7, 0.3, size=(n_seeds, n_tasks))


def test_iqm_by_hand() -> None:
    assert bs.iqm(np.array([1, 2, 3, 4, 5, 6, 7, 100]).reshape(2, 4)) == pytest.approx(4.5)
    assert bs.iqm(np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 1000]])) == pytest.approx(5.5)
    assert bs.iqm([[1.0, 2.0, 9.0]]) == pytest.approx(4.0)  # N = 3: nothing is cut


def test_aggregate_point_estimates_by_hand() -> None:
    got = bs.aggregate({"a": SMALL}, reps=50)["a"]
    assert got["iqm"] == pytest.approx(0.525)
    assert got["median"] == pytest.approx(0.5)
    assert got["mean"] == pytest.approx(2.05 / 3)
    assert got["optimality_gap"] == pytest.approx(2.9 / 6)
    assert set(got) == {f"{m}{s}" for m in METRICS for s in ("", "_low", "_high")}


def test_percentile_interval_by_hand() -> None:
    x = np.array([[0.0], [1.0]])
    wide = bs.aggregate({"a": x}, reps=2000)["a"]
    assert (wide["mean_low"], wide["mean_high"]) == (0.0, 1.0)
    narrow = bs.aggregate({"a": x}, reps=2000, confidence=0.4)["a"]
    assert (narrow["mean_low"], narrow["mean_high"]) == (0.5, 0.5)


def test_interval_width_matches_the_normal_approximation() -> None:
    # 400 runs of one task: the bootstrap mean is close to normal with sd = std(x) / 20, so the
    # 95% interval is about 2 * 1.96 * sd wide (a 90% one would be 2 * 1.645 * sd)
    x = np.linspace(0.0, 1.0, 400)[:, None]
    got = bs.aggregate({"a": x}, reps=4000)["a"]
    expected = 2 * 1.959964 * x.std() / 20
    assert got["mean_high"] - got["mean_low"] == pytest.approx(expected, rel=0.05)


def test_bootstrap_resamples_within_tasks() -> None:
    # one seed per task: every stratified resample is the data itself, so the intervals collapse
    got = bs.aggregate({"a": np.array([[0.1, 0.9, 0.3, 2.0]])}, reps=200)["a"]
    for m in METRICS:
        assert got[f"{m}_low"] == pytest.approx(got[m])
        assert got[f"{m}_high"] == pytest.approx(got[m])


def test_intervals_contain_the_estimate_and_shrink_with_seeds() -> None:
    got = bs.aggregate({"few": _noisy(5), "many": _noisy(100)}, reps=1000)
    for agent in got.values():
        for m in METRICS:
            assert agent[f"{m}_low"] <= agent[m] <= agent[f"{m}_high"]
            assert agent[f"{m}_low"] < agent[f"{m}_high"]
    for m in METRICS:
        width = {k: v[f"{m}_high"] - v[f"{m}_low"] for k, v in got.items()}
        assert width["many"] < 0.5 * width["few"], m


def test_aggregate_is_deterministic_and_per_agent() -> None:
    scores = {"a": _noisy(6), "b": _noisy(6, seed=2)}
    assert bs.aggregate(scores, reps=300, seed=7) == bs.aggregate(scores, reps=300, seed=7)
    assert bs.aggregate(scores, reps=300, seed=7) != bs.aggregate(scores, reps=300, seed=8)
    # an agent's numbers do not depend on which other agents are in the benchmark
    assert bs.aggregate({"b": scores["b"]}, reps=300)["b"] == bs.aggregate(scores, reps=300)["b"]


def test_probability_of_improvement_by_hand() -> None:
    # pairs (x, y): (1, 1) tie → 1/2, (1, 0) → 1, (2, 1) → 1, (2, 0) → 1: 3.5 / 4
    assert bs.probability_of_improvement([[1], [2]], [[1], [0]])[0] == pytest.approx(0.875)
    # second task: both x runs (0) lose to both y runs (1) → 0; average (0.875 + 0) / 2
    x, y = [[1, 0], [2, 0]], [[1, 1], [0, 1]]
    assert bs.probability_of_improvement(x, y)[0] == pytest.approx(0.4375)
    # 3 vs 2 seeds: x=3 beats 2 and 0 → 2; x=1 beats 0 → 1; x=2 ties 2, beats 0 → 1.5; 4.5 / 6
    assert bs.probability_of_improvement([[3], [1], [2]], [[2], [0]])[0] == pytest.approx(0.75)


def test_probability_of_improvement_interval_by_hand() -> None:
    # y = [1]; x runs [0, 2] resampled: P is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4
    assert bs.probability_of_improvement([[0], [2]], [[1]]) == (0.5, 0.0, 1.0)
    assert bs.probability_of_improvement([[0], [2]], [[1]], confidence=0.4) == (0.5, 0.5, 0.5)
    # and the same with the runs of y resampled: y runs [0, 2] against x = [1]
    assert bs.probability_of_improvement([[1]], [[0], [2]]) == (0.5, 0.0, 1.0)
    assert bs.probability_of_improvement([[1]], [[0], [2]], confidence=0.4) == (0.5, 0.5, 0.5)
    assert bs.probability_of_improvement([[1]], [[0]]) == (1.0, 1.0, 1.0)


def test_probability_of_improvement_properties() -> None:
    x, y = _noisy(10), _noisy(8, seed=3)
    est, low, high = bs.probability_of_improvement(x, x, reps=1000)
    assert est == 0.5 and low < 0.5 < high
    est, low, high = bs.probability_of_improvement(x, y, reps=1000)
    assert low <= est <= high
    assert est + bs.probability_of_improvement(y, x, reps=10)[0] == pytest.approx(1.0)
    poi = bs.probability_of_improvement
    assert poi(x, y, seed=3) == poi(x, y, seed=3) != poi(x, y, seed=4)
    assert bs.probability_of_improvement(x + 10, y)[:2] == (1.0, 1.0)


def test_point_estimates_match_scipy_and_rliable() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(7, 5)) / 2  # coarse values: plenty of ties
    y = rng.integers(0, 4, size=(6, 5)) / 2
    assert bs.iqm(x) == pytest.approx(stats.trim_mean(x, 0.25, axis=None))
    u = [stats.mannwhitneyu(x[:, t], y[:, t], alternative="greater")[0] for t in range(5)]
    assert bs.probability_of_improvement(x, y)[0] == pytest.approx(np.mean(u) / 42)
    rl = pytest.importorskip("rliable.metrics")
    got = bs.aggregate({"x": x}, reps=10)["x"]
    assert got["iqm"] == pytest.approx(rl.aggregate_iqm(x))
    assert got["median"] == pytest.approx(rl.aggregate_median(x))
    assert got["mean"] == pytest.approx(rl.aggregate_mean(x))
    assert got["optimality_gap"] == pytest.approx(rl.aggregate_optimality_gap(x))
    assert bs.probability_of_improvement(x, y)[0] == pytest.approx(
        rl.probability_of_improvement(x, y)
    )
    # the hand-computed case above, through rliable
    assert rl.probability_of_improvement(np.array([[1], [2]]), np.array([[1], [0]])) == 0.875


def test_performance_profile() -> None:
    taus = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    prof, low, high = bs.performance_profile({"a": [[0.0, 0.5], [1.0, 1.5]]}, taus)["a"]
    np.testing.assert_allclose(prof, [1.0, 0.75, 0.5, 0.25, 0.0])
    assert np.all(low <= prof) and np.all(prof <= high)
    assert low[2] < high[2]
    prof, low, high = bs.performance_profile({"n": _noisy(20)}, np.linspace(-1, 2, 31))["n"]
    for curve in (prof, low, high):
        assert np.all(np.diff(curve) <= 0)  # non-increasing in tau
    # one seed per task: nothing to resample
    prof, low, high = bs.performance_profile({"a": [[0.2, 0.8]]}, taus)["a"]
    np.testing.assert_array_equal(low, prof)
    np.testing.assert_array_equal(high, prof)


def test_plot_writes_a_png(tmp_path) -> None:
    scores = {"ppo": _noisy(5), "buy_and_hold": _noisy(5, seed=9) - 0.5}
    out = bs.plot_performance_profiles(scores, tmp_path / "profiles.png", reps=100)
    assert out == tmp_path / "profiles.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bs.aggregate({"ppo": [[0.1, np.nan]]}), "'ppo'.*NaN"),
        (lambda: bs.aggregate({"a": [[0.1, 0.2]], "b": [[0.1]]}), "mismatched task counts"),
        (lambda: bs.aggregate({}), "no agents"),
        (lambda: bs.aggregate({"a": np.empty((0, 3))}), "'a' are empty"),
        (lambda: bs.aggregate({"a": [0.1, 0.2]}), "must be 2-D"),
        (lambda: bs.aggregate({"a": [[0.1]]}, confidence=1.0), "confidence"),
        (lambda: bs.aggregate({"a": [[0.1]]}, reps=0), "reps"),
        (lambda: bs.iqm([[np.nan]]), "NaN"),
        (lambda: bs.probability_of_improvement([[1, 2]], [[1]]), "mismatched task counts"),
        (lambda: bs.probability_of_improvement([[1]], [[np.nan]]), "'y'.*NaN"),
        (lambda: bs.performance_profile({"a": [[0.1]]}, []), "taus"),
        (lambda: bs.performance_profile({"dqn": [[np.inf]]}, [0.0]), "'dqn'"),
    ],
)
def test_bad_input_raises(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
