"""Peer trading environments from PyPI, as benchmark cases driven with random actions.

Each ``*_case(seed, ...)`` builds one peer env on synthetic data from
:func:`marketarena.envs.synthetic.gbm_market` and returns a :class:`common.Case` (group
``"peer"``, one env step per call) whose ``step()`` feeds the next of a pre-generated block of
random actions (numpy, seeded) and resets the env when its episode ends. Envs are built
directly from their classes (no ``gym.make`` wrappers such as the env checker or
``OrderEnforcing``), with all printing, plotting, rendering and file output turned off.

* :func:`gym_anytrading_case` — gym-anytrading ``StocksEnv``: 1 asset, 2 discrete actions.
* :func:`gym_trading_env_case` — Gym-Trading-Env ``TradingEnv``: 1 asset, positions -1/0/1.
* :func:`finrl_stock_case` — FinRL ``StockTradingEnv`` (pandas), N assets, Box actions.
* :func:`finrl_np_case` — FinRL's numpy ``StockTradingEnv``, N assets, Box actions.
* :func:`available_peers` — every case that can be built here, and why the others cannot.

The peers are not marketarena dependencies: they live in the benchmark's own venv, made by
``bash benchmarks/setup_venv.sh``. gym-anytrading and gym-trading-env are pip-installed there;
FinRL is not installed at all (its dependencies are huge): the script extracts its two env
modules into ``benchmarks/.cache/finrl/`` and they are loaded from there by file path. In any
other environment (the dev venv, CI) :func:`available_peers` reports the peers as missing.

Imports: this module does ``from common import Case``, with ``benchmarks/`` on ``sys.path``.
Running a script in ``benchmarks/`` puts that folder there already
(``python benchmarks/peers.py`` from the repo root works); for importing it from elsewhere
this module also inserts its own folder on ``sys.path`` before importing ``common``.

Self-check (builds and times each peer on one CPU core)::

    bash benchmarks/setup_venv.sh
    benchmarks/.venv/bin/python benchmarks/peers.py
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from marketarena.envs.synthetic import gbm_market

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from common import Case, time_case  # noqa: E402

#: where ``setup_venv.sh`` extracts FinRL's env modules (with its LICENSE and a VERSION file)
FINRL_DIR = _HERE / ".cache" / "finrl"
#: bars for the single-asset peers: one episode spans the whole series, so resets are rare
SINGLE_ASSET_PERIODS = 20_000
#: bars for the FinRL envs: ten years of business days, about the span of FinRL's DOW-30
#: example (2009-2020). FinRL's pandas env does O(rows) work every step, so this matters.
FINRL_PERIODS = 2_520
#: FinRL's default technical indicators (``finrl.config.INDICATORS``)
FINRL_INDICATORS = (
    "macd",
    "boll_ub",
    "boll_lb",
    "rsi_30",
    "cci_30",
    "dx_30",
    "close_30_sma",
    "close_60_sma",
)
#: how many random actions are pre-generated; ``step()`` cycles through them
N_ACTIONS = 8_192


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _driver(env: Any, actions: Sequence[Any] | np.ndarray) -> Callable[[], object]:
    """``step()``: the env's next step on the next pre-generated action; reset at episode end."""
    n = len(actions)
    i = 0

    def step() -> object:
        nonlocal i
        out = env.step(actions[i])
        i += 1
        if i == n:
            i = 0
        if out[2] or out[3]:  # terminated or truncated
            env.reset()
        return out

    return step


# --------------------------------------------------------------------------- gym-anytrading


def gym_anytrading_case(
    seed: int = 0, *, n_periods: int = SINGLE_ASSET_PERIODS, window_size: int = 32
) -> Case:
    """gym-anytrading's ``StocksEnv`` on one synthetic close series, random Buy/Sell actions."""
    from gym_anytrading.envs import StocksEnv

    market = gbm_market(1, n_periods, seed=seed)
    df = pd.DataFrame(
        {
            "Open": market.open[:, 0],
            "High": market.high[:, 0],
            "Low": market.low[:, 0],
            "Close": market.close[:, 0],
            "Volume": market.volume[:, 0],
        },
        index=pd.DatetimeIndex(market.dates, name="Date"),
    )
    env = StocksEnv(df=df, window_size=window_size, frame_bound=(window_size, n_periods))
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, env.action_space.n, size=N_ACTIONS).tolist()
    episode = n_periods - window_size - 1
    return Case(
        name="gym-anytrading StocksEnv",
        group="peer",
        n_assets=1,
        env_steps_per_call=1,
        step=_driver(env, actions),
        notes=(
            f"gym-anytrading {_version('gym-anytrading')} StocksEnv: 1 asset, Discrete(2) "
            f"Sell/Buy, obs = {window_size}-bar window of (close, diff) as a view; "
            f"episode {episode} steps"
        ),
        extra={"n_periods": n_periods, "window": window_size, "episode_length": episode},
    )


# ---------------------------------------------------------------------------- Gym-Trading-Env


def _import_gym_trading_env() -> type:
    # gym_trading_env.environments runs warnings.filterwarnings("error") at import time, which
    # would turn every later warning in this process into an exception: undo it.
    with warnings.catch_warnings():
        from gym_trading_env.environments import TradingEnv
    return TradingEnv


def gym_trading_env_case(
    seed: int = 0,
    *,
    n_periods: int = SINGLE_ASSET_PERIODS,
    positions: tuple[float, ...] = (-1, 0, 1),
    windows: int | None = None,
) -> Case:
    """Gym-Trading-Env's ``TradingEnv`` on one synthetic OHLCV series, random positions."""
    trading_env = _import_gym_trading_env()

    market = gbm_market(1, n_periods, seed=seed)
    o, h, low, c, v = (
        a[:, 0] for a in (market.open, market.high, market.low, market.close, market.volume)
    )
    log_ret = np.diff(np.log(c), prepend=np.log(c[0]))
    df = pd.DataFrame(
        {
            "open": o,
            "high": h,
            "low": low,
            "close": c,
            "volume": v,
            # features as in the library's docs: returns and bar shape relative to the close
            "feature_log_return": log_ret,
            "feature_open": o / c,
            "feature_high": h / c,
            "feature_low": low / c,
        },
        index=pd.DatetimeIndex(market.dates, name="date"),
    )
    env = trading_env(
        df=df,
        positions=list(positions),
        windows=windows,
        trading_fees=0.001,
        borrow_interest_rate=0.0,
        portfolio_initial_value=1000,
        initial_position=0,  # not 'random': that draws from the global np.random at reset
        max_episode_duration="max",
        verbose=0,  # 1 prints the episode's returns at its end
        name="SYN",
        render_mode=None,
    )
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, len(positions), size=N_ACTIONS).tolist()
    episode = n_periods - 1 - (0 if windows is None else windows - 1)
    return Case(
        name="Gym-Trading-Env TradingEnv",
        group="peer",
        n_assets=1,
        env_steps_per_call=1,
        step=_driver(env, actions),
        notes=(
            f"gym-trading-env {_version('gym-trading-env')} TradingEnv: 1 asset, "
            f"Discrete({len(positions)}) positions {list(positions)}, 0.1% fees, obs = "
            f"{'1 bar' if windows is None else f'{windows} bars'} of 4 features + 2 dynamic "
            f"ones, log-value reward, history of every step in an object array; "
            f"episode {episode} steps"
        ),
        extra={"n_periods": n_periods, "windows": windows, "episode_length": episode},
    )


# ---------------------------------------------------------------------------------- FinRL


def _load_finrl_module(filename: str, finrl_dir: Path = FINRL_DIR) -> ModuleType:
    """Import one of FinRL's env modules from ``benchmarks/.cache/finrl`` by file path."""
    path = Path(finrl_dir) / filename
    name = f"_finrl_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run bash benchmarks/setup_venv.sh")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _finrl_version(finrl_dir: Path = FINRL_DIR) -> str:
    try:
        return (Path(finrl_dir) / "VERSION").read_text().strip()
    except OSError:
        return "unknown"


def _wide_indicators(market: Any) -> dict[str, pd.DataFrame]:
    """Stand-ins for FinRL's stockstats indicators, (T, N) frames computed with pandas.

    The values only need to be plausible: the envs copy them into the state and never
    branch on them (bar FinRL's odd ``state[macd] != True`` check), so their count, not their
    exact definition, sets the cost of a step.
    """
    close = pd.DataFrame(market.close)
    high, low = pd.DataFrame(market.high), pd.DataFrame(market.low)
    sma20, std20 = close.rolling(20, min_periods=1).mean(), close.rolling(20, min_periods=1).std()
    delta = close.diff()
    up = delta.clip(lower=0).ewm(alpha=1 / 30, adjust=False).mean()
    down = (-delta).clip(lower=0).ewm(alpha=1 / 30, adjust=False).mean()
    typical = (high + low + close) / 3
    tp_std = typical.rolling(30, min_periods=1).std()
    prev_close = close.shift()
    true_range = np.maximum(
        high - low, np.maximum((high - prev_close).abs(), (low - prev_close).abs())
    )
    up_move, down_move = high.diff(), -low.diff()
    plus_dm = up_move.where((up_move > down_move) & (up_move > 0), 0.0)
    minus_dm = down_move.where((down_move > up_move) & (down_move > 0), 0.0)
    atr = true_range.ewm(alpha=1 / 30, adjust=False).mean()
    plus_di = 100 * plus_dm.ewm(alpha=1 / 30, adjust=False).mean() / atr
    minus_di = 100 * minus_dm.ewm(alpha=1 / 30, adjust=False).mean() / atr
    out = {
        "macd": close.ewm(span=12, adjust=False).mean() - close.ewm(span=26, adjust=False).mean(),
        "boll_ub": sma20 + 2 * std20,
        "boll_lb": sma20 - 2 * std20,
        "rsi_30": 100 - 100 / (1 + up / down),
        "cci_30": (typical - typical.rolling(30, min_periods=1).mean()) / (0.015 * tp_std),
        "dx_30": 100 * (plus_di - minus_di).abs() / (plus_di + minus_di),
        "close_30_sma": close.rolling(30, min_periods=1).mean(),
        "close_60_sma": close.rolling(60, min_periods=1).mean(),
    }
    return {k: v.replace([np.inf, -np.inf], np.nan).bfill().fillna(0.0) for k, v in out.items()}


def finrl_dataframe(
    n_assets: int, n_periods: int = FINRL_PERIODS, *, seed: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """A FinRL-format frame from ``gbm_market``: long format sorted by (date, tic), the index
    the day number repeated for each tic (as FinRL's ``data_split`` leaves it), with columns
    date, open, high, low, close, volume, tic, day and the indicators."""
    market = gbm_market(n_assets, n_periods, seed=seed)
    t, n = market.close.shape
    indicators = _wide_indicators(market)
    dates = pd.DatetimeIndex(market.dates).strftime("%Y-%m-%d").to_numpy()
    columns: dict[str, np.ndarray] = {
        "date": np.repeat(dates, n),
        "open": market.open.ravel(),
        "high": market.high.ravel(),
        "low": market.low.ravel(),
        "close": market.close.ravel(),
        "volume": market.volume.ravel(),
        "tic": np.tile(np.asarray(market.symbols, dtype=object), t),
        "day": np.repeat(np.arange(t) % 5, n),  # FinRL's day of week
    }
    for name in FINRL_INDICATORS:
        columns[name] = indicators[name].to_numpy().ravel()
    df = pd.DataFrame(columns)
    df.index = df["date"].factorize()[0]
    return df, list(FINRL_INDICATORS)


def finrl_stock_case(
    seed: int = 0,
    n_assets: int = 30,
    *,
    n_periods: int = FINRL_PERIODS,
    initial_amount: float = 1_000_000,
    finrl_dir: Path = FINRL_DIR,
) -> Case:
    """FinRL's pandas ``StockTradingEnv`` with the parameters of its DOW-30 example.

    hmax 100, 0.1% buy and sell costs, reward_scaling 1e-4, no turbulence threshold (as in
    training), state_space = 1 + 2 N + len(indicators) N. ``initial_amount`` is the example's
    1,000,000 (with 10,000 the cash runs out after a few buys; the per-step work is the same).
    """
    module = _load_finrl_module("env_stocktrading.py", finrl_dir)
    df, indicators = finrl_dataframe(n_assets, n_periods, seed=seed)
    env = module.StockTradingEnv(
        df=df,
        stock_dim=n_assets,
        hmax=100,
        initial_amount=initial_amount,
        num_stock_shares=[0] * n_assets,
        buy_cost_pct=[0.001] * n_assets,
        sell_cost_pct=[0.001] * n_assets,
        reward_scaling=1e-4,
        state_space=1 + 2 * n_assets + len(indicators) * n_assets,
        action_space=n_assets,
        tech_indicator_list=indicators,
        turbulence_threshold=None,
        make_plots=False,  # True saves a png into results/ at every episode end
        print_verbosity=sys.maxsize,  # prints a summary when episode % print_verbosity == 0
        model_name="",  # with model_name and mode set it writes csv/png files into results/
        mode="",
    )
    env.reset()  # episode 0 -> 1, so that the print condition above can never hold
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1.0, 1.0, size=(N_ACTIONS, n_assets)).astype(np.float32)
    return Case(
        name="FinRL StockTradingEnv",
        group="peer",
        n_assets=n_assets,
        env_steps_per_call=1,
        step=_driver(env, actions),
        notes=(
            f"FinRL {_finrl_version(finrl_dir)} env_stocktrading.StockTradingEnv: "
            f"{n_assets} assets, Box(-1, 1) -> integer share orders (hmax 100), Python loop "
            f"over assets, state a Python list, df.loc per step and len(df.index.unique()) / "
            f"df.tic.unique() over all {n_periods * n_assets} rows every step; episode "
            f"{n_periods - 1} steps"
        ),
        extra={"n_periods": n_periods, "episode_length": n_periods - 1},
    )


def finrl_np_case(
    seed: int = 0,
    n_assets: int = 30,
    *,
    n_periods: int = FINRL_PERIODS,
    finrl_dir: Path = FINRL_DIR,
) -> Case:
    """FinRL's numpy ``StockTradingEnv`` (``env_stocktrading_np``) on the same synthetic data.

    Config arrays as FinRL's ``df_to_array`` builds them: price_array (T, N), tech_array
    (T, N * indicators) grouped by tic, turbulence_array (T,) — zeros here, i.e. never over
    the threshold. ``if_train=False``: with True, reset draws random initial holdings from the
    global ``np.random``. Other parameters are the env's defaults (max_stock 100, 0.1% costs).
    """
    module = _load_finrl_module("env_stocktrading_np.py", finrl_dir)
    market = gbm_market(n_assets, n_periods, seed=seed)
    indicators = _wide_indicators(market)
    # per tic, its indicators side by side: [tic0 ind0..ind7, tic1 ind0..ind7, ...]
    tech = np.stack([indicators[k].to_numpy() for k in FINRL_INDICATORS], axis=2)
    config = {
        "price_array": market.close.copy(),
        "tech_array": tech.reshape(n_periods, -1),
        "turbulence_array": np.zeros(n_periods),
        "if_train": False,
    }
    env = module.StockTradingEnv(config)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1.0, 1.0, size=(N_ACTIONS, n_assets)).astype(np.float32)
    return Case(
        name="FinRL StockTradingEnv (numpy)",
        group="peer",
        n_assets=n_assets,
        env_steps_per_call=1,
        step=_driver(env, actions),
        notes=(
            f"FinRL {_finrl_version(finrl_dir)} env_stocktrading_np.StockTradingEnv: "
            f"{n_assets} assets, Box(-1, 1) -> integer share orders (max_stock 100), "
            f"Python loop over the assets that trade, np.hstack state; episode "
            f"{n_periods - 1} steps"
        ),
        extra={"n_periods": n_periods, "episode_length": n_periods - 1},
    )


# ---------------------------------------------------------------------------------- all of them

PEER_BUILDERS: dict[str, Callable[..., Case]] = {
    "gym-anytrading": gym_anytrading_case,
    "gym-trading-env": gym_trading_env_case,
    "finrl": finrl_stock_case,
    "finrl-np": finrl_np_case,
}


def available_peers(seed: int = 0, n_assets: int = 30) -> tuple[list[Case], dict[str, str]]:
    """Build every peer case that can be built here.

    Returns the cases and, for each peer that could not be built, the reason (e.g. the
    package is not installed: the dev venv has none of them). The multi-asset FinRL envs get
    ``n_assets``; the others have one asset.
    """
    cases: list[Case] = []
    missing: dict[str, str] = {}
    for key, build in PEER_BUILDERS.items():
        try:
            if key.startswith("finrl"):
                cases.append(build(seed, n_assets))
            else:
                cases.append(build(seed))
        except Exception as exc:
            missing[key] = f"{type(exc).__name__}: {exc}"
    return cases, missing


def _main() -> None:
    import os

    # one CPU core, as in the benchmark
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cases, missing = available_peers()
    for case in cases:
        r = time_case(case, min_seconds=0.3, repeats=3)
        print(
            f"{case.name:32s} n_assets={case.n_assets:<3d} {r['steps_per_second']:>11,.0f} "
            f"steps/s  (min {r['min']:,.0f}, max {r['max']:,.0f})"
        )
        print(f"    {case.notes}")
    for key, why in missing.items():
        print(f"{key:32s} not available: {why}")
    if missing:
        print("(build the peers' venv with: bash benchmarks/setup_venv.sh)")


if __name__ == "__main__":
    _main()
