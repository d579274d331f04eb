"""A fit's Keras callbacks: what makes training resumable (with `checkpoints.py`), guarded
against divergence, logged per epoch (a progress artifact inside a Prefect run) and shown
as a bar in a terminal. `train.py` composes them around `model.fit`.

This module imports Keras when it is imported: only training imports it (`train.py`,
itself imported by the steps that train); reading checkpoints does not need it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import keras

from tickercast.modeling.checkpoints import save_checkpoint
from tickercast.runcontext import check_stop, in_prefect_run, progress

Logger = logging.Logger | logging.LoggerAdapter


def _finite(value) -> bool:
    return value is None or math.isfinite(float(value))


def _jsonable(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Resumable:
    """A monitoring callback whose `best` and integer `COUNTERS` survive a restart:
    Keras resets them in on_train_begin, then the checkpoint's values are put back."""

    COUNTERS: tuple[str, ...] = ()
    restored: dict | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # type: ignore[misc]
        if self.restored:
            for name in ("best", *self.COUNTERS):
                setattr(self, name, self.restored[name])

    def state(self) -> dict:
        return {
            "best": _jsonable(self.best),  # type: ignore[attr-defined]
            **{name: int(getattr(self, name)) for name in self.COUNTERS},
        }


class ResumableEarlyStopping(Resumable, keras.callbacks.EarlyStopping):
    """EarlyStopping whose wait/best/best weights survive a restart."""

    COUNTERS = ("wait", "best_epoch")

    def __init__(self, restored: dict | None, restored_best_weights, **kwargs):
        super().__init__(**kwargs)
        self.restored, self.restored_best_weights = restored, restored_best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.restored:
            self.best_weights = self.restored_best_weights


class ResumableReduceLR(Resumable, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose wait/best/cooldown survive a restart (the rate itself is
    optimizer state, saved with the model)."""

    COUNTERS = ("wait", "cooldown_counter")

    def __init__(self, restored: dict | None, **kwargs):
        super().__init__(**kwargs)
        self.restored = restored


class StopOnRequest(keras.callbacks.Callback):
    """Gives the fit up between two batches once the process was asked to stop
    (tickercast.runcontext.request_stop: the CLI's SIGTERM and Ctrl-C handlers), so a
    killed run ends in seconds instead of after its last epoch."""

    def on_train_batch_end(self, batch, logs=None):
        check_stop()


class NanGuard(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that remembers the epoch (1-based) where the loss went bad."""

    diverged_epoch: int | None = None
    epoch: int = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        super().on_batch_end(batch, logs)
        if self.model.stop_training and not _finite((logs or {}).get("loss")):
            self.diverged_epoch = self.epoch + 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not (_finite(logs.get("loss")) and _finite(logs.get("val_loss"))):
            self.diverged_epoch = self.diverged_epoch or epoch + 1
            self.model.stop_training = True


class Checkpointer(keras.callbacks.Callback):
    """After a finished epoch, once `every` seconds passed since the fit started or the
    last checkpoint, and after the fit's last epoch (stopped early or not): model +
    optimizer, callback state and history (every epoch's)."""

    def __init__(
        self,
        root: Path,
        history: dict,
        stopping,
        reduce_lr,
        seconds: float,
        every: float,
        start_val_loss: float | None = None,
    ):
        super().__init__()
        self.root, self.history = root, history
        self.stopping, self.reduce_lr = stopping, reduce_lr
        self.seconds, self.since = seconds, time.perf_counter()
        self.every, self.saved_at = every, self.since
        # a warm start's validation loss before its first epoch (None: a fresh fit)
        self.start_val_loss = start_val_loss

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not (_finite(logs.get("loss")) and _finite(logs.get("val_loss"))):
            return  # a diverged epoch is never a resume point
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        now = time.perf_counter()
        self.seconds += now - self.since
        self.since = now
        last = bool(self.model.stop_training) or epoch + 1 >= self.params.get("epochs", 0)
        if now - self.saved_at < self.every and not last:
            return  # the last epoch's is always written: tuning continues from it
        self.saved_at = now
        state = {
            "epochs_done": epoch + 1,
            "history": self.history,
            "early_stopping": self.stopping.state(),
            "reduce_lr": self.reduce_lr.state(),
            "stopped": bool(self.model.stop_training),
            "seconds": self.seconds,
            "start_val_loss": self.start_val_loss,
        }
        save_checkpoint(self.root, epoch + 1, self.model, state, self.stopping.best_weights)


# The least time between two updates of a fit's progress artifact. Each update is a
# blocking API call (8.4 ms of the task's wall, 7 ms of a local server's CPU:
# bench/progress_updates.py), and a one-thread nightly fit ends an epoch every ~0.6 s.
PROGRESS_EVERY_S = 2.0


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch (loss, val_loss, learning rate, samples/s) and, inside a
    Prefect run, a progress artifact people can watch: updated after an epoch at most
    every PROGRESS_EVERY_S seconds, and when the fit ends."""

    def __init__(
        self,
        logger: Logger,
        samples_per_epoch: int,
        label: str,
        first_epoch: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.logger, self.samples, self.label = logger, samples_per_epoch, label
        self.first_epoch, self.artifact = first_epoch, None
        self.started = time.perf_counter()
        self.clock, self.updated = clock, -math.inf

    def _progress(self, done: int, description: str) -> None:
        value = 100.0 * done / max(self.params["epochs"], 1)
        self.artifact = progress(
            self.artifact, value, f"training-{self.label}", description, self.logger
        )
        self.updated = self.clock()

    def on_train_begin(self, logs=None):
        if in_prefect_run():
            self._progress(self.first_epoch, f"{self.label}: training started")

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        elapsed = max(time.perf_counter() - self.started, 1e-9)
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
        if self.artifact is not None and self.clock() - self.updated >= PROGRESS_EVERY_S:
            self._progress(epoch + 1, f"{self.label}: epoch {epoch + 1} finished")

    def on_train_end(self, logs=None):
        if self.artifact is not None:
            self._progress(self.params["epochs"], f"{self.label}: training finished")


class EpochBar(keras.callbacks.Callback):
    """Advances a terminal progress bar (tickercast.progress) per finished epoch, its line
    showing the epoch's loss and val_loss; says so when early stopping ends it."""

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
            best = self.stopping.best_epoch
            self.bar.update(
                description=f"{self.label} epochs · stopped early, "
                + (f"best epoch {best + 1}" if best >= 0 else "kept the starting weights")
            )
