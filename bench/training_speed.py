"""Training throughput, side by side in one run.

(b) samples/s of the pipeline's training (`tickercast.modeling.train.fit`: index windows gathered in
tf.data, per-epoch checkpoint, validation, EarlyStopping/ReduceLR, epoch log) against
plain `model.fit` on pre-built window arrays, same model, batch size and data.
Target: >= 1.0x.

(c) achieved GFLOP/s of that LSTM training (LSTM matmul FLOPs only: 2*4*units*(inputs+
units) per step forward, x3 for forward + backward) against a float32 matmul measured
in the same process, i.e. how much of the machine's dense-math speed small-batch LSTM
training actually uses.

Epoch 1 (tracing) is excluded; samples/s = training windows / epoch wall time.
Run: python bench/training_speed.py  (writes two RESULTS.md rows)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROWS, FEATURES, LOOKBACK, BATCH, EPOCHS = 12_000, 6, 60, 32, 3
UNITS = [64, 32]
CFG = {
    "model": "stacked_lstm",
    "units": UNITS,
    "learning_rate": 1e-3,
    "clipvalue": 1.0,
    "epochs": EPOCHS,
    "batch_size": BATCH,
    "patience": 10,
    "seed": 3,
}


def data():
    from tickercast.modeling.windows import split_anchors

    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(ROWS, FEATURES)), axis=0)
    x = ((walk - walk.min(0)) / (walk.max(0) - walk.min(0))).astype(np.float32)
    y = np.roll(x[:, :1], -1, axis=0)
    anchors = split_anchors(ROWS, int(ROWS * 0.7), int(ROWS * 0.15), LOOKBACK, 1)
    return x, y, anchors


def epoch_timer():
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t0)

    return Timer()


def pipeline(x, y, anchors) -> dict:
    from tickercast.modeling.train import TrainData, fit
    from tickercast.sections import FitSpec

    timer = epoch_timer()
    with tempfile.TemporaryDirectory() as out:
        _, model = fit(
            TrainData(x, y, anchors["train"], anchors["val"]),
            LOOKBACK,
            FitSpec(**CFG),
            Path(out),
            callbacks=[timer],
        )
    steady = float(np.mean(timer.seconds[1:]))
    return {"samples_s": len(anchors["train"]) / steady, "model": model}


def plain(x, y, anchors) -> dict:
    import keras

    from tickercast.modeling.models import build_model
    from tickercast.modeling.windows import gather_windows

    keras.utils.set_random_seed(CFG["seed"])
    xt, yt = gather_windows(x, anchors["train"], LOOKBACK), y[anchors["train"]]
    xv, yv = gather_windows(x, anchors["val"], LOOKBACK), y[anchors["val"]]
    model = build_model("stacked_lstm", LOOKBACK, FEATURES, UNITS, outputs=1)
    timer = epoch_timer()
    model.fit(
        xt,
        yt,
        batch_size=BATCH,
        epochs=EPOCHS,
        validation_data=(xv, yv),
        shuffle=True,
        callbacks=[timer],
        verbose=0,
    )
    steady = float(np.mean(timer.seconds[1:]))
    return {"samples_s": len(anchors["train"]) / steady}


def matmul_gflops(n: int = 1024, repeats: int = 30) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)

    @tf.function
    def run(a, b):
        out = a
        for _ in range(repeats):
            out = tf.matmul(out, b) * 1e-3
        return out

    run(a, b).numpy()  # trace and warm up
    started = time.perf_counter()
    run(a, b).numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def main() -> dict:
    from tickercast.modeling.models import lstm_flops_per_sample

    x, y, anchors = data()
    base = plain(x, y, anchors)
    pipe = pipeline(x, y, anchors)
    flops = 3 * lstm_flops_per_sample(pipe["model"], LOOKBACK)
    achieved = flops * pipe["samples_s"] / 1e9
    peak = matmul_gflops()
    return {
        "plain": base["samples_s"],
        "pipeline": pipe["samples_s"],
        "ratio": pipe["samples_s"] / base["samples_s"],
        "lstm_gflops": achieved,
        "matmul_gflops": peak,
        "flops_per_sample": flops,
    }


if __name__ == "__main__":
    from bench.results import record

    r = main()
    model = f"LSTM{UNITS} on {LOOKBACK}x{FEATURES} windows, batch {BATCH}"
    speed = (
        f"| training samples/s: pipeline vs plain model.fit ({model}) | "
        f"plain model.fit on pre-built arrays {r['plain']:.0f} samples/s | "
        f"pipeline (tf.data gather, checkpoint + log per epoch) {r['pipeline']:.0f} samples/s | "
        f"{r['ratio']:.2f}x (target >= 1.0x) |"
    )
    gflops = (
        f"| LSTM training GFLOP/s vs float32 matmul ({model}) | "
        f"tf.matmul 1024x1024 float32 {r['matmul_gflops']:.1f} GFLOP/s | "
        f"LSTM training {r['lstm_gflops']:.2f} GFLOP/s "
        f"({r['flops_per_sample'] / 1e6:.1f} MFLOP/sample) | "
        f"{r['lstm_gflops'] / r['matmul_gflops']:.1%} of matmul |"
    )
    print(speed)
    print(gflops)
    record("training_speed", speed)
    record("training_gflops", gflops)
