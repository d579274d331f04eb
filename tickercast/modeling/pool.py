"""Built networks kept per process and reused fit after fit.

Building a network is cheap; its first fit is not: TensorFlow traces the training and
validation steps (about 1 s a fit for the nightly LSTM on this machine), and each traced
LSTM loop stays referenced inside TensorFlow after its model is dropped (upstream:
keras-team/keras#17458), so a long-lived worker grows ~9 MB a fit (bench/fit_memory.py).
A pooled network of the same architecture, whose every variable (weights, layer seed
states, optimizer slots, step count, learning rate) is reset to what a fresh build would
hold, trains exactly as that fresh build would (tests/test_pool.py checks bit for bit)
and reuses the traces.

A model is leased to one fit at a time (threads never share one) and goes back to the
pool only when its fit ended without an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from tickercast.modeling.freelist import FreeList

MAX_ARCHITECTURES = 4  # pooled architectures per process (tuning trials vary them)


@dataclass
class Pooled:
    """A built, compiled network with its optimizer built, and the strategy it lives in."""

    model: Any
    strategy: Any
    optimizer_start: list[np.ndarray]  # the optimizer's variables just after it was built


_free: FreeList[Pooled] = FreeList(MAX_ARCHITECTURES)


def pool_key(build_kwargs: dict, strategy: str, mixed_precision: bool) -> str:
    """The architecture, compile settings and placement of a network; not its seed."""
    kwargs = {k: v for k, v in build_kwargs.items() if k != "seed"}
    return json.dumps([kwargs, strategy, mixed_precision], sort_keys=True, default=str)


def build_optimizer(model: Any, strategy: Any) -> None:
    """Builds `model`'s optimizer inside `strategy` before the first fit traces its step
    (otherwise TensorFlow traces the whole training step twice, ~1 s)."""
    if not model.optimizer.built:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)


def built(model: Any, strategy: Any) -> Pooled:
    """`model` (compiled, never fitted) made poolable: its optimizer built, its start kept."""
    build_optimizer(model, strategy)
    return Pooled(model, strategy, [v.numpy() for v in model.optimizer.variables])


def reset(pooled: Pooled, fresh: Any) -> None:
    """Every variable of `pooled.model` set to the freshly built `fresh`'s (same
    architecture, not compiled), its optimizer to the state it was built with, and its
    layers' seeds to `fresh`'s, so a saved model records the seeds it started from."""
    _adopt_seeds(pooled.model, fresh)
    target, source = pooled.model.variables, fresh.variables
    if len(target) != len(source) or any(
        a.shape != b.shape for a, b in zip(target, source, strict=True)
    ):
        raise ValueError("a pooled network and its fresh build differ in their variables")
    for a, b in zip(target, source, strict=True):
        a.assign(b.value)
    optimizer = pooled.model.optimizer.variables
    for variable, start in zip(optimizer, pooled.optimizer_start, strict=True):
        variable.assign(start)


def _sublayers(layer: Any) -> Iterator[Any]:
    """`layer` and every layer inside it, through Keras' public attributes (a model's
    `layers`, an RNN's `cell`, a Bidirectional's two directions), in build order."""
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _sublayers(inner)
    for name in ("cell", "forward_layer", "backward_layer"):
        if getattr(layer, name, None) is not None:
            yield from _sublayers(getattr(layer, name))


def _adopt_seeds(model: Any, fresh: Any) -> None:
    """Copies each layer's seed and initializers (what its config records of how its
    weights were drawn) from `fresh` onto `model`'s matching layer."""
    for mine, theirs in zip(_sublayers(model), _sublayers(fresh), strict=True):
        if mine.name != theirs.name:
            raise ValueError(f"pooled layer {mine.name!r} is {theirs.name!r} in a fresh build")
        for name, value in vars(theirs).items():
            if name == "seed" or name.endswith("_initializer"):
                setattr(mine, name, value)


def take(key: str) -> Pooled | None:
    """A free pooled network for `key`, now leased to the caller; None when there is none."""
    return _free.take(key)


def pooled_count() -> int:
    """Free pooled networks of every architecture (what the tests look at)."""
    return _free.count()


def clear() -> None:
    """Forget every pooled network (tests; a worker that wants its memory back)."""
    _free.clear()


def give_back_on_success(stack: ExitStack, key: str, pooled: Pooled) -> None:
    """Registers on `stack` the return of `pooled` to the pool when it closes without an
    error (a fit that raised may have left its model mid-step: it is dropped)."""

    def _exit(exc_type, exc, tb) -> bool:
        if exc_type is None:
            _free.give_back(key, pooled)
        return False

    stack.push(_exit)
