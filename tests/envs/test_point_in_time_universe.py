"""The point-in-time universe (``missing="point_in_time"``): a symbol trades from its first bar
to its last, and a later delisting changes nothing before it (``drop_symbol`` fails that).

The hand panel, eight weekdays from 2024-01-01, closes only:

    A  10, 11, 12, 13, 14, 15, 16, 17        (the whole panel)
    B  --, --, --, 20, 21, 22, 23, 24        (listed from row 3)
    C  30, 31, 32, 33, 34, 35, --, --        (delisted after row 5)
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from marketarena.cli import main
from marketarena.envs.aitrader import load_aitrader
from marketarena.envs.data import (
    DataValidationError,
    DataWarning,
    MarketData,
    from_long_frame,
    from_wide_frame,
)
from marketarena.envs.errors import ConfigError
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.envs.simulator import Simulator, TradingRules
from marketarena.envs.synthetic import gbm_market
from marketarena.envs.vector_env import PortfolioVectorEnv

DATES = pd.bdate_range("2024-01-01", periods=8).strftime("%Y-%m-%d").tolist()
A = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]
B = [None, None, None, 20.0, 21.0, 22.0, 23.0, 24.0]
C = [30.0, 31.0, 32.0, 33.0, 34.0, 35.0, None, None]
FIRST_B, LAST_C = 3, 5
COMM, SLIP = 5e-4, 5e-4  # the default rules: 5 bps each


def long_frame(columns: dict[str, list[float | None]]) -> pd.DataFrame:
    rows = [
        {"date": d, "symbol": s, "close": v}
        for s, values in columns.items()
        for d, v in zip(DATES, values, strict=True)
        if v is not None
    ]
    return pd.DataFrame(rows)


def load(columns: dict[str, list[float | None]], missing: str = "point_in_time") -> MarketData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return from_long_frame(long_frame(columns), name="pit", missing=missing)  # type: ignore[arg-type]


@pytest.fixture
def panel() -> MarketData:
    return load({"A": A, "B": B, "C": C})


# ------------------------------------------------------------------------------ loading
def test_the_listing_runs_from_first_bar_to_last_and_prices_outside_are_filled():
    with pytest.warns(DataWarning, match=r"universe: point_in_time .*B 2024-01-04\.\.2024-01-10"):
        data = from_long_frame(long_frame({"A": A, "B": B, "C": C}), missing="point_in_time")
    listed = data.listed
    assert listed is not None
    np.testing.assert_array_equal(listed[:, 0], [True] * 8)
    np.testing.assert_array_equal(listed[:, 1], [False] * 3 + [True] * 5)
    np.testing.assert_array_equal(listed[:, 2], [True] * 6 + [False] * 2)
    # bookkeeping prices: the first close before the first bar, the last close after the last
    np.testing.assert_array_equal(data.close[:, 1], [20, 20, 20, 20, 21, 22, 23, 24])
    np.testing.assert_array_equal(data.close[:, 2], [30, 31, 32, 33, 34, 35, 35, 35])
    manifest = data.manifest()
    assert manifest["universe_policy"] == "point_in_time"
    assert manifest["listings"] == [
        "A 2024-01-01..2024-01-10",
        "B 2024-01-04..2024-01-10",
        "C 2024-01-01..2024-01-08",
    ]
    assert data.listings()["C"] == ("2024-01-01", "2024-01-08")
    # the export leaves the filled bars out, so reloading gives the same panel
    again = load_frame(data.to_long_frame())
    np.testing.assert_array_equal(again.close, data.close)
    np.testing.assert_array_equal(again.listed, data.listed)
    assert again.content_hash() == data.content_hash()


def load_frame(frame: pd.DataFrame) -> MarketData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return from_long_frame(frame, name="pit", missing="point_in_time")


def test_ai_trader_price_files_keep_the_listing(tmp_path):
    """A symbol that starts trading later in AI-Trader's merged.jsonl is listed from then."""

    def doc(symbol: str, closes: list[float | None]) -> dict:
        bars = {
            d: {
                "1. buy price": f"{c:.4f}",
                "2. high": f"{c:.4f}",
                "3. low": f"{c:.4f}",
                "4. sell price": f"{c:.4f}",
                "5. volume": "1000",
            }
            for d, c in zip(DATES, closes, strict=True)
            if c is not None
        }
        return {"Meta Data": {"2. Symbol": symbol}, "Time Series (Daily)": bars}

    path = tmp_path / "merged.jsonl"
    path.write_text("\n".join(json.dumps(doc(s, v)) for s, v in (("A", A), ("B", B))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = load_aitrader(path, missing="point_in_time")
    assert data.listed is not None
    np.testing.assert_array_equal(data.listed[:, 1], [False] * 3 + [True] * 5)
    assert data.manifest()["universe_policy"] == "point_in_time"


def test_marketarena_data_says_which_universe(tmp_path):
    path = tmp_path / "listings.csv"
    long_frame({"A": A, "B": B, "C": C}).to_csv(path, index=False)
    console = Console(record=True, width=400)  # the note on one line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        code = main(["data", "validate", str(path), "--missing", "point_in_time"], console=console)
    text = console.export_text()
    assert code == 0
    assert "3 symbols, fields=['close'], universe=point_in_time)" in text
    assert "note: universe: point_in_time" in text
    assert (
        "listed for part of the panel: B 2024-01-04..2024-01-10, C 2024-01-01..2024-01-08" in text
    )


def test_slicing_and_selecting_keep_the_listing(panel):
    part = panel.slice("2024-01-03", "2024-01-09").select(["C", "B"])
    assert part.listed is not None
    np.testing.assert_array_equal(part.listed[:, 1], [False, True, True, True, True])
    np.testing.assert_array_equal(part.listed[:, 0], [True, True, True, True, False])
    # a slice that ends before B's first bar (a run's data up to its end) lists B nowhere
    early = panel.slice(None, "2024-01-03")
    assert early.listings()["B"] == ("-", "-") and early.listings()["A"][0] == "2024-01-01"


def test_the_listing_is_part_of_the_content_hash(panel):
    full = MarketData(dates=panel.dates, symbols=panel.symbols, close=panel.close, name="pit")
    assert full.universe == "full_panel" and panel.universe == "point_in_time"
    assert full.content_hash() != panel.content_hash()


def test_a_wide_panel_with_leading_and_trailing_gaps(panel):
    frame = pd.DataFrame({"date": DATES, "A": A, "B": B, "C": C})
    with pytest.warns(DataWarning, match="point_in_time"):
        data = from_wide_frame(frame, missing="point_in_time")
    np.testing.assert_array_equal(data.listed, panel.listed)
    np.testing.assert_array_equal(data.close, panel.close)


def test_a_gap_inside_a_listing_is_forward_filled_and_noted():
    gappy = [10.0, 11.0, None, 13.0, 14.0, 15.0, 16.0, 17.0]
    with pytest.warns(DataWarning) as caught:
        data = from_long_frame(long_frame({"A": gappy, "C": C}), missing="point_in_time")
    assert any(
        "forward-filled 1 missing bar(s) inside listings: A (1)" in str(w.message) for w in caught
    )
    assert data.listed is not None and data.listed[:, 0].all()
    assert data.close[2, 0] == 11.0


def test_a_symbol_without_bars_and_a_broken_listing_are_refused():
    frame = pd.DataFrame({"date": DATES, "A": A, "Z": [None] * 8})
    with pytest.raises(DataValidationError, match="Z: no bars at all"):
        from_wide_frame(frame, missing="point_in_time")
    listed = np.ones((8, 1), dtype=bool)
    listed[3] = False
    with pytest.raises(DataValidationError, match="A: listed dates are not one run"):
        MarketData(dates=DATES, symbols=("A",), close=np.array(A)[:, None], listed=listed)
    with pytest.raises(ConfigError, match="point_in_time"):
        from_long_frame(long_frame({"A": A}), missing="sometimes")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- trading
def run(data: MarketData, weights: list[float], execution: str = "next_close", **rules):
    """Trade fixed target ``weights`` from row 0 to the end; per step the simulator's shares,
    cash and NAV after the mark, and the result."""
    sim = Simulator(data, TradingRules(execution=execution, **rules), record=True)  # type: ignore[arg-type]
    sim.reset(0)
    steps = []
    while int(sim.t[0]) <= sim.last_decision_index:
        res = sim.step_weights(np.array([weights]))
        t = int(sim.t[0])
        # the accounting invariant, on every step: cash + shares x price = NAV
        assert sim.cash[0] + sim.shares[0] @ data.close[t] == pytest.approx(sim.nav[0], rel=1e-13)
        costs = (float(res.commission[0]), float(res.slippage[0]))  # res is reused each step
        steps.append((sim.shares[0].copy(), float(sim.cash[0]), float(sim.nav[0]), costs))
    return sim, steps


def test_a_symbol_listed_late_cannot_be_held_before_its_first_bar(panel):
    sim, steps = run(panel, [0.0, 1.0, 0.0])  # all in B, from the first decision
    held = [s[0][1] for s in steps]  # B's shares after decisions 0..6 (marks of rows 1..7)
    # decisions 0..2 see no real bar of B: nothing bought. Decision 3 (its first bar) buys
    # at the close of row 4.
    assert held[:FIRST_B] == [0.0] * FIRST_B
    assert held[FIRST_B] > 0
    fills = sim.history().fills_frame()
    assert set(fills["symbol"]) == {"B"} and str(fills["date"][0].date()) == DATES[FIRST_B + 1]
    assert steps[FIRST_B - 1][2] == 10_000.0  # all cash until then, no cost


@pytest.mark.parametrize(("execution", "forced_decision"), [("next_close", 5), ("close", 6)])
def test_a_delisted_position_is_sold_at_its_last_close_with_costs(
    panel, execution, forced_decision
):
    """All in C, whose last bar is row 5: the first decision that cannot trade C sells it at
    the bookkeeping price of row 6, which is C's last close (35), commission and slippage
    paid; the other symbols are untouched and the rest is cash."""
    sim, steps = run(panel, [0.0, 0.0, 1.0], execution=execution)
    shares_before, cash_before, nav_before, _ = steps[forced_decision - 1]
    shares_after, cash_after, nav_after, res = steps[forced_decision]
    q = shares_before[2]
    assert q > 0 and shares_after[2] == 0.0
    value = q * 35.0  # C's last close
    assert nav_before == pytest.approx(cash_before + value, rel=1e-13)
    expected_cash = cash_before + value * (1 - SLIP) * (1 - COMM)
    assert cash_after == pytest.approx(expected_cash, rel=1e-13)
    assert nav_after == pytest.approx(expected_cash, rel=1e-13)
    commission, slippage = res
    assert commission == pytest.approx(value * (1 - SLIP) * COMM, rel=1e-12)
    assert slippage == pytest.approx(value * SLIP, rel=1e-12)
    fills = sim.history().fills_frame()
    sale = fills[fills["side"] == "sell"]
    assert list(sale["symbol"]) == ["C"] and list(sale["price"]) == [35.0]
    assert sale["cost"].iloc[0] == pytest.approx(value * (1 - SLIP) * COMM + value * SLIP)
    # never bought again: the rest of the run is cash
    assert all(s[0][2] == 0.0 for s in steps[forced_decision:])
    assert steps[-1][2] == cash_after


def test_share_orders_close_a_delisted_position_and_buy_nothing_unlisted(panel):
    sim = Simulator(panel, TradingRules(execution="next_close"))
    sim.reset(0)
    sim.step_orders(np.array([[0.0, 10.0, 100.0]]))  # B is not listed yet: no buy
    assert list(sim.shares[0]) == [0.0, 0.0, 100.0]
    for _ in range(LAST_C):  # decisions 1..5; the one at 5 cannot trade C
        sim.step_orders(np.zeros((1, 3)))
    assert list(sim.shares[0]) == [0.0, 0.0, 0.0]
    assert sim.cash[0] + sim.shares[0] @ panel.close[int(sim.t[0])] == pytest.approx(sim.nav[0])


def test_the_forced_sale_is_not_capped_by_the_zero_volume_after_the_listing():
    frame = long_frame({"A": A, "C": C}).assign(volume=1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = from_long_frame(frame, missing="point_in_time")
    assert data.volume is not None and data.volume[LAST_C + 1, 1] == 0.0
    _, steps = run(data, [0.0, 1.0], max_volume_fraction=0.5)
    assert steps[LAST_C][0][1] == 0.0


def test_tradable_symbols_are_reported_per_decision(panel):
    sim = Simulator(panel, TradingRules(execution="next_close"))
    seen = []
    for t in range(panel.n_periods):
        sim.reset(min(t, sim.last_decision_index))
        sim.t[0] = t
        tradable = sim.tradable()
        assert tradable is not None
        seen.append(tradable[0].tolist())
    assert [row[1] for row in seen] == [False] * 3 + [True] * 4 + [True]
    assert [row[2] for row in seen] == [True] * 5 + [False] * 3


# ------------------------------------------------------------------------ observation
def test_features_outside_a_listing_are_zero(panel):
    env = PortfolioEnv(
        panel, window=1, features=("log_return", "log_return_5"), episode_length=None
    )
    five = env.core.features[:, :, 1]
    # on the filled prices C's 5-bar return after its last bar would be log(35 / 31) ...
    assert (five[LAST_C + 1 :, 2] == 0).all()
    assert five[LAST_C, 2] == pytest.approx(np.log(35 / 30))  # ... inside: real
    one = env.core.features[:, :, 0]
    assert one[FIRST_B + 1, 1] == pytest.approx(np.log(21 / 20))


# ------------------------------------------------------------------- perturb the future
def episode(data: MarketData, weights: list[float]) -> list[tuple[np.ndarray, float]]:
    env = PortfolioEnv(
        data, window=1, features=("log_return",), random_start=False, episode_length=None
    )
    obs, info = env.reset()
    out = [(obs, info["nav"])]
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(np.array(weights, dtype=np.float32))
        out.append((obs, info["nav"]))
        done = terminated or truncated
    return out


def test_a_later_delisting_changes_nothing_before_it():
    """C is delisted after row 5 in one world and trades on (at other prices) in the other,
    where A and B also move differently after row 5. Point in time: every observation and
    NAV up to row 5 is bit-identical, and the delisting shows after it."""
    weights = [0.3, 0.3, 0.4, 0.0]
    other_future = {
        "A": [*A[: LAST_C + 1], 9.0, 8.0],
        "B": [*B[: LAST_C + 1], 30.0, 31.0],
        "C": [*C[: LAST_C + 1], 50.0, 60.0],
    }
    delisted = episode(load({"A": A, "B": B, "C": C}), weights)
    trades_on = episode(load(other_future), weights)
    rows = LAST_C  # decisions start at row 1 (log_return needs one bar): entry k is row k + 1
    for (obs_a, nav_a), (obs_b, nav_b) in zip(delisted[:rows], trades_on[:rows], strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert nav_a == nav_b
    assert delisted[rows][1] != trades_on[rows][1]


def test_drop_symbol_lets_a_later_delisting_decide_the_universe_from_the_start():
    """The same two worlds under missing='drop_symbol': C's delisting on 2024-01-08 removes
    it from the 2024-01-01 universe, so the very first observation differs."""
    full_b = [20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0]
    delisted = load({"A": A, "B": full_b, "C": C}, missing="drop_symbol")
    trades_on = load(
        {"A": A, "B": full_b, "C": [*C[: LAST_C + 1], 50.0, 60.0]}, missing="drop_symbol"
    )
    assert delisted.symbols == ("A", "B") and trades_on.symbols == ("A", "B", "C")
    first_a = episode(delisted, [0.5, 0.5, 0.0])[0][0]
    first_b = episode(trades_on, [0.3, 0.3, 0.4, 0.0])[0][0]
    assert first_a.shape != first_b.shape


def test_the_vector_env_trades_a_point_in_time_universe_as_single_envs_do():
    """Symbols listed late and delisted early in a 300-day GBM panel: four vector envs and
    four single envs, random starts and actions, agree step for step (NAV and observation)."""
    frame = gbm_market(n_assets=5, n_periods=300, seed=3).to_long_frame()
    symbols = sorted(frame["symbol"].unique())
    day = frame.groupby("symbol").cumcount()
    live = {symbols[1]: (60, 299), symbols[2]: (0, 150), symbols[3]: (100, 220)}
    keep = np.ones(len(frame), dtype=bool)
    for s, (lo, hi) in live.items():
        mine = (frame["symbol"] == s).to_numpy()
        keep &= ~mine | ((day >= lo) & (day <= hi)).to_numpy()
    data = load_frame(frame[keep])
    kwargs = {"window": 5, "episode_length": 40, "features": ("log_return", "log_return_5")}
    venv = PortfolioVectorEnv(4, data, **kwargs)
    singles = [PortfolioEnv(data, **kwargs) for _ in range(4)]
    obs, _ = venv.reset(seed=7)
    single_obs = [env.reset(seed=7 + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs, np.stack(single_obs))
    actions = np.random.default_rng(1).uniform(0, 1, size=(120, 4, 6))
    for k in range(120):
        obs, _, term, trunc, info = venv.step(actions[k])
        for i, env in enumerate(singles):
            o, _, te, tr, inf = env.step(actions[k, i])
            assert (te, tr) == (term[i], trunc[i])
            np.testing.assert_allclose(info["nav"][i], inf["nav"], rtol=1e-12)
            sim = env.sim
            t = int(sim.t[0])
            assert sim.cash[0] + sim.shares[0] @ data.close[t] == pytest.approx(sim.nav[0])
            listed = data.listed[t] if data.listed is not None else None
            assert listed is not None and (sim.shares[0][~listed] == 0).all()
            if te or tr:
                o, _ = env.reset()
            np.testing.assert_allclose(obs[i], o, rtol=1e-6, atol=1e-7)
