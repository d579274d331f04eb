"""The reference tutorial's procedure on its sine wave vs the pipeline, side by side.

Tutorial (written fresh here): sin(arange(0, 20*pi, 0.1)), MinMaxScaler over the whole
series, 80/20 split, Python-loop `create_dataset` (look_back 10, its `- 1` included),
LSTM(50) -> Dense(1), Adam, batch 32, 100 epochs.

Pipeline: the same wave through Tickercast's own functions (the ones the flow's tasks
call): train-only scaling, 70/15/15 chronological split, index windows in tf.data,
LSTM(50) -> Dense(1) with clipping and EarlyStopping on validation loss.

Both report wall time and final validation MSE in the wave's own units, so neither
scaler flatters its side. Run: python bench/sine_tutorial.py  (writes a RESULTS.md row)
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LOOK_BACK, EPOCHS, BATCH, UNITS = 10, 100, 32, 50


def tutorial() -> dict:
    import keras

    keras.utils.set_random_seed(7)
    wave = np.sin(np.arange(0, 20 * math.pi, 0.1)).reshape(-1, 1)
    lo, hi = wave.min(), wave.max()
    scaled = (wave - lo) / (hi - lo)
    train_size = int(len(scaled) * 0.8)
    train, test = scaled[:train_size], scaled[train_size:]

    def create_dataset(dataset, look_back=1):
        data_x, data_y = [], []
        for i in range(len(dataset) - look_back - 1):
            data_x.append(dataset[i : (i + look_back), 0])
            data_y.append(dataset[i + look_back, 0])
        return np.array(data_x), np.array(data_y)

    started = time.perf_counter()
    train_x, train_y = create_dataset(train, LOOK_BACK)
    test_x, test_y = create_dataset(test, LOOK_BACK)
    train_x = train_x.reshape(len(train_x), LOOK_BACK, 1)
    test_x = test_x.reshape(len(test_x), LOOK_BACK, 1)
    model = keras.Sequential(
        [keras.Input((LOOK_BACK, 1)), keras.layers.LSTM(UNITS), keras.layers.Dense(1)]
    )
    model.compile(loss="mse", optimizer="adam")
    model.fit(train_x, train_y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    seconds = time.perf_counter() - started
    predicted = model.predict(test_x, verbose=0)[:, 0] * (hi - lo) + lo
    actual = test_y * (hi - lo) + lo
    return {"seconds": seconds, "val_mse": float(np.mean((predicted - actual) ** 2))}


def pipeline() -> dict:
    from tasks.preprocess import preprocess
    from tasks.sources import sine_prices
    from tasks.train import train_model
    from tasks.windows import gather_windows, split_anchors

    cfg = {
        "start": None,
        "end": None,
        "features": ["close"],
        "lookback": LOOK_BACK,
        "horizon": 1,
        "target": "close",
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "model": "lstm",
        "units": [UNITS],
        "learning_rate": 1e-3,
        "clipvalue": 1.0,
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "patience": 10,
        "seed": 7,
    }
    started = time.perf_counter()
    spec, arrays = preprocess(sine_prices().prices, cfg, "SINE")
    n = len(arrays["x"])
    anchors = split_anchors(n, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    with tempfile.TemporaryDirectory() as out:
        summary = train_model(arrays, anchors, spec.lookback, cfg, Path(out))
        import keras

        model = keras.models.load_model(Path(out) / "model.keras")
    seconds = time.perf_counter() - started
    val = anchors["val"]
    scaled = model.predict(gather_windows(arrays["x"], val, spec.lookback), verbose=0)
    predicted = spec.target_scaler.inverse(scaled)[:, 0]
    actual = arrays["y_price"][val, 0]
    return {
        "seconds": seconds,
        "val_mse": float(np.mean((predicted - actual) ** 2)),
        "epochs": summary["epochs_run"],
    }


def main() -> dict:
    import platform

    tut, pipe = tutorial(), pipeline()
    row = (
        f"| sine: tutorial vs pipeline (LSTM({UNITS}), batch {BATCH}) | "
        f"tutorial {tut['seconds']:.1f} s, val MSE {tut['val_mse']:.2e} ({EPOCHS} epochs) | "
        f"pipeline {pipe['seconds']:.1f} s, val MSE {pipe['val_mse']:.2e} "
        f"({pipe['epochs']} epochs, early-stopped) | "
        f"time ratio {pipe['seconds'] / tut['seconds']:.2f}x |"
    )
    print(row)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    return {"tutorial": tut, "pipeline": pipe, "row": row}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.results import record

    result = main()
    record("sine_tutorial", result["row"])
