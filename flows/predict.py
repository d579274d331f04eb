"""The predict flow: each ticker's champion forecasts the next horizon from the lake.

Writes one Parquet file per run under `<data_dir>/forecasts/` (a row per ticker and model
output, with the split-conformal 80% and 95% bounds) and a Prefect table artifact. A
ticker without a champion or lake data fails alone; the others are still written, and
the run ends Failed naming the tickers that failed.

    tickercast predict --tickers AAPL MSFT --data-dir data
    python -m tickercast.flows.predict --tickers AAPL
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.states import Failed

from tickercast.config import PredictConfig
from tickercast.delivery.predict import write_forecasts
from tickercast.tasks.forecast import forecast_step


@flow(name="predict", log_prints=True, persist_result=False)
def predict(config: PredictConfig = PredictConfig()) -> dict:
    """Next-horizon forecasts of every ticker's champion; returns rows, file and failures."""
    data_dir = str(Path(config.data_dir).resolve())
    rows: list[dict] = []
    failed: dict[str, str] = {}
    for ticker in config.tickers:
        state = forecast_step(ticker, data_dir, return_state=True)
        try:
            rows += state.result()
        except Exception as exc:  # one ticker's failure never stops the others
            failed[ticker] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    path = write_forecasts(data_dir, rows) if rows else None
    if rows:
        create_table_artifact(
            [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
            key="forecasts",
            description=f"next-horizon forecasts with 80% / 95% conformal bounds ({path})",
        )
    summary = {"path": str(path) if path else None, "forecasts": rows, "failed": failed}
    if failed:
        return Failed(message=f"forecast failed for {sorted(failed)}: {failed}", data=summary)
    return summary


if __name__ == "__main__":  # `python -m flows.predict`: the CLI's `predict`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["predict", *sys.argv[1:]]))
