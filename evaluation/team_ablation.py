"""What each role of an LLM team adds: the same team backtested with roles removed.

Every variant runs over the same data, dates, rules and seed as the full team, each a fresh
:class:`~marketarena.agents.llm_team.TeamAgent` built from the same YAML with
:meth:`~marketarena.agents.llm_team.TeamSpec.without` (a removed role's readers read its inputs
instead). The variants share the team's LLM cache: a turn whose request a removal leaves
unchanged is answered from the cache (an analyst upstream of the removed role, until the
variants' portfolios part: every prompt shows the portfolio), and a rerun asks nothing.

Timing as in every backtest: each decision after the close of bar t, filled at the next bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marketarena.agents.llm_team import TeamAgent, load_team
from marketarena.envs.data import MarketData, resolve_data
from marketarena.envs.settings import EnvSettings
from marketarena.evaluation.runner import BacktestProgress, run_backtest


@dataclass(frozen=True)
class AblationRow:
    """One variant's results: ``removed`` roles (none for the full team), total return,
    Sharpe ratio, annual turnover, trading costs (currency), LLM cost (USD), tokens (prompt +
    completion) and decisions that held (fallbacks)."""

    variant: str
    removed: tuple[str, ...]
    total_return: float
    sharpe: float
    annual_turnover: float
    trading_costs: float
    llm_cost_usd: float
    tokens: int
    fallbacks: int


def ablation_variants(
    path: str | Path, without: Sequence[Sequence[str]] | None = None
) -> list[tuple[str, ...]]:
    """The roles each variant removes, the full team first: ``without`` as given, or (None)
    every single role but the final one, in the YAML's order. Checked against the team."""
    spec = load_team(path)
    variants: list[tuple[str, ...]]
    if without is None:
        variants = [(r,) for r in spec.roles if r != spec.final]
    else:
        variants = [tuple(v) for v in without]
    for removed in variants:
        spec.without(removed)  # an unknown or final role is a ConfigError naming it
    return [(), *dict.fromkeys(variants)]


def ablate_team(
    path: str | Path,
    data: str | Path | MarketData,
    start: str | None,
    end: str | None,
    *,
    without: Sequence[Sequence[str]] | None = None,
    options: Mapping[str, Any] | None = None,
    settings: EnvSettings | None = None,
    universe: Sequence[str] | None = None,
    seed: int = 0,
    progress: BacktestProgress | None = None,
) -> list[AblationRow]:
    """Backtest the team of ``path`` and its variants (:func:`ablation_variants`) over
    ``data`` from ``start`` to ``end``; a row per variant, the full team first.

    ``options``: the team's options (``base_url``, ``cache_path``, ...; see
    :data:`~marketarena.agents.llm_team.TEAM_OPTIONS`). ``settings``: the env's (default:
    :class:`~marketarena.envs.settings.EnvSettings`' defaults, as ``marketarena evaluate``).
    ``progress(variant, seed, step, total)`` as each backtest moves.
    """
    variants = ablation_variants(path, without)
    market = resolve_data(data)
    if universe:
        market = market.select(tuple(universe))
    env_settings = settings or EnvSettings()
    rows = []
    for removed in variants:
        agent = TeamAgent.from_file(path, options, without=removed)
        variant = "full team" if not removed else "without " + ", ".join(removed)

        def report(step: int, total: int, variant: str = variant) -> None:
            if progress is not None:
                progress(variant, seed, step, total)

        result = run_backtest(
            agent,
            {"data": market, "settings": env_settings},
            start,
            end,
            seed=seed,
            progress=report,
        )
        metrics = result.metrics()
        d = agent.diagnostics()
        rows.append(
            AblationRow(
                variant=variant,
                removed=tuple(removed),
                total_return=metrics["total_return"],
                sharpe=metrics["sharpe"],
                annual_turnover=metrics["annual_turnover"],
                trading_costs=float(result.costs.sum()),
                llm_cost_usd=float(d["cost_usd"]),
                tokens=int(d["prompt_tokens"] + d["completion_tokens"]),
                fallbacks=int(d["fallbacks"]),
            )
        )
    return rows
