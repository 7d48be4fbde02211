"""Small AI-Trader files, written into ``tmp_path`` in the formats AI-Trader uses.

The market (3 symbols, 4 full sessions and a last date with opens only) is small enough
for every number the tests pin to be worked out by hand:

  open / high / low / close   AAA                    BBB                 CCC
  2025-10-01                  100 / 102 / 99 / 101   50 / 51 / 49 / 50.5  20 / 20.5 / 19.5 / 20.25
  2025-10-02                  102 / 104 / 101 / 103  51 / 52 / 50 / 51.5  20.5 / 21 / 20 / 20.75
  2025-10-03                  104 / 106 / 103 / 105  52 / 53 / 50.5 / 51  21 / 21.5 / 20.5 / 21.25
  2025-10-06                  106 / 107 / 104 / 105.5  50 / 50.5 / 48 / 49  21.5 / 22 / 21 / 21.75
  2025-10-07 (open only)      107                    48.5                22

Volumes: AAA 1000, 1100, 1200, 1300; BBB 2000..2300; CCC 3000..3300.

Prices are written as AI-Trader writes them: strings with four decimals, newest date first.
``merged.jsonl`` uses ``"1. buy price"``/``"4. sell price"``; per-symbol files use
``"1. open"``/``"4. close"``. Trade logs (``position.jsonl``) list every symbol plus ``CASH``
on each line, as AI-Trader's do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

SYMBOLS = ("AAA", "BBB", "CCC")
DATES = ("2025-10-01", "2025-10-02", "2025-10-03", "2025-10-06")
LAST = "2025-10-07"  # opens only
# symbol -> (open, high, low, close, volume) on each of DATES
BARS: dict[str, list[tuple[float, float, float, float, float]]] = {
    "AAA": [
        (100, 102, 99, 101, 1000),
        (102, 104, 101, 103, 1100),
        (104, 106, 103, 105, 1200),
        (106, 107, 104, 105.5, 1300),
    ],
    "BBB": [
        (50, 51, 49, 50.5, 2000),
        (51, 52, 50, 51.5, 2100),
        (52, 53, 50.5, 51, 2200),
        (50, 50.5, 48, 49, 2300),
    ],
    "CCC": [
        (20, 20.5, 19.5, 20.25, 3000),
        (20.5, 21, 20, 20.75, 3100),
        (21, 21.5, 20.5, 21.25, 3200),
        (21.5, 22, 21, 21.75, 3300),
    ],
}
LAST_OPEN = {"AAA": 107.0, "BBB": 48.5, "CCC": 22.0}

MERGED_KEYS = ("1. buy price", "2. high", "3. low", "4. sell price", "5. volume")
DAILY_KEYS = ("1. open", "2. high", "3. low", "4. close", "5. volume")


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def series_doc(
    symbol: str,
    dates: Sequence[str],
    bars: Sequence[Sequence[float]],
    *,
    keys: str = "merged",
    last_open: float | None = None,
    last_date: str = LAST,
) -> dict[str, Any]:
    """One symbol's AI-Trader document, newest date first.

    ``keys``: ``"merged"`` (buy/sell price), ``"daily"`` (open/close) or ``"mixed"``
    (alternating by date, starting with the merged style).
    """
    series: dict[str, dict[str, str]] = {}
    if last_open is not None:
        open_key = "1. open" if keys == "daily" else "1. buy price"
        series[last_date] = {open_key: _fmt(last_open)}
    for i in reversed(range(len(dates))):
        style = keys if keys != "mixed" else ("merged" if i % 2 == 0 else "daily")
        names = MERGED_KEYS if style == "merged" else DAILY_KEYS
        o, h, lo, c, v = bars[i]
        # AI-Trader's key order within a bar: high, low, volume, open, close
        series[dates[i]] = {
            names[1]: _fmt(h),
            names[2]: _fmt(lo),
            names[4]: str(int(v)),
            names[0]: _fmt(o),
            names[3]: _fmt(c),
        }
    return {
        "Meta Data": {
            "1. Information": "Daily Prices (buy price, high, low, sell price) and Volumes",
            "2. Symbol": symbol,
            "3. Last Refreshed": last_date if last_open is not None else dates[-1],
            "4. Output Size": "Compact",
            "5. Time Zone": "US/Eastern",
        },
        "Time Series (Daily)": series,
    }


class AITraderFiles:
    """Writers for the fixture market and trade logs, bound to one ``tmp_path``."""

    SYMBOLS = SYMBOLS
    DATES = DATES
    LAST = LAST
    BARS = BARS
    LAST_OPEN = LAST_OPEN

    def __init__(self, root: Path) -> None:
        self.root = root

    def docs(
        self, keys: Mapping[str, str] | None = None, last_open: bool = True
    ) -> list[dict[str, Any]]:
        """The fixture market's documents; ``keys`` maps symbol -> key style."""
        keys = keys or {"AAA": "merged", "BBB": "daily", "CCC": "mixed"}
        return [
            series_doc(
                s,
                DATES,
                BARS[s],
                keys=keys.get(s, "merged"),
                last_open=LAST_OPEN[s] if last_open else None,
            )
            for s in SYMBOLS
        ]

    def merged(
        self,
        name: str = "merged.jsonl",
        *,
        docs: Sequence[Mapping[str, Any]] | None = None,
        edit: Callable[[list[dict[str, Any]]], None] | None = None,
        last_open: bool = True,
    ) -> Path:
        """Write a merged.jsonl (one line per symbol); ``edit`` may change the docs first."""
        docs = [json.loads(json.dumps(d)) for d in (docs or self.docs(last_open=last_open))]
        if edit is not None:
            edit(docs)
        path = self.root / name
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        return path

    def daily_folder(
        self,
        name: str = "daily",
        *,
        docs: Sequence[Mapping[str, Any]] | None = None,
        last_open: bool = True,
    ) -> Path:
        """A folder of daily_prices_<SYM>.json files (open/close keys, indented as AI-Trader)."""
        folder = self.root / name
        folder.mkdir()
        docs = docs or self.docs({s: "daily" for s in SYMBOLS}, last_open=last_open)
        for doc in docs:
            symbol = doc["Meta Data"]["2. Symbol"]
            (folder / f"daily_prices_{symbol}.json").write_text(json.dumps(doc, indent=4))
        return folder

    def benchmark(self, closes: Mapping[str, float], name: str = "qqq.json") -> Path:
        """A QQQ-style file: one series, open/close keys, each bar's open = its close."""
        dates = sorted(closes)
        bars = [(c, c, c, c, 1_000_000) for c in (closes[d] for d in dates)]
        path = self.root / name
        path.write_text(json.dumps(series_doc("QQQ", dates, bars, keys="daily"), indent=4))
        return path

    def log(self, name: str, entries: Sequence[Mapping[str, Any]]) -> Path:
        """Write a position.jsonl: ``entries`` from :func:`entry`."""
        path = self.root / name
        path.write_text("".join(json.dumps(e) + "\n" for e in entries))
        return path


def entry(
    date: str,
    ident: int,
    action: str | None,
    symbol: str = "",
    amount: float = 0,
    *,
    cash: float,
    **shares: float,
) -> dict[str, Any]:
    """One position.jsonl line: the action (None for the starting line), then every symbol's
    shares (0 unless given) and CASH, as AI-Trader writes them."""
    line: dict[str, Any] = {"date": date, "id": ident}
    if action is not None:
        line["this_action"] = {"action": action, "symbol": symbol, "amount": amount}
    line["positions"] = {**{s: shares.get(s, 0) for s in SYMBOLS}, "CASH": cash}
    return line


@pytest.fixture
def ai(tmp_path: Path) -> AITraderFiles:
    return AITraderFiles(tmp_path)


@pytest.fixture
def make_entry() -> Callable[..., dict[str, Any]]:
    return entry


def walk_market(n_dates: int, seed: int = 0, start: str = "2025-01-02") -> dict[str, Any]:
    """A longer market for persisted runs: 3 symbols, ``n_dates`` business days of OHLCV
    (cents), as ``{"dates": [...], "bars": {symbol: [(o, h, l, c, v), ...]}}``."""
    rng = np.random.default_rng(seed)
    dates = [str(d.date()) for d in pd.bdate_range(start, periods=n_dates)]
    bars: dict[str, list[tuple[float, float, float, float, float]]] = {}
    for j, symbol in enumerate(SYMBOLS):
        close = 50.0 * (j + 1)
        rows = []
        for _ in dates:
            o = round(close * (1 + rng.normal(0, 0.005)), 2)
            c = round(o * (1 + rng.normal(0, 0.015)), 2)
            rows.append(
                (
                    o,
                    round(max(o, c) + 0.25, 2),
                    round(min(o, c) - 0.25, 2),
                    c,
                    float(rng.integers(1000, 5000)),
                )
            )
            close = c
        bars[symbol] = rows
    return {"dates": dates, "bars": bars}


def write_walk_folder(folder: Path, market: Mapping[str, Any], n_dates: int | None = None) -> Path:
    """The first ``n_dates`` dates of a :func:`walk_market` as daily_prices_<SYM>.json files."""
    folder.mkdir(parents=True)
    dates = market["dates"][:n_dates]
    for symbol in SYMBOLS:
        doc = series_doc(symbol, dates, market["bars"][symbol][:n_dates], keys="daily")
        (folder / f"daily_prices_{symbol}.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="session")
def walk() -> Callable[..., Any]:
    """``(walk_market, write_walk_folder)``, for the persisted-run tests."""
    return walk_market, write_walk_folder
