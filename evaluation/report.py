"""Reports: the metrics table (terminal, JSON, CSV), plots, and a self-contained HTML page.

An :class:`EvaluationReport` holds every agent's per-seed results. Metrics are medians across
seeds (with the interquartile mean and the range of the Sharpe ratio when there are several),
and the Sharpe ratio and total return carry a stationary-bootstrap confidence interval from the
daily returns of the agent's median-Sharpe run.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from marketarena.agents.llm_team import transcript_markdown
from marketarena.agents.llm_tool_agent import report_transcripts
from marketarena.envs.data import SymbolCoverage
from marketarena.envs.data import periods_per_year as data_periods_per_year
from marketarena.envs.errors import MissingFileError
from marketarena.envs.regimes import Regimes
from marketarena.evaluation import metrics, plots, tearsheet
from marketarena.evaluation import regimes as by_regime
from marketarena.evaluation.metrics import DrawdownPeriod
from marketarena.evaluation.runner import AgentEvaluation, BacktestResult

#: columns of the terminal table: (metric key, header, format)
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("final_nav", "NAV", "money"),
    ("total_return", "return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("volatility", "vol", "abs_pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "max DD", "pct"),
    ("cvar_95", "CVaR95", "pct"),
    ("annual_turnover", "turnover/yr", "num"),
    ("total_costs", "costs", "money"),
)
BENCHMARK_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("beta", "beta", "num"),
    ("alpha", "alpha", "pct"),
    ("information_ratio", "IR", "num"),
)


def format_value(value: float | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if kind == "pct":
        return f"{value:+.2%}"
    if kind == "pct0":
        return f"{value:+.0%}"
    if kind == "abs_pct":
        return f"{value:.2%}"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:.2f}"


def _bootstrap_block(n: int) -> int:
    return max(1, round(n ** (1 / 3)))


@dataclass
class AgentRow:
    """One agent's line of the report."""

    agent: str
    seeds: list[int | None]
    metrics: dict[str, float]
    sharpe_ci: tuple[float, float]
    total_return_ci: tuple[float, float]
    sharpe_iqm: float
    sharpe_range: tuple[float, float]
    representative: BacktestResult
    deflated_sharpe: float = float("nan")
    diagnostics: dict[str, Any] = field(default_factory=dict)
    #: the representative run split by regime, per detector kind
    regime_stats: dict[str, list[by_regime.RegimeStats]] = field(default_factory=dict)

    # not `metrics.DrawdownPeriod`: in the class body `metrics` is the field above
    def drawdowns(self, top: int = 3) -> list[DrawdownPeriod]:
        """The deepest drawdowns of the representative run, with dates."""
        res = self.representative
        return metrics.drawdown_periods(
            res.returns, dates=res.dates[1:], top=top, start_date=res.dates[0]
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"agent": self.agent, "seeds": self.seeds, **self.metrics}
        out["sharpe_ci_low"], out["sharpe_ci_high"] = self.sharpe_ci
        out["total_return_ci_low"], out["total_return_ci_high"] = self.total_return_ci
        out["sharpe_iqm"] = self.sharpe_iqm
        out["sharpe_min"], out["sharpe_max"] = self.sharpe_range
        out["deflated_sharpe"] = self.deflated_sharpe
        out.update(flat_diagnostics(self.diagnostics))
        for rule, counts in self.representative.intervention_counts().items():
            out[f"risk_{rule}_decisions"] = counts["decisions"]
            out[f"risk_{rule}_weight_moved"] = counts["weight_moved"]
        for kind, stats in self.regime_stats.items():
            out.update(by_regime.flat_regime_metrics(kind, stats))
        worst = self.drawdowns(top=1)
        if worst:
            dd = worst[0]
            out["max_drawdown_peak"] = str(dd.peak)
            out["max_drawdown_trough"] = str(dd.trough)
            out["max_drawdown_recovery"] = None if dd.recovery is None else str(dd.recovery)
            out["max_drawdown_duration"] = dd.duration
        return out


@dataclass
class EvaluationReport:
    """Every agent's results over one date range, ready to print and write."""

    title: str
    evaluations: list[AgentEvaluation]
    settings: dict[str, Any] = field(default_factory=dict)
    periods_per_year: int = metrics.PERIODS_PER_YEAR
    risk_free: float = 0.0
    ci_level: float = 0.95
    bootstrap_resamples: int = 1000
    #: regimes to split every agent's performance by (kind -> labels over the run's dates),
    #: and the sector relative strength over them (None, and why in ``sector_note``)
    regimes: dict[str, Regimes] = field(default_factory=dict)
    sector_strength: pd.DataFrame | None = None
    sector_note: str = ""
    _rows: list[AgentRow] | None = None

    def __post_init__(self) -> None:
        """On intraday results the daily default 252 means "not set": ``periods_per_year``
        becomes that of their bars (:func:`~marketarena.envs.data.periods_per_year`, 252 x 78
        for 5-minute bars), from the first intraday result."""
        if self.periods_per_year != metrics.PERIODS_PER_YEAR:
            return
        for result in (r for e in self.evaluations for r in e.results):
            if result.dates.dtype != np.dtype("datetime64[D]"):
                self.periods_per_year = data_periods_per_year(result.dates)
                return

    def rows(self) -> list[AgentRow]:
        if self._rows is None:
            rows = [self._row(e) for e in self.evaluations]
            # every agent compared here is one trial: deflate each Sharpe by their number
            # and by the spread of their Sharpe ratios (Bailey & Lopez de Prado, 2014)
            sharpes = [
                r.metrics["sharpe"] for r in rows if r.metrics["sharpe"] == r.metrics["sharpe"]
            ]
            variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else None
            for row in rows:
                row.deflated_sharpe = float(
                    metrics.deflated_sharpe_ratio(
                        row.representative.returns,
                        n_trials=len(rows),
                        trials_sharpe_variance=variance,
                        periods_per_year=self.periods_per_year,
                        risk_free=self.risk_free,
                    )
                )
            self._rows = rows
        return self._rows

    def _row(self, evaluation: AgentEvaluation) -> AgentRow:
        kw: dict[str, Any] = {
            "periods_per_year": self.periods_per_year,
            "risk_free": self.risk_free,
        }
        per_seed = evaluation.per_seed_metrics(**kw)
        agg = evaluation.aggregate(**kw)
        sharpes = [m["sharpe"] for m in per_seed]
        order = sorted(range(len(sharpes)), key=lambda i: (math.isnan(sharpes[i]), sharpes[i]))
        rep = evaluation.results[order[(len(order) - 1) // 2]]
        r = rep.returns
        block = _bootstrap_block(len(r))
        ci_kw: dict[str, Any] = {
            "n_resamples": self.bootstrap_resamples,
            "level": self.ci_level,
            "seed": 0,
            "block_length": block,
        }
        return AgentRow(
            agent=evaluation.agent,
            seeds=[res.seed for res in evaluation.results],
            metrics={k: v["median"] for k, v in agg.items()},
            sharpe_ci=metrics.bootstrap_confidence_interval(r, metrics.sharpe_ratio, **ci_kw, **kw),
            total_return_ci=metrics.bootstrap_confidence_interval(r, metrics.total_return, **ci_kw),
            sharpe_iqm=agg["sharpe"]["iqm"],
            sharpe_range=(agg["sharpe"]["min"], agg["sharpe"]["max"]),
            representative=rep,
            diagnostics=rep.diagnostics,
            regime_stats={
                kind: by_regime.split_by_regime(rep, labels, **kw)
                for kind, labels in self.regimes.items()
            },
        )

    @property
    def has_benchmark(self) -> bool:
        return any(e.results[0].benchmark is not None for e in self.evaluations)

    # ------------------------------------------------------------------ tables
    def table(self) -> Table:
        level = f"{self.ci_level:.0%}"
        table = Table(
            title=self.title or None,
            title_justify="left",
            caption=f"\\[brackets]: {level} stationary-bootstrap intervals; "
            "all metrics in metrics.csv and report.html",
            caption_justify="left",
        )
        table.add_column("agent", no_wrap=True)
        columns = list(TABLE_COLUMNS) + (list(BENCHMARK_COLUMNS) if self.has_benchmark else [])
        for _, header, _ in columns:
            table.add_column(header, justify="right", no_wrap=True)
        for row in self.rows():
            cells = []
            for key, _, kind in columns:
                cell = format_value(row.metrics.get(key, float("nan")), kind)
                if key == "sharpe":
                    lo, hi = row.sharpe_ci
                    cell += f" \\[{format_value(lo, kind)}, {format_value(hi, kind)}]"
                elif key == "total_return":
                    lo, hi = row.total_return_ci
                    cell += f" \\[{format_value(lo, 'pct0')}, {format_value(hi, 'pct0')}]"
                cells.append(cell)
            table.add_row(escape(row.agent), *cells)
        return table

    def regime_tables(self) -> list[Table]:
        """A table per regime kind: every agent's representative run split by regime."""
        rows = self.rows()
        return [
            by_regime.regime_table(labels, [(r.agent, r.regime_stats[kind]) for r in rows])
            for kind, labels in self.regimes.items()
        ]

    def _regimes_html(self) -> str:
        parts = []
        for kind, labels in self.regimes.items():
            stats = [(r.agent, r.regime_stats[kind]) for r in self.rows()]
            parts.append(f"<h2>By {html.escape(kind)} regime</h2>")
            parts.append(by_regime.regime_html(labels, stats))
            parts.append(by_regime.figure_html(f"regimes: {kind}", by_regime.regime_figure(labels)))
        if self.regimes:
            parts.append(f"<p>{html.escape(self.sector_note)}</p>")
        if self.sector_strength is not None and not self.sector_strength.empty:
            figure = by_regime.sector_figure(self.sector_strength)
            parts.append(by_regime.figure_html("sector rotation", figure))
        return "\n".join(parts)

    def notes(self) -> list[str]:
        """One line per LLM agent: its decisions, outcomes, tokens, cost and latency; one per
        agent the risk layer changed: the decisions each rule changed and the weight it
        moved (in its representative run)."""
        lines = []
        for row in self.rows():
            res = row.representative
            rules = res.intervention_counts()
            if rules:
                changed = len({record["date"] for record in res.interventions})
                per_rule = ", ".join(
                    f"{rule} {c['decisions']:.0f} (weight moved {c['weight_moved']:.2f})"
                    for rule, c in rules.items()
                )
                lines.append(
                    f"{row.agent}: the risk layer changed {changed} of {len(res.turnover)} "
                    f"decisions: {per_rule}"
                )
            d = row.diagnostics
            if "sleeve_weights" in d:  # a multi-strategy allocator
                sleeves = ", ".join(
                    f"{name} {w:.0%}"
                    for name, w in zip(d["members"], d["sleeve_weights"], strict=True)
                )
                line = f"{row.agent}: sleeves at the end {sleeves}; {d['rebalances']} rebalances"
                if "diversification_ratio" in d:
                    contributions = ", ".join(f"{c:.0%}" for c in d["risk_contributions"])
                    line += (
                        f"; risk contributions {contributions}; diversification ratio "
                        f"{d['diversification_ratio']:.2f}"
                    )
                corr = d.get("correlation")
                if corr is not None and len(corr) > 1:
                    pairs = [corr[i][j] for i in range(len(corr)) for j in range(i + 1, len(corr))]
                    line += f"; mean sleeve correlation {np.mean(pairs):.2f}"
                lines.append(line)
            if "outcomes" not in d:
                continue
            counts = ", ".join(f"{v} {k}" for k, v in d["outcomes"].items() if v)
            lines.append(
                f"{row.agent}: {d['decisions']} decisions ({counts or 'none'}); "
                f"{d['fallbacks']} fallbacks; {d['prompt_tokens']:,} prompt + "
                f"{d['completion_tokens']:,} completion tokens; ${d['cost_usd']:.4f}; "
                f"{d['cached']} from the cache; mean latency {d['mean_latency_s']:.2f} s"
            )
            for role, r in d.get("roles", {}).items():  # an LLM team: each role's share
                lines.append(
                    f"{row.agent} / {role}: {r['turns']} turns, {r['failures']} failed; "
                    f"{r['prompt_tokens']:,} prompt + {r['completion_tokens']:,} completion "
                    f"tokens; ${r['cost_usd']:.4f}; {r['tool_calls']} tool calls"
                )
        return lines

    def transcripts_html(self) -> str:
        """The transcript of every decision of each LLM team and ``llm-tools`` agent (its
        representative run), a collapsed section per decision: each turn's request, tool calls
        with their results, answer and tokens."""
        parts = []
        for row in self.rows():
            decisions = _transcripts(row.diagnostics)
            if not decisions:
                continue
            parts.append(f"<h2>Transcripts: {html.escape(row.agent)}</h2>")
            for decision in decisions:
                text = "\n".join(transcript_markdown([decision]))
                summary = f"{decision['date']}: {decision['outcome']}"
                parts.append(
                    f"<details><summary>{html.escape(summary)}</summary>"
                    f"<pre>{html.escape(text)}</pre></details>"
                )
        return "\n".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "settings": self.settings,
            "periods_per_year": self.periods_per_year,
            "risk_free": self.risk_free,
            "ci_level": self.ci_level,
            "agents": [r.as_dict() for r in self.rows()],
        }

    # ------------------------------------------------------------------- files
    def write(self, output: str | Path, *, results: bool = True) -> dict[str, Path]:
        """Write metrics.json, metrics.csv, daily CSVs, plots, report.html (and the saved
        results, so the report can be rebuilt with :func:`load_report`)."""
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        files["json"] = out / "metrics.json"
        files["json"].write_text(json.dumps(self.as_dict(), indent=2, default=_jsonable))
        files["csv"] = out / "metrics.csv"
        records = [r.as_dict() for r in self.rows()]
        keys = list(dict.fromkeys(k for record in records for k in record))
        with files["csv"].open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            for record in records:
                writer.writerow({k: _csv_value(record.get(k)) for k in keys})
        reps = [r.representative for r in self.rows()]
        for row, evaluation in zip(self.rows(), self.evaluations, strict=True):
            slug = slugify(row.agent)
            row.representative.to_frame().to_csv(out / f"daily_{slug}.csv", index=False)
            if results:
                for res in evaluation.results:
                    res.save(out / "results" / f"{slug}__seed{res.seed}")
        images = {
            "equity": plots.equity_curves(reps, out / "equity.png"),
            "drawdown": plots.drawdowns(reps, out / "drawdown.png"),
            "rolling_sharpe": plots.rolling_sharpe(
                reps, out / "rolling_sharpe.png", periods_per_year=self.periods_per_year
            ),
        }
        for res in reps:
            images[f"weights: {res.agent}"] = plots.weights(
                res, out / f"weights_{slugify(res.agent)}.png"
            )
        files.update({f"png:{k}": v for k, v in images.items()})
        files["html"] = out / "report.html"
        files["html"].write_text(self.html())
        for row in self.rows():  # an LLM team's (or llm-tools') transcripts, as Markdown too
            decisions = _transcripts(row.diagnostics)
            if decisions:
                path = out / f"transcripts_{slugify(row.agent)}.md"
                lines = transcript_markdown(decisions)
                path.write_text(f"# Transcripts: {row.agent}\n\n" + "\n".join(lines) + "\n")
                files[f"transcripts:{row.agent}"] = path
        if results:
            (out / "report.json").write_text(
                json.dumps(
                    {
                        "title": self.title,
                        "settings": self.settings,
                        "periods_per_year": self.periods_per_year,
                        "risk_free": self.risk_free,
                        "ci_level": self.ci_level,
                        "regimes": {k: v.to_dict() for k, v in self.regimes.items()},
                        "sector_strength": None
                        if self.sector_strength is None
                        else by_regime.sector_frame_to_dict(self.sector_strength),
                        "sector_note": self.sector_note,
                        "runs": {
                            e.agent: [
                                f"results/{slugify(e.agent)}__seed{r.seed}" for r in e.results
                            ]
                            for e in self.evaluations
                        },
                    },
                    indent=2,
                    default=_jsonable,
                )
            )
        return files

    def benchmark_row(self) -> dict[str, Any] | None:
        """The benchmark's metrics (of the first run that has one), as a table row."""
        res = next(
            (r for r in (row.representative for row in self.rows()) if r.benchmark is not None),
            None,
        )
        if res is None or res.benchmark is None or res.benchmark_returns is None:
            return None
        out: dict[str, Any] = {
            "agent": f"benchmark: {res.benchmark_name or 'benchmark'}",
            "seeds": [],
            **metrics.summary(
                res.benchmark_returns,
                risk_free=self.risk_free,
                periods_per_year=self.periods_per_year,
            ),
        }
        # the benchmark as if it had started with the agents' capital
        out["final_nav"] = float(res.nav[0] * res.benchmark[-1] / res.benchmark[0])
        return out

    def html(self) -> str:
        """One HTML tearsheet: the formatted metrics table (with the benchmark's row) and
        interactive plotly charts, plotly.js inlined once: nothing else to ship or fetch.
        (The PNG plots are written beside it, for documents that cannot run scripts.)"""
        rows = [r.as_dict() for r in self.rows()]
        # the regime split has its own tables below
        keys = [k for k in rows[0] if k not in ("agent", "seeds") and not k.startswith("regime_")]
        bench = self.benchmark_row()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in ["agent", *keys])

        def line(r: dict[str, Any], cls: str) -> str:
            return (
                f'<tr class="{cls}"><td>'
                + html.escape(str(r["agent"]))
                + "</td>"
                + "".join(f"<td>{html_metric(k, r.get(k))}</td>" for k in keys)
                + "</tr>"
            )

        body = "".join(line(r, "agent") for r in rows)
        if bench is not None:
            body += line(bench, "benchmark")
        reps = [r.representative for r in self.rows()]
        charts = tearsheet.render(tearsheet.figures(reps, periods_per_year=self.periods_per_year))
        settings = html.escape(json.dumps(self.settings, indent=2, default=_jsonable))
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.8rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.4rem; text-align: right; white-space: nowrap; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.benchmark td {{ font-style: italic; background: #f3f3f3; }}
figure.chart {{ margin: 1.5rem 0; }}
pre {{ background: #f5f5f5; padding: 1rem; font-size: 0.75rem; }}
</style></head>
<body>
<h1>{html.escape(self.title)}</h1>
<p>Metrics are medians across seeds; Sharpe and total-return intervals ({self.ci_level:.0%}) come
from a stationary bootstrap of the daily returns. Returns are after costs. The deflated Sharpe
ratio treats every agent in this table as one trial. The last row, in italics, is the
benchmark. Charts show each agent's median-Sharpe run; drag to zoom, double-click to reset.</p>
<div style="overflow-x:auto"><table id="metrics"><thead><tr>{head}</tr></thead>
<tbody>{body}</tbody></table></div>
{"".join(f"<p>{html.escape(n)}</p>" for n in self.notes())}
{charts}
{self._regimes_html()}
{self.transcripts_html()}
<h2>Settings</h2><pre>{settings}</pre>
<script>
window.addEventListener("load", () => {{
  const plots = Array.from(document.querySelectorAll(".js-plotly-plot"));
  const ok = plots.filter((p) => p.querySelector(".main-svg")).length;
  document.body.dataset.plotsRendered = ok + "/" + plots.length;
}});
</script>
</body></html>
"""


def flat_diagnostics(diagnostics: dict[str, Any], prefix: str = "diag_") -> dict[str, float]:
    """Numbers in an agent's diagnostics, flattened (``outcomes.ok`` -> ``diag_outcomes_ok``);
    lists (per-decision logs) and text are left to the saved results."""
    out: dict[str, float] = {}
    for key, value in diagnostics.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[f"{prefix}{key}"] = float(value)
        elif isinstance(value, dict):
            out.update(flat_diagnostics(value, f"{prefix}{key}_"))
    return out


def load_report(output: str | Path) -> EvaluationReport:
    """Rebuild the report a :meth:`EvaluationReport.write` saved, without rerunning."""
    out = Path(output)
    meta_path = out / "report.json"
    if not meta_path.exists():
        raise MissingFileError(f"no saved report at {out} (missing report.json)")
    meta = json.loads(meta_path.read_text())
    evaluations = [
        AgentEvaluation(agent, [BacktestResult.load(out / p) for p in paths])
        for agent, paths in meta["runs"].items()
    ]
    return EvaluationReport(
        title=meta["title"],
        evaluations=evaluations,
        settings=meta["settings"],
        periods_per_year=meta["periods_per_year"],
        risk_free=meta["risk_free"],
        ci_level=meta["ci_level"],
        regimes={k: Regimes.from_dict(v) for k, v in meta.get("regimes", {}).items()},
        sector_strength=None
        if meta.get("sector_strength") is None
        else by_regime.sector_frame_from_dict(meta["sector_strength"]),
        sector_note=meta.get("sector_note", ""),
    )


def slugify(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "agent"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def _csv_value(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return value


#: metrics shown as percentages in report.html; money and counts as themselves; the rest
#: (ratios) with two decimals
PERCENT_METRICS = frozenset(
    {
        "total_return",
        "cagr",
        "volatility",
        "max_drawdown",
        "var_95",
        "cvar_95",
        "win_rate",
        "average_win",
        "average_loss",
        "alpha",
        "tracking_error",
        "probabilistic_sharpe",
        "deflated_sharpe",
        "total_return_ci_low",
        "total_return_ci_high",
    }
)
MONEY_METRICS = frozenset({"final_nav", "total_costs"})


def html_metric(key: str, value: Any) -> str:
    """One cell of the HTML table: "12.34%", "1,234.56", "1.23" or the text itself."""
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, int) and not key.startswith("diag_"):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if key in PERCENT_METRICS:
            return f"{value:.2%}"
        if key in MONEY_METRICS:
            return f"{value:,.2f}"
        if key.startswith("diag_") or key.endswith("_duration") or key == "number_of_trades":
            return f"{value:,.6g}"
        return f"{value:.2f}"
    return html.escape(str(value))


# ------------------------------------------------------------------ small tables
def coverage_table(rows: Sequence[SymbolCoverage], title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left")
    for col in ("symbol", "first date", "last date", "rows", "gaps"):
        table.add_column(col, justify="right" if col in ("rows", "gaps") else "left")
    for r in rows:
        table.add_row(escape(r.symbol), r.first_date, r.last_date, str(r.rows), str(r.gaps))
    return table


def print_table(table: Table, console: Console | None = None) -> None:
    (console or Console()).print(table)


def _transcripts(diagnostics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The decisions' transcripts of a row, in the team's shape: a team's as they are, an
    ``llm-tools`` agent's log converted (none for other agents)."""
    if diagnostics.get("transcripts"):
        return list(diagnostics["transcripts"])
    if diagnostics.get("tools") and diagnostics.get("log"):
        return report_transcripts(diagnostics["log"])
    return []
