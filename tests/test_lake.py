import datetime as dt
import os
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tickercast.errors import CorruptPartitionError
from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.schema import PRICE_SCHEMA
from tickercast.market.validate import InvalidPricesError, validate_prices


def frame(days, close=10.0):
    return pd.DataFrame(
        {
            "date": [dt.date(2020, 1, d) for d in days],
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "adj_close": close,
            "volume": 100,
        }
    )


def test_partition_layout_schema_and_hive_dataset(tmp_path):
    lake.write_partition(tmp_path, "AAPL", frame([2, 3]))
    lake.write_partition(tmp_path, "BRK-B", frame([2, 3, 6]))
    assert (tmp_path / "lake/prices/ticker=AAPL/part-0.parquet").is_file()
    table = ds.dataset(tmp_path / "lake/prices", format="parquet", partitioning="hive").to_table()
    rows_per_ticker = table.group_by("ticker").aggregate([("date", "count")]).to_pylist()
    assert sorted((r["ticker"], r["date_count"]) for r in rows_per_ticker) == [
        ("AAPL", 2),
        ("BRK-B", 3),
    ]
    stored = pa.parquet.read_schema(tmp_path / "lake/prices/ticker=AAPL/part-0.parquet")
    assert stored.remove_metadata().equals(PRICE_SCHEMA.remove_metadata())
    assert lake.read_dataset(tmp_path).num_rows == 5


def test_ingest_csv_writes_lake_and_reports(tmp_path, shared_data):
    result = ingest_ticker("AAPL", "csv", tmp_path, csv_dir=str(shared_data / "prices"))
    assert result["dropped_null_rows"] == 1
    assert result["rows"] == 10086 and result["first_day"] == "1980-12-12"
    assert lake.read_partition(tmp_path, "AAPL")["date"].is_monotonic_increasing


def test_invalid_prices_refused_and_lake_unchanged(tmp_path):
    lake.write_partition(tmp_path, "AAPL", frame([2, 3]))
    before = lake.partition_path(tmp_path, "AAPL").read_bytes()
    bad = frame([2, 3, 6])
    bad.loc[2, "close"] = -1.0
    with pytest.raises(InvalidPricesError, match="ticker AAPL, 2020-01-06: close <= 0"):
        validate_prices(bad, "AAPL")
    with pytest.raises(InvalidPricesError, match="duplicate trading day"):
        validate_prices(frame([2, 2]), "AAPL")
    assert lake.partition_path(tmp_path, "AAPL").read_bytes() == before


def test_big_unexplained_move_is_a_warning_not_an_error():
    f = frame([2, 3])
    f.loc[1, ["open", "high", "low", "close", "adj_close"]] = [25.0, 26.0, 24.0, 25.0, 25.0]
    report = validate_prices(f, "AAPL")
    assert report.warnings and "150%" in report.warnings[0]


def test_crash_before_rename_leaves_old_partition(tmp_path):
    """A writer killed after writing its temporary file but before the rename."""
    lake.write_partition(tmp_path, "AAPL", frame([2, 3]))
    before = lake.read_partition(tmp_path, "AAPL")
    code = (
        "import os, sys, pandas as pd, datetime as dt\n"
        "import tickercast.atomic as atomic\n"
        "from tickercast.market import lake\n"
        "real = os.replace\n"
        "def die(src, dst):\n"
        "    if str(dst).endswith('part-0.parquet'): os._exit(9)\n"
        "    real(src, dst)\n"
        "atomic.os.replace = die\n"
        f"f = pd.read_parquet({str(lake.partition_path(tmp_path, 'AAPL'))!r})\n"
        "f = pd.concat([f, f.assign(date=[dt.date(2021, 1, 4), dt.date(2021, 1, 5)])])\n"
        f"lake.write_partition({str(tmp_path)!r}, 'AAPL', f)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd())
    assert proc.returncode == 9
    pd.testing.assert_frame_equal(lake.read_partition(tmp_path, "AAPL"), before)
    # The killed writer left its complete new file behind, under a hidden name...
    (orphan,) = lake.partition_dir(tmp_path, "AAPL").glob(".part-0.parquet.*.tmp")
    assert pa.parquet.read_table(orphan).num_rows == 4
    # ...which dataset readers skip: visible, it would add its 4 rows to the 2 stored.
    assert lake.read_dataset(tmp_path).num_rows == 2
    assert lake.remove_leftovers(tmp_path, "AAPL") == 1 and not orphan.exists()


def test_corrupt_partition_named(tmp_path):
    path = lake.write_partition(tmp_path, "AAPL", frame([2, 3]))
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(CorruptPartitionError, match="ticker=AAPL/part-0.parquet"):
        lake.read_partition(tmp_path, "AAPL")


def test_events_have_an_explicit_schema(tmp_path):
    from tickercast.market.schema import EVENT_SCHEMA

    events = pd.DataFrame(
        {"date": [dt.date(2020, 8, 31), dt.date(2020, 11, 6)], "kind": ["split", "dividend"]}
    ).assign(value=[4.0, 0.205])
    path = lake.write_events(tmp_path, "AAPL", events)
    assert pa.parquet.read_schema(path).remove_metadata().equals(EVENT_SCHEMA.remove_metadata())
    assert lake.read_events(tmp_path, "AAPL").to_dict("records")[0] == {
        "date": dt.date(2020, 8, 31),
        "kind": "split",
        "value": 4.0,
    }
    with pytest.raises(ValueError, match=r"unknown event kinds \['bonus'\]"):
        lake.write_events(tmp_path, "AAPL", events.assign(kind="bonus"))
    assert lake.read_events(tmp_path, "MSFT") is None


def test_symbols_with_hive_characters_are_percent_encoded(tmp_path):
    assert lake.partition_dir(tmp_path, "EURUSD=X").name == "ticker=EURUSD%3DX"
    assert lake.partition_dir(tmp_path, "^GSPC").name == "ticker=%5EGSPC"
    assert lake.partition_dir(tmp_path, "BRK-B").name == "ticker=BRK-B"
    lake.write_partition(tmp_path, "EURUSD=X", frame([2, 3]))
    assert lake.read_dataset(tmp_path).column("ticker").to_pylist() == ["EURUSD=X"] * 2


def test_covered_from_note_and_days(tmp_path):
    lake.write_partition(tmp_path, "AAPL", frame([2, 3]), covered_from="2019-06-01")
    assert lake.read_covered_from(tmp_path, "AAPL") == "2019-06-01"
    assert [str(d) for d in lake.read_days(tmp_path, "AAPL")] == ["2020-01-02", "2020-01-03"]
    lake.write_partition(tmp_path, "AAPL", frame([2]))
    assert lake.read_covered_from(tmp_path, "AAPL") is None
    assert lake.read_days(tmp_path, "MSFT") is None
