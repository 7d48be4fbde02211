"""The batched portfolio simulator: pure numpy, no Gymnasium.

State arrays carry a leading ``n_envs`` axis; a single environment is a batch of one. The same
code path serves :class:`~marketarena.envs.PortfolioEnv`, the vector env, LLM backtests and the
replay of recorded trade logs.

Timing (the contract every environment docstring repeats):

1. A decision at step ``t`` is taken after the close of bar ``t``; the agent has seen rows
   ``<= t`` only. Orders are sized from the close of bar ``t`` (the last price known), so
   "hold my current weights" is exactly "trade nothing".
2. Orders fill at ``execution``:

   * ``"next_open"`` — the open of bar ``t+1`` (default when the data has opens);
   * ``"next_close"`` — the close of bar ``t+1`` (default for close-only data);
   * ``"close"`` — the close of bar ``t`` itself. **Optimistic**: it assumes you can trade at
     a price you only learned by observing it. Offered for comparison with peers that do this.

3. The portfolio is marked at the close of bar ``t+1``; step results (NAV, costs) refer to that
   mark, after costs.

Execution: sells (and short sales) execute first; their proceeds, net of costs, join the cash;
buys are then scaled down together so that cash never goes negative. Slippage moves the fill
price against the trader (``price * (1 ± slippage_bps / 1e4)``); commission is
``commission_bps / 1e4`` of each fill's notional, at least ``min_fee`` per non-zero fill.

Accounting identity, per env and step (tested every step)::

    NAV(t+1) = NAV(t) + shares_before · (fill − close_t) + shares_after · (close_{t+1} − fill)
               − commission − slippage − borrow
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from marketarena.envs.data import MarketData

Execution = Literal["next_open", "next_close", "close"]
EXECUTIONS: tuple[str, ...] = ("next_open", "next_close", "close")
_DUST = 1e-9  # orders below this fraction of NAV are rounding noise, not trades


@dataclass(frozen=True)
class TradingRules:
    """The rules of the market, each with a documented default.

    Attributes:
        initial_cash: starting cash of every episode (AI-Trader uses 10,000).
        execution: ``"next_open"``, ``"next_close"`` or the optimistic ``"close"``; ``None``
            picks ``"next_open"`` when the data has opens, else ``"next_close"``.
        commission_bps: commission per fill, in basis points of notional.
        min_fee: minimum commission per non-zero fill, in cash units. A sell whose proceeds
            would not cover it is not sent.
        slippage_bps: price impact against the trader, in basis points.
        max_volume_fraction: optional cap on each fill as a fraction of the fill bar's volume.
        lot_size: ``None`` for fractional shares; 1 for whole shares; 100 for board lots.
            Orders are rounded toward zero to whole lots.
        allow_short: permit negative positions (short sales).
        max_gross_leverage: cap on ``sum(|weights|)`` of the target portfolio (with shorting).
        borrow_rate: annual rate on the market value of short positions, charged to cash at
            each mark. With no free cash this can leave cash slightly negative (a margin debit)
            until the next sale; trades themselves never overdraw.
        max_weight: optional cap on any one asset's target weight; the excess stays in cash.
        stop_loss: optional drawdown from the episode's NAV peak (e.g. 0.3) that ends the
            episode (``terminated``).
        ruin_fraction: the episode terminates when NAV falls to ``ruin_fraction`` of the
            initial cash or below.
        periods_per_year: bars per year, for the borrow charge.
    """

    initial_cash: float = 10_000.0
    execution: Execution | None = None
    commission_bps: float = 5.0
    min_fee: float = 0.0
    slippage_bps: float = 5.0
    max_volume_fraction: float | None = None
    lot_size: float | None = None
    allow_short: bool = False
    max_gross_leverage: float = 1.0
    borrow_rate: float = 0.0
    max_weight: float | None = None
    stop_loss: float | None = None
    ruin_fraction: float = 0.0
    periods_per_year: int = 252

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"TradingRules.{name}={getattr(self, name)!r}: {why}")

        if not np.isfinite(self.initial_cash) or self.initial_cash <= 0:
            raise bad("initial_cash", "must be a positive number")
        if self.execution is not None and self.execution not in EXECUTIONS:
            raise bad("execution", f"choose one of {list(EXECUTIONS)}")
        for name in ("commission_bps", "min_fee", "slippage_bps", "borrow_rate", "ruin_fraction"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise bad(name, "must be a finite number >= 0")
        if self.slippage_bps >= 10_000:
            raise bad("slippage_bps", "must be below 10,000 (100%)")
        if self.max_volume_fraction is not None and not 0 < self.max_volume_fraction <= 1:
            raise bad("max_volume_fraction", "must be in (0, 1] or None")
        if self.lot_size is not None and not (np.isfinite(self.lot_size) and self.lot_size > 0):
            raise bad("lot_size", "must be a positive number or None (fractional shares)")
        if not self.max_gross_leverage >= 1.0 or not np.isfinite(self.max_gross_leverage):
            raise bad("max_gross_leverage", "must be a finite number >= 1")
        if self.max_gross_leverage > 1.0 and not self.allow_short:
            raise bad("max_gross_leverage", "above 1 needs allow_short=True")
        if self.max_weight is not None and not 0 < self.max_weight <= self.max_gross_leverage:
            raise bad("max_weight", "must be in (0, max_gross_leverage] or None")
        if self.stop_loss is not None and not 0 < self.stop_loss < 1:
            raise bad("stop_loss", "must be in (0, 1) or None")
        if self.ruin_fraction >= 1:
            raise bad("ruin_fraction", "must be below 1")
        if self.periods_per_year <= 0:
            raise bad("periods_per_year", "must be positive")

    def resolved(self, data: MarketData) -> TradingRules:
        """These rules with ``execution`` chosen for ``data`` and checked against it."""
        execution = self.execution or ("next_open" if data.open is not None else "next_close")
        if execution == "next_open" and data.open is None:
            raise ValueError(
                f"execution='next_open' needs open prices, but {data.name} is close-only; "
                "use execution='next_close'"
            )
        if self.max_volume_fraction is not None and data.volume is None:
            raise ValueError(
                f"max_volume_fraction needs volume, but {data.name} has no volume column"
            )
        return replace(self, execution=execution)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def project_weights(weights: np.ndarray, rules: TradingRules) -> np.ndarray:
    """Map target asset weights ``(n, N)`` onto the set the rules allow (a new array).

    Long-only: negatives become 0 and, if the sum exceeds 1, weights are scaled to sum to 1.
    Shorting: weights are scaled so that ``sum(|w|) <= max_gross_leverage`` and the net long
    weight ``sum(w) <= 1`` (cash never negative). Then ``max_weight`` caps each
    ``|w|``; capped excess stays in cash.
    """
    w = np.array(weights, dtype=np.float64, ndmin=2)
    if not rules.allow_short:
        np.maximum(w, 0.0, out=w)
        total = w.sum(axis=1, keepdims=True)
        np.divide(w, total, out=w, where=total > 1.0)
    else:
        gross = np.abs(w).sum(axis=1, keepdims=True)
        np.multiply(
            w, rules.max_gross_leverage / np.maximum(gross, rules.max_gross_leverage), out=w
        )
        net = w.sum(axis=1, keepdims=True)
        long = np.maximum(w, 0.0)
        long_total = long.sum(axis=1, keepdims=True)
        # shrink the long side until the net weight is at most 1
        shrink = np.where(
            net > 1.0, (long_total - (net - 1.0)) / np.maximum(long_total, 1e-300), 1.0
        )
        w = np.where(w > 0, w * shrink, w)
    if rules.max_weight is not None:
        np.clip(w, -rules.max_weight, rules.max_weight, out=w)
    return w


@dataclass
class StepResult:
    """What one simulator step produced, per env (arrays of shape ``(n_envs,)``).

    The arrays are the simulator's own buffers: valid until the next ``step``; copy to keep.
    """

    nav_before: np.ndarray
    nav: np.ndarray
    peak_nav: np.ndarray
    commission: np.ndarray
    slippage: np.ndarray
    borrow: np.ndarray
    costs: np.ndarray
    turnover: np.ndarray
    """Traded notional (at fill prices) over the NAV before trading: buying a full portfolio
    from cash is 1.0, replacing one full portfolio by another is 2.0."""


@dataclass
class SimulationHistory:
    """Recorded fills and daily snapshots of one env of a simulator (``record=True``)."""

    symbols: tuple[str, ...]
    snapshot_dates: np.ndarray
    cash: np.ndarray
    shares: np.ndarray
    nav: np.ndarray
    fill_dates: np.ndarray = field(default_factory=lambda: np.array([], dtype="datetime64[D]"))
    fill_symbols: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    fill_shares: np.ndarray = field(default_factory=lambda: np.array([]))
    fill_prices: np.ndarray = field(default_factory=lambda: np.array([]))
    fill_costs: np.ndarray = field(default_factory=lambda: np.array([]))

    def fills_frame(self):  # -> pd.DataFrame, imported lazily to keep pandas off this path
        import pandas as pd

        return pd.DataFrame(
            {
                "date": pd.to_datetime(self.fill_dates),
                "symbol": self.fill_symbols,
                "side": np.where(self.fill_shares > 0, "buy", "sell"),
                "shares": np.abs(self.fill_shares),
                "price": self.fill_prices,
                "cost": self.fill_costs,
            }
        )

    def snapshots_frame(self):  # -> pd.DataFrame
        import pandas as pd

        frame = pd.DataFrame(self.shares, columns=list(self.symbols))
        frame.insert(0, "nav", self.nav)
        frame.insert(0, "cash", self.cash)
        frame.insert(0, "date", pd.to_datetime(self.snapshot_dates))
        return frame


class Simulator:
    """A batch of ``n_envs`` portfolios trading one :class:`MarketData` panel.

    Args:
        data: the market; its arrays are shared, never copied per env.
        rules: trading rules (resolved against ``data``: ``execution`` is filled in).
        n_envs: batch size.
        record: keep every fill and a daily snapshot per env (see :meth:`history`). Off by
            default; when on it costs a few array copies per step.
        dtype: float dtype of market arrays used in the step (float64 default; float32 halves
            memory traffic at ~1e-7 relative error per step).
    """

    def __init__(
        self,
        data: MarketData,
        rules: TradingRules | None = None,
        n_envs: int = 1,
        *,
        record: bool = False,
        dtype: type = np.float64,
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if data.n_periods < 2:
            raise ValueError(f"{data.name}: the simulator needs at least 2 dates")
        self.data = data
        self.rules = (rules or TradingRules()).resolved(data)
        self.n_envs = n_envs
        self.n_assets = data.n_assets
        self.record = record
        self._close = np.ascontiguousarray(data.close, dtype=dtype)
        execution = self.rules.execution
        if execution == "next_open":
            self._fill_table, self._fill_offset = np.ascontiguousarray(data.open, dtype=dtype), 1
        elif execution == "next_close":
            self._fill_table, self._fill_offset = self._close, 1
        else:
            self._fill_table, self._fill_offset = self._close, 0
        self._volume = (
            None if data.volume is None else np.ascontiguousarray(data.volume, dtype=dtype)
        )
        self.last_decision_index = data.n_periods - 2
        r = self.rules
        self._commission = r.commission_bps / 1e4
        self._slippage = r.slippage_bps / 1e4
        self._borrow_per_period = r.borrow_rate / r.periods_per_year

        n, m = n_envs, self.n_assets
        self.t = np.zeros(n, dtype=np.int64)
        self.cash = np.full(n, r.initial_cash)
        self.shares = np.zeros((n, m))
        self.nav = np.full(n, r.initial_cash)
        self.peak_nav = np.full(n, r.initial_cash)
        self._result = StepResult(
            nav_before=np.zeros(n), nav=self.nav, peak_nav=self.peak_nav,
            commission=np.zeros(n), slippage=np.zeros(n), borrow=np.zeros(n),
            costs=np.zeros(n), turnover=np.zeros(n),
        )  # fmt: skip
        # recording: whole-batch arrays per step; each env's episode starts at an offset
        self._log: list[tuple[np.ndarray, ...]] = []
        self._episode_start = np.zeros(n, dtype=np.int64)
        self._start_t = np.zeros(n, dtype=np.int64)

    # ------------------------------------------------------------------ state
    def reset(self, start: int | np.ndarray, env_ids: np.ndarray | None = None) -> None:
        """Start fresh portfolios (all cash) at decision index ``start`` for ``env_ids``."""
        ids = slice(None) if env_ids is None else env_ids
        start_arr = np.asarray(start, dtype=np.int64)
        if np.any(start_arr < 0) or np.any(start_arr > self.last_decision_index):
            raise ValueError(
                f"start index {start} outside [0, {self.last_decision_index}] "
                f"({self.data.name} has {self.data.n_periods} dates)"
            )
        self.t[ids] = start_arr
        self.cash[ids] = self.rules.initial_cash
        self.shares[ids] = 0.0
        self.nav[ids] = self.rules.initial_cash
        self.peak_nav[ids] = self.rules.initial_cash
        self._episode_start[ids] = len(self._log)
        self._start_t[ids] = start_arr
        done = int(self._episode_start.min())
        if done:  # no env needs these steps any more
            del self._log[:done]
            self._episode_start -= done

    def weights(self) -> np.ndarray:
        """Current asset weights ``(n_envs, N)`` at the last mark (close of bar ``t``)."""
        price = self._close[self.t]
        return self.shares * price / self.nav[:, None]

    def cash_fraction(self) -> np.ndarray:
        return self.cash / self.nav

    # ------------------------------------------------------------------- step
    def step_weights(self, weights: np.ndarray) -> StepResult:
        """Rebalance each env to target asset ``weights`` ``(n_envs, N)`` (cash is the rest).

        Weights are projected onto the allowed set (:func:`project_weights`) and turned into
        share orders sized at the close of bar ``t``.
        """
        w = project_weights(weights, self.rules)
        price = self._close[self.t]
        orders = w * (self.nav[:, None] / price) - self.shares
        # rounding dust (e.g. from "hold my weights") is not an order
        dust = np.abs(orders) * price <= _DUST * self.nav[:, None]
        orders[dust] = 0.0
        return self.step_orders(orders)

    def step_orders(self, orders: np.ndarray) -> StepResult:
        """Send share ``orders`` ``(n_envs, N)`` (positive buy, negative sell), then mark."""
        if np.any(self.t > self.last_decision_index):
            last = self.data.dates[self.last_decision_index]
            raise RuntimeError(
                f"cannot step past the last decision date {last} of {self.data.name}: reset first"
            )
        r = self.rules
        res = self._result
        res.nav_before[:] = self.nav
        fill = self._fill_table[self.t + self._fill_offset]
        orders = np.array(orders, dtype=np.float64, ndmin=2)
        if r.lot_size is not None:
            orders = np.trunc(orders / r.lot_size) * r.lot_size
        if r.max_volume_fraction is not None:
            cap = r.max_volume_fraction * self._volume[self.t + self._fill_offset]
            np.clip(orders, -cap, cap, out=orders)
        if not r.allow_short:
            np.maximum(orders, -self.shares, out=orders)

        sells = np.minimum(orders, 0.0)
        sell_notional = -sells * fill * (1.0 - self._slippage)
        sell_fee = sell_notional * self._commission
        if r.min_fee > 0:
            active = sells < 0
            # a sell that cannot pay its own minimum fee is not sent
            viable = sell_notional > r.min_fee
            sells = np.where(viable, sells, 0.0)
            sell_notional = np.where(viable, sell_notional, 0.0)
            sell_fee = np.where(active & viable, np.maximum(sell_fee, r.min_fee), 0.0)
        cash = self.cash + sell_notional.sum(axis=1) - sell_fee.sum(axis=1)

        buys = np.maximum(orders, 0.0)
        buy_price = fill * (1.0 + self._slippage)
        buy_notional = buys * buy_price
        gross = buy_notional.sum(axis=1) * (1.0 + self._commission)
        reserve = r.min_fee * np.count_nonzero(buys, axis=1) if r.min_fee > 0 else 0.0
        # conservative scale: each fee is at most commission*notional + min_fee
        scale = np.where(
            gross + reserve > cash,
            np.maximum(cash - reserve, 0.0) / np.where(gross > 0, gross, 1.0),
            1.0,
        )
        scaled = np.any(scale < 1.0)
        if scaled:
            buys = buys * scale[:, None]
            if r.lot_size is not None:
                buys = np.floor(buys / r.lot_size + 1e-9) * r.lot_size
            buy_notional = buys * buy_price
        buy_fee = buy_notional * self._commission
        if r.min_fee > 0:
            buy_fee = np.where(buys > 0, np.maximum(buy_fee, r.min_fee), 0.0)
        cash -= buy_notional.sum(axis=1) + buy_fee.sum(axis=1)
        if scaled:  # the scale is conservative: only float dust can fall below zero
            cash[(cash < 0.0) & (cash > -_DUST * res.nav_before)] = 0.0

        traded = sells + buys
        self.shares += traded
        abs_notional = np.abs(traded) * fill
        res.commission[:] = sell_fee.sum(axis=1) + buy_fee.sum(axis=1)
        res.slippage[:] = abs_notional.sum(axis=1) * self._slippage
        res.turnover[:] = abs_notional.sum(axis=1) / res.nav_before

        self.t += 1
        mark = self._close[self.t]
        if r.allow_short and self._borrow_per_period > 0:
            short_value = np.maximum(-self.shares, 0.0) * mark
            res.borrow[:] = short_value.sum(axis=1) * self._borrow_per_period
            cash -= res.borrow
        self.cash[:] = cash
        self.nav[:] = cash + (self.shares * mark).sum(axis=1)
        np.maximum(self.peak_nav, self.nav, out=self.peak_nav)
        res.costs[:] = res.commission + res.slippage + res.borrow

        if self.record:
            fill_cost = sell_fee + buy_fee + abs_notional * self._slippage
            self._log.append(
                (self.t.copy(), traded, fill, fill_cost, self.cash.copy(), self.shares.copy(),
                 self.nav.copy())
            )  # fmt: skip
        return res

    def breached(self) -> np.ndarray:
        """Envs whose NAV hit the ruin level or the stop-loss (bool ``(n_envs,)``)."""
        r = self.rules
        out = self.nav <= r.ruin_fraction * r.initial_cash
        if r.stop_loss is not None:
            out |= self.nav < (1.0 - r.stop_loss) * self.peak_nav
        return out

    # --------------------------------------------------------------- history
    def history(self, env: int = 0) -> SimulationHistory:
        """Fills and daily snapshots of env ``env`` since its last reset (``record=True``).

        Snapshots: one at the reset date (all cash) and one per step at the mark. Fills: the
        fill bar's date, the reference fill price (open or close, before slippage) and the
        fill's cost (commission plus slippage), so that a buy costs ``shares * price + cost``.
        """
        if not self.record:
            raise RuntimeError("history() needs Simulator(..., record=True)")
        steps = self._log[self._episode_start[env] :]
        dates = self.data.dates
        symbols = np.asarray(self.data.symbols, dtype=object)
        initial = self.rules.initial_cash
        t_marks = np.array([self._start_t[env]] + [int(s[0][env]) for s in steps])
        cash = np.array([initial] + [float(s[4][env]) for s in steps])
        shares = np.vstack([np.zeros(self.n_assets)] + [s[5][env] for s in steps])
        nav = np.array([initial] + [float(s[6][env]) for s in steps])
        fill_d, fill_s, fill_q, fill_p, fill_c = [], [], [], [], []
        for t_mark, traded, price, cost, *_ in steps:
            nz = np.flatnonzero(traded[env])
            fill_row = int(t_mark[env]) - 1 + self._fill_offset
            fill_d.append(np.repeat(dates[fill_row], len(nz)))
            fill_s.append(symbols[nz])
            fill_q.append(traded[env, nz])
            fill_p.append(price[env, nz])
            fill_c.append(cost[env, nz])

        def cat(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
            return np.concatenate(parts) if parts else empty

        return SimulationHistory(
            symbols=self.data.symbols,
            snapshot_dates=dates[t_marks],
            cash=cash,
            shares=shares,
            nav=nav,
            fill_dates=cat(fill_d, np.array([], dtype="datetime64[D]")),
            fill_symbols=cat(fill_s, np.array([], dtype=object)),
            fill_shares=cat(fill_q, np.array([])),
            fill_prices=cat(fill_p, np.array([])),
            fill_costs=cat(fill_c, np.array([])),
        )
