"""The ingest step: bring one ticker's lake partition up to date."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from tickercast.tasks.caching import content_cache_key

# The library code this step runs (its imports' closure is hashed: tasks/caching.py).
INGEST_MODULES = ("tickercast.market.ingest",)


# No Prefect-level retries: tickercast.market.retry retries transient fetch failures itself
# (backoff and jitter from `options`, each retry logged here), per request rather than per
# ticker, and the same way when its functions are called without Prefect. Permanent failures
# (unknown ticker, malformed file) fail the task at once.
@task(
    name="ingest",
    cache_key_fn=content_cache_key(
        "ingest", INGEST_MODULES, cacheable=lambda p: p.get("fingerprint") is not None
    ),
)
def ingest_step(
    ticker: str,
    source: str,
    data_dir: str,
    csv_dir: str | None,
    start: str | None,
    end: str | None,
    fingerprint: str | None,
    options: dict[str, Any] | None = None,
    period: str | None = None,
) -> dict:
    """Bring the ticker's lake partition up to date; `fingerprint` keys the cache.

    `options` are `tickercast.market.options.IngestOptions` fields (overlap, move threshold,
    retries).
    """
    from tickercast.market.ingest import ingest_ticker

    logger = get_run_logger()
    result = ingest_ticker(
        ticker,
        source,
        data_dir,
        csv_dir=csv_dir,
        start=start,
        end=end,
        period=period,
        options=options,
        log=logger.warning,
    )
    logger.info(
        "ingested %s from %s (%s): %d rows %s..%s, %d added, %d null rows dropped",
        ticker,
        source,
        result["mode"],
        result["rows"],
        result["first_day"],
        result["last_day"],
        result["rows_added"],
        result["dropped_null_rows"],
    )
    for warning in result["warnings"]:
        logger.warning(warning)
    return result
