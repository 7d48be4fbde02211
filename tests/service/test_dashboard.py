"""The dashboard: its page and files without a token, and the page in headless Chromium
against a real server over a seeded store (charts drawn from the stored runs, a job started
by a click that completes, the token kept for the tab only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import plotly
import pytest
from fastapi.testclient import TestClient

from marketarena.envs.providers import DataDir, Downloader
from marketarena.evaluation.saved_runs.persisted import load_result, start_backtest
from marketarena.evaluation.saved_runs.store import RunStore
from marketarena.service.app import create_app
from marketarena.service.settings import ServiceSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from dashboard_screenshots import BrowserError, Chromium, free_port, serve, start_job_from_page

TOKEN = "dashboard-s3cret"
STATIC = Path(__file__).resolve().parents[2] / "service" / "static"


def test_the_page_and_its_files_load_without_a_token_and_the_api_needs_it(tmp_path):
    settings = ServiceSettings(store=str(tmp_path / "runs.sqlite"), token=TOKEN)
    client = TestClient(create_app(settings))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text == (STATIC / "index.html").read_text()
    plotly_js = client.get("/static/plotly.min.js")
    assert plotly_js.status_code == 200
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert plotly_js.content == bundled.read_bytes()
    for name in ("dashboard.js", "dashboard.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.text == (STATIC / name).read_text()
    missing = client.get("/static/app.py")
    assert missing.status_code == 404 and "no static file 'app.py'" in missing.json()["error"]
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/data/status").status_code == 401
    # nothing is fetched from elsewhere: no CDN, no external URL
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def seeded(tmp_path):
    """A data folder (4 symbols, 2009-08-21 to 2010-02-26) and a store with two finished
    runs over it (2009-09-01 to 2010-01-29)."""
    data = DataDir(tmp_path / "data")
    symbols = ["AXP", "BA", "KO", "MCD"]
    Downloader().download(data, symbols, "2009-08-21", "2010-02-26", ["local"])
    store = RunStore(tmp_path / "runs.sqlite")
    for agent in ("equal_weight", "buy_and_hold"):
        start_backtest(store, f"{agent}-seed", agent, str(data.path), "2009-09-01", "2010-01-29")
    yield store, str(data.path)
    store.close()


async def _drive(url: str, data: str, executable: str) -> dict:
    seen: dict = {}
    async with Chromium(executable) as browser:
        await browser.goto(url + "/")
        await browser.wait_for("!document.getElementById('login').hidden")
        seen["before_login_hidden"] = await browser.evaluate(
            "document.getElementById('dashboard').hidden"
        )
        await browser.fill("#token", "not-the-token")
        await browser.click("#login button")
        seen["wrong_token_error"] = await browser.wait_for(
            "document.getElementById('login-error').textContent"
        )
        await browser.fill("#token", TOKEN)
        await browser.click("#login button")
        await browser.wait_for("document.body.dataset.loaded === 'true'")
        seen["storage"] = await browser.evaluate(
            "[sessionStorage.getItem('marketarena-token'), localStorage.length, document.cookie]"
        )
        seen["leaderboard"] = await browser.evaluate(
            "[...document.querySelectorAll('#leaderboard tbody tr')].map(r => r.dataset.run)"
        )
        seen["plots"] = await browser.evaluate(
            "[...document.querySelectorAll('.js-plotly-plot')].map(p => [p.id, p.data.length,"
            " p.querySelectorAll('.scatterlayer .trace').length])"
        )
        seen["equity"] = await browser.evaluate(
            "document.getElementById('equity-chart').data.map(t => [t.name, t.x, t.y])"
        )
        seen["drawdown"] = await browser.evaluate(
            "document.getElementById('drawdown-chart').data.map(t => [t.name, t.y])"
        )
        seen["allocation"] = await browser.evaluate(
            "document.getElementById('allocation-chart').data.map(t => t.name)"
        )
        seen["coverage_rows"] = await browser.evaluate(
            "document.querySelectorAll('#coverage tbody tr').length"
        )
        seen["job"] = await start_job_from_page(
            browser, "equal_weight:5", data, "2009-10-01", "2009-12-31", timeout=60
        )
        seen["runs_after"] = await browser.wait_for(
            "(() => { const o = [...document.querySelectorAll('#run-select option')]"
            ".map(o => o.value); return o.length === 3 && o; })()"
        )
        seen["curves_after"] = await browser.wait_for(
            "document.getElementById('equity-chart').data.map(t => t.name)"
            ".includes('equal_weight:5@2009-10-01') && "
            "document.getElementById('equity-chart').data.length"
        )
        # continue that run to the data's end with the page's continue button
        await browser.fill("#ext-models", "equal_weight:5")
        await browser.fill("#ext-end", "2010-02-26")
        await browser.click("#continue-job")
        seen["continued"] = await _job_ends(browser, "continue")
        # a long job cancelled from its row, then resumed from the cancelled row
        await browser.fill("#sim-models", "random:3")
        await browser.fill("#sim-data", "sp500_20")
        await browser.fill("#sim-start", "1991-01-02")
        await browser.fill("#sim-end", "2022-12-28")
        await browser.click("#start-job")
        await browser.wait_for(_row("simulate", "running"), timeout=30)
        await browser.click(f"{_row('simulate', 'running', selector=True)} button")
        seen["cancelled"] = await browser.wait_for(_row("simulate", "cancelled"), timeout=30)
        # its resume button shows once the worker has stopped (after the current day)
        cancelled_row = _row("simulate", "cancelled", selector=True)
        await browser.wait_for(f"!!document.querySelector('{cancelled_row} button')", timeout=30)
        for _ in range(20):  # the worker's process may outlive the job by a moment: a 409
            await browser.click(f"{cancelled_row} button")
            with contextlib.suppress(BrowserError):
                seen["resumed"] = await browser.wait_for(_row("resume", "running"), timeout=1)
                break
            message = await browser.evaluate(MESSAGE)
            if message:
                seen.setdefault("refused", message)
        else:
            raise AssertionError(f"never resumed: {await browser.evaluate(MESSAGE)}")
        await browser.click(f"{_row('resume', 'running', selector=True)} button")
        await browser.wait_for(_row("resume", "cancelled"), timeout=30)
        seen["console"] = browser.console
    return seen


MESSAGE = "document.getElementById('message').textContent"


def _row(kind: str, status: str, selector: bool = False) -> str:
    """The job table's row of a ``kind`` job in ``status``: a CSS selector, or a JavaScript
    expression giving its job id (or undefined)."""
    css = f'#jobs tr[data-status="{status}"][data-kind="{kind}"]'
    if selector:
        return css
    return f"document.querySelector('{css}')?.dataset.job"


async def _job_ends(browser: Chromium, kind: str) -> str:
    """The status a ``kind`` job ends in (the table's first, i.e. newest, row of that kind)."""
    return str(
        await browser.wait_for(
            f"(() => {{ const r = document.querySelector('#jobs tr[data-kind=\"{kind}\"]');"
            " return r && ['done', 'failed', 'cancelled'].includes(r.dataset.status)"
            " && r.dataset.status + ': ' + r.textContent; })()",
            timeout=60,
        )
    )


@pytest.mark.skipif(
    _chromium() is None and not os.environ.get("CI"),
    reason="Chromium not installed (.ci/run installs it, and there this test must run)",
)
def test_the_dashboard_in_headless_chromium(tmp_path, seeded):
    store, data = seeded
    executable = _chromium()
    assert executable, "CI must have Chromium for this test"
    settings = ServiceSettings(
        store=str(tmp_path / "runs.sqlite"), data_dir=data, port=free_port(), token=TOKEN
    )
    with serve(settings) as url:
        seen = asyncio.run(_drive(url, data, executable))
    assert seen["before_login_hidden"] is True
    assert seen["wrong_token_error"].startswith("missing or wrong token")
    # the token is kept for the tab only, and never in a cookie or localStorage
    assert seen["storage"] == [TOKEN, 0, ""]
    assert sorted(seen["leaderboard"]) == ["buy_and_hold-seed", "equal_weight-seed"]
    plots = {p[0]: p[1:] for p in seen["plots"]}
    assert plots["equity-chart"] == [2, 2] and plots["drawdown-chart"] == [2, 2]
    assert plots["allocation-chart"][0] == plots["allocation-chart"][1] == 5  # 4 symbols, cash
    assert seen["allocation"] == ["AXP", "BA", "KO", "MCD", "CASH"]
    # the curves are the stored NAVs, and the drawdowns computed from them
    for (name, dates, navs), (dd_name, drawdowns) in zip(
        seen["equity"], seen["drawdown"], strict=True
    ):
        result = load_result(store, name)
        stored = store.days(name)
        assert dd_name == name and dates == list(stored["date"])
        np.testing.assert_allclose(navs, stored["nav"], rtol=0, atol=1e-9)
        peak = np.maximum.accumulate(stored["nav"].to_numpy())
        np.testing.assert_allclose(drawdowns, stored["nav"].to_numpy() / peak - 1, atol=1e-12)
        assert result.nav[-1] == pytest.approx(navs[-1])
    assert seen["coverage_rows"] == 4
    # the job started by the click ran to the end, and the page drew its run
    job = store.job(seen["job"])
    assert job["status"] == "done" and job["run_ids"] == ["equal_weight:5@2009-10-01"]
    assert "equal_weight:5@2009-10-01" in seen["runs_after"] and seen["curves_after"] == 3
    assert store.run("equal_weight:5@2009-10-01").status == "finished"
    assert seen["continued"].startswith("done"), seen["continued"]
    continued = store.run("equal_weight:5@2009-10-01")
    assert continued.status == "finished" and continued.last_date == "2010-02-26"
    cancelled, resumed = store.job(seen["cancelled"]), store.job(seen["resumed"])
    assert cancelled["status"] == "cancelled" and cancelled["run_ids"] == ["random:3@1991-01-02"]
    assert resumed["kind"] == "resume" and resumed["run_ids"] == ["random:3@1991-01-02"]
    assert store.run("random:3@1991-01-02").status == "running"  # unfinished, resumable
    if "refused" in seen:  # the page showed why a click too early did nothing
        assert "is being simulated by job" in seen["refused"]
    assert not [m for m in seen["console"] if "Error" in m], seen["console"]
