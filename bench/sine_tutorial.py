"""The reference tutorial's procedure on its sine wave vs the pipeline, side by side.

Tutorial (written fresh here): sin(arange(0, 20*pi, 0.1)), MinMaxScaler over the whole
series, 80/20 split, Python-loop `create_dataset` (look_back 10, its `- 1` included),
LSTM(50) -> Dense(1), Adam, batch 32, 100 epochs.

Pipeline: the same wave through Tickercast's own functions (the ones the flow's tasks
call): train-only scaling, 70/15/15 chronological split, index windows in tf.data,
LSTM(50) -> Dense(1) with clipping, ReduceLROnPlateau, EarlyStopping and a checkpoint
per epoch; its clock (preprocessing included) stops at the first epoch whose validation
MSE reaches the tutorial's final one (target: <= 25% of the tutorial's wall time).

Both MSEs are in the wave's own units, so neither scaler flatters its side.
Run: python bench/sine_tutorial.py  (writes a RESULTS.md row)
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
PIPELINE_LR = 1e-2  # the pipeline's own setting; the tutorial keeps Adam's default 1e-3


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


def pipeline_config(learning_rate: float):
    """The tutorial's network and fit as a Tickercast config: one LSTM, the close alone."""
    from tickercast.config import RetrainConfig

    return RetrainConfig(
        start=None,
        end=None,
        features=["close"],
        lookback=LOOK_BACK,
        horizon=1,
        target="close",
        val_fraction=0.15,
        test_fraction=0.15,
        model="lstm",
        units=[UNITS],
        learning_rate=learning_rate,
        clipvalue=1.0,
        epochs=EPOCHS,
        batch_size=BATCH,
        patience=10,
        seed=7,
    )


def reach_callback(target_mse: float, span2: float, started: float, reached: dict):
    """A Keras callback that fills `reached` (seconds since `started`, epoch, MSE) at the
    first epoch whose validation MSE in the wave's units is <= `target_mse`, and stops."""
    import keras

    class Reach(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mse = (logs or {})["val_loss"] * span2  # scaled MSE -> wave units (l2 = 0)
            if mse <= target_mse and not reached:
                reached.update(seconds=time.perf_counter() - started, epoch=epoch + 1, mse=mse)
                self.model.stop_training = True

    return Reach()


def pipeline(target_mse: float, learning_rate: float = PIPELINE_LR) -> dict:
    """Tickercast's own functions on the same wave; clock stops at the first epoch whose
    validation MSE (in the wave's units) is <= `target_mse`, and training stops there."""
    import keras

    from tickercast.market.sources import sine_prices
    from tickercast.modeling.preprocess import preprocess, to_prices
    from tickercast.modeling.train import train_model
    from tickercast.modeling.windows import gather_windows, split_anchors

    started = time.perf_counter()
    settings = pipeline_config(learning_rate)
    spec, arrays = preprocess(sine_prices().prices, settings.preprocessing, "SINE")
    n = len(arrays["x"])
    anchors = split_anchors(n, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    span2 = (spec.target_scaler.max[0] - spec.target_scaler.min[0]) ** 2
    reached: dict = {}
    reach = reach_callback(target_mse, span2, started, reached)
    with tempfile.TemporaryDirectory() as out:
        summary = train_model(
            arrays, anchors, spec.lookback, settings.fit_spec(), Path(out), callbacks=[reach]
        )
        model = keras.models.load_model(Path(out) / "model.keras")
    seconds = time.perf_counter() - started
    val = anchors["val"]
    scaled = model.predict(gather_windows(arrays["x"], val, spec.lookback), verbose=0)
    predicted = to_prices(spec, scaled, arrays["close"][val])[:, 0]
    actual = arrays["y_price"][val, 0]
    return {
        "seconds": seconds,
        "reached": reached or None,
        "val_mse": float(np.mean((predicted - actual) ** 2)),
        "epochs": summary["epochs_run"],
        "learning_rate": learning_rate,
    }


def warm_up() -> None:
    """Pay TensorFlow's one-off start-up before either side's clock runs."""
    import keras

    model = keras.Sequential(
        [keras.Input((LOOK_BACK, 1)), keras.layers.LSTM(4), keras.layers.Dense(1)]
    )
    model.compile(loss="mse", optimizer="adam")
    model.fit(np.zeros((8, LOOK_BACK, 1)), np.zeros((8, 1)), epochs=1, verbose=0)


def main() -> dict:
    import platform

    warm_up()
    tut = tutorial()
    pipe = pipeline(tut["val_mse"])
    reach = pipe["reached"]
    if reach:
        ratio = reach["seconds"] / tut["seconds"]
        got = (
            f"pipeline reached it after {reach['epoch']} epochs in {reach['seconds']:.1f} s "
            f"(val MSE {pipe['val_mse']:.2e}; Adam lr {pipe['learning_rate']:g}, "
            "per-epoch checkpoints included)"
        )
        verdict = f"time to the same val MSE {ratio:.2f}x (target <= 0.25x)"
    else:
        got = (
            f"pipeline did NOT reach it in {pipe['epochs']} epochs ({pipe['seconds']:.1f} s, "
            f"best val MSE {pipe['val_mse']:.2e})"
        )
        verdict = "not reached"
    row = (
        f"| sine: tutorial vs pipeline to the tutorial's val MSE (LSTM({UNITS}), batch "
        f"{BATCH}) | tutorial {tut['seconds']:.1f} s, val MSE {tut['val_mse']:.2e} "
        f"({EPOCHS} epochs) | {got} | {verdict} |"
    )
    print(row)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    return {"tutorial": tut, "pipeline": pipe, "row": row}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.results import record

    result = main()
    record("sine_tutorial", result["row"])
