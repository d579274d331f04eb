"""Pooled networks (tickercast.modeling.pool): a fit on a network another ticker already
trained in this process comes out bit for bit as a fit on a fresh build, and reuses its
traced training step."""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pytest

from tests.test_train import assert_same_weights, sine_data, tiny_fit
from tickercast.modeling import pool
from tickercast.modeling.models import MODELS
from tickercast.modeling.train import TrainingDivergedError, fit, per_ticker_data, train_model


@pytest.fixture(autouse=True)
def empty_pool():
    pool.clear()
    yield
    pool.clear()


def other_ticker(arrays: dict) -> dict:
    """Different data of the same shape: another ticker for the pooled network."""
    return {**arrays, "x": arrays["x"][::-1].copy(), "y": arrays["y"][::-1].copy()}


def test_a_pooled_fit_equals_a_fresh_fit_after_another_ticker(tmp_path):
    spec, arrays, anchors = sine_data()
    # dropout (layer seed states), the learning rate (ReduceLROnPlateau changes it) and
    # Adam's step count and slots: all of it must be reset between fits
    cfg = tiny_fit(epochs=3, dropout=0.1)
    fresh, model = fit(per_ticker_data(arrays, anchors), 10, cfg, tmp_path / "fresh", label="A")
    fresh_weights = model.get_weights()
    assert pool.pooled_count() == 0  # no lease: nothing pooled

    with ExitStack() as lease:
        other, model_b = fit(
            per_ticker_data(other_ticker(arrays), anchors),
            10,
            cfg,
            tmp_path / "b",
            label="B",
            lease=lease,
        )
        step = model_b.train_function
        model_b.optimizer.learning_rate.assign(1e-6)  # as a plateau would have cut it
    assert other["history"] != fresh["history"]
    assert pool.pooled_count() == 1
    with ExitStack() as lease:
        pooled, model_a = fit(
            per_ticker_data(arrays, anchors), 10, cfg, tmp_path / "a", label="A", lease=lease
        )
        assert pool.pooled_count() == 0  # leased: no other fit can take it meanwhile
    assert model_a is model_b and model_a.train_function is step  # not traced again
    assert pooled["history"] == fresh["history"]
    for a, b in zip(model_a.get_weights(), fresh_weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_model_pools_and_saves_what_a_fresh_fit_saves(tmp_path):
    spec, arrays, anchors = sine_data()
    cfg = tiny_fit(epochs=2)
    train_model(other_ticker(arrays), anchors, 10, cfg, tmp_path / "b", label="B")
    assert pool.pooled_count() == 1
    pooled = train_model(arrays, anchors, 10, cfg, tmp_path / "a", label="A")
    pool.clear()
    fresh = train_model(arrays, anchors, 10, cfg, tmp_path / "fresh", label="A")
    assert pooled["history"] == fresh["history"]
    assert pooled["shrinkage"] == fresh["shrinkage"]
    assert_same_weights(tmp_path / "a/model.keras", tmp_path / "fresh/model.keras")


def test_a_failed_fit_does_not_pool_its_network(tmp_path):
    spec, arrays, anchors = sine_data()
    arrays = dict(arrays, y=arrays["y"].copy())
    arrays["y"][anchors["train"][3]] = np.nan
    with pytest.raises(TrainingDivergedError):
        train_model(arrays, anchors, 10, tiny_fit(epochs=1), tmp_path)
    assert pool.pooled_count() == 0


def test_architectures_pool_apart_and_the_oldest_goes_first(tmp_path):
    spec, arrays, anchors = sine_data()
    data = per_ticker_data(arrays, anchors)
    for i, units in enumerate([[6, 4], [5, 3], [6, 4]]):
        with ExitStack() as lease:
            fit(data, 10, tiny_fit(epochs=1, units=units), tmp_path / str(i), lease=lease)
    assert pool.pooled_count() == 2  # [6, 4] once (reused), [5, 3] once
    for i in range(pool.MAX_ARCHITECTURES):
        with ExitStack() as lease:
            fit(data, 10, tiny_fit(epochs=1, units=[2 + i, 2]), tmp_path / f"u{i}", lease=lease)
    assert pool.pooled_count() == pool.MAX_ARCHITECTURES


@pytest.mark.parametrize("head", ["point", "quantile"])
@pytest.mark.parametrize("name", MODELS)
def test_a_reset_network_has_the_config_of_a_fresh_build(name, head):
    """Weights, layer seed states and every seed its config records (what a saved model
    tells of how it started) become those of a fresh build with the new seed."""
    import tensorflow as tf

    from tickercast.modeling.models import build_model, model_seed

    kwargs = dict(name=name, lookback=8, n_features=2, units=[5, 3], dropout=0.1, head=head)
    first = pool.built(build_model(**kwargs, seed=model_seed(1, "B")), tf.distribute.get_strategy())
    fresh = build_model(**kwargs, seed=model_seed(1, "A"), compile=False)
    assert first.model.get_config() != fresh.get_config()  # the seeds differ
    pool.reset(first, fresh)
    assert first.model.get_config() == fresh.get_config()
    for a, b in zip(first.model.variables, fresh.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))


def test_a_worker_resets_keras_state_every_few_fits_not_after_each():
    """`between_fits` (a one-thread Dask worker's policy, tasks/runners.training_lock)
    clears Keras' state every `every` fits: the garbage collection it includes costs about
    as much as a kept night's whole fit (bench/fit_memory.py measures what is held)."""
    import keras

    from tickercast.modeling import threads

    cleared = [i for i in range(6) if threads.between_fits(every=3)]
    assert len(cleared) == 2 and cleared[1] - cleared[0] == 3  # every third, whatever came before
    keras.layers.Dense(1), keras.layers.Dense(1)  # Keras names these dense, dense_1, ...
    assert keras.layers.Dense(1).name != "dense"
    while not threads.between_fits(every=3):
        assert keras.layers.Dense(1).name != "dense"  # no reset in between
    assert keras.layers.Dense(1).name == "dense"  # the reset restarted Keras' names
