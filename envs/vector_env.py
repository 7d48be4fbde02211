"""`PortfolioVectorEnv`: many portfolios stepped in one numpy call."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from marketarena.envs.core import PortfolioCore
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.settings import EnvSettings


class PortfolioVectorEnv(VectorEnv):
    """``num_envs`` independent :class:`PortfolioEnv` episodes in one batched simulator.

    Same market, rules, timing, actions, observations and rewards as
    :class:`~marketarena.envs.PortfolioEnv` (see its docstring): both run the same batched
    code, and a parity test checks that env ``i`` of a vector env reset with ``seed`` matches
    a single env reset with ``seed + i``, step for step.

    * **Data** is shared: one copy of the prices and features serves every env. With
      ``price_dtype=np.float32`` the price tables are float32 (half the memory and memory
      traffic); docs/BENCHMARKS.md shows the NAV error this causes over a long episode.
    * **Episodes**: each env has its own start (from its own RNG stream, seeded
      ``seed + i``), length and end.
    * **Autoreset**: ``AutoresetMode.SAME_STEP``. When env ``i`` ends, ``step`` returns the
      first observation of its next episode; the last observation of the finished one is in
      ``info["final_obs"][i]`` (with ``info["_final_obs"][i]`` True), and ``info["nav"][i]``,
      ``info["costs"][i]`` and ``info["turnover"][i]`` still describe the finished step.
    * **Buffers** are preallocated: two observation buffers used in turn. Each step builds
      the new observations from the previous ones (every window moves by one row), which
      moves half the memory of gathering each window again. With ``copy=False`` the
      returned array is that internal buffer: it stays valid until the step after next and
      must not be modified in place. The default ``copy=True`` returns a fresh array.

    Args:
        num_envs: number of portfolios.
        data, settings, overrides: as for ``PortfolioEnv``: the market, an
            :class:`~marketarena.envs.settings.EnvSettings` and any of its fields as keywords
            (``price_dtype`` among them).
        copy: return a copy of the observation buffer (default) or the buffer itself.
    """

    # gymnasium declares metadata as an instance variable; every instance shares this one
    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # type: ignore[misc]

    def __init__(
        self,
        num_envs: int = 8,
        data: MarketData | str = "sp500_20",
        settings: EnvSettings | None = None,
        *,
        copy: bool = True,
        **overrides: Any,
    ) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        self.core = PortfolioCore(data, num_envs, settings, **overrides)
        self.settings = self.core.settings
        self.num_envs = num_envs
        self.data = self.core.data
        self.sim = self.core.sim
        self.rules = self.core.rules
        self.random_start = self.settings.random_start
        self.copy = copy
        self.single_observation_space = spaces.Box(
            -np.inf, np.inf, shape=(self.core.obs_dim,), dtype=np.float32
        )
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._buffers = (self.core.obs, np.zeros_like(self.core.obs))
        self._turn = 0
        self._rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(num_envs)]

    # ------------------------------------------------------------------ API
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env. ``seed``: an int (env ``i`` gets ``seed + i``) or one per env.

        ``options={"start": "YYYY-MM-DD"}`` starts every env on that date.
        """
        first_seed = seed[0] if isinstance(seed, Sequence) else seed
        super().reset(seed=first_seed)
        if seed is not None:
            seeds = (
                list(seed)
                if isinstance(seed, Sequence)
                else [seed + i for i in range(self.num_envs)]
            )
            if len(seeds) != self.num_envs:
                raise ValueError(f"{len(seeds)} seeds for {self.num_envs} envs")
            self._rngs = [
                seeding.np_random(s)[0] if s is not None else self._rngs[i]
                for i, s in enumerate(seeds)
            ]
        core = self.core
        if options and "start" in options:
            starts = np.full(self.num_envs, core.start_index(options["start"]))
        elif self.random_start:
            starts = np.array([core.draw_start(rng) for rng in self._rngs])
        else:
            starts = np.full(self.num_envs, core.first_decision)
        core.reset_envs(starts)
        self._turn ^= 1
        obs = core.observe(self._buffers[self._turn])
        return (obs.copy() if self.copy else obs), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        core = self.core
        result, reward, terminated, truncated = core.step(actions)
        # the simulator returns new arrays every step (and resets copy before writing)
        info: dict[str, Any] = {
            "nav": result.nav,
            "costs": result.costs,
            "turnover": result.turnover,
        }
        if core.risk is not None:
            info["risk"] = dict(core.risk.last)
        done = terminated | truncated
        ids = None
        if done.any():
            ids = np.flatnonzero(done)
            info["final_obs"], info["_final_obs"] = self._final_observations(ids), done
            if self.random_start:
                starts = np.array([core.draw_start(self._rngs[i]) for i in ids])
            else:
                starts = np.full(len(ids), core.first_decision)
            core.reset_envs(starts, ids)
        previous = self._buffers[self._turn]
        self._turn ^= 1
        obs = core.observe_after_step(previous, self._buffers[self._turn], ids)
        return (obs.copy() if self.copy else obs), reward, terminated, truncated, info

    # ------------------------------------------------------------ save/restore
    def get_state(self) -> dict[str, Any]:
        """Everything that changes from step to step, for every env (copies): each
        simulator portfolio (:meth:`~marketarena.envs.simulator.Simulator.get_state`), the
        episodes' starts and ends, the reward's state and each env's RNG (the next random
        start). A training checkpoint keeps it, so that a resumed run steps as the
        uninterrupted one would."""
        core = self.core
        return {
            "portfolios": [self.sim.get_state(i) for i in range(self.num_envs)],
            "episode_start": core.episode_start.copy(),
            "episode_end": core.episode_end.copy(),
            "reward": copy.deepcopy(vars(core.reward_fn)),
            "rngs": [copy.deepcopy(rng.bit_generator.state) for rng in self._rngs],
            **({} if core.risk is None else {"risk": core.risk.get_state()}),
        }

    def set_state(self, state: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Put every env back where :meth:`get_state` saw it (on a vector env with the same
        number of envs, data and settings); returns the observations, as ``reset`` does.
        The next ``step`` is then, bit for bit, the step the saved envs would have taken."""
        portfolios = state["portfolios"]
        if len(portfolios) != self.num_envs:
            raise ValueError(f"saved state has {len(portfolios)} envs, this env {self.num_envs}")
        core = self.core
        for i, portfolio in enumerate(portfolios):
            self.sim.set_state(portfolio, i)
        core.episode_start[:] = state["episode_start"]
        core.episode_end[:] = state["episode_end"]
        vars(core.reward_fn).update(copy.deepcopy(state["reward"]))
        if core.risk is not None:
            if "risk" not in state:
                raise DataError(
                    "saved state has no risk-layer state, but these envs have risk rules: "
                    "resume with the settings the run was started with"
                )
            core.risk.set_state(state["risk"])
        rngs = []
        for saved in state["rngs"]:
            bit_generator = getattr(np.random, saved["bit_generator"])()
            bit_generator.state = saved
            rngs.append(np.random.Generator(bit_generator))
        self._rngs = rngs
        self._turn ^= 1
        obs = core.observe(self._buffers[self._turn])
        return (obs.copy() if self.copy else obs), {}

    def _final_observations(self, ids: np.ndarray) -> np.ndarray:
        """Object array: the last observation of each finished env, None elsewhere."""
        core = self.core
        rows = np.empty((len(ids), core.obs_dim), dtype=np.float32)
        rows[:, : core.window_size] = core.windows[core.sim.t[ids] - (core.window - 1)]
        core.sim.write_weights(rows[:, core.window_size :], ids)
        out = np.full(self.num_envs, None, dtype=object)
        for k, i in enumerate(ids):
            out[i] = rows[k]
        return out

    def close_extras(self, **kwargs: Any) -> None:
        pass
