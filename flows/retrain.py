"""The retrain flow: ingest -> preprocess -> windows -> train -> evaluate -> export.

Run it by hand with `python -m flows.retrain --help`, from the `tickercast retrain` CLI,
or on a schedule (deployments/serve.py).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tasks.config import PREPROCESS_FIELDS, TRAIN_FIELDS, RetrainConfig
from tasks.ingest import source_fingerprint
from tasks.steps import (
    evaluate_step,
    export_step,
    ingest_step,
    preprocess_step,
    train_step,
    windows_step,
)


def preflight(config: RetrainConfig) -> None:
    """Refuse a run whose inputs cannot exist before any work starts (names the ticker)."""
    csv_dir = str(Path(config.csv_dir).resolve()) if config.csv_dir else None
    for ticker in config.tickers:
        source_fingerprint(config.source, ticker, csv_dir)


@flow(name="retrain", log_prints=True, persist_result=False)
def retrain(config: RetrainConfig = RetrainConfig()) -> dict:
    """Train, evaluate and export one model per ticker; returns bundle paths and metrics."""
    preflight(config)
    data_dir = str(Path(config.data_dir).resolve())
    options = {
        "persist_result": True,
        "result_storage": Path(data_dir) / "results",
        "result_serializer": "json",
        "refresh_cache": config.refresh,
    }
    ingest, preprocess, windows, train, evaluate, export = (
        step.with_options(**options)
        for step in (
            ingest_step,
            preprocess_step,
            windows_step,
            train_step,
            evaluate_step,
            export_step,
        )
    )
    full = config.model_dump(mode="json")
    csv_dir = str(Path(config.csv_dir).resolve()) if config.csv_dir else None
    # Offline sources are ingested whole (dates are applied in preprocess); only a live
    # fetch asks the source for a date range.
    live = config.source == "yfinance"
    results = {}
    for ticker in config.tickers:
        ingested = ingest(
            ticker,
            config.source,
            data_dir,
            csv_dir,
            full["start"] if live else None,
            full["end"] if live else None,
            source_fingerprint(config.source, ticker, csv_dir),
        )
        pre = preprocess(ingested, config.slice(*PREPROCESS_FIELDS), data_dir)
        win = windows(pre, data_dir)
        trained = train(pre, win, config.slice(*TRAIN_FIELDS), data_dir)
        evaluated = evaluate(pre, win, trained, data_dir)
        results[ticker] = export(ingested, pre, trained, evaluated, full, data_dir)
    return results


if __name__ == "__main__":
    from tasks.cli import main

    raise SystemExit(main(["retrain", *__import__("sys").argv[1:]]))
