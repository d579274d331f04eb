"""The backtest flow: rolling-origin evaluation of networks and baselines, same origins.

Per ticker: ingest (the task `retrain` and `ingest` run) -> rolling-backtest (every model
of `--model` on the same origins and targets, tasks/backtest.py). Then one folder per run,
`<data_dir>/backtests/backtest-<UTC>-<id>/` with metrics.parquet, forecasts.parquet and
report.md, the table artifact `backtest-metrics` and the markdown artifact
`backtest-report`.

    tickercast backtest --tickers AAPL --model stacked_lstm --model naive --model drift
    python -m flows.backtest --help
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.backtest import markdown_lines, write_run
from tasks.config import BacktestConfig
from tasks.ingest import fetch_window, source_fingerprint
from tasks.runners import step_options
from tasks.steps import ingest_step, rolling_backtest_step

METRICS_KEY, REPORT_KEY = "backtest-metrics", "backtest-report"


def preflight(config: BacktestConfig) -> None:
    """Refuse a run whose inputs cannot exist before any work starts (names the ticker)."""
    csv_dir = str(Path(config.csv_dir).resolve()) if config.csv_dir else None
    for ticker in config.tickers:
        source_fingerprint(config.source, ticker, csv_dir)


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
    csv_dir = str(Path(config.csv_dir).resolve()) if config.csv_dir else None
    window = fetch_window(config.source, config.start, config.end)
    results = {}
    for ticker in config.tickers:
        ingested = ingest(
            ticker,
            config.source,
            data_dir,
            csv_dir,
            *window,
            source_fingerprint(config.source, ticker, csv_dir),
        )
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
    return {
        "tickers": {
            t: {k: r[k] for k in ("origins", "models", "metrics")} for t, r in results.items()
        },
        "paths": {k: str(v) for k, v in paths.items()},
    }


if __name__ == "__main__":
    from tasks.cli import main

    raise SystemExit(main(["backtest", *__import__("sys").argv[1:]]))
