"""AI-Trader's price files → :class:`MarketData`.

AI-Trader stores Alpha-Vantage-style daily series: one JSON object per symbol with
``"Meta Data"`` (``"2. Symbol"``) and ``"Time Series (Daily)"`` mapping dates to string
values. Prices are keyed ``"1. buy price"`` / ``"4. sell price"`` in its merged file and
``"1. open"`` / ``"4. close"`` in per-symbol files; ``"2. high"``, ``"3. low"``,
``"5. volume"`` as usual. Supported layouts:

* ``merged.jsonl``: one object per line, one line per symbol;
* a folder of ``daily_prices_<SYMBOL>.json`` files (or any list of such files).

AI-Trader's last date may carry only the open (the day's fills happen at the open, before
its close exists). ``last_open_only="mark_at_open"`` (default) keeps that date and uses the
open as its close and range, so a replay can fill that day's orders and mark them at the
price paid; ``"drop"`` drops it. Either way a :class:`~marketarena.envs.data.DataWarning`
says so and ``MarketData.notes`` records it. Any other missing close is an error.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from marketarena.envs.data import (
    DataValidationError,
    DataWarning,
    MarketData,
    MissingPolicy,
    from_long_frame,
)
from marketarena.envs.errors import ConfigError, MissingFileError

KEYS = {
    "1. buy price": "open",
    "1. open": "open",
    "2. high": "high",
    "3. low": "low",
    "4. sell price": "close",
    "4. close": "close",
    "5. volume": "volume",
}


def _series_rows(doc: dict[str, Any], source: str) -> tuple[str, list[dict[str, Any]]]:
    try:
        symbol = str(doc["Meta Data"]["2. Symbol"]).strip()
        series = doc["Time Series (Daily)"]
    except (KeyError, TypeError):
        raise DataValidationError(
            source,
            ["not an AI-Trader series: needs 'Meta Data'/'2. Symbol' and 'Time Series (Daily)'"],
        ) from None
    if not isinstance(series, dict):
        problem = f"{symbol}: 'Time Series (Daily)' must map dates to bars, not {_shown(series)}"
        raise DataValidationError(source, [problem])
    rows = []
    for date, bar in series.items():
        row: dict[str, Any] = {"date": date, "symbol": symbol}
        if not isinstance(bar, dict):
            problem = (
                f"{symbol}: the bar on {date} must be an object of prices such as "
                f'{{"1. open": "101.5", ...}}, not {_shown(bar)}'
            )
            raise DataValidationError(source, [problem])
        for key, value in bar.items():
            field = KEYS.get(key)
            if field is None:
                raise DataValidationError(source, [f"{symbol}: unknown key {key!r} on {date}"])
            try:
                row[field] = float(value)
                if row[field] != row[field]:  # "NaN" is no price; only an absent key is missing
                    raise ValueError(value)
            except (TypeError, ValueError):
                raise DataValidationError(
                    source, [f"{symbol}: {key} value {value!r} on {date} is not a number"]
                ) from None
        rows.append(row)
    return symbol, rows


def _shown(value: Any) -> str:
    """A JSON value in an error message: its type, and the value itself when short."""
    text = json.dumps(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _read_json(path: Path) -> Any:
    """One JSON file; a missing file, bad JSON or bad text encoding names the file."""
    if not path.exists():
        raise MissingFileError(f"AI-Trader price file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataValidationError(str(path), [f"not JSON: {exc.msg} (line {exc.lineno})"]) from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(str(path), [f"not a text file: {exc.reason}"]) from None


def read_documents(path: str | Path | Iterable[str | Path]) -> list[tuple[str, dict]]:
    """``(source, document)`` pairs from a merged.jsonl, a folder, or a list of files."""
    if not isinstance(path, str | Path):
        return [(str(p), _read_json(Path(p))) for p in path]
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"AI-Trader price data not found: {path}")
    if path.is_dir():
        files = sorted(path.glob("daily_prices_*.json"))
        if not files:
            raise DataValidationError(str(path), ["no daily_prices_<SYMBOL>.json files"])
        return [(str(f), _read_json(f)) for f in files]
    if path.suffix == ".jsonl":
        out = []
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError as exc:
            raise DataValidationError(str(path), [f"not a text file: {exc.reason}"]) from None
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append((f"{path}:{i}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataValidationError(f"{path}:{i}", [f"not JSON: {exc.msg}"]) from None
        return out
    return [(str(path), _read_json(path))]


def read_frame(path: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """AI-Trader price files as one raw long frame (``date``, ``symbol``, ``open``, ``high``,
    ``low``, ``close``, ``volume``; a row per symbol and date, the open-only last date with an
    empty close) before any validation of the panel: what ``marketarena data coverage``
    reports on. A symbol in two places is an error naming both."""
    label = Path(path).name if isinstance(path, str | Path) else "aitrader"
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for source, doc in read_documents(path):
        symbol, symbol_rows = _series_rows(doc, source)
        if symbol in seen:
            raise DataValidationError(label, [f"{symbol}: in both {seen[symbol]} and {source}"])
        seen[symbol] = source
        rows += symbol_rows
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["date", "symbol", "close"])


def load_aitrader(
    path: str | Path | Iterable[str | Path],
    *,
    name: str | None = None,
    last_open_only: Literal["mark_at_open", "drop"] = "mark_at_open",
    missing: MissingPolicy = "error",
    symbols: Iterable[str] | None = None,
) -> MarketData:
    """Load AI-Trader price files (see the module docstring) into validated MarketData."""
    label = name or (Path(path).name if isinstance(path, str | Path) else "aitrader")
    frame = read_frame(path)
    if frame.empty:
        raise DataValidationError(label, ["empty input: no bars"])
    if symbols is not None:
        frame = frame[frame["symbol"].isin(list(symbols))]
    notes = []
    no_close = frame["close"].isna() if "close" in frame else pd.Series(True, index=frame.index)
    if no_close.any():
        dates = sorted(frame.loc[no_close, "date"].unique())
        last = frame["date"].max()
        if dates != [last]:
            bad = frame.loc[no_close & (frame["date"] != last)].iloc[0]
            raise DataValidationError(
                label, [f"{bad['symbol']}: no close on {bad['date']}, which is not the last date"]
            )
        if last_open_only == "drop":
            frame = frame[frame["date"] != last]
            notes.append(f"dropped {last}: it has opens only")
        elif last_open_only == "mark_at_open":
            if "open" not in frame:
                raise DataValidationError(label, [f"no close and no open on {last}"])
            row = frame["date"] == last
            for col in ("close", "high", "low"):
                frame.loc[row, col] = frame.loc[row, "open"]
            if "volume" in frame:
                frame.loc[row & frame["volume"].isna(), "volume"] = 0.0
            notes.append(f"{last} has opens only: its close, high and low are set to the open")
        else:
            raise ConfigError(f"last_open_only={last_open_only!r}: choose mark_at_open or drop")
    for note in notes:
        warnings.warn(f"{label}: {note}", DataWarning, stacklevel=2)
    data = from_long_frame(frame, name=label, missing=missing)
    return MarketData(
        dates=data.dates,
        symbols=data.symbols,
        close=data.close,
        open=data.open,
        high=data.high,
        low=data.low,
        volume=data.volume,
        name=label,
        notes=(*data.notes, *notes),
        listed=data.listed,
    )


def load_benchmark_series(path: str | Path, price: Literal["close", "open"] = "close") -> pd.Series:
    """One AI-Trader series (e.g. ``qqq.json``) as a pandas Series of its closes by date."""
    docs = read_documents(path)
    if len(docs) != 1:
        raise DataValidationError(str(path), [f"expected one series, found {len(docs)}"])
    symbol, rows = _series_rows(docs[0][1], docs[0][0])
    frame = pd.DataFrame(rows).dropna(subset=[price])
    series = pd.Series(frame[price].to_numpy(), index=pd.to_datetime(frame["date"]), name=symbol)
    return series.sort_index()


def is_aitrader_file(path: str | Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return any(path.glob("daily_prices_*.json"))
    if path.suffix not in (".jsonl", ".json"):
        return False
    with path.open(errors="replace") as fh:  # a binary file is simply not one
        head = fh.read(2048)
    return '"Time Series (Daily)"' in head or '"Meta Data"' in head
