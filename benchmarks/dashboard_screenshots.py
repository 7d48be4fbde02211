"""Screenshots of the dashboard for the README, taken by headless Chromium.

    python benchmarks/dashboard_screenshots.py [--out docs/images] [--chromium PATH]

Starts the service on 127.0.0.1 (a free port) over a new store and data folder in a
temporary directory, with a token; downloads data through the ``local`` provider; runs three
models from the dashboard's own start form (a click in the browser) and waits in the page for
the job to finish; then saves ``dashboard.png`` (the whole page) and ``run.png`` (the chosen
run's allocation over time and holdings) under ``--out``. Rerunnable: the same inputs give the
same pictures (but for the clock, the job id and the temporary paths shown on the page).

The browser is driven through the Chrome DevTools Protocol over a websocket (:class:`Chromium`,
also used by ``tests/service/test_dashboard.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


class BrowserError(RuntimeError):
    """Chromium did not start, a DevTools call failed, or a page condition never held."""


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol.

    ``async with Chromium() as browser:`` starts it (``executable``: default ``chromium`` on
    the PATH) with a fresh profile in a temporary folder and no network beyond what the page
    asks for, and stops it on exit. ``width`` and ``height`` size the window.
    """

    def __init__(self, executable: str | None = None, width: int = 1400, height: int = 1000):
        found = executable or shutil.which("chromium") or shutil.which("chromium-browser")
        if not found:
            raise BrowserError("Chromium not found: install it (apt-get install chromium)")
        self.executable = found
        self.width, self.height = width, height
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []  # the page's console messages and uncaught errors

    async def __aenter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="marketarena-chromium-")
        self._proc = subprocess.Popen(
            [
                self.executable,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--window-size={self.width},{self.height}",
                f"--user-data-dir={self._profile.name}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = await asyncio.to_thread(self._devtools_port)
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as r:
            pages = [t for t in await r.json() if t["type"] == "page"]
        self._ws = await self._http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    def _devtools_port(self) -> int:
        assert self._proc.stderr is not None
        deadline = time.monotonic() + 30
        for line in self._proc.stderr:
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                threading.Thread(target=self._proc.stderr.read, daemon=True).start()  # drain
                return int(found.group(1))
            if time.monotonic() > deadline:
                break
        raise BrowserError(f"Chromium did not start (exit code {self._proc.poll()})")

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        with contextlib.suppress(Exception):
            await self._ws.close()
        await self._http.close()
        self._proc.terminate()
        try:
            await asyncio.to_thread(self._proc.wait, 10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._profile.cleanup()

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"]["args"]
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.console.append(details.get("exception", {}).get("description", str(details)))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (a :class:`BrowserError` on an error)."""
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 60)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0, every: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; its value (a :class:`BrowserError` naming it
        and the page's console after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"after {timeout} s still false: {expression}; console: {self.console[-5:]}"
                )
            await asyncio.sleep(every)

    async def goto(self, url: str, timeout: float = 30.0) -> None:
        """Open ``url`` and wait until the document has loaded."""
        await self.send("Page.navigate", url=url)
        await asyncio.sleep(0.05)
        await self.wait_for(
            f"location.href.startsWith({json.dumps(url)}) && document.readyState === 'complete'",
            timeout,
        )

    async def click(self, selector: str) -> None:
        """Click the first element matching ``selector`` (a :class:`BrowserError` when none)."""
        found = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "if (!e) return false; e.click(); return true; })()"
        )
        if not found:
            raise BrowserError(f"nothing to click: {selector}")

    async def fill(self, selector: str, value: str) -> None:
        """Set an input's value."""
        await self.evaluate(
            f"document.querySelector({json.dumps(selector)}).value = {json.dumps(value)}"
        )

    async def screenshot(self, path: Path, selector: str | None = None) -> Path:
        """A PNG of the whole page, or of the elements matching ``selector`` (their bounding
        box together)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if selector is None:
            size = await self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        else:
            box = await self.evaluate(
                f"(() => {{ const r = [...document.querySelectorAll({json.dumps(selector)})]"
                ".map(e => e.getBoundingClientRect()); if (!r.length) return null;"
                "const x = Math.min(...r.map(b => b.left)), y = Math.min(...r.map(b => b.top));"
                "return [x + scrollX, y + scrollY, Math.max(...r.map(b => b.right)) - x,"
                "Math.max(...r.map(b => b.bottom)) - y]; })()"
            )
            if box is None:
                raise BrowserError(f"nothing to photograph: {selector}")
            x, y, w, h = box
            pad = 12  # plotly's mode bar reaches a little past its chart's box
            params["clip"] = {
                "x": max(0, x - pad),
                "y": max(0, y - pad),
                "width": w + 2 * pad,
                "height": h + 2 * pad,
                "scale": 1,
            }
        shot = await self.send("Page.captureScreenshot", **params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


# ------------------------------------------------------------------------------ the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(settings: Any) -> Iterator[str]:
    """The service over ``settings`` on uvicorn in a thread; yields its URL, stops it after."""
    import uvicorn

    from marketarena.service.app import create_app

    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{settings.host}:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def start_job_from_page(
    browser: Chromium, models: str, data: str, start: str, end: str, timeout: float = 120.0
) -> str:
    """Fill the page's start form, click start, and wait (``timeout`` seconds at most) until
    the new job is done; its id."""
    rows = "[...document.querySelectorAll('#jobs tr[data-job]')].map(r => r.dataset.job)"
    before = set(await browser.evaluate(rows))
    await browser.fill("#sim-models", models)
    await browser.fill("#sim-data", data)
    await browser.fill("#sim-start", start)
    await browser.fill("#sim-end", end)
    await browser.click("#start-job")
    job = await browser.wait_for(
        f"{rows}.find(j => !{json.dumps(sorted(before))}.includes(j))",
        timeout=30,
    )
    status = await browser.wait_for(
        f"(() => {{ const r = document.querySelector('#jobs tr[data-job=\"{job}\"]');"
        "return r && ['done', 'failed', 'cancelled'].includes(r.dataset.status)"
        " && r.dataset.status; })()",
        timeout=timeout,
    )
    if status != "done":
        error = await browser.evaluate(
            f"document.querySelector('#jobs tr[data-job=\"{job}\"]').textContent"
        )
        raise BrowserError(f"job {job} ended {status}: {error}")
    return str(job)


async def take(url: str, token: str, data: str, out: Path, executable: str | None) -> list[Path]:
    """Log in through the page, start three models from it, and photograph the results."""
    async with Chromium(executable, width=1500, height=1100) as browser:
        await browser.goto(url + "/")
        await browser.wait_for("!document.getElementById('login').hidden")
        await browser.fill("#token", token)
        await browser.click("#login button")
        await browser.wait_for("document.body.dataset.loaded === 'true'")
        await start_job_from_page(
            browser, "equal_weight, buy_and_hold, random:5", data, "2009-09-01", "2010-08-20"
        )
        await browser.wait_for(
            "document.querySelectorAll('#leaderboard tbody tr').length === 3 && "
            "document.getElementById('equity-chart').data.length === 3"
        )
        await browser.evaluate("window.scrollTo(0, 0)")
        await asyncio.sleep(0.5)  # plotly's transitions
        return [
            await browser.screenshot(out / "dashboard.png"),
            await browser.screenshot(out / "run.png", "#positions-section"),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNGs")
    parser.add_argument("--chromium", help="the browser (default: chromium on the PATH)")
    args = parser.parse_args(argv)

    from marketarena.envs.providers import DataDir, Downloader
    from marketarena.service.settings import ServiceSettings

    token = base64.urlsafe_b64encode(os.urandom(18)).decode()
    with tempfile.TemporaryDirectory(prefix="marketarena-dashboard-") as tmp:
        Downloader().download(
            DataDir(Path(tmp) / "data"),
            ["AXP", "BA", "CAT", "DIS", "HD", "IBM", "KO", "MCD"],
            "2009-08-21",
            "2010-08-20",
            ["local"],
        )
        settings = ServiceSettings(
            store=str(Path(tmp) / "runs.sqlite"),
            data_dir=str(Path(tmp) / "data"),
            port=free_port(),
            token=token,
        )
        with serve(settings) as url:
            shots = asyncio.run(take(url, token, settings.data_dir, args.out, args.chromium))
    for shot in shots:
        print(f"wrote {shot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
