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

import json
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tickercast.atomic import atomic_path, write_json
from tickercast.config import RetrainConfig
from tickercast.modeling.callbacks import (
    CHECKPOINTS,
    Logger,
    callback_classes,
    latest_checkpoint,
    load_best_weights,
)
from tickercast.modeling.device import (
    DeviceChoice,
    make_strategy,
    precision_scope,
)
from tickercast.modeling.device import resolve_device as _resolve_device
from tickercast.modeling.models import bind_ticker, build_model, cudnn_problems
from tickercast.modeling.shrink import NoChange
from tickercast.modeling.windows import (
    aligned_empty,
    concat_anchors,
    index_dtype,
    make_dataset,
    n_batches,
)
from tickercast.progress import track
from tickercast.runcontext import gpu_slot

# Defaults for config fields older callers (and the benches) may leave out.
# Settings a caller may leave out take RetrainConfig's defaults (defined once, there).
DEFAULTS = {
    name: RetrainConfig.model_fields[name].default
    for name in (
        "dropout",
        "recurrent_dropout",
        "l2",
        "ticker_embedding",
        "reduce_lr_patience",
        "reduce_lr_factor",
        "device",
        "mixed_precision",
        "tensorboard_dir",
    )
}


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


def per_ticker_data(arrays: dict, anchors: dict[str, np.ndarray]) -> TrainData:
    return TrainData(arrays["x"], arrays["y"], anchors["train"], anchors["val"])


def global_data(
    n_rows: Sequence[int],
    load: Callable[[int], tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]],
    with_ticker_ids: bool = False,
) -> TrainData:
    """Stack tickers' (already per-ticker scaled) rows into one preallocated array.

    `load(i)` returns ticker i's (x, y, anchors); one ticker is held at a time, so the
    peak is the stacked data plus one ticker, never two copies of everything. The stacked
    arrays are aligned so tf.data reads them in place (`tickercast.modeling.windows.as_tensor`).
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
        offsets if with_ticker_ids else None,
        len(n_rows),
    )


def seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


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


def resolve_device(cfg: dict) -> DeviceChoice:
    return _resolve_device(cfg.get("device", "auto"), bool(cfg.get("mixed_precision", False)))


# --- training ------------------------------------------------------------------------


def _build_kwargs(cfg: dict, lookback: int, data: TrainData) -> dict:
    cfg = {**DEFAULTS, **cfg}
    return {
        "name": cfg["model"],
        "lookback": lookback,
        "n_features": data.x.shape[1],
        "units": list(cfg["units"]),
        "learning_rate": float(cfg["learning_rate"]),
        "clipvalue": float(cfg["clipvalue"]),
        "outputs": data.y.shape[1],
        "dropout": float(cfg["dropout"]),
        "l2": float(cfg["l2"]),
        "recurrent_dropout": float(cfg["recurrent_dropout"]),
        "n_tickers": data.n_tickers if data.ticker_offsets is not None else 0,
        "ticker_embedding": int(cfg["ticker_embedding"]) if data.ticker_offsets is not None else 0,
    }


def fit(
    data: TrainData,
    lookback: int,
    cfg: dict,
    out_dir: Path,
    logger: Logger | None = None,
    callbacks: Sequence = (),
    label: str = "model",
    max_steps: int | None = None,
):
    """Train (or resume) on `data`; returns (summary, model) with best weights restored.

    `callbacks` run after the built-in ones (tests use one to kill a run mid-way);
    `max_steps` caps the batches per epoch and per validation (benchmarks only).
    """
    logger = logger or logging.getLogger(__name__)
    cfg = {**DEFAULTS, **cfg}
    choice = resolve_device(cfg)
    logger.info("%s: training on %s (%s)", label, choice.device, choice.reason)
    return _fit(data, lookback, cfg, Path(out_dir), logger, callbacks, label, max_steps, choice)


def _fit(
    data: TrainData,
    lookback: int,
    cfg: dict,
    out_dir: Path,
    logger: Logger,
    callbacks: Sequence,
    label: str,
    max_steps: int | None,
    choice: DeviceChoice,
):
    import keras

    seed = int(cfg["seed"])
    epochs, batch = int(cfg["epochs"]), int(cfg["batch_size"])
    root = out_dir / CHECKPOINTS
    resume_from = latest_checkpoint(out_dir)
    state = json.loads((resume_from / "state.json").read_text()) if resume_from else None
    build_kwargs = _build_kwargs(cfg, lookback, data)
    if choice.strategy == "one_device_cpu":
        # cuDNN's LSTM has no CPU kernel: TensorFlow would quietly place it on the GPU.
        build_kwargs["use_cudnn"] = False
    strategy = make_strategy(choice)
    with BUILD_LOCK, strategy.scope(), precision_scope(choice.mixed_precision):
        seed_everything(seed)
        if state:
            model = keras.models.load_model(resume_from / "model.keras", safe_mode=True)
            logger.info(
                "%s: resuming after epoch %d from %s", label, state["epochs_done"], resume_from
            )
        else:
            model = build_model(**build_kwargs)
    if "use_cudnn" in build_kwargs:  # not part of a saved LSTM's config: set it again
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.LSTM):
                layer.use_cudnn = build_kwargs["use_cudnn"]
    problems = cudnn_problems(model)
    if problems:
        logger.warning(
            "%s: LSTM layers not eligible for the cuDNN kernel (slow on GPU): %s",
            label,
            "; ".join(problems),
        )
    first_epoch = state["epochs_done"] if state else 0
    steps = n_batches(len(data.train), batch)
    val_steps = n_batches(len(data.val), batch)
    if max_steps:
        steps, val_steps = min(steps, max_steps), min(val_steps, max_steps)
    train_ds = make_dataset(
        data.x,
        data.y,
        data.train,
        lookback,
        batch,
        shuffle=True,
        seed=seed,
        ticker_offsets=data.ticker_offsets,
        epochs=epochs,
        first_epoch=first_epoch,
    )
    val_ds = make_dataset(
        data.x, data.y, data.val, lookback, batch, ticker_offsets=data.ticker_offsets
    )
    Stopping, ReduceLR, NanGuard, Checkpointer, EpochLog, EpochBar = callback_classes()
    stopping = Stopping(
        state["early_stopping"] if state else None,
        load_best_weights(resume_from) if state else None,
        monitor="val_loss",
        patience=int(cfg["patience"]),
        restore_best_weights=True,
    )
    reduce_lr = ReduceLR(
        state["reduce_lr"] if state else None,
        monitor="val_loss",
        factor=float(cfg["reduce_lr_factor"]),
        patience=int(cfg["reduce_lr_patience"]),
    )
    guard = NanGuard()
    history = dict(state["history"]) if state else {}
    seconds = state["seconds"] if state else 0.0
    checkpointer = Checkpointer(root, history, stopping, reduce_lr, seconds)
    all_callbacks = [
        stopping,
        reduce_lr,
        guard,
        checkpointer,
        EpochLog(logger, min(len(data.train), steps * batch), label, first_epoch),
    ]
    if cfg["tensorboard_dir"]:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise RuntimeError("tensorboard_dir is set but the tensorboard package is missing")
        log_dir = Path(cfg["tensorboard_dir"]) / "".join(c if c.isalnum() else "-" for c in label)
        all_callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False))
        logger.info("%s: TensorBoard logs in %s", label, log_dir)
    all_callbacks.extend(callbacks)
    if state and (state["stopped"] or first_epoch >= epochs):
        logger.info("%s: the checkpoint had already finished training", label)
        if stopping._restored_weights is not None:
            model.set_weights(stopping._restored_weights)
    else:
        if not model.optimizer.built:
            # built here, the optimizer's variables exist before fit traces its step:
            # otherwise TensorFlow traces the whole training step twice (~1 s)
            with strategy.scope():
                model.optimizer.build(model.trainable_variables)
        with (
            gpu_slot(choice.device, logger) as slot,
            track(f"{label} epochs", total=epochs, completed=first_epoch) as bar,
        ):
            logger.info("%s: %s", label, slot)
            if bar.shown:  # a terminal's bar (tickercast.progress); nothing otherwise
                all_callbacks.append(EpochBar(bar, label, stopping))
            with strategy.scope():
                model.fit(
                    train_ds,
                    validation_data=val_ds,
                    epochs=epochs,
                    initial_epoch=first_epoch,
                    steps_per_epoch=steps,
                    validation_steps=val_steps,
                    callbacks=all_callbacks,
                    shuffle=False,  # the tf.data stream is shuffled, seeded per epoch
                    verbose=0,
                )
    if guard.diverged_epoch is not None:
        shutil.rmtree(root, ignore_errors=True)
        raise TrainingDivergedError(
            f"{label}: training diverged: the loss became NaN/inf in epoch "
            f"{guard.diverged_epoch}; lower learning_rate or clipvalue, or check the inputs "
            "for NaN. Nothing was exported."
        )
    val = history.get("val_loss", [])
    summary = {
        "history": history,
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": int(np.argmin(val)) + 1 if val else len(history.get("loss", [])),
        "best_val_loss": float(min(val)) if val else None,
        "stopped_early": len(history.get("loss", [])) < epochs,
        "resumed_from_epoch": first_epoch or None,
        "train_seconds": checkpointer.seconds,
        "train_windows": int(len(data.train)),
        "val_windows": int(len(data.val)),
        "parameters": int(model.count_params()),
        "device": choice.as_dict(),
        "cudnn_problems": problems,
    }
    return summary, model


def save_model(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        keras_tmp = tmp.with_suffix(".keras")
        model.save(keras_tmp)
        keras_tmp.replace(tmp)


def _finish(out_dir: Path, summary: dict) -> None:
    write_json(out_dir / "history.json", summary)
    shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)


def shrink_fitted(
    model,
    data: TrainData,
    lookback: int,
    cfg: dict,
    naive: NoChange | None,
    logger: Logger | None = None,
    label: str = "model",
) -> dict:
    """Shrink the fitted network toward the last close by a factor fit on the validation
    windows (tickercast.modeling.shrink), in place; returns what metadata records."""
    if not cfg.get("shrink"):
        return {"alpha": None, "reason": "shrink is off"}
    if naive is None:
        return {
            "alpha": None,
            "reason": "the target is a price level, not relative to the last close",
        }
    if len(data.val) == 0:
        return {"alpha": None, "reason": "no validation windows"}
    from tickercast.modeling.shrink import shrink_model

    def predict_val() -> np.ndarray:
        batches = make_dataset(
            data.x,
            data.y,
            data.val,
            lookback,
            int(cfg["batch_size"]),
            ticker_offsets=data.ticker_offsets,
        )
        return np.asarray(model.predict(batches, verbose=0))

    result = shrink_model(model, predict_val, data.y[data.val], naive)
    (logger or logging.getLogger(__name__)).info(
        "%s: forecast shrunk toward the last close by alpha %.3f (least squares %.3f, DM p "
        "%s vs naive; validation MSE naive %.4g, "
        "network %.4g, shrunk %.4g)",
        label,
        result["alpha"],
        result["alpha_least_squares"],
        result["dm_p_vs_naive"],
        result["val_mse_naive"],
        result["val_mse_network"],
        result["val_mse_shrunk"],
    )
    return result


def train_model(
    arrays: dict,
    anchors: dict[str, np.ndarray],
    lookback: int,
    cfg: dict,
    out_dir: Path,
    logger: Logger | None = None,
    callbacks: Sequence = (),
    label: str = "model",
    naive: NoChange | None = None,
) -> dict:
    """Fit one ticker's network, shrink it toward the last close (`naive`: the scaled
    no-change output, None for price targets); save `model.keras` and `history.json`."""
    out_dir = Path(out_dir)
    data = per_ticker_data(arrays, anchors)
    summary, model = fit(data, lookback, cfg, out_dir, logger, callbacks, label)
    summary["shrinkage"] = shrink_fitted(model, data, lookback, cfg, naive, logger, label)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, out_dir / "model.keras")
    _finish(out_dir, summary)
    return summary


def train_global(
    tickers: Sequence[str],
    n_rows: Sequence[int],
    load: Callable[[int], tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]],
    lookback: int,
    cfg: dict,
    out_dir: Path,
    logger: Logger | None = None,
    callbacks: Sequence = (),
    max_steps: int | None = None,
    naive: Sequence[NoChange | None] | None = None,
) -> dict:
    """One model over every ticker's windows (each ticker scaled on its own).

    Writes `model.keras` (the global model) and, with a ticker embedding or shrinkage, one
    single-ticker `model-NNN.keras` per ticker (each shrunk on its own validation windows);
    `summary["models"]` maps each ticker to the file its evaluation and bundle use.
    """
    logger = logger or logging.getLogger(__name__)
    out_dir = Path(out_dir)
    embedding = int(cfg.get("ticker_embedding", 0)) > 0
    data = global_data(n_rows, load, with_ticker_ids=embedding)
    logger.info(
        "global model over %d tickers: %d rows, %d train / %d val windows",
        len(tickers),
        len(data.x),
        len(data.train),
        len(data.val),
    )
    summary, model = fit(data, lookback, cfg, out_dir, logger, callbacks, "global", max_steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, out_dir / "model.keras")
    models, shrinkage = {}, {}
    naive = list(naive) if naive is not None else [None] * len(tickers)
    if embedding or (cfg.get("shrink") and any(v is not None for v in naive)):
        import keras

        kwargs = _build_kwargs(cfg, lookback, data)
        choice = resolve_device(cfg)
        for i, ticker in enumerate(tickers):
            with BUILD_LOCK, precision_scope(choice.mixed_precision):
                if embedding:
                    own = bind_ticker(model, i, **kwargs)
                else:
                    own = keras.models.load_model(out_dir / "model.keras", safe_mode=True)
            x, y, anchors = load(i)
            own_data = TrainData(x, y, anchors["train"], anchors["val"])
            shrinkage[ticker] = shrink_fitted(
                own, own_data, lookback, cfg, naive[i], logger, ticker
            )
            path = out_dir / f"model-{i:03d}.keras"
            save_model(own, path)
            models[ticker] = str(path)
    else:
        models = {ticker: str(out_dir / "model.keras") for ticker in tickers}
        shrinkage = {t: shrink_fitted(model, data, lookback, cfg, None, logger) for t in tickers}
    summary.update(
        {"mode": "global", "tickers": list(tickers), "models": models, "shrinkage": shrinkage}
    )
    _finish(out_dir, summary)
    return summary


def load_history(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
