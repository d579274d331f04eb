"""The ledger's watch: after an ingest brought new days, score what the champions
published (tickercast.delivery.ledger) and raise a flag as an event."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from tickercast.tasks.events import emit


@task(name="watch-ledger")
def watch_ledger(ticker: str, data_dir: str) -> dict:
    """The live record of `ticker`'s published forecasts, scored against the lake now;
    writes the scored rows beside the ledger (for readers such as DuckDB) and emits
    `tickercast.live.flagged` when the record is significantly wrong."""
    from tickercast.atomic import atomic_path
    from tickercast.delivery import ledger

    scored = ledger.score(data_dir, ticker)
    if scored.empty:
        return {"n": 0, "flag": None}
    with atomic_path(ledger.scored_path(data_dir, ticker)) as tmp:
        scored.to_parquet(tmp, index=False)
    record = ledger.live_record(scored)
    if record["flag"]:
        get_run_logger().warning("%s: %s", ticker, record["flag"])
        emit("live.flagged", ticker, int(scored["version"].iloc[-1]), **record)
    return record
