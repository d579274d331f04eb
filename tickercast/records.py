"""What each pipeline step hands the next: a small frozen record of paths and content
hashes, with the methods that load what it points to.

A record is what a step returns and what the next step takes, typed: no step knows
another's dict keys. Records are pydantic models, so Prefect's JSON result serializer
stores and restores them by class, and the Dask runner pickles them. Every record names
the files it wrote in `outputs` (path -> sha256): a cached record whose files were deleted
or changed since is never trusted (tasks/caching.py). `key()` is what a downstream
step's cache key sees of it.

Loading is lazy (numpy, pandas, Keras are imported when a loader runs), so passing
records around costs nothing.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tickercast import layout

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tickercast.modeling.preprocess import Preprocessing


def plain(value: Any) -> Any:
    """`value` with every numpy scalar inside its dicts, lists and tuples made the Python
    number it holds: a record's free-form fields (metrics) must hash and serialize as
    JSON, which Prefect's cache key and result storage do; a numpy array is refused."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    if type(value).__module__ == "numpy":
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
            return value.item()
        raise TypeError(
            f"a record holds a numpy {type(value).__name__}: store a list or a file instead"
        )
    return value


class Record(BaseModel):
    """A step's result: its files (`outputs`: path -> sha256) and what it says of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outputs: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _plain_numbers(cls, data: Any) -> Any:
        return plain(data) if isinstance(data, dict) else data

    def key(self) -> Any:
        """What a downstream step's cache key sees of this record (default: all of it)."""
        return self.model_dump(mode="json")

    def bundle_files(self) -> dict[str, Path]:
        """The files of this step a model bundle carries, by their name in the bundle."""
        return {}


class Ingested(Record):
    """A ticker's lake file after ingest, and the ingest's report."""

    ticker: str
    source: str
    path: str
    sha256: str
    report: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, result: dict[str, Any]) -> Ingested:
        """From `tickercast.market.ingest.ingest_ticker`'s result."""
        return cls(
            ticker=result["ticker"],
            source=result["source"],
            path=result["path"],
            sha256=result["sha256"],
            outputs=result.get("outputs", {}),
            report=result,
        )

    def key(self) -> Any:
        """The lake file and its content only: the rest of the report (mode, rows added,
        warnings) differs between a live fetch that found nothing new and the one before
        it, and must not rerun training."""
        return {"ticker": self.ticker, "path": self.path, "sha256": self.sha256}

    def prices(self) -> pd.DataFrame:
        """The prices this ingest stored (its exact lake file)."""
        from tickercast.market import lake

        return lake.read_price_file(Path(self.path)).to_pandas()


class SplitDates(BaseModel):
    """Global mode's split boundaries, shared by every ticker (ISO days, inclusive):
    computed from the tickers' data, handed to preprocessing beside its settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train_end: str
    val_end: str


class Preprocessed(Record):
    """Features, split and train-only scalers of one ticker (arrays + preprocessing.json),
    and its window anchors per split (`anchors`: indices into those rows, `counts`)."""

    ticker: str
    arrays: str
    spec: str
    anchors: str
    counts: dict[str, int]

    @functools.cached_property
    def preprocessing(self) -> Preprocessing:
        """preprocessing.json, parsed once per record."""
        from tickercast.modeling.preprocess import load_spec

        return load_spec(self.spec)

    def load(self) -> tuple[Preprocessing, dict[str, np.ndarray]]:
        """(preprocessing, arrays) as `tickercast.modeling.preprocess.preprocess` made them."""
        from tickercast.modeling.preprocess import load_preprocessed

        return load_preprocessed(self.arrays, self.spec)

    def windows(self) -> dict[str, np.ndarray]:
        """The window anchors per split (`tickercast.modeling.windows.anchors_for`)."""
        import numpy as np

        with np.load(self.anchors, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def bundle_files(self) -> dict[str, Path]:
        return {layout.SPEC_FILE: Path(self.spec)}


class Trained(Record):
    """One ticker's fitted network (shrunk toward the last close when asked) and its
    training history; or, when a warm fine-tune never beat the champion's weights on
    tonight's validation windows (or none ran: they still fit within warm_start_drift),
    only the history and the champion kept
    (`kept_champion`, its version; `model` is then None: there is nothing new to ship)."""

    ticker: str
    model: str | None
    history: str
    best_epoch: int
    epochs_run: int
    shrinkage: dict[str, Any] | None = None
    # the weights before shrinkage: a bundle carries them for the next night's warm start
    fitted_weights: str | None = None
    kept_champion: int | None = None

    @model_validator(mode="after")
    def _a_model_or_the_champion(self) -> Trained:
        if (self.model is None) == (self.kept_champion is None):
            raise ValueError("a trained record names a model file or the champion it kept")
        return self

    def kept(self) -> Kept | None:
        """The night's outcome when the champion was kept (None: a new network)."""
        if self.kept_champion is None:
            return None
        summary = self.history_data()
        start, val = summary.get("start_val_loss"), summary["history"].get("val_loss") or []
        version = self.kept_champion
        keep_at = (summary.get("warm_start") or {}).get("keep_at")
        if not val and keep_at is not None:  # within warm_start_drift: no epoch ran
            why = (
                f"champion v{version}'s weights still fit tonight's validation windows (their "
                f"loss {start:.6g}, at most {keep_at:.6g} by warm_start_drift), so no fine-tune ran"
            )
        else:
            tried = f", best of {len(val)} epochs {min(val):.6g}" if val else ""
            why = (
                f"the fine-tune never beat champion v{version}'s weights on tonight's "
                f"validation windows (their loss {start:.6g}{tried})"
            )
        return Kept(
            ticker=self.ticker,
            version=version,
            reason=f"{why}: champion v{version} kept, no new version",
        )

    def for_ticker(self, ticker: str) -> Trained:
        if ticker != self.ticker:
            raise ValueError(f"the model of {self.ticker} was asked for {ticker}")
        return self

    def load_model(self):
        import keras

        return keras.models.load_model(self.model, safe_mode=True, compile=False)

    def history_data(self) -> dict[str, Any]:
        """history.json: the training summary, per-epoch history under "history"."""
        return json.loads(Path(self.history).read_text())

    def bundle_files(self) -> dict[str, Path]:
        files = {layout.MODEL_FILE: Path(self.model), layout.HISTORY_FILE: Path(self.history)}
        if self.fitted_weights:
            files[layout.FITTED_WEIGHTS_FILE] = Path(self.fitted_weights)
        return files


class Kept(Record):
    """What evaluation hands on when tonight's fit kept the champion's weights: no
    candidate to evaluate, export or gate (the champion keeps serving as it is)."""

    ticker: str
    version: int
    reason: str


class GlobalTrained(Record):
    """Global mode: one network over every ticker; each ticker's model file."""

    models: dict[str, Trained]

    def for_ticker(self, ticker: str) -> Trained:
        try:
            return self.models[ticker]
        except KeyError:
            raise ValueError(f"{ticker} was not part of the global model") from None


class ForecastFile(BaseModel):
    """A recorded per-window forecast table (`tickercast.evaluation.window_table`) and
    the sha256 it was written with: what the gate reads instead of re-running a model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> ForecastFile:
        from tickercast.hashing import file_sha256

        return cls(path=str(path), sha256=file_sha256(path))

    def load(self) -> pd.DataFrame:
        """The table, refused (window_table.TableChanged, naming the file) when its bytes
        no longer hash to `sha256`."""
        from tickercast.evaluation.window_table import read

        return read(self.path, self.sha256)

    def check(self) -> None:
        """Refuse a table changed since it was recorded (before it is copied anywhere)."""
        from tickercast.evaluation.window_table import verified_bytes

        verified_bytes(self.path, self.sha256)


class Evaluated(Record):
    """The model and every baseline on the test windows: metrics, verdict, intervals,
    the per-window forecasts (`predictions`) and the evaluation's files."""

    ticker: str
    metrics: dict[str, Any]
    verdict: str
    intervals: dict[str, Any]
    evaluation: dict[str, Any]
    predictions: ForecastFile
    metrics_json: str
    loss_png: str
    forecast_png: str
    residuals_png: str

    def bundle_files(self) -> dict[str, Path]:
        return {
            layout.PREDICTIONS_FILE: Path(self.predictions.path),
            "loss.png": Path(self.loss_png),
            "forecast.png": Path(self.forecast_png),
            "residuals.png": Path(self.residuals_png),
        }


class WalkedForward(Record):
    """Retrain's walk-forward backtest of one ticker."""

    ticker: str
    n_folds: int
    epochs_per_fold: int
    summary: dict[str, Any]
    folds: list[dict[str, Any]]
    backtest_json: str
    predictions: str
    folds_png: str

    def bundle_files(self) -> dict[str, Path]:
        return {
            "backtest.json": Path(self.backtest_json),
            "backtest_predictions.parquet": Path(self.predictions),
            "folds.png": Path(self.folds_png),
        }


class Exported(Record):
    """The bundle a retrain wrote (or the latest one, when nothing changed since)."""

    ticker: str
    bundle: str
    version: int
    metrics: dict[str, Any]
    verdict: str
    unchanged: bool = False
    # why no version was made when tonight's fit kept the champion (then `version` is it)
    kept_reason: str | None = None


class Backtested(Record):
    """One ticker's rolling-origin backtest (`tickercast backtest`)."""

    ticker: str
    origins: dict[str, Any]
    models: list[str]
    metrics: list[dict[str, Any]]
    folds: dict[str, Any]
    # the distribution table (issue 21): per median, every band's scores and DM verdicts
    distribution: dict[str, Any] = Field(default_factory=dict)
    metrics_parquet: str
    forecasts_parquet: str
    distribution_parquet: str = ""
    summary_json: str
