"""report.html as a tearsheet: formatted table with a benchmark row, plotly charts inlined once
(no CDN), a monthly-returns heatmap, rolling volatility and beta."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from marketarena.evaluation import tearsheet
from marketarena.evaluation.report import EvaluationReport, html_metric
from marketarena.evaluation.runner import AgentEvaluation, BacktestResult

pytest.importorskip("plotly")


def _result(agent: str, n: int = 150, seed: int = 0, benchmark: bool = True) -> BacktestResult:
    rng = np.random.default_rng(seed)
    nav = 10_000.0 * np.cumprod(np.r_[1.0, 1.0 + rng.normal(0.0005, 0.01, n - 1)])
    w = rng.dirichlet(np.ones(11), size=n)  # ten assets and cash
    bench = 100.0 * np.cumprod(np.r_[1.0, 1.0 + rng.normal(0.0003, 0.008, n - 1)])
    return BacktestResult(
        agent=agent,
        data_name="hand",
        symbols=tuple(f"S{i}" for i in range(10)),
        dates=np.datetime64("2024-01-01") + np.arange(n),
        nav=nav,
        weights=w,
        turnover=np.zeros(n - 1),
        costs=np.zeros(n - 1),
        seed=seed,
        benchmark=bench if benchmark else None,
        benchmark_name="index" if benchmark else None,
    )


def _report(benchmark: bool = True) -> EvaluationReport:
    evaluations = [
        AgentEvaluation("one", [_result("one", benchmark=benchmark)]),
        AgentEvaluation("two", [_result("two", seed=1, benchmark=benchmark)]),
    ]
    return EvaluationReport("hand", evaluations, bootstrap_resamples=50)


@pytest.fixture(scope="module")
def page() -> str:
    return _report().html()


def test_monthly_returns_are_compounded_by_calendar_month():
    dates = np.array(
        ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02", "2025-03-03"],
        dtype="datetime64[D]",
    )
    returns = [0.10, -0.05, 0.02, 0.03, -0.01]
    table = tearsheet.monthly_returns_table(dates, returns)
    assert list(table.index) == [2024, 2025]
    assert list(table.columns) == list(range(1, 13))
    assert table.loc[2024, 1] == pytest.approx(1.10 * 0.95 - 1)
    assert table.loc[2024, 2] == pytest.approx(1.02 * 1.03 - 1)
    assert table.loc[2025, 3] == pytest.approx(-0.01)
    assert np.isnan(table.loc[2024, 3]) and np.isnan(table.loc[2025, 1])


def test_rolling_volatility_and_beta_match_pandas():
    res = _result("one")
    r, b = pd.Series(res.returns), pd.Series(res.benchmark_returns)
    vol = tearsheet.rolling_volatility(res.returns, window=63, periods_per_year=252)
    assert np.isnan(vol[61]) and not np.isnan(vol[62])
    assert vol[100] == pytest.approx(r.iloc[38:101].std() * np.sqrt(252))
    beta = tearsheet.rolling_beta(res.returns, res.benchmark_returns, window=63)
    window_r, window_b = r.iloc[38:101].to_numpy(), b.iloc[38:101].to_numpy()
    expected = np.cov(window_r, window_b)[0, 1] / np.var(window_b, ddof=1)
    assert beta[100] == pytest.approx(expected)


def test_plotly_is_inlined_once_and_nothing_is_fetched(page):
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    bundles = [s for s in scripts if re.search(r"plotly\.js v\d", s)]
    assert len(bundles) == 1  # plotly.js inlined once
    # outside the bundle (whose defaults name a CDN, used only by map charts) no CDN at all
    rest = page.replace(bundles[0], "")
    assert "cdn.plot.ly" not in rest and "http://" not in rest and "https://" not in rest
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=", page)
    assert "<img" not in rest  # no PNGs: every chart is plotly
    # plotly.js announces its version once, in the one bundle
    assert len(re.findall(r"plotly\.js v\d", page)) == 1
    assert page.count('class="chart"') == 5 + 2 + 2  # 5 shared charts, heatmaps, weights


def _figure_json(page: str, title: str) -> dict:
    """The data of the plotly figure whose layout has ``title``."""
    for call in re.finditer(
        r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{", page, re.S
    ):
        layout = json.loads(call.group(2))
        if layout.get("title", {}).get("text") == title:
            return {"data": json.loads(call.group(1)), "layout": layout}
    raise AssertionError(f"no figure titled {title!r}")


def test_heatmap_in_the_page_holds_the_monthly_returns(page):
    res = _report().rows()[0].representative
    fig = _figure_json(page, "Monthly returns: one")
    (trace,) = fig["data"]
    assert trace["type"] == "heatmap"
    expected = tearsheet.monthly_returns_table(res.dates[1:], res.returns).to_numpy()
    got = np.array([[np.nan if v is None else v for v in row] for row in trace["z"]], dtype=float)
    np.testing.assert_allclose(got, expected)
    assert "%" in trace["text"][0][0]


def test_rolling_beta_and_weights_charts(page):
    beta = _figure_json(page, "Rolling 63-day beta to the benchmark")
    assert [t["name"] for t in beta["data"]] == ["one", "two"]
    weights = _figure_json(page, "Weights: one")
    names = [t["name"] for t in weights["data"]]
    assert len(names) == 8 + 2 and names[-2:] == ["other", "cash"]
    assert all(t.get("stackgroup") == "weights" for t in weights["data"])


def test_table_is_formatted_and_has_the_benchmark_row(page):
    report = _report()
    row = report.rows()[0]
    assert f"<td>{row.metrics['total_return']:.2%}</td>" in page
    assert f"<td>{row.metrics['sharpe']:.2f}</td>" in page
    assert re.search(r'<tr class="benchmark"><td>benchmark: index</td>', page)
    bench = report.benchmark_row()
    returns = report.rows()[0].representative.benchmark_returns
    assert bench is not None
    assert bench["total_return"] == pytest.approx(np.prod(1 + returns) - 1)
    assert f"<td>{bench['total_return']:.2%}</td>" in page
    assert html_metric("cagr", 0.123456) == "12.35%"
    assert html_metric("sharpe", 1.23456) == "1.23"
    assert html_metric("final_nav", 12345.678) == "12,345.68"


def test_no_benchmark_no_row_and_no_beta_chart():
    report = _report(benchmark=False)
    assert report.benchmark_row() is None
    page = report.html()
    assert 'class="benchmark"' not in page
    assert "Rolling 63-day beta" not in page
    assert page.count('class="chart"') == 4 + 2 + 2


def test_write_keeps_the_pngs_and_writes_the_tearsheet(tmp_path):
    files = _report().write(tmp_path, results=False)
    assert files["png:equity"].exists()
    page = files["html"].read_text()
    assert "Monthly returns: two" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)


def test_an_exposure_chart_with_the_risk_interventions_when_rules_were_on():
    res = _result("capped")
    res.interventions = [
        {"date": "2024-01-05", "rule": "max_weight", "amount": 0.1},
        {"date": "2024-01-05", "rule": "stop_loss", "amount": 0.9},
        {"date": "2024-02-01", "rule": "max_weight", "amount": 0.05},
    ]
    report = EvaluationReport("hand", [AgentEvaluation("capped", [res])], bootstrap_resamples=50)
    page = report.html()
    fig = _figure_json(page, "Gross exposure (markers: risk-layer interventions)")
    line, marks = fig["data"]
    np.testing.assert_allclose(line["y"], np.abs(res.weights[:, :-1]).sum(axis=1))
    assert marks["x"] == ["2024-01-05", "2024-02-01"]
    assert marks["text"][0] == "max_weight 10.0%, stop_loss 90.0%"
    assert marks["y"][0] == pytest.approx(line["y"][4])  # 2024-01-05 is the 5th date
    assert "capped: the risk layer changed 2 of 149 decisions" in page
    assert "Gross exposure" not in _report().html()  # no rules, no chart


def test_an_allocators_sleeves_get_a_correlation_heatmap_and_rolling_correlations():
    rng = np.random.default_rng(7)
    base = rng.normal(0, 0.01, 120)
    returns = np.stack([base, base + rng.normal(0, 0.01, 120), rng.normal(0, 0.01, 120)], 1)
    dates = [str(np.datetime64("2024-01-02") + i) for i in range(120)]
    res = _result("allocate:hrp")
    res.diagnostics = {
        "members": ["a", "b", "c"],
        "sleeve_returns": {"dates": dates, "returns": returns.tolist()},
    }
    page = EvaluationReport(
        "hand", [AgentEvaluation("allocate:hrp", [res])], bootstrap_resamples=50
    ).html()
    heat = _figure_json(page, "Sleeve correlation: allocate:hrp")
    np.testing.assert_allclose(heat["data"][0]["z"], np.corrcoef(returns, rowvar=False))
    rolling = _figure_json(page, "Rolling 63-session sleeve correlation: allocate:hrp")
    assert [t["name"] for t in rolling["data"]] == ["a ~ b", "a ~ c", "b ~ c"]
    last = rolling["data"][0]["y"][-1]
    assert last == pytest.approx(np.corrcoef(returns[-63:, 0], returns[-63:, 1])[0, 1])
    assert "Sleeve correlation" not in _report().html()  # no allocator, no sleeve charts
