"""Search spaces per algorithm, in code (rl-baselines3-zoo style).

Each space maps a parameter name to a distribution, sampled in a transformed space where that
helps (``one_minus_gamma`` on a log scale, ``n_steps`` as a power of two), then converted into
config overrides. The readable values (``gamma``, ``n_steps``, ``net_arch``) are what a trial
records. Environment parameters (``window``, ``reward``) are tunable too.

A config's ``tuning.search`` narrows or fixes any of these by name (see
:class:`~marketarena.training.config.TuningConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marketarena.envs.errors import ConfigError

NET_ARCH = {"tiny": [32], "small": [64, 64], "medium": [256, 256]}


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...]


Distribution = Float | Int | Categorical

ENV_SPACE: dict[str, Distribution] = {
    "window": Categorical((8, 16, 32, 64)),
    "reward": Categorical(("log_return", "differential_sharpe", "drawdown_penalized")),
}
_COMMON: dict[str, Distribution] = {
    "learning_rate": Float(1e-5, 3e-3, log=True),
    "one_minus_gamma": Float(1e-3, 0.1, log=True),
    "net_arch": Categorical(tuple(NET_ARCH)),
    "activation": Categorical(("tanh", "relu")),
}
_PPO: dict[str, Distribution] = {
    **_COMMON,
    "n_steps_exp": Int(5, 10),
    "batch_size_exp": Int(5, 9),
    "n_epochs": Categorical((1, 5, 10, 20)),
    "ent_coef": Float(1e-8, 0.1, log=True),
    "gae_lambda": Categorical((0.8, 0.9, 0.95, 0.98, 1.0)),
    "clip_range": Categorical((0.1, 0.2, 0.3)),
    **ENV_SPACE,
}
SPACES: dict[str, dict[str, Distribution]] = {
    "ppo": dict(_PPO),
    # PPO's hyperparameters; its batch_size counts steps, taken as whole LSTM sequences
    "recurrent_ppo": dict(_PPO),
    "a2c": {
        **_COMMON,
        "n_steps_exp": Int(3, 8),
        "ent_coef": Float(1e-8, 0.1, log=True),
        "gae_lambda": Categorical((0.8, 0.9, 0.95, 1.0)),
        **ENV_SPACE,
    },
    "sac": {
        **_COMMON,
        "batch_size_exp": Int(6, 9),
        "tau": Categorical((0.005, 0.01, 0.02)),
        "train_freq": Categorical((1, 4, 16)),
        "learning_starts": Categorical((100, 1000)),
        **ENV_SPACE,
    },
    "td3": {
        **_COMMON,
        "batch_size_exp": Int(6, 9),
        "tau": Categorical((0.005, 0.01, 0.02)),
        "train_freq": Categorical((1, 4, 16)),
        "learning_starts": Categorical((100, 1000)),
        **ENV_SPACE,
    },
}


def space_for(algorithm: str, search: Mapping[str, Any]) -> dict[str, Distribution | Any]:
    """The algorithm's space with ``search`` applied: a fixed value, or a narrowed range."""
    base = dict(SPACES[algorithm])
    unknown = sorted(set(search) - set(base))
    if unknown:
        raise ConfigError(
            f"tuning.search names unknown parameter(s) {unknown} for {algorithm}; "
            f"the space has {sorted(base)}"
        )
    for name, narrowed in search.items():
        if not hasattr(narrowed, "choices"):  # a plain value fixes the parameter
            base[name] = narrowed
            continue
        if narrowed.choices is not None:
            base[name] = Categorical(tuple(narrowed.choices))
        else:
            original = base[name]
            kind = Int if isinstance(original, Int) else Float
            if isinstance(original, Categorical):  # a range of numbers of the same kind
                numbers = [c for c in original.choices if type(c) in (int, float)]
                if len(numbers) != len(original.choices):
                    raise ConfigError(
                        f"tuning.search.{name}: {name} takes one of {list(original.choices)}; "
                        "narrow it with choices, not low/high"
                    )
                kind = Int if all(type(c) is int for c in numbers) else Float
            log = narrowed.log if narrowed.log is not None else getattr(original, "log", False)
            low, high = narrowed.low, narrowed.high
            base[name] = kind(int(low), int(high), log) if kind is Int else kind(low, high, log)
    if not any(isinstance(d, Float | Int | Categorical) for d in base.values()):
        raise ConfigError(f"the search space for {algorithm} is empty: every parameter is fixed")
    return base


def sample(trial: Any, space: Mapping[str, Distribution | Any]) -> dict[str, Any]:
    """Sample every distribution with ``trial``; fixed values pass through."""
    out = {}
    for name, dist in space.items():
        if isinstance(dist, Float):
            out[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, Int):
            out[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, Categorical):
            out[name] = trial.suggest_categorical(name, list(dist.choices))
        else:
            out[name] = dist
    return out


def fixed_values(space: Mapping[str, Distribution | Any]) -> dict[str, Any]:
    """The parameters that ``tuning.search`` fixed: not sampled, so not in a trial's params."""
    return {k: v for k, v in space.items() if not isinstance(v, Float | Int | Categorical)}


def to_overrides(algorithm: str, params: Mapping[str, Any], n_envs: int) -> dict[str, Any]:
    """Config overrides (``{"algo": ..., "env": ...}``) from sampled parameters."""
    hp: dict[str, Any] = {}
    p = dict(params)
    if "learning_rate" in p:
        hp["learning_rate"] = p["learning_rate"]
    if "one_minus_gamma" in p:
        hp["gamma"] = round(1.0 - p["one_minus_gamma"], 6)
    for name in (
        "n_epochs",
        "ent_coef",
        "gae_lambda",
        "clip_range",
        "tau",
        "train_freq",
        "learning_starts",
    ):
        if name in p:
            hp[name] = p[name]
    if "n_steps_exp" in p:
        hp["n_steps"] = 2 ** int(p["n_steps_exp"])
    if "batch_size_exp" in p:
        batch = 2 ** int(p["batch_size_exp"])
        if algorithm in ("ppo", "recurrent_ppo"):  # a minibatch cannot exceed the rollout
            batch = min(batch, hp.get("n_steps", 2048) * n_envs)
        hp["batch_size"] = batch
    algo: dict[str, Any] = {"hyperparameters": hp}
    if "net_arch" in p:
        algo["net_arch"] = (
            NET_ARCH[p["net_arch"]] if isinstance(p["net_arch"], str) else p["net_arch"]
        )
    if "activation" in p:
        algo["activation"] = p["activation"]
    env = {k: p[k] for k in ("window", "reward") if k in p}
    return {"algo": algo, "env": env}
