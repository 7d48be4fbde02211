"""Reward functions: batched, after costs, computed from the simulator's step result.

A reward maps a :class:`~marketarena.envs.simulator.StepResult` (arrays over envs) to an
``(n_envs,)`` array. Every built-in reads the NAV marked after costs, so costs always lower
the reward. Stateful rewards keep per-env state and reset it for the envs that start a new
episode.

Any named reward takes ``turnover_penalty=k`` too: ``k * turnover`` (traded value over the NAV
before the step) is subtracted every step (:class:`TurnoverPenalty`), a shaping term on top of
the real costs the NAV already pays, for agents that should learn to trade less.

Use your own with any callable ``f(result) -> array`` (wrapped in :class:`CallableReward`) or a
class following :class:`RewardFunction`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from marketarena.envs.errors import ConfigError
from marketarena.envs.simulator import StepResult

_TINY = 1e-12


@runtime_checkable
class RewardFunction(Protocol):
    """Batched reward: ``reset`` per episode start, ``__call__`` per step."""

    def reset(self, n_envs: int, env_ids: np.ndarray | None = None) -> None: ...

    def __call__(self, result: StepResult) -> np.ndarray: ...


def _log_return(result: StepResult) -> np.ndarray:
    return np.log(np.maximum(result.nav, _TINY) / result.nav_before)


class LogReturnReward:
    """``log(NAV_{t+1} / NAV_t)``, NAV after costs. Sums to the episode's log growth."""

    def reset(self, n_envs: int, env_ids: np.ndarray | None = None) -> None:
        pass

    def __call__(self, result: StepResult) -> np.ndarray:
        return _log_return(result)


class DrawdownPenalizedReward:
    """``log return - penalty * drawdown``, drawdown ``1 - NAV / peak NAV`` after the step.

    The penalty applies every step the portfolio stays below its peak, so long drawdowns
    cost more than brief ones.
    """

    def __init__(self, penalty: float = 0.1) -> None:
        if not penalty >= 0:
            raise ConfigError(f"penalty must be >= 0, got {penalty}")
        self.penalty = penalty

    def reset(self, n_envs: int, env_ids: np.ndarray | None = None) -> None:
        pass

    def __call__(self, result: StepResult) -> np.ndarray:
        drawdown = 1.0 - result.nav / result.peak_nav
        return _log_return(result) - self.penalty * drawdown


class DifferentialSharpeReward:
    """Moody & Saffell's differential Sharpe ratio of simple returns (adaptation rate ``eta``).

    With moment estimates ``A`` (first) and ``B`` (second) of the per-step return ``R``::

        D = (B * (R - A) - 0.5 * A * (R**2 - B)) / max(B - A**2, var_floor) ** 1.5

    then ``A += eta * (R - A)`` and ``B += eta * (R**2 - B)``.

    The first ``warmup`` steps of each episode only estimate the moments: their reward is 0 and
    ``A``, ``B`` are the plain means of ``R`` and ``R**2`` over the steps so far, so the first
    rewarded step sees unbiased estimates instead of an average pulled towards zero (which made
    the first steps' ``|D|`` hundreds of times the later ones). The EMA with ``eta`` then
    continues from those means. ``var_floor`` (default ``1e-8``, a 0.01% per-step standard
    deviation) bounds ``D`` when the returns so far are flat, e.g. an all-cash warm-up. Use a
    warm-up of many steps: after one, ``B - A**2`` is exactly 0 and the floor alone sets the
    scale.

    ``warmup=0`` is the original, EMA-from-zero reward (``D`` is 0 on the first step, where
    ``A = B = 0``), except that the old one gave 0 wherever ``B - A**2 <= 1e-12`` while this one
    divides by the floor.
    """

    def __init__(self, eta: float = 0.01, warmup: int = 20, var_floor: float = 1e-8) -> None:
        if not 0 < eta <= 1:
            raise ConfigError(f"eta must be in (0, 1], got {eta}")
        if not (warmup >= 0 and int(warmup) == warmup):
            raise ConfigError(f"warmup must be a whole number >= 0, got {warmup}")
        if not var_floor > 0:
            raise ConfigError(f"var_floor must be > 0, got {var_floor}")
        self.eta = eta
        self.warmup = int(warmup)
        self.var_floor = var_floor
        self._a = np.zeros(1)
        self._b = np.zeros(1)
        self._n = np.zeros(1, dtype=np.int64)  # steps taken in the current episode

    def reset(self, n_envs: int, env_ids: np.ndarray | None = None) -> None:
        if self._a.shape != (n_envs,) or self._n.shape != (n_envs,):
            self._a = np.zeros(n_envs)
            self._b = np.zeros(n_envs)
            self._n = np.zeros(n_envs, dtype=np.int64)
        ids = slice(None) if env_ids is None else env_ids
        self._a[ids] = 0.0
        self._b[ids] = 0.0
        self._n[ids] = 0

    def __call__(self, result: StepResult) -> np.ndarray:
        r = result.nav / result.nav_before - 1.0
        a, b, n = self._a, self._b, self._n
        warming = n < self.warmup
        var = np.maximum(b - a * a, self.var_floor)
        d_a, d_b = r - a, r * r - b
        out = np.where(warming, 0.0, (b * d_a - 0.5 * a * d_b) / var**1.5)
        # a step of 1/(n+1) keeps the running mean of the n+1 returns so far; eta after that
        rate = np.where(warming, 1.0 / (n + 1), self.eta)
        a += rate * d_a
        b += rate * d_b
        n += 1
        return out


class CallableReward:
    """Adapts a plain function ``f(result) -> array`` to :class:`RewardFunction`."""

    def __init__(self, fn: Callable[[StepResult], np.ndarray]) -> None:
        self.fn = fn

    def reset(self, n_envs: int, env_ids: np.ndarray | None = None) -> None:
        pass

    def __call__(self, result: StepResult) -> np.ndarray:
        return np.asarray(self.fn(result), dtype=np.float64)


class TurnoverPenalty:
    """``inner(result) - penalty * turnover``: any reward with a price on trading.

    ``turnover`` is the step's traded value over the NAV before it (a full switch from one
    asset to another is 2). The real costs already lower the NAV; this term is extra
    shaping, so the reward no longer sums to the log growth.
    """

    def __init__(self, inner: RewardFunction, penalty: float) -> None:
        if not penalty >= 0:
            raise ConfigError(f"turnover_penalty must be >= 0, got {penalty}")
        self.inner = inner
        self.penalty = float(penalty)

    def reset(self, n_envs: int, env_ids: np.ndarray | None = None) -> None:
        self.inner.reset(n_envs, env_ids)

    def __call__(self, result: StepResult) -> np.ndarray:
        return self.inner(result) - self.penalty * result.turnover


REWARDS: dict[str, type] = {
    "log_return": LogReturnReward,
    "differential_sharpe": DifferentialSharpeReward,
    "drawdown_penalized": DrawdownPenalizedReward,
}


def make_reward(
    spec: str | RewardFunction | Callable[[StepResult], np.ndarray],
    **kwargs: float,
) -> RewardFunction:
    """A reward from a name in :data:`REWARDS`, a :class:`RewardFunction`, or a callable.

    ``turnover_penalty`` (with a name) wraps the reward in :class:`TurnoverPenalty`."""
    if isinstance(spec, str):
        if spec not in REWARDS:
            raise ConfigError(f"unknown reward {spec!r}; available: {sorted(REWARDS)}")
        penalty = kwargs.pop("turnover_penalty", 0.0)
        try:
            reward = REWARDS[spec](**kwargs)
        except TypeError:
            takes = ", ".join([*_parameters(REWARDS[spec]), "turnover_penalty"])
            raise ConfigError(
                f"reward {spec!r}: unknown argument(s) {sorted(kwargs)}; it takes {takes}"
            ) from None
        return TurnoverPenalty(reward, penalty) if penalty else reward
    if kwargs:
        raise ConfigError("reward keyword arguments apply only to a reward given by name")
    if isinstance(spec, RewardFunction):
        return spec
    if callable(spec):
        return CallableReward(spec)
    raise TypeError(f"reward must be a name, a RewardFunction or a callable, got {type(spec)}")


def _parameters(cls: type) -> list[str]:
    import inspect

    return [p for p in inspect.signature(cls).parameters if p != "self"]
