"""The Parquet data lake: `<data_dir>/lake/prices/ticker=<T>/part-0.parquet`.

One partition per ticker, explicit schema, readable as a hive-partitioned dataset by
pyarrow, pandas and DuckDB. Writes go to a hidden temporary file renamed into place
under a per-ticker lock, so concurrent writers and crashes never leave a torn partition.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.atomic import atomic_path, file_lock
from tasks.schema import PRICE_SCHEMA, to_price_table
from tasks.tickers import validate_ticker

PART_NAME = "part-0.parquet"


class CorruptPartitionError(RuntimeError):
    """A lake file that cannot be read back; the message names the file."""


def prices_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / "lake" / "prices"


def partition_dir(data_dir: str | Path, ticker: str) -> Path:
    return prices_root(data_dir) / f"ticker={validate_ticker(ticker)}"


def partition_path(data_dir: str | Path, ticker: str) -> Path:
    return partition_dir(data_dir, ticker) / PART_NAME


def partition_lock(data_dir: str | Path, ticker: str):
    """Serialises read-merge-write cycles on one ticker across threads and processes."""
    return file_lock(partition_dir(data_dir, ticker) / ".lock")


def write_partition(data_dir: str | Path, ticker: str, frame: pd.DataFrame) -> Path:
    """Replace the ticker's partition atomically with `frame` (sorted by date)."""
    table = to_price_table(frame.sort_values("date"))
    target = partition_path(data_dir, ticker)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return target


def write_events(data_dir: str | Path, ticker: str, events: pd.DataFrame) -> Path:
    """Splits and dividends beside the prices, in their own hive-partitioned table."""
    target = Path(data_dir) / "lake" / "events" / f"ticker={validate_ticker(ticker)}" / PART_NAME
    with atomic_path(target) as tmp:
        events.to_parquet(tmp, index=False)
    return target


def read_partition(data_dir: str | Path, ticker: str) -> pd.DataFrame:
    """The ticker's stored prices; a missing partition raises FileNotFoundError."""
    path = partition_path(data_dir, ticker)
    if not path.is_file():
        raise FileNotFoundError(f"ticker {ticker}: no data in the lake at {path}; ingest it first")
    return read_price_file(path).to_pandas()


def read_price_file(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
        return table.select(PRICE_SCHEMA.names).cast(PRICE_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, KeyError) as exc:
        raise CorruptPartitionError(f"corrupt lake file {path}: {exc}") from exc


def read_dataset(data_dir: str | Path) -> pa.Table:
    """The whole lake as one table with a `ticker` column from the hive partitioning."""
    import pyarrow.dataset as ds

    return ds.dataset(prices_root(data_dir), format="parquet", partitioning="hive").to_table()
