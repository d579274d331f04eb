"""The lake's explicit schemas: prices (one row per trading day) and corporate events.

Adjustment choice, the same for every source: `open`, `high`, `low`, `close` are prices
as traded but split-adjusted (what Yahoo's chart and CSV exports call Open..Close), and
`adj_close` is additionally dividend-adjusted as of the fetch. Splits and dividends are
stored beside the prices (`lake/events`) so a reader can rebuild any other adjustment.

Every stored row has a close; `open`, `high`, `low` and `adj_close` may be null where the
vendor's value was zero or inconsistent (`tickercast.market.validate.screen_prices`).
pandas reads those as NaN, DuckDB and pyarrow as NULL, so an aggregate skips them
instead of averaging a fake 0.0. Files written before this schema (no nulls) read as is.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

PRICE_COLUMNS = ["date", "open", "high", "low", "close", "adj_close", "volume"]
MISSING_OK = ("open", "high", "low", "adj_close")  # may be null in a stored row

PRICE_SCHEMA = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("open", pa.float64(), nullable=True),
        pa.field("high", pa.float64(), nullable=True),
        pa.field("low", pa.float64(), nullable=True),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("adj_close", pa.float64(), nullable=True),
        pa.field("volume", pa.int64(), nullable=False),
    ],
    metadata={
        "description": "Daily OHLC as traded (split-adjusted by the source), "
        "adj_close also dividend-adjusted; volume in shares. open, high, low and adj_close "
        "are null where the source's value was zero or inconsistent."
    },
)


def to_price_table(frame: pd.DataFrame) -> pa.Table:
    """Cast a canonical price frame to the lake schema; raises naming the bad column."""
    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"price frame lacks columns {missing}")
    # Column by column from numpy: no round trip through `datetime.date` objects.
    days = pd.to_datetime(frame["date"].reset_index(drop=True)).to_numpy()
    arrays = [pa.array(days.astype("datetime64[D]"), type=pa.date32())]
    for spec in list(PRICE_SCHEMA)[1:]:
        try:
            # NaN -> null in the columns that may miss a value (from_pandas semantics).
            values = frame[spec.name].to_numpy()
            arrays.append(pa.array(values, type=spec.type, from_pandas=spec.nullable))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ValueError(f"price column {spec.name}: {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=PRICE_SCHEMA)


EVENT_COLUMNS = ["date", "kind", "value"]
EVENT_KINDS = ("split", "dividend")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ],
    metadata={
        "description": "Corporate events by exchange-local day: kind 'split' with the ratio "
        "(4.0 for 4:1) or 'dividend' with the amount per share."
    },
)


def empty_events() -> pd.DataFrame:
    """An events frame with no rows but the right columns and dtypes."""
    return pd.DataFrame(
        {
            "date": pd.Series(dtype="object"),
            "kind": pd.Series(dtype="object"),
            "value": pd.Series(dtype="float64"),
        }
    )


def to_event_table(frame: pd.DataFrame) -> pa.Table:
    """Cast an events frame to the lake schema; refuses unknown kinds by name."""
    missing = [c for c in EVENT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"events frame lacks columns {missing}")
    out = frame[EVENT_COLUMNS].copy()
    unknown = sorted(set(out["kind"]) - set(EVENT_KINDS))
    if unknown:
        raise ValueError(f"unknown event kinds {unknown}; valid: {list(EVENT_KINDS)}")
    out["date"] = pd.to_datetime(out["date"]).dt.date
    out["kind"] = out["kind"].astype(str)
    out["value"] = out["value"].astype("float64")
    return pa.Table.from_pandas(out, schema=EVENT_SCHEMA, preserve_index=False)
