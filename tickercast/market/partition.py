"""One ticker's partition as an ingest sees it: the stored files read back under the
`on_corrupt` policy, prices in canonical form with days as datetime64[D], and the
JSON-ready result of an ingest (paths, hashes, counts)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from tickercast.errors import CorruptPartitionError, CorruptSkippedError, HistoryShrinkError
from tickercast.market import lake
from tickercast.market.schema import PRICE_COLUMNS
from tickercast.market.validate import InvalidPricesError, Screened


# Days are handled as numpy datetime64[D] arrays: converting thousands of rows to and from
# `datetime.date` objects would cost more than the rest of an incremental ingest.
def day_array(values: Iterable) -> np.ndarray:
    """Days as a datetime64[D] array, whatever they were stored as."""
    if isinstance(values, np.ndarray) and values.dtype == "datetime64[D]":
        return values
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    return pd.to_datetime(series).to_numpy().astype("datetime64[D]")


def as_date(value: np.datetime64) -> dt.date:
    return value.astype("datetime64[D]").astype(object)


def dates(values: Iterable) -> list[dt.date]:
    """Days as `datetime.date` objects (for the few events, not for price columns)."""
    return [as_date(v) for v in day_array(values)]


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """The price columns in order, `date` as datetime64 (for merges and checks)."""
    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidPricesError(f"source answer lacks column(s) {missing}")
    out = frame[PRICE_COLUMNS].reset_index(drop=True)
    out["date"] = day_array(out["date"])
    return out


def split_days(events: pd.DataFrame | None) -> set[dt.date]:
    if events is None or events.empty:
        return set()
    return set(dates(events.loc[events["kind"] == "split", "date"]))


def read_stored(
    data_dir: Path, ticker: str, on_corrupt: str, notes: list[str]
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, bool]:
    """(stored prices, stored events, whether a stored file was unreadable).

    Both files are read in full, so any file pyarrow cannot read back is found here,
    before anything is written. An unreadable file is handled by `on_corrupt`: "fail"
    raises `CorruptPartitionError`, "skip" raises `CorruptSkippedError` (the ticker's
    files stay as they are), "reingest" notes it and treats the file as absent, so the
    ticker is fetched again and the file replaced. Leftover temporary files of an
    interrupted write (hidden from every reader) are removed here, under the lock.
    """
    removed = lake.remove_leftovers(data_dir, ticker)
    if removed:
        notes.append(
            f"ticker {ticker}: removed {removed} leftover temporary file(s) of an interrupted write"
        )
    problems: list[str] = []
    prices = None
    path = lake.partition_path(data_dir, ticker)
    if path.is_file():
        try:
            prices = canonical(lake.read_price_file(path).to_pandas(date_as_object=False))
        except CorruptPartitionError as exc:
            problems.append(str(exc))
    try:
        events = lake.read_events(data_dir, ticker)
    except CorruptPartitionError as exc:
        events = None
        problems.append(str(exc))
    if not problems:
        return prices, events, False
    found = "; ".join(problems)
    if on_corrupt == "fail":
        raise CorruptPartitionError(
            f"ticker {ticker}: {found} (on_corrupt=fail: nothing was changed; remove or "
            "repair the file, or rerun with on_corrupt=reingest)"
        )
    if on_corrupt == "skip":
        raise CorruptSkippedError(
            f"ticker {ticker}: skipped (on_corrupt=skip), its files were left as they are: {found}"
        )
    notes.append(f"ticker {ticker}: {found}; re-ingested it (on_corrupt=reingest)")
    return prices, events, True


def ingest_result(
    ticker: str,
    source: str,
    path: Path,
    digest: str,
    prices: pd.DataFrame,
    old_days: Iterable | None,
    *,
    dropped: int,
    warnings: list[str],
    mode: str,
    fetches: list[dict],
    attempts: int,
    retries: list[str] | None = None,
    screened: Screened | None = None,
    removed: int = 0,
) -> dict:
    """What an ingest returns: JSON-ready, so the step can cache it and name its output.

    `dropped_null_rows` counts the source's null rows and rows without a valid close;
    `quirks` (kind -> rows) and `dropped_quirk_rows` what `screened` found and dropped.
    """
    days = day_array(prices["date"])
    before = day_array(old_days) if old_days is not None else days[:0]
    return {
        "ticker": ticker,
        "source": source,
        "path": str(path),
        "sha256": digest,
        "rows": int(len(prices)),
        "rows_added": int(np.isin(days, before, invert=True).sum()),
        "rows_removed": int(removed),
        "first_day": str(days.min()),
        "last_day": str(days.max()),
        "dropped_null_rows": int(dropped),
        "dropped_quirk_rows": screened.dropped if screened else 0,
        "quirks": dict(screened.quirks) if screened else {},
        "warnings": list(warnings),
        "mode": mode,
        "fetches": fetches,
        "attempts": attempts,
        "retries": list(retries or []),
        "outputs": {str(path): digest},
    }


def removed_days(
    ticker: str, source: str, stored: np.ndarray | None, new: pd.DataFrame, replace: bool
) -> int:
    """How many stored days the rows about to replace a partition lack. Without `replace`
    any such day is refused (HistoryShrinkError naming the ticker and the counts), so no
    source silently shortens a stored history."""
    if stored is None or not len(stored):
        return 0
    days = day_array(new["date"])
    lost = stored[np.isin(stored, days, invert=True)]
    if lost.size and not replace:
        span = f"{days.min()}..{days.max()}" if days.size else "no days"
        raise HistoryShrinkError(
            f"ticker {ticker}: the {source} source holds {len(days):,} rows ({span}) but the "
            f"lake stores {len(stored):,} ({stored.min()}..{stored.max()}); storing it would "
            f"remove {lost.size:,} stored days ({lost.min()}..{lost.max()}). Nothing was "
            "changed; ask for a replacement (--replace) to replace the stored history"
        )
    return int(lost.size)
