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

Point-in-time universe (data loaded with ``missing="point_in_time"``, which sets
:attr:`~marketarena.envs.data.MarketData.listed`): a symbol is tradable at decision ``t`` when
both bar ``t`` (the last one the agent saw) and the fill bar are inside its listing. Any other
symbol's target weight is forced to 0 (its share order, in :meth:`Simulator.step_orders`, to
a sale of what is held); the rest of the portfolio trades as asked and cash takes what the
symbol would have had. So a symbol cannot be bought before the decision after its first bar,
and a position still held after its last bar ``L`` is sold by the first decision that cannot
trade it (at ``L`` with next-bar execution, at ``L + 1`` with ``"close"``): it fills at the
bookkeeping price of the bar after ``L``, which is the close of ``L`` carried forward, with
commission and slippage charged as on any sale and no volume cap (the volume there is 0). A
sale too small to pay ``min_fee`` is not sent, as for any sell: such a position stays on the
book at that last close. The filled prices outside a listing never move, so a position
outside it (there is none after the sale) neither gains nor loses.

Accounting identity, per env and step (tested every step)::

    NAV(t+1) = NAV(t) + shares_before · (fill − close_t) + shares_after · (close_{t+1} − fill)
               − commission − slippage − borrow
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from marketarena.envs.data import TRADING_DAYS_PER_YEAR, MarketData
from marketarena.envs.errors import ConfigError, DataError

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
        ruin_fraction: the episode terminates when NAV falls to ``ruin_fraction`` of the
            initial cash or below.
        periods_per_year: bars per year, for the borrow charge (and the risk layer's
            annualised volatility). On intraday data the daily default 252 means "not set":
            :meth:`resolved` makes it the data's :attr:`MarketData.periods_per_year` (252 x 78
            for 5-minute bars); any other value is kept.
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
        if self.ruin_fraction >= 1:
            raise bad("ruin_fraction", "must be below 1")
        if self.periods_per_year <= 0:
            raise bad("periods_per_year", "must be positive")

    def resolved(self, data: MarketData) -> TradingRules:
        """These rules with ``execution`` chosen for ``data`` and checked against it."""
        execution = self.execution or ("next_open" if data.open is not None else "next_close")
        if execution == "next_open" and data.open is None:
            raise ConfigError(
                f"execution='next_open' needs open prices, but {data.name} is close-only; "
                "use execution='next_close'"
            )
        if self.max_volume_fraction is not None and data.volume is None:
            raise ConfigError(
                f"max_volume_fraction needs volume, but {data.name} has no volume column"
            )
        periods = self.periods_per_year
        if data.intraday and periods == TRADING_DAYS_PER_YEAR:
            periods = data.periods_per_year
        return replace(self, execution=execution, periods_per_year=periods)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


#: Named rule sets. ``aitrader`` reproduces the AI-Trader benchmark: $10,000, whole shares,
#: long-only, no costs, orders filled at the open of the day after the decision (AI-Trader's
#: "decision day"), NAV marked at the close.
RULE_PRESETS: dict[str, TradingRules] = {
    "default": TradingRules(),
    "aitrader": TradingRules(
        initial_cash=10_000.0,
        execution="next_open",
        commission_bps=0.0,
        min_fee=0.0,
        slippage_bps=0.0,
        lot_size=1,
        allow_short=False,
    ),
}


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


def column_index(n_envs: int) -> tuple[Any, ...]:
    """The index that makes an ``(n_envs,)`` array a column broadcasting over the rows of an
    ``(n_envs, N)`` one: ``[:, None]``, or for a batch of one ``[0, ...]``, a 0-d view, which
    numpy broadcasts on its fast path for scalars (about half the time of a (1, 1) array)."""
    return (0, ...) if n_envs == 1 else (slice(None), None)


@dataclass
class StepResult:
    """What one simulator step produced, per env (arrays of shape ``(n_envs,)``).

    A simulator returns the same object from every step, with new arrays in it: an array
    taken from a step's result keeps its values; the object itself shows the latest step.
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


class Simulator:
    """A batch of ``n_envs`` portfolios trading one :class:`MarketData` panel.

    Args:
        data: the market; its arrays are shared by every env, never copied per env.
        rules: trading rules (resolved against ``data``: ``execution`` is filled in).
        n_envs: batch size.
        record: keep every fill and a daily snapshot per env (see :meth:`history`). Off by
            default; when on it costs a few array copies per step.
        dtype: float dtype of the market prices used in the step. ``float64`` (default) is
            exact; ``float32`` halves the memory of the price tables, at a relative NAV error
            of about 1e-7 per step (see ``docs/BENCHMARKS.md`` for a measured long episode).

    State, per env: ``t`` (decision index), ``shares``, ``holdings`` (position values at the
    close of ``t``, then cash: a row sums to NAV), ``nav``, ``peak_nav`` and ``mark`` (the
    prices of the last mark), with ``cash`` and ``weight`` derived from them; all current
    after every reset and step. :meth:`get_state` and :meth:`set_state` save and restore one
    env's.

    A step (:meth:`step_weights`, :meth:`step_orders`) runs these stages, each a method:
    targets to orders (:meth:`_orders_from_weights`), the fill and mark prices
    (:meth:`_prices`), order limits (lots, volume cap: :meth:`_limit_orders`), sells
    (:meth:`_sell`), buys scaled to the cash left (:meth:`_buy`), the step's costs
    (:meth:`_charge`) and the book: positions, borrow, the mark and NAV (:meth:`_book`).
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
            raise DataError(f"{data.name}: the simulator needs at least 2 dates")
        self.data = data
        self.rules = r = (rules or TradingRules()).resolved(data)
        self.n_envs = n_envs
        self.n_assets = m = data.n_assets
        self.record = record
        close = data.close if dtype == np.float64 else data.close.astype(dtype)
        self._close = close
        # shifted views: row t of these is the bar the decision at t fills on / is marked at
        self._next_close = close[1:]
        if r.execution == "next_open":
            assert data.open is not None  # resolved() refuses next_open without opens
            opens = data.open if dtype == np.float64 else data.open.astype(dtype)
            self._fill_rows, self._fill_offset = opens[1:], 1
        elif r.execution == "next_close":
            self._fill_rows, self._fill_offset = close[1:], 1
        else:
            self._fill_rows, self._fill_offset = close, 0
        self._fill_is_mark = r.execution == "next_close"
        # row t: which symbols the decision at t may trade (None: all, every date)
        self._tradable: np.ndarray | None = None
        if data.listed is not None:
            listed = data.listed
            offset = self._fill_offset
            self._tradable = (listed[: len(listed) - offset] & listed[offset:]).astype(np.float64)
        self._fill_volume = None if data.volume is None else data.volume[self._fill_offset :]
        self.last_decision_index = data.n_periods - 2
        # the rules as the step reads them: flags and constants, looked up once
        self._lot = r.lot_size
        self._limits = r.lot_size is not None or r.max_volume_fraction is not None
        self._min_fee = r.min_fee
        self._floor_available = r.allow_short or r.min_fee > 0
        self._borrow_per_period = r.borrow_rate / r.periods_per_year
        self._charges_borrow = r.allow_short and self._borrow_per_period > 0
        comm = r.commission_bps / 1e4
        slip = r.slippage_bps / 1e4
        self._commission, self._slippage = comm, slip
        self._sell_keep = 1.0 - slip  # cash per unit of reference sell value, before fees
        self._buy_pay = 1.0 + slip  # cash per unit of reference buy value, before fees
        # 0-d arrays: numpy converts a Python float on every operation, an array it does not
        c = np.array
        self._k_slip = c(slip)
        self._k_sell_fee = c((1.0 - slip) * comm)  # commission per unit of sell value
        self._k_sell_net = c((1.0 - slip) * (1.0 - comm))  # cash in per unit of sell value
        self._k_buy_fee = c((1.0 + slip) * comm)
        self._k_buy_gross = c((1.0 + slip) * (1.0 + comm))  # cash out per unit of buy value
        self._k_buy_cap = c((1.0 + slip) * (1.0 + comm) * (1.0 + 1e-12))
        self._k_zero, self._k_tiny, self._k_dust = c(0.0), c(1e-300), c(_DUST)
        self._k_ruin = c(r.ruin_fraction * r.initial_cash)
        self._ones = np.ones(m)
        self._ones_cash = np.ones(m + 1)
        self._column = column_index(n_envs)

        n = n_envs
        self.t = np.zeros(n, dtype=np.int64)
        self.shares = np.zeros((n, m))
        # position values at the close of t, then cash: one row sums to NAV, and one
        # division gives the weights. Never replaced, so the views below stay valid.
        self.holdings = np.zeros((n, m + 1))
        self.holdings[:, m] = r.initial_cash
        self._values, self._cash = self.holdings[:, :m], self.holdings[:, m]
        self.nav = np.full(n, float(r.initial_cash))
        self.peak_nav = np.full(n, float(r.initial_cash))
        self.mark = np.array(close[np.zeros(n, dtype=np.int64)], dtype=np.float64)
        zeros = np.zeros(n)
        self._result = StepResult(
            nav_before=zeros,
            nav=self.nav,
            peak_nav=self.peak_nav,
            commission=zeros,
            slippage=zeros,
            borrow=zeros,
            costs=zeros,
            turnover=zeros,
        )
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
        cash = self.rules.initial_cash
        self.t[ids] = start_arr
        self.shares[ids] = 0.0
        self.holdings[ids] = 0.0
        self.holdings[ids, -1] = cash
        # nav, peak_nav and mark are replaced, never written in place, after a step: the
        # arrays a step returned stay as they were
        self.nav = self.nav.copy()
        self.nav[ids] = cash
        self.peak_nav = self.peak_nav.copy()
        self.peak_nav[ids] = cash
        self.mark = np.array(self.mark)
        self.mark[ids] = self._close[self.t[ids]]
        self._episode_start[ids] = len(self._log)
        self._start_t[ids] = start_arr
        done = int(self._episode_start.min())
        if done:  # no env needs these steps any more
            del self._log[:done]
            self._episode_start -= done

    def get_state(self, env: int = 0) -> dict[str, Any]:
        """Env ``env``'s portfolio, to restore with :meth:`set_state` (copies): the decision
        index ``t``, ``shares``, ``holdings``, ``nav`` and ``peak_nav``."""
        return {
            "t": int(self.t[env]),
            "shares": self.shares[env].copy(),
            "holdings": self.holdings[env].copy(),
            "nav": float(self.nav[env]),
            "peak_nav": float(self.peak_nav[env]),
        }

    def set_state(self, state: Mapping[str, Any], env: int = 0) -> None:
        """Put env ``env`` back where :meth:`get_state` saw it: its next step is the step the
        saved portfolio would have taken. Recorded history (``record=True``) is not restored."""
        t = int(state["t"])
        if not 0 <= t <= self.last_decision_index + 1:
            raise ValueError(
                f"saved state is at index {t}, outside [0, {self.last_decision_index + 1}] "
                f"({self.data.name} has {self.data.n_periods} dates)"
            )
        self.t[env] = t
        self.shares[env] = state["shares"]
        self.holdings[env] = state["holdings"]
        # replaced, not written in place, as in reset
        self.nav = self.nav.copy()
        self.nav[env] = state["nav"]
        self.peak_nav = self.peak_nav.copy()
        self.peak_nav[env] = state["peak_nav"]
        self.mark = np.array(self.mark)
        self.mark[env] = self._close[t]

    @property
    def cash(self) -> np.ndarray:
        """Cash per env (a view of the last column of :attr:`holdings`)."""
        return self._cash

    @property
    def weight(self) -> np.ndarray:
        """Weights ``(n_envs, N + 1)`` at the last mark: assets, then cash (a new array)."""
        return self.holdings / self.nav[self._column]

    def tradable(self) -> np.ndarray | None:
        """Which symbols each env's next decision may trade, bool ``(n_envs, N)`` (see the
        module docstring); None when every symbol trades on every date. After the last
        decision date: the symbols listed on the final bar."""
        if self._tradable is None:
            return None
        assert self.data.listed is not None
        rows = np.minimum(self.t, len(self._tradable) - 1)
        out: np.ndarray = self._tradable[rows] > 0
        past = self.t >= len(self._tradable)
        if past.any():
            out[past] = self.data.listed[self.t[past]]
        return out

    def write_weights(self, out: np.ndarray, ids: np.ndarray | slice = slice(None)) -> None:
        """Write the weights of envs ``ids`` into ``out`` ``(len(ids), N + 1)``."""
        np.divide(self.holdings[ids], self.nav[ids][:, None], out=out)

    # ------------------------------------------------------------------- step
    def step_weights(self, weights: np.ndarray, *, projected: bool = False) -> StepResult:
        """Rebalance each env to target asset ``weights`` ``(n_envs, N)`` (cash is the rest).

        Weights are projected onto the allowed set (:func:`project_weights`; pass
        ``projected=True`` when they already are) and turned into share orders sized at the
        close of bar ``t``. Orders worth less than a billionth of NAV are rounding noise and
        are dropped, so that returning the current weights trades nothing.
        """
        w = weights if projected else project_weights(weights, self.rules)
        if self._tradable is not None:  # outside a listing the target is no position
            w = w * self._rows(self._tradable)
        buys, sells = self._orders_from_weights(w)
        return self._execute(buys, sells)

    def step_orders(self, orders: np.ndarray) -> StepResult:
        """Send share ``orders`` ``(n_envs, N)`` (positive buy, negative sell), then mark."""
        orders = np.array(orders, dtype=np.float64, ndmin=2)
        if orders.shape != self.shares.shape:
            raise ValueError(f"orders have shape {orders.shape}; expected {self.shares.shape}")
        if not np.isfinite(orders).all():
            raise ValueError("orders contain NaN or inf")
        if not self.rules.allow_short:  # long-only: never sell more than is held
            np.maximum(orders, -self.shares, out=orders)
        if self._tradable is not None:  # outside a listing: close the position
            orders = np.where(self._rows(self._tradable) > 0, orders, -self.shares)
        buys = np.maximum(orders, 0.0)
        return self._execute(buys, buys - orders)

    def _execute(self, buys: np.ndarray, sells: np.ndarray) -> StepResult:
        """Fill ``buys`` and ``sells`` (shares, both >= 0) at the fill bar, then mark at t+1.

        Both arrays are owned (modified in place). Long-only callers never pass sells larger
        than the shares held. The result's arrays are new: results of earlier steps stay.
        """
        fill, mark = self._prices()
        if self._limits:
            self._limit_orders(buys, sells)
        sell_value, sell_fee, cash, available = self._sell(sells, fill, buys)
        buy_value, buy_fee = self._buy(buys, fill, cash, available)
        res = self._charge(sell_value, buy_value, sell_fee, buy_fee)
        self._book(buys, sells, mark, cash, res)
        if self.record:
            self._record(buys, sells, fill)
        return res

    def _orders_from_weights(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Buys and sells (shares, both >= 0) that move each env to target weights ``w``,
        sized at the close of ``t``; orders below the dust level are dropped."""
        # in place where possible: at large batches each new (n_envs, N) array is fresh memory
        shares_per_weight = self.nav[self._column] / self.mark
        buys = w * shares_per_weight  # the target, for now
        # a long-only target is >= 0, so this never sells more than is held
        sells = self.shares - buys
        buys -= self.shares
        dust = shares_per_weight * self._k_dust
        buys *= buys > dust
        sells *= sells > dust
        return buys, sells

    def _prices(self) -> tuple[np.ndarray, np.ndarray]:
        """The fill prices and the mark prices (close of t+1) of each env's step."""
        try:
            fill = self._rows(self._fill_rows)
            # next-close fills are marked at the same prices: one row serves both
            return fill, fill if self._fill_is_mark else self._rows(self._next_close)
        except IndexError:
            last = self.data.dates[self.last_decision_index]
            raise RuntimeError(
                f"cannot step past the last decision date {last} of {self.data.name}: reset first"
            ) from None

    def _rows(self, table: np.ndarray) -> np.ndarray:
        """``table[t]``: one row per env; a view (no gather) for a batch of one."""
        if self.n_envs == 1:
            i = int(self.t[0])
            if i >= len(table):
                raise IndexError(i)
            return table[i : i + 1]
        return np.take(table, self.t, axis=0)  # faster than table[t] for row gathers

    def _limit_orders(self, buys: np.ndarray, sells: np.ndarray) -> None:
        """Cap orders at the volume share, then round them toward zero to whole lots (in
        this order: a capped order is whole lots too, and never more than the cap)."""
        lot, fraction = self._lot, self.rules.max_volume_fraction
        if fraction is not None:
            assert self._fill_volume is not None  # resolved() refuses a cap without volume
            cap = fraction * self._rows(self._fill_volume)
            np.minimum(buys, cap, out=buys)
            if self._tradable is not None:  # a forced sale outside a listing: no volume there
                cap = np.where(self._rows(self._tradable) > 0, cap, np.inf)
            np.minimum(sells, cap, out=sells)
        if lot is not None:
            np.floor(buys / lot, out=buys)
            buys *= lot
            np.floor(sells / lot, out=sells)
            sells *= lot

    def _sell(
        self, sells: np.ndarray, fill: np.ndarray, buys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sells first: their value, commission, the cash after them, and the cash available
        to buys (less the buys' minimum fees). Sells that cannot pay the minimum fee are
        dropped from ``sells``."""
        min_fee = self._min_fee
        if min_fee > 0:
            sell_value = sells * fill  # per asset for now
            # a sell that cannot pay its own minimum fee is not sent
            viable = sell_value * self._sell_keep > min_fee
            sells *= viable
            sell_value *= viable
            sell_fee = np.maximum(
                sell_value * (self._sell_keep * self._commission), min_fee * viable
            ).sum(1)
            sell_value = sell_value.sum(axis=1)
            cash = self._cash + sell_value * self._sell_keep - sell_fee
            available = cash - min_fee * np.count_nonzero(buys, axis=1)
        else:
            sell_value = np.vecdot(sells, fill)
            sell_fee = sell_value * self._k_sell_fee
            cash = self._cash + sell_value * self._k_sell_net
            available = cash
        if self._floor_available:  # a borrow debit or the fee reserve can go below 0
            available = np.maximum(available, self._k_zero)
        return sell_value, sell_fee, cash, available

    def _buy(
        self, buys: np.ndarray, fill: np.ndarray, cash: np.ndarray, available: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The cash constraint: buys scaled together to the ``available`` cash (``buys`` in
        place), then paid from ``cash`` (in place). Returns their value and commission.

        Each fee is at most commission * notional + min_fee, so the scale is conservative;
        the factor 1 + 1e-12 leaves a hair of cash rather than float dust below zero.
        """
        buy_value = np.vecdot(buys, fill)
        scale = available / (np.maximum(buy_value * self._k_buy_cap, available) + self._k_tiny)
        buys *= scale[self._column]
        if self._lot is not None:
            buy_value = self._round_buys_to_lots(buys, fill, cash)
        else:
            buy_value *= scale
        buy_fee = self._buy_fee(buys, fill, buy_value)
        if self._min_fee > 0:
            cash -= buy_value * self._buy_pay + buy_fee
        else:
            cash -= buy_value * self._k_buy_gross
        return buy_value, buy_fee

    def _buy_fee(self, buys: np.ndarray, fill: np.ndarray, buy_value: np.ndarray) -> np.ndarray:
        """The commission of ``buys`` (shares) worth ``buy_value`` at ``fill``."""
        if self._min_fee > 0:
            fee: np.ndarray = np.maximum(
                buys * fill * (self._buy_pay * self._commission), self._min_fee * (buys > 0)
            ).sum(axis=1)
            return fee
        return buy_value * self._k_buy_fee

    def _round_buys_to_lots(
        self, buys: np.ndarray, fill: np.ndarray, cash: np.ndarray
    ) -> np.ndarray:
        """Round the cash-scaled ``buys`` (in place) to whole lots; returns their value.

        The scale leaves an order of whole lots a hair below them (it divides by ``1 + 1e-12``
        for safety), so the rounding adds ``1e-9`` of a lot before flooring. Where that buys a
        lot the ``cash`` (after the sells) cannot pay (the order was cut by the cash, and the
        hair was the cut), the row is floored without it: long-only cash never goes below zero.
        """
        lots = buys / self._lot
        np.floor(lots + 1e-9, out=buys)
        buys *= self._lot
        buy_value = np.vecdot(buys, fill)
        if self._min_fee > 0:
            cost = buy_value * self._buy_pay + self._buy_fee(buys, fill, buy_value)
        else:
            cost = buy_value * self._k_buy_gross  # what _buy charges
        over = cost > cash
        if over.any():
            buys[over] = np.floor(lots[over]) * self._lot
            buy_value = np.vecdot(buys, fill)
        return buy_value

    def _charge(
        self,
        sell_value: np.ndarray,
        buy_value: np.ndarray,
        sell_fee: np.ndarray,
        buy_fee: np.ndarray,
    ) -> StepResult:
        """The step's commission, slippage, costs and turnover, in the step result."""
        res = self._result
        traded_value = sell_value + buy_value
        res.nav_before = self.nav
        res.commission = sell_fee + buy_fee
        res.slippage = traded_value * self._k_slip
        res.turnover = traded_value / self.nav
        res.costs = res.commission + res.slippage
        return res

    def _book(
        self,
        buys: np.ndarray,
        sells: np.ndarray,
        mark: np.ndarray,
        cash: np.ndarray,
        res: StepResult,
    ) -> None:
        """Book the fills, move to t+1, charge borrow on shorts and mark at ``mark``."""
        shares = self.shares
        shares -= sells
        shares += buys
        if self.n_envs == 1:
            self.t[0] += 1
        else:
            self.t += 1
        self.mark = mark
        value = np.multiply(shares, mark, out=self._values)
        if self._charges_borrow:
            short_value = np.vecdot(np.maximum(-value, 0.0), self._ones)
            res.borrow = short_value * self._borrow_per_period
            cash -= res.borrow
            res.costs = res.costs + res.borrow
        self._cash[:] = cash
        # row sums as one BLAS dot per row: faster than a reduction over short rows, and
        # the same arithmetic for a row whatever the batch size (matmul's is not)
        self.nav = res.nav = nav = np.vecdot(self.holdings, self._ones_cash)
        self.peak_nav = res.peak_nav = np.maximum(self.peak_nav, nav)

    def _record(self, buys: np.ndarray, sells: np.ndarray, fill: np.ndarray) -> None:
        """Log the step's fills (with their costs) and the new book, for :meth:`history`."""
        traded = buys - sells
        abs_value = (buys + sells) * fill
        side_pay = np.where(traded > 0, self._buy_pay, self._sell_keep)
        fee = np.maximum(abs_value * side_pay * self._commission, self._min_fee * (traded != 0))
        self._log.append(
            (
                self.t.copy(),
                traded,
                fill.copy(),
                fee + abs_value * self._slippage,
                self._cash.copy(),
                self.shares.copy(),
                self.nav,
            )
        )

    def breached(self) -> np.ndarray:
        """Envs whose NAV hit the ruin level (bool ``(n_envs,)``). A stop-loss is the risk
        layer's (:mod:`marketarena.envs.risk`): it exits to cash; it ends no episode."""
        out = self.nav <= self._k_ruin
        return out

    # --------------------------------------------------------------- history
    def last_fills(self, env: int = 0) -> list[tuple[str, float, float, float]]:
        """``(symbol, signed shares, reference price, cost)`` of env ``env``'s fills in the
        latest step (``record=True``)."""
        if not self.record:
            raise RuntimeError("last_fills() needs Simulator(..., record=True)")
        if not self._log or self._episode_start[env] >= len(self._log):
            return []
        _, traded, price, cost, *_ = self._log[-1]
        return [
            (self.data.symbols[j], float(traded[env, j]), float(price[env, j]), float(cost[env, j]))
            for j in np.flatnonzero(traded[env])
        ]

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
