"""The forecast step: a champion's next-horizon forecast."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger


@task(name="forecast")
def forecast_step(ticker: str, data_dir: str) -> list[dict]:
    """The champion's next-horizon forecast from the latest lake rows, with intervals,
    kept in the forecast ledger."""
    from tickercast.delivery import ledger
    from tickercast.delivery.predict import forecast_next
    from tickercast.delivery.registry import load_champion
    from tickercast.market import lake

    bundle = load_champion(data_dir, ticker)
    rows = forecast_next(bundle, lake.read_partition(data_dir, ticker), ticker)
    ledger.append(data_dir, rows)  # kept once per (origin, version), scored when due
    for row in rows:
        get_run_logger().info(
            "%s v%s as of %s: %s over %d days = %.4f (80%%: %s..%s)",
            ticker,
            row["version"],
            row["as_of"],
            row["target"],
            row["horizon"],
            row["forecast"],
            row.get("lo_80"),
            row.get("hi_80"),
        )
    return rows
