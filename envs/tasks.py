"""Diagnostic tasks: seeded synthetic markets with planted structure and a reference policy.

The trading analogue of bsuite. Each task is a market generator with a fixed seed, fixed
train / validation / test splits (by row: 3,000 / 500 / 1,500 business days), and two named
agent specs whose scores on the test split define the normalised score: the *baseline*
scores 0 and the *reference* scores 1, both after costs (see
:mod:`marketarena.evaluation.task_scores`). The reference is computed by running it, never assumed.

=============  ===================================================  ============  ===========
task           planted structure                                    reference     baseline
=============  ===================================================  ============  ===========
Momentum       each asset's drift flips sign every ~60 sessions     signal rule   buy_and_hold
MeanReversion  prices revert to a common factor (half-life 10)      signal rule   buy_and_hold
VolTiming      a calm and a turbulent regime (drift -60%, vol 60%)  signal rule   buy_and_hold
LeadLag        the follower moves with the leader's last 10 days    signal rule   buy_and_hold
CostAware      a momentum signal weaker than the costs              buy_and_hold  signal rule
Noise          independent zero-drift noise: nothing to learn       buy_and_hold  random
SP500          the bundled real panel; no known optimum             equal_weight  cash
=============  ===================================================  ============  ===========

``signal:<Task>`` is the rule that trades the planted structure (:func:`signal_weights`), a
point-in-time ``(T, N)`` table of target weights; the agent that follows it lives in
:mod:`marketarena.agents.reference`. Every task is a registered Gymnasium id
(``marketarena/Momentum-v0``) over its train split, and its data is usable by that id
anywhere data is accepted (``--data marketarena/Momentum-v0``, ``env.data`` in a config).

All synthetic tasks are close-only (fills at the next close), 10 bps a side in costs (the
default rules), and on a business-day calendar from 2000-01-03.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError
from marketarena.envs.synthetic import _correlated_normals

_DT = 1.0 / 252.0
CALENDAR_START = "2000-01-03"
N_PERIODS = 5000
TRAIN_ROWS, VALIDATION_ROWS = 3000, 500  # the test split is the remaining 1,500 rows
SPLITS = ("train", "validation", "test")


# ------------------------------------------------------------------------- generators
def _close_only(log_returns: np.ndarray, name: str, symbols: tuple[str, ...]) -> MarketData:
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    dates = pd.bdate_range(CALENDAR_START, periods=len(close)).to_numpy().astype("datetime64[D]")
    return MarketData(dates=dates, symbols=symbols, close=close, name=name)


def _symbols(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


def _markov_signs(rng: np.random.Generator, n_periods: int, n: int, mean_duration: float):
    """``(T, n)`` of +1/-1, each column flipping with probability ``1/mean_duration``."""
    flips = rng.random((n_periods, n)) < 1.0 / mean_duration
    flips[0] = False
    start = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    return start * np.where(np.cumsum(flips, axis=0) % 2 == 0, 1.0, -1.0)


def momentum_market(
    seed: int = 0,
    *,
    n_assets: int = 5,
    n_periods: int = N_PERIODS,
    drift: float = 0.7,
    base_drift: float = 0.0,
    sigma: float = 0.2,
    mean_duration: float = 60.0,
    name: str = "momentum",
) -> MarketData:
    """Independent assets whose annual drift is ``base_drift +- drift``, the sign a two-state
    Markov chain per asset with mean duration ``mean_duration`` sessions."""
    rng = np.random.default_rng(seed)
    signs = _markov_signs(rng, n_periods, n_assets, mean_duration)
    mu = base_drift + signs * drift
    r = (mu - 0.5 * sigma**2) * _DT + sigma * np.sqrt(_DT) * rng.standard_normal(signs.shape)
    return _close_only(r, name, _symbols("MOM", n_assets))


def mean_reversion_market(
    seed: int = 0,
    *,
    n_assets: int = 5,
    n_periods: int = N_PERIODS,
    market_drift: float = 0.06,
    market_sigma: float = 0.15,
    half_life: float = 10.0,
    deviation_sigma: float = 0.06,
    name: str = "mean_reversion",
) -> MarketData:
    """Log price = a common random walk + an Ornstein-Uhlenbeck deviation per asset with
    ``half_life`` sessions and stationary standard deviation ``deviation_sigma``."""
    rng = np.random.default_rng(seed)
    phi = 0.5 ** (1.0 / half_life)
    shocks = rng.standard_normal((n_periods, n_assets)) * deviation_sigma * np.sqrt(1 - phi**2)
    dev = np.empty((n_periods, n_assets))
    dev[0] = rng.standard_normal(n_assets) * deviation_sigma
    for t in range(1, n_periods):  # a recursion in time only, at load time
        dev[t] = phi * dev[t - 1] + shocks[t]
    market = (market_drift - 0.5 * market_sigma**2) * _DT + market_sigma * np.sqrt(
        _DT
    ) * rng.standard_normal((n_periods, 1))
    r = market + np.diff(dev, axis=0, prepend=np.zeros((1, n_assets)))
    return _close_only(r, name, _symbols("MR", n_assets))


def _regime_chain(
    rng: np.random.Generator, n_periods: int, mean_duration: tuple[float, float]
) -> np.ndarray:
    """A two-state Markov chain (0 first) with the given mean durations in sessions."""
    leave = rng.random(n_periods)
    regime = np.empty(n_periods, dtype=np.int64)
    state = 0
    for t in range(n_periods):  # a two-state chain, at load time
        regime[t] = state
        if leave[t] < 1.0 / mean_duration[state]:
            state = 1 - state
    return regime


def balanced_regime_chain(
    rng: np.random.Generator,
    n_periods: int,
    mean_duration: tuple[float, float],
    splits: tuple[int, ...] = (),
    tolerance: float = 0.1,
) -> np.ndarray:
    """A two-state regime chain (:func:`_regime_chain`), redrawn from ``rng`` until the share
    of state 1 in every split (rows cut at ``splits``) is within ``tolerance`` of the chain's
    stationary share; no ``splits``: the first draw."""
    stationary = mean_duration[1] / (mean_duration[0] + mean_duration[1])
    bounds = [0, *splits, n_periods]
    for _ in range(10_000):
        regime = _regime_chain(rng, n_periods, mean_duration)
        shares = [regime[a:b].mean() for a, b in itertools.pairwise(bounds)]
        if all(abs(share - stationary) <= tolerance for share in shares):
            return regime
    raise ConfigError(
        f"no regime path in 10,000 draws has a share of state 1 within {tolerance} of "
        f"{stationary:.2f} in every split of rows {bounds}"
    )


def volatility_regime_market(
    seed: int = 0,
    *,
    n_assets: int = 5,
    n_periods: int = N_PERIODS,
    drift: tuple[float, float] = (0.15, -0.6),
    sigma: tuple[float, float] = (0.10, 0.6),
    mean_duration: tuple[float, float] = (150.0, 75.0),
    correlation: float = 0.5,
    balanced_splits: tuple[int, ...] = (),
    balance_tolerance: float = 0.1,
    name: str = "vol_timing",
) -> MarketData:
    """A shared calm/turbulent regime (annual ``drift`` and ``sigma`` per regime, mean
    durations in sessions); returns correlated through one common factor.

    ``balanced_splits`` (split boundaries in rows, e.g. ``(3000, 3500)``) redraws the regime
    chain, from the same seeded stream, until every split spends a share of its rows in the
    turbulent regime within ``balance_tolerance`` of the chain's stationary share (1/3 by
    default). Without it a 500-row validation split can hold one short turbulent spell or none,
    and then cannot tell a policy that times volatility from one that holds (seed 0 drew 9%
    there, against 32% in train and test). Deterministic per seed; it looks only at the regime
    path, never at any policy.
    """
    rng = np.random.default_rng(seed)
    regime = balanced_regime_chain(
        rng, n_periods, mean_duration, balanced_splits, balance_tolerance
    )
    mu, sig = np.asarray(drift)[regime, None], np.asarray(sigma)[regime, None]
    z = _correlated_normals(rng, n_periods, n_assets, correlation)
    r = (mu - 0.5 * sig**2) * _DT + sig * np.sqrt(_DT) * z
    return _close_only(r, name, _symbols("VOL", n_assets))


def lead_lag_market(
    seed: int = 0,
    *,
    n_periods: int = N_PERIODS,
    beta: float = 0.6,
    lag_window: int = 10,
    sigma: float = 0.25,
    follower_sigma: float = 0.2,
    name: str = "lead_lag",
) -> MarketData:
    """Two assets: a zero-drift leader, and a follower whose return at ``t`` is ``beta``
    times the leader's mean return over ``t-lag_window .. t-1`` plus its own noise."""
    rng = np.random.default_rng(seed)
    leader = sigma * np.sqrt(_DT) * rng.standard_normal(n_periods)
    csum = np.concatenate([[0.0], np.cumsum(leader)])
    t = np.arange(n_periods)
    lagged_sum = csum[t] - csum[np.maximum(t - lag_window, 0)]
    follower = beta * lagged_sum / lag_window + follower_sigma * np.sqrt(_DT) * rng.standard_normal(
        n_periods
    )
    return _close_only(np.stack([leader, follower], axis=1), name, ("LEADER", "FOLLOWER"))


def noise_market(
    seed: int = 0,
    *,
    n_assets: int = 5,
    n_periods: int = N_PERIODS,
    sigma: float = 0.2,
    correlation: float = 0.3,
    name: str = "noise",
) -> MarketData:
    """Correlated Gaussian log returns with zero mean: no policy beats holding on average."""
    rng = np.random.default_rng(seed)
    z = _correlated_normals(rng, n_periods, n_assets, correlation)
    return _close_only(sigma * np.sqrt(_DT) * z, name, _symbols("NOISE", n_assets))


# ----------------------------------------------------------------- planted-signal rules
def _trailing_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum of rows ``t-window+1 .. t`` (NaN before ``window`` rows exist)."""
    csum = np.cumsum(x, axis=0)
    out = np.full(x.shape, np.nan)
    out[window - 1] = csum[window - 1]
    out[window:] = csum[window:] - csum[:-window]
    return out


def _log_returns(close: np.ndarray) -> np.ndarray:
    r = np.zeros(close.shape)
    r[1:] = np.log(close[1:] / close[:-1])
    return r


def momentum_rule(close: np.ndarray, lookback: int = 20) -> np.ndarray:
    """Equal shares ``1/N`` in every asset whose ``lookback``-session log return is positive."""
    past = _trailing_sum(_log_returns(close), lookback)
    past[:lookback] = np.nan  # the first return is undefined
    return np.where(np.isnan(past), np.nan, (past > 0) / close.shape[1])


def reversion_rule(close: np.ndarray, lookback: int = 20, hold: int = 2) -> np.ndarray:
    """Half in each of the ``hold`` assets furthest below their ``lookback``-session mean
    price, relative to the cross-section."""
    log_close = np.log(close)
    mean = _trailing_sum(log_close, lookback) / lookback
    gap = log_close - mean
    gap -= gap.mean(axis=1, keepdims=True)
    ranks = np.argsort(np.argsort(np.nan_to_num(gap), axis=1), axis=1)
    weights = (ranks < hold) / hold
    return np.where(np.isnan(gap), np.nan, weights)


def volatility_rule(close: np.ndarray, lookback: int = 20, threshold: float = 0.25) -> np.ndarray:
    """Equal weight while the equal-weight portfolio's ``lookback``-session realised volatility
    (annualised) is below ``threshold``, all cash above it."""
    p = _log_returns(close).mean(axis=1, keepdims=True)
    mean = _trailing_sum(p, lookback) / lookback
    var = _trailing_sum(p**2, lookback) / lookback - mean**2
    vol = np.sqrt(np.clip(var, 0.0, None) * 252)
    vol[:lookback] = np.nan
    weights = np.where(vol < threshold, 1.0 / close.shape[1], 0.0) * np.ones(close.shape)
    return np.where(np.isnan(vol), np.nan, weights)


def lead_lag_rule(close: np.ndarray, lag_window: int = 10) -> np.ndarray:
    """All in the follower (column 1) while the leader's ``lag_window``-session return is
    positive, else all cash."""
    lead = _trailing_sum(_log_returns(close)[:, :1], lag_window)
    lead[:lag_window] = np.nan
    weights = np.zeros(close.shape)
    weights[:, 1:2] = lead > 0
    return np.where(np.isnan(lead), np.nan, weights)


# ------------------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class Task:
    """A diagnostic task: seeded data, fixed splits, and the two policies that score 0 and 1.

    Attributes:
        name: short name (``"Momentum"``); the env id is ``marketarena/<name>-v0``.
        description: the planted structure, in a sentence.
        generate: ``seed -> MarketData`` (synthetic tasks) or None (``data`` names a panel).
        reference, baseline: agent specs scoring 1 and 0.
        rule: the planted-signal rule ``close (T, N) -> weights (T, N)`` (NaN: undefined).
        known_optimum: False for real data (the reference is a benchmark, not an optimum).
        data: a dataset name for real-data tasks.
        split_dates: ``(validation_start, test_start)`` for real-data tasks.
        env_kwargs: defaults of the registered env (window, episode length, ...).
    """

    name: str
    description: str
    reference: str
    baseline: str
    generate: Callable[[int], MarketData] | None = None
    rule: Callable[[np.ndarray], np.ndarray] | None = None
    known_optimum: bool = True
    data: str | None = None
    split_dates: tuple[str, str] | None = None
    data_seed: int = 0
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def env_id(self) -> str:
        return f"marketarena/{self.name}-v0"

    def market(self) -> MarketData:
        """The task's data (generated once per process, or given by
        :func:`use_task_markets`; :class:`MarketData` is immutable)."""
        given = _GIVEN_MARKETS.get(self.name)
        return given if given is not None else _task_market(self.name)

    def splits(self) -> dict[str, tuple[str, str]]:
        """Inclusive ``(start, end)`` dates of the train, validation and test splits."""
        data = self.market()
        d = data.dates
        if self.split_dates is None:
            v, t = TRAIN_ROWS, TRAIN_ROWS + VALIDATION_ROWS
        else:
            v, t = (data.index_of(x) for x in self.split_dates)
        bounds = {"train": (0, v - 1), "validation": (v, t - 1), "test": (t, len(d) - 1)}
        return {k: (str(d[a]), str(d[b])) for k, (a, b) in bounds.items()}

    def split_starts(self) -> tuple[str, str]:
        """``(validation_start, test_start)``, known without generating the data."""
        if self.split_dates is not None:
            return self.split_dates
        d = _calendar()
        return str(d[TRAIN_ROWS]), str(d[TRAIN_ROWS + VALIDATION_ROWS])

    def signal_weights(self) -> np.ndarray:
        """The planted rule's point-in-time target weights ``(T, N)`` on this task's data."""
        if self.rule is None:
            raise ConfigError(f"task {self.name} has no planted signal rule")
        return self.rule(np.asarray(self.market().close))


def _task(name: str, description: str, reference: str, baseline: str, **kw: Any) -> Task:
    return Task(name, description, reference, baseline, **kw)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        _task(
            "Momentum",
            "each asset's drift flips sign every ~60 sessions (+-70% a year)",
            "signal:Momentum",
            "buy_and_hold",
            generate=lambda s: momentum_market(s, name="marketarena/Momentum-v0"),
            rule=momentum_rule,
        ),
        _task(
            "MeanReversion",
            "each asset reverts to a common factor (OU deviation, half-life 10 sessions)",
            "signal:MeanReversion",
            "buy_and_hold",
            generate=lambda s: mean_reversion_market(s, name="marketarena/MeanReversion-v0"),
            rule=reversion_rule,
        ),
        _task(
            "VolTiming",
            "a shared calm regime (vol 10%) and a turbulent one (drift -60%, vol 60%)",
            "signal:VolTiming",
            "buy_and_hold",
            generate=lambda s: volatility_regime_market(
                s,
                balanced_splits=(TRAIN_ROWS, TRAIN_ROWS + VALIDATION_ROWS),
                name="marketarena/VolTiming-v0",
            ),
            rule=volatility_rule,
        ),
        _task(
            "LeadLag",
            "the follower's return is 0.6x the leader's mean over the last 10 sessions",
            "signal:LeadLag",
            "buy_and_hold",
            generate=lambda s: lead_lag_market(s, name="marketarena/LeadLag-v0"),
            rule=lead_lag_rule,
        ),
        _task(
            "CostAware",
            "a momentum signal (+-6% a year, ~20-session regimes, 10% base drift) weaker "
            "than the costs: the best policy barely trades",
            "buy_and_hold",
            "signal:CostAware",
            generate=lambda s: momentum_market(
                s,
                drift=0.06,
                base_drift=0.10,
                mean_duration=20.0,
                name="marketarena/CostAware-v0",
            ),
            rule=momentum_rule,
        ),
        _task(
            "Noise",
            "independent zero-drift noise: the best policy holds and never churns",
            "buy_and_hold",
            "random",
            generate=lambda s: noise_market(s, name="marketarena/Noise-v0"),
        ),
        _task(
            "SP500",
            "the bundled 20-stock panel (train 1990-2011, validation 2012-2014, "
            "test 2015-2022); no known optimum: 1 = equal weight, 0 = cash",
            "equal_weight",
            "cash",
            known_optimum=False,
            data="sp500_20",
            split_dates=("2012-01-03", "2015-01-02"),
        ),
    )
}


def get_task(name: str) -> Task:
    """A task by name (``Momentum``), id (``marketarena/Momentum-v0``) or ``Momentum-v0``;
    an unknown name lists the tasks."""
    key = name.strip().removeprefix("marketarena/").removesuffix("-v0")
    if key not in TASKS:
        ids = ", ".join(t.env_id for t in TASKS.values())
        raise ConfigError(f"unknown task {name!r}; the tasks are: {ids}")
    return TASKS[key]


def is_task_id(name: str) -> bool:
    """Whether ``name`` is written as a task id (``marketarena/X-v0``), known or not."""
    return name.startswith("marketarena/") and name.endswith("-v0")


_GIVEN_MARKETS: dict[str, MarketData] = {}


def use_task_markets(markets: Mapping[str, MarketData]) -> None:
    """Use these tasks' data in this process instead of generating them again: a Ray worker
    gets them from the driver's object store (one copy per node) rather than rebuilding them
    per task. Each must be ``get_task(name).market()`` of the same code (the driver's)."""
    for name, data in markets.items():
        _GIVEN_MARKETS[get_task(name).name] = data


@cache
def _task_market(name: str) -> MarketData:
    task = TASKS[name]
    if task.generate is None:
        from marketarena.envs.data import load_dataset

        assert task.data is not None, f"{name}: a task without generate names its dataset"
        return load_dataset(task.data)
    return task.generate(task.data_seed)


def task_env_kwargs(name: str, split: str = "train", **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of :class:`PortfolioEnv` / :class:`PortfolioVectorEnv` for a split."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    task = get_task(name)
    start, end = task.splits()[split]
    return {"data": task.market(), "start": start, "end": end, **task.env_kwargs, **overrides}


def register_tasks() -> None:
    """Register every task as ``marketarena/<Name>-v0`` over its train split."""
    from gymnasium.envs.registration import register, registry

    for task in TASKS.values():
        if task.env_id in registry:
            continue
        start, end = task.splits()["train"] if task.generate is None else _row_dates(task)
        register(
            id=task.env_id,
            entry_point="marketarena.envs.portfolio_env:PortfolioEnv",
            vector_entry_point="marketarena.envs.vector_env:PortfolioVectorEnv",
            kwargs={"data": task.env_id, "start": start, "end": end, **task.env_kwargs},
        )


def _row_dates(task: Task) -> tuple[str, str]:
    """Train-split dates of a synthetic task without generating it (the calendar is fixed)."""
    d = _calendar()
    return str(d[0]), str(d[TRAIN_ROWS - 1])


def _calendar() -> np.ndarray:
    return pd.bdate_range(CALENDAR_START, periods=N_PERIODS).to_numpy().astype("datetime64[D]")
