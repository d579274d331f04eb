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
