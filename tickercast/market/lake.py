"""The Parquet data lake: `<data_dir>/lake/prices/ticker=<T>/part-0.parquet`.

`<T>` is the symbol, percent-encoded where Yahoo's alphabet meets hive's (`=`, `^`).

One partition per ticker, explicit schema, readable as a hive-partitioned dataset by
pyarrow, pandas and DuckDB. Writes go to a hidden temporary file renamed into place
under a per-ticker lock, so concurrent writers and crashes never leave a torn partition.
Splits and dividends live beside the prices in `lake/events/ticker=<T>/part-0.parquet`.

    duckdb -c "SELECT ticker, max(date) FROM read_parquet('data/lake/prices/*/*.parquet',
               hive_partitioning=true) GROUP BY ticker"
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tickercast import layout
from tickercast.atomic import atomic_path, file_lock
from tickercast.errors import CorruptPartitionError
from tickercast.market.schema import (
    EVENT_SCHEMA,
    PRICE_SCHEMA,
    empty_events,
    to_event_table,
    to_price_table,
)
from tickercast.tickers import validate_ticker

PART_NAME = "part-0.parquet"


def prices_root(data_dir: str | Path) -> Path:
    return layout.lake_prices(data_dir)


def partition_name(ticker: str) -> str:
    """`ticker=<T>` with T percent-encoded (EURUSD=X -> EURUSD%3DX, ^GSPC -> %5EGSPC).

    Hive readers (pyarrow, pandas, DuckDB) decode it back to the symbol; left raw, the
    `=` inside a symbol breaks DuckDB's hive parsing.
    """
    return f"ticker={quote(validate_ticker(ticker), safe='')}"


def partition_dir(data_dir: str | Path, ticker: str) -> Path:
    return prices_root(data_dir) / partition_name(ticker)


def partition_path(data_dir: str | Path, ticker: str) -> Path:
    return partition_dir(data_dir, ticker) / PART_NAME


def partition_lock(data_dir: str | Path, ticker: str):
    """Serialises read-merge-write cycles on one ticker across threads and processes.

    The lock file lives outside `lake/prices`, so a ticker that fails before anything
    is stored leaves no empty partition folder behind.
    """
    return file_lock(layout.lake_lock(data_dir, validate_ticker(ticker)))


# Schema metadata: the earliest day a fetch asked the source for ("max": its whole history),
# so a `start` before a ticker's first trading day does not refetch it on every run.
COVERED_FROM = b"tickercast.covered_from"


def write_partition(
    data_dir: str | Path, ticker: str, frame: pd.DataFrame, covered_from: str | None = None
) -> Path:
    """Replace the ticker's partition atomically with `frame` (sorted by date)."""
    table = to_price_table(frame.sort_values("date"))
    if covered_from is not None:
        metadata = {**(table.schema.metadata or {}), COVERED_FROM: covered_from.encode()}
        table = table.replace_schema_metadata(metadata)
    target = partition_path(data_dir, ticker)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return target


def remove_leftovers(data_dir: str | Path, ticker: str) -> int:
    """Delete the hidden temporary files an interrupted write left in the ticker's folders.

    Readers never see them (hidden names); call it only under `partition_lock`, where no
    other writer of this ticker can be mid-write. Returns how many were removed.
    """
    removed = 0
    for folder in (partition_dir(data_dir, ticker), events_path(data_dir, ticker).parent):
        if folder.is_dir():
            for leftover in folder.glob(f".{PART_NAME}.*.tmp"):
                leftover.unlink(missing_ok=True)
                removed += 1
    return removed


def events_root(data_dir: str | Path) -> Path:
    return layout.lake_events(data_dir)


def events_path(data_dir: str | Path, ticker: str) -> Path:
    return events_root(data_dir) / partition_name(ticker) / PART_NAME


def write_events(data_dir: str | Path, ticker: str, events: pd.DataFrame) -> Path:
    """Splits and dividends beside the prices, in their own hive-partitioned table."""
    table = to_event_table(events.sort_values(["date", "kind"], kind="stable"))
    target = events_path(data_dir, ticker)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return target


def read_events(data_dir: str | Path, ticker: str) -> pd.DataFrame | None:
    """The ticker's stored events; None when none were ever stored (e.g. a CSV import)."""
    path = events_path(data_dir, ticker)
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path).select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, KeyError) as exc:
        raise CorruptPartitionError(f"corrupt lake file {path}: {exc}") from exc
    frame = table.to_pandas()
    return frame if len(frame) else empty_events()


def read_partition(data_dir: str | Path, ticker: str) -> pd.DataFrame:
    """The ticker's stored prices; a missing partition raises FileNotFoundError."""
    path = partition_path(data_dir, ticker)
    if not path.is_file():
        raise FileNotFoundError(f"ticker {ticker}: no data in the lake at {path}; ingest it first")
    return read_price_file(path).to_pandas()


def read_covered_from(data_dir: str | Path, ticker: str) -> str | None:
    """The partition's COVERED_FROM note ("max" or YYYY-MM-DD); None if it has none."""
    path = partition_path(data_dir, ticker)
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptPartitionError(f"corrupt lake file {path}: {exc}") from exc
    value = metadata.get(COVERED_FROM)
    return value.decode() if value else None


def read_days(data_dir: str | Path, ticker: str) -> np.ndarray | None:
    """Only the stored trading days as datetime64[D] (cheap: one column); None without one."""
    path = partition_path(data_dir, ticker)
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path, columns=["date"])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, KeyError) as exc:
        raise CorruptPartitionError(f"corrupt lake file {path}: {exc}") from exc
    return table.column("date").to_numpy()


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
