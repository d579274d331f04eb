"""A fit's checkpoints: what makes training resumable (the callbacks that write them are
in `callbacks.py`; reading them needs no Keras).

A checkpoint is `<out_dir>/checkpoints/epoch-NNNN/`: the model with its optimizer state,
EarlyStopping and ReduceLROnPlateau state and the history so far, assembled in a hidden
folder and renamed into place, so a kill mid-save leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from tickercast.atomic import fsync_dir
from tickercast.layout import MODEL_FILE
from tickercast.modeling.models import rolled

CHECKPOINTS = "checkpoints"
# Seconds of training between two checkpoints (the first one after this much training;
# a fit's last epoch always gets one, which tuning's later rounds continue from). A
# checkpoint (the model with its optimizer state, the callbacks' state) costs 20-50 ms
# here, a tenth of an epoch of the nightly network at batch 256: written after every
# epoch, a 14-epoch fit took 1/0.92 as long (bench/checkpoint_interval.py). A killed run
# loses at most this much training; TICKERCAST_CHECKPOINT_SECONDS overrides it (0: after
# every epoch).
CHECKPOINT_SECONDS = 30.0
CHECKPOINT_SECONDS_ENV = "TICKERCAST_CHECKPOINT_SECONDS"


def checkpoint_seconds() -> float:
    """The interval between checkpoints: the environment's, else CHECKPOINT_SECONDS."""
    value = os.environ.get(CHECKPOINT_SECONDS_ENV, "").strip()
    if not value:
        return CHECKPOINT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{CHECKPOINT_SECONDS_ENV}={value!r} is not a number of seconds") from None
    if not seconds >= 0:
        raise ValueError(f"{CHECKPOINT_SECONDS_ENV}={value!r} must be >= 0")
    return seconds


def _checkpoint_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    done = [p for p in root.glob("epoch-*") if (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The last finished epoch's folder, or None; half-written folders are never named."""
    dirs = _checkpoint_dirs(Path(out_dir) / CHECKPOINTS)
    return dirs[-1] if dirs else None


def save_checkpoint(root: Path, epochs_done: int, model, state: dict, best_weights) -> None:
    """Assemble in a hidden folder, then rename: a kill mid-save leaves the previous one."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        with rolled(model):
            model.save(staging / MODEL_FILE)
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


def read_state(folder: Path) -> dict:
    """A checkpoint's state.json: epochs done, history, the callbacks' state."""
    return json.loads((folder / "state.json").read_text())
