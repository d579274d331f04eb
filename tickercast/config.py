"""The flows' typed parameters, composed of sections (`tickercast.sections`): retrain
(`RetrainConfig`), ingest (`IngestConfig`), predict (`PredictConfig`) and backtest
(`BacktestConfig`); tune's is `tickercast.tuning.config.TuneConfig`.

Every field carries a description, bounds and enums, so the Prefect UI renders a usable
form (one group per section), the CLI generates its options from it (one per setting,
by its flat name), and bad values are refused before any work starts. A flow hands each
stage its own sections; nothing downstream slices a config or restates a default.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from tickercast.choices import FailOn, Preset
from tickercast.sections import (
    Architecture,
    BacktestTraining,
    BacktestWindowing,
    Composite,
    Compute,
    DataSource,
    Evaluation,
    Execution,
    Fetching,
    FetchWindow,
    FitSpec,
    Gate,
    IngestChecks,
    Mirror,
    Network,
    PreprocessSettings,
    Rolling,
    RollingSpec,
    Scope,
    Section,
    Storage,
    Training,
    WalkForward,
    WarmStart,
    field_of,
)
from tickercast.tickers import validate_ticker

# `--preset tutorial`: the reference tutorial's inputs, target and no shrinkage. The
# sections' own defaults are the recommended preset.
PRESETS: dict[str, dict[str, Any]] = {
    "recommended": {},
    "tutorial": {
        "features": ["close", "volume"],
        "target": "mean_close",
        "shrink": False,
        "head": "point",
        "band": "volatility_conformal",
        "batch_size": 32,
        "learning_rate": 1e-3,
    },
}
PRESET_HELP = (
    "recommended: scale-free inputs (daily log return, 20-day volatility), a target "
    "relative to the last close, and the forecast shrunk toward the last close by a factor "
    "fit on the validation split; tutorial: the reference tutorial exactly (close + volume "
    "min-max scaled on training rows, mean_close, no shrinkage). Options given explicitly "
    "override the preset."
)
TICKERS_HELP = "Ticker symbols in Yahoo's alphabet (letters, digits, . - ^ =)."
# Where a run's records are mirrored (`Mirror`): kept out of metadata, best.json and the
# params MLflow records.
MIRROR_FIELDS = tuple(Mirror.model_fields)


def tickers_field(**changes: Any) -> Any:
    """The `tickers` setting (a non-empty list by default); `changes` as `Field` takes."""
    options: dict[str, Any] = {
        "default_factory": lambda: ["AAPL"],
        "min_length": 1,
        "max_length": 500,
        "description": TICKERS_HELP,
    }
    return Field(**{**options, **changes})


def section(kind: type[Section]) -> Any:
    """A config's section field, defaulting to the section's defaults; the UI form
    describes it with the section's docstring."""
    return Field(default_factory=kind)


class _Config(Composite):
    """What every flow's one parameter shares: `tickers` checked the same way wherever
    a config has them, a preset filling what was not given, and the sine wave's start."""

    @field_validator("tickers", check_fields=False)
    @classmethod
    def _tickers(cls, value: list[str]) -> list[str]:
        symbols = [validate_ticker(t) for t in value]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"duplicate tickers in {symbols}")
        return symbols

    @classmethod
    def complete(cls, data: dict) -> dict:
        leaves = cls.leaves()
        if "preset" in leaves:  # a preset fills the settings it names unless given
            for leaf, value in PRESETS.get(data.get("preset", "recommended"), {}).items():
                if leaf in leaves:  # a config without the setting (a backtest's head) skips it
                    _fill(data, leaves[leaf], leaf, value)
        source = data.get("data", {})
        if isinstance(source, dict) and source.get("source") == "sine" and "start" in leaves:
            # The sine wave's synthetic days begin in 2000: a default start (2015) would
            # leave no rows. An explicit start is kept.
            _fill(data, leaves["start"], "start", None)
        return data


def _fill(data: dict, section: str | None, leaf: str, value: Any) -> None:
    """Set a setting of nested `data` unless it was given."""
    if section is None:
        data.setdefault(leaf, value)
    elif isinstance(data.setdefault(section, {}), dict):
        data[section].setdefault(leaf, value)


class Ingests(_Config):
    """What every config that ingests its tickers and then trains starts with."""

    tickers: list[str] = tickers_field()
    preset: Preset = Field("recommended", description=PRESET_HELP)
    data: DataSource = section(DataSource)
    ingest: IngestChecks = section(IngestChecks)


class RetrainConfig(Ingests):
    """Everything one retrain run depends on. The defaults are the recommended settings
    (scale-free inputs, a target relative to the last close, shrinkage toward naive);
    `preset="tutorial"` gives the reference tutorial's inputs, target and no shrinkage."""

    preprocessing: PreprocessSettings = section(PreprocessSettings)
    network: Network = section(Network)
    scope: Scope = section(Scope)
    training: Training = section(Training)
    compute: Compute = section(Compute)
    warm: WarmStart = section(WarmStart)
    walk_forward: WalkForward = section(WalkForward)
    evaluation: Evaluation = section(Evaluation)
    gate: Gate = section(Gate)
    execution: Execution = section(Execution)
    mirror: Mirror = section(Mirror)

    def fit_spec(self) -> FitSpec:
        """What the train steps take."""
        return FitSpec(network=self.network, training=self.training, compute=self.compute)

    def recorded(self) -> dict[str, Any]:
        """What a version's metadata records of its config: every setting by its flat
        name, except where runs are mirrored."""
        return {k: v for k, v in self.flat().items() if k not in Mirror.model_fields}


class IngestExecution(Storage):
    """Where the ingest flow writes, how many tickers at once, and when it fails."""

    data_dir: str = field_of(
        Execution, "data_dir", description="Root of the data lake (lake/prices, lake/events)."
    )
    refresh: bool = field_of(
        Execution,
        "refresh",
        description="Re-ingest offline sources even when their file is unchanged.",
    )
    max_workers: int = field_of(
        Execution,
        "max_workers",
        description="Tickers ingested at once (threads; a ticker's partition is written by "
        "one thread only).",
    )
    fail_on: FailOn = Field(
        "all",
        description="When the run ends Failed: all = every ticker failed; any = at least one "
        "did; never = only the per-ticker report tells.",
    )


class IngestConfig(_Config):
    """Everything one ingest run depends on (the `ingest` flow's one parameter)."""

    tickers: list[str] = tickers_field(
        default_factory=list,
        min_length=0,
        max_length=5000,
        description=f"{TICKERS_HELP} Not given: every CSV in csv_dir (source csv) or every "
        "bundled sample ticker (source sample).",
    )
    data: DataSource = section(DataSource)
    window: FetchWindow = section(FetchWindow)
    ingest: Fetching = section(Fetching)
    execution: IngestExecution = section(IngestExecution)

    @model_validator(mode="after")
    def _consistent(self) -> IngestConfig:
        source = self.data.source
        if source in ("yfinance", "sine") and not self.tickers:
            raise ValueError(f"source {source!r} needs tickers")
        if source != "yfinance" and self.window.given():
            raise ValueError(
                f"start, end and period apply to source 'yfinance'; source {source!r} "
                "is ingested whole (retrain applies its dates later)"
            )
        return self


class PredictExecution(Storage):
    """Where the lake and the model registry are."""

    data_dir: str = field_of(
        Execution, "data_dir", description="Root of the data lake and the model registry."
    )


class PredictConfig(_Config):
    """The `predict` flow's one parameter: which champions forecast, from which lake."""

    tickers: list[str] = tickers_field(
        default_factory=list,
        min_length=0,
        description="Tickers whose champion model forecasts the next horizon (none given: "
        "every ticker with a champion under the data dir).",
    )
    execution: PredictExecution = section(PredictExecution)


class BacktestExecution(Storage):
    """Where the run keeps its files, and whether cached steps are recomputed."""

    data_dir: str = field_of(Execution, "data_dir")
    refresh: bool = field_of(Execution, "refresh")


class BacktestConfig(Ingests):
    """The `backtest` flow's one parameter: rolling-origin evaluation of several models."""

    preprocessing: BacktestWindowing = section(BacktestWindowing)
    backtest: Rolling = section(Rolling)
    evaluation: Evaluation = section(Evaluation)
    network: Architecture = section(Architecture)
    training: BacktestTraining = section(BacktestTraining)
    compute: Compute = section(Compute)
    execution: BacktestExecution = section(BacktestExecution)
    mirror: Mirror = section(Mirror)

    @model_validator(mode="after")
    def _consistent(self) -> BacktestConfig:
        from tickercast.backtest.initial import check_rolling

        check_rolling(self.preprocessing, self.backtest, self.network)
        return self

    def rolling_spec(self) -> RollingSpec:
        """What each ticker's backtest takes (the rolling-backtest step's input)."""
        return RollingSpec(
            preprocessing=self.preprocessing,
            backtest=self.backtest,
            evaluation=self.evaluation,
            network=self.network,
            training=self.training,
            compute=self.compute,
        )
