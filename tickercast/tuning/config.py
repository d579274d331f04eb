"""TuneConfig: retrain's data and fixed training options plus the search space and budget.

Every RetrainConfig field a trial does not choose is inherited with its bounds and
description (`_inherited_fields`), so best.json carries it and a new retrain option
arrives here without being restated.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from tickercast.choices import ModelName, TuneAlgorithm
from tickercast.config import MIRROR_FIELDS, PREPROCESS_FIELDS, TRAIN_FIELDS, RetrainConfig, _Config

# What a trial chooses; every other RetrainConfig field is carried from the tune config.
SEARCHED = ("model", "units", "dropout", "l2", "learning_rate", "batch_size", "lookback")
OBJECTIVE = "val_mse"
RUN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Fields that shape how, where or how long a search runs, not what its trials compute: a
# rerun may change them and still resume the same search (they are not in its identity).
BUDGET_FIELDS = (
    "max_trials",
    "max_minutes",
    "parallel_trials",
    "run",
    "final_retrain",
    "final_epochs",
    "task_runner",
    "max_workers",
    "dask_address",
    "data_dir",
    "csv_dir",
    "refresh",
    "result_storage",
    "cache_expiration_days",
    "device",
    "mixed_precision",
    "tensorboard_dir",
    "walk_forward_folds",
    "walk_forward_epochs",
    "promotion_metric",
    "require_beat_naive",
    "move_threshold",
    "on_corrupt",
    *MIRROR_FIELDS,
)

Units = Annotated[int, Field(ge=1, le=4096)]
BatchSize = Annotated[int, Field(ge=1, le=65_536)]
Lookback = Annotated[int, Field(ge=1, le=1000)]


def _from_retrain(name: str, **changes) -> Any:
    """RetrainConfig's field `name` (bounds, default), with `changes` (e.g. description)."""
    info = copy.copy(RetrainConfig.model_fields[name])
    for key, value in changes.items():
        setattr(info, key, value)
    return info


class _Search(BaseModel):
    """The tune-only fields (declared here, assembled into TuneConfig below)."""

    algorithm: TuneAlgorithm = Field(
        "bayesian",
        description="bayesian: Gaussian-process Bayesian optimisation (the first "
        "initial_points trials are random); hyperband: successive halving over epochs "
        "(epochs is then the most any trial trains; later rounds continue the best "
        "earlier trials from their checkpoints).",
    )
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
    epochs: int = Field(
        20,
        ge=1,
        le=10_000,
        description="Epochs per trial, early-stopped on the validation split (hyperband: "
        "the most epochs any trial trains).",
    )
    final_epochs: int = _from_retrain(
        "epochs",
        description="best.json's epochs: the maximum for training the chosen configuration "
        "(early-stopped on the validation split, as retrain does).",
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
        default_factory=lambda: [32, 64], min_length=1, description="Batch sizes to choose from."
    )
    lookbacks: list[Lookback] = Field(
        default_factory=lambda: [20, 40, 60],
        min_length=1,
        description="Window lengths (trading days) to choose from.",
    )


def _inherited_fields() -> dict[str, Any]:
    """Every RetrainConfig field a trial does not choose, with its description, bounds and
    enum, so best.json carries each of them and a new retrain option arrives here too."""
    fields = {}
    for name in RetrainConfig.model_fields:
        if name not in SEARCHED and name not in _Search.model_fields:
            fields[name] = (RetrainConfig.model_fields[name].annotation, _from_retrain(name))
    return fields


class _TuneBase(_Config):
    """Validation of TuneConfig (its fields are assembled by create_model below); tickers
    and sine's start are checked as in every config (`_Config`)."""

    @field_validator("features", check_fields=False)
    @classmethod
    def _features(cls, value: list[str]) -> list[str]:
        return RetrainConfig._features(value)

    @field_validator("models", "units_choices", "batch_sizes", "lookbacks", check_fields=False)
    @classmethod
    def _unique(cls, value: list) -> list:
        if len(set(value)) != len(value):
            raise ValueError(f"duplicates in {value}")
        return value

    @field_validator("layers_range", check_fields=False)
    @classmethod
    def _layers(cls, value: list[int], info: ValidationInfo) -> list[int]:
        lo, hi = value
        if not 1 <= lo <= hi <= 4:
            raise ValueError(f"needs 1 <= lowest <= highest <= 4, got {value}")
        if "cnn_lstm" in (info.data.get("models") or []) and hi > 3:
            raise ValueError(
                "cnn_lstm puts its Conv1D layer in front of the LSTM layers and a model has "
                f"at most 4 layers: the highest must be <= 3, got {value}"
            )
        return value

    @field_validator("dropout_range", check_fields=False)
    @classmethod
    def _dropout(cls, value: list[float]) -> list[float]:
        lo, hi = value
        if not 0 <= lo <= hi <= 0.9:
            raise ValueError(f"needs 0 <= lowest <= highest <= 0.9, got {value}")
        return value

    @field_validator("l2_range", check_fields=False)
    @classmethod
    def _l2(cls, value: list[float]) -> list[float]:
        lo, hi = value
        if not (lo == hi == 0 or 0 < lo <= hi <= 1):
            raise ValueError(
                f"needs 0 < lowest <= highest <= 1 (log-uniform), or 0 0 for none; got {value}"
            )
        return value

    @field_validator("learning_rate_range", check_fields=False)
    @classmethod
    def _learning_rate(cls, value: list[float]) -> list[float]:
        lo, hi = value
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"needs 0 < lowest <= highest <= 1 (log-uniform), got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        # The data and fixed training options must make a valid retrain config: the same
        # checks retrain applies (csv_dir, start/end, fractions, ticker_embedding, ...).
        try:
            RetrainConfig(**self.carried())
        except ValidationError as exc:
            raise ValueError(
                "; ".join(
                    (".".join(map(str, e["loc"])) + ": " if e["loc"] else "")
                    + e["msg"].removeprefix("Value error, ")
                    for e in exc.errors()
                )
            ) from None
        return self

    def carried(self) -> dict:
        """The RetrainConfig fields this config carries unchanged (JSON-ready)."""
        dumped = self.model_dump(mode="json")
        return {k: dumped[k] for k in _inherited_fields()}

    def train_fixed(self) -> dict:
        """The training fields every trial shares (a trial adds what it chose and epochs)."""
        dumped = self.model_dump(mode="json")
        return {k: dumped[k] for k in TRAIN_FIELDS if k not in SEARCHED and k != "epochs"}

    def data_cfg(self) -> dict:
        """The preprocess slice (lookback = the longest searched: it only decides how much
        history is required; features, scalers and targets do not depend on it)."""
        dumped = self.model_dump(mode="json")
        cfg = {k: dumped[k] for k in PREPROCESS_FIELDS if k != "lookback"}
        return {**cfg, "lookback": max(self.lookbacks)}

    def identity(self) -> dict:
        """What defines the search: a rerun with the same identity resumes it."""
        dumped = self.model_dump(mode="json")
        return {k: v for k, v in dumped.items() if k not in BUDGET_FIELDS}


TuneConfig = create_model(
    "TuneConfig",
    __base__=_TuneBase,
    __module__=__name__,
    __doc__="Everything one hyperparameter search depends on: retrain's data and fixed "
    "training options plus the search space and its budget.",
    **_inherited_fields(),
    **{name: (info.annotation, copy.copy(info)) for name, info in _Search.model_fields.items()},
)
