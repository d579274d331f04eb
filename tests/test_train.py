"""Training: sine accuracy, NaN handling, resume after a kill, determinism, progress."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tickercast.market.sources import sine_prices
from tickercast.modeling.checkpoints import (
    CHECKPOINT_SECONDS,
    CHECKPOINT_SECONDS_ENV,
    CHECKPOINTS,
    checkpoint_seconds,
    latest_checkpoint,
    read_state,
)
from tickercast.modeling.preprocess import preprocess, to_prices
from tickercast.modeling.train import (
    TrainingDivergedError,
    fit,
    per_ticker_data,
    train_model,
)
from tickercast.modeling.windows import gather_windows, split_anchors
from tickercast.sections import FitSpec, PreprocessSettings

ROOT = Path(__file__).resolve().parents[1]
PRE = {
    "start": None,
    "end": None,
    "features": ["close"],
    "lookback": 10,
    "horizon": 1,
    "target": "close",
    "val_fraction": 0.15,
    "test_fraction": 0.15,
}
TINY = {
    "model": "stacked_lstm",
    "units": [6, 4],
    "learning_rate": 1e-2,
    "clipvalue": 1.0,
    "epochs": 4,
    "batch_size": 64,
    "patience": 10,
    "reduce_lr_patience": 1,
    "reduce_lr_factor": 0.5,
    "seed": 11,
}


def tiny_fit(**overrides) -> FitSpec:
    """TINY with `overrides`, as the train functions take it."""
    return FitSpec(**{**TINY, **overrides})


def sine_data():
    spec, arrays = preprocess(sine_prices().prices, PreprocessSettings(**PRE), "SINE")
    anchors = split_anchors(len(arrays["x"]), spec.n_train, spec.n_val, 10, 1)
    return spec, arrays, anchors


def weights_of(path: Path) -> list[np.ndarray]:
    import keras

    return keras.models.load_model(path, safe_mode=True, compile=False).get_weights()


def assert_same_weights(first: Path, second: Path) -> None:
    """The two saved models hold the same weights, bit for bit, tensor by tensor."""
    for a, b in zip(weights_of(first), weights_of(second), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stacked_lstm_reaches_1e4_validation_mse_on_the_sine_wave(tmp_path):
    spec, arrays, anchors = sine_data()
    cfg = tiny_fit(units=[32, 16], epochs=60, batch_size=32, reduce_lr_patience=4)
    summary, model = fit(per_ticker_data(arrays, anchors), 10, cfg, tmp_path)
    val = anchors["val"]
    scaled = model.predict(gather_windows(arrays["x"], val, 10), verbose=0)
    predicted = to_prices(spec, scaled, arrays["close"][val])
    mse = float(np.mean((predicted - arrays["y_price"][val]) ** 2))
    assert mse <= 1e-4, f"val MSE {mse:.2e} after {summary['epochs_run']} epochs"


def test_nan_loss_fails_cleanly_and_writes_nothing(tmp_path):
    spec, arrays, anchors = sine_data()
    arrays = dict(arrays, y=arrays["y"].copy())
    arrays["y"][anchors["train"][3]] = np.nan
    out = tmp_path / "train"
    with pytest.raises(TrainingDivergedError, match="NaN/inf in epoch 1.*Nothing was exported"):
        train_model(arrays, anchors, 10, tiny_fit(), out)
    assert not (out / "model.keras").exists() and not (out / "history.json").exists()
    assert not (out / CHECKPOINTS).exists()


def test_same_seed_same_weights_and_metrics(tmp_path):
    spec, arrays, anchors = sine_data()
    cfg = tiny_fit(epochs=2, dropout=0.1)
    first = train_model(arrays, anchors, 10, cfg, tmp_path / "a")
    second = train_model(arrays, anchors, 10, cfg, tmp_path / "b")
    assert first["history"] == second["history"]
    assert_same_weights(tmp_path / "a/model.keras", tmp_path / "b/model.keras")
    other = train_model(
        arrays, anchors, 10, tiny_fit(epochs=2, dropout=0.1, seed=12), tmp_path / "c"
    )
    assert other["history"] != first["history"]
    from tensorflow.python.framework import config

    assert not config.is_op_determinism_enabled()  # never switched on (see tasks/train.py)


def test_a_fit_builds_its_network_with_the_seed_of_its_config_and_ticker(tmp_path):
    """train_model builds every random part with an explicit seed from (config seed,
    label), so no other thread drawing from `random` can change a fit's start."""
    import keras

    from tests.test_models import _random_parts
    from tickercast.modeling.models import build_model, model_seed

    spec, arrays, anchors = sine_data()
    train_model(arrays, anchors, 10, tiny_fit(epochs=1, dropout=0.1), tmp_path, label="SINE")
    fitted = keras.models.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    seeded = build_model("stacked_lstm", 10, 1, [6, 4], dropout=0.1, seed=model_seed(11, "SINE"))
    parts = _random_parts(fitted)
    assert parts and all(isinstance(seed, int) for _, seed in parts), parts
    assert parts == _random_parts(seeded)


@pytest.mark.slow  # four trainings, ~40 s on 2 busy cores
def test_trainings_in_threads_match_their_solo_runs(tmp_path):
    """The flow may train tickers in threads: seeds and the dtype policy are
    process-wide, yet each thread's model must come out as if trained alone."""
    from concurrent.futures import ThreadPoolExecutor

    spec, arrays, anchors = sine_data()
    configs = {"a": tiny_fit(epochs=1), "b": tiny_fit(epochs=1, seed=5, dropout=0.2)}
    solo = {
        k: train_model(arrays, anchors, 10, c, tmp_path / f"solo-{k}") for k, c in configs.items()
    }
    with ThreadPoolExecutor(2) as pool:
        futures = {
            k: pool.submit(train_model, arrays, anchors, 10, c, tmp_path / f"thread-{k}")
            for k, c in configs.items()
        }
        threaded = {k: f.result() for k, f in futures.items()}
    for k in configs:
        assert threaded[k]["history"] == solo[k]["history"], k
        assert_same_weights(
            tmp_path / f"solo-{k}/model.keras", tmp_path / f"thread-{k}/model.keras"
        )
    from tensorflow.python.framework import config

    assert not config.is_op_determinism_enabled()


KILLED_RUN = """
import os, sys, json
sys.path.insert(0, {root!r})
import keras
from pathlib import Path
from tests.test_train import sine_data, tiny_fit
from tickercast.modeling.train import train_model

class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == {kill_after}:
            os._exit(3)  # like a SIGKILL: no cleanup, no finally blocks

spec, arrays, anchors = sine_data()
train_model(arrays, anchors, 10, tiny_fit(), Path({out!r}), callbacks=[Kill()])
"""


def kill_a_fit(out: Path, kill_after: int, env: dict[str, str] | None = None) -> None:
    """KILLED_RUN in a child process (with `env` added), killed after `kill_after` epochs."""
    script = KILLED_RUN.format(root=str(ROOT), kill_after=kill_after, out=str(out))
    killed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        cwd=ROOT,
    )
    assert killed.returncode == 3, killed.stderr[-2000:]


def test_killed_run_resumes_after_its_last_finished_epoch(tmp_path, caplog):
    spec, arrays, anchors = sine_data()
    out = tmp_path / "interrupted"
    kill_a_fit(out, kill_after=2)
    assert not (out / "model.keras").exists()
    saved = json.loads((out / CHECKPOINTS / "epoch-0002/state.json").read_text())
    assert saved["epochs_done"] == 2 and len(saved["history"]["loss"]) == 2

    with caplog.at_level(logging.INFO):
        resumed = train_model(arrays, anchors, 10, tiny_fit(), out)
    assert "resuming after epoch 2" in caplog.text
    epochs_logged = [line for line in caplog.messages if " epoch " in line and "/4:" in line]
    assert [m.split(" epoch ")[1].split(":")[0] for m in epochs_logged] == ["3/4", "4/4"]
    assert resumed["resumed_from_epoch"] == 2 and resumed["epochs_run"] == 4
    assert not (out / CHECKPOINTS).exists()

    # the resumed run ends exactly where an uninterrupted one does (CPU, same seed)
    straight = train_model(arrays, anchors, 10, tiny_fit(), tmp_path / "straight")
    assert resumed["history"] == straight["history"]
    assert resumed["history"]["learning_rate"][-1] < TINY["learning_rate"]  # ReduceLR acted
    assert_same_weights(out / "model.keras", tmp_path / "straight/model.keras")


def test_checkpoints_wait_for_their_interval_and_a_kill_before_it_starts_over(tmp_path, caplog):
    """The default: a checkpoint only once CHECKPOINT_SECONDS of training passed (a fit
    shorter than that writes none); a run killed before its first checkpoint starts over
    and still ends where an uninterrupted one does."""
    spec, arrays, anchors = sine_data()
    out = tmp_path / "interrupted"
    kill_a_fit(out, kill_after=3, env={CHECKPOINT_SECONDS_ENV: "3600"})
    assert not (out / CHECKPOINTS).exists()  # three epochs, far less than the interval

    with caplog.at_level(logging.INFO):
        again = train_model(arrays, anchors, 10, tiny_fit(), out)
    assert "resuming" not in caplog.text and again["epochs_run"] == 4
    straight = train_model(arrays, anchors, 10, tiny_fit(), tmp_path / "straight")
    assert again["history"] == straight["history"]


@pytest.mark.parametrize(("interval", "saved"), [("3600", [4]), ("0", [1, 2, 3, 4])])
def test_a_fit_checkpoints_its_last_epoch_and_each_interval(tmp_path, monkeypatch, interval, saved):
    """Tuning's later rounds continue from a fit's last checkpoint: always written."""
    from tickercast.modeling import callbacks, checkpoints

    epochs = []

    def counting(root, epochs_done, *args):
        epochs.append(epochs_done)
        return checkpoints.save_checkpoint(root, epochs_done, *args)

    monkeypatch.setattr(callbacks, "save_checkpoint", counting)
    monkeypatch.setenv(CHECKPOINT_SECONDS_ENV, interval)
    spec, arrays, anchors = sine_data()
    fit(per_ticker_data(arrays, anchors), 10, tiny_fit(), tmp_path / "fit", label="A")
    assert epochs == saved
    assert read_state(latest_checkpoint(tmp_path / "fit"))["epochs_done"] == 4


def test_the_checkpoint_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(CHECKPOINT_SECONDS_ENV)
    assert checkpoint_seconds() == CHECKPOINT_SECONDS > 0
    monkeypatch.setenv(CHECKPOINT_SECONDS_ENV, "2.5")
    assert checkpoint_seconds() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(CHECKPOINT_SECONDS_ENV, bad)
        with pytest.raises(ValueError, match=CHECKPOINT_SECONDS_ENV):
            checkpoint_seconds()


def test_epoch_log_lines_and_tensorboard(tmp_path, caplog):
    spec, arrays, anchors = sine_data()
    cfg = tiny_fit(epochs=2, tensorboard_dir=str(tmp_path / "tb"))
    with caplog.at_level(logging.INFO):
        train_model(arrays, anchors, 10, cfg, tmp_path / "w", label="SINE")
    lines = [m for m in caplog.messages if m.startswith("SINE epoch")]
    assert len(lines) == 2
    for line in lines:
        for part in ("loss=", "val_loss=", "lr=", "samples/s="):
            assert part in line
        assert "\r" not in line
    assert "training on cpu" in caplog.text
    assert list((tmp_path / "tb" / "SINE").rglob("events.out.tfevents.*"))


def test_progress_artifact_inside_a_prefect_run(prefect_server, tmp_path):
    from prefect import flow
    from prefect.logging import get_run_logger

    from tests.prefect_runs import flow_run_artifacts

    spec, arrays, anchors = sine_data()

    @flow(persist_result=False)
    def train_in_flow():
        train_model(
            arrays, anchors, 10, tiny_fit(epochs=2), tmp_path, get_run_logger(), label="SINE"
        )

    state = train_in_flow(return_state=True)
    assert state.is_completed(), state.message
    # this run's artifacts only: other tests' runs publish the same key
    (progress,) = [a for a in flow_run_artifacts(state) if a.key == "training-sine"]
    assert progress.type == "progress"
    assert float(progress.data) == 100.0
    # outside a run: no artifact, no error
    train_model(arrays, anchors, 10, tiny_fit(epochs=1), tmp_path / "plain", label="SINE")


def test_held_validation_windows_change_no_number_of_a_fit(tmp_path, monkeypatch):
    """The validation windows gathered once and held (`held_batches`) give the fit the same
    losses, early stopping and weights as gathering them again each epoch."""
    import tickercast.modeling.windows as windows

    spec, arrays, anchors = sine_data()
    cfg = tiny_fit(epochs=3)
    held = train_model(arrays, anchors, 10, cfg, tmp_path / "held")
    monkeypatch.setattr(windows, "HELD_BYTES", 0)  # every stream too big to hold
    gathered = train_model(arrays, anchors, 10, cfg, tmp_path / "gathered")
    assert held["history"]["val_loss"] == gathered["history"]["val_loss"]
    assert held["history"] == gathered["history"]
    assert_same_weights(tmp_path / "held/model.keras", tmp_path / "gathered/model.keras")


def test_fits_of_one_seed_set_tensorflows_global_seed_once(tmp_path, monkeypatch):
    """Setting TensorFlow's global seed clears its runtime's caches (each fit then
    re-optimised its traced steps): a process's fits of one run seed set it once, and
    still train to the same weights, with dropout drawing its own seeds."""
    import keras

    from tickercast.modeling import train

    calls: list[int] = []
    real = keras.utils.set_random_seed
    monkeypatch.setattr(keras.utils, "set_random_seed", lambda s: (calls.append(s), real(s)))
    monkeypatch.setattr(train, "_global_seed", [])
    spec, arrays, anchors = sine_data()
    cfg = tiny_fit(epochs=2, dropout=0.1)
    first = train_model(arrays, anchors, 10, cfg, tmp_path / "a")
    second = train_model(arrays, anchors, 10, cfg, tmp_path / "b")
    assert calls == [cfg.training.seed]
    assert first["history"] == second["history"]
    assert_same_weights(tmp_path / "a/model.keras", tmp_path / "b/model.keras")
    train_model(arrays, anchors, 10, tiny_fit(epochs=2, seed=12), tmp_path / "c")
    assert calls == [cfg.training.seed, 12]


def test_progress_artifact_updated_at_most_every_few_seconds(monkeypatch):
    """Each update is a blocking API call: after an epoch only when PROGRESS_EVERY_S
    passed since the last, and always when the fit ends."""
    import logging
    from types import SimpleNamespace

    from tickercast.modeling import callbacks

    calls = []

    def record(artifact, value, key, description, logger):
        calls.append(value)
        return "artifact-id"

    monkeypatch.setattr(callbacks, "progress", record)
    monkeypatch.setattr(callbacks, "in_prefect_run", lambda: True)
    now = [0.0]
    log = callbacks.EpochLog(logging.getLogger("t"), 100, "X", 0, clock=lambda: now[0])
    log.set_model(SimpleNamespace(optimizer=SimpleNamespace(learning_rate=1e-3)))
    log.set_params({"epochs": 10})
    log.on_train_begin()
    for epoch in range(10):
        now[0] += 0.6  # a nightly one-thread epoch
        log.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 1.0})
    log.on_train_end()
    assert callbacks.PROGRESS_EVERY_S == 2.0
    assert calls == [0.0, 40.0, 80.0, 100.0]
