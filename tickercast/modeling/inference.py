"""A network's outputs through one traced function per architecture and process.

An eager call of the nightly LSTM runs its time loop op by op: ~0.2-0.3 s a call here
whatever its batch, and a nightly ticker makes about eight (shrinkage, evaluation, the
export check, the gate). `model.predict` would trace a function per model instance (each
ticker's model is a new one) and TensorFlow warns of excessive retracing. Here a process
keeps a twin of each architecture it has seen (a clone, built once, with its call traced
once for any batch size); predicting with a model copies the model's weights into a free
twin (~1 ms) and calls the traced function (~0.003 s for one window, 0.03 s for 300 vs
0.2-0.3 s eagerly: bench/RESULTS.md `graph_predict`). Outputs equal the eager call's bit
for bit (tests/test_inference.py, every network kind and head).

A twin is leased to one call at a time (threads never share one); anything but a
functional Keras model is called eagerly, as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from tickercast.modeling.freelist import FreeList

MAX_ARCHITECTURES = 8  # architectures kept per process (a tuning run varies them)


@dataclass
class Twin:
    """A clone of an architecture and its traced inference call."""

    model: Any
    function: Any


_free: FreeList[Twin] = FreeList(MAX_ARCHITECTURES)


def architecture_key(model: Any) -> str:
    """What fixes a network's function of its weights: its config without what only
    names it or says how its weights were drawn (layer names become positions, seeds and
    initializers go), and its weights' shapes."""
    names = {layer.name: f"#{i}" for i, layer in enumerate(model.layers)}
    names[model.name] = "#model"

    def normal(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: normal(v)
                for k, v in value.items()
                if k not in ("name", "seed") and not k.endswith("_initializer")
            }
        if isinstance(value, list | tuple):
            return [normal(v) for v in value]
        if isinstance(value, str):
            return names.get(value, value)
        return value

    shapes = [[str(w.dtype), list(w.shape)] for w in model.weights]
    return json.dumps([type(model).__name__, normal(model.get_config()), shapes], default=str)


def _new_twin(model: Any) -> Twin:
    import keras
    import tensorflow as tf

    twin = keras.models.clone_model(model)

    def call(inputs):
        return twin(inputs, training=False)

    if len(model.inputs) == 1:  # one trace for every batch size
        (spec,) = model.inputs
        signature = [tf.TensorSpec([None, *spec.shape[1:]], spec.dtype)]
        return Twin(twin, tf.function(call, input_signature=signature))
    return Twin(twin, tf.function(call, reduce_retracing=True))


def _as_input(model: Any, inputs: Any) -> Any:
    """A window batch (numpy or tensor) in the dtype the traced signature takes (Keras
    casts an eager call's input to it the same way)."""
    import tensorflow as tf

    if len(model.inputs) == 1:
        return tf.cast(inputs, model.inputs[0].dtype)
    return inputs


def twin_count() -> int:
    """Free twins of every architecture (what the tests look at)."""
    return _free.count()


def clear() -> None:
    """Forget every twin (tests)."""
    _free.clear()


def predict(model: Any, inputs: Any) -> np.ndarray:
    """`model(inputs, training=False)` as a numpy array, through the architecture's
    traced twin (weights copied in first). Anything but a functional Keras model (a
    subclassed model, a plain callable standing in for one) is called directly."""
    import keras

    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        return np.asarray(model(inputs, training=False))
    try:
        key = architecture_key(model)
    except NotImplementedError:  # a model Keras cannot describe: no twin for it
        return np.asarray(model(inputs, training=False))
    twin = _free.take(key) or _new_twin(model)
    weights = model.weights
    if len(twin.model.weights) != len(weights):
        raise ValueError("a twin and its model differ in their weights")
    for mine, theirs in zip(twin.model.weights, weights, strict=True):
        mine.assign(theirs.value)
    out = np.asarray(twin.function(_as_input(model, inputs)))
    _free.give_back(key, twin)  # only after a call that succeeded
    return out
