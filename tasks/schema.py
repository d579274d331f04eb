"""The lake's explicit price schema: one row per trading day, one partition per ticker."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

PRICE_COLUMNS = ["date", "open", "high", "low", "close", "adj_close", "volume"]

PRICE_SCHEMA = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("adj_close", pa.float64(), nullable=False),
        pa.field("volume", pa.int64(), nullable=False),
    ],
    metadata={
        "description": "Daily OHLC as traded (split-adjusted by the source), "
        "adj_close also dividend-adjusted; volume in shares."
    },
)


def to_price_table(frame: pd.DataFrame) -> pa.Table:
    """Cast a canonical price frame to the lake schema; raises naming the bad column."""
    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"price frame lacks columns {missing}")
    out = frame[PRICE_COLUMNS].copy()
    out["date"] = pd.to_datetime(out["date"]).dt.date
    return pa.Table.from_pandas(out, schema=PRICE_SCHEMA, preserve_index=False)
