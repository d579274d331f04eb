"""Training: seeded, resumable, early-stopped, logged per epoch (plus a bar in a terminal).

Every finished epoch is checkpointed under `<out_dir>/checkpoints/epoch-NNNN/` (model with
optimizer state, EarlyStopping and ReduceLROnPlateau state, history so far). `out_dir`
is the train step's content-keyed work folder, so a killed run started again with the
same inputs resumes after its last finished epoch; and because each epoch's shuffle is
seeded by (seed, epoch), it goes on exactly as the uninterrupted run would have. The
checkpoints are removed once `model.keras` is written. The checkpoints and the callbacks
(resumable early stopping and LR schedule, NaN guard, epoch log, terminal bar) live in
`callbacks.py`; this module builds the data and the model and runs the fit.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tickercast.atomic import atomic_path, write_json
from tickercast.layout import FITTED_WEIGHTS_FILE, HISTORY_FILE, MODEL_FILE
from tickercast.modeling import pool
from tickercast.modeling.checkpoints import (
    CHECKPOINTS,
    checkpoint_seconds,
    latest_checkpoint,
    load_best_weights,
    read_state,
)
from tickercast.modeling.device import DeviceChoice, make_strategy, precision_scope
from tickercast.modeling.device import resolve_device as _resolve_device
from tickercast.modeling.models import (
    MEDIAN,
    bind_ticker,
    build_model,
    cudnn_problems,
    custom_objects,
    has_quantile_head,
    lstm_layers,
    model_seed,
    rolled,
    unroll_on_cpu,
)
from tickercast.modeling.shrink import NoChange
from tickercast.modeling.threads import one_thread_worker
from tickercast.modeling.windows import (
    aligned_empty,
    concat_anchors,
    held_batches,
    index_dtype,
    make_dataset,
    n_batches,
    predict_windows,
)
from tickercast.progress import track
from tickercast.runcontext import gpu_slot

if TYPE_CHECKING:  # settings arrive as values: their classes' code is no part of a fit
    from tickercast.modeling.warm import Plan
    from tickercast.sections import Compute, FitSpec

Logger = logging.Logger | logging.LoggerAdapter


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; nothing is exported."""


@dataclass
class TrainData:
    """Scaled rows plus window anchors; global mode stacks every ticker's rows."""

    x: np.ndarray  # (rows, features) float32
    y: np.ndarray  # (rows, outputs) float32
    train: np.ndarray  # anchor rows
    val: np.ndarray
    ticker_offsets: np.ndarray | None = None  # each ticker's first row (embedding only)
    n_tickers: int = 1
    embedding: int = 0  # size of the learned per-ticker vector (with ticker_offsets)


def per_ticker_data(arrays: dict, anchors: dict[str, np.ndarray]) -> TrainData:
    return TrainData(arrays["x"], arrays["y"], anchors["train"], anchors["val"])


def global_data(
    n_rows: Sequence[int],
    load: Callable[[int], tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]],
    embedding: int = 0,
) -> TrainData:
    """Stack tickers' (already per-ticker scaled) rows into one preallocated array.

    `load(i)` returns ticker i's (x, y, anchors); one ticker is held at a time, so the
    peak is the stacked data plus one ticker, never two copies of everything. The stacked
    arrays are aligned so tf.data reads them in place (`tickercast.modeling.windows.as_tensor`).
    With an `embedding`, each window also carries its ticker's index.
    """
    total = int(sum(n_rows))
    x_all = y_all = None
    anchors = []
    start = 0
    for i, rows in enumerate(n_rows):
        x, y, a = load(i)
        if len(x) != rows:
            raise ValueError(f"ticker #{i}: {len(x)} rows, its spec says {rows}")
        if x_all is None:
            x_all = aligned_empty((total, x.shape[1]), np.float32)
            y_all = aligned_empty((total, y.shape[1]), np.float32)
        if x.shape[1] != x_all.shape[1] or y.shape[1] != y_all.shape[1]:
            raise ValueError(f"ticker #{i}: features/targets differ in width from ticker #0")
        x_all[start : start + rows] = x
        y_all[start : start + rows] = y
        # kept until all are stacked: in the stacked index type (int32), not the loader's
        anchors.append({k: np.asarray(a[k], index_dtype(total)) for k in ("train", "val", "test")})
        start += rows
        del x, y
    stacked, offsets = concat_anchors(anchors, list(n_rows))
    return TrainData(
        x_all,
        y_all,
        stacked["train"],
        stacked["val"],
        offsets if embedding else None,
        len(n_rows),
        embedding,
    )


_global_seed: list[int] = []  # the seed this process last gave Keras and TensorFlow


def seed_everything(seed: int) -> None:
    """Python's and NumPy's global seeds, and Keras' and TensorFlow's when they change
    (call under BUILD_LOCK).

    Setting TensorFlow's global seed clears its runtime's caches, so every fit of a
    process instantiated and optimised its traced training and validation steps again on
    its first batch (~0.45 s a fit, 10x that with its LSTMs unrolled; bench/RESULTS.md,
    "seed reset"). Nothing a fit runs draws from TensorFlow's global seed (each layer,
    dropout and epoch permutation has its own), so it is set once per value.
    """
    import keras

    random.seed(seed)
    np.random.seed(seed)
    if _global_seed != [seed]:
        keras.utils.set_random_seed(seed)
        _global_seed[:] = [seed]


# Global seeds and the dtype policy are process-wide, and the flow may train several
# tickers in threads: each model is seeded and built under this lock, so its initial
# weights (and its layers' own seed generators) depend on its seed alone.
BUILD_LOCK = threading.RLock()
# Determinism on CPU comes from the seeds (weights, dropout, each epoch's permutation) and
# an order-preserving tf.data pipeline; TensorFlow's CPU kernels used here are already
# deterministic, which tests/test_train.py and tests/test_global.py check bit for bit.
# TensorFlow's global op-determinism switch is deliberately not used: it adds nothing for
# these kernels, and it makes tf.data rewrite (serialise) every pipeline, which copies the
# whole feature array each time an iterator is made.


def resolve_device(compute: Compute) -> DeviceChoice:
    return _resolve_device(compute.device, compute.mixed_precision)


# --- training ------------------------------------------------------------------------


def build_kwargs(spec: FitSpec, lookback: int, data: TrainData) -> dict:
    """`build_model`'s arguments for `spec`'s network on `data`."""
    network, pooled = spec.network, data.ticker_offsets is not None
    return {
        "name": network.model,
        "lookback": lookback,
        "n_features": data.x.shape[1],
        "units": list(network.units),
        "learning_rate": float(spec.training.learning_rate),
        "clipvalue": float(spec.training.clipvalue),
        "outputs": data.y.shape[1],
        "dropout": float(network.dropout),
        "l2": float(network.l2),
        "recurrent_dropout": float(network.recurrent_dropout),
        "n_tickers": data.n_tickers if pooled else 0,
        "ticker_embedding": data.embedding if pooled else 0,
        "head": network.head,
    }


@dataclass
class _Resume:
    """Where a fit starts: nothing, or its last checkpoint's state."""

    folder: Path | None = None
    state: dict = field(default_factory=dict)

    @classmethod
    def of(cls, out_dir: Path) -> _Resume:
        folder = latest_checkpoint(out_dir)
        return cls(folder, read_state(folder)) if folder else cls()

    @property
    def epochs_done(self) -> int:
        return self.state.get("epochs_done", 0)

    def finished(self, epochs: int) -> bool:
        return bool(self.state) and (self.state["stopped"] or self.epochs_done >= epochs)

    def best_weights(self) -> list[np.ndarray] | None:
        return load_best_weights(self.folder) if self.folder else None


def fit(
    data: TrainData,
    lookback: int,
    spec: FitSpec,
    out_dir: Path,
    logger: Logger | None = None,
    callbacks: Sequence = (),
    label: str = "model",
    max_steps: int | None = None,
    seed_key: str | None = None,
    start_weights: list[np.ndarray] | None = None,
    lease: ExitStack | None = None,
    keep_at: float | None = None,
):
    """Train (or resume) on `data`; returns (summary, model) with best weights restored.

    `callbacks` run after the built-in ones (tests use one to kill a run mid-way);
    `max_steps` caps the batches per epoch and per validation (benchmarks only);
    `seed_key` (default `label`) with the config's seed picks the initial weights;
    `start_weights` (a warm start: tickercast.modeling.warm) replace them, and compete
    with the fit's epochs: scored on the validation windows first, they are kept when no
    epoch beats them (a fine-tune never ends worse than where it started); with `keep_at`,
    no epoch runs when their validation loss is at most that (they still fit).
    With a `lease`, the network is this process's pooled one of its architecture, reset
    to the fresh build's weights (tickercast.modeling.pool), and goes back to the pool
    when the `lease` closes: the caller is done with the model by then.
    """
    logger = logger or logging.getLogger(__name__)
    out_dir = Path(out_dir)
    choice = resolve_device(spec.compute)
    logger.info("%s: training on %s (%s)", label, choice.device, choice.reason)
    resume = _Resume.of(out_dir)
    model, strategy = _model(spec, lookback, data, choice, resume, logger, label, seed_key, lease)
    if start_weights is not None and not resume.folder:
        from tickercast.modeling.warm import apply_weights

        apply_weights(model, start_weights)
        logger.info("%s: starting from the warm start's fitted weights", label)
    with rolled(model):  # the model as saved, not its CPU fit's unrolled loops
        problems = cudnn_problems(model)
    if problems:
        logger.warning(
            "%s: LSTM layers not eligible for the cuDNN kernel (slow on GPU): %s",
            label,
            "; ".join(problems),
        )
    run = _FitRun(data, lookback, spec, out_dir, logger, label, resume)
    still_fits = False
    if start_weights is not None and not resume.folder:
        start = run.score_start(model, strategy, max_steps)
        still_fits = keep_at is not None and start <= keep_at
    if still_fits:  # the summary reports the start as the best, after no epoch
        logger.info("%s: the starting weights still fit (<= %.6g): no epoch", label, keep_at)
    elif resume.finished(spec.training.epochs):
        logger.info("%s: the checkpoint had already finished training", label)
        if run.stopping.restored_best_weights is not None:
            model.set_weights(run.stopping.restored_best_weights)
    else:
        run.fit(model, strategy, choice, list(callbacks), max_steps)
    if run.guard.diverged_epoch is not None:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
        raise TrainingDivergedError(
            f"{label}: training diverged: the loss became NaN/inf in epoch "
            f"{run.guard.diverged_epoch}; lower learning_rate or clipvalue, or check the "
            "inputs for NaN. Nothing was exported."
        )
    return run.summary(model, choice, problems), model


def _model(spec, lookback, data, choice, resume, logger, label, seed_key=None, lease=None):
    """(model, strategy): built and seeded, or loaded from the checkpoint to resume;
    with a `lease` (and nothing to resume), the pooled network reset to that build."""
    import keras

    # every layer seeded from the run's seed and the ticker (the fit's label): the same
    # initial weights whatever other threads draw from Python's `random`
    seed = model_seed(spec.training.seed, seed_key or label)
    kwargs = {**build_kwargs(spec, lookback, data), "seed": seed}
    on_cpu = choice.strategy == "one_device_cpu"
    if on_cpu:  # cuDNN's LSTM has no CPU kernel: TensorFlow would put it on the GPU
        kwargs["use_cudnn"] = False
    if lease is not None and not resume.folder:
        model, strategy = _pooled_model(kwargs, choice, spec.training.seed, lease)
        return _placed(model, choice), strategy
    strategy = make_strategy(choice)
    with BUILD_LOCK, strategy.scope(), precision_scope(choice.mixed_precision):
        seed_everything(spec.training.seed)
        if resume.folder:
            model = keras.models.load_model(
                resume.folder / MODEL_FILE, safe_mode=True, custom_objects=custom_objects()
            )
            logger.info(
                "%s: resuming after epoch %d from %s", label, resume.epochs_done, resume.folder
            )
        else:
            model = build_model(**kwargs)
    return _placed(model, choice), strategy


def _placed(model, choice: DeviceChoice):
    """`model` set up for the device it trains on, after its build or load (neither
    setting is part of a saved LSTM's config)."""
    if choice.strategy == "one_device_cpu":  # cuDNN has no CPU kernel
        for layer in lstm_layers(model):
            layer.use_cudnn = False
    if choice.device == "cpu" and one_thread_worker():
        unroll_on_cpu(model)
    return model


def _pooled_model(kwargs: dict, choice: DeviceChoice, run_seed: int, lease: ExitStack):
    """This process's pooled network for `kwargs`' architecture, reset to the weights a
    fresh build with `kwargs["seed"]` starts from; built and pooled if there is none."""
    key = pool.pool_key(kwargs, choice.strategy, choice.mixed_precision)
    pooled = pool.take(key)
    strategy = pooled.strategy if pooled else make_strategy(choice)
    with BUILD_LOCK, strategy.scope(), precision_scope(choice.mixed_precision):
        seed_everything(run_seed)
        if pooled is None:
            pooled = pool.built(build_model(**kwargs), strategy)
        else:
            pool.reset(pooled, build_model(**kwargs, compile=False))
    pool.give_back_on_success(lease, key, pooled)
    return pooled.model, pooled.strategy


class _FitRun:
    """One fit's callbacks, datasets and outcome (`fit` composes them)."""

    def __init__(self, data, lookback, spec, out_dir, logger, label, resume: _Resume):
        from tickercast.modeling.callbacks import (
            Checkpointer,
            NanGuard,
            ResumableEarlyStopping,
            ResumableReduceLR,
        )

        training, state = spec.training, resume.state
        self.data, self.lookback, self.spec = data, lookback, spec
        self.logger, self.label, self.first_epoch = logger, label, resume.epochs_done
        self.stopping = ResumableEarlyStopping(
            state.get("early_stopping"),
            resume.best_weights(),
            monitor="val_loss",
            patience=training.patience,
            restore_best_weights=True,
        )
        self.reduce_lr = ResumableReduceLR(
            state.get("reduce_lr"),
            monitor="val_loss",
            factor=training.reduce_lr_factor,
            patience=training.reduce_lr_patience,
        )
        self.guard = NanGuard()
        self.history = dict(state.get("history", {}))
        self.checkpointer = Checkpointer(
            out_dir / CHECKPOINTS,
            self.history,
            self.stopping,
            self.reduce_lr,
            state.get("seconds", 0.0),
            checkpoint_seconds(),
            state.get("start_val_loss"),
        )

    def callbacks(self, steps: int, extra: list) -> list:
        from tickercast.modeling.callbacks import EpochLog, StopOnRequest

        batch = self.spec.training.batch_size
        samples = min(len(self.data.train), steps * batch)
        return [
            StopOnRequest(),
            self.stopping,
            self.reduce_lr,
            self.guard,
            self.checkpointer,
            EpochLog(self.logger, samples, self.label, self.first_epoch),
            *self._tensorboard(),
            *extra,
        ]

    def _tensorboard(self) -> list:
        log_root = self.spec.compute.tensorboard_dir
        if not log_root:
            return []
        import importlib.util

        import keras

        if importlib.util.find_spec("tensorboard") is None:
            raise RuntimeError("tensorboard_dir is set but the tensorboard package is missing")
        log_dir = Path(log_root) / "".join(c if c.isalnum() else "-" for c in self.label)
        self.logger.info("%s: TensorBoard logs in %s", self.label, log_dir)
        return [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False)]

    def score_start(self, model, strategy, max_steps: int | None) -> float:
        """The starting weights as the best so far: their validation loss (returned) is the
        one to beat, and early stopping restores them if no epoch does."""
        val, val_steps = self.validation(max_steps)
        with strategy.scope():
            scored = model.evaluate(val, steps=val_steps, verbose=0, return_dict=True)
        start = float(scored["loss"])
        self.checkpointer.start_val_loss = start  # a resumed fit reads it back
        self.stopping.restored = {"best": start, "wait": 0, "best_epoch": -1}
        self.stopping.restored_best_weights = model.get_weights()
        self.logger.info(
            "%s: the starting weights' val_loss %.4g is the one to beat", self.label, start
        )
        return start

    def validation(self, max_steps: int | None, held: bool = False):
        """The validation tf.data stream and its steps; `held`: its windows gathered once
        and held as tensors (`held_batches`), for a fit that reads them every epoch."""
        data, batch = self.data, self.spec.training.batch_size
        steps = n_batches(len(data.val), batch)
        if max_steps:
            steps = min(steps, max_steps)
        offsets = data.ticker_offsets
        val = make_dataset(data.x, data.y, data.val, self.lookback, batch, ticker_offsets=offsets)
        if held:
            val = held_batches(val, len(data.val), batch)
        return val, steps

    def datasets(self, max_steps: int | None):
        """(train, validation) tf.data streams and their steps per epoch."""
        data, training = self.data, self.spec.training
        batch, epochs = training.batch_size, training.epochs
        steps = n_batches(len(data.train), batch)
        if max_steps:
            steps = min(steps, max_steps)
        train = make_dataset(
            data.x,
            data.y,
            data.train,
            self.lookback,
            batch,
            shuffle=True,
            seed=training.seed,
            ticker_offsets=data.ticker_offsets,
            epochs=epochs,
            first_epoch=self.first_epoch,
        )
        val, val_steps = self.validation(max_steps, held=True)
        return train, val, steps, val_steps

    def fit(self, model, strategy, choice: DeviceChoice, extra: list, max_steps) -> None:
        from tickercast.modeling.callbacks import EpochBar

        train, val, steps, val_steps = self.datasets(max_steps)
        callbacks = self.callbacks(steps, extra)
        pool.build_optimizer(model, strategy)
        epochs = self.spec.training.epochs
        with (
            gpu_slot(choice.device, self.logger) as slot,
            track(f"{self.label} epochs", total=epochs, completed=self.first_epoch) as bar,
        ):
            self.logger.info("%s: %s", self.label, slot)
            if bar.shown:  # a terminal's bar (tickercast.progress); nothing otherwise
                callbacks.append(EpochBar(bar, self.label, self.stopping))
            with strategy.scope():
                model.fit(
                    train,
                    validation_data=val,
                    epochs=epochs,
                    initial_epoch=self.first_epoch,
                    steps_per_epoch=steps,
                    validation_steps=val_steps,
                    callbacks=callbacks,
                    shuffle=False,  # the tf.data stream is shuffled, seeded per epoch
                    verbose=0,
                )

    def summary(self, model, choice: DeviceChoice, problems: list[str]) -> dict:
        history, epochs = self.history, self.spec.training.epochs
        val, loss = history.get("val_loss", []), history.get("loss", [])
        start = self.checkpointer.start_val_loss
        kept_start = start is not None and (not val or start <= min(val))
        best_epoch = int(np.argmin(val)) + 1 if val else len(loss)
        return {
            "history": history,
            "epochs_run": len(loss),
            "best_epoch": 0 if kept_start else best_epoch,  # 0: the starting weights
            "best_val_loss": start if kept_start else (float(min(val)) if val else None),
            "start_val_loss": start,
            "stopped_early": len(loss) < epochs,
            "resumed_from_epoch": self.first_epoch or None,
            "train_seconds": self.checkpointer.seconds,
            "train_windows": int(len(self.data.train)),
            "val_windows": int(len(self.data.val)),
            "parameters": int(model.count_params()),
            "device": choice.as_dict(),
            "cudnn_problems": problems,
        }


def save_model(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        keras_tmp = tmp.with_suffix(".keras")
        with rolled(model):
            model.save(keras_tmp)
        keras_tmp.replace(tmp)


def _finish(out_dir: Path, summary: dict) -> None:
    write_json(out_dir / HISTORY_FILE, summary)
    shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)


def shrink_fitted(
    model,
    data: TrainData,
    lookback: int,
    spec: FitSpec,
    naive: NoChange | None,
    logger: Logger | None = None,
    label: str = "model",
) -> dict:
    """Shrink the fitted network toward the last close by a factor fit on the validation
    windows (tickercast.modeling.shrink), in place; returns what metadata records."""
    if not spec.training.shrink:
        return {"alpha": None, "reason": "shrink is off"}
    if naive is None:
        return {
            "alpha": None,
            "reason": "the target is a price level, not relative to the last close",
        }
    if len(data.val) == 0:
        return {"alpha": None, "reason": "no validation windows"}
    from tickercast.modeling.shrink import shrink_model
    from tickercast.significance import format_p

    def predict_val() -> np.ndarray:
        out = _predict_val(model, data, lookback)
        return out[:, :, MEDIAN] if out.ndim == 3 else out  # a quantile head's median

    result = shrink_model(model, predict_val, data.y[data.val], naive)
    (logger or logging.getLogger(__name__)).info(
        "%s: forecast shrunk toward the last close by alpha %.3f (least squares %.3f, DM p "
        "%s vs naive; validation MSE naive %.4g, "
        "network %.4g, shrunk %.4g)",
        label,
        result["alpha"],
        result["alpha_least_squares"],
        format_p(result["dm_p_vs_naive"]).removeprefix("= "),
        result["val_mse_naive"],
        result["val_mse_network"],
        result["val_mse_shrunk"],
    )
    return result


def _predict_val(model, data: TrainData, lookback: int) -> np.ndarray:
    return predict_windows(model, data.x, data.val, lookback, data.ticker_offsets)


def calibrate_fitted(
    model, data: TrainData, lookback: int, spec: FitSpec, logger: Logger | None = None, label=""
) -> dict | None:
    """A quantile head conformalized on the validation windows (CQR, in place, after
    shrinkage: tickercast.modeling.quantiles); None for a point head."""
    if not has_quantile_head(model):
        return None
    if len(data.val) == 0:
        return {"method": None, "reason": "no validation windows: uncalibrated"}
    from tickercast.modeling.quantiles import calibrate_model

    result = calibrate_model(model, lambda: _predict_val(model, data, lookback), data.y[data.val])
    (logger or logging.getLogger(__name__)).info(
        "%s: quantiles conformalized on %d validation windows; coverage per band %s -> %s",
        label,
        result["windows"],
        result["val_coverage_before"],
        result["val_coverage_after"],
    )
    return result


def train_model(
    arrays: dict,
    anchors: dict[str, np.ndarray],
    lookback: int,
    spec: FitSpec,
    out_dir: Path,
    logger: Logger | None = None,
    callbacks: Sequence = (),
    label: str = "model",
    naive: NoChange | None = None,
    plan: Plan | None = None,
    start_weights: list[np.ndarray] | None = None,
) -> dict:
    """Fit one ticker's network, shrink it toward the last close (`naive`: the scaled
    no-change output, None for price targets); save `model.keras`, `history.json` and the
    weights as fitted before shrinkage (`fitted-weights.npz`: what a warm start reads).
    A warm `plan` starts from `start_weights` and caps the epochs at `plan.epochs` and the
    patience at `plan.patience`, and runs no epoch when the starting weights' loss on
    tonight's validation windows is at most `plan.keep_at` (the champion has not drifted).
    When no epoch beats a champion's starting weights on tonight's validation windows (or
    none ran), there is nothing new to ship: only `history.json` is written, and
    `summary["kept_champion"]` names the champion version whose weights were kept (the
    champion stays as it is; no shrinkage, calibration or model file is made for it).
    Weights the gate never promoted (`plan.keeps_source` false) are never kept: the best
    of them and the epochs is shipped like any fit."""
    from tickercast.modeling.warm import save_weights

    out_dir = Path(out_dir)
    data = per_ticker_data(arrays, anchors)
    warm = plan is not None and plan.mode == "warm"
    if warm:
        update = {"epochs": plan.epochs}
        if plan.patience is not None:
            update["patience"] = plan.patience
        spec = spec.model_copy(update=update)
    with ExitStack() as lease:  # the model is pooled again once it is saved
        summary, model = fit(
            data,
            lookback,
            spec,
            out_dir,
            logger,
            callbacks,
            label,
            start_weights=start_weights if warm else None,
            lease=lease,
            keep_at=plan.keep_at if warm else None,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        summary["warm_start"] = plan.record() if plan is not None else None
        if warm and summary["best_epoch"] == 0 and plan.keeps_source:
            summary["kept_champion"] = plan.source_version
            _finish(out_dir, summary)
            return summary
        save_weights(model, out_dir / FITTED_WEIGHTS_FILE)
        summary["shrinkage"] = shrink_fitted(model, data, lookback, spec, naive, logger, label)
        summary["calibration"] = calibrate_fitted(model, data, lookback, spec, logger, label)
        save_model(model, out_dir / MODEL_FILE)
    _finish(out_dir, summary)
    return summary


@dataclass(frozen=True)
class GlobalData:
    """Global mode's tickers: their names, row counts and a loader of one at a time
    (`load(i)` -> x, y, anchors), and each one's scaled no-change output (or None)."""

    tickers: Sequence[str]
    n_rows: Sequence[int]
    load: Callable[[int], tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]
    naive: Sequence[NoChange | None] | None = None

    def no_change(self) -> list[NoChange | None]:
        return list(self.naive) if self.naive is not None else [None] * len(self.tickers)


def train_global(
    source: GlobalData,
    lookback: int,
    spec: FitSpec,
    embedding: int,
    out_dir: Path,
    logger: Logger | None = None,
    callbacks: Sequence = (),
    max_steps: int | None = None,
) -> dict:
    """One model over every ticker's windows (each ticker scaled on its own).

    Writes `model.keras` (the global model) and, with a ticker `embedding` or shrinkage,
    one single-ticker `model-NNN.keras` per ticker (each shrunk on its own validation
    windows); `summary["models"]` maps each ticker to the file its evaluation and bundle use.
    """
    logger = logger or logging.getLogger(__name__)
    out_dir = Path(out_dir)
    data = global_data(source.n_rows, source.load, embedding)
    logger.info(
        "global model over %d tickers: %d rows, %d train / %d val windows",
        len(source.tickers),
        len(data.x),
        len(data.train),
        len(data.val),
    )
    summary, model = fit(data, lookback, spec, out_dir, logger, callbacks, "global", max_steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, out_dir / MODEL_FILE)
    naive = source.no_change()
    quantile = has_quantile_head(model)  # calibrated per ticker: each gets its own file
    if embedding or quantile or (spec.training.shrink and any(v is not None for v in naive)):
        models, shrinkage, calibration = _per_ticker_models(
            model, data, source, lookback, spec, out_dir, logger
        )
    else:
        models = {ticker: str(out_dir / MODEL_FILE) for ticker in source.tickers}
        shrinkage = {
            t: shrink_fitted(model, data, lookback, spec, None, logger) for t in source.tickers
        }
        calibration = dict.fromkeys(source.tickers)
    summary.update(
        {
            "mode": "global",
            "tickers": list(source.tickers),
            "models": models,
            "shrinkage": shrinkage,
            "calibration": calibration,
        }
    )
    _finish(out_dir, summary)
    return summary


def _per_ticker_models(model, data, source: GlobalData, lookback, spec, out_dir, logger):
    """Each ticker's own single-input model (bound to its embedding row), shrunk on its
    own validation windows (and a quantile head conformalized on them): ({ticker: model
    file}, {ticker: shrinkage}, {ticker: calibration})."""
    import keras

    kwargs = build_kwargs(spec, lookback, data)
    choice = resolve_device(spec.compute)
    models, shrinkage, calibration = {}, {}, {}
    for i, (ticker, naive) in enumerate(zip(source.tickers, source.no_change(), strict=True)):
        with BUILD_LOCK, precision_scope(choice.mixed_precision):
            if data.embedding:
                own = bind_ticker(model, i, **kwargs)
            else:
                own = keras.models.load_model(
                    out_dir / MODEL_FILE, safe_mode=True, custom_objects=custom_objects()
                )
        x, y, anchors = source.load(i)
        own_data = TrainData(x, y, anchors["train"], anchors["val"])
        shrinkage[ticker] = shrink_fitted(own, own_data, lookback, spec, naive, logger, ticker)
        calibration[ticker] = calibrate_fitted(own, own_data, lookback, spec, logger, ticker)
        path = out_dir / f"model-{i:03d}.keras"
        save_model(own, path)
        models[ticker] = str(path)
    return models, shrinkage, calibration
