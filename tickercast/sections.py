"""Typed sections of the configs: what each stage of a run takes, and nothing else.

A section is a small frozen pydantic model (`Section`) holding the settings one stage
depends on: where prices come from (`DataSource`), how ingested rows are screened
(`IngestChecks`), which days and how they become windows (`Windowing`,
`PreprocessSettings`), the network (`Network`), its fit (`Training`, `Compute`, `Scope`),
retrain's walk-forward (`WalkForward`), the champion gate (`Gate`) and how a run is
executed (`Execution`, `Mirror`). A step's cache key is its sections' values, so a
setting only reruns the steps that read it.

`Composite` composes sections (the flows' configs in `tickercast.config`, and `FitSpec`,
what one network fit takes). Every setting keeps one flat name, unique within a
composite: the CLI option (`--epochs`), the key of a flat `--config` JSON file or of an
older deployment's parameters; a flat key given to a composite is lifted into its
section (`Composite.nest`).

Fields shared by several sections are defined once and copied with `field_of` (a new
default or description at most), so a setting means and allows the same everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

from tickercast.choices import (
    BAND,
    MA_WINDOW,
    MIN_UNITS,
    RIDGE_ALPHA,
    RIDGE_LAGS,
    BacktestModel,
    Band,
    Baseline,
    Device,
    Feature,
    Head,
    MaseScale,
    Mode,
    ModelName,
    OnCorrupt,
    OnGap,
    OnQuirk,
    PromotionMetric,
    Source,
    Target,
    TaskRunner,
    WarmStartMode,
    Window,
)
from tickercast.market.options import IngestOptions


class Section(BaseModel):
    """A frozen group of settings one stage takes; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def field_of(section: type[BaseModel], name: str, **changes: Any) -> Any:
    """`section`'s field `name` (type bounds, enum, default, description), with `changes`
    (a new default or description): how one field is shared by several sections."""
    if "default" in changes:
        changes.setdefault("default_factory", None)
    return FieldInfo.merge_field_infos(section.model_fields[name], **changes)


def unique(value: list) -> list:
    """A list setting whose entries must differ (features, models, ...)."""
    if len(set(value)) != len(value):
        raise ValueError(f"duplicates in {value}")
    return value


def check_dates(start: dt.date | None, end: dt.date | None) -> None:
    if start and end and start > end:
        raise ValueError(f"start {start} is after end {end}")


# --------------------------------------------------------------------------- data in

CSV_DIR_HELP = "a folder of Yahoo-export CSVs named <TICKER>.csv, or one such CSV"


class DataSource(Section):
    """Where prices come from (the ingest step's input)."""

    source: Source = Field(
        "sample",
        description="Where prices come from: bundled sample, a folder of Yahoo CSVs, "
        "live yfinance (incremental), or the tutorial's sine wave.",
    )
    csv_dir: str | None = Field(None, description=f"For source csv: {CSV_DIR_HELP}.")

    @model_validator(mode="after")
    def _csv_needs_a_folder(self) -> DataSource:
        if self.source == "csv" and not self.csv_dir:
            raise ValueError(f"source 'csv' needs csv_dir ({CSV_DIR_HELP})")
        return self

    def csv_path(self) -> str | None:
        """csv_dir made absolute, so task inputs and cache keys never depend on the cwd."""
        return str(Path(self.csv_dir).resolve()) if self.csv_dir else None


_INGEST = IngestOptions()  # the ingest library's defaults, stated once there


class IngestChecks(Section):
    """How every ingested batch is screened: big moves, unreadable lake files, quirks."""

    move_threshold: float = Field(
        _INGEST.move_threshold,
        gt=0,
        le=100,
        description="Warn about one-day close moves above this fraction (0.5 = 50%) on "
        "days with no split recorded.",
    )
    on_corrupt: OnCorrupt = Field(
        _INGEST.on_corrupt,  # type: ignore[arg-type]
        description="A stored lake file that cannot be read back: reingest = report it and "
        "fetch the ticker again (replacing it); skip = report it and leave the ticker "
        "alone, the other tickers go on; fail = fail the ticker, changing nothing.",
    )
    on_quirk: OnQuirk = Field(
        _INGEST.on_quirk,  # type: ignore[arg-type]
        description="A row with a valid close but a zero, missing or inconsistent "
        "open/high/low/adj_close (Yahoo's old history): repair = keep it, those fields "
        "marked missing (a flat bar's open set to its close), counted per quirk in the "
        "report; drop = drop such rows, counted; fail = refuse the file or answer. Rows "
        "without a valid close are dropped. A bad close print (a one-day jump that "
        "reverts, a close far outside its own bar, a last day far outside the recent "
        "volatility) is dropped by repair and drop, refused by fail.",
    )
    replace: bool = Field(
        _INGEST.replace,
        description="Let a source replace a stored history it does not cover (fewer rows, "
        "a later start, missing days): the removed days are counted and warned about. "
        "Without it such a source is refused, naming the counts, and nothing is changed.",
    )

    def options(self) -> IngestOptions:
        """The ingest library's options these settings stand for."""
        return IngestOptions(**self.model_dump())


class Fetching(IngestChecks):
    """How rows are screened, and how a live source is fetched and retried."""

    overlap_days: int = Field(
        _INGEST.overlap_days,
        ge=1,
        le=250,
        description="yfinance reruns re-fetch this many stored days, to pick up revisions "
        "and detect re-adjusted history (then the full history is fetched again).",
    )
    retries: int = Field(
        _INGEST.retries,
        ge=0,
        le=10,
        description="Retries of a transiently failing fetch (network, 5xx, 429).",
    )
    retry_delay: float = Field(
        _INGEST.retry_delay,
        ge=0,
        le=300,
        description="Seconds before the first retry; doubles with each retry, +/-50% jitter.",
    )


# Yahoo's look-back periods (yfinance's `period`): 5d, 3mo, 1y, 10y, ytd, max, ...
PERIOD_PATTERN = r"^(?:[1-9][0-9]*(?:d|wk|mo|y)|ytd|max)$"


class FetchWindow(Section):
    """The days a live fetch asks for (the ingest flow's; retrain's come from its
    preprocessing dates)."""

    start: dt.date | None = Field(
        None,
        description="yfinance: first day fetched (inclusive); empty = the whole history. "
        "Reruns fetch only what is missing.",
    )
    end: dt.date | None = Field(
        None, description="yfinance: last day fetched (inclusive); empty = up to the latest."
    )
    period: str | None = Field(
        None,
        pattern=PERIOD_PATTERN,
        description="yfinance: look-back instead of start (5d, 3mo, 1y, 10y, ytd, max); "
        "shapes a ticker's first fetch only.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FetchWindow:
        check_dates(self.start, self.end)
        if self.period and self.start and self.end:
            raise ValueError("give at most two of start, end and period")
        return self

    def given(self) -> bool:
        return bool(self.start or self.end or self.period)


# --------------------------------------------------------------------------- preprocessing

# The recommended default: inputs and target that do not depend on the price level, so a
# test period priced above anything seen in training is no harder than any other, and a
# network without skill is shrunk back to the last close instead of adding noise.
RECOMMENDED_FEATURES = ("log_return", "volatility")
RECOMMENDED_TARGET = "mean_close_log_return"


class Windowing(Section):
    """Which days are used and how they become windows: features, lookback, horizon and
    target (a backtest's preprocessing: its folds set the split themselves)."""

    start: dt.date | None = Field(
        dt.date(2015, 1, 1), description="First trading day used (inclusive); empty = all."
    )
    end: dt.date | None = Field(
        None, description="Last trading day used (inclusive); empty = up to the latest."
    )
    features: list[Feature] = Field(
        default_factory=lambda: list(RECOMMENDED_FEATURES),
        min_length=1,
        description="Model inputs per trading day, by name.",
    )
    lookback: int = Field(60, ge=1, le=1000, description="Trading days per input window.")
    horizon: int = Field(5, ge=1, le=250, description="Trading days ahead that the target covers.")
    target: Target = Field(
        RECOMMENDED_TARGET,  # type: ignore[arg-type]
        description="mean_close: mean close of the next `horizon` days; close: close at "
        "t+horizon; closes: the next `horizon` closes as a vector (multi-step); "
        "*_log_return: the same as a log return vs the window's last close. Predictions are "
        "always mapped back to prices.",
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of rows for validation.")
    gap_days: int = Field(
        5,
        ge=1,
        le=250,
        description="A gap in the trading days: more than this many weekdays missing "
        "between two consecutive rows (rows dropped at ingest, a suspension).",
    )
    on_gap: OnGap = Field(
        "split",  # type: ignore[arg-type]
        description="Windows whose days span a gap: split = not built, counted (the "
        "series is cut at the gap); refuse = fail the ticker, naming the gaps; bridge = "
        "built as if the days were consecutive, counted.",
    )

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[str]) -> list[str]:
        return unique(value)

    @model_validator(mode="after")
    def _dates(self) -> Windowing:
        check_dates(self.start, self.end)
        return self


class PreprocessSettings(Windowing):
    """Retrain's preprocessing: a chronological [train | validation | test] split."""

    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of rows for the test.")

    @model_validator(mode="after")
    def _fractions(self) -> PreprocessSettings:
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("val_fraction + test_fraction must leave at least 20% for training")
        return self


# --------------------------------------------------------------------------- network and fit


class Architecture(Section):
    """The layers of a network, whatever its kind (a backtest names the kind per model)."""

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

    @field_validator("units")
    @classmethod
    def _units(cls, value: list[int]) -> list[int]:
        if any(u < 1 or u > 4096 for u in value):
            raise ValueError(f"units must each be within 1..4096, got {value}")
        return value

    def named(self, model: str) -> Network:
        """This architecture as the network `model` (a backtest's network of the family)."""
        return Network(model=model, **self.model_dump())  # type: ignore[arg-type]


def check_stacking(models: list[str], units: list[int]) -> None:
    """Refuse a network whose layers need more `units` entries than given."""
    for name in models:
        needed = MIN_UNITS.get(name, 1)
        if len(units) < needed:
            raise ValueError(f"model {name!r} needs at least {needed} entries in units")


class Network(Architecture):
    """The network retrain trains: its kind and layers."""

    model: ModelName = Field(
        "stacked_lstm",
        description="stacked_lstm: LSTM per units entry (all but the last return sequences) "
        "-> Dense; lstm: one LSTM(units[0]) -> Dense; bilstm: bidirectional LSTM per entry; "
        "cnn_lstm: causal Conv1D(units[0] filters, kernel 3) -> LSTM per remaining entry; "
        "lstm_attention: LSTM per entry -> attention over the sequence -> Dense.",
    )
    head: Head = Field(
        "point",
        description="point: one forecast per output, trained on squared error; quantile: "
        "the forecast distribution on the grid 0.025..0.975 per output (median + "
        "non-negative steps, so quantiles never cross), trained on the pinball loss; the "
        "median is the forecast (shrunk toward the last close like a point head's), the "
        "spread is conformalized on the validation split (CQR).",
    )

    @model_validator(mode="after")
    def _stacking(self) -> Network:
        check_stacking([self.model], self.units)
        return self


class Scope(Section):
    """One model per ticker, or one over every ticker."""

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

    @model_validator(mode="after")
    def _embedding(self) -> Scope:
        if self.ticker_embedding and self.mode != "global":
            raise ValueError("ticker_embedding needs mode 'global' (one model over all tickers)")
        return self


class Training(Section):
    """How a network is fitted: optimizer, epochs, early stopping, shrinkage, seed."""

    learning_rate: float = Field(
        2.8e-3,
        gt=0,
        le=1.0,
        description="Adam learning rate (the default: 1e-3 scaled by the square root of the "
        "batch's 8x over Keras' 32).",
    )
    clipvalue: float = Field(1.0, gt=0, description="Adam gradient clipping value.")
    epochs: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Maximum training epochs of a fit (early stopping may end it sooner); "
        "also caps each walk-forward fold unless walk_forward_epochs is given.",
    )
    batch_size: int = Field(
        256,
        ge=1,
        le=65_536,
        description="Windows per gradient step (256 trains 2.5x the windows/s of 32 on a "
        "CPU at the same forecast quality: bench/RESULTS.md).",
    )
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
        True,
        description="Shrink the network's forecast toward the last close by the factor in "
        "[0, 1] that fits the validation split best (0 = naive, 1 = the network as "
        "trained), inside the exported model; only for targets relative to the last close.",
    )
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Random seed (weights, shuffling).")


class Compute(Section):
    """Where a fit runs and what it logs on the side; not what it learns."""

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


class WarmStart(Section):
    """The second night: fine-tune the champion's fitted weights on the new rows instead
    of fitting from scratch (per-ticker mode), with a full refit on a schedule."""

    warm_start: WarmStartMode = Field(
        "off",
        description="off: every fit starts from fresh weights; auto: start from the "
        "champion's fitted weights (before its shrinkage) for at most warm_start_epochs "
        "when the champion was trained the same way (network, features, lookback, horizon, "
        "target) and its last full refit is recent (without a champion, from the latest "
        "version's, gated again as a new version); otherwise refit from scratch, saying "
        "why (recorded in metadata training.warm_start).",
    )
    warm_start_epochs: int = Field(
        5,
        ge=1,
        le=10_000,
        description="Maximum epochs of a warm-started fit (early stopping may end it sooner).",
    )
    warm_start_patience: int = Field(
        2,
        ge=1,
        le=1000,
        description="A warm-started fit stops after this many epochs without beating its "
        "best so far, the champion's own weights included (scored on tonight's validation "
        "windows before the first epoch): when no epoch beats them, they are kept.",
    )
    warm_start_drift: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Fine-tune only where the champion drifted: when its fitted weights' loss "
        "on tonight's validation windows is at most (1 + this) times their validation loss "
        "when it was made (0.05 = 5% worse), the champion is kept without a single epoch "
        "(no new version); empty = fine-tune every warm night.",
    )
    full_refit_days: int = Field(
        30,
        ge=0,
        le=3650,
        description="Refit from scratch when the last full refit behind the champion's "
        "weights saw data ending more than this many calendar days before today's last "
        "day of data, less a per-ticker stagger of up to a third of its business days "
        "(drawn from the ticker and its last full refit's day), so a universe's refits "
        "spread over nights (0 = every night).",
    )


# --------------------------------------------------------------------------- after training


# The default budget of a fit that is one of many (a walk-forward fold, a backtest origin).
FOLD_EPOCHS = 10


class WalkForward(Section):
    """Retrain's optional walk-forward backtest."""

    walk_forward_folds: int = Field(
        0,
        ge=0,
        le=20,
        description="Walk-forward backtest: 0 = off; K = retrain on K expanding windows, each "
        "tested on the next block of test_fraction rows (the last block is the test split).",
    )
    walk_forward_epochs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Maximum epochs per walk-forward fold; empty = epochs, at most "
        f"{FOLD_EPOCHS} (K folds are K more fits, so they get a smaller budget unless "
        "given one here).",
    )

    def fold_epochs(self, epochs: int) -> int:
        """A fold's maximum epochs when the run's own fits take at most `epochs`."""
        if self.walk_forward_epochs is not None:
            return self.walk_forward_epochs
        return min(epochs, FOLD_EPOCHS)


class Gate(Section):
    """The champion gate a new version must pass to be promoted."""

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


class Evaluation(Section):
    """How a model's forecasts are judged and what band it ships (retrain's evaluation,
    its walk-forward and the rolling backtest)."""

    band: Band = Field(
        BAND,  # type: ignore[arg-type]
        description="The band a model without a quantile head ships around its forecast "
        "(metadata, predict/serve quantiles, the SavedModel, the gate): gjr_garch_t = "
        "GJR-GARCH(1,1) with Student-t errors, garch_t = GARCH(1,1)-t (fit on the training "
        "rows, run over the window's last lookback + 20 daily returns); ewma = RiskMetrics "
        "(lambda 0.94); volatility_conformal = the 20-day realized volatility. Each is "
        "mapped onto the target and calibrated split-conformally on the validation split.",
    )


# --------------------------------------------------------------------------- backtests


class BacktestWindowing(Windowing):
    """A backtest's preprocessing: one day ahead, as a log return, by default."""

    horizon: int = field_of(Windowing, "horizon", default=1)
    target: Target = field_of(
        Windowing,
        "target",
        default="close_log_return",
        description="close: the close at t+horizon; closes: each of the next horizon closes "
        "(metrics per horizon step); mean_close: their mean; *_log_return: a network learns "
        "the same as a log return. Always scored in prices.",
    )
    val_fraction: float = field_of(
        Windowing,
        "val_fraction",
        description="Share of each network fit's training window used for validation "
        "(early stopping and the conformal intervals).",
    )


class Rolling(Section):
    """Which models a backtest scores, on which rolling origins, and how it scores."""

    model: list[BacktestModel] = Field(
        default_factory=lambda: ["stacked_lstm", *Baseline.__args__],  # type: ignore[attr-defined]
        min_length=1,
        description="Models evaluated on the same origins (repeat the option or list several): "
        "any network of the family (stacked_lstm, lstm, bilstm, cnn_lstm, lstm_attention) and "
        f"the baselines {', '.join(Baseline.__args__)} (what each one is: the README's "  # type: ignore[attr-defined]
        "Baselines table and the report's legend; moving_average reads ma_window closes, ridge "
        "the last ridge_lags log returns). naive is always scored: it is the skill reference.",
    )
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
        MA_WINDOW, ge=1, le=10_000, description="moving_average: closes averaged (trading days)."
    )
    ridge_lags: int = Field(
        RIDGE_LAGS, ge=1, le=250, description="ridge: daily log returns fed to the regression."
    )
    ridge_alpha: float = Field(
        RIDGE_ALPHA,
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

    @field_validator("model")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        return unique(value)


class BacktestTraining(Training):
    """A backtest's network fits: fewer epochs and a shorter patience by default (the
    same `epochs` setting as retrain's; one fit per origin and model, so a smaller budget)."""

    epochs: int = field_of(
        Training,
        "epochs",
        default=FOLD_EPOCHS,
        description="Maximum training epochs of each origin's fit (early stopping may end "
        "it sooner).",
    )
    patience: int = field_of(Training, "patience", default=3)


# --------------------------------------------------------------------------- how a run runs


class Storage(Section):
    """Where a run keeps its files."""

    data_dir: str = Field(
        "data", description="Root of the data lake, work files, caches and model bundles."
    )

    def resolved_dir(self) -> str:
        """data_dir made absolute (paths in step results never depend on the cwd)."""
        return str(Path(self.data_dir).resolve())


class Execution(Storage):
    """Where a run keeps its files and how its steps are cached and scheduled."""

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
        4,
        ge=1,
        le=256,
        description="Threads for the branches, or the local Dask cluster's worker "
        "processes (one TensorFlow thread each; at most one per core).",
    )
    dask_address: str | None = Field(
        None,
        description="An existing Dask scheduler (tcp://host:8786); empty = start a local "
        "cluster of max_workers processes (at most one per core).",
    )


class Mirror(Section):
    """Where a run's records are mirrored, not what it computes: never part of a version's
    metadata, a cache key, a search's identity, best.json or the params MLflow records."""

    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking server (http://host:5000, or any MLflow tracking URI) "
        "that mirrors each run: runs with params, metrics and artifacts, registered "
        "versions and the champion alias (needs the mlflow extra); empty = the "
        "MLFLOW_TRACKING_URI environment variable if set, else no MLflow.",
    )


# --------------------------------------------------------------------------- composites


def _open_schema(schema: dict[str, Any]) -> None:
    schema.pop("additionalProperties", None)


class Composite(BaseModel):
    """Sections composed under their names, each setting reachable by its flat name.

    `nest` lifts flat keys (`{"epochs": 5}`) into their section (`{"training":
    {"epochs": 5}}`); it runs before validation, so flat JSON files, CLI options and older
    deployments' parameters keep working. A flat name must be unique in a composite
    (checked when the class is defined). `model_copy(update=...)` takes flat names and
    validates the copy.
    """

    # Unknown keys are refused by validation (after `nest` lifted the flat names); the JSON
    # schema leaves them open, so Prefect's own check of a deployment's parameters lets the
    # flat names through to that validation instead of refusing them first.
    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra=lambda schema: _open_schema(schema)
    )
    # the flat name -> section name (None: a field of the composite itself)
    _leaves: ClassVar[dict[str, str | None]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        leaves: dict[str, str | None] = {}
        sections = cls.sections()
        for name in cls.model_fields:
            for leaf in sections[name].model_fields if name in sections else [name]:
                if leaf in leaves or (leaf != name and leaf in cls.model_fields):
                    raise TypeError(f"{cls.__name__}: setting {leaf!r} is in two places")
                leaves[leaf] = name if name in sections else None
        cls._leaves = leaves

    @classmethod
    def sections(cls) -> dict[str, type[Section]]:
        """The section fields, by name, in declaration order."""
        return _sections(cls)

    @classmethod
    def leaves(cls) -> dict[str, str | None]:
        """Every flat setting name -> the section holding it (None: the composite's own)."""
        return dict(cls._leaves)

    @classmethod
    def leaf_field(cls, leaf: str) -> FieldInfo:
        section = cls._leaves[leaf]
        return (cls.sections()[section] if section else cls).model_fields[leaf]

    @classmethod
    def nest(cls, data: Mapping[str, Any], override: Mapping[str, Any] | None = None) -> dict:
        """`data` with flat keys lifted into their sections; `override` (flat or nested)
        wins over `data`. A setting given twice in `data` itself, nested and flat with
        different values, is refused naming both places."""
        out = _nested(cls, dict(data))
        for key, value in _nested(cls, dict(override or {})).items():
            if key in cls.sections() and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
        return out

    @model_validator(mode="before")
    @classmethod
    def _lift(cls, data: Any) -> Any:
        return cls.complete(cls.nest(data)) if isinstance(data, Mapping) else data

    @classmethod
    def complete(cls, data: dict) -> dict:
        """A hook for composites that fill settings from others (a preset) before
        validation; `data` is nested. Nothing by default."""
        return data

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name, JSON-ready (a flat --config file, MLflow params)."""
        dumped = self.model_dump(mode="json")
        out: dict[str, Any] = {}
        for leaf, section in self._leaves.items():
            out[leaf] = dumped[section][leaf] if section else dumped[leaf]
        return out

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False):
        """A validated copy; `update` takes flat names or sections."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self).model_validate(type(self).nest(self.model_dump(), update))


@cache
def _sections(cls: type[Composite]) -> dict[str, type[Section]]:
    found = {}
    for name, info in cls.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, Section):
            found[name] = kind
    return found


def _nested(cls: type[Composite], data: dict) -> dict:
    """Flat keys of `data` moved into their section's dict (a section given as a model
    becomes its dict); keys that are no setting stay for validation to refuse."""
    sections, leaves = cls.sections(), cls.leaves()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in sections:
            out[key] = value.model_dump() if isinstance(value, BaseModel) else value
    for key, value in data.items():
        section = leaves.get(key)
        if key in sections:
            continue
        if section is None:
            out[key] = value
            continue
        held = out.setdefault(section, {})
        if not isinstance(held, Mapping):
            raise ValueError(f"{section}: expected an object of settings, got {held!r}")
        held = out[section] = dict(held)
        if key in held and held[key] != value:
            raise ValueError(
                f"{key} is given twice, as {key!r} and in {section!r}, with different values"
            )
        held[key] = value
    return out


class FitSpec(Composite):
    """Everything one network fit takes: the network, its training and where it runs."""

    network: Network = Field(default_factory=Network)
    training: Training = Field(default_factory=Training)
    compute: Compute = Field(default_factory=Compute)


class RollingSpec(Composite):
    """What one ticker's rolling-origin backtest takes: its preprocessing, models and
    origins, and what every network's fit shares."""

    preprocessing: BacktestWindowing = Field(default_factory=BacktestWindowing)
    backtest: Rolling = Field(default_factory=Rolling)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    network: Architecture = Field(default_factory=Architecture)
    training: BacktestTraining = Field(default_factory=BacktestTraining)
    compute: Compute = Field(default_factory=Compute)

    @model_validator(mode="after")
    def _consistent(self) -> RollingSpec:
        check_stacking(self.backtest.model, self.network.units)
        return self

    def fit_spec(self, model: str) -> FitSpec:
        """The fit of the network `model` of the family."""
        return FitSpec(
            network=self.network.named(model), training=self.training, compute=self.compute
        )
