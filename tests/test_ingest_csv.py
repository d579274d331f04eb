"""CSV import, safe ticker names, and the lake as pyarrow, pandas and DuckDB read it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from tests.yahoo_replay import replay_session
from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.locate import csv_tickers
from tickercast.market.report import ingest_many
from tickercast.market.sources import MalformedFileError
from tickercast.tickers import InvalidTickerError

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"
ROWS = (
    "2020-01-02,10,11,9,10.5,10.4,100\n"
    "2020-01-03,10.5,11.5,10,11,10.9,200\n"
    "2020-01-06,11,12,10.5,11.5,11.4,300\n"
)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


# -- CSV import -------------------------------------------------------------------------


def test_folder_import_with_and_without_adj_close_any_header_case(tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    write(folder, "AAA.csv", HEADER + ROWS)
    write(folder, "bbb.CSV", "date,OPEN,high,Low,CLOSE,volume\n2020-01-02,1,2,0.5,1.5,10\n")
    data = tmp_path / "data"

    assert csv_tickers(folder) == ["AAA", "BBB"]
    rows, _ = ingest_many(csv_tickers(folder), "csv", data, csv_dir=str(folder))

    assert [(r["ticker"], r["status"], r["rows_added"]) for r in rows] == [
        ("AAA", "ok", 3),
        ("BBB", "ok", 1),
    ]
    aaa = lake.read_partition(data, "AAA")
    assert aaa["adj_close"].tolist() == [10.4, 10.9, 11.4]
    assert lake.read_partition(data, "BBB")["adj_close"].tolist() == [1.5]  # = close


def test_single_file_import_and_yfinance_style_export(tmp_path: Path) -> None:
    # yfinance's history().to_csv(): exchange-local timestamps, event columns, any name
    text = (
        "Date,Open,High,Low,Close,Adj Close,Volume,Dividends,Stock Splits\n"
        "2020-08-31 00:00:00-04:00,127.58,131.0,126.0,129.04,126.5,225702700,0.0,4.0\n"
        "2020-09-01 00:00:00-04:00,132.76,134.8,130.53,134.18,131.5,151948100,0.0,0.0\n"
    )
    path = write(tmp_path / "exports", "apple export.csv", text)
    result = ingest_ticker("AAPL", "csv", tmp_path / "data", csv_dir=str(path))

    assert result["rows"] == 2 and result["first_day"] == "2020-08-31"
    stored = lake.read_partition(tmp_path / "data", "AAPL")
    assert stored["date"].tolist() == [dt.date(2020, 8, 31), dt.date(2020, 9, 1)]


def test_real_yahoo_export_with_null_row(tmp_path: Path, shared_data: Path) -> None:
    result = ingest_ticker("AAPL", "csv", tmp_path, csv_dir=str(shared_data / "prices"))
    assert result["dropped_null_rows"] == 1 and result["rows_added"] == 10086
    assert result["mode"] == "replace"


MALFORMED = {
    "missing-column": ("Date,Open,High,Low,Volume\n2020-01-02,1,2,0.5,10\n", "line 1"),
    "text-in-price": (HEADER + "2020-01-02,1,2,0.5,abc,1.5,10\n", "line 2, field close"),
    "bad-date": (HEADER + ROWS + "2020-13-02,1,2,0.5,1,1,10\n", "line 5, field date"),
    "short-row": (HEADER + ROWS + "2020-01-07,1,2,0.5,1,1\n", "line 5: 6 fields"),
    "duplicate-day": (HEADER + ROWS + "2020-01-06,1,2,0.5,1,1,10\n", "line 5, field date"),
    "unsorted": (
        HEADER + ROWS + "2020-01-05,1,2,0.5,1,1,10\n",
        "line 5, field date: 2020-01-05 comes after",
    ),
    "fractional-volume": (HEADER + "2020-01-02,1,2,0.5,1,1,10.5\n", "line 2, field volume"),
    "empty": ("", "line 1: empty file"),
    "header-only": (HEADER, "line 2: no data rows"),
    "all-null": (HEADER + "2020-01-02,null,null,null,null,null,null\n", "line 2: all 1"),
    "negative-volume": (HEADER + "2020-01-02,1,2,0.5,1,1,-10\n", "line 2: ticker"),
}


# Vendor quirks: kept (marked missing) by default, refused like the above with on_quirk=fail
# (tests/test_ingest_quirks.py has the rest).
QUIRKS = {
    "high-below-close": (HEADER + ROWS + "2020-01-07,10,10,9,12,12,5\n", "line 5: ticker"),
    "negative-price": (HEADER + "2020-01-02,1,2,-0.5,1,1,10\n", "line 2: ticker"),
    "null-close": (HEADER + "2020-01-02,1,2,0.5,null,1,10\n", "line 2, field close"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED) + sorted(QUIRKS))
def test_malformed_csv_refused_naming_file_and_line_lake_unchanged(
    tmp_path: Path, case: str
) -> None:
    data = tmp_path / "data"
    good = write(tmp_path / "good", "AAA.csv", HEADER + ROWS)
    ingest_ticker("AAA", "csv", data, csv_dir=str(good.parent))
    partition = lake.partition_path(data, "AAA")
    before = partition.read_bytes()

    text, where = MALFORMED[case] if case in MALFORMED else QUIRKS[case]
    bad = write(tmp_path / "bad", "AAA.csv", text)
    strict = {"on_quirk": "fail"} if case in QUIRKS else None
    with pytest.raises(MalformedFileError) as err:
        ingest_ticker("AAA", "csv", data, csv_dir=str(bad.parent), options=strict)

    assert str(bad) in str(err.value) and where in str(err.value), str(err.value)
    assert partition.read_bytes() == before
    assert sorted(p.name for p in partition.parent.iterdir()) == ["part-0.parquet"]


def test_quirks_are_kept_by_default(tmp_path: Path) -> None:
    result = ingest_ticker(
        "AAA",
        "csv",
        tmp_path,
        csv_dir=str(write(tmp_path / "q", "AAA.csv", QUIRKS["high-below-close"][0])),
    )
    assert result["quirks"] == {"close_above_high": 1} and result["rows"] == 4
    assert lake.read_partition(tmp_path, "AAA")["high"].isna().tolist() == [False] * 3 + [True]


def test_malformed_file_in_a_folder_fails_alone(tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    write(folder, "AAA.csv", HEADER + ROWS)
    write(folder, "BBB.csv", HEADER + "2020-01-02,1,2,0.5,abc,1,10\n")
    write(folder, "my prices.csv", HEADER + ROWS)
    rows, _ = ingest_many(csv_tickers(folder), "csv", tmp_path / "data", csv_dir=str(folder))

    status = {r["ticker"]: (r["status"], r["error"]) for r in rows}
    assert status["AAA"] == ("ok", None)
    assert status["BBB"][0] == "failed" and "BBB.csv, line 2, field close" in status["BBB"][1]
    assert status["MY PRICES"][0] == "failed" and "invalid ticker" in status["MY PRICES"][1]
    assert [p.name for p in lake.prices_root(tmp_path / "data").iterdir()] == ["ticker=AAA"]


# -- ticker names -----------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BRK-B", "^GSPC", "EURUSD=X", "brk.b"])
def test_yahoo_alphabet_accepted_end_to_end(tmp_path: Path, symbol: str) -> None:
    folder = tmp_path / "csv"
    write(folder, f"{symbol}.csv", HEADER + ROWS)
    result = ingest_ticker(symbol, "csv", tmp_path / "data", csv_dir=str(folder))

    assert result["ticker"] == symbol.upper()
    table = lake.read_dataset(tmp_path / "data")
    assert set(table.column("ticker").to_pylist()) == {symbol.upper()}


@pytest.mark.parametrize("symbol", ["../x", "AAPL;rm", "", "A" * 30, "..", "a/b", "$(id)"])
@pytest.mark.parametrize("source", ["csv", "yfinance"])
def test_unsafe_ticker_refused_before_any_path_or_url(
    tmp_path: Path, symbol: str, source: str
) -> None:
    data = tmp_path / "data"
    session = replay_session()
    with pytest.raises(InvalidTickerError, match="invalid ticker"):
        ingest_ticker(symbol, source, data, csv_dir=str(tmp_path), session=session)
    assert not data.exists(), "nothing was created"
    assert session.adapter.calls == [], "no URL was requested"


def test_unsafe_ticker_refused_by_the_lake_itself(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "date": [dt.date(2020, 1, 2)],
            "open": 1.0,
            "high": 1.0,
            "low": 1.0,
            "close": 1.0,
            "adj_close": 1.0,
            "volume": 1,
        }
    )
    with pytest.raises(InvalidTickerError):
        lake.write_partition(tmp_path, "../escape", frame)
    assert list(tmp_path.iterdir()) == []


# -- readers ----------------------------------------------------------------------------


def test_lake_reads_as_one_hive_dataset_in_pyarrow_pandas_and_duckdb(tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    write(folder, "AAA.csv", HEADER + ROWS)
    write(folder, "EURUSD=X.csv", HEADER + ROWS.replace("2020-01-06", "2020-01-07"))
    write(folder, "^GSPC.csv", HEADER + ROWS)
    data = tmp_path / "data"
    ingest_many(csv_tickers(folder), "csv", data, csv_dir=str(folder))
    root = lake.prices_root(data)

    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 9
    frame = pd.read_parquet(root)
    assert sorted(set(frame["ticker"].astype(str))) == ["AAA", "EURUSD=X", "^GSPC"]

    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(
        f"SELECT ticker, count(*) AS n, max(date) AS last FROM read_parquet("
        f"'{root}/*/*.parquet', hive_partitioning = true) GROUP BY ticker ORDER BY ticker"
    ).fetchall()
    assert got == [
        ("AAA", 3, dt.date(2020, 1, 6)),
        ("EURUSD=X", 3, dt.date(2020, 1, 7)),
        ("^GSPC", 3, dt.date(2020, 1, 6)),
    ]
