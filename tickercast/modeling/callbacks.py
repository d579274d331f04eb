"""A fit's checkpoints and its Keras callbacks: what makes training resumable, guarded
against divergence, logged per epoch (a progress artifact inside a Prefect run) and shown
as a bar in a terminal. `train.py` composes them around `model.fit`.

A checkpoint is `<out_dir>/checkpoints/epoch-NNNN/`: the model with its optimizer state,
EarlyStopping and ReduceLROnPlateau state and the history so far, assembled in a hidden
folder and renamed into place, so a kill mid-save leaves the previous one intact.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from tickercast.atomic import fsync_dir
from tickercast.runcontext import in_prefect_run, progress

CHECKPOINTS = "checkpoints"
Logger = logging.Logger | logging.LoggerAdapter


def _finite(value) -> bool:
    return value is None or math.isfinite(float(value))


def _jsonable(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# --- checkpoints ---------------------------------------------------------------------


def _checkpoint_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    done = [p for p in root.glob("epoch-*") if (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The last finished epoch's folder, or None; half-written folders are never named."""
    dirs = _checkpoint_dirs(Path(out_dir) / CHECKPOINTS)
    return dirs[-1] if dirs else None


def _save_checkpoint(root: Path, epochs_done: int, model, state: dict, best_weights) -> None:
    """Assemble in a hidden folder, then rename: a kill mid-save leaves the previous one."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        model.save(staging / "model.keras")
        if best_weights is not None:
            with (staging / "best_weights.npz").open("wb") as handle:
                np.savez(handle, *best_weights)
        (staging / "state.json").write_text(json.dumps(state))
        fsync_dir(staging)
        target = root / f"epoch-{epochs_done:04d}"
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        fsync_dir(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in _checkpoint_dirs(root)[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def load_best_weights(folder: Path) -> list[np.ndarray] | None:
    path = folder / "best_weights.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


# --- callbacks -----------------------------------------------------------------------


def callback_classes():
    """Keras callback classes, defined lazily so importing this module stays light."""
    import keras

    class Resumable:
        """A monitoring callback whose `best` and integer `COUNTERS` survive a restart:
        Keras resets them in on_train_begin, then the checkpoint's values are put back."""

        COUNTERS: tuple[str, ...] = ()

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self._restored:
                for name in ("best", *self.COUNTERS):
                    setattr(self, name, self._restored[name])

        def state(self) -> dict:
            return {
                "best": _jsonable(self.best),
                **{name: int(getattr(self, name)) for name in self.COUNTERS},
            }

    class ResumableEarlyStopping(Resumable, keras.callbacks.EarlyStopping):
        """EarlyStopping whose wait/best/best weights survive a restart."""

        COUNTERS = ("wait", "best_epoch")

        def __init__(self, restored: dict | None, best_weights, **kwargs):
            super().__init__(**kwargs)
            self._restored, self._restored_weights = restored, best_weights

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self._restored:
                self.best_weights = self._restored_weights

    class ResumableReduceLR(Resumable, keras.callbacks.ReduceLROnPlateau):
        """ReduceLROnPlateau whose wait/best/cooldown survive a restart (the rate itself
        is optimizer state, saved with the model)."""

        COUNTERS = ("wait", "cooldown_counter")

        def __init__(self, restored: dict | None, **kwargs):
            super().__init__(**kwargs)
            self._restored = restored

    class NanGuard(keras.callbacks.TerminateOnNaN):
        """TerminateOnNaN that remembers the epoch (1-based) where the loss went bad."""

        diverged_epoch: int | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_batch_end(self, batch, logs=None):
            super().on_batch_end(batch, logs)
            if self.model.stop_training and not _finite((logs or {}).get("loss")):
                self.diverged_epoch = self._epoch + 1

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if not (_finite(logs.get("loss")) and _finite(logs.get("val_loss"))):
                self.diverged_epoch = self.diverged_epoch or epoch + 1
                self.model.stop_training = True

    class Checkpointer(keras.callbacks.Callback):
        """After each finished epoch: model + optimizer, callback state and history."""

        def __init__(self, root: Path, history: dict, stopping, reduce_lr, seconds: float):
            super().__init__()
            self.root, self.history = root, history
            self.stopping, self.reduce_lr = stopping, reduce_lr
            self.seconds, self._since = seconds, time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if not (_finite(logs.get("loss")) and _finite(logs.get("val_loss"))):
                return  # a diverged epoch is never a resume point
            for key, value in logs.items():
                self.history.setdefault(key, []).append(float(value))
            now = time.perf_counter()
            self.seconds += now - self._since
            self._since = now
            state = {
                "epochs_done": epoch + 1,
                "history": self.history,
                "early_stopping": self.stopping.state(),
                "reduce_lr": self.reduce_lr.state(),
                "stopped": bool(self.model.stop_training),
                "seconds": self.seconds,
            }
            _save_checkpoint(self.root, epoch + 1, self.model, state, self.stopping.best_weights)

    class EpochLog(keras.callbacks.Callback):
        """One log line per epoch (loss, val_loss, learning rate, samples/s) and, inside a
        Prefect run, a progress artifact people can watch."""

        def __init__(self, logger: Logger, samples_per_epoch: int, label: str, first_epoch: int):
            super().__init__()
            self.logger, self.samples, self.label = logger, samples_per_epoch, label
            self.first_epoch, self.artifact = first_epoch, None

        def _progress(self, done: int, description: str) -> None:
            value = 100.0 * done / max(self.params["epochs"], 1)
            self.artifact = progress(
                self.artifact, value, f"training-{self.label}", description, self.logger
            )

        def on_train_begin(self, logs=None):
            if in_prefect_run():
                self._progress(self.first_epoch, f"{self.label}: training started")

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.logger.info(
                "%s epoch %d/%d: loss=%.6g val_loss=%.6g lr=%.3g samples/s=%.0f",
                self.label,
                epoch + 1,
                self.params["epochs"],
                logs.get("loss", float("nan")),
                logs.get("val_loss", float("nan")),
                lr,
                self.samples / elapsed,
            )
            if self.artifact is not None:
                self._progress(epoch + 1, f"{self.label}: epoch {epoch + 1} finished")

        def on_train_end(self, logs=None):
            if self.artifact is not None:
                self._progress(self.params["epochs"], f"{self.label}: training finished")

    class EpochBar(keras.callbacks.Callback):
        """Advances a terminal progress bar (tickercast.progress) per finished epoch, its
        line showing the epoch's loss and val_loss; says so when early stopping ends it."""

        def __init__(self, bar, label: str, stopping):
            super().__init__()
            self.bar, self.label, self.stopping = bar, label, stopping

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.advance(
                1,
                f"{self.label} epochs · loss {logs.get('loss', float('nan')):.4g}"
                f" val_loss {logs.get('val_loss', float('nan')):.4g}",
            )

        def on_train_end(self, logs=None):
            if self.stopping.stopped_epoch:
                self.bar.update(
                    description=f"{self.label} epochs · stopped early, best epoch "
                    f"{self.stopping.best_epoch + 1}"
                )

    return ResumableEarlyStopping, ResumableReduceLR, NanGuard, Checkpointer, EpochLog, EpochBar
