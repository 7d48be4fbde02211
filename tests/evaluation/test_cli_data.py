"""`marketarena data coverage|validate` driven in-process through `cli.main`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from marketarena.cli import EXIT_INVALID_DATA, EXIT_OK, main
from marketarena.envs.data import DataWarning

COLS = ["date", "symbol", "open", "high", "low", "close", "volume"]
VALID = [
    ["2020-01-02", "AAA", 10.0, 11.0, 9.0, 10.5, 100],
    ["2020-01-02", "BBB", 20.0, 21.0, 19.0, 20.5, 200],
    ["2020-01-03", "AAA", 10.5, 12.0, 10.0, 11.0, 110],
    ["2020-01-03", "BBB", 20.5, 22.0, 20.0, 21.0, 210],
]
# BBB misses 2020-01-03 and 2020-01-06
RAGGED = [
    ["2020-01-02", "AAA", 10.0, 11.0, 9.0, 10.5, 100],
    ["2020-01-02", "BBB", 20.0, 21.0, 19.0, 20.5, 200],
    ["2020-01-03", "AAA", 10.5, 12.0, 10.0, 11.0, 110],
    ["2020-01-06", "AAA", 11.0, 12.0, 10.5, 11.5, 120],
    ["2020-01-07", "AAA", 11.5, 12.0, 11.0, 11.8, 130],
    ["2020-01-07", "BBB", 20.0, 22.0, 19.5, 21.5, 300],
]


def run(argv: list[str]) -> tuple[int, str]:
    console = Console(record=True, width=200)
    code = main(argv, console=console)
    return code, console.export_text()


def write(path: Path, rows) -> str:
    pd.DataFrame(rows, columns=COLS).to_csv(path, index=False)
    return str(path)


def table_rows(text: str) -> dict[str, list[str]]:
    """Body rows of the coverage table: symbol -> [first date, last date, rows, gaps]."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 7 and cells[1] and cells[1] != "symbol":
            out[cells[1]] = cells[2:6]
    return out


def flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------- coverage
def test_coverage_of_a_bundled_dataset():
    code, text = run(["data", "coverage", "sp500_ohlcv_30"])
    assert code == EXIT_OK
    assert "coverage of sp500_ohlcv_30" in text
    rows = table_rows(text)
    assert len(rows) == 30
    assert rows["AXP"] == ["2009-08-21", "2010-08-20", "245", "0"]
    assert all(r == ["2009-08-21", "2010-08-20", "245", "0"] for r in rows.values())


def test_coverage_of_the_wide_bundled_panel():
    code, text = run(["data", "coverage", "sp500_20"])
    assert code == EXIT_OK
    rows = table_rows(text)
    assert len(rows) == 20
    assert rows["MSFT"] == ["1990-01-02", "2022-12-28", "8313", "0"]


def test_coverage_of_a_ragged_csv(tmp_path):
    path = write(tmp_path / "ragged.csv", RAGGED)
    code, text = run(["data", "coverage", path])
    assert code == EXIT_OK
    assert table_rows(text) == {
        "AAA": ["2020-01-02", "2020-01-07", "4", "0"],
        "BBB": ["2020-01-02", "2020-01-07", "2", "2"],
    }
    assert "invalid" not in text  # coverage reports, it does not validate


def test_coverage_of_a_wide_csv(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("Date,XX,YY\n2020-01-02,1,\n2020-01-03,2,6\n2020-01-06,3,7\n")
    code, text = run(["data", "coverage", str(path)])
    assert code == EXIT_OK
    assert table_rows(text) == {
        "XX": ["2020-01-02", "2020-01-06", "3", "0"],
        "YY": ["2020-01-03", "2020-01-06", "2", "0"],
    }


# ------------------------------------------------------------------------- validate
def test_validate_valid_csv(tmp_path):
    path = write(tmp_path / "ok.csv", VALID)
    code, text = run(["data", "validate", path])
    assert code == EXIT_OK
    assert "valid: MarketData(name='ok.csv', 2 dates 2020-01-02..2020-01-03, 2 symbols" in text
    assert table_rows(text)["BBB"] == ["2020-01-02", "2020-01-03", "2", "0"]
    assert "note:" not in text


@pytest.mark.parametrize("name", ["sp500_20", "sp500_index", "sp500_ohlcv_30"])
def test_validate_bundled(name):
    code, text = run(["data", "validate", name])
    assert code == EXIT_OK
    assert "valid: MarketData(" in text


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("close", -1.0, "non-positive close"),
        ("high", 19.5, "high < low"),
        ("volume", -3, "negative volume"),
        ("close", "abc", "close value 'abc'"),
    ],
)
def test_validate_invalid_names_symbol_and_date(tmp_path, column, value, words):
    rows = [list(r) for r in VALID]
    rows[3][COLS.index(column)] = value  # BBB on 2020-01-03
    path = write(tmp_path / "bad.csv", rows)
    code, text = run(["data", "validate", path])
    assert code == EXIT_INVALID_DATA
    assert "invalid: invalid market data in" in text
    assert f"BBB: {words}" in text and "2020-01-03" in text


def test_validate_ragged_default_policy_fails(tmp_path):
    path = write(tmp_path / "ragged.csv", RAGGED)
    code, text = run(["data", "validate", path])
    assert code == EXIT_INVALID_DATA
    assert "BBB: no bar on 2020-01-03 and 1 other date(s) where other symbols trade" in text


def test_validate_drop_symbol_prints_the_note(tmp_path):
    path = write(tmp_path / "ragged.csv", RAGGED)
    with pytest.warns(DataWarning, match="dropped 1 symbol"):
        code, text = run(["data", "validate", path, "--missing", "drop_symbol"])
    assert code == EXIT_OK
    assert "valid: MarketData(name='ragged.csv', 4 dates 2020-01-02..2020-01-07, 1 symbols" in text
    assert "note: dropped 1 symbol(s) with incomplete coverage: ['BBB']" in text


def test_validate_ffill_prints_the_note(tmp_path):
    path = write(tmp_path / "ragged.csv", RAGGED)
    with pytest.warns(DataWarning, match="forward-filled"):
        code, text = run(["data", "validate", path, "--missing", "ffill"])
    assert code == EXIT_OK
    assert "2 symbols" in text
    assert "note: forward-filled 2 missing bar(s) in 1 symbol(s): BBB (2)" in text


def test_validate_unparseable_date_shows_the_whole_message(tmp_path):
    rows = [list(r) for r in VALID]
    rows[1][0] = "2020-13-45"
    path = write(tmp_path / "baddate.csv", rows)
    code, text = run(["data", "validate", path])
    assert code == EXIT_INVALID_DATA
    assert "BBB: unparseable date '2020-13-45' at row 1" in text


def test_messages_are_printed_verbatim_not_as_markup(tmp_path):
    # "[v2]" looks like a rich markup tag; the CLI must print it, not swallow it
    rows = [list(r) for r in VALID]
    rows[3][COLS.index("volume")] = -3
    path = write(tmp_path / "bars[v2].csv", rows)
    code, text = run(["data", "validate", path])
    assert code == EXIT_INVALID_DATA
    assert "invalid: invalid market data in bars[v2].csv: 1 problem(s)" in text
    # an error raised while reading the coverage names the full path
    rows[1][0] = "someday"
    path = write(tmp_path / "dates[v2].csv", rows)
    code, text = run(["data", "coverage", path])
    assert code == EXIT_INVALID_DATA
    assert f"error: invalid market data in {path}: 1 problem(s)" in text


def test_validate_missing_close_column(tmp_path):
    path = tmp_path / "noclose.csv"
    path.write_text("date,symbol,volume\n2020-01-02,AAA,5\n")
    code, text = run(["data", "validate", str(path)])
    assert code == EXIT_INVALID_DATA
    assert "missing required column 'close'" in text


def test_long_file_without_dates(tmp_path):
    path = tmp_path / "nodate.csv"
    path.write_text("symbol,close\nAAA,5\n")
    code, text = run(["data", "coverage", str(path)])
    assert code == EXIT_INVALID_DATA
    assert "missing required column 'date'" in text


# --------------------------------------------------------------------- missing files
@pytest.mark.parametrize("command", ["coverage", "validate"])
def test_missing_file(tmp_path, command):
    path = str(tmp_path / "nope.csv")
    code, text = run(["data", command, path])
    assert code != EXIT_OK
    assert f"market data file not found: {path}" in flat(text)
    assert "Traceback" not in text


def test_unknown_policy_is_rejected_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "validate", "sp500_20", "--missing", "zero"])
    assert info.value.code == 2
    assert "invalid choice: 'zero'" in capsys.readouterr().err


# ------------------------------------------------------------------- AI-Trader files
def aitrader_merged(tmp_path: Path) -> Path:
    """A merged.jsonl as AI-Trader writes it (two symbols, two days), loaded by every command."""
    import json

    def bar(close: float) -> dict[str, str]:
        prices = {"1. buy price": close, "2. high": close + 1, "3. low": close - 1}
        return {
            **{k: f"{v:.4f}" for k, v in prices.items()},
            "4. sell price": f"{close:.4f}",
            "5. volume": "100",
        }

    lines = [
        {
            "Meta Data": {"2. Symbol": symbol},
            "Time Series (Daily)": {"2025-10-02": bar(close + 1), "2025-10-01": bar(close)},
        }
        for symbol, close in (("AAA", 10.0), ("BBB", 20.0))
    ]
    path = tmp_path / "merged.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_validate_reads_ai_trader_files_as_the_loaders_do(tmp_path):
    path = aitrader_merged(tmp_path)
    code, text = run(["data", "validate", str(path)])
    assert code == EXIT_OK, text
    assert table_rows(text)["BBB"] == ["2025-10-01", "2025-10-02", "2", "0"]
    assert (
        "valid: MarketData(name='merged.jsonl', 2 dates 2025-10-01..2025-10-02, 2 symbols" in text
    )
    code, text = run(["data", "coverage", str(path)])
    assert code == EXIT_OK and table_rows(text)["AAA"] == ["2025-10-01", "2025-10-02", "2", "0"]


def test_validate_an_ai_trader_bar_that_is_not_an_object(tmp_path):
    path = aitrader_merged(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text(lines[0].replace('"2025-10-01": {', '"2025-10-01": 5, "x": {') + "\n")
    code, text = run(["data", "validate", str(path)])
    assert code == EXIT_INVALID_DATA
    assert "AAA: the bar on 2025-10-01 must be an object of prices" in flat(text)


# ------------------------------------------------------------------- unreadable files
@pytest.mark.parametrize("content", [b"", b"PAR1 not really parquet PAR1", bytes(range(256))])
@pytest.mark.parametrize("command", ["coverage", "validate"])
def test_a_corrupt_parquet_file_is_invalid_data(tmp_path, command, content):
    path = tmp_path / "prices.parquet"
    path.write_bytes(content)
    code, text = run(["data", command, str(path)])
    assert code == EXIT_INVALID_DATA == 2
    assert f"invalid market data in {path}" in flat(text) and "could not parse file" in text


# ---------------------------------------------------------------------- date formats
DAY_FIRST = [  # 13/01 can only be day first; 02/01 reads either way
    ["13/01/2020", "AAA", 10.0, 11.0, 9.0, 10.5, 100],
    ["02/01/2020", "AAA", 10.5, 12.0, 10.0, 11.0, 110],
]


def test_day_first_dates_are_refused_without_a_format(tmp_path):
    path = write(tmp_path / "eu.csv", DAY_FIRST)
    for command in ("coverage", "validate"):
        code, text = run(["data", command, path])
        assert code == EXIT_INVALID_DATA
        message = flat(text)
        assert "2 date(s) not written as YYYY-MM-DD, e.g. '13/01/2020' at row 0 (AAA)" in message
        assert "--date-format" in message and "valid:" not in message


def test_a_date_format_reads_day_first_dates(tmp_path):
    path = write(tmp_path / "eu.csv", DAY_FIRST)
    code, text = run(["data", "validate", path, "--date-format", "%d/%m/%Y"])
    assert code == EXIT_OK, text
    assert table_rows(text)["AAA"] == ["2020-01-02", "2020-01-13", "2", "0"]
    assert "2 dates 2020-01-02..2020-01-13" in text
    # a date the format does not fit is named
    code, text = run(["data", "validate", path, "--date-format", "%m/%d/%Y"])
    assert code == EXIT_INVALID_DATA
    assert "AAA: date '13/01/2020' at row 0 is not in the format '%m/%d/%Y'" in text
