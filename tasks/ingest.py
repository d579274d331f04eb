"""The ingest step: bring one ticker's lake partition up to date."""

from __future__ import annotations

from prefect.logging import get_run_logger

from tickercast.records import Ingested
from tickercast.sections import DataSource, FetchWindow, IngestChecks
from tickercast.tasks.steps import step

MODULES = ("tickercast.market.ingest",)
"""The library code the ingest step runs (its cache key follows it)."""


# No Prefect-level retries: tickercast.market.retry retries transient fetch failures itself
# (backoff and jitter from `checks`, each retry logged here), per request rather than per
# ticker, and the same way when its functions are called without Prefect. Permanent failures
# (unknown ticker, malformed file) fail the task at once.
@step(
    "ingest",
    MODULES,
    cacheable=lambda params: params.get("fingerprint") is not None,
)
def ingest_step(
    ticker: str,
    data: DataSource,
    checks: IngestChecks,
    window: FetchWindow,
    fingerprint: str | None,
    data_dir: str,
) -> Ingested:
    """Bring the ticker's lake partition up to date; `fingerprint` (the offline source's
    content hash, None for a live one) keys the cache. A live source is asked for
    `window`; whole sources are ingested whole (a run's dates apply in preprocess)."""
    from tickercast.market.ingest import ingest_ticker

    logger = get_run_logger()
    result = ingest_ticker(
        ticker,
        data.source,
        data_dir,
        csv_dir=data.csv_path(),
        start=window.start,
        end=window.end,
        period=window.period,
        options=checks.options(),
        log=logger.warning,
    )
    logger.info(
        "ingested %s from %s (%s): %d rows %s..%s, %d added, %d null rows dropped",
        ticker,
        data.source,
        result["mode"],
        result["rows"],
        result["first_day"],
        result["last_day"],
        result["rows_added"],
        result["dropped_null_rows"],
    )
    for warning in result["warnings"]:
        logger.warning(warning)
    return Ingested.of(result)
