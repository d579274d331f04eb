"""What several flows share: refusing impossible inputs before any work, and submitting
one ticker's ingest step the way every retrain-like flow does."""

from __future__ import annotations

from typing import Any

from tickercast.config import BacktestConfig, RetrainConfig
from tickercast.market.locate import fetch_window, source_fingerprints
from tickercast.sections import FetchWindow
from tickercast.tracking import require_client, resolve_uri
from tickercast.tuning.config import TuneConfig

Trains = RetrainConfig | BacktestConfig | TuneConfig  # configs that ingest, then train


def preflight(config: Trains) -> dict[str, str | None]:
    """Refuse a run whose inputs cannot exist before any work starts (names the ticker),
    or that asks for an MLflow mirror without the MLflow client installed. Returns each
    ticker's `fingerprints` (what a flow that takes no locks keys its ingest steps by)."""
    prints = fingerprints(config)
    require_client(resolve_uri(config.mirror.mlflow_uri))
    return prints


def ingest_window(config: Trains) -> FetchWindow:
    """The days a live source is asked for: the run's own start and end (reruns fetch
    only what the lake lacks). Offline sources are ingested whole (dates are applied in
    preprocess), so their ingest's cache key depends on the file alone."""
    start, end = fetch_window(
        config.data.source, config.preprocessing.start, config.preprocessing.end
    )
    return FetchWindow(start=start, end=end)


def fingerprints(config: Trains) -> dict[str, str | None]:
    """The content hash of what the run's offline source holds for each ticker (None for a
    live source): what keys a ticker's ingest, alone or in a prepare batch. A CSV folder
    is listed once for the universe (`CsvFolder`)."""
    return source_fingerprints(config.data.source, config.tickers, config.data.csv_path())


def submit_ingest(
    ingest: Any, config: Trains, ticker: str, fingerprint: str | None, data_dir: str
) -> Any:
    """The ingest step for one ticker of a retrain-like run (the ingest flow's own task),
    keyed by the ticker's `fingerprint` (from `fingerprints`)."""
    return ingest.submit(
        ticker,
        config.data,
        config.ingest,
        ingest_window(config),
        fingerprint,
        data_dir,
    )
