"""Market data, the portfolio simulator and the Gymnasium environments.

Importing this package registers the environment ids:

* ``marketarena/Portfolio-v0``: :class:`PortfolioEnv` on the bundled 20-stock adjusted-close
  panel (``sp500_20``, 1990-2022), next-close fills.
* ``marketarena/PortfolioOHLCV-v0``: the same on the bundled 30-stock OHLCV sample
  (``sp500_ohlcv_30``), next-open fills.

* ``marketarena/<Task>-v0``: the diagnostic tasks of :mod:`marketarena.envs.tasks`
  (``Momentum``, ``MeanReversion``, ``VolTiming``, ``LeadLag``, ``CostAware``, ``Noise``,
  ``SP500``) over their train splits.

All have a ``vector_entry_point``: ``gymnasium.make_vec(id, num_envs=N,
vectorization_mode="vector_entry_point")`` returns a :class:`PortfolioVectorEnv`.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from marketarena.envs.data import (
    BUNDLED,
    DataValidationError,
    DataWarning,
    MarketData,
    from_long_frame,
    from_wide_frame,
    load_csv,
    load_dataset,
    load_file,
    load_parquet,
    resolve_data,
)
from marketarena.envs.errors import (
    ConfigError,
    DataError,
    MarketArenaError,
    MissingFileError,
    UnknownNameError,
)
from marketarena.envs.features import available_features, compute_features, register_feature
from marketarena.envs.indicators import (
    available_indicators,
    compute_indicator,
    indicator,
    resolve_indicator,
)
from marketarena.envs.macro import load_macro, macro_values, with_macro
from marketarena.envs.news import latest_headlines, load_news, news_features, with_news
from marketarena.envs.portfolio_env import MarketSnapshot, PortfolioEnv
from marketarena.envs.rewards import (
    DifferentialSharpeReward,
    DrawdownPenalizedReward,
    LogReturnReward,
    RewardFunction,
    make_reward,
)
from marketarena.envs.settings import EnvSettings
from marketarena.envs.simulator import Simulator, StepResult, TradingRules, project_weights
from marketarena.envs.splits import (
    DateRange,
    DateSplits,
    split_by_dates,
    split_by_fractions,
    walk_forward,
)
from marketarena.envs.synthetic import gbm_market, regime_switching_market
from marketarena.envs.tasks import TASKS, Task, get_task, register_tasks, task_env_kwargs
from marketarena.envs.vector_env import PortfolioVectorEnv

TASK_IDS = tuple(t.env_id for t in TASKS.values())
ENV_IDS = ("marketarena/Portfolio-v0", "marketarena/PortfolioOHLCV-v0", *TASK_IDS)

if "marketarena/Portfolio-v0" not in registry:
    register(
        id="marketarena/Portfolio-v0",
        entry_point="marketarena.envs.portfolio_env:PortfolioEnv",
        vector_entry_point="marketarena.envs.vector_env:PortfolioVectorEnv",
        kwargs={"data": "sp500_20"},
    )
    register(
        id="marketarena/PortfolioOHLCV-v0",
        entry_point="marketarena.envs.portfolio_env:PortfolioEnv",
        vector_entry_point="marketarena.envs.vector_env:PortfolioVectorEnv",
        kwargs={"data": "sp500_ohlcv_30", "episode_length": 64},
    )
register_tasks()

__all__ = [
    "BUNDLED",
    "ENV_IDS",
    "TASKS",
    "TASK_IDS",
    "ConfigError",
    "DataError",
    "DataValidationError",
    "DataWarning",
    "DateRange",
    "DateSplits",
    "DifferentialSharpeReward",
    "DrawdownPenalizedReward",
    "EnvSettings",
    "LogReturnReward",
    "MarketArenaError",
    "MarketData",
    "MarketSnapshot",
    "MissingFileError",
    "PortfolioEnv",
    "PortfolioVectorEnv",
    "RewardFunction",
    "Simulator",
    "StepResult",
    "Task",
    "TradingRules",
    "UnknownNameError",
    "available_features",
    "available_indicators",
    "compute_features",
    "compute_indicator",
    "from_long_frame",
    "from_wide_frame",
    "gbm_market",
    "get_task",
    "indicator",
    "latest_headlines",
    "load_csv",
    "load_dataset",
    "load_file",
    "load_macro",
    "load_news",
    "load_parquet",
    "macro_values",
    "make_reward",
    "news_features",
    "project_weights",
    "regime_switching_market",
    "register_feature",
    "register_tasks",
    "resolve_data",
    "resolve_indicator",
    "split_by_dates",
    "split_by_fractions",
    "task_env_kwargs",
    "walk_forward",
    "with_macro",
    "with_news",
]
