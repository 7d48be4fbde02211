"""The demo: agents trading the bundled 20-stock panel over a fixed test period."""

from __future__ import annotations

from dataclasses import dataclass

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


def run_demo(config: DemoConfig = DemoConfig()) -> EvaluationReport:
    """Backtest the demo's agents over its date range, against the S&P 500 index."""
    return evaluate(
        EvaluationConfig(
            agents=config.agents,
            data=config.data,
            start=config.start,
            end=config.end,
            seeds=config.seed_count,
            rules={"commission_bps": config.commission_bps, "slippage_bps": config.slippage_bps},
            title=f"marketarena demo: {config.data}, {config.start} to {config.end}",
        )
    )
