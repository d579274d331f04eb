"""The predict flow: each ticker's champion forecasts the next horizon from the lake.

Writes one Parquet file per run under `<data_dir>/forecasts/` (a row per ticker and model
output, with the split-conformal 80% and 95% bounds) and a Prefect table artifact. A
ticker without a champion or lake data fails alone, named with its cause; the others are
still written, and the run ends Failed naming the tickers that failed.

    tickercast predict --tickers AAPL MSFT --data-dir data
    python -m tickercast.flows.predict --tickers AAPL
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.states import Failed

from tickercast.config import PredictConfig
from tickercast.delivery.predict import write_forecasts
from tickercast.delivery.registry import champions
from tickercast.fanout import each_ticker
from tickercast.quiet import quiet_tensorflow
from tickercast.tasks.events import announce_run
from tickercast.tasks.forecast import forecast_step


def preflight(config: PredictConfig) -> None:
    """Nothing can be refused before the run: each ticker's champion is looked up by its
    own task (a missing one fails that ticker alone)."""


@flow(name="predict", log_prints=True, persist_result=False)
def predict(config: PredictConfig = PredictConfig()) -> dict:
    """Next-horizon forecasts of every ticker's champion; returns rows, file and failures."""
    quiet_tensorflow()  # before any step imports it (a deployment's own process)
    data_dir = config.execution.resolved_dir()
    tickers = config.tickers or champions(data_dir)  # none given: every champion
    if not tickers:
        return Failed(message=f"no champion to forecast under {data_dir}: retrain first")
    outcomes = each_ticker(tickers, lambda t: forecast_step(t, data_dir))
    rows = [row for ticker_rows in outcomes.values().values() for row in ticker_rows]
    path = write_forecasts(data_dir, rows) if rows else None
    if rows:
        create_table_artifact(
            [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
            key="forecasts",
            description=f"next-horizon forecasts with 80% / 95% conformal bounds ({path})",
        )
    announce_run("predict", outcomes)
    failed = outcomes.errors()
    summary = {"path": str(path) if path else None, "forecasts": rows, "failed": failed}
    why = outcomes.failure()
    return Failed(message=why, data=summary) if why else summary


if __name__ == "__main__":  # `python -m flows.predict`: the CLI's `predict`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["predict", *sys.argv[1:]]))
