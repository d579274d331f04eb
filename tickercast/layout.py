"""Where everything lives: the one definition of the `<data_dir>` layout and of the
bundled sample's location. Every reader and writer asks here; `.gitignore`, `make clean`
and `tickercast cache clear` follow `OUTPUT_DIRS` and `CACHE_DIRS`.

    <data_dir>/
      lake/prices/ticker=<T>/part-0.parquet   ingested prices (one partition per ticker)
      lake/events/ticker=<T>/part-0.parquet   splits and dividends
      lake/.locks/<T>.lock                    one writer per ticker
      models/<T>/registry.json                the registry: champion and history
      models/<T>/versions/<N>/                exported bundles
      forecasts/                              `tickercast predict` outputs
      backtests/                              `tickercast backtest` runs
      tuning/<run>/                           hyperparameter searches
      work/<step>/<key>/                      each step's content-addressed outputs
      work/export/                            export staging
      results/                                Prefect's persisted task results
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

LAKE, MODELS, FORECASTS, BACKTESTS, TUNING = "lake", "models", "forecasts", "backtests", "tuning"
WORK, RESULTS = "work", "results"
REGISTRY_FILE = "registry.json"
# The files a fit and a bundle hold, by name, wherever they are written or read
MODEL_FILE = "model.keras"  # the trained network (Keras format, loaded in safe mode)
SPEC_FILE = "preprocessing.json"  # features, split and fitted scalers
HISTORY_FILE = "history.json"  # the fit's curves and summary
METADATA_FILE = "metadata.json"  # a bundle's evaluation, config and lineage
# the fitted weights before shrinkage and calibration: what the next night warm-starts from
FITTED_WEIGHTS_FILE = "fitted-weights.npz"
PREDICTIONS_FILE = "predictions.parquet"  # the test windows' forecasts (evaluation.window_table)
# Cached, recomputable outputs: what `tickercast cache clear` deletes.
CACHE_DIRS: tuple[str, ...] = (RESULTS, WORK)
# Everything a run writes under the data dir (the bundled sample is never in it).
OUTPUT_DIRS: tuple[str, ...] = (LAKE, MODELS, FORECASTS, BACKTESTS, TUNING, WORK, RESULTS)


def sample_dir() -> Path:
    """The bundled sample's folder, wherever the package is installed (editable or not)."""
    return Path(str(resources.files("tickercast.sample")))


def lake_prices(data_dir: str | Path) -> Path:
    return Path(data_dir) / LAKE / "prices"


def lake_events(data_dir: str | Path) -> Path:
    return Path(data_dir) / LAKE / "events"


def lake_ledger(data_dir: str | Path) -> Path:
    """The forecast ledger: <data_dir>/lake/ledger/<TICKER>/<origin>_v<version>.parquet."""
    return Path(data_dir) / LAKE / "ledger"


def lake_lock(data_dir: str | Path, ticker: str) -> Path:
    return Path(data_dir) / LAKE / ".locks" / f"{ticker}.lock"


def models_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / MODELS


def model_dir(data_dir: str | Path, name: str) -> Path:
    return models_root(data_dir) / name


def versions_dir(data_dir: str | Path, name: str) -> Path:
    return model_dir(data_dir, name) / "versions"


def retrain_lock(data_dir: str | Path, name: str) -> Path:
    return model_dir(data_dir, name) / ".retrain.lock"


def forecasts_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / FORECASTS


def backtests_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / BACKTESTS


def tuning_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / TUNING


def work_dir(data_dir: str | Path, step: str) -> Path:
    return Path(data_dir) / WORK / step


def export_staging(data_dir: str | Path) -> Path:
    return work_dir(data_dir, "export")


def results_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / RESULTS
