"""Hyperparameter search with Keras Tuner: the config, the search space, the oracle and
one trial's training. The `tune` flow (flows/tune.py) only composes these.

The flow asks a Keras Tuner oracle (Bayesian optimisation or Hyperband) for trials, runs
each as a Prefect task and reports the result back. Everything a search knows lives in
`<data_dir>/tuning/<run>/`: the oracle's state (`oracle.json`, `trial_NNNN/trial.json`,
written atomically), each trial's training folder and `result.json`, so a rerun of the
same run reloads it and runs only what is missing.

Selection never sees the test split: trials read a search file per ticker holding only
the rows up to the end of the validation split, with every target that would reach a
test day blanked (`search_data`). The chosen configuration is evaluated on the test
split once, afterwards, by the retrain flow (`best.json`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from tasks.atomic import atomic_path, write_json
from tasks.config import PREPROCESS_FIELDS, TRAIN_FIELDS, ModelName, RetrainConfig, _Config
from tasks.hashing import json_sha256

Logger = logging.Logger | logging.LoggerAdapter

# What a trial chooses; every other RetrainConfig field is carried from the tune config.
SEARCHED = ("model", "units", "dropout", "l2", "learning_rate", "batch_size", "lookback")
OBJECTIVE = "val_mse"
TUNING = "tuning"
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

    algorithm: Literal["bayesian", "hyperband"] = Field(
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


# --- the search space ----------------------------------------------------------------


def _multi_layer(models: list[str]) -> list[str]:
    return [m for m in models if m != "lstm"]


def search_space(config: TuneConfig):
    """Keras Tuner hyperparameters for `config`'s space.

    `layers` exists only for models that can stack (not lstm) and `units_i` only for the
    layers a trial has, so no value is drawn that the trained network would ignore.
    """
    import keras_tuner as kt

    hp = kt.HyperParameters()

    def choice(name: str, values: list):
        values = sorted(set(values))
        return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)

    def uniform(name: str, lo: float, hi: float, log: bool):
        if lo == hi:
            return hp.Fixed(name, float(lo))
        return hp.Float(name, float(lo), float(hi), sampling="log" if log else "linear")

    choice("model", list(config.models))
    choice("lookback", list(config.lookbacks))
    choice("batch_size", list(config.batch_sizes))
    uniform("learning_rate", *config.learning_rate_range, log=True)
    uniform("dropout", *config.dropout_range, log=False)
    if config.l2_range[1] == 0:
        hp.Fixed("l2", 0.0)
    else:
        uniform("l2", *config.l2_range, log=True)
    if "cnn_lstm" in config.models:
        with hp.conditional_scope("model", ["cnn_lstm"]):
            choice("filters", list(config.units_choices))
    choice("units_0", list(config.units_choices))
    lo, hi = config.layers_range
    multi = _multi_layer(config.models)
    if multi:
        with hp.conditional_scope("model", multi):
            if lo == hi:
                hp.Fixed("layers", lo)
            else:
                hp.Int("layers", lo, hi)
            for i in range(1, hi):
                with hp.conditional_scope("layers", list(range(i + 1, hi + 1))):
                    choice(f"units_{i}", list(config.units_choices))
    return hp


def settings_from_values(values: dict) -> dict:
    """A trial's hyperparameter values as the RetrainConfig fields they stand for."""
    model = values["model"]
    layers = 1 if model == "lstm" else int(values.get("layers", 1))
    units = [int(values[f"units_{i}"]) for i in range(layers)]
    if model == "stacked_lstm" and layers == 1:
        model = "lstm"  # the same network; retrain's stacked_lstm needs two layers
    if model == "cnn_lstm":
        units = [int(values["filters"]), *units]
    return {
        "model": model,
        "units": units,
        "dropout": float(values["dropout"]),
        "l2": float(values["l2"]),
        "learning_rate": float(values["learning_rate"]),
        "batch_size": int(values["batch_size"]),
        "lookback": int(values["lookback"]),
    }


def best_config(config: TuneConfig, settings: dict) -> dict:
    """best.json: a RetrainConfig (validated) with the chosen settings, JSON-ready."""
    fields = {**config.carried(), **settings, "epochs": config.final_epochs, "refresh": False}
    return RetrainConfig(**fields).model_dump(mode="json")


# --- where a search lives ------------------------------------------------------------


def run_name(config: TuneConfig, data: list[dict]) -> str:
    """The explicit --run, else <algorithm>-<hash of identity and search data>."""
    if config.run:
        return config.run
    digest = json_sha256({"search": config.identity(), "data": [d["content"] for d in data]})
    return f"{config.algorithm}-{digest[:12]}"


def open_run(config: TuneConfig, data_dir: str | Path, data: list[dict]) -> Path:
    """`<data_dir>/tuning/<run>/`, created with search.json, or checked against it.

    Reusing a run for a different search (other space, epochs, algorithm or data) would
    mix incomparable trials, so it is refused naming what differs.
    """
    run = run_name(config, data)
    run_dir = Path(data_dir) / TUNING / run
    identity = {
        "search": config.identity(),
        "data": {d["ticker"]: d["content"] for d in data},
    }
    marker = run_dir / "search.json"
    if marker.is_file():
        stored = json.loads(marker.read_text())
        if stored != identity:
            before, now = stored.get("search", {}), identity["search"]
            differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if stored.get("data") != identity["data"]:
                differ.append("the search data (prices, dates or split)")
            raise ValueError(
                f"run {run!r} ({run_dir}) holds a different search: {', '.join(differ)} "
                "differ; choose another --run, or delete that folder to start over"
            )
    else:
        write_json(marker, identity)
    return run_dir


# --- search data: train + validation rows only ---------------------------------------


def search_data(prices, cfg: dict, who: str) -> tuple[dict, dict]:
    """The rows a search may see: preprocessed exactly as retrain does (same features,
    train-only scalers, same split), cut after the last validation row, with each target
    whose days reach past it set to NaN. Nothing in the result depends on a test-split
    value (tests/test_tune_flow.py proves it by poisoning them)."""
    from tasks.preprocess import preprocess

    spec, arrays = preprocess(prices, cfg, who)
    rows = spec.n_train + spec.n_val
    x = np.ascontiguousarray(arrays["x"][:rows])
    y = np.array(arrays["y"][:rows], dtype=np.float32)
    # row t's target covers days t+1..t+horizon: from rows - horizon on it needs a test day
    y[max(rows - spec.horizon, 0) :] = np.nan
    meta = {
        "rows": rows,
        "n_train": spec.n_train,
        "n_val": spec.n_val,
        "horizon": spec.horizon,
        "features": spec.features,
        "target": spec.target,
        "first_day": spec.first_day,
        "train_end": spec.train_end,
        "val_end": spec.val_end,
    }
    return {"x": x, "y": y}, meta


def content_hash(arrays: dict, meta: dict) -> str:
    """sha256 of the search data's values (not of the .npz, whose zip records a time)."""
    import hashlib

    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def save_search_data(out_dir: Path, arrays: dict, meta: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "search.npz"
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_search_data(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with np.load(path, allow_pickle=False) as data:
        return data["x"], data["y"], json.loads(str(data["meta"]))


def search_anchors(meta: dict, lookback: int, y: np.ndarray) -> dict[str, np.ndarray]:
    """Train and validation anchors for `lookback` (the split retrain uses), checked to
    stay inside the search rows with known targets: a tripwire, never expected to fire."""
    from tasks.windows import split_anchors

    rows = meta["rows"]
    anchors = split_anchors(rows, meta["n_train"], meta["n_val"], lookback, meta["horizon"])
    anchors["test"] = np.empty(0, np.int64)
    for split in ("train", "val"):
        a = anchors[split]
        if not len(a):
            raise ValueError(f"no {split} windows for lookback {lookback}")
        if a.max() >= rows or not np.isfinite(y[a]).all():
            raise RuntimeError(f"{split} window reaches past the validation split")
    return anchors


# --- one trial -----------------------------------------------------------------------


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def _copy_checkpoint(source: Path, out: Path, logger: Logger) -> None:
    """Hyperband's next round continues a trial: start from its last checkpoint. Training
    from scratch would end identically (per-epoch seeded shuffles, resumable callbacks),
    only slower, so a missing checkpoint is not an error."""
    from tasks.train import CHECKPOINTS, latest_checkpoint

    if latest_checkpoint(out) is not None:
        return  # this trial's own, newer checkpoint (it was interrupted)
    last = latest_checkpoint(source)
    if last is None:
        logger.warning("no checkpoint in %s: training from the first epoch", source)
        return
    target = out / CHECKPOINTS / last.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(last, target)


def _val_mse(model, data, lookback: int, batch_size: int) -> float:
    """Validation MSE of the restored best weights, in scaled target units. Keras'
    val_loss adds the L2 penalty, which would favour small l2 whatever the fit."""
    from tasks.windows import make_dataset

    ds = make_dataset(
        data.x, data.y, data.val, lookback, batch_size, ticker_offsets=data.ticker_offsets
    )
    # eager calls: model.predict would trace a new function for every trial's model
    predicted = np.concatenate([np.asarray(model(inputs, training=False)) for inputs, _ in ds])
    predicted = predicted.astype(np.float64)
    actual = np.asarray(data.y[data.val], dtype=np.float64)
    return float(np.mean((predicted.reshape(actual.shape) - actual) ** 2))


def _fit_part(
    data,
    lookback: int,
    cfg: dict,
    out: Path,
    resume_from: Path | None,
    keep_checkpoints: bool,
    logger: Logger,
    label: str,
    callbacks,
) -> dict:
    from tasks.train import CHECKPOINTS, fit

    if resume_from is not None:
        _copy_checkpoint(resume_from, out, logger)
    summary, model = fit(data, lookback, cfg, out, logger, callbacks, label)
    part = {
        "val_mse": _val_mse(model, data, lookback, int(cfg["batch_size"])),
        "val_loss": summary["best_val_loss"],
        **{
            k: summary[k]
            for k in (
                "epochs_run",
                "best_epoch",
                "stopped_early",
                "resumed_from_epoch",
                "train_seconds",
                "train_windows",
                "val_windows",
                "parameters",
                "history",
            )
        },
    }
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    write_json(out / "part.json", part)
    return part


def run_trial(
    spec: dict,
    data: list[dict],
    cfg: dict,
    trial_dir: str | Path,
    logger: Logger | None = None,
    callbacks=(),
) -> dict:
    """Train one trial's configuration on the search data; returns its validation MSE.

    `spec` = {trial_id, settings (searched RetrainConfig fields), epochs, resume_from}.
    The network, seed, callbacks and batches are those retrain's train step uses for the
    same config, on the same training and validation windows. Per ticker (or one global
    model) in `trial_dir/train/<part>/`; with several tickers the objective is the mean of
    their validation MSEs. An interrupted trial resumes from its checkpoints; a finished
    one (`result.json` for the same inputs) is returned as it is.
    """
    logger = logger or logging.getLogger(__name__)
    trial_dir = Path(trial_dir)
    key = json_sha256({"spec": spec, "data": [d["content"] for d in data], "cfg": cfg})
    done = trial_dir / "result.json"
    if done.is_file():
        stored = json.loads(done.read_text())
        if stored.get("key") == key:
            logger.info("trial %s had already finished: %s", spec["trial_id"], done)
            return {**stored, "reused": True}
    started, started_at = time.perf_counter(), _now()
    settings = spec["settings"]
    lookback = int(settings["lookback"])
    train_cfg = {
        **cfg,
        **{k: v for k, v in settings.items() if k != "lookback"},
        "epochs": int(spec["epochs"]),
    }
    keep = bool(cfg.get("keep_checkpoints", False))
    past = Path(spec["resume_from"]) / "train" if spec.get("resume_from") else None
    parts: dict[str, dict] = {}
    if cfg.get("mode") == "global":
        from tasks.train import global_data

        loaded = [load_search_data(d["search"]) for d in data]

        def load(i: int):
            x, y, meta = loaded[i]
            return x, y, search_anchors(meta, lookback, y)

        stacked = global_data(
            [m["rows"] for *_, m in loaded],
            load,
            with_ticker_ids=int(cfg.get("ticker_embedding", 0)) > 0,
        )
        parts["global"] = _fit_part(
            stacked,
            lookback,
            train_cfg,
            trial_dir / "train" / "global",
            past / "global" if past else None,
            keep,
            logger,
            f"trial {spec['trial_id']} global",
            callbacks,
        )
    else:
        from tasks.train import TrainData

        for d in data:
            name = _slug(d["ticker"])
            x, y, meta = load_search_data(d["search"])
            anchors = search_anchors(meta, lookback, y)
            parts[d["ticker"]] = _fit_part(
                TrainData(x, y, anchors["train"], anchors["val"]),
                lookback,
                train_cfg,
                trial_dir / "train" / name,
                past / name if past else None,
                keep,
                logger,
                f"trial {spec['trial_id']} {d['ticker']}",
                callbacks,
            )
    values = [p["val_mse"] for p in parts.values()]
    losses = [p["val_loss"] for p in parts.values() if p["val_loss"] is not None]
    result = {
        "key": key,
        "trial_id": spec["trial_id"],
        "settings": settings,
        "epochs": int(spec["epochs"]),
        "resume_from": spec.get("resume_from"),
        OBJECTIVE: float(np.mean(values)),
        "val_loss": float(np.mean(losses)) if losses else None,
        "epochs_run": max(p["epochs_run"] for p in parts.values()),
        "best_epoch": max(p["best_epoch"] for p in parts.values()),
        "seconds": round(time.perf_counter() - started, 3),
        "started": started_at,
        "finished": _now(),
        "parts": {k: {n: v for n, v in p.items() if n != "history"} for k, p in parts.items()},
        "history": {k: p["history"] for k, p in parts.items()},
    }
    write_json(done, result)
    logger.info(
        "trial %s: %s units %s lookback %d: val_mse %.6g after %d epoch(s), %.1f s",
        spec["trial_id"],
        settings["model"],
        settings["units"],
        lookback,
        result[OBJECTIVE],
        result["epochs_run"],
        result["seconds"],
    )
    return {**result, "reused": False}


# --- the oracle ----------------------------------------------------------------------


def _oracle_class(algorithm: str):
    """Keras Tuner's oracle for `algorithm`, saving its state atomically (a kill mid-save
    keeps the previous file) and, for Bayesian optimisation, with its random stream, so a
    resumed search proposes what the uninterrupted one would have."""
    import keras_tuner as kt

    base = {
        "bayesian": kt.oracles.BayesianOptimizationOracle,
        "hyperband": kt.oracles.HyperbandOracle,
    }[algorithm]

    def dump(path: str | Path, state: dict) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(state))

    class Oracle(base):
        def save(self):
            dump(self._get_oracle_fname(), self.get_state())

        def _save_trial(self, trial):
            dump(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", trial.get_state())

        def get_state(self):
            state = super().get_state()
            stream = getattr(self, "_random_state", None)
            if stream is not None:
                name, keys, pos, has_gauss, cached = stream.get_state()
                state["tickercast_random_state"] = [
                    name,
                    keys.tolist(),
                    int(pos),
                    int(has_gauss),
                    float(cached),
                ]
            return state

        def set_state(self, state):
            super().set_state(state)
            saved = state.get("tickercast_random_state")
            if saved and getattr(self, "_random_state", None) is not None:
                name, keys, pos, has_gauss, cached = saved
                self._random_state.set_state(
                    (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
                )

        def end_trial(self, trial):
            super().end_trial(trial)
            # keras-tuner saves before it drops the trial from ongoing_trials: saved as it
            # is, a reload would take the last finished trial for an interrupted one
            self.save()

        def populate_space(self, trial_id):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scikit-learn's GP fitting chatter
                return super().populate_space(trial_id)

    return Oracle


def make_oracle(config: TuneConfig, run_dir: Path):
    """The oracle of `run_dir`, reloaded when the search has state there.

    The trial budget is counted by `Search` (the same way for both algorithms), so the
    oracle itself is unbounded and its trial ids keep one width (0000, 0001, ...).
    """
    import keras_tuner as kt

    common = {
        "objective": kt.Objective(OBJECTIVE, direction="min"),
        "hyperparameters": search_space(config),
        "allow_new_entries": False,
        "tune_new_entries": False,
        "seed": config.seed + 1,  # keras-tuner replaces a seed of 0 with a random one
        "max_retries_per_trial": 1,
        "max_consecutive_failed_trials": 3,
    }
    cls = _oracle_class(config.algorithm)
    if config.algorithm == "bayesian":
        initial = config.initial_points or max(2, config.max_trials // 3)
        oracle = cls(max_trials=None, num_initial_points=initial, **common)
    else:
        oracle = cls(
            max_epochs=config.epochs,
            factor=config.hyperband_factor,
            hyperband_iterations=None,  # until the trial or time budget ends
            **common,
        )
    oracle.verbose = 0  # the flow logs each trial itself
    oracle._set_project_dir(str(run_dir.parent), run_dir.name)
    if (run_dir / "oracle.json").is_file():
        oracle.reload()  # trials RUNNING when the last run stopped go to the retry queue
        oracle._retry_queue = [
            t for t in oracle._retry_queue if oracle.trials[t].status not in ("COMPLETED", "FAILED")
        ]
        queued = set(oracle._retry_queue)
        for trial_id, trial in sorted(oracle.trials.items()):
            # killed between saving a new trial and saving the oracle: run it again
            if trial.status == "RUNNING" and trial_id not in queued:
                oracle._retry_queue.insert(0, trial_id)
    return oracle


@dataclass
class Proposal:
    """A trial to run: what the flow submits as a task."""

    trial_id: str
    values: dict
    settings: dict
    epochs: int
    resume_from: str | None = None
    retry: bool = False

    def spec(self) -> dict:
        return {
            "trial_id": self.trial_id,
            "settings": self.settings,
            "epochs": self.epochs,
            "resume_from": self.resume_from,
        }


@dataclass
class Search:
    """Drives the oracle from the flow's thread only (Keras Tuner's oracle is not meant
    to be shared between threads); trials report back through `record` / `fail`."""

    config: TuneConfig
    run_dir: Path
    oracle: Any = None
    deadline: float | None = None
    ran: list[str] = field(default_factory=list)
    stop_reason: str | None = None

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.oracle = make_oracle(self.config, self.run_dir)
        if self.config.max_minutes:
            self.deadline = time.monotonic() + 60.0 * self.config.max_minutes

    def trial_dir(self, trial_id: str) -> Path:
        return self.run_dir / f"trial_{trial_id}"

    def propose(self, slot: str) -> Proposal | Literal["idle", "stopped", "budget"]:
        """The next trial for a free slot; 'idle' = wait for a running trial first,
        'stopped' = the algorithm has nothing left, 'budget' = trials or time used up."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop_reason = f"time budget of {self.config.max_minutes} minutes reached"
            return "budget"
        retry = bool(self.oracle._retry_queue)
        if not retry and len(self.oracle.trials) >= self.config.max_trials:
            self.stop_reason = f"trial budget of {self.config.max_trials} reached"
            return "budget"
        trial = self.oracle.create_trial(slot)
        if trial.status == "IDLE":
            return "idle"
        if trial.status == "STOPPED":
            self.stop_reason = "the algorithm has no trial left to propose"
            return "stopped"
        values = dict(trial.hyperparameters.values)
        past = values.get("tuner/trial_id")
        return Proposal(
            trial_id=trial.trial_id,
            values=values,
            settings=settings_from_values(values),
            epochs=int(values.get("tuner/epochs", self.config.epochs)),
            resume_from=str(self.trial_dir(past)) if past else None,
            retry=retry,
        )

    def record(self, trial_id: str, result: dict) -> None:
        from keras_tuner.src.engine.trial import TrialStatus

        trial = self.oracle.get_trial(trial_id)
        value = result[OBJECTIVE]
        self.oracle.update_trial(trial_id, {OBJECTIVE: value}, step=result["epochs_run"])
        trial.status = TrialStatus.COMPLETED if math.isfinite(value) else TrialStatus.INVALID
        self.oracle.end_trial(trial)
        self.ran.append(trial_id)

    def fail(self, trial_id: str, error: BaseException) -> None:
        """A divergence is the configuration's result (FAILED, never retried); any other
        error is retried once. Three failed trials in a row stop the search."""
        from keras_tuner.src.engine.trial import TrialStatus

        from tasks.train import TrainingDivergedError

        trial = self.oracle.get_trial(trial_id)
        diverged = isinstance(error, TrainingDivergedError)
        trial.status = TrialStatus.FAILED if diverged else TrialStatus.INVALID
        trial.message = f"{type(error).__name__}: {error}".splitlines()[0]
        self.ran.append(trial_id)
        try:
            self.oracle.end_trial(trial)
        except RuntimeError as exc:  # keras-tuner's consecutive-failure limit
            raise RuntimeError(
                f"search stopped: {self.oracle.max_consecutive_failed_trials} trials in a "
                f"row failed; the last: {trial.message}"
            ) from exc

    def best(self):
        done = [t for t in self.oracle.trials.values() if t.status == "COMPLETED"]
        if not done:
            return None
        return min(done, key=lambda t: (t.score, int(t.trial_id)))

    def rows(self) -> list[dict]:
        """Every trial: its hyperparameters, validation MSE and loss, epochs and time."""
        best = self.best()
        pending = set(self.oracle._retry_queue)
        rows = []
        for trial_id in sorted(self.oracle.trials, key=int):
            trial = self.oracle.trials[trial_id]
            values = dict(trial.hyperparameters.values)
            result_path = self.trial_dir(trial_id) / "result.json"
            result = json.loads(result_path.read_text()) if result_path.is_file() else {}
            status = trial.status.lower()
            if trial.status == "RUNNING" or trial_id in pending:
                status = "interrupted"  # queued: the next run of this search runs it
            settings = settings_from_values(values)
            rows.append(
                {
                    "trial": trial_id,
                    "status": status,
                    "best": best is not None and trial_id == best.trial_id,
                    **settings,
                    "epochs": int(values.get("tuner/epochs", self.config.epochs)),
                    "epochs_run": result.get("epochs_run"),
                    "best_epoch": result.get("best_epoch"),
                    OBJECTIVE: trial.score if trial.status == "COMPLETED" else None,
                    "val_loss": result.get("val_loss"),
                    "seconds": result.get("seconds"),
                    "continues": values.get("tuner/trial_id"),
                    "message": trial.message,
                    "values": values,
                }
            )
        return rows


def flat_row(row: dict, digits: int | None = None) -> dict:
    """A trial row for a CSV or table artifact (units joined, optionally rounded)."""
    out = {k: v for k, v in row.items() if k != "values"}
    out["units"] = "-".join(str(u) for u in row["units"])
    if digits is not None:
        out = {k: float(f"{v:.{digits}g}") if isinstance(v, float) else v for k, v in out.items()}
    return out


def write_trials(run_dir: Path, rows: list[dict]) -> dict[str, Path]:
    """trials.json (every field) and trials.csv (one line per trial)."""
    import pandas as pd

    paths = {"json": run_dir / "trials.json", "csv": run_dir / "trials.csv"}
    write_json(paths["json"], rows)
    columns = [
        "trial",
        "status",
        "best",
        "model",
        "units",
        "dropout",
        "l2",
        "learning_rate",
        "batch_size",
        "lookback",
        "epochs",
        "epochs_run",
        "best_epoch",
        OBJECTIVE,
        "val_loss",
        "seconds",
        "continues",
        "message",
    ]
    frame = pd.DataFrame([flat_row(r) for r in rows], columns=columns)
    with atomic_path(paths["csv"]) as tmp:
        frame.to_csv(tmp, index=False)
    return paths


def summary_lines(
    run: str,
    run_dir: Path,
    rows: list[dict],
    best: dict | None,
    ran: list[str],
    stop_reason: str | None,
) -> list[str]:
    """The markdown report of a search (also what the flow logs)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [
        f"# Tune {run}",
        "",
        f"- folder: `{run_dir}`",
        f"- trials: {len(rows)} ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
        f"{len(ran)} run now" + (f"; stopped: {stop_reason}" if stop_reason else ""),
        "- selection: validation MSE (scaled target) on the validation split; the test split "
        "is read only by the final retrain of the chosen configuration",
    ]
    if best:
        s = best
        lines += [
            f"- best: trial {best['trial']}, val MSE {best[OBJECTIVE]:.6g}: {s['model']} units "
            f"{s['units']}, lookback {s['lookback']}, batch {s['batch_size']}, learning rate "
            f"{s['learning_rate']:.3g}, dropout {s['dropout']:.3g}, l2 {s['l2']:.3g}",
            f"- best.json: `{run_dir / 'best.json'}` (tickercast retrain --config ...)",
        ]
    return lines


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One process at a time per search; a second waits, then resumes what is left."""
    from tasks.atomic import file_lock

    def waiting(path: Path) -> None:
        print(f"another tune run holds {path}; waiting for it to finish")

    with file_lock(run_dir / ".tune.lock", on_wait=waiting):
        yield
