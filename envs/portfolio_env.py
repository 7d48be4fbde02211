"""`PortfolioEnv`: a multi-asset portfolio as a Gymnasium environment."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from marketarena.envs.core import PortfolioCore
from marketarena.envs.data import MarketData, as_dates
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.settings import EnvSettings
from marketarena.envs.simulator import StepResult


@dataclass(frozen=True)
class MarketSnapshot:
    """What an agent may know after the close of ``date``: nothing later is in here.

    Prices are ``(lookback, N)`` windows ending at ``date``; ``positions`` are shares held.
    ``raw_close``: the window's unadjusted closes where the data has them
    (:attr:`~marketarena.envs.data.MarketData.raw_close`), else None. With a point-in-time
    universe, ``listed`` (the window, bool) says which bars are real and ``tradable`` (``N``,
    bool) which symbols the decision may trade; both None otherwise. ``session``: the index of
    ``date`` among the data's trading dates (to number sessions, holidays skipped).
    """

    date: str
    dates: tuple[str, ...]
    symbols: tuple[str, ...]
    close: np.ndarray
    open: np.ndarray | None
    high: np.ndarray | None
    low: np.ndarray | None
    volume: np.ndarray | None
    positions: np.ndarray
    weights: np.ndarray
    cash: float
    nav: float
    initial_cash: float
    rules: Mapping[str, Any]
    raw_close: np.ndarray | None = None
    listed: np.ndarray | None = None
    tradable: np.ndarray | None = None
    session: int | None = None


class PortfolioEnv(gym.Env[np.ndarray, np.ndarray]):
    """Allocate a portfolio across ``N`` assets and cash, one bar at a time.

    ## Description

    Each step the agent chooses target weights over the ``N`` assets and cash. The simulator
    turns them into share orders, fills them under the trading rules (costs, lots, cash never
    negative) and marks the portfolio. Built on the batched
    :class:`~marketarena.envs.simulator.Simulator` with a batch of one.

    ## Timing

    * The decision at step ``t`` comes after the close of bar ``t``. The observation holds data
      from rows ``<= t`` only (tested by perturbing every later price).
    * Orders are sized at the close of ``t`` and fill at the open of ``t+1``
      (``execution="next_open"``, default when the data has opens), or at the close of ``t+1``
      (``"next_close"``, default for close-only data). ``"close"`` fills at the close of ``t``
      and is explicitly optimistic.
    * The portfolio is marked at the close of ``t+1``; the reward uses that mark, after costs.

    ## Action Space

    ``Box(shape=(N + 1,), float32)``: one entry per asset, then cash. ``action_mapping``:

    * ``"normalize"`` (default, ``Box(0, 1)``): negatives count as 0; weights are the entries
      divided by their sum; an all-zero action means all cash.
    * ``"softmax"`` (``Box(-1, 1)``): ``softmax(softmax_scale * action)``.
    * ``"signed"`` (``Box(-1, 1)``, needs ``allow_short``): asset weights
      ``max_gross_leverage * a[:N] / max(1, sum |a|)``; then the long side shrinks until
      net weight <= 1 (cash never negative).
    * ``"discrete"`` (``MultiDiscrete([discrete_levels] * (N + 1))``): integer levels per
      asset and cash, then as ``"normalize"``.

    ``info["weights"]`` has the same layout, so returning it holds the portfolio unchanged.
    NaN/inf entries or a wrong shape raise ``ValueError``.

    ## Observation Space

    ``Box(shape=(window * N * F + N + 1,), float32)``, flat, in this order:

    | slice                 | content                                                    |
    |-----------------------|------------------------------------------------------------|
    | ``[0, window*N*F)``   | features of rows ``t-window+1 .. t``, ``(window, N, F)``,  |
    |                       | C order, latest row last                                   |
    | ``[window*N*F, +N)``  | current asset weights at the close of ``t``                |
    | last                  | cash fraction of NAV                                       |

    ``F`` = ``len(features)``; features come from :mod:`marketarena.envs.features`.

    ## Rewards

    ``"log_return"`` (default) ``log(NAV_{t+1}/NAV_t)``; ``"differential_sharpe"`` (Moody &
    Saffell; the first ``warmup=20`` steps return 0 while its moments are estimated, so no
    step dominates an episode; ``reward_kwargs``: ``eta``, ``warmup``, ``var_floor``);
    ``"drawdown_penalized"``; or any callable on the step result. All after costs.

    ## Starting State

    All cash (``rules.initial_cash``) at a start date drawn uniformly by ``self.np_random``
    among those leaving room for ``episode_length`` steps (or the first eligible date when
    ``random_start=False``; ``reset(options={"start": "YYYY-MM-DD"})`` fixes it).

    ## Episode End

    ``terminated``: NAV at or below ``rules.ruin_fraction * initial_cash``. (A stop-loss,
    ``risk.stop_loss``, exits to cash and the episode goes on.) ``truncated``:
    ``episode_length`` steps done, or no bar left in the date range.

    ## Info

    ``date`` (of bar ``t``, after the step: the mark date), ``nav``, ``cash``, ``weights``
    (``N + 1``: assets, then cash, float64), ``prices`` (closes of bar ``t``),
    ``turnover`` and ``costs`` of the step, ``step`` (steps into the episode); with
    ``snapshot_lookback``, also ``snapshot``: a :class:`MarketSnapshot` of the last
    ``snapshot_lookback`` bars (for LLM agents; not built otherwise).

    ## Arguments

    * ``data``: :class:`MarketData`, a bundled dataset name (``"sp500_20"``), or a file path.
    * ``settings``: an :class:`~marketarena.envs.settings.EnvSettings` (default: its
      defaults), and any of its fields as a keyword overriding it: ``start``, ``end`` (the
      episode's date range), ``window``, ``features``, ``reward``, ``reward_kwargs``,
      ``rules``, ``episode_length``, ``random_start``, ``action_mapping``, ``softmax_scale``,
      ``discrete_levels``, ``rebalance_band``, ``relative_band``, ``price_dtype``. Each
      setting's meaning and its default are documented in ``EnvSettings``; ``env.settings``
      holds the resolved ones.
    * ``render_mode``: ``"ansi"`` or ``"rgb_array"``.
    * ``record``: keep fills and snapshots.
    * ``snapshot_lookback``: bars in ``info["snapshot"]`` (see Info).

    ## Version History

    * v0: initial release.
    """

    # gymnasium declares metadata as an instance variable; every instance shares this one
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 10}  # type: ignore[misc]

    def __init__(
        self,
        data: MarketData | str = "sp500_20",
        settings: EnvSettings | None = None,
        *,
        render_mode: str | None = None,
        record: bool = False,
        snapshot_lookback: int | None = None,
        **overrides: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"render_mode={render_mode!r}: choose one of {self.metadata['render_modes']}"
            )
        self.core = PortfolioCore(data, 1, settings, record=record, **overrides)
        self.settings = self.core.settings
        self.data = self.core.data
        self.sim = self.core.sim
        self.rules = self.core.rules
        self.window = self.core.window
        self.n_assets = self.core.n_assets
        self.feature_names = self.core.feature_names
        self.episode_length = self.settings.episode_length
        self.action_mapping = self.settings.action_mapping
        self.render_mode = render_mode
        self.random_start = self.settings.random_start
        if snapshot_lookback is not None and snapshot_lookback < 1:
            raise ConfigError(f"snapshot_lookback must be >= 1 or None, got {snapshot_lookback}")
        self.snapshot_lookback = snapshot_lookback
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(self.core.obs_dim,), dtype=np.float32
        )
        self.action_space = self.core.action_space
        self._last_result: StepResult | None = None
        self._action_shape = (self.n_assets + 1,)
        self._obs_shape = (1, self.core.obs_dim)
        self._nav_history: list[float] = []
        self._date_history: list[np.datetime64] = []

    # ---------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        core = self.core
        if options and "start" in options:
            t0 = core.start_index(options["start"])
        elif self.random_start:
            t0 = core.draw_start(self.np_random)
        else:
            t0 = core.first_decision
        core.reset_envs(t0)
        self._last_result = None
        weights = self.sim.weight
        info = self._info(weights[0])
        self._nav_history = [info["nav"]]
        self._date_history = [info["date"]]
        return self._observation(weights), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        core = self.core
        if core.sim.t.item() > core.episode_end.item():
            raise RuntimeError("step() called after the episode ended; call reset() first")
        a = np.asarray(action)
        if a.shape != self._action_shape:
            raise ValueError(
                f"action has shape {a.shape}; expected ({self.n_assets + 1},): one weight per "
                f"asset ({self.n_assets}) and one for cash"
            )
        self._last_result, reward, terminated, truncated = core.step(a[None, :])
        weights = self.sim.weight
        info = self._info(weights[0])
        self._nav_history.append(info["nav"])
        self._date_history.append(info["date"])
        # .item(): a batch of one holds one element, and item() is the cheap conversion
        return (
            self._observation(weights),
            reward.item(),
            terminated.item(),
            truncated.item(),
            info,
        )

    def action_to_weights(self, action: np.ndarray) -> np.ndarray:
        """Target asset weights ``(N,)`` for an action (see the class docstring)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.n_assets + 1,):
            raise ValueError(f"action has shape {a.shape}; expected ({self.n_assets + 1},)")
        return self.core.actions_to_weights(a[None, :])[0]

    # ------------------------------------------------------------ observation
    def _observation(self, weights: np.ndarray) -> np.ndarray:
        obs = np.empty(self._obs_shape, dtype=np.float32)
        return self.core.observe(obs, weights)[0]

    def current_weights(self) -> np.ndarray:
        """Weights ``(N + 1,)`` at the last mark: assets, then cash (the action layout)."""
        return self.sim.weight[0]

    def _info(self, weights: np.ndarray | None = None) -> dict[str, Any]:
        sim = self.sim
        res = self._last_result
        t = sim.t.item()
        data = self.data
        info = {
            "date": data.dates[t],
            "nav": sim.nav.item(),
            "cash": sim.cash.item(),
            "weights": sim.weight[0] if weights is None else weights,
            "prices": data.close[t].copy(),  # infos share no memory (gymnasium's checker)
            "turnover": 0.0 if res is None else res.turnover.item(),
            "costs": 0.0 if res is None else res.costs.item(),
            "step": t - self.core.episode_start.item(),
        }
        risk = self.core.risk
        if risk is not None:  # what each risk rule changed in the last decision's weights
            info["risk"] = {rule: float(v[0]) for rule, v in risk.last.items() if v[0] > 0}
        if self.snapshot_lookback is not None:
            info["snapshot"] = self.market_snapshot(self.snapshot_lookback)
        return info

    def market_snapshot(self, lookback: int = 20) -> MarketSnapshot:
        """A structured, point-in-time view for LLM prompts (built only when called)."""
        t = int(self.sim.t[0])
        lo = max(0, t - lookback + 1)
        rows = slice(lo, t + 1)
        d = self.data

        def window(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[rows].copy()

        tradable = self.sim.tradable()

        return MarketSnapshot(
            date=str(d.dates[t]),
            dates=tuple(str(x) for x in d.dates[rows]),
            symbols=d.symbols,
            close=d.close[rows].copy(),
            open=window(d.open),
            high=window(d.high),
            low=window(d.low),
            volume=window(d.volume),
            positions=self.sim.shares[0].copy(),
            weights=self.current_weights(),
            cash=float(self.sim.cash[0]),
            nav=float(self.sim.nav[0]),
            initial_cash=self.rules.initial_cash,
            rules=self.rules.to_dict(),
            raw_close=window(d.raw_close),
            listed=window(d.listed),
            tradable=None if tradable is None else tradable[0],
            session=t,
        )

    # ------------------------------------------------------------ save/restore
    def get_state(self) -> dict[str, Any]:
        """Everything that changes during an episode (to persist a run day by day): the
        simulator's :meth:`~marketarena.envs.simulator.Simulator.get_state`, the episode's
        start, the reward's state and the NAV and date histories (copies)."""
        core = self.core
        return {
            **self.sim.get_state(),
            "episode_start": int(core.episode_start[0]),
            **({} if core.risk is None else {"risk": core.risk.get_state()}),
            **copy.deepcopy(
                {
                    "reward": vars(core.reward_fn),
                    "nav_history": self._nav_history,
                    "date_history": self._date_history,
                }
            ),
        }

    def set_state(self, state: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Restore :meth:`get_state` after a ``reset``; returns the observation and info."""
        sim, core = self.sim, self.core
        t = int(state["t"])
        if not core.first_decision <= t <= core.last_decision + 1:
            raise DataError(
                f"saved state is at {self.data.dates[min(t, self.data.n_periods - 1)]}, outside "
                f"this env's range {self.data.dates[core.first_decision]}.."
                f"{self.data.dates[core.last_decision + 1]}"
            )
        state = copy.deepcopy(dict(state))
        sim.set_state(state)
        core.episode_start[0] = state["episode_start"]
        if core.risk is not None:
            if "risk" not in state:
                raise DataError(
                    "saved state has no risk-layer state, but this env has risk rules: resume "
                    "with the settings the run was started with"
                )
            core.risk.set_state(state["risk"])
        vars(core.reward_fn).update(state["reward"])
        self._nav_history = list(state["nav_history"])
        self._date_history = list(state["date_history"])
        self._last_result = None
        weights = sim.weight
        return self._observation(weights), self._info(weights[0])

    # ---------------------------------------------------------------- render
    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='ansi'")
            return None
        if self.render_mode == "ansi":
            return self._render_text()
        return self._render_equity_curve()

    def _render_text(self) -> str:
        info = self._info()
        weights = info["weights"]
        order = np.argsort(weights[:-1])[::-1][:5]
        top = ", ".join(f"{self.data.symbols[i]} {weights[i]:.1%}" for i in order if weights[i] > 0)
        ret = info["nav"] / self.rules.initial_cash - 1.0
        return (
            f"{info['date']}  step {info['step']}  NAV {info['nav']:,.2f} ({ret:+.2%})  "
            f"cash {weights[-1]:.1%}  top: {top or '-'}"
        )

    def _render_equity_curve(self) -> np.ndarray:
        try:  # a Figure outside pyplot: the caller's backend and open figures stay as they are
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
            raise gym.error.DependencyNotInstalled(
                'rgb_array rendering needs matplotlib: pip install "matplotlib>=3.8"'
            ) from exc
        fig = Figure(figsize=(6, 3), dpi=80)
        canvas = FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot(np.array(self._date_history), self._nav_history, lw=1.2)
        ax.set_title(f"{self.data.name}: NAV")
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()

    # --------------------------------------------------------------- history
    @property
    def nav_history(self) -> np.ndarray:
        """NAV at the reset date and after each step of the current episode."""
        return np.asarray(self._nav_history)

    @property
    def date_history(self) -> np.ndarray:
        return as_dates(self._date_history)
