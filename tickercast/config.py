"""The typed parameters of the flows: retrain (RetrainConfig), ingest (IngestConfig),
predict (PredictConfig) and backtest (BacktestConfig).

Every field carries a description, bounds and enums so the Prefect UI renders a usable
form, the CLI can generate its options from it, and bad values are refused before any
work starts. A field that several configs take is defined once, in RetrainConfig; the
others copy it (`_as_retrain`), changing at most its default or description, so types,
bounds and defaults cannot drift apart. The checks they share are written once too
(`_Config`'s validators, `_check_inputs`).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tickercast.choices import (  # noqa: E402  (re-exported: the configs' types)
    BacktestModel,
    Baseline,
    Device,
    FailOn,
    Feature,
    MaseScale,
    Mode,
    ModelName,
    OnCorrupt,
    OnQuirk,
    Preset,
    PromotionMetric,
    Source,
    Target,
    TaskRunner,
    Window,
)
from tickercast.tickers import validate_ticker

ON_CORRUPT_HELP = (
    "A stored lake file that cannot be read back: reingest = report it and fetch the "
    "ticker again (replacing it); skip = report it and leave the ticker alone, the other "
    "tickers go on; fail = fail the ticker, changing nothing."
)
ON_QUIRK_HELP = (
    "A row with a valid close but a zero, missing or inconsistent open/high/low/adj_close "
    "(Yahoo's old history): repair = keep it, those fields marked missing (a flat bar's "
    "open set to its close), counted per quirk in the report; drop = drop such rows, "
    "counted; fail = refuse the file or answer. Rows without a valid close are dropped."
)
MOVE_THRESHOLD_HELP = (
    "one-day close moves above this fraction (0.5 = 50%) on days with no split recorded."
)
CSV_FOLDER = "a folder of <TICKER>.csv files"

# The recommended default: inputs and target that do not depend on the price level, so a
# test period priced above anything seen in training is no harder than any other, and a
# network without skill is shrunk back to the last close instead of adding noise.
RECOMMENDED: dict[str, Any] = {
    "features": ["log_return", "volatility"],
    "target": "mean_close_log_return",
    "shrink": True,
}
# The reference tutorial's configuration, reproduced exactly (`--preset tutorial`).
TUTORIAL: dict[str, Any] = {
    "features": ["close", "volume"],
    "target": "mean_close",
    "shrink": False,
}
PRESETS: dict[str, dict[str, Any]] = {"recommended": {}, "tutorial": TUTORIAL}


def _need_csv_dir(source: str, csv_dir: str | None, holding: str) -> None:
    if source == "csv" and not csv_dir:
        raise ValueError(f"source 'csv' needs csv_dir ({holding})")


def _check_dates(start: dt.date | None, end: dt.date | None) -> None:
    if start and end and start > end:
        raise ValueError(f"start {start} is after end {end}")


def _check_inputs(config: RetrainConfig | BacktestConfig, models: Iterable[str]) -> None:
    """What retrain and backtest both refuse: csv without csv_dir, start after end, and a
    stacked model with fewer than two units entries."""
    _need_csv_dir(config.source, config.csv_dir, CSV_FOLDER)
    _check_dates(config.start, config.end)
    for name in models:
        if name in ("stacked_lstm", "cnn_lstm") and len(config.units) < 2:
            raise ValueError(f"model {name!r} needs at least two entries in units")


class _Config(BaseModel):
    """What every flow's one parameter shares: unknown fields and invalid assignments are
    refused, and `tickers` and `units` are checked the same way wherever a config has them
    (hence check_fields=False: a config without the field simply has nothing to check)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        # A preset fills the fields it names unless they were given explicitly.
        if isinstance(data, dict) and "preset" in cls.model_fields:
            preset = PRESETS.get(data.get("preset", "recommended"), {})
            data = {**{k: v for k, v in preset.items() if k in cls.model_fields}, **data}
        return data

    @model_validator(mode="before")
    @classmethod
    def _sine_start(cls, data: Any) -> Any:
        # The sine wave's synthetic days begin in 2000: retrain's default start (2015)
        # would leave no rows. An explicit start is kept.
        if (
            isinstance(data, dict)
            and data.get("source") == "sine"
            and "start" not in data
            and "start" in cls.model_fields
        ):
            data = {**data, "start": None}
        return data

    def csv_path(self) -> str | None:
        """csv_dir made absolute, so task inputs and cache keys never depend on the cwd."""
        csv_dir = getattr(self, "csv_dir", None)
        return str(Path(csv_dir).resolve()) if csv_dir else None

    @field_validator("tickers", check_fields=False)
    @classmethod
    def _tickers(cls, value: list[str]) -> list[str]:
        symbols = [validate_ticker(t) for t in value]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"duplicate tickers in {symbols}")
        return symbols

    @field_validator("units", check_fields=False)
    @classmethod
    def _units(cls, value: list[int]) -> list[int]:
        if any(u < 1 or u > 4096 for u in value):
            raise ValueError(f"units must each be within 1..4096, got {value}")
        return value


class RetrainConfig(_Config):
    """Everything one retrain run depends on; defaults reproduce the reference tutorial."""

    tickers: list[str] = Field(
        default_factory=lambda: ["AAPL"],
        min_length=1,
        max_length=500,
        description="Ticker symbols in Yahoo's alphabet (letters, digits, . - ^ =).",
    )
    source: Source = Field(
        "sample",
        description="Where prices come from: bundled sample, a folder of Yahoo CSVs, "
        "live yfinance, or the tutorial's sine wave.",
    )
    csv_dir: str | None = Field(
        None, description="Folder of Yahoo-export CSVs named <TICKER>.csv (source=csv)."
    )
    start: dt.date | None = Field(
        dt.date(2015, 1, 1), description="First trading day used (inclusive); empty = all."
    )
    end: dt.date | None = Field(
        None, description="Last trading day used (inclusive); empty = up to the latest."
    )
    move_threshold: float = Field(
        0.5,
        gt=0,
        le=100,
        description="Ingest: warn about " + MOVE_THRESHOLD_HELP,
    )
    on_corrupt: OnCorrupt = Field("reingest", description="Ingest: " + ON_CORRUPT_HELP)
    on_quirk: OnQuirk = Field("repair", description="Ingest: " + ON_QUIRK_HELP)
    preset: Preset = Field(
        "recommended",
        description="recommended: scale-free inputs (daily log return, 20-day volatility), a "
        "target relative to the last close, and the forecast shrunk toward the last close "
        "by a factor fit on the validation split; tutorial: the reference tutorial exactly "
        "(close + volume min-max scaled on training rows, mean_close, no shrinkage). "
        "Options given explicitly override the preset.",
    )
    features: list[Feature] = Field(
        default_factory=lambda: list(RECOMMENDED["features"]),
        min_length=1,
        description="Model inputs per trading day, by name.",
    )
    lookback: int = Field(60, ge=1, le=1000, description="Trading days per input window.")
    horizon: int = Field(5, ge=1, le=250, description="Trading days ahead that the target covers.")
    target: Target = Field(
        RECOMMENDED["target"],
        description="mean_close: mean close of the next `horizon` days; close: close at "
        "t+horizon; closes: the next `horizon` closes as a vector (multi-step); "
        "*_log_return: the same as a log return vs the window's last close. Predictions are "
        "always mapped back to prices.",
    )
    model: ModelName = Field(
        "stacked_lstm",
        description="stacked_lstm: LSTM per units entry (all but the last return sequences) "
        "-> Dense; lstm: one LSTM(units[0]) -> Dense; bilstm: bidirectional LSTM per entry; "
        "cnn_lstm: causal Conv1D(units[0] filters, kernel 3) -> LSTM per remaining entry; "
        "lstm_attention: LSTM per entry -> attention over the sequence -> Dense.",
    )
    units: list[int] = Field(
        default_factory=lambda: [64, 32],
        min_length=1,
        max_length=4,
        description="Units per layer (LSTM units; cnn_lstm's first entry = Conv1D filters).",
    )
    dropout: float = Field(
        0.0, ge=0, le=0.9, description="Dropout after each recurrent layer (0 = none)."
    )
    recurrent_dropout: float = Field(
        0.0,
        ge=0,
        le=0.9,
        description="LSTM recurrent dropout; anything but 0 disables the cuDNN kernel on GPU.",
    )
    l2: float = Field(0.0, ge=0, le=1.0, description="L2 kernel regularisation (0 = none).")
    mode: Mode = Field(
        "per_ticker",
        description="per_ticker: one model per ticker; global: one model trained on all "
        "tickers (each scaled on its own), evaluated and exported per ticker.",
    )
    ticker_embedding: int = Field(
        0,
        ge=0,
        le=256,
        description="Global mode: size of a learned per-ticker vector fed with every time "
        "step (0 = none).",
    )
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="Adam learning rate.")
    clipvalue: float = Field(1.0, gt=0, description="Adam gradient clipping value.")
    epochs: int = Field(50, ge=1, le=10_000, description="Maximum training epochs.")
    batch_size: int = Field(32, ge=1, le=65_536, description="Windows per gradient step.")
    patience: int = Field(
        10, ge=1, le=1000, description="EarlyStopping patience on val_loss (best weights restored)."
    )
    reduce_lr_patience: int = Field(
        5, ge=1, le=1000, description="ReduceLROnPlateau: epochs without val_loss improvement."
    )
    reduce_lr_factor: float = Field(
        0.5, gt=0, lt=1, description="ReduceLROnPlateau: learning rate multiplier on a plateau."
    )
    shrink: bool = Field(
        RECOMMENDED["shrink"],
        description="Shrink the network's forecast toward the last close by the factor in "
        "[0, 1] that fits the validation split best (0 = naive, 1 = the network as "
        "trained), inside the exported model; only for targets relative to the last close.",
    )
    device: Device = Field(
        "auto",
        description="auto: a GPU if TensorFlow sees one, else CPU; gpu: fail if none; cpu.",
    )
    mixed_precision: bool = Field(
        False, description="On GPU: float16 compute with float32 weights (ignored on CPU)."
    )
    tensorboard_dir: str | None = Field(
        None, description="Write TensorBoard logs under this folder (empty = none)."
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of rows for validation.")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of rows for the test.")
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Random seed (weights, shuffling).")
    walk_forward_folds: int = Field(
        0,
        ge=0,
        le=20,
        description="Walk-forward backtest: 0 = off; K = retrain on K expanding windows, each "
        "tested on the next block of test_fraction rows (the last block is the test split).",
    )
    walk_forward_epochs: int = Field(
        10, ge=1, le=10_000, description="Maximum epochs per walk-forward fold."
    )
    promotion_metric: PromotionMetric = Field(
        "rmse",
        description="Champion gate: a new version is promoted only if its loss on this metric "
        "(squared errors for rmse, absolute errors otherwise) is significantly lower than the "
        "champion's on the latest common test window (one-sided Diebold-Mariano test).",
    )
    promotion_level: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Champion gate: significance level of its Diebold-Mariano tests (a "
        "version significantly worse than naive at this level is never promoted).",
    )
    require_beat_naive: bool = Field(
        False,
        description="Champion gate: also require beating the naive last-close forecast "
        "there, significantly.",
    )
    data_dir: str = Field(
        "data", description="Root of the data lake, work files, caches and model bundles."
    )
    refresh: bool = Field(False, description="Recompute every step, ignoring cached results.")
    cache_expiration_days: float | None = Field(
        None,
        gt=0,
        le=3650,
        description="Cached step results expire after this many days; "
        "empty = never (keys already change with every input, config or code change).",
    )
    result_storage: str | None = Field(
        None,
        description="Where cached step results live: a folder or any fsspec URL "
        "(s3://bucket/tickercast, gcs://...); empty = <data_dir>/results.",
    )
    task_runner: TaskRunner = Field(
        "threads",
        description="How per-ticker branches run concurrently: threads in this process, or "
        "Dask workers (a local cluster, or the scheduler at dask_address).",
    )
    max_workers: int = Field(
        4, ge=1, le=256, description="Threads, or local Dask worker processes, for the branches."
    )
    dask_address: str | None = Field(
        None,
        description="An existing Dask scheduler (tcp://host:8786); empty = start a local "
        "cluster of max_workers processes.",
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking server (http://host:5000, or any MLflow tracking URI) "
        "that mirrors each run: runs with params, metrics and artifacts, registered "
        "versions and the champion alias (needs the mlflow extra); empty = the "
        "MLFLOW_TRACKING_URI environment variable if set, else no MLflow.",
    )

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate features in {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RetrainConfig:
        _check_inputs(self, [self.model])
        if self.ticker_embedding and self.mode != "global":
            raise ValueError("ticker_embedding needs mode 'global' (one model over all tickers)")
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("val_fraction + test_fraction must leave at least 20% for training")
        return self

    def slice(self, *names: str) -> dict:
        """The JSON-ready subset of fields a step depends on (its cache-key slice)."""
        dumped = self.model_dump(mode="json")
        return {name: dumped[name] for name in names}


def _as_retrain(name: str, **changes):
    """RetrainConfig's field (bounds, enum, default and description), optionally with a new
    default or description: the other configs take a field retrain has through this, so a
    field means and allows the same in every flow (the backtest trains networks with
    exactly the options retrain documents)."""
    field = copy.copy(RetrainConfig.model_fields[name])
    for key, value in changes.items():
        setattr(field, key, value)
    return field


# Which fields each step depends on: a change elsewhere leaves that step's cache valid.
PREPROCESS_FIELDS = (
    "start",
    "end",
    "features",
    "lookback",
    "horizon",
    "target",
    "val_fraction",
    "test_fraction",
)
TRAIN_FIELDS = (
    "model",
    "units",
    "learning_rate",
    "clipvalue",
    "epochs",
    "batch_size",
    "patience",
    "seed",
    "dropout",
    "recurrent_dropout",
    "l2",
    "mode",
    "ticker_embedding",
    "reduce_lr_patience",
    "reduce_lr_factor",
    "device",
    "mixed_precision",
    "tensorboard_dir",
    "shrink",
)
BACKTEST_FIELDS = ("walk_forward_folds", "walk_forward_epochs")
PROMOTION_FIELDS = ("promotion_metric", "require_beat_naive", "promotion_level")
# Where a run's records are mirrored, not what it computes: never part of a version's
# metadata, a cache key, a search's identity or the params MLflow records.
MIRROR_FIELDS = ("mlflow_uri",)


# Yahoo's look-back periods (yfinance's `period`): 5d, 3mo, 1y, 10y, ytd, max, ...
PERIOD_PATTERN = r"^(?:[1-9][0-9]*(?:d|wk|mo|y)|ytd|max)$"


class IngestConfig(_Config):
    """Everything one ingest run depends on (the `ingest` flow's one parameter)."""

    tickers: list[str] = Field(
        default_factory=list,
        max_length=5000,
        description="Ticker symbols in Yahoo's alphabet (letters, digits, . - ^ =). Empty: "
        "every CSV in csv_dir (source csv) or every bundled sample ticker (source sample).",
    )
    source: Source = _as_retrain(
        "source",
        description="Where prices come from: bundled sample, Yahoo-export CSVs, live "
        "yfinance (incremental), or the tutorial's sine wave.",
    )
    csv_dir: str | None = _as_retrain(
        "csv_dir",
        description="A Yahoo-export CSV, or a folder of them named <TICKER>.csv (source csv).",
    )
    start: dt.date | None = _as_retrain(
        "start",
        default=None,
        description="yfinance: first day fetched (inclusive); empty = the whole history. "
        "Reruns fetch only what is missing.",
    )
    end: dt.date | None = _as_retrain(
        "end", description="yfinance: last day fetched (inclusive); empty = up to the latest."
    )
    period: str | None = Field(
        None,
        pattern=PERIOD_PATTERN,
        description="yfinance: look-back instead of start (5d, 3mo, 1y, 10y, ytd, max); "
        "shapes a ticker's first fetch only.",
    )
    overlap_days: int = Field(
        5,
        ge=1,
        le=250,
        description="yfinance reruns re-fetch this many stored days, to pick up revisions "
        "and detect re-adjusted history (then the full history is fetched again).",
    )
    move_threshold: float = _as_retrain(
        "move_threshold", description="Warn about " + MOVE_THRESHOLD_HELP
    )
    retries: int = Field(
        3, ge=0, le=10, description="Retries of a transiently failing fetch (network, 5xx, 429)."
    )
    retry_delay: float = Field(
        2.0,
        ge=0,
        le=300,
        description="Seconds before the first retry; doubles with each retry, +/-50% jitter.",
    )
    on_corrupt: OnCorrupt = _as_retrain("on_corrupt", description=ON_CORRUPT_HELP)
    on_quirk: OnQuirk = _as_retrain("on_quirk", description=ON_QUIRK_HELP)
    fail_on: FailOn = Field(
        "all",
        description="When the run ends Failed: all = every ticker failed; any = at least one "
        "did; never = only the per-ticker report tells.",
    )
    data_dir: str = _as_retrain(
        "data_dir", description="Root of the data lake (lake/prices, lake/events)."
    )
    refresh: bool = _as_retrain(
        "refresh", description="Re-ingest offline sources even when their file is unchanged."
    )
    max_workers: int = _as_retrain(
        "max_workers",
        description="Tickers ingested at once (threads; a ticker's partition is written by "
        "one thread only).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> IngestConfig:
        _need_csv_dir(self.source, self.csv_dir, "a CSV file or a folder of them")
        if self.source in ("yfinance", "sine") and not self.tickers:
            raise ValueError(f"source {self.source!r} needs tickers")
        if self.source != "yfinance" and (self.start or self.end or self.period):
            raise ValueError(
                f"start, end and period apply to source 'yfinance'; source {self.source!r} "
                "is ingested whole (retrain applies its dates later)"
            )
        _check_dates(self.start, self.end)
        if self.period and self.start and self.end:
            raise ValueError("give at most two of start, end and period")
        return self

    def options(self) -> dict:
        """The fields `IngestOptions` takes (JSON-ready, part of the cache key)."""
        return {
            "overlap_days": self.overlap_days,
            "move_threshold": self.move_threshold,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "on_corrupt": self.on_corrupt,
            "on_quirk": self.on_quirk,
        }


class PredictConfig(_Config):
    """The `predict` flow's one parameter: which champions forecast, from which lake."""

    tickers: list[str] = _as_retrain(
        "tickers", description="Tickers whose champion model forecasts the next horizon."
    )
    data_dir: str = _as_retrain(
        "data_dir", description="Root of the data lake and the model registry (models/)."
    )


class BacktestConfig(_Config):
    """The `backtest` flow's one parameter: rolling-origin evaluation of several models."""

    tickers: list[str] = _as_retrain("tickers")
    source: Source = _as_retrain("source")
    csv_dir: str | None = _as_retrain("csv_dir")
    start: dt.date | None = _as_retrain("start")
    end: dt.date | None = _as_retrain("end")
    model: list[BacktestModel] = Field(
        default_factory=lambda: ["stacked_lstm", *Baseline.__args__],  # type: ignore[attr-defined]
        min_length=1,
        description="Models evaluated on the same origins (repeat the option or list several): "
        "any network of the family (stacked_lstm, lstm, bilstm, cnn_lstm, lstm_attention) and "
        f"the baselines {', '.join(Baseline.__args__)} (what each one is: the README's "  # type: ignore[attr-defined]
        "Baselines table and the report's legend; moving_average reads ma_window closes, ridge "
        "the last ridge_lags log returns). naive is always scored: it is the skill reference.",
    )
    target: Target = _as_retrain(
        "target",
        default="close_log_return",
        description="close: the close at t+horizon; closes: each of the next horizon closes "
        "(metrics per horizon step); mean_close: their mean; *_log_return: a network learns "
        "the same as a log return. Always scored in prices.",
    )
    horizon: int = _as_retrain("horizon", default=1)
    initial: int = Field(
        504,
        ge=2,
        le=100_000,
        description="Rows (trading days) of the first training window: the first origin is "
        "day `initial` of the data.",
    )
    step: int = Field(5, ge=1, le=10_000, description="Trading days between two origins.")
    window: Window = Field(
        "expanding",
        description="expanding: every origin trains on all days up to it; sliding: on its "
        "last `initial` days only.",
    )
    refit_every: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Retrain each network every K origins (in between, the last fit "
        "forecasts from each new origin); the baselines are refit at every origin.",
    )
    ma_window: int = Field(
        20, ge=1, le=10_000, description="moving_average: closes averaged (trading days)."
    )
    ridge_lags: int = Field(
        5, ge=1, le=250, description="ridge: daily log returns fed to the regression."
    )
    ridge_alpha: float = Field(
        1.0,
        gt=0,
        le=1e9,
        description="ridge: L2 penalty on the standardised coefficients (intercept free).",
    )
    mase_scale: MaseScale = Field(
        "series",
        description="MASE's denominator: series = the one-step naive MAE of the whole "
        "backtested series (the textbook's, FPP3 5.10, and fable's); origin = each origin's "
        "own in-sample one-step naive MAE.",
    )
    max_lag: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Lag diagnostic: largest lag searched, in trading days (empty = horizon + 5).",
    )
    preset: Preset = _as_retrain("preset")
    features: list[Feature] = _as_retrain("features")
    shrink: bool = _as_retrain("shrink")
    lookback: int = _as_retrain("lookback")
    units: list[int] = _as_retrain("units")
    dropout: float = _as_retrain("dropout")
    recurrent_dropout: float = _as_retrain("recurrent_dropout")
    l2: float = _as_retrain("l2")
    learning_rate: float = _as_retrain("learning_rate")
    clipvalue: float = _as_retrain("clipvalue")
    epochs: int = _as_retrain("epochs", default=10)
    batch_size: int = _as_retrain("batch_size")
    patience: int = _as_retrain("patience", default=3)
    reduce_lr_patience: int = _as_retrain("reduce_lr_patience")
    reduce_lr_factor: float = _as_retrain("reduce_lr_factor")
    val_fraction: float = _as_retrain(
        "val_fraction",
        description="Share of each network fit's training window used for validation "
        "(early stopping and the conformal intervals).",
    )
    seed: int = _as_retrain("seed")
    device: Device = _as_retrain("device")
    mixed_precision: bool = _as_retrain("mixed_precision")
    data_dir: str = _as_retrain("data_dir")
    refresh: bool = _as_retrain("refresh")
    mlflow_uri: str | None = _as_retrain("mlflow_uri")

    @field_validator("model", "features")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"duplicates in {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BacktestConfig:
        _check_inputs(self, self.model)
        from tickercast.folds import check_initial

        check_initial(
            self.initial,
            self.model,
            horizon=self.horizon,
            lookback=self.lookback,
            val_fraction=self.val_fraction,
            ridge_lags=self.ridge_lags,
            ma_window=self.ma_window,
        )
        return self

    def run_cfg(self) -> dict:
        """The JSON-ready fields one ticker's backtest depends on (its cache-key slice)."""
        skip = {"tickers", "source", "csv_dir", "data_dir", "refresh", *MIRROR_FIELDS}
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in skip}
