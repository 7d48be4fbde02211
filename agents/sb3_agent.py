"""Stable-baselines3 models as agents: PPO, A2C, SAC, TD3 and sb3-contrib's recurrent PPO,
loaded from a saved ``.zip``.

A model folder written by ``marketarena train`` holds ``model.zip``, ``vecnormalize.pkl``
(observation statistics) and ``agent.json`` (the action mapping, window and features it was
trained with). The agent converts the model's raw actions to target weights with that
mapping, so a model trained with any mapping is evaluated in the same env as every other
agent. A bare SB3 zip without ``agent.json`` acts with its raw actions. A recurrent policy's
LSTM state is the agent's episode state: carried from one ``act`` to the next, cleared by
``reset`` and saved with the agent's state, so a resumed backtest continues it exactly.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from marketarena.agents.base import Resumable
from marketarena.envs.core import ActionSpec
from marketarena.envs.errors import ConfigError, DataError, MissingFileError
from marketarena.envs.settings import OBSERVATION_SETTINGS

ALGORITHMS = ("ppo", "a2c", "sac", "td3", "recurrent_ppo")


def detect_algorithm(path: str | Path) -> str:
    """The SB3 algorithm that saved ``path``, from the hyperparameters stored in the zip."""
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a saved stable-baselines3 model: {exc}") from exc
    # RecurrentPPO saves the same hyperparameters as PPO: only its policy tells them apart
    if _saved_recurrent_policy(data):
        return "recurrent_ppo"
    if "clip_range" in data:
        return "ppo"
    if "policy_delay" in data:
        return "td3"
    if "target_entropy" in data or "ent_coef_optimizer" in data:
        return "sac"
    if "n_steps" in data and "gae_lambda" in data:
        return "a2c"
    raise ConfigError(f"cannot tell which SB3 algorithm saved {path}; pass it explicitly")


def _saved_recurrent_policy(data: Mapping[str, Any]) -> bool:
    """Whether a zip's ``data`` holds a recurrent (LSTM) policy: its policy class comes from
    sb3-contrib's recurrent module, or its policy kwargs configure an LSTM."""
    policy = data.get("policy_class")
    module = policy.get("__module__", "") if isinstance(policy, Mapping) else ""
    kwargs = data.get("policy_kwargs")
    lstm_keys = isinstance(kwargs, Mapping) and any("lstm" in str(k) for k in kwargs)
    return module.startswith("sb3_contrib.common.recurrent") or lstm_keys


def algorithm_class(name: str) -> Any:
    if name.lower() == "recurrent_ppo":
        try:
            from sb3_contrib import RecurrentPPO
        except ImportError:
            raise ImportError(
                "recurrent_ppo needs sb3-contrib: pip install 'sb3-contrib>=2.4,<3'"
            ) from None
        return RecurrentPPO
    import stable_baselines3 as sb3

    classes = {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3}
    try:
        return classes[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown SB3 algorithm {name!r}; choose from {ALGORITHMS}") from None


class SB3Agent(Resumable):
    """A trained SB3 policy acting through the agent protocol.

    Args:
        model: a loaded SB3 model.
        name: the name reports use.
        deterministic: act with the policy's mode (default) or sample from it.
        obs_normalizer: optional callable applied to each observation first (e.g. a saved
            ``VecNormalize``'s ``normalize_obs``), so a model trained on normalised
            observations sees them the same way here.
    """

    #: rebuilt from the model file on resume; a recurrent policy's ``lstm_state`` is not among
    #: them: it is the episode state a resumed run must continue from
    _transient = ("model", "obs_normalizer", "action_spec")

    def __init__(
        self,
        model: Any,
        name: str = "sb3",
        *,
        deterministic: bool = True,
        obs_normalizer: Any | None = None,
        action_spec: ActionSpec | None = None,
        observation: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.deterministic = deterministic
        self.obs_normalizer = obs_normalizer
        self.action_spec = action_spec
        #: what the model was trained on: ``window``, ``features``, ``symbols`` (agent.json)
        self.observation = dict(observation or {})
        #: a recurrent policy's LSTM (hidden, cell) states after the last ``act``; ``None``
        #: before the first ``act`` of an episode
        self.lstm_state: tuple[np.ndarray, ...] | None = None

    @property
    def recurrent(self) -> bool:
        """Whether the policy is recurrent (sb3-contrib's LSTM policies): it needs its state."""
        return hasattr(getattr(self.model, "policy", None), "lstm_hidden_state_shape")

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
        if path.is_dir():
            path = path / "model.zip"
        if not path.exists():
            raise MissingFileError(f"no saved model at {path}")
        meta_path = path.with_name("agent.json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        algorithm = algorithm or meta.get("algorithm")
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
            raise MissingFileError(f"no VecNormalize statistics at {vec_normalize}")
        spec = ActionSpec(**meta["action_spec"]) if "action_spec" in meta else None
        default_name = f"{algo}:{meta.get('name') or path.stem}"
        observation = {k: meta[k] for k in (*OBSERVATION_SETTINGS, "symbols") if k in meta}
        return cls(
            model,
            name or default_name,
            deterministic=deterministic,
            obs_normalizer=normalizer,
            action_spec=spec,
            observation=observation,
        )

    def reset(self, *, seed: int | None = None) -> None:
        self.lstm_state = None
        if seed is not None:
            self.model.set_random_seed(seed)

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        expected = self.model.observation_space.shape
        if observation.shape != expected:
            raise ConfigError(
                f"{self.name} was trained on observations of shape {expected}, but the env gives "
                f"{observation.shape}: use the same universe, window and features as in training"
            )
        obs = self.obs_normalizer(observation) if self.obs_normalizer else observation
        if self.recurrent:
            # episode_start zeroes the LSTM state on the first act after reset
            action, self.lstm_state = self.model.predict(
                obs,
                state=self.lstm_state,
                episode_start=np.array([self.lstm_state is None]),
                deterministic=self.deterministic,
            )
        else:
            action, _ = self.model.predict(obs, deterministic=self.deterministic)
        if self.action_spec is None:
            return np.asarray(action, dtype=np.float64)
        weights = self.action_spec.to_weights(np.asarray(action)[None, :])[0]
        if self.action_spec.rebalance_band > 0.0:
            # the weights held now: from info, else the observation's tail (assets, cash)
            held = info.get("weights", observation[-len(weights) - 1 :])
            current = np.asarray(held, dtype=np.float64)[:-1]
            weights = self.action_spec.apply_band(weights[None, :], current[None, :])[0]
            if np.array_equal(weights, current):
                return np.asarray(held, dtype=np.float64)  # hold: no order at all
        return np.append(weights, 1.0 - weights.sum())


def write_agent_metadata(folder: str | Path, **meta: Any) -> Path:
    """Write the ``agent.json`` that :meth:`SB3Agent.from_file` reads next to ``model.zip``."""
    path = Path(folder) / "agent.json"
    path.write_text(json.dumps(meta, indent=2, default=str))
    return path


def save_agent(model: Any, folder: str | Path, env: Any, *, name: str | None = None) -> Path:
    """Save a model trained in Python so that ``marketarena evaluate --agent FOLDER`` (and
    :meth:`SB3Agent.from_file`) observes the market as the model was trained to.

    Writes ``model.zip`` and an ``agent.json`` with the env's observation settings (window,
    features, ...), its symbols and its action mapping, taken from ``env``: the
    :class:`~marketarena.envs.PortfolioEnv`, ``PortfolioVectorEnv`` or
    ``SB3PortfolioVecEnv`` it was trained on (Gymnasium wrappers are looked through).
    Returns the ``model.zip`` path.
    """
    core = _env_core(env)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.zip")
    algorithm = type(model).__name__.lower()
    write_agent_metadata(
        folder,
        algorithm=algorithm,
        name=name or folder.name,
        action_spec=core.action_spec.__dict__,
        symbols=list(core.data.symbols),
        **core.settings.observation(),
    )
    return folder / "model.zip"


def _env_core(env: Any) -> Any:
    """The batched core under an env, a vector env, an SB3 adapter or Gymnasium wrappers."""
    seen = env
    for _ in range(10):
        if hasattr(seen, "core") and hasattr(seen.core, "action_spec"):
            return seen.core
        inner = getattr(seen, "venv", None) or getattr(seen, "env", None)
        if inner is None:
            break
        seen = inner
    raise ConfigError(
        f"save_agent needs the marketarena env the model was trained on, got {type(env).__name__}"
    )
