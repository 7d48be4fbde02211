"""Self-play PPO in the arena: one policy trained against its past selves and a league.

:func:`train_selfplay` trains PPO on :class:`SelfPlayVecEnv`: ``arena.n_markets``
:class:`~marketarena.envs.arena.ArenaEnv` markets of ``arena.n_agents`` agents each. The
learner's one policy trades the first ``arena.learner_seats`` seats of every market (parameter
sharing: each learner seat is one entry of the SB3 ``VecEnv``, ``n_markets x learner_seats``
in all); every other seat is an opponent drawn from the :class:`League` when its market's
episode starts.

## The league

* ``latest``: the learner as it is now (its current weights, acting deterministically);
* snapshots: the learner saved every ``league.snapshot_every`` timesteps (at the first
  rollout boundary at or after each multiple), the last ``league.max_snapshots`` kept (older
  ones are dropped from the league and their folders deleted);
* fixed opponents: agent specs (``equal_weight:21``, ``buy_and_hold``, ``random:21``,
  ``ppo:PATH``, a trained model folder, ...; see :func:`~marketarena.agents.make_agent`). LLM
  agents are refused: they read market snapshots the training loop does not build.

Each opponent seat draws its group with ``league.probabilities`` (``latest``, ``snapshots``,
``fixed``; they sum to 1), then a member of the group uniformly. A group with no members yet
(no snapshot before the first ``snapshot_every`` steps, no fixed opponents) gives its share to
the others in proportion. Every draw comes from the env's RNG, seeded from ``seed``.

## Timing and what each side sees

As in the arena: every agent decides after the close of bar ``t`` from data with index
``<= t``; all orders fill together on the next bar, at prices moved by the net flow of every
seat (``env.impact``). Opponents act on their own observation and info of bar ``t`` only: their
actions are computed before the learner's actions of the step are read.

The learner observes exactly :class:`~marketarena.envs.PortfolioEnv`'s observation (the
feature window of the historical data, its own weights and cash), not the arena's impact
factors or flow, so the saved model is an ordinary SB3 agent: ``marketarena evaluate
--agent RUN/model`` runs it in a ``PortfolioEnv``, and a tournament gives it the same
observation. Opponents get the same observation and the arena's info of their seat.

Actions: the learner's raw actions go through its action mapping (``env.action_mapping``,
``env.rebalance_band``, ...) into target weights, as :class:`~marketarena.agents.SB3Agent`
does in a backtest, and every seat's target weights go to the arena (which is built with the
``normalize`` mapping and no band). Rewards are the arena's (``arena.reward_mode``:
``absolute``, ``relative`` or ``rank``), after costs and impact.

## Tracking and output

A run lives in ``{training.output_dir}/{name}__ppo__{seed}__{time}/``::

    config.yaml      the resolved config      manifest.json   data hash, splits, seed, git SHA
    model/           the final model (model.zip, vecnormalize.pkl, agent.json)
    league/          the kept snapshots        league.json     the league at the end

MLflow (``mlflow.enabled``): params (the flattened config and the splits); tags with the data
hash; metrics at every rollout end: SB3's ``rollout/`` and ``train/``, ``selfplay/`` (episodes
finished, the learner's mean episode return and reward, its win rate) and per league member
``league/<member>/learner_return``, ``.../opponent_return``, ``.../win_rate``
(``<member>`` with characters MLflow refuses replaced by ``_``: ``equal_weight_21``), and the
same per group (``league/group_latest/...``, ``group_snapshots``, ``group_fixed``);
artifacts: ``config.yaml``, ``manifest.json``, ``league.json`` and the final model under
``model/``.

A win: the learner seats' mean episode return (final NAV over starting NAV, minus 1) above
the opponent seat's; a tie counts one half. Only the train split is used.

Determinism: a run is a function of its config (two runs with the same seed end with
identical parameters) on CPU with ``algo.torch_threads`` threads (default 1). A stopped run
does not resume: it starts again (``marketarena train --resume`` is for training runs).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from gymnasium import spaces
from pydantic import Field, ValidationError, model_validator
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from marketarena.agents.base import Agent, ExpectsObservation
from marketarena.agents.registry import make_agent
from marketarena.agents.sb3_agent import SB3Agent, write_agent_metadata
from marketarena.envs.arena import ArenaEnv
from marketarena.envs.core import ActionSpec
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError
from marketarena.envs.settings import EnvSettings
from marketarena.evaluation import tracking
from marketarena.evaluation.runner import give_market_data, snapshot_lookback
from marketarena.training.callbacks import EveryNTimesteps, MlflowOutputFormat, RichProgress
from marketarena.training.config import (
    AlgoConfig,
    Config,
    EnvConfig,
    MlflowConfig,
    TrainingConfig,
    _format_errors,
    _Strict,
    apply_overrides,
    read_config_file,
)
from marketarena.training.train import (
    _new_run_dir,
    load_universe,
    make_model,
    split_ranges,
)

__all__ = [
    "ArenaSeatsConfig",
    "League",
    "LeagueConfig",
    "LeagueMember",
    "LeagueProbabilities",
    "SelfPlayConfig",
    "SelfPlayResult",
    "SelfPlayVecEnv",
    "league_record_lines",
    "load_selfplay_config",
    "train_selfplay",
]

GroupName = Literal["latest", "snapshots", "fixed"]
GROUPS: tuple[GroupName, ...] = ("latest", "snapshots", "fixed")


# ---------------------------------------------------------------------------- config
class ArenaSeatsConfig(_Strict):
    """The markets: ``n_markets`` arenas of ``n_agents`` seats, of which the first
    ``learner_seats`` are the learner's; ``reward_mode`` as in
    :class:`~marketarena.envs.arena.ArenaEnv`."""

    n_agents: int = Field(2, ge=2)
    learner_seats: int = Field(1, ge=1)
    n_markets: int = Field(4, ge=1)
    reward_mode: Literal["absolute", "relative", "rank"] = "absolute"

    @model_validator(mode="after")
    def _an_opponent(self) -> ArenaSeatsConfig:
        if self.n_agents < self.learner_seats + 1:
            raise ValueError(
                f"n_agents ({self.n_agents}) must be at least learner_seats + 1 "
                f"({self.learner_seats + 1}): every market needs an opponent seat"
            )
        return self


class LeagueProbabilities(_Strict):
    """How an opponent seat picks its group; they sum to 1."""

    latest: float = Field(0.5, ge=0, le=1)
    snapshots: float = Field(0.3, ge=0, le=1)
    fixed: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> LeagueProbabilities:
        total = self.latest + self.snapshots + self.fixed
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"latest + snapshots + fixed must be 1, got {self.latest} + {self.snapshots} "
                f"+ {self.fixed} = {total:g}"
            )
        return self


class LeagueConfig(_Strict):
    """The opponents: ``fixed`` agent specs, learner snapshots every ``snapshot_every``
    timesteps (the last ``max_snapshots`` kept), and the group ``probabilities``."""

    fixed: tuple[str, ...] = ("equal_weight:21", "buy_and_hold")
    snapshot_every: int = Field(20_000, ge=1)
    max_snapshots: int = Field(5, ge=1)
    probabilities: LeagueProbabilities = LeagueProbabilities()

    @model_validator(mode="after")
    def _fixed_given(self) -> LeagueConfig:
        if self.probabilities.fixed > 0 and not self.fixed:
            raise ValueError(
                f"probabilities.fixed is {self.probabilities.fixed} but there are no fixed "
                "opponents: list some (e.g. [equal_weight:21]) or set probabilities.fixed to 0"
            )
        if self.probabilities.latest == 0 and self.probabilities.fixed == 0:
            raise ValueError(
                "probabilities: latest and fixed are both 0, so there is no opponent before "
                "the first snapshot"
            )
        return self


class SelfPlayTrainingConfig(_Strict):
    """Output folder and progress bar (timesteps are ``algo.total_timesteps``)."""

    output_dir: str = "runs"
    progress_bar: bool = True


class SelfPlayConfig(_Strict):
    """A whole self-play run: ``env`` (as a training config's: data, splits, every env
    setting including ``impact``), ``arena``, ``league``, ``algo`` (a training config's algo
    section, PPO; its ``n_envs`` is ``n_markets x learner_seats`` and not set here),
    ``training``, ``mlflow``, ``name`` and ``seed``."""

    name: str = "selfplay"
    seed: int = 0
    env: EnvConfig = EnvConfig()
    arena: ArenaSeatsConfig = ArenaSeatsConfig()
    league: LeagueConfig = LeagueConfig()
    algo: AlgoConfig = AlgoConfig()
    training: SelfPlayTrainingConfig = SelfPlayTrainingConfig()
    mlflow: MlflowConfig = MlflowConfig(experiment="marketarena-selfplay")

    @model_validator(mode="after")
    def _ppo(self) -> SelfPlayConfig:
        if self.algo.name != "ppo":
            raise ValueError(f"algo.name: self-play trains ppo, not {self.algo.name}")
        if "n_envs" in self.algo.model_fields_set:
            raise ValueError(
                "algo.n_envs: self-play's envs are the learner seats, arena.n_markets x "
                "arena.learner_seats; remove algo.n_envs"
            )
        return self

    @property
    def n_envs(self) -> int:
        """The learner's envs: one per learner seat of every market."""
        return self.arena.n_markets * self.arena.learner_seats

    def training_config(self) -> Config:
        """The training :class:`Config` with this run's name, seed, env, algo (``n_envs`` set)
        and MLflow section, for the pieces shared with :mod:`~marketarena.training.train`."""
        algo = self.algo.model_copy(update={"n_envs": self.n_envs})
        training = TrainingConfig(
            output_dir=self.training.output_dir,
            progress_bar=self.training.progress_bar,
            validation_report=False,
        )
        return Config(
            name=self.name,
            seed=self.seed,
            env=self.env,
            algo=algo,
            training=training,
            mlflow=self.mlflow,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_selfplay_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> SelfPlayConfig:
    """Defaults < the YAML file at ``path`` < ``key.sub=value`` overrides; errors name the
    key and the file."""
    data, source = read_config_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source += " with overrides " + " ".join(overrides)
    try:
        return SelfPlayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


# ---------------------------------------------------------------------------- league
@dataclass
class LeagueMember:
    """One opponent: ``prototype`` is copied into every seat it takes (see :meth:`seat`)."""

    name: str
    group: GroupName
    prototype: Agent
    step: int | None = None  # a snapshot's timestep
    path: Path | None = None  # a snapshot's folder

    def seat(self, seed: int, data: MarketData) -> Agent:
        """A fresh agent for one seat of one episode. An SB3 agent shares the prototype's
        model (its episode state is reset) and is reset without a seed: SB3 reseeds the
        global RNGs on a seed, and a deterministic policy needs none. Any other agent is a
        deep copy, reset with ``seed``."""
        if isinstance(self.prototype, SB3Agent):
            agent: Agent = copy.copy(self.prototype)
            agent.reset()
            return agent
        agent = copy.deepcopy(self.prototype)
        give_market_data(agent, data)
        agent.reset(seed=seed)
        return agent

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "step": self.step,
            "path": None if self.path is None else str(self.path),
        }


class League:
    """The learner's opponents: ``latest`` (set with :meth:`set_latest`), snapshots (added with
    :meth:`add_snapshot`, at most ``max_snapshots``) and ``fixed`` members."""

    def __init__(
        self,
        probabilities: LeagueProbabilities,
        fixed: Iterable[LeagueMember] = (),
        max_snapshots: int = 5,
    ) -> None:
        self.weights = {g: float(getattr(probabilities, g)) for g in GROUPS}
        self.latest: LeagueMember | None = None
        self.snapshots: list[LeagueMember] = []
        self.fixed = list(fixed)
        self.max_snapshots = max_snapshots
        self.dropped: list[LeagueMember] = []

    def set_latest(self, agent: Agent) -> None:
        self.latest = LeagueMember("latest", "latest", agent)

    def add_snapshot(self, member: LeagueMember) -> LeagueMember | None:
        """Add a snapshot; returns the oldest one when it had to make room, else None."""
        self.snapshots.append(member)
        if len(self.snapshots) > self.max_snapshots:
            old = self.snapshots.pop(0)
            self.dropped.append(old)
            return old
        return None

    def groups(self) -> dict[GroupName, list[LeagueMember]]:
        return {
            "latest": [self.latest] if self.latest is not None else [],
            "snapshots": list(self.snapshots),
            "fixed": list(self.fixed),
        }

    @property
    def members(self) -> list[LeagueMember]:
        return [m for group in self.groups().values() for m in group]

    def probabilities(self) -> dict[str, float]:
        """Each member's chance to take an opponent seat now."""
        groups = self.groups()
        total = sum(self.weights[g] for g, members in groups.items() if members)
        if total <= 0:
            raise ConfigError("the league has no member to draw an opponent from")
        return {
            m.name: self.weights[g] / total / len(members)
            for g, members in groups.items()
            for m in members
        }

    def draw(self, rng: np.random.Generator) -> LeagueMember:
        """An opponent: a group by the probabilities (non-empty groups only), then one of its
        members uniformly."""
        groups = {g: members for g, members in self.groups().items() if members}
        names = list(groups)
        p = np.array([self.weights[g] for g in names])
        if p.sum() <= 0:
            raise ConfigError("the league has no member to draw an opponent from")
        members = groups[names[int(rng.choice(len(names), p=p / p.sum()))]]
        return members[int(rng.integers(len(members)))]

    def describe(self) -> dict[str, Any]:
        return {
            "probabilities": self.weights,
            "max_snapshots": self.max_snapshots,
            "members": [m.describe() for m in self.members],
            "dropped_snapshots": [m.describe() for m in self.dropped],
        }


def fixed_members(
    specs: Sequence[str], data: MarketData, settings: EnvSettings
) -> list[LeagueMember]:
    """League members for fixed opponent specs, checked against the market they trade."""
    members = []
    for i, spec in enumerate(specs):
        where = f"league.fixed.{i} ({spec!r})"
        try:
            agent = make_agent(spec, tracking_uri=tracking.tracking_uri())
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if snapshot_lookback(agent):
            raise ConfigError(
                f"{where}: reads market snapshots (an LLM), which self-play training does not "
                "build; use baselines or trained models as fixed opponents"
            )
        if isinstance(agent, ExpectsObservation) and agent.observation:
            wanted = {
                "window": settings.window,
                "features": list(settings.features),
                "symbols": list(data.symbols),
            }
            got = {k: agent.observation[k] for k in wanted if k in agent.observation}
            got = {k: list(v) if isinstance(v, tuple | list) else v for k, v in got.items()}
            differ = sorted(k for k, v in got.items() if v != wanted[k])
            if differ:
                raise ConfigError(
                    f"{where}: trained on another observation ({', '.join(differ)}: "
                    f"{ {k: got[k] for k in differ} }, this run's: "
                    f"{ {k: wanted[k] for k in differ} })"
                )
        members.append(LeagueMember(spec, "fixed", agent))
    return members


# ---------------------------------------------------------------------------- vec env
@dataclass
class EpisodeOutcome:
    """One finished market episode: the learner seats' mean return and reward sum, and
    each opponent seat's member and return."""

    learner_return: float
    learner_reward: float
    opponents: list[tuple[str, GroupName, float]] = field(default_factory=list)


class SelfPlayVecEnv(VecEnv):
    """SB3 ``VecEnv`` over the learner seats of ``markets`` (see the module docstring).

    Entry ``m * learner_seats + s`` is seat ``agent_{s}`` of market ``m``. Auto-reset as SB3
    expects: a market whose episode ends starts a new one in the same step (new start and
    new opponents), the last observation in ``infos[i]["terminal_observation"]``. ``reset``
    seeds the env's RNG from SB3's seed (``seed()``), which draws every market's episode seed,
    every opponent and every opponent's seed. ``outcomes`` collects finished episodes
    (:class:`EpisodeOutcome`) until a reader empties it.
    """

    render_mode = None

    def __init__(
        self,
        markets: Sequence[ArenaEnv],
        learner_seats: int,
        league: League,
        learner_spec: ActionSpec,
    ) -> None:
        if not markets:
            raise ConfigError("self-play needs at least one market")
        first = markets[0]
        if first.n_agents < learner_seats + 1:
            raise ConfigError(
                f"a market of {first.n_agents} agents has no opponent seat beside "
                f"{learner_seats} learner seats"
            )
        self.markets = list(markets)
        self.learner_seats = learner_seats
        self.league = league
        self.learner_spec = learner_spec
        self.n_assets = first.core.n_assets
        self.obs_dim = first.core.obs_dim  # PortfolioEnv's observation
        self.data = first.data
        observation_space = spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float32)
        super().__init__(
            len(markets) * learner_seats, observation_space, learner_spec.space(self.n_assets)
        )
        self.rng = np.random.default_rng()
        self.learners = [f"agent_{s}" for s in range(learner_seats)]
        self.opponent_seats = [f"agent_{s}" for s in range(learner_seats, first.n_agents)]
        self.opponents: list[list[Agent]] = [[] for _ in markets]
        self.drawn: list[list[LeagueMember]] = [[] for _ in markets]
        self._obs: list[dict[str, np.ndarray]] = [{} for _ in markets]
        self._infos: list[dict[str, dict[str, Any]]] = [{} for _ in markets]
        self._start_nav = np.zeros((len(markets), first.n_agents))
        self._reward_sum = np.zeros((len(markets), learner_seats))
        self._actions: np.ndarray | None = None
        self.outcomes: list[EpisodeOutcome] = []

    # ------------------------------------------------------------------ VecEnv
    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds else None
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_seeds()
        self._reset_options()
        for m in range(len(self.markets)):
            self._start_episode(m)
        return np.concatenate([self._learner_obs(m) for m in range(len(self.markets))])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() needs actions: call step_async(actions) first")
        n_seats = self.learner_seats
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        rewards = np.empty(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for m, market in enumerate(self.markets):
            rows = slice(m * n_seats, (m + 1) * n_seats)
            # the opponents decide from their own observation of bar t, before (and without)
            # the learner's actions of this step
            actions = {
                seat: agent.act(self._obs[m][seat][: self.obs_dim], self._infos[m][seat])
                for seat, agent in zip(self.opponent_seats, self.opponents[m], strict=True)
            }
            targets = self._learner_targets(market, self._actions[rows])
            actions.update(zip(self.learners, targets, strict=True))
            o, r, _, trunc, info = market.step(actions)
            reward = np.array([r[seat] for seat in self.learners])
            rewards[rows] = reward
            self._reward_sum[m] += reward
            self._obs[m], self._infos[m] = o, info
            if not market.agents:  # the episode ended for every seat
                self._record_outcome(m)
                for s, seat in enumerate(self.learners):
                    i = m * n_seats + s
                    dones[i] = True
                    infos[i]["terminal_observation"] = o[seat][: self.obs_dim].copy()
                    infos[i]["TimeLimit.truncated"] = bool(trunc[seat])
                self._start_episode(m)
            obs[rows] = self._learner_obs(m)
        return obs, rewards, dones, infos

    def close(self) -> None:
        for market in self.markets:
            market.close()

    # ----------------------------------------------------------------- helpers
    def _start_episode(self, m: int) -> None:
        market = self.markets[m]
        obs, infos = market.reset(seed=int(self.rng.integers(2**63)))
        self.drawn[m] = [self.league.draw(self.rng) for _ in self.opponent_seats]
        self.opponents[m] = [
            member.seat(int(self.rng.integers(2**63)), market.data) for member in self.drawn[m]
        ]
        self._obs[m], self._infos[m] = obs, infos
        self._start_nav[m] = [infos[a]["nav"] for a in market.possible_agents]
        self._reward_sum[m] = 0.0

    def _learner_obs(self, m: int) -> np.ndarray:
        return np.stack([self._obs[m][seat][: self.obs_dim] for seat in self.learners])

    def _learner_targets(self, market: ArenaEnv, raw: np.ndarray) -> np.ndarray:
        """Target weights ``(learner_seats, N + 1)`` for raw actions, as
        :meth:`SB3Agent.act` makes them (the action mapping, then the no-trade band)."""
        spec = self.learner_spec
        n = self.n_assets
        weights = spec.to_weights(np.asarray(raw))
        held = market.sim.weight[: self.learner_seats]
        if spec.rebalance_band > 0.0:
            weights = spec.apply_band(weights, held[:, :n])
        targets = np.concatenate([weights, 1.0 - weights.sum(axis=1, keepdims=True)], axis=1)
        if spec.rebalance_band > 0.0:
            hold = np.all(weights == held[:, :n], axis=1)
            targets[hold] = held[hold]  # no order at all
        return targets

    def _record_outcome(self, m: int) -> None:
        market = self.markets[m]
        info = self._infos[m]
        nav = np.array([info[a]["nav"] for a in market.possible_agents])
        returns = nav / self._start_nav[m] - 1.0
        n_seats = self.learner_seats
        outcome = EpisodeOutcome(
            learner_return=float(returns[:n_seats].mean()),
            learner_reward=float(self._reward_sum[m].mean()),
        )
        for k, member in enumerate(self.drawn[m]):
            outcome.opponents.append((member.name, member.group, float(returns[n_seats + k])))
        self.outcomes.append(outcome)

    # attribute access: one object stands in for all sub-envs
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        result = getattr(self, method_name)(*method_args, **kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


# -------------------------------------------------------------------------- callbacks
_MLFLOW_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_name(member: str) -> str:
    """A league member's name as MLflow accepts it in a metric key."""
    return _MLFLOW_NAME.sub("_", member)


def summarize(outcomes: Sequence[EpisodeOutcome]) -> dict[str, dict[str, float]]:
    """Per opponent member (and per group, as ``group:<name>``): episodes, the learner's and
    the opponent's mean return, and the learner's win rate (a tie counts one half)."""
    rows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for outcome in outcomes:
        for name, group, opponent_return in outcome.opponents:
            pair = (outcome.learner_return, opponent_return)
            rows[name].append(pair)
            rows[f"group:{group}"].append(pair)
    out = {}
    for name, pairs in rows.items():
        arr = np.array(pairs)
        wins = np.where(arr[:, 0] > arr[:, 1], 1.0, np.where(arr[:, 0] == arr[:, 1], 0.5, 0.0))
        out[name] = {
            "episodes": float(len(arr)),
            "learner_return": float(arr[:, 0].mean()),
            "opponent_return": float(arr[:, 1].mean()),
            "win_rate": float(wins.mean()),
        }
    return out


class LeagueCallback(BaseCallback):
    """Logs the finished episodes at every rollout end (MLflow, when a run is active) and keeps
    them all in ``history``."""

    def __init__(self, venv: SelfPlayVecEnv) -> None:
        super().__init__()
        self.venv = venv
        self.history: list[EpisodeOutcome] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        import mlflow

        finished, self.venv.outcomes = self.venv.outcomes, []
        self.history.extend(finished)
        if not finished or not mlflow.active_run():
            return
        metrics = {
            "selfplay/episodes": float(len(self.history)),
            "selfplay/learner_return": float(np.mean([o.learner_return for o in finished])),
            "selfplay/episode_reward": float(np.mean([o.learner_reward for o in finished])),
            "selfplay/league_size": float(len(self.venv.league.members)),
        }
        stats = summarize(finished)
        every = [s for name, s in stats.items() if name.startswith("group:")]
        n = sum(s["episodes"] for s in every)
        metrics["selfplay/win_rate"] = sum(s["win_rate"] * s["episodes"] for s in every) / n
        for name, s in stats.items():
            key = metric_name(name.replace("group:", "group_"))
            for stat in ("learner_return", "opponent_return", "win_rate"):
                metrics[f"league/{key}/{stat}"] = s[stat]
        mlflow.log_metrics(metrics, step=int(self.num_timesteps))


# ---------------------------------------------------------------------------- training
@dataclass
class SelfPlayResult:
    """What a self-play run produced: the final model's folder and file, the MLflow run,
    the timesteps, the league at the end and the learner's record against each member."""

    run_dir: Path
    model_dir: Path
    model_path: Path
    run_id: str | None
    timesteps: int
    league: dict[str, Any]
    record: dict[str, dict[str, float]]


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _SelfPlayRun:
    """One run's pieces, built in :func:`train_selfplay` (top to bottom)."""

    def __init__(self, config: SelfPlayConfig) -> None:
        from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

        self.config = c = config
        self.tc = c.training_config()
        self.data = load_universe(self.tc)
        self.ranges = split_ranges(self.tc, self.data)
        start, end = self.ranges["train"]
        user = c.env.to_settings()
        self.spec = ActionSpec.from_settings(user)
        # every seat gives the arena target weights (the learner's through its own mapping)
        settings = user.replace(
            start=start, end=end, action_mapping="normalize", rebalance_band=0.0, relative_band=0.0
        )
        markets = [
            ArenaEnv(c.arena.n_agents, self.data, settings, reward_mode=c.arena.reward_mode)
            for _ in range(c.arena.n_markets)
        ]
        self.league = League(
            c.league.probabilities,
            fixed_members(c.league.fixed, self.data, user),
            c.league.max_snapshots,
        )
        self.venv = SelfPlayVecEnv(markets, c.arena.learner_seats, self.league, self.spec)
        env: Any = VecMonitor(self.venv)
        norm = c.algo.normalize
        if norm.observations or norm.rewards:
            env = VecNormalize(
                env,
                norm_obs=norm.observations,
                norm_reward=norm.rewards,
                clip_obs=norm.clip_obs,
                gamma=float(c.algo.hyperparameters.get("gamma", 0.99)),
            )
        self.env = env
        self.model = make_model(self.tc, env)
        normalizer = env.normalize_obs if isinstance(env, VecNormalize) else None
        self.league.set_latest(
            SB3Agent(self.model, "latest", obs_normalizer=normalizer, action_spec=self.spec)
        )
        self.run_dir: Path = Path()

    def save_model(self, folder: Path) -> Path:
        """model.zip, vecnormalize.pkl (if used) and agent.json into ``folder``."""
        from stable_baselines3.common.vec_env import VecNormalize

        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "model.zip")
        if isinstance(self.env, VecNormalize):
            self.env.save(str(folder / "vecnormalize.pkl"))
        write_agent_metadata(
            folder,
            algorithm="ppo",
            name=self.config.name,
            action_spec=self.spec.__dict__,
            symbols=list(self.data.symbols),
            **self.config.env.to_settings().observation(),
        )
        return folder / "model.zip"

    def snapshot(self, step: int) -> bool:
        """Save the learner into the league (and drop the oldest snapshot beyond the cap)."""
        folder = self.run_dir / "league" / f"snapshot_{step:012d}"
        self.save_model(folder)
        agent = SB3Agent.from_file(folder, "ppo", name=f"snapshot_{step}")
        dropped = self.league.add_snapshot(
            LeagueMember(f"snapshot_{step}", "snapshots", agent, step=step, path=folder)
        )
        if dropped is not None and dropped.path is not None:
            shutil.rmtree(dropped.path, ignore_errors=True)
        self.write_league()
        return True

    def write_league(self) -> Path:
        path = self.run_dir / "league.json"
        path.write_text(json.dumps(self.league.describe(), indent=2))
        return path

    def write_run_files(self) -> None:
        c = self.config
        (self.run_dir / "config.yaml").write_text(c.to_yaml())
        manifest = {
            "data": self.data.manifest(),
            "splits": {k: {"start": a, "end": b} for k, (a, b) in self.ranges.items()},
            "seed": c.seed,
            "algorithm": "ppo",
            "kind": "selfplay",
            "git_sha": tracking.git_sha(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (self.run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))

    def learn(self) -> LeagueCallback:
        from stable_baselines3.common.logger import Logger

        c = self.config
        if c.mlflow.enabled:
            self.model.set_logger(Logger(folder=None, output_formats=[MlflowOutputFormat()]))
        league_cb = LeagueCallback(self.venv)
        callbacks: list[Any] = [
            EveryNTimesteps(c.league.snapshot_every, self.snapshot, between_updates=True),
            league_cb,
        ]
        progress = None
        if c.training.progress_bar:
            chunk = self.model.n_envs * self.model.n_steps
            total = -(-c.algo.total_timesteps // chunk) * chunk
            progress = RichProgress(total, 0, f"self-play ppo {c.name}")
            callbacks.append(progress)
        try:
            self.model.learn(c.algo.total_timesteps, callback=callbacks)
        finally:
            if progress is not None:
                progress.close()
        return league_cb

    def finish(self, league_cb: LeagueCallback) -> SelfPlayResult:
        import mlflow

        model_path = self.save_model(self.run_dir / "model")
        league_file = self.write_league()
        active = mlflow.active_run()
        if active is not None:
            for name in ("config.yaml", "manifest.json"):
                mlflow.log_artifact(str(self.run_dir / name))
            mlflow.log_artifact(str(league_file))
            mlflow.log_artifacts(str(model_path.parent), artifact_path="model")
            run_id = active.info.run_id
        else:
            run_id = None
        return SelfPlayResult(
            run_dir=self.run_dir,
            model_dir=model_path.parent,
            model_path=model_path,
            run_id=run_id,
            timesteps=int(self.model.num_timesteps),
            league=self.league.describe(),
            record=summarize(league_cb.history),
        )


def train_selfplay(config: SelfPlayConfig) -> SelfPlayResult:
    """Train the learner by self-play (see the module docstring); returns where it went.

    The markets, league and model are built before the run folder is made, so a config that
    fails (a bad opponent spec, data that does not fit) leaves nothing behind.
    """
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(config.seed)
    with _torch_threads(config.algo.torch_threads):
        run = _SelfPlayRun(config)
        run.run_dir = _new_run_dir(run.tc)
        run.write_run_files()
        run.write_league()
        if not config.mlflow.enabled:
            return run.finish(run.learn())
        import mlflow

        tags = {
            "kind": "selfplay",
            "algo": "ppo",
            "env_id": ArenaEnv.metadata["name"],
            "data": run.data.name,
            "data_sha256": run.data.content_hash(),
            "git_sha": tracking.git_sha(),
            "seed": str(config.seed),
        }
        with tracking.mlflow_run(config.mlflow.experiment, run.run_dir.name, tags):
            mlflow.log_params(tracking.flatten(config.to_dict()))
            for split, (a, b) in run.ranges.items():
                mlflow.log_params({f"split.{split}.start": a, f"split.{split}.end": b})
            return run.finish(run.learn())


def league_record_lines(record: Mapping[str, Mapping[str, float]]) -> list[str]:
    """One line per league member (groups last): episodes, returns, win rate."""
    names = sorted(record, key=lambda n: (n.startswith("group:"), n))
    return [
        f"vs {name}: {int(record[name]['episodes'])} episodes, learner "
        f"{record[name]['learner_return']:+.2%} vs {record[name]['opponent_return']:+.2%}, "
        f"win rate {record[name]['win_rate']:.2f}"
        for name in names
    ]
