"""Windowed fetches and their retries.

A windowed source is any `Fetcher` (yfinance through `yahoo_fetcher`, or one passed in by
a test or benchmark). Its calls are retried, per ticker, when the failure is transient
(connection errors, timeouts, HTTP 5xx, Yahoo's rate limit: `TransientSourceError`) with
exponential backoff and jitter; permanent failures (unknown ticker, no rows) raise at once.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd

from tickercast.errors import TRANSIENT, TransientSourceError
from tickercast.market.options import IngestOptions

T = TypeVar("T")


@dataclass
class Fetched:
    """What a windowed source returned for one request."""

    prices: pd.DataFrame
    events: pd.DataFrame | None = None  # None: the source knows nothing about events
    dropped_null_rows: int = 0


# fetch(ticker, start, end, period) -> Fetched; start/end inclusive, all optional.
Fetcher = Callable[[str, "dt.date | None", "dt.date | None", "str | None"], Fetched]


@dataclass
class Attempts:
    """Counts source calls across the fetches of one ingest (for the report)."""

    count: int = 0
    log: list[str] = field(default_factory=list)


def call_with_retries(
    fn: Callable[[], T],
    ticker: str,
    options: IngestOptions,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    log: Callable[[str], None] | None = None,
    attempts: Attempts | None = None,
) -> T:
    """`fn()`, retried on transient failures with exponential backoff and jitter.

    A permanent failure (anything not in `TRANSIENT`) is raised at once. After the last
    retry the transient error is raised as `TransientSourceError` naming the ticker and
    the number of attempts.
    """
    tries = options.retries + 1
    for attempt in range(1, tries + 1):
        if attempts is not None:
            attempts.count += 1
        try:
            return fn()
        except TRANSIENT as exc:
            if attempt == tries:
                raise TransientSourceError(
                    f"ticker {ticker}: gave up after {tries} attempt(s): {exc}"
                ) from exc
            wait = options.delay(attempt, rng)
            message = (
                f"ticker {ticker}: attempt {attempt}/{tries} failed ({exc}); "
                f"retrying in {wait:.2f} s"
            )
            if attempts is not None:
                attempts.log.append(message)
            if log is not None:
                log(message)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def yahoo_fetcher(session: Any = None) -> Fetcher:
    """The yfinance source as a `Fetcher`; `session` is passed on (tests replay Yahoo)."""

    def fetch(
        ticker: str, start: dt.date | None, end: dt.date | None, period: str | None
    ) -> Fetched:
        from tickercast.market.yahoo import fetch_history

        history = fetch_history(ticker, start=start, end=end, period=period, session=session)
        return Fetched(history.prices, history.events, history.dropped_null_rows)

    return fetch
