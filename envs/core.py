"""The batched environment logic shared by :class:`PortfolioEnv` and :class:`PortfolioVectorEnv`.

Everything that turns the simulator into an environment — the action mapping, the episode
bounds, rewards, termination and the observation — lives here once and works on a batch of
``n_envs``. The single env is a batch of one, so the two environments agree by construction
(and a parity test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from marketarena.envs.data import MarketData, resolve_data
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.features import compute_features
from marketarena.envs.rewards import make_reward
from marketarena.envs.risk import RiskLayer
from marketarena.envs.settings import (
    ACTION_MAPPINGS,
    ActionMapping,
    EnvSettings,
    build_rules,
    check_settings,
)
from marketarena.envs.simulator import Simulator, StepResult, column_index

__all__ = [
    "ACTION_MAPPINGS",
    "ActionMapping",
    "ActionSpec",
    "PortfolioCore",
    "SimulatorFactory",
    "build_rules",
]
#: builds the core's simulator: ``(data, rules, n_envs, *, record, dtype) -> Simulator``
SimulatorFactory = Callable[..., Simulator]
_DEFAULTS = EnvSettings()
# 0-d arrays: numpy converts a Python float on every operation, an array it does not
_ZERO, _ONE, _TINY = np.array(0.0), np.array(1.0), np.array(1e-300)
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


@dataclass(frozen=True)
class ActionSpec:
    """How raw actions become target weights; see :class:`PortfolioEnv` (Action Space).

    * ``normalize``: ``Box(0, 1, (N + 1,))``; negatives count as 0, weights are the entries
      over their sum, all zero is all cash.
    * ``softmax``: ``Box(-1, 1, (N + 1,))``; ``softmax(softmax_scale * action)``.
    * ``signed``: ``Box(-1, 1, (N + 1,))``, shorting; asset weights
      ``max_gross_leverage * a[:N] / max(1, sum |a|)``.
    * ``discrete``: ``MultiDiscrete([discrete_levels] * (N + 1))``; integer levels, then as
      ``normalize`` (e.g. 3 levels: out, half, full).

    ``rebalance_band`` (default 0: off) is a no-trade band that makes holding free: an asset
    whose target weight is within the band of its current weight keeps its current weight
    (no order, no cost); the others move to their targets, scaled down together if they
    would need more than the cash the held assets leave (see :meth:`apply_band`). With
    ``relative_band`` > 0 an asset's band is the smaller of ``rebalance_band`` and
    ``relative_band`` times its larger weight (target or current): the "5/25 rule" of
    rebalancing practice, which keeps small positions tradable in wide universes (an equal
    weight of 1/21 is inside an absolute 5% band of cash, but not inside 25% of itself).

    Agents trained on one mapping keep it (an SB3 agent converts its raw actions to weights
    with the spec it was trained with), so every agent can be evaluated in one env.
    """

    mapping: ActionMapping = _DEFAULTS.action_mapping
    softmax_scale: float = _DEFAULTS.softmax_scale
    discrete_levels: int = _DEFAULTS.discrete_levels
    max_gross_leverage: float = _DEFAULTS.rules.max_gross_leverage
    rebalance_band: float = _DEFAULTS.rebalance_band
    relative_band: float = _DEFAULTS.relative_band

    def __post_init__(self) -> None:
        check_settings(
            action_mapping=self.mapping,
            softmax_scale=self.softmax_scale,
            discrete_levels=self.discrete_levels,
            rebalance_band=self.rebalance_band,
            relative_band=self.relative_band,
        )

    @classmethod
    def from_settings(cls, settings: EnvSettings) -> ActionSpec:
        """The action interface of an env with ``settings``."""
        return cls(
            settings.action_mapping,
            settings.softmax_scale,
            settings.discrete_levels,
            settings.rules.max_gross_leverage,
            settings.rebalance_band,
            settings.relative_band,
        )

    def space(self, n_assets: int) -> spaces.Space:
        if self.mapping == "discrete":
            return spaces.MultiDiscrete([self.discrete_levels] * (n_assets + 1))
        low = 0.0 if self.mapping == "normalize" else -1.0
        return spaces.Box(low, 1.0, shape=(n_assets + 1,), dtype=np.float32)

    def to_weights(self, actions: np.ndarray, ones: np.ndarray | None = None) -> np.ndarray:
        """Asset weights ``(n, N)`` for finite ``actions`` ``(n, N + 1)``."""
        a = actions
        n = a.shape[1] - 1
        if self.mapping in ("normalize", "discrete"):
            positive = np.maximum(a, _ZERO)  # float64 even for float32 or integer actions
            ones = np.ones(n + 1) if ones is None else ones
            with np.errstate(over="ignore"):
                total = np.vecdot(positive, ones)
            if not np.isfinite(total).all():  # huge finite entries overflow: scale them first
                huge = ~np.isfinite(total)
                positive[huge] /= positive[huge].max(axis=1, keepdims=True)
                total = np.vecdot(positive, ones)
            inv_total = _ONE / (total + _TINY)  # all zero: all cash
            return positive[:, :n] * inv_total[column_index(len(a))]
        a = np.asarray(a, dtype=np.float64)
        if self.mapping == "softmax":
            z = a - a.max(axis=1, keepdims=True)
            z *= self.softmax_scale
            np.exp(z, out=z)
            return z[:, :n] / z.sum(axis=1, keepdims=True)
        clipped = np.clip(a, -1.0, 1.0)
        gross = np.maximum(np.abs(clipped).sum(axis=1, keepdims=True), 1.0)
        return clipped[:, :n] * (self.max_gross_leverage / gross)

    def apply_band(self, target: np.ndarray, current: np.ndarray) -> np.ndarray:
        """Asset weights ``(n, N)`` after the no-trade band; ``current`` ``(n, N)`` are the
        weights held now. Without a band (or with shorting) ``target`` is returned as is."""
        if self.rebalance_band <= 0.0 or self.mapping == "signed":
            return target
        band = self.rebalance_band
        if self.relative_band > 0.0:
            band = np.minimum(band, self.relative_band * np.maximum(target, current))
        move = np.abs(target - current) > band
        kept = np.where(move, 0.0, current)
        moved = np.where(move, target, 0.0)
        room = np.maximum(1.0 - kept.sum(axis=1, keepdims=True), 0.0)
        need = moved.sum(axis=1, keepdims=True)
        scale = np.where(need > room, room / np.maximum(need, 1e-300), 1.0)
        return kept + moved * scale


class PortfolioCore:
    """Batched env logic over one :class:`Simulator`; see :class:`PortfolioEnv` for the spec.

    ``settings`` (:class:`EnvSettings`; default: the defaults) with keyword ``overrides`` of
    its fields are resolved into ``self.settings``; ``record`` keeps fills and snapshots.
    ``simulator`` builds the simulator, called once as ``simulator(data, rules, n_envs,
    record=record, dtype=dtype)`` (default :class:`Simulator`: independent envs). The
    default refuses ``settings.impact`` with non-zero impact or noise (a
    :class:`ConfigError`): price impact needs a simulator that models it (the arena's).

    Observations are written into ``obs`` ``(n_envs, D)`` float32 in place: the feature
    window comes from a strided view in which row ``r`` is the contiguous block
    ``features[r : r + window]``, so gathering a window per env is one fancy index.
    """

    def __init__(
        self,
        data: MarketData | str,
        n_envs: int = 1,
        settings: EnvSettings | None = None,
        *,
        record: bool = False,
        simulator: SimulatorFactory | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = s = EnvSettings.resolve(settings, overrides)
        if simulator is None and not s.impact.inert:
            raise ConfigError(
                f"impact={s.impact.to_dict()}: a single or vector env has no other agents and "
                "does not model price impact or noise traders; for one agent whose own trades "
                "move prices use ArenaEnv(n_agents=1, impact=...), or set impact.eta, "
                "impact.gamma and impact.noise_scale to 0"
            )
        self.data = data = resolve_data(data)
        self.n_envs = n_envs
        dtype = np.dtype(s.price_dtype).type
        factory: SimulatorFactory = Simulator if simulator is None else simulator
        self.sim = factory(data, s.rules, n_envs, record=record, dtype=dtype)
        self.rules = self.sim.rules
        self.window = s.window
        self.feature_names = s.features
        feats, first_valid = compute_features(data, self.feature_names)
        if data.listed is not None:  # prices outside a listing are bookkeeping, not data
            feats[~data.listed] = 0.0
        self.features = feats
        self.feature_rows = feats.reshape(data.n_periods, -1)  # row t: every feature at t
        n, f = data.n_assets, len(self.feature_names)
        self.n_assets = n
        self.window_size = self.window * n * f
        if self.window >= data.n_periods:  # a window and at least the bar its orders fill on
            raise DataError(
                f"window={self.window} needs more than {self.window} rows of {data.name}, "
                f"which has {data.n_periods} ({data.dates[0]}..{data.dates[-1]}): use a "
                "shorter window or longer data"
            )
        self.windows = np.lib.stride_tricks.as_strided(
            feats,
            shape=(data.n_periods - self.window + 1, self.window_size),
            strides=(feats.strides[0], feats.itemsize),
            writeable=False,
        )
        self.reward_fn = make_reward(s.reward, **s.reward_kwargs)
        self.action_spec = ActionSpec.from_settings(s)
        self.action_mapping = s.action_mapping
        # mappings whose output already satisfies the rules skip the projection
        self._projected = not (s.action_mapping == "signed" or self.rules.max_weight is not None)
        self._banded = self.action_spec.rebalance_band > 0.0
        self.risk = (
            RiskLayer(s.risk, data.symbols, data.close, n_envs, self.rules.periods_per_year)
            if s.risk.active
            else None
        )

        start_idx, end_idx = data.date_range_indices(s.start, s.end)
        self.first_decision = max(start_idx, first_valid + self.window - 1)
        self.last_decision = end_idx - 1
        available = self.last_decision - self.first_decision + 1
        if available < 1:
            usable = data.dates[min(first_valid + self.window - 1, data.n_periods - 1)]
            raise DataError(
                f"date range {data.dates[start_idx]}..{data.dates[end_idx]} of {data.name} "
                f"leaves no decision date after the {self.window}-row observation window "
                f"(first usable date {usable})"
            )
        episode_length = s.episode_length
        if episode_length is not None and episode_length > available:
            raise ConfigError(
                f"episode_length={episode_length} exceeds the {available} decision dates "
                f"in {data.dates[self.first_decision]}..{data.dates[end_idx]}"
            )
        self.episode_length = episode_length
        self.latest_start = self.last_decision - (episode_length - 1 if episode_length else 0)
        self.episode_start = np.zeros(n_envs, dtype=np.int64)
        self.episode_end = np.full(n_envs, self.last_decision, dtype=np.int64)
        self.obs_dim = self.window_size + n + 1
        self.obs = np.zeros((n_envs, self.obs_dim), dtype=np.float32)
        self.action_space = self.action_spec.space(n)
        self._ones = np.ones(n + 1)
        self._ones_all = np.ones(n_envs * (n + 1))
        self._ones_all32 = self._ones_all.astype(np.float32)

    # ----------------------------------------------------------------- episodes
    def draw_start(self, rng: np.random.Generator) -> int:
        """A uniformly random eligible start index from ``rng`` (one draw)."""
        return int(rng.integers(self.first_decision, self.latest_start + 1))

    def start_index(self, date: Any) -> int:
        """The start index for a requested date, checked against the eligible range."""
        t0 = self.data.index_of(date, "left")
        if not self.first_decision <= t0 <= self.latest_start:
            raise ConfigError(
                f"start {date} is outside the eligible start dates "
                f"{self.data.dates[self.first_decision]}..{self.data.dates[self.latest_start]}"
            )
        return t0

    def reset_envs(self, starts: int | np.ndarray, ids: np.ndarray | None = None) -> None:
        """Fresh portfolios at decision indices ``starts`` for envs ``ids`` (all by default)."""
        starts = np.asarray(starts, dtype=np.int64)
        self.sim.reset(starts, ids)
        sel = slice(None) if ids is None else ids
        length = self.episode_length
        self.episode_start[sel] = starts
        self.episode_end[sel] = starts + (length - 1) if length else self.last_decision
        self.reward_fn.reset(self.n_envs, ids)
        if self.risk is not None:
            self.risk.reset(ids)

    # ------------------------------------------------------------------ actions
    def actions_to_weights(self, actions: np.ndarray) -> np.ndarray:
        """Target asset weights ``(n_envs, N)`` for ``actions`` ``(n_envs, N + 1)``."""
        a = np.asarray(actions)
        n = self.n_assets
        if a.shape != (self.n_envs, n + 1):
            raise ValueError(
                f"actions have shape {a.shape}; expected {(self.n_envs, n + 1)}: one weight "
                f"per asset ({n}) and one for cash, per env"
            )
        if self.action_mapping == "discrete":
            levels = self.action_spec.discrete_levels
            if a.dtype.kind not in "iu" and not np.array_equal(a, np.round(a)):
                raise ValueError(f"discrete actions must be whole levels 0..{levels - 1}")
            if a.min() < 0 or a.max() >= levels:
                raise ValueError(
                    f"discrete actions must be in 0..{levels - 1}, got {a.min()}..{a.max()}"
                )
            return self.action_spec.to_weights(a, self._ones)
        dtype = a.dtype
        if dtype != _FLOAT32 and dtype != _FLOAT64:
            a, dtype = a.astype(np.float64), _FLOAT64
        # one BLAS dot carries any NaN or +-inf into the sum; the search runs on failure
        ones = self._ones_all32 if dtype == _FLOAT32 else self._ones_all
        if not math.isfinite(a.reshape(-1).dot(ones)):
            self._raise_non_finite(a)
        return self.action_spec.to_weights(a, self._ones)

    def _raise_non_finite(self, a: np.ndarray) -> None:
        bad = np.argwhere(~np.isfinite(a))
        if not len(bad):
            return  # the sum overflowed on huge but finite entries
        names = [*self.data.symbols, "cash"]
        where = [(f"env {i} " if self.n_envs > 1 else "") + names[j] for i, j in bad[:10].tolist()]
        raise ValueError(f"action contains NaN or inf at {where}: {a[tuple(bad[:10].T)].tolist()}")

    # --------------------------------------------------------------------- step
    def step(self, actions: np.ndarray) -> tuple[StepResult, np.ndarray, np.ndarray, np.ndarray]:
        """Advance every env: the simulator's step result (NAV, costs, turnover; its arrays
        are new every step), then rewards, terminated and truncated, each ``(n_envs,)``."""
        sim = self.sim
        weights = self.actions_to_weights(actions)
        if self._banded or self.risk is not None:
            current = sim.weight[:, :-1]  # computed from the book: once a step
            if self._banded:
                weights = self.action_spec.apply_band(weights, current)
            if self.risk is not None:  # after the band: the limits hold whatever it kept
                weights = self.risk.apply(weights, current, sim.nav, sim.t)
        result = sim.step_weights(weights, projected=self._projected)
        reward = self.reward_fn(result)
        if self.settings.reward_scale != 1.0:
            reward = reward * self.settings.reward_scale
        terminated = sim.breached()
        # past the end and not terminated (on booleans, a > b is "a and not b")
        truncated = (sim.t > self.episode_end) > terminated
        return result, reward, terminated, truncated

    def observe_after_step(
        self, previous: np.ndarray, out: np.ndarray, restarted: np.ndarray | None
    ) -> np.ndarray:
        """Observations after one step, shifting each window by one row instead of
        gathering it again: ``previous`` must hold every env's observation before the step.

        Envs in ``restarted`` (reset after the step) get a full window. Copying the shared
        rows from the previous observation moves half the memory a gather does, and at
        large batches the observation copy is what limits the step.
        """
        ws, row = self.window_size, self.n_assets * len(self.feature_names)
        t = self.sim.t
        out[:, : ws - row] = previous[:, row:ws]
        out[:, ws - row : ws] = np.take(self.feature_rows, t, axis=0)
        if restarted is not None and len(restarted):
            out[restarted, :ws] = self.windows[t[restarted] - (self.window - 1)]
        self.sim.write_weights(out[:, ws:])
        return out

    def observe(
        self, out: np.ndarray | None = None, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """Write every env's observation into ``out`` (default: ``self.obs``) and return it.

        ``weights``: the current ``sim.weight``, when the caller has computed it already.
        """
        obs = self.obs if out is None else out
        t = self.sim.t
        if self.n_envs == 1:  # a slice, not a gather
            obs[0, : self.window_size] = self.windows[int(t[0]) - (self.window - 1)]
        else:
            obs[:, : self.window_size] = self.windows[t - (self.window - 1)]
        if weights is None:
            self.sim.write_weights(obs[:, self.window_size :])
        else:
            obs[:, self.window_size :] = weights
        return obs
