"""What several flows share: refusing impossible inputs before any work, and submitting
one ticker's ingest step the way every retrain-like flow does."""

from __future__ import annotations

from typing import Any

from tickercast.config import BacktestConfig, RetrainConfig
from tickercast.market.locate import fetch_window, source_fingerprint
from tickercast.tracking import require_client, resolve_uri


def preflight(config: RetrainConfig | BacktestConfig) -> None:
    """Refuse a run whose inputs cannot exist before any work starts (names the ticker),
    or that asks for an MLflow mirror without the MLflow client installed."""
    for ticker in config.tickers:
        source_fingerprint(config.source, ticker, config.csv_path())
    require_client(resolve_uri(config.mlflow_uri))


def ingest_args(config: Any, ticker: str, data_dir: str) -> tuple:
    """The ingest step's positional arguments for one ticker of a retrain-like config.
    Offline sources are ingested whole (dates are applied in preprocess); a live fetch asks
    the source for the config's date range, and reruns only for the days the lake lacks."""
    csv_dir = config.csv_path()
    return (
        ticker,
        config.source,
        data_dir,
        csv_dir,
        *fetch_window(config.source, config.start, config.end),
        source_fingerprint(config.source, ticker, csv_dir),
    )


def submit_ingest(ingest: Any, config: Any, ticker: str, data_dir: str) -> Any:
    """The ingest step for one ticker of retrain or tune: the ingest flow's own task."""
    return ingest.submit(
        *ingest_args(config, ticker, data_dir),
        options={
            "move_threshold": config.move_threshold,
            "on_corrupt": config.on_corrupt,
            "on_quirk": config.on_quirk,
        },
    )
