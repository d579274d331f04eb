"""The backtest flow: rolling-origin evaluation of networks and baselines, same origins.

Per ticker: ingest (the task `retrain` and `ingest` run) -> rolling-backtest (every model
of `--model` on the same origins and targets, tasks/backtest.py). Then one folder per run,
`<data_dir>/backtests/backtest-<UTC>-<id>/` with metrics.parquet, forecasts.parquet and
report.md, the table artifact `backtest-metrics` and the markdown artifact
`backtest-report`. A ticker that fails (unreadable source, too short a history) is named
with its cause; the others are backtested and written, and the run then ends Failed.

    tickercast backtest --tickers AAPL --model stacked_lstm --model naive --model drift
    python -m tickercast.flows.backtest --help
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed

from tickercast.backtest.files import write_run
from tickercast.backtest.tables import artifact_rows, run_report
from tickercast.config import BacktestConfig
from tickercast.fanout import each_ticker, settle
from tickercast.flows.common import preflight, submit_ingest
from tickercast.quiet import quiet_tensorflow
from tickercast.tasks.backtest import rolling_backtest_step, track_backtest_step
from tickercast.tasks.ingest import ingest_step
from tickercast.tasks.runners import step_options
from tickercast.tracking import resolve_uri

METRICS_KEY, REPORT_KEY = "backtest-metrics", "backtest-report"


@flow(name="backtest", log_prints=True, persist_result=False)
def backtest(config: BacktestConfig = BacktestConfig()) -> dict:
    """Backtest every model on every ticker; returns the metrics rows and the run's files."""
    quiet_tensorflow()  # before any step imports it (a deployment's own process)
    prints = preflight(config)
    data_dir = config.execution.resolved_dir()
    options = step_options(data_dir, config.execution.refresh)
    ingest, run = (s.with_options(**options) for s in (ingest_step, rolling_backtest_step))
    spec = config.rolling_spec()
    steps = {}
    for ticker in config.tickers:
        ingested = submit_ingest(ingest, config, ticker, prints[ticker], data_dir)
        steps[ticker] = (ingested, run.submit(ingested, spec, data_dir))
    outcomes = each_ticker(config.tickers, lambda t: settle(steps[t]))
    results = outcomes.values()
    summary = {
        "tickers": {
            t: r.model_dump(include={"origins", "models", "metrics", "distribution"})
            for t, r in results.items()
        },
        "failed": outcomes.errors(),
        "paths": {},
        "mlflow": None,
    }
    if results:
        summary.update(_publish(config, data_dir, results))
    why = outcomes.failure()
    return Failed(message=why, data=summary) if why else summary


def _publish(config: BacktestConfig, data_dir: str, results: dict) -> dict:
    """The run's folder, its artifacts, and (with a URI) its MLflow run."""
    paths = write_run(data_dir, list(results.values()), run_report(results))
    create_table_artifact(
        artifact_rows(results),
        key=METRICS_KEY,
        description=f"rolling-origin metrics in price units per model and step ({paths['folder']})",
    )
    create_markdown_artifact(
        run_report(results, str(paths["folder"])),
        key=REPORT_KEY,
        description="rolling-origin backtest report",
    )
    mlflow_uri, tracked = resolve_uri(config.mirror.mlflow_uri), None
    if mlflow_uri:  # after the run's files are written: MLflow gets a copy
        tracked = track_backtest_step(
            mlflow_uri,
            str(paths["folder"]),
            config.flat(),
            {t: r.metrics for t, r in results.items()},
            {t: r.distribution.get("rows", []) for t, r in results.items()},
        )
    return {"paths": {k: str(v) for k, v in paths.items()}, "mlflow": tracked}


if __name__ == "__main__":  # `python -m flows.backtest`: the CLI's `backtest`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["backtest", *sys.argv[1:]]))
