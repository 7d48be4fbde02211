"""Stable-baselines3 models as agents: PPO, A2C, SAC and TD3, loaded from a saved ``.zip``."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

ALGORITHMS = ("ppo", "a2c", "sac", "td3")


def detect_algorithm(path: str | Path) -> str:
    """The SB3 algorithm that saved ``path``, from the hyperparameters stored in the zip."""
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a saved stable-baselines3 model: {exc}") from exc
    if "clip_range" in data:
        return "ppo"
    if "policy_delay" in data:
        return "td3"
    if "target_entropy" in data or "ent_coef_optimizer" in data:
        return "sac"
    if "n_steps" in data and "gae_lambda" in data:
        return "a2c"
    raise ValueError(f"cannot tell which SB3 algorithm saved {path}; pass it explicitly")


def algorithm_class(name: str) -> Any:
    import stable_baselines3 as sb3

    classes = {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3}
    try:
        return classes[name.lower()]
    except KeyError:
        raise ValueError(f"unknown SB3 algorithm {name!r}; choose from {ALGORITHMS}") from None


class SB3Agent:
    """A trained SB3 policy acting through the agent protocol.

    Args:
        model: a loaded SB3 model.
        name: the name reports use.
        deterministic: act with the policy's mode (default) or sample from it.
        obs_normalizer: optional callable applied to each observation first (e.g. a saved
            ``VecNormalize``'s ``normalize_obs``), so a model trained on normalised
            observations sees them the same way here.
    """

    def __init__(
        self,
        model: Any,
        name: str = "sb3",
        *,
        deterministic: bool = True,
        obs_normalizer: Any | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.deterministic = deterministic
        self.obs_normalizer = obs_normalizer

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        algorithm: str | None = None,
        *,
        name: str | None = None,
        deterministic: bool = True,
        vec_normalize: str | Path | None = None,
    ) -> SB3Agent:
        """Load a model saved by ``model.save(path)``; the algorithm is detected if not given.

        ``vec_normalize``: a ``VecNormalize`` saved with ``.save()``; when omitted, a
        ``vecnormalize.pkl`` next to the model is used if present.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no saved model at {path}")
        algo = algorithm or detect_algorithm(path)
        model = algorithm_class(algo).load(path, device="cpu")
        normalizer = None
        stats = Path(vec_normalize) if vec_normalize else path.with_name("vecnormalize.pkl")
        if stats.exists():
            import pickle

            with stats.open("rb") as fh:
                # what VecNormalize.load does, without the env it would attach to
                venv_stats = pickle.load(fh)
            venv_stats.training = False
            normalizer = venv_stats.normalize_obs
        elif vec_normalize:
            raise FileNotFoundError(f"no VecNormalize statistics at {vec_normalize}")
        return cls(model, name or f"{algo}:{path.stem}", deterministic=deterministic,
                   obs_normalizer=normalizer)  # fmt: skip

    def reset(self, *, seed: int | None = None) -> None:
        if seed is not None:
            self.model.set_random_seed(seed)

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        expected = self.model.observation_space.shape
        if observation.shape != expected:
            raise ValueError(
                f"{self.name} was trained on observations of shape {expected}, but the env gives "
                f"{observation.shape}: use the same universe, window and features as in training"
            )
        obs = self.obs_normalizer(observation) if self.obs_normalizer else observation
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return np.asarray(action, dtype=np.float64)
