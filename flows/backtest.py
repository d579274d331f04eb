"""The backtest flow: rolling-origin evaluation of networks and baselines, same origins.

Per ticker: ingest (the task `retrain` and `ingest` run) -> rolling-backtest (every model
of `--model` on the same origins and targets, tasks/backtest.py). Then one folder per run,
`<data_dir>/backtests/backtest-<UTC>-<id>/` with metrics.parquet, forecasts.parquet and
report.md, the table artifact `backtest-metrics` and the markdown artifact
`backtest-report`.

    tickercast backtest --tickers AAPL --model stacked_lstm --model naive --model drift
    python -m tickercast.flows.backtest --help
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tickercast.backtest.files import write_run
from tickercast.backtest.tables import markdown_lines
from tickercast.config import BacktestConfig
from tickercast.flows.common import ingest_args, preflight
from tickercast.tasks.backtest import rolling_backtest_step, track_backtest_step
from tickercast.tasks.ingest import ingest_step
from tickercast.tasks.runners import step_options
from tickercast.tracking import resolve_uri

METRICS_KEY, REPORT_KEY = "backtest-metrics", "backtest-report"


def _artifact_rows(ticker: str, rows: list[dict]) -> list[dict]:
    return [
        {"ticker": ticker, **{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()}}
        for r in rows
    ]


@flow(name="backtest", log_prints=True, persist_result=False)
def backtest(config: BacktestConfig = BacktestConfig()) -> dict:
    """Backtest every model on every ticker; returns the metrics rows and the run's files."""
    preflight(config)
    data_dir = str(Path(config.data_dir).resolve())
    options = step_options(data_dir, config.refresh)
    ingest, run = (s.with_options(**options) for s in (ingest_step, rolling_backtest_step))
    results = {}
    for ticker in config.tickers:
        ingested = ingest(*ingest_args(config, ticker, data_dir))
        results[ticker] = run(ingested, config.run_cfg(), data_dir)
    report = ["# Backtest", ""]
    for ticker, result in results.items():
        report += [*markdown_lines(ticker, result), ""]
    paths = write_run(data_dir, list(results.values()), "\n".join(report))
    report.insert(2, f"Files: `{paths['folder']}`\n")
    create_table_artifact(
        [row for t, r in results.items() for row in _artifact_rows(t, r["metrics"])],
        key=METRICS_KEY,
        description=f"rolling-origin metrics in price units per model and step ({paths['folder']})",
    )
    create_markdown_artifact(
        "\n".join(report), key=REPORT_KEY, description="rolling-origin backtest report"
    )
    mlflow_uri, tracked = resolve_uri(config.mlflow_uri), None
    if mlflow_uri:  # after the run's files are written: MLflow gets a copy
        tracked = track_backtest_step(
            mlflow_uri,
            str(paths["folder"]),
            config.model_dump(mode="json"),
            {t: r["metrics"] for t, r in results.items()},
        )
    return {
        "tickers": {
            t: {k: r[k] for k in ("origins", "models", "metrics")} for t, r in results.items()
        },
        "paths": {k: str(v) for k, v in paths.items()},
        "mlflow": tracked,
    }


if __name__ == "__main__":  # `python -m flows.backtest`: the CLI's `backtest`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["backtest", *sys.argv[1:]]))
