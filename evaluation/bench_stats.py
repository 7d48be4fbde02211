"""Aggregate statistics for a benchmark of agents over tasks x seeds, in the style of rliable.

Follows Agarwal et al. (2021), "Deep RL at the edge of the statistical precipice", and
matches the point estimates of ``rliable`` 1.2.0 (``rliable.metrics``). Scores are normalised
per task (0 = baseline, 1 = reference policy) and given per agent as an array of shape
``(n_seeds, n_tasks)``. Intervals come from a stratified bootstrap: the runs (seeds) are
resampled with replacement independently within each task, the tasks stay fixed, and the
interval is the percentile interval of the resampled statistic.

``rliable`` itself is not used: its ``library`` module imports ``arch`` (< 8), which fails to
import with pandas 3. Only numpy is needed here (and matplotlib for the plot).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from marketarena.envs.errors import ConfigError

__all__ = [
    "aggregate",
    "iqm",
    "performance_profile",
    "plot_performance_profiles",
    "probability_of_improvement",
]

_BATCH_CELLS = 4_000_000  # resampled values held in memory at once
Stat = Callable[[np.ndarray], np.ndarray]  # (b, n_seeds, n_tasks) -> (b, k)


def _check(name: str, x: ArrayLike) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"scores of {name!r} must be 2-D (n_seeds, n_tasks), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"scores of {name!r} are empty (shape {x.shape})")
    if not np.isfinite(x).all():
        raise ValueError(f"scores of {name!r} contain NaN or inf")
    return x


def _check_all(scores: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
    if not scores:
        raise ValueError("no agents: scores is empty")
    checked = {name: _check(name, x) for name, x in scores.items()}
    tasks = {name: x.shape[1] for name, x in checked.items()}
    if len(set(tasks.values())) > 1:
        raise ValueError(f"mismatched task counts across agents: {tasks}")
    return checked


def _check_bootstrap(reps: int, confidence: float) -> None:
    if reps < 1:
        raise ConfigError(f"reps must be at least 1, got {reps}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")


def _iqm_rows(x: np.ndarray) -> np.ndarray:
    """25% trimmed mean of each row of a 2-D array (scipy.stats.trim_mean's cut)."""
    n = x.shape[1]
    cut = int(0.25 * n)
    return np.sort(x, axis=1)[:, cut : n - cut].mean(axis=1)


def _bootstrap(x: np.ndarray, stat: Stat, reps: int, seed: int, width: int = 1) -> np.ndarray:
    """``stat`` on ``reps`` stratified resamples of ``x``: runs resampled within each task."""
    rng = np.random.default_rng(seed)
    n, m = x.shape
    batch = max(1, _BATCH_CELLS // (n * m * width))
    out = []
    for start in range(0, reps, batch):
        idx = rng.integers(0, n, size=(min(batch, reps - start), n, m))
        out.append(stat(x[idx, np.arange(m)]))
    return np.concatenate(out)


def _interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return low, high


def _summary(s: np.ndarray) -> np.ndarray:
    """IQM, median, mean and optimality gap of each resample ``(b, n_seeds, n_tasks)``."""
    task_means = s.mean(axis=1)
    return np.stack(
        [
            _iqm_rows(s.reshape(len(s), -1)),
            np.median(task_means, axis=1),
            task_means.mean(axis=1),
            np.maximum(0.0, 1.0 - s).mean(axis=(1, 2)),
        ],
        axis=1,
    )


def iqm(scores_2d: ArrayLike) -> float:
    """Interquartile mean of all runs x tasks: the mean of the middle half of the values.

    Same as ``rliable.metrics.aggregate_iqm`` (``scipy.stats.trim_mean(x, 0.25)`` on the
    flattened array: ``floor(N / 4)`` values are cut at each end).
    """
    return float(_iqm_rows(_check("scores", scores_2d).reshape(1, -1))[0])


def aggregate(
    scores: Mapping[str, ArrayLike], reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Aggregate metrics per agent with stratified-bootstrap percentile intervals.

    Args:
        scores: ``{agent: (n_seeds, n_tasks) array}`` of normalised scores.
        reps: Bootstrap resamples.
        confidence: Coverage of the intervals.
        seed: Seed of the resampling; each agent uses a fresh generator from it, so an
            agent's numbers do not depend on the other agents.

    Returns:
        ``{agent: {metric: value}}`` with metrics ``iqm``, ``median`` (of the per-task means),
        ``mean`` (of the per-task means), ``optimality_gap`` (mean of ``max(0, 1 - score)``),
        each with ``<metric>_low`` and ``<metric>_high``.
    """
    _check_bootstrap(reps, confidence)
    names = ("iqm", "median", "mean", "optimality_gap")
    result: dict[str, dict[str, float]] = {}
    for agent, x in _check_all(scores).items():
        point = _summary(x[None])[0]
        low, high = _interval(_bootstrap(x, _summary, reps, seed), confidence)
        stats: dict[str, float] = {}
        for i, name in enumerate(names):
            stats |= {name: float(point[i]), f"{name}_low": float(low[i])}
            stats[f"{name}_high"] = float(high[i])
        result[agent] = stats
    return result


def probability_of_improvement(
    x: ArrayLike, y: ArrayLike, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y) averaged over tasks, with a stratified-bootstrap percentile interval.

    Per task this is the Mann-Whitney U statistic over ``n_x * n_y`` pairs of runs (ties count
    1/2), as ``rliable.metrics.probability_of_improvement``. The runs of ``x`` and of ``y``
    are resampled independently within each task.

    Args:
        x: ``(n_seeds_x, n_tasks)`` scores of X.
        y: ``(n_seeds_y, n_tasks)`` scores of Y, same tasks (seed counts may differ).
        reps: Bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling.

    Returns:
        ``(estimate, low, high)``.
    """
    _check_bootstrap(reps, confidence)
    x, y = _check("x", x), _check("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"mismatched task counts: x has {x.shape[1]}, y has {y.shape[1]}")
    (nx, m), ny = x.shape, y.shape[0]
    # wins[i, j, t]: 1 if run i of X beats run j of Y on task t, 1/2 on a tie
    wins = (x[:, None] > y[None]) + 0.5 * (x[:, None] == y[None])
    rng = np.random.default_rng(seed)
    # a resample is summarised by how often each run is drawn: counts (reps, n_tasks, n_runs)
    cx = rng.multinomial(nx, np.full(nx, 1 / nx), size=(reps, m))
    cy = rng.multinomial(ny, np.full(ny, 1 / ny), size=(reps, m))
    per_task = np.einsum("rti,ijt,rtj->rt", cx, wins, cy, optimize=True) / (nx * ny)
    low, high = _interval(per_task.mean(axis=1), confidence)
    return float(wins.mean(axis=(0, 1)).mean()), float(low), float(high)


def performance_profile(
    scores: Mapping[str, ArrayLike],
    taus: ArrayLike,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Score distributions: the fraction of runs (all seeds x tasks) with score > tau.

    Args:
        scores: ``{agent: (n_seeds, n_tasks) array}`` of normalised scores.
        taus: 1-D thresholds.
        reps: Bootstrap resamples.
        confidence: Coverage of the intervals.
        seed: Seed of the resampling (a fresh generator per agent).

    Returns:
        ``{agent: (profile, low, high)}``, each an array shaped like ``taus``.
    """
    _check_bootstrap(reps, confidence)
    taus = np.asarray(taus, dtype=float)
    if taus.ndim != 1 or taus.size == 0 or not np.isfinite(taus).all():
        raise ValueError(f"taus must be a non-empty 1-D array of finite values, got {taus!r}")

    def profile(s: np.ndarray) -> np.ndarray:
        return (s[..., None] > taus).mean(axis=(1, 2))

    result = {}
    for agent, x in _check_all(scores).items():
        samples = _bootstrap(x, profile, reps, seed, width=taus.size)
        result[agent] = (profile(x[None])[0], *_interval(samples, confidence))
    return result


def plot_performance_profiles(
    scores: Mapping[str, ArrayLike],
    path: str | Path,
    taus: ArrayLike | None = None,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Path:
    """Write a PNG of the performance profiles with shaded intervals; return its path.

    ``taus`` defaults to 101 points spanning the scores and at least [0, 1]. Vertical lines
    mark 0 (the baseline) and 1 (the reference policy).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    checked = _check_all(scores)
    if taus is None:
        lo = min(0.0, *(float(x.min()) for x in checked.values()))
        hi = max(1.0, *(float(x.max()) for x in checked.values()))
        taus = np.linspace(lo, hi, 101)
    taus = np.asarray(taus, dtype=float)
    profiles = performance_profile(checked, taus, reps, confidence, seed)
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for agent, (prof, low, high) in profiles.items():
        (line,) = ax.plot(taus, prof, label=agent)
        ax.fill_between(taus, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axvline(0.0, color="grey", linestyle=":", label="baseline (0)")
    ax.axvline(1.0, color="black", linestyle="--", label="reference (1)")
    ax.set(xlabel="normalised score tau", ylabel="fraction of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
