"""The architecture family: each builds, trains a tiny epoch, saves and loads back."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tickercast.market.sources import sine_prices
from tickercast.modeling.models import (
    MODELS,
    bind_ticker,
    build_model,
    cudnn_problems,
    lstm_flops_per_sample,
    model_seed,
)
from tickercast.modeling.preprocess import preprocess
from tickercast.modeling.train import fit, per_ticker_data, save_model
from tickercast.modeling.windows import gather_windows, split_anchors
from tickercast.sections import FitSpec, PreprocessSettings

PRE = {
    "start": None,
    "end": None,
    "features": ["close", "log_return"],
    "lookback": 8,
    "horizon": 1,
    "target": "close",
    "val_fraction": 0.15,
    "test_fraction": 0.15,
}
TRAIN = {
    "units": [6, 4],
    "learning_rate": 1e-2,
    "clipvalue": 1.0,
    "epochs": 1,
    "batch_size": 64,
    "patience": 3,
    "seed": 3,
}


@pytest.fixture(scope="module")
def sine():
    spec, arrays = preprocess(sine_prices().prices, PreprocessSettings(**PRE), "SINE")
    anchors = split_anchors(len(arrays["x"]), spec.n_train, spec.n_val, 8, 1)
    return spec, arrays, anchors


@pytest.mark.parametrize("name", MODELS)
def test_every_architecture_trains_saves_and_loads_back(name, sine, tmp_path):
    import keras

    spec, arrays, anchors = sine
    cfg = {**TRAIN, "model": name, "dropout": 0.1, "l2": 1e-4}
    summary, model = fit(per_ticker_data(arrays, anchors), 8, FitSpec(**cfg), tmp_path / "w")
    assert summary["epochs_run"] == 1 and np.isfinite(summary["history"]["loss"][0])
    assert model.losses, "l2 regularisation should add a loss term"
    assert any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    path = tmp_path / "model.keras"
    save_model(model, path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    windows = gather_windows(arrays["x"], anchors["test"], 8)
    np.testing.assert_array_equal(
        model.predict(windows, verbose=0), loaded.predict(windows, verbose=0)
    )
    assert cudnn_problems(loaded) == []  # defaults keep every LSTM cuDNN-eligible


def test_multi_step_output_width():
    model = build_model("lstm_attention", 12, 3, [5], outputs=4)
    assert model.output_shape == (None, 4)
    assert build_model("cnn_lstm", 12, 3, [5, 3]).get_layer("conv_0").filters == 5


@pytest.mark.parametrize(
    "name, units, fragment",
    [("transformer", [4], "valid: ['stacked_lstm'"), ("cnn_lstm", [4], "at least 2")],
)
def test_bad_architecture_refused(name, units, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")):
        build_model(name, 10, 1, units)


def test_recurrent_dropout_breaks_cudnn_and_training_warns(sine, tmp_path, caplog):
    model = build_model("bilstm", 8, 2, [4, 3], recurrent_dropout=0.2)
    problems = cudnn_problems(model)
    assert len(problems) == 4 and all("recurrent_dropout=0.2" in p for p in problems)
    spec, arrays, anchors = sine
    cfg = {**TRAIN, "model": "lstm", "units": [4], "recurrent_dropout": 0.2}
    with caplog.at_level(logging.WARNING):
        fit(per_ticker_data(arrays, anchors), 8, FitSpec(**cfg), tmp_path)
    assert "not eligible for the cuDNN kernel" in caplog.text and "lstm_0" in caplog.text


def test_bound_ticker_model_equals_global_model_for_that_ticker():
    import keras

    rng = np.random.default_rng(0)
    kwargs = {"name": "stacked_lstm", "lookback": 6, "n_features": 2, "units": [5, 3]}
    model = build_model(n_tickers=3, ticker_embedding=2, **kwargs)
    model.get_layer("ticker_embedding").set_weights([rng.normal(size=(3, 2))])
    windows = rng.normal(size=(7, 6, 2)).astype("float32")
    for index in range(3):
        ids = np.full(7, index, dtype="int32")
        expected = model.predict({"window": windows, "ticker": ids}, verbose=0)
        bound = bind_ticker(model, index, **kwargs)
        assert len(bound.inputs) == 1
        np.testing.assert_allclose(bound.predict(windows, verbose=0), expected, rtol=1e-6)
        assert isinstance(bound.get_layer("ticker_constant"), keras.layers.Dense)


def test_lstm_flops_count():
    model = build_model("stacked_lstm", 10, 2, [8, 4])
    # layer 1: 8 units over 2 inputs; layer 2: 4 units over 8 inputs; 10 steps
    assert lstm_flops_per_sample(model, 10) == 10 * (2 * 4 * 8 * (2 + 8) + 2 * 4 * 4 * (8 + 4))


# --- explicit seeds: initial weights that no other thread can change ------------------


def _layers(model):
    """Every layer of `model`: nested models' layers and a Bidirectional's two directions
    too (public attributes: `layers`, `forward_layer`, `backward_layer`)."""
    for layer in model.layers:
        yield layer
        yield from _layers(layer) if hasattr(layer, "layers") else ()
        for direction in ("forward_layer", "backward_layer"):
            if hasattr(layer, direction):
                yield getattr(layer, direction)


def _random_parts(model) -> list[tuple[str, object]]:
    """(where, seed) of every random part: initializers, LSTM cells, Dropout layers."""
    import keras

    parts = []
    for layer in _layers(model):
        if isinstance(layer, keras.layers.LSTMCell):
            continue  # its LSTM's config repeats the cell's
        config = layer.get_config()
        for key, value in config.items():
            if key.endswith("initializer") and isinstance(value, dict):
                if value.get("class_name") not in ("Zeros", "Ones", "Constant"):
                    parts.append((f"{layer.name}.{key}", value["config"].get("seed")))
        if isinstance(layer, keras.layers.LSTM | keras.layers.Dropout):
            parts.append((f"{layer.name}.seed", config["seed"]))
    return parts


@pytest.mark.parametrize("name", MODELS)
def test_a_seeded_model_leaves_no_random_part_to_keras(name):
    units = [5, 3]
    model = build_model(name, 8, 2, units, dropout=0.1, seed=model_seed(42, "AAPL"))
    parts = _random_parts(model)
    assert len(parts) >= 4, parts
    assert all(isinstance(seed, int) for _, seed in parts), parts
    seeds = [seed for where, seed in parts if "initializer" in where]
    assert len(set(seeds)) == len(seeds), "two weights share a seed: they would start equal"
    glob = build_model("stacked_lstm", 8, 2, units, n_tickers=3, ticker_embedding=2, seed=1)
    assert all(isinstance(seed, int) for _, seed in _random_parts(glob))


def test_seeded_weights_depend_on_the_seed_and_ticker_alone(tmp_path):
    import random

    import keras

    def weights(seed, draw_state):
        random.seed(draw_state)  # what unseeded Keras layers draw their seeds from
        return build_model("bilstm", 8, 2, [5, 3], dropout=0.1, seed=seed).get_weights()

    seed = model_seed(42, "AAPL")
    for a, b in zip(weights(seed, 1), weights(seed, 2), strict=True):
        np.testing.assert_array_equal(a, b)
    # the control: unseeded, the same build follows the state of `random`
    assert not np.array_equal(weights(None, 1)[0], weights(None, 2)[0])
    assert not np.array_equal(weights(seed, 1)[0], weights(model_seed(42, "MSFT"), 1)[0])
    assert model_seed(42, "AAPL") == seed != model_seed(43, "AAPL")
    model = build_model("bilstm", 8, 2, [5, 3], seed=seed)
    fwd, bwd = model.get_layer("bilstm_0").forward_layer, model.get_layer("bilstm_0").backward_layer
    assert not np.array_equal(fwd.get_weights()[0], bwd.get_weights()[0])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    windows = np.random.default_rng(0).normal(size=(4, 8, 2)).astype("float32")
    np.testing.assert_array_equal(
        model.predict(windows, verbose=0), loaded.predict(windows, verbose=0)
    )


@pytest.mark.slow  # three fits (~15 s on 2 busy cores)
def test_same_seed_fits_racing_in_threads_give_identical_weights(sine):
    """Two same-seed fits in threads while a third thread keeps drawing from `random`:
    identical weights, equal to the same fit run alone."""
    import random
    import threading
    from concurrent.futures import ThreadPoolExecutor

    spec, arrays, anchors = sine
    x = gather_windows(arrays["x"], anchors["train"], 8)
    y = arrays["y"][anchors["train"]]
    seed = model_seed(7, "SINE")

    def fit_one(start: threading.Barrier | None = None):
        model = build_model("stacked_lstm", 8, x.shape[2], [6, 4], dropout=0.2, seed=seed)
        if start is not None:
            start.wait()
        model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    solo = fit_one()
    stop, start = threading.Event(), threading.Barrier(3)
    drawn = []

    def drawer():
        start.wait()
        while not stop.is_set():
            drawn.append(random.random())

    with ThreadPoolExecutor(3) as pool:
        noise = pool.submit(drawer)
        fits = [pool.submit(fit_one, start) for _ in range(2)]
        results = [f.result() for f in fits]
        stop.set()
        noise.result()
    assert len(drawn) > 1000  # the drawer really drew while the fits ran
    for got in results:
        for a, b in zip(solo, got, strict=True):
            np.testing.assert_array_equal(a, b)


def _unroll_flags(config) -> list[bool]:
    """Every `unroll` a saved Keras config records, however deeply its layers nest."""
    if isinstance(config, dict):
        own = [config["unroll"]] if "unroll" in config else []
        return own + [flag for value in config.values() for flag in _unroll_flags(value)]
    if isinstance(config, list):
        return [flag for value in config for flag in _unroll_flags(value)]
    return []


def test_a_one_thread_workers_fit_trains_unrolled_and_saves_keras_loop(sine, tmp_path, monkeypatch):
    import json
    import zipfile

    from tickercast.layout import MODEL_FILE
    from tickercast.modeling import train
    from tickercast.modeling.checkpoints import save_checkpoint
    from tickercast.modeling.models import lstm_layers

    spec, arrays, anchors = sine
    cfg = FitSpec(**{**TRAIN, "model": "bilstm"})
    _, alone = fit(per_ticker_data(arrays, anchors), 8, cfg, tmp_path / "a")
    assert not any(layer.unroll for layer in lstm_layers(alone))  # one fit: Keras' loop
    monkeypatch.setattr(train, "one_thread_worker", lambda: True)
    summary, model = fit(per_ticker_data(arrays, anchors), 8, cfg, tmp_path / "w")
    assert [layer.unroll for layer in lstm_layers(model)] == [True] * 4
    assert summary["cudnn_problems"] == []  # judged on the model as saved
    save_model(model, tmp_path / "model.keras")
    save_checkpoint(tmp_path / "ck", 1, model, {}, None)
    for path in (tmp_path / "model.keras", tmp_path / "ck" / "epoch-0001" / MODEL_FILE):
        config = json.loads(zipfile.ZipFile(path).read("config.json"))
        assert _unroll_flags(config) == [False] * 4, path
    assert [layer.unroll for layer in lstm_layers(model)] == [True] * 4  # still unrolled


def test_an_unrolled_fit_is_the_loops_fit(sine, tmp_path, monkeypatch):
    """Unrolling changes no arithmetic: the same losses and weights as Keras' loop."""
    from tickercast.modeling import train

    spec, arrays, anchors = sine
    cfg = FitSpec(**{**TRAIN, "epochs": 3})
    monkeypatch.setattr(train, "one_thread_worker", lambda: True)
    unrolled, fast = fit(per_ticker_data(arrays, anchors), 8, cfg, tmp_path / "u")
    assert all(layer.unroll for layer in train.lstm_layers(fast))
    monkeypatch.setattr(train, "one_thread_worker", lambda: False)
    looped, slow = fit(per_ticker_data(arrays, anchors), 8, cfg, tmp_path / "l")
    assert not any(layer.unroll for layer in train.lstm_layers(slow))
    np.testing.assert_allclose(unrolled["history"]["loss"], looped["history"]["loss"], rtol=1e-5)
    for a, b in zip(fast.get_weights(), slow.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
