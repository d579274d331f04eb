"""TuneConfig: retrain's sections without what a trial chooses, plus the search space and
its budget.

A trial chooses `Choice`'s settings (model, units, dropout, l2, learning rate, batch size,
lookback); every other retrain setting is carried in sections that hold the rest of
retrain's (`TuneData`, `TuneNetwork`, `TuneTraining`, each field copied from retrain's
section with `field_of`), so best.json carries each of them. What defines a search (its
`identity`, resumed by a rerun) is derived from what its steps are given.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tickercast.choices import Feature, Head, ModelName, OnGap, Target, TuneAlgorithm
from tickercast.config import Ingests, RetrainConfig, section
from tickercast.sections import (
    Composite,
    Compute,
    Evaluation,
    Execution,
    FitSpec,
    Gate,
    Mirror,
    Network,
    PreprocessSettings,
    Scope,
    Section,
    Training,
    WalkForward,
    WarmStart,
    field_of,
    unique,
)

OBJECTIVE = "val_mse"
RUN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

Units = Annotated[int, Field(ge=1, le=4096)]
BatchSize = Annotated[int, Field(ge=1, le=65_536)]
Lookback = Annotated[int, Field(ge=1, le=1000)]


class Choice(BaseModel):
    """What one trial chose: the searched settings, as retrain names them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName
    units: list[int]
    dropout: float
    l2: float
    learning_rate: float
    batch_size: int
    lookback: int


SEARCHED = tuple(Choice.model_fields)


class TuneData(Section):
    """Retrain's preprocessing but the lookback, which each trial chooses."""

    start: dt.date | None = field_of(PreprocessSettings, "start")
    end: dt.date | None = field_of(PreprocessSettings, "end")
    features: list[Feature] = field_of(PreprocessSettings, "features")
    horizon: int = field_of(PreprocessSettings, "horizon")
    target: Target = field_of(PreprocessSettings, "target")
    val_fraction: float = field_of(PreprocessSettings, "val_fraction")
    test_fraction: float = field_of(PreprocessSettings, "test_fraction")
    gap_days: int = field_of(PreprocessSettings, "gap_days")
    on_gap: OnGap = field_of(PreprocessSettings, "on_gap")

    @model_validator(mode="after")
    def _consistent(self) -> TuneData:
        self.with_lookback(1)  # the checks retrain's preprocessing makes
        return self

    def with_lookback(self, lookback: int) -> PreprocessSettings:
        return PreprocessSettings(**self.model_dump(), lookback=lookback)


class TuneNetwork(Section):
    """Retrain's network settings that no trial chooses."""

    recurrent_dropout: float = field_of(Network, "recurrent_dropout")
    head: Head = field_of(Network, "head")

    def with_choice(self, choice: Choice) -> Network:
        return Network(
            **self.model_dump(),
            model=choice.model,
            units=choice.units,
            dropout=choice.dropout,
            l2=choice.l2,
        )


class TuneTraining(Section):
    """Retrain's training settings that no trial chooses (epochs: the search's own)."""

    clipvalue: float = field_of(Training, "clipvalue")
    patience: int = field_of(Training, "patience")
    reduce_lr_patience: int = field_of(Training, "reduce_lr_patience")
    reduce_lr_factor: float = field_of(Training, "reduce_lr_factor")
    shrink: bool = field_of(Training, "shrink")
    seed: int = field_of(Training, "seed")

    def with_choice(self, choice: Choice, epochs: int) -> Training:
        return Training(
            **self.model_dump(),
            learning_rate=choice.learning_rate,
            batch_size=choice.batch_size,
            epochs=epochs,
        )


def _ordered(value: list, lowest: float, highest: float) -> list:
    lo, hi = value
    if not lowest <= lo <= hi <= highest:
        raise ValueError(f"needs {lowest} <= lowest <= highest <= {highest}, got {value}")
    return value


class SearchSpace(Section):
    """What a search explores and how: the algorithm, its space and epochs per trial."""

    algorithm: TuneAlgorithm = Field(
        "bayesian",
        description="bayesian: Gaussian-process Bayesian optimisation (the first "
        "initial_points trials are random); hyperband: successive halving over epochs "
        "(epochs is then the most any trial trains; later rounds continue the best "
        "earlier trials from their checkpoints).",
    )
    epochs: int = Field(
        20,
        ge=1,
        le=10_000,
        description="Maximum epochs per trial, early-stopped on the validation split "
        "(hyperband: the most epochs any trial trains); a search's budget, apart from "
        "final_epochs, the chosen configuration's.",
    )
    initial_points: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="bayesian: random trials before the Gaussian process steers; empty = a "
        "third of max_trials, at least 2 (fixed when a search starts).",
    )
    hyperband_factor: int = Field(
        3, ge=2, le=10, description="hyperband: reduction factor between rounds."
    )
    models: list[ModelName] = Field(
        default_factory=lambda: list(ModelName.__args__),  # type: ignore[attr-defined]
        min_length=1,
        description="Architectures searched (see retrain --model). lstm has one layer; "
        "stacked_lstm with one layer is the lstm network; cnn_lstm adds its Conv1D layer "
        "(filters from units_choices) in front of its LSTM layers.",
    )
    units_choices: list[Units] = Field(
        default_factory=lambda: [16, 32, 64, 128],
        min_length=1,
        description="Sizes each layer's units (and cnn_lstm's filters) are chosen from.",
    )
    layers_range: list[int] = Field(
        default_factory=lambda: [1, 3],
        min_length=2,
        max_length=2,
        description="Fewest and most recurrent layers (LSTM, or bidirectional LSTM).",
    )
    dropout_range: list[float] = Field(
        default_factory=lambda: [0.0, 0.3],
        min_length=2,
        max_length=2,
        description="Dropout after each recurrent layer: lowest and highest (uniform).",
    )
    l2_range: list[float] = Field(
        default_factory=lambda: [1e-6, 1e-3],
        min_length=2,
        max_length=2,
        description="L2 kernel regularisation: lowest and highest, searched log-uniformly; "
        "0 0 = no L2.",
    )
    learning_rate_range: list[float] = Field(
        default_factory=lambda: [1e-4, 1e-2],
        min_length=2,
        max_length=2,
        description="Adam learning rate: lowest and highest, searched log-uniformly.",
    )
    batch_sizes: list[BatchSize] = Field(
        default_factory=lambda: [32, Training.model_fields["batch_size"].default],
        min_length=1,
        description="Batch sizes to choose from (Keras' 32 and retrain's default, whose "
        "learning rate lies inside learning_rate_range).",
    )
    lookbacks: list[Lookback] = Field(
        default_factory=lambda: [20, 40, 60],
        min_length=1,
        description="Window lengths (trading days) to choose from.",
    )

    @field_validator("models", "units_choices", "batch_sizes", "lookbacks")
    @classmethod
    def _unique(cls, value: list) -> list:
        return unique(value)

    @field_validator("layers_range")
    @classmethod
    def _layers(cls, value: list[int], info: ValidationInfo) -> list[int]:
        _ordered(value, 1, 4)
        if "cnn_lstm" in (info.data.get("models") or []) and value[1] > 3:
            raise ValueError(
                "cnn_lstm puts its Conv1D layer in front of the LSTM layers and a model has "
                f"at most 4 layers: the highest must be <= 3, got {value}"
            )
        return value

    @field_validator("dropout_range")
    @classmethod
    def _dropout(cls, value: list[float]) -> list[float]:
        return _ordered(value, 0, 0.9)

    @field_validator("l2_range")
    @classmethod
    def _l2(cls, value: list[float]) -> list[float]:
        lo, hi = value
        if not (lo == hi == 0 or 0 < lo <= hi <= 1):
            raise ValueError(
                f"needs 0 < lowest <= highest <= 1 (log-uniform), or 0 0 for none; got {value}"
            )
        return value

    @field_validator("learning_rate_range")
    @classmethod
    def _learning_rate(cls, value: list[float]) -> list[float]:
        lo, hi = value
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"needs 0 < lowest <= highest <= 1 (log-uniform), got {value}")
        return value


class Budget(Section):
    """How long this invocation searches, its name, and what happens after: how, where or
    how long a search runs, never what its trials compute (a rerun may change these and
    resume the same search)."""

    max_trials: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Trial budget of the search, counting trials already run in it: a "
        "rerun with a larger value extends the same search.",
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description="Wall-time budget of this invocation in minutes: no trial starts after "
        "it (trials in flight finish); empty = none.",
    )
    parallel_trials: int = Field(
        1,
        ge=1,
        le=256,
        description="Trials in flight at once, each a Prefect task on the task runner "
        "(threads: they take turns training in this process; dask: one per worker).",
    )
    run: str | None = Field(
        None,
        pattern=RUN_PATTERN,
        description="Name of the search (folder <data_dir>/tuning/<run>); empty = "
        "<algorithm>-<hash of the search's settings and data>, so running the same search "
        "again resumes it.",
    )
    final_retrain: bool = Field(
        True,
        description="After the search, run retrain once with best.json: train, evaluate on "
        "the test split (the retrain report), export and the champion gate. Off: stop at "
        "best.json.",
    )
    final_epochs: int = field_of(
        Training,
        "epochs",
        description="best.json's epochs: the maximum for training the chosen configuration "
        "(early-stopped on the validation split, as retrain does); apart from the trials' "
        "epochs, which are the search's budget.",
    )


class TrialSettings(Composite):
    """What every trial of a search shares; a trial's `Choice` completes it (`fit`)."""

    network: TuneNetwork = Field(default_factory=TuneNetwork)
    scope: Scope = Field(default_factory=Scope)
    training: TuneTraining = Field(default_factory=TuneTraining)
    compute: Compute = Field(default_factory=Compute)

    def fit(self, choice: Choice, epochs: int) -> FitSpec:
        return FitSpec(
            network=self.network.with_choice(choice),
            training=self.training.with_choice(choice, epochs),
            compute=self.compute,
        )


class TuneConfig(Ingests):
    """Everything one hyperparameter search depends on: retrain's data and fixed
    training options plus the search space and its budget."""

    preprocessing: TuneData = section(TuneData)
    network: TuneNetwork = section(TuneNetwork)
    scope: Scope = section(Scope)
    training: TuneTraining = section(TuneTraining)
    compute: Compute = section(Compute)
    warm: WarmStart = section(WarmStart)
    evaluation: Evaluation = section(Evaluation)
    search: SearchSpace = section(SearchSpace)
    budget: Budget = section(Budget)
    walk_forward: WalkForward = section(WalkForward)
    gate: Gate = section(Gate)
    execution: Execution = section(Execution)
    mirror: Mirror = section(Mirror)

    def data_spec(self) -> PreprocessSettings:
        """The search data's preprocessing: the longest searched lookback (it only decides
        how much history is required; features, scalers and targets do not depend on it)."""
        return self.preprocessing.with_lookback(max(self.search.lookbacks))

    def trial_settings(self) -> TrialSettings:
        return TrialSettings(
            network=self.network, scope=self.scope, training=self.training, compute=self.compute
        )

    def identity(self) -> dict[str, Any]:
        """What defines the search, by setting name, derived from what its steps are
        given: the search data's preprocessing (its lookback is the longest of the
        space's), the settings its trials share (but where they run: a search resumes on
        another device) and the space. Where prices came from is the search data's content
        (hashed beside this); the budget, the gate, the walk-forward, the warm start and the
        shipped band (the tuned retrain's) and how the run executes shape best.json or the
        run, never a trial."""
        trials = self.trial_settings().model_dump(mode="json", exclude={"compute"})
        parts = [self.preprocessing.model_dump(mode="json"), *trials.values()]
        return {
            k: v for part in [*parts, self.search.model_dump(mode="json")] for k, v in part.items()
        }

    def retrain(self, choice: Choice) -> RetrainConfig:
        """The retrain config of `choice` (best.json): this config's sections completed
        by the choice, best.json's epochs, and no refresh."""
        return RetrainConfig(
            tickers=self.tickers,
            preset=self.preset,
            data=self.data,
            ingest=self.ingest,
            preprocessing=self.preprocessing.with_lookback(choice.lookback),
            network=self.network.with_choice(choice),
            scope=self.scope,
            training=self.training.with_choice(choice, self.budget.final_epochs),
            compute=self.compute,
            warm=self.warm,
            walk_forward=self.walk_forward,
            evaluation=self.evaluation,
            gate=self.gate,
            execution=self.execution.model_copy(update={"refresh": False}),
            mirror=self.mirror,
        )
