"""Ingest: load a ticker from its source, validate it, and write its lake partition."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from tasks import lake
from tasks.hashing import file_sha256
from tasks.sources import Loaded, csv_path, load_csv, load_sample, sample_path, sine_prices
from tasks.tickers import validate_ticker
from tasks.validate import validate_prices


def source_fingerprint(source: str, ticker: str, csv_dir: str | None) -> str | None:
    """Content hash of what an offline source would read; None for live sources."""
    if source == "sample":
        return file_sha256(sample_path(ticker))
    if source == "csv":
        return file_sha256(csv_path(csv_dir or ".", ticker))
    if source == "sine":
        return "sine-v1"
    return None


def _load_yfinance(
    ticker: str, start: str | None, end: str | None, session: Any
) -> tuple[Loaded, pd.DataFrame]:
    from tasks.yahoo import fetch_history

    history = fetch_history(
        ticker,
        start=dt.date.fromisoformat(start) if start else None,
        end=dt.date.fromisoformat(end) if end else None,
        session=session,
    )
    return Loaded(history.prices), history.events


def load_source(
    source: str,
    ticker: str,
    csv_dir: str | None = None,
    start: str | None = None,
    end: str | None = None,
    session: Any = None,
) -> tuple[Loaded, pd.DataFrame | None]:
    """The ticker's prices from `source` (full history for offline sources)."""
    if source == "sample":
        return load_sample(ticker), None
    if source == "csv":
        if not csv_dir:
            raise ValueError("source 'csv' needs csv_dir")
        return load_csv(csv_path(csv_dir, ticker)), None
    if source == "sine":
        return sine_prices(), None
    if source == "yfinance":
        return _load_yfinance(ticker, start, end, session)
    raise ValueError(f"unknown source {source!r}; valid: ['csv', 'sample', 'sine', 'yfinance']")


def _merge(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """New rows win on shared days; old days outside the fetched range are kept."""
    if old is None or old.empty:
        return new
    merged = pd.concat([old, new], ignore_index=True)
    merged["date"] = pd.to_datetime(merged["date"]).dt.date
    return merged.drop_duplicates("date", keep="last").sort_values("date").reset_index(drop=True)


def ingest_ticker(
    ticker: str,
    source: str,
    data_dir: str | Path,
    csv_dir: str | None = None,
    start: str | None = None,
    end: str | None = None,
    session: Any = None,
) -> dict:
    """Validate, then atomically replace the ticker's partition; returns paths + hashes."""
    ticker = validate_ticker(ticker)
    loaded, events = load_source(source, ticker, csv_dir, start, end, session)
    prices = loaded.prices
    split_days = set()
    if events is not None and not events.empty:
        split_days = set(pd.to_datetime(events.loc[events["kind"] == "split", "date"]).dt.date)
    report = validate_prices(prices, ticker, split_days=split_days)
    with lake.partition_lock(data_dir, ticker):
        old = None
        if source == "yfinance" and lake.partition_path(data_dir, ticker).is_file():
            old = lake.read_partition(data_dir, ticker)
        merged = _merge(old, prices)
        path = lake.write_partition(data_dir, ticker, merged)
        digest = file_sha256(path)
        if events is not None:
            lake.write_events(data_dir, ticker, events)
    days = pd.to_datetime(merged["date"])
    return {
        "ticker": ticker,
        "source": source,
        "path": str(path),
        "sha256": digest,
        "rows": int(len(merged)),
        "rows_fetched": int(len(prices)),
        "first_day": str(days.min().date()),
        "last_day": str(days.max().date()),
        "dropped_null_rows": int(loaded.dropped_null_rows),
        "warnings": report.warnings,
        "outputs": {str(path): digest},
    }
