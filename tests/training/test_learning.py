"""PPO with the shipped bench config learns the easiest diagnostic task, fast.

The full claim (6 tasks x 5 seeds, IQM with intervals) is made by ``marketarena bench``;
this is the smoke alarm: one seeded run that must clear MeanReversion (the task the shipped
differential-Sharpe config learns most reliably: 0.72 on the bench's test split, its untrained
policy 0.00) by a wide margin, at less than 3x the reference's turnover. Momentum was the
alarm's task while the shipped reward was the log return; with the differential Sharpe it
learns Momentum less well (README, "Does RL learn here?")."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from marketarena.agents.sb3_agent import SB3Agent
from marketarena.envs import task_env_kwargs
from marketarena.evaluation.runner import run_backtest
from marketarena.evaluation.task_scores import growth, normalised_score, task_anchor_scores
from marketarena.training.config import load_config
from marketarena.training.train import train

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bench" / "ppo.yaml"


@pytest.mark.slow
def test_ppo_clears_the_mean_reversion_task_in_well_under_a_minute(tmp_path):
    config = load_config(
        CONFIG,
        [
            "env.data=marketarena/MeanReversion-v0",
            "algo.total_timesteps=160000",
            "seed=0",
            "mlflow.enabled=false",
            "training.progress_bar=false",
            "training.eval_every=40000",
            f"training.output_dir={tmp_path}",
        ],
    )
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    agent = SB3Agent.from_file((result.best_model_path or result.model_path).parent)
    env = task_env_kwargs(
        "MeanReversion", "test", window=config.env.window, features=config.env.features
    )
    backtest = run_backtest(agent, env, seed=0)
    score = normalised_score("MeanReversion", growth(backtest))
    reference_turnover = task_anchor_scores("MeanReversion")["reference"]["annual_turnover"]
    turnover = backtest.metrics()["annual_turnover"]
    assert score > 0.5, (score, turnover)
    assert turnover < 3 * reference_turnover, (score, turnover)
    assert seconds < 60
