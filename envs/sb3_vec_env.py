"""A stable-baselines3 ``VecEnv`` over :class:`PortfolioVectorEnv`, without per-env Python steps.

``PPO("MlpPolicy", SB3PortfolioVecEnv(PortfolioVectorEnv(64)))`` trains on the batched
simulator directly. SB3's conventions are kept: auto-reset in the same step, the last
observation of a finished episode in ``infos[i]["terminal_observation"]``, and
``infos[i]["TimeLimit.truncated"]`` set when the episode was cut by time (the end of the date
range or ``episode_length``) rather than by ruin or stop-loss. Wrap it in SB3's
``VecMonitor`` for episode statistics and ``VecNormalize`` for normalisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from marketarena.envs.vector_env import PortfolioVectorEnv


class SB3PortfolioVecEnv(VecEnv):
    """SB3 ``VecEnv`` adapter; ``venv`` is used with ``copy=False`` (SB3 copies on storage)."""

    render_mode = None

    def __init__(self, venv: PortfolioVectorEnv) -> None:
        if not isinstance(venv, PortfolioVectorEnv):
            raise TypeError(f"expected a PortfolioVectorEnv, got {type(venv).__name__}")
        self.venv = venv
        # double-buffered observations stay valid for the one step SB3 needs
        venv.copy = False
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0] if self._seeds[0] is not None else None
        options = self._options[0] or None
        obs, _ = self.venv.reset(seed=seed, options=options)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() needs actions: call step_async(actions) first")
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final_obs = info["final_obs"]
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = final_obs[i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    # attribute access: one vector env stands in for all sub-envs
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices) if isinstance(indices, Sequence) else indices

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
