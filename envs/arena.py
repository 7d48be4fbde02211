"""The arena: N agents trade one market at once, and their net order flow moves prices.

:class:`ArenaEnv` is a PettingZoo ``ParallelEnv``. Every agent holds its own portfolio over
the same universe; the agents are the batch axis of one
:class:`~marketarena.envs.core.PortfolioCore` (the code :class:`PortfolioEnv` runs), whose
simulator is an :class:`ImpactSimulator`: the only difference from a plain backtest is the
price at which orders fill and at which books are marked.

## Timing (as in ``PortfolioEnv``)

* Every agent decides after the close of bar ``t``, from data with index ``<= t``, public
  prices moved by the permanent impact of flow up to bar ``t``, and (optionally) the
  aggregate net flow of bar ``t`` -- never another agent's decision at ``t``.
* All orders of step ``t`` fill together on the fill bar (open of ``t+1`` by default,
  ``rules.execution``), at one price per asset moved by their net flow, and the books are
  marked at the close of ``t+1`` after permanent impact.

## Impact model (Almgren–Chriss style, point in time)

Its coefficients are ``settings.impact`` (:class:`ImpactSettings`: ``eta``, ``beta``,
``gamma``, ``window``, ``noise_scale``; defaults 0, 0.5, 0, 20, 0), given like any env
setting: ``ArenaEnv(..., impact={"eta": 0.5})``, a config's ``env.impact`` or
``--set env.impact.eta=0.5``. For asset ``j`` at decision ``t``:

* ``sigma_j``: the standard deviation (ddof 0) of the historical log close-to-close returns
  of the last ``impact.window`` bars ending at ``t`` (fewer at the start of the data; 0 at
  ``t = 0``); ``V_j``: the mean historical volume of the last ``impact.window`` bars ending
  at ``t``. Both use rows ``<= t`` only.
* ``q_j``: the net order flow in shares: the sum over agents of buys minus sells as sized at
  the close of ``t`` (after the lot and volume-cap limits, before buys are scaled to the cash
  left, which depends on the fill price), plus the noise traders' flow.
* Temporary impact: every order on asset ``j`` fills at
  ``p_fill = p_ref * exp(sign(q_j) * eta * sigma_j * |q_j / V_j| ** beta)``, where ``p_ref``
  is the historical fill-bar price times the permanent factor ``F_j`` accumulated so far.
  Commission and slippage (``rules``) apply on top, as in ``PortfolioEnv``.
* Permanent impact: after the fill, ``F_j <- F_j * exp(gamma * sigma_j * q_j / V_j)``; every
  later price of ``j`` (marks, fills, the public prices in observations) is the historical
  price times ``F_j``. ``F`` is 1 at reset.

``eta = gamma = 0`` (the default) is no impact: with one agent the arena is then
``PortfolioEnv`` step for step (tested). Noise traders (``noise_scale`` > 0) add a flow of
``noise_scale * V_j * z`` shares per asset and step, ``z`` standard normal from the env's
RNG (``reset(seed=...)``). ``PortfolioEnv`` itself refuses impact settings: one agent whose
own trades move prices is ``ArenaEnv(n_agents=1, impact=...)``.

## Rewards

``reward_mode``: ``"absolute"`` (default): each agent's own reward (``settings.reward``,
default the log return of its NAV, after costs and impact); ``"relative"``: its reward minus
the mean reward of the other agents; ``"rank"``: ``(number of agents it beat - number that
beat it) / (n_agents - 1)`` on the step's rewards, in ``[-1, 1]``. ``relative`` and ``rank``
need at least two agents.

## Observations

Each agent's observation is its ``PortfolioEnv`` observation (the feature window of rows
``<= t``, its own weights and cash fraction), then the permanent impact factors ``F`` (``N``:
public price over historical price), then, with ``observe_flow=True``, the aggregate net
flow of the last bar over trailing volume, ``q_j / V_j`` (``N``; 0 before the first step).

## Episodes

One episode for all agents: a start drawn by the env's RNG (or the first eligible date, or
``options={"start": ...}``), truncation when the date range or ``episode_length`` ends.
When an agent's NAV hits the ruin level (``rules.ruin_fraction``) the episode ends for all:
that agent is terminated, the others truncated (a market with a ruined agent that keeps its
book but cannot act is not modelled).

## Saving and restoring

:meth:`ArenaEnv.get_state` returns everything that changes from step to step (the agents'
portfolios, the episode, reward and risk state, the impact factors, the last flow, the noise
RNG, the live agents, the env's RNG) as plain values and numpy arrays (the run store's codec
writes them as JSON); :meth:`ArenaEnv.set_state` on a fresh arena built with the same data,
agent count and settings continues the episode bit for bit (tested).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from marketarena.envs.core import PortfolioCore
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.settings import EnvSettings, ImpactSettings
from marketarena.envs.simulator import Simulator, StepResult, TradingRules

__all__ = ["REWARD_MODES", "ArenaEnv", "ImpactModel", "ImpactSettings", "ImpactSimulator"]

RewardMode = Literal["absolute", "relative", "rank"]
REWARD_MODES: tuple[str, ...] = ("absolute", "relative", "rank")


class ImpactModel:
    """Temporary and permanent price impact of net order flow (see the module docstring).

    Args:
        data: the market; needs volume when ``settings.active`` (eta or gamma > 0).
        settings: :class:`ImpactSettings` (eta, beta, gamma, window; checked there).
    """

    def __init__(self, data: MarketData, settings: ImpactSettings) -> None:
        self.settings = settings
        self.eta, self.beta, self.gamma = settings.eta, settings.beta, settings.gamma
        self.window = window = settings.window
        self.active = settings.active
        n_t, n = data.close.shape
        if data.volume is None:
            if self.active:
                raise ConfigError(
                    f"{data.name} has no volume: the impact model (impact.eta, impact.gamma) "
                    "needs it; use data with volume or zero impact"
                )
            self.sigma = np.zeros((n_t, n))
            self.volume = np.ones((n_t, n))
            self._coefficients()
            return
        self.sigma, self.volume = self.trailing(data.close, data.volume, window)
        if self.active and np.any(self.volume <= 0):
            t, j = np.argwhere(self.volume <= 0)[0]
            raise ConfigError(
                f"{data.name}: trailing volume of {data.symbols[j]} is 0 on {data.dates[t]}; "
                "the impact model divides by it"
            )
        self._coefficients()

    def _coefficients(self) -> None:
        """The per-bar coefficients a step multiplies by, computed once."""
        self._eta_sigma = self.eta * self.sigma
        self._gamma_sigma = self.gamma * self.sigma

    @staticmethod
    def trailing(
        close: np.ndarray, volume: np.ndarray, window: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row ``t``: the volatility of the log returns and the mean volume of the ``window``
        bars ending at ``t`` (fewer at the start); rows ``<= t`` only."""
        n_t, n = close.shape
        log_ret = np.zeros((n_t, n))
        log_ret[1:] = np.diff(np.log(close), axis=0)
        sigma = np.zeros((n_t, n))
        mean_volume = np.zeros((n_t, n))
        for t in range(n_t):
            lo = max(0, t - window + 1)
            mean_volume[t] = volume[lo : t + 1].mean(axis=0)
            rets = log_ret[max(1, lo) : t + 1]
            if len(rets):
                sigma[t] = rets.std(axis=0)
        return sigma, mean_volume

    def temporary(self, t: int, flow: np.ndarray) -> np.ndarray:
        """Log shift of the fill price for net ``flow`` ``(N,)`` at decision ``t``:
        ``sign(x) * eta * sigma * |x| ** beta`` with ``x = flow / V``."""
        x = flow / self.volume[t]
        return np.copysign(self._eta_sigma[t] * np.abs(x) ** self.beta, x)

    def permanent(self, t: int, flow: np.ndarray) -> np.ndarray:
        """Log shift of every later price for net ``flow`` ``(N,)`` at decision ``t``:
        ``gamma * sigma * flow / V``."""
        return self._gamma_sigma[t] * flow / self.volume[t]


class ImpactSimulator(Simulator):
    """A :class:`Simulator` whose envs are agents in one market: they step together (one
    decision index), and their net flow moves the fill and mark prices (:class:`ImpactModel`).

    It is built by :class:`PortfolioCore` (``simulator=functools.partial(ImpactSimulator,
    impact=settings.impact)``) with the core's data, rules, batch and price dtype.

    ``factor`` ``(N,)``: the permanent impact factors; ``last_flow`` ``(N,)``: the last step's
    net flow in shares (noise included); ``last_impact_cost`` ``(n_envs,)``: what each agent
    paid (positive) or gained through the temporary impact of its fills, against ``p_ref``.
    """

    def __init__(
        self,
        data: MarketData,
        rules: TradingRules | None,
        n_envs: int,
        *,
        impact: ImpactSettings,
        record: bool = False,
        dtype: type = np.float64,
    ) -> None:
        super().__init__(data, rules, n_envs, record=record, dtype=dtype)
        self.impact = ImpactModel(data, impact)
        self.noise_scale = impact.noise_scale
        self._noise_volume = self.noise_scale * self.impact.volume  # a step's noise: this * z
        self.rng = np.random.default_rng()
        self.factor = np.ones(self.n_assets)
        self.last_flow = np.zeros(self.n_assets)
        self.last_fill = np.zeros((n_envs, self.n_assets))
        self.last_impact_cost = np.zeros(n_envs)

    def reset(self, start: int | np.ndarray, env_ids: np.ndarray | None = None) -> None:
        if env_ids is not None:
            raise ValueError("the agents of an arena share one episode: reset them together")
        super().reset(start)
        self.factor = np.ones(self.n_assets)
        self.last_flow = np.zeros(self.n_assets)
        self.last_impact_cost = np.zeros(self.n_envs)

    def market_state(self) -> dict[str, Any]:
        """What the market carries from step to step (copies): the permanent factors, the
        last net flow and the noise traders' RNG state."""
        return {
            "factor": self.factor.copy(),
            "last_flow": self.last_flow.copy(),
            "noise_rng": copy.deepcopy(self.rng.bit_generator.state),
        }

    def set_market_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`market_state` after every agent's portfolio
        (:meth:`Simulator.set_state`): the marks become the public prices again."""
        n = self.n_assets
        factor = np.array(state["factor"], dtype=np.float64)
        last_flow = np.array(state["last_flow"], dtype=np.float64)
        for name, value in (("factor", factor), ("last_flow", last_flow)):
            if value.shape != (n,):
                raise DataError(
                    f"saved market state: {name} has shape {value.shape}; this arena has "
                    f"{n} assets ({self.data.name})"
                )
        self.factor, self.last_flow = factor, last_flow
        self.rng = _generator(state["noise_rng"])
        self.mark = self._close[self.t] * factor  # as a step marks: history times F

    def _execute(self, buys: np.ndarray, sells: np.ndarray) -> StepResult:
        """As :meth:`Simulator._execute`, at prices moved by the agents' net flow."""
        fill, mark = self._prices()
        if self._limits:
            self._limit_orders(buys, sells)
        t = int(self.t[0])
        flow = (buys - sells).sum(axis=0)
        if self.noise_scale > 0:
            flow += self._noise_volume[t] * self.rng.standard_normal(self.n_assets)
        moved = None  # fill minus reference price, per asset
        if self.impact.active:  # the agents share one date: one row of prices for all
            ref = fill[0] * self.factor
            fill_row = ref * np.exp(self.impact.temporary(t, flow))
            moved = fill_row - ref
            self.factor = self.factor * np.exp(self.impact.permanent(t, flow))
            fill = np.empty(fill.shape)
            fill[:] = fill_row
            mark = mark * self.factor
        # else F stays 1: fills and marks are the history's, as in a plain Simulator
        self.last_flow = flow
        self.last_fill = fill
        sell_value, sell_fee, cash, available = self._sell(sells, fill, buys)
        buy_value, buy_fee = self._buy(buys, fill, cash, available)
        # buys are final (scaled to the cash) only now
        self.last_impact_cost = (
            np.zeros(self.n_envs) if moved is None else np.vecdot(buys - sells, moved)
        )
        res = self._charge(sell_value, buy_value, sell_fee, buy_fee)
        self._book(buys, sells, mark, cash, res)
        if self.record:
            self._record(buys, sells, fill)
        return res


class ArenaEnv(ParallelEnv):
    """N agents, one market, price impact; see the module docstring for the full spec.

    Args:
        n_agents: number of agents (>= 1; ``"relative"`` and ``"rank"`` rewards need 2).
        data: :class:`MarketData`, a bundled dataset name or a file path.
        settings, overrides: an :class:`EnvSettings` and any of its fields as keywords, as
            for ``PortfolioEnv`` (every agent trades under the same settings); the impact
            model and the noise traders are its ``impact`` (:class:`ImpactSettings` or a
            dict of its fields, e.g. ``impact={"eta": 0.5, "gamma": 0.1,
            "noise_scale": 0.05}``; defaults: no impact, no noise).
        reward_mode: ``"absolute"`` (default), ``"relative"`` or ``"rank"``.
        observe_flow: append the last bar's aggregate net flow over trailing volume to each
            observation (default False).
    """

    metadata: ClassVar[dict[str, Any]] = {"name": "marketarena_arena_v0", "render_modes": []}

    def __init__(
        self,
        n_agents: int = 2,
        data: MarketData | str = "sp500_20",
        settings: EnvSettings | None = None,
        *,
        reward_mode: str = "absolute",
        observe_flow: bool = False,
        **overrides: Any,
    ) -> None:
        if not isinstance(n_agents, int | np.integer) or n_agents < 1:
            raise ConfigError(f"n_agents must be an integer >= 1, got {n_agents!r}")
        if reward_mode not in REWARD_MODES:
            raise ConfigError(f"reward_mode={reward_mode!r}: choose one of {list(REWARD_MODES)}")
        if reward_mode != "absolute" and n_agents < 2:
            raise ConfigError(
                f"reward_mode={reward_mode!r} compares agents: it needs n_agents >= 2, "
                f"got {n_agents}"
            )
        resolved = EnvSettings.resolve(settings, overrides)
        build = functools.partial(ImpactSimulator, impact=resolved.impact)
        self.core = core = PortfolioCore(data, n_agents, resolved, simulator=build)
        self.settings = core.settings
        self.data = core.data
        sim = core.sim
        assert isinstance(sim, ImpactSimulator)
        self.sim = sim
        self.impact = sim.impact
        self.reward_mode = reward_mode
        self.observe_flow = observe_flow
        self.n_agents = n_agents
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._agent_set = set(self.possible_agents)
        n = core.n_assets
        self.obs_dim = core.obs_dim + n + (n if observe_flow else 0)
        self._obs_space = spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float32)
        self._action_space = core.action_spec.space(n)
        self._np_random, _ = seeding.np_random()

    def observation_space(self, agent: str) -> spaces.Space:
        """Every agent's: ``Box(-inf, inf, (obs_dim,), float32)`` (one object for all)."""
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        """Every agent's: ``PortfolioEnv``'s action space (one object for all)."""
        return self._action_space

    # ------------------------------------------------------------------ API
    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """A fresh episode for every agent (all cash). ``seed`` seeds the start draw and the
        noise traders; ``options={"start": "YYYY-MM-DD"}`` fixes the start date."""
        if seed is not None:
            self._np_random, _ = seeding.np_random(seed)
        core = self.core
        if options and "start" in options:
            t0 = core.start_index(options["start"])
        elif self.settings.random_start:
            t0 = core.draw_start(self._np_random)
        else:
            t0 = core.first_decision
        if seed is not None:  # drawn after the start, which is then PortfolioEnv's draw
            self.sim.rng = np.random.default_rng(self._np_random.integers(2**63))
        core.reset_envs(np.full(self.n_agents, t0))
        self.agents = list(self.possible_agents)
        weights = self.sim.weight
        return self._observations(weights), self._infos(None, weights)

    def step(
        self, actions: dict[str, np.ndarray]
    ) -> tuple[
        dict[str, np.ndarray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """One bar for every agent. ``actions``: one action per live agent (as in
        ``PortfolioEnv``). The agents live and end together: every dict returned has every
        agent, and when the episode ends ``agents`` becomes empty."""
        agents = self.agents
        if not agents:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        if not isinstance(actions, Mapping):
            raise TypeError(
                f"actions must be a dict of agent name to action, got {type(actions).__name__}"
            )
        if actions.keys() != self._agent_set:
            missing = [a for a in agents if a not in actions]
            unknown = [a for a in actions if a not in self._index]
            raise ValueError(
                f"actions must hold one action per live agent {agents}: "
                f"missing {missing}, unknown or finished {unknown}"
            )
        core = self.core
        try:  # one array, rows in agent order; float64 as a PortfolioEnv's batch of one
            batch = np.array([actions[a] for a in agents], dtype=np.float64)
        except (ValueError, TypeError):
            batch = None
        if batch is None or batch.shape != (self.n_agents, core.n_assets + 1):
            batch = self._checked_batch(actions)
        result, reward, terminated, truncated = core.step(batch)
        reward = self._shaped(reward)
        weights = self.sim.weight
        obs = self._observations(weights)
        infos = self._infos(result, weights)
        ended = bool(terminated.any() or truncated.any())
        terms = terminated.tolist()
        rewards = dict(zip(agents, reward.tolist(), strict=True))
        truncs = dict(zip(agents, [ended and not x for x in terms], strict=True))
        if ended:
            self.agents = []
        return obs, rewards, dict(zip(agents, terms, strict=True)), truncs, infos

    def _checked_batch(self, actions: Mapping[str, Any]) -> np.ndarray:
        """The actions as one array, agent by agent, naming the first bad one (the slow path
        of ``step``, after the one-call conversion failed)."""
        n = self.core.n_assets
        batch = np.empty((self.n_agents, n + 1))
        for i, agent in enumerate(self.agents):
            try:
                a = np.asarray(actions[agent], dtype=np.float64)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{agent}'s action is not an array of numbers: {exc}") from None
            if a.shape != (n + 1,):
                raise ValueError(
                    f"{agent}'s action has shape {a.shape}; expected ({n + 1},): one weight "
                    f"per asset ({n}) and one for cash"
                )
            batch[i] = a
        return batch

    # ------------------------------------------------------------- helpers
    def _shaped(self, reward: np.ndarray) -> np.ndarray:
        if self.reward_mode == "absolute":
            return reward
        if self.reward_mode == "relative":
            others = (reward.sum() - reward) / (self.n_agents - 1)
            return reward - others
        beat = (reward[:, None] > reward[None, :]).sum(axis=1)
        beaten = (reward[:, None] < reward[None, :]).sum(axis=1)
        return (beat - beaten) / (self.n_agents - 1)

    def _observations(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every agent's observation (rows of one new array); ``weights``: ``sim.weight``.
        The agents share the decision index, so the feature window is one row, broadcast."""
        core, sim = self.core, self.sim
        t = int(sim.t[0])
        ws, d, n = core.window_size, core.obs_dim, core.n_assets
        obs = np.empty((self.n_agents, self.obs_dim), dtype=np.float32)
        obs[:, :ws] = core.windows[t - (core.window - 1)]
        obs[:, ws:d] = weights
        obs[:, d : d + n] = sim.factor
        if self.observe_flow:
            obs[:, d + n :] = sim.last_flow / self.impact.volume[max(t - 1, 0)]
        return dict(zip(self.possible_agents, obs, strict=True))

    def _infos(self, result: StepResult | None, weights: np.ndarray) -> dict[str, dict[str, Any]]:
        sim = self.sim
        t = int(sim.t[0])
        date, step = self.data.dates[t], t - int(self.core.episode_start[0])
        prices = sim.mark.copy()  # public: after permanent impact
        zeros = [0.0] * self.n_agents
        turnover = zeros if result is None else result.turnover.tolist()
        costs = zeros if result is None else result.costs.tolist()
        impact = zeros if result is None else sim.last_impact_cost.tolist()
        rows = zip(
            self.possible_agents,
            sim.nav.tolist(),
            sim.cash.tolist(),
            weights,
            prices,
            turnover,
            costs,
            impact,
            strict=True,
        )
        return {
            a: {
                "date": date,
                "nav": nav,
                "cash": cash,
                "weights": w,
                "prices": p,
                "turnover": to,
                "costs": c,
                "impact_cost": ic,
                "step": step,
            }
            for a, nav, cash, w, p, to, c, ic in rows
        }

    # ------------------------------------------------------------ save/restore
    def get_state(self) -> dict[str, Any]:
        """Everything that changes from step to step (copies, plain values, numpy arrays
        and RNG states, as the run store's codec writes them): every agent's portfolio
        (:meth:`~marketarena.envs.simulator.Simulator.get_state`), the episode's bounds, the
        reward's and the risk layer's state, the market (:meth:`ImpactSimulator.market_state`:
        the impact factors, the last flow, the noise RNG), the live agents and the env's RNG
        (the next episode's start and noise seed)."""
        core, sim = self.core, self.sim
        return {
            "portfolios": [sim.get_state(i) for i in range(self.n_agents)],
            "episode_start": int(core.episode_start[0]),
            "episode_end": int(core.episode_end[0]),
            "reward": copy.deepcopy(vars(core.reward_fn)),
            **({} if core.risk is None else {"risk": core.risk.get_state()}),
            "market": sim.market_state(),
            "agents": list(self.agents),
            "np_random": copy.deepcopy(self._np_random.bit_generator.state),
        }

    def set_state(
        self, state: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Put the arena back where :meth:`get_state` saw it, on an arena with the same
        number of agents, data and settings (fresh or not: no ``reset`` needed); returns the
        live agents' observations and infos (as ``reset`` does: no step result). The next
        ``step`` is then, bit for bit, the step the saved arena would have taken."""
        core, sim = self.core, self.sim
        portfolios = state["portfolios"]
        if len(portfolios) != self.n_agents:
            raise DataError(
                f"saved state has {len(portfolios)} agents; this arena has {self.n_agents}"
            )
        if state["agents"] not in ([], self.possible_agents):
            raise DataError(
                f"saved state's live agents are {state['agents']}: an arena's agents live and "
                f"end together, so they are all of {self.possible_agents} or none"
            )
        times = {int(p["t"]) for p in portfolios}
        t = times.pop()
        if times or not core.first_decision <= t <= core.last_decision + 1:
            raise DataError(
                f"saved state's agents are at decision indices {sorted({t, *times})}; they "
                f"must share one, in {core.first_decision}..{core.last_decision + 1} "
                f"({self.data.dates[core.first_decision]}.."
                f"{self.data.dates[core.last_decision + 1]})"
            )
        if core.risk is not None and "risk" not in state:
            raise DataError(
                "saved state has no risk-layer state, but this arena has risk rules: resume "
                "with the settings the run was started with"
            )
        for i, portfolio in enumerate(portfolios):
            sim.set_state(portfolio, i)
        sim.set_market_state(state["market"])
        core.episode_start[:] = state["episode_start"]
        core.episode_end[:] = state["episode_end"]
        vars(core.reward_fn).update(copy.deepcopy(dict(state["reward"])))
        if core.risk is not None:
            core.risk.set_state(state["risk"])
        self.agents = list(state["agents"])
        self._np_random = _generator(state["np_random"])
        if not self.agents:
            return {}, {}
        weights = sim.weight
        return self._observations(weights), self._infos(None, weights)

    def close(self) -> None:
        pass


def _generator(saved: Mapping[str, Any]) -> np.random.Generator:
    """A numpy ``Generator`` from a saved ``bit_generator.state`` (a copy of it)."""
    kind = getattr(np.random, str(saved["bit_generator"]), None)
    if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
        raise DataError(
            f"saved RNG state names {saved['bit_generator']!r}: not a numpy bit generator"
        )
    bit_generator = kind()
    bit_generator.state = copy.deepcopy(dict(saved))
    return np.random.Generator(bit_generator)
