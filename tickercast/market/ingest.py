"""Ingest: fetch a ticker from its source, validate it, and merge it into its lake partition.

Two kinds of source:

- Whole-history sources (`sample`, `csv`, `sine`) hand over everything they hold. Their
  rows replace the ticker's partition, so the partition depends on the file alone and
  retrain can cache the step by the file's hash (dates are applied later, in preprocess).
- Windowed sources (`yfinance`, or any `Fetcher` passed in by a test or benchmark) are
  asked for a date window and merged incrementally (market/window.py), their fetches
  retried when the failure is transient (market/retry.py).

Every batch passes `screen_prices` (market/validate.py) before it is stored: rows without a
valid close are dropped and counted with the null rows, and the vendor quirks of the others
(Yahoo's Open = 0.0 on old rows, a close outside [low, high], ...) are repaired, dropped or
refused as `options.on_quirk` says, counted per kind in the result's `quirks`.

The whole read-fetch-merge-write cycle holds the ticker's lock, so two concurrent ingests
of one ticker serialise and the second one merges on top of the first.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tickercast.choices import SOURCES as _SOURCES
from tickercast.choices import WHOLE_SOURCES
from tickercast.hashing import file_sha256
from tickercast.market import lake
from tickercast.market.locate import csv_path
from tickercast.market.options import IngestOptions
from tickercast.market.partition import (
    canonical,
    day_array,
    ingest_result,
    read_stored,
    removed_days,
    split_days,
)
from tickercast.market.retry import Fetcher, yahoo_fetcher
from tickercast.market.sources import (
    Loaded,
    MalformedFileError,
    load_csv,
    load_sample,
    sine_prices,
)
from tickercast.market.validate import InvalidPricesError, move_warnings, screen_prices
from tickercast.market.window import ingest_window
from tickercast.progress import tally
from tickercast.tickers import validate_ticker

SOURCES = tuple(sorted(_SOURCES))  # as listed in error messages
INGEST_BAR = "ingest tickers"  # the terminal's progress bar (tickercast.progress.tally)


def load_source(
    source: str, ticker: str, csv_dir: str | None = None, missing_ok: bool = False
) -> Loaded:
    """A whole-history source's prices (everything it holds for the ticker); `missing_ok`
    reads a CSV's empty or `null` price cells as NaN (see `load_csv`)."""
    if source == "sample":
        return load_sample(ticker)
    if source == "csv":
        if not csv_dir:
            raise ValueError("source 'csv' needs csv_dir")
        return load_csv(csv_path(csv_dir, ticker), missing_ok=missing_ok)
    if source == "sine":
        return sine_prices()
    raise ValueError(f"unknown source {source!r}; valid: {list(SOURCES)}")


def ingest_ticker(
    ticker: str,
    source: str,
    data_dir: str | Path,
    csv_dir: str | None = None,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    session: Any = None,
    *,
    period: str | None = None,
    options: IngestOptions | Mapping[str, Any] | None = None,
    fetch: Fetcher | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Bring one ticker's partition up to date; returns JSON-ready paths, hashes and counts.

    `fetch` replaces the named source with any windowed `Fetcher` (benchmarks, tests);
    `session` is the yfinance session (tests replay Yahoo with it). Raises, naming the
    ticker, when nothing could be stored; the partition is then unchanged.
    """
    ticker = validate_ticker(ticker)
    opts = IngestOptions.of(options)
    start_day, end_day = _as_day(start, "start"), _as_day(end, "end")
    if start_day and end_day and start_day > end_day:
        raise ValueError(f"ticker {ticker}: start {start_day} is after end {end_day}")
    if fetch is None and source == "yfinance":
        fetch = yahoo_fetcher(session)
    if fetch is None and source not in WHOLE_SOURCES:
        raise ValueError(f"unknown source {source!r}; valid: {list(SOURCES)}")
    # one shared bar in a terminal, whichever thread ingests which ticker
    with tally(INGEST_BAR):
        if fetch is None:
            return _ingest_whole(ticker, source, Path(data_dir), csv_dir, opts)
        return ingest_window(
            ticker, source, Path(data_dir), fetch, start_day, end_day, period, opts, sleep, log
        )


# -- whole-history sources -------------------------------------------------------------


def _ingest_whole(
    ticker: str, source: str, data_dir: Path, csv_dir: str | None, opts: IngestOptions
) -> dict:
    loaded = load_source(source, ticker, csv_dir, missing_ok=opts.on_quirk != "fail")
    try:
        screened = screen_prices(canonical(loaded.prices), ticker, opts.on_quirk)
    except InvalidPricesError as exc:
        if loaded.origin is not None:
            raise MalformedFileError(f"{loaded.where(exc.day)}: {exc}") from exc
        raise
    prices = screened.prices
    notes: list[str] = []
    with lake.partition_lock(data_dir, ticker):
        old, events, corrupt = read_stored(data_dir, ticker, opts.on_corrupt, notes)
        old_days = None if old is None else day_array(old["date"])
        if corrupt and events is None:
            # A whole source carries no events: an unreadable events file cannot be rebuilt.
            lake.events_path(data_dir, ticker).unlink(missing_ok=True)
        removed = removed_days(ticker, source, old_days, prices, opts.replace)
        path = lake.write_partition(data_dir, ticker, prices)
        digest = file_sha256(path)
    if removed:
        notes.append(f"ticker {ticker}: replaced the stored history, {removed:,} days removed")
    warnings = (
        notes
        + screened.notes
        + move_warnings(
            prices, ticker, move_threshold=opts.move_threshold, split_days=split_days(events)
        )
    )
    return ingest_result(
        ticker,
        source,
        path,
        digest,
        prices,
        old_days,
        dropped=loaded.dropped_null_rows + screened.no_close,
        warnings=warnings,
        mode="replace",
        fetches=[],
        attempts=0,
        screened=screened,
        removed=removed,
    )


def _as_day(value: str | dt.date | None, name: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a YYYY-MM-DD date") from None
