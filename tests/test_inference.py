"""Predictions through a traced twin per architecture (tickercast.modeling.inference):
equal to the eager call bit for bit for every network kind and head, each model's own
weights every time, one twin per architecture, and safe from threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tickercast.modeling import inference
from tickercast.modeling.models import MODELS, build_model, model_seed, split_heads


@pytest.fixture(autouse=True)
def no_twins():
    inference.clear()
    yield
    inference.clear()


def network(name: str = "stacked_lstm", ticker: str = "A", head: str = "point", **changes):
    kwargs = dict(name=name, lookback=8, n_features=2, units=[5, 3], dropout=0.1, head=head)
    return build_model(**{**kwargs, **changes}, seed=model_seed(1, ticker), compile=False)


def windows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 8, 2)).astype(np.float32)


def eager(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize("head", ["point", "quantile"])
@pytest.mark.parametrize("name", MODELS)
def test_every_network_predicts_what_its_eager_call_does(name, head):
    first, second = network(name, "A", head), network(name, "B", head)
    x = windows(33)
    for model in (first, second, first):  # the second copies its own weights in
        for part in [p for p in split_heads(model) if p is not None]:
            np.testing.assert_array_equal(inference.predict(part, x), eager(part, x))
            np.testing.assert_array_equal(inference.predict(part, x[:1]), eager(part, x[:1]))
    # the two tickers' networks (other seeds, other names) share their architecture's twin
    assert inference.architecture_key(first) == inference.architecture_key(second)
    assert inference.twin_count() == (2 if head == "quantile" else 1)


def test_architectures_get_their_own_twins():
    small, wide = network(units=[5, 3]), network(units=[6, 3])
    assert inference.architecture_key(small) != inference.architecture_key(wide)
    x = windows(4)
    np.testing.assert_array_equal(inference.predict(small, x), eager(small, x))
    np.testing.assert_array_equal(inference.predict(wide, x), eager(wide, x))
    assert inference.twin_count() == 2
    lstm = network("lstm")
    assert inference.architecture_key(lstm) != inference.architecture_key(small)


def test_a_loaded_model_shares_the_twin_of_its_build(tmp_path):
    import keras

    built = network(ticker="A")
    built.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert inference.architecture_key(loaded) == inference.architecture_key(network(ticker="B"))
    x = windows(7)
    np.testing.assert_array_equal(inference.predict(loaded, x), eager(built, x))


def test_float64_windows_are_cast_as_an_eager_call_casts_them():
    import tensorflow as tf

    model, x = network(), np.random.default_rng(3).random((5, 8, 2))  # float64
    np.testing.assert_array_equal(inference.predict(model, x), eager(model, x))
    np.testing.assert_array_equal(inference.predict(model, tf.constant(x)), eager(model, x))


def test_a_global_network_with_a_ticker_input():
    model = network(n_tickers=3, ticker_embedding=2)
    inputs = {"window": windows(6), "ticker": np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)}
    np.testing.assert_array_equal(inference.predict(model, inputs), eager(model, inputs))


def test_threads_predicting_at_once_each_get_their_own_model_s_outputs():
    models = [network(ticker=t) for t in "ABCD"]
    x = windows(50)
    want = [eager(m, x) for m in models]
    got: dict = {}
    errors: list = []

    def run(i: int) -> None:
        try:
            got[i] = [inference.predict(models[i], x) for _ in range(5)]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, outputs in got.items():
        for out in outputs:
            np.testing.assert_array_equal(out, want[i])
    assert 1 <= inference.twin_count() <= 4  # one per call that overlapped, kept for reuse


def test_anything_but_a_functional_keras_model_is_called_directly():
    """A plain callable standing in for a network (tests do it) gets no twin."""
    seen = []

    def stand_in(window, training=False):
        seen.append(training)
        return np.full((len(window), 1), 7.0)

    np.testing.assert_array_equal(inference.predict(stand_in, windows(2)), [[7.0], [7.0]])
    assert seen == [False] and inference.twin_count() == 0
