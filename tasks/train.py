"""Training: seeded, early-stopped, logged per epoch without progress bars."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from tasks.atomic import atomic_path, write_json
from tasks.models import build_model
from tasks.windows import make_dataset


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; nothing is exported."""


def seed_everything(seed: int) -> None:
    """Same seed, same weights and metrics on CPU (op determinism is on)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # already enabled, or unsupported by this build
        pass


def _epoch_logger(logger: logging.Logger | logging.LoggerAdapter, n_samples: int):
    import keras

    class EpochLog(keras.callbacks.Callback):
        """One log line per epoch: loss, val_loss, learning rate, samples/s."""

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            logger.info(
                "epoch %d: loss=%.6g val_loss=%.6g lr=%.3g samples/s=%.0f",
                epoch + 1,
                logs.get("loss", float("nan")),
                logs.get("val_loss", float("nan")),
                lr,
                n_samples / elapsed,
            )

    return EpochLog()


def train_model(
    arrays: dict,
    anchors: dict[str, np.ndarray],
    lookback: int,
    cfg: dict,
    out_dir: Path,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> dict:
    """Fit the configured network; save `model.keras` and `history.json` in `out_dir`."""
    import keras

    logger = logger or logging.getLogger(__name__)
    seed_everything(int(cfg["seed"]))
    x, y = arrays["x"], arrays["y"]
    batch = int(cfg["batch_size"])
    train_ds = make_dataset(x, y, anchors["train"], lookback, batch, shuffle=True, seed=cfg["seed"])
    val_ds = make_dataset(x, y, anchors["val"], lookback, batch)
    model = build_model(
        cfg["model"],
        lookback,
        x.shape[1],
        list(cfg["units"]),
        learning_rate=float(cfg["learning_rate"]),
        clipvalue=float(cfg["clipvalue"]),
        outputs=y.shape[1],
    )
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=int(cfg["patience"]), restore_best_weights=True
        ),
        keras.callbacks.TerminateOnNaN(),
        _epoch_logger(logger, len(anchors["train"])),
    ]
    started = time.perf_counter()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=int(cfg["epochs"]),
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=0,
    )
    seconds = time.perf_counter() - started
    losses = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    if any(not math.isfinite(v) for v in losses.get("loss", [])):
        raise TrainingDivergedError(
            f"training diverged: loss became NaN/inf at epoch {len(losses['loss'])}; "
            "lower learning_rate or clipvalue. Nothing was exported."
        )
    val = losses.get("val_loss", [])
    best_epoch = int(np.argmin(val)) + 1 if val else len(losses.get("loss", []))
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.keras"
    with atomic_path(model_path) as tmp:
        keras_tmp = tmp.with_suffix(".keras")
        model.save(keras_tmp)
        keras_tmp.replace(tmp)
    summary = {
        "history": losses,
        "epochs_run": len(losses.get("loss", [])),
        "best_epoch": best_epoch,
        "best_val_loss": float(min(val)) if val else None,
        "train_seconds": seconds,
        "train_windows": int(len(anchors["train"])),
        "val_windows": int(len(anchors["val"])),
        "parameters": int(model.count_params()),
    }
    write_json(out_dir / "history.json", summary)
    return summary


def load_history(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
