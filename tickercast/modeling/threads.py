"""TensorFlow's thread pools and Keras' global state in a long-lived worker process.

A Dask worker started with `--nthreads N` runs N tasks at a time; TensorFlow, left alone,
sizes its pools to every core of the machine, so two workers on one machine fight over
the same cores (measured in bench/RESULTS.md, "TensorFlow thread pools": two one-thread
processes train 1.8-2.8x the windows/s of one process with default pools). `size_pools`
gives TensorFlow the worker's own share once, before its runtime starts. `fresh_state`
drops what Keras keeps between models (layer-name counters, the default graph, cached
kernels); a worker that trains ticker after ticker does it every FRESH_EVERY fits, to
bound that state. A fit does not need it to start clean: the pooled network it leases
has every variable reset to a fresh build's (modeling/pool.py, tests/test_pool.py)."""

from __future__ import annotations

_sized: int | None = None
_fits = 0

# Fits between two of a worker's resets of Keras' state. A reset (clear_session) also
# clears TensorFlow's kernel cache, so the pooled network's traced steps are instantiated
# and optimised again on the next fit: measured on the nightly's train stage (two
# one-thread workers, 64 tickers, bench/worker_resets.py), resetting every 16 fits took
# 1.19x the seconds of never resetting and grew each process 75 MB by its 32nd fit
# against 8 MB, with the same fits. 256: a nightly's workers (started per run, 250 fits
# each at 500 tickers on two cores) never reset; a long-lived worker's Keras state
# (layer-name counters, graphs of networks built outside the pool) stays bounded.
FRESH_EVERY = 256


def size_pools(threads: int) -> int | None:
    """Intra- and inter-op pools of `threads` threads; returns the size in effect. Only
    the first call of a process can set them (TensorFlow fixes them when its runtime
    starts); later calls, or a runtime already started elsewhere, keep what is in effect."""
    global _sized
    import tensorflow as tf

    if _sized is None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
            _sized = int(threads)
        except RuntimeError:  # the runtime already started: its pools stay
            _sized = tf.config.threading.get_intra_op_parallelism_threads() or None
    return _sized


def one_thread_worker() -> bool:
    """Whether this process trains on one thread (`size_pools(1)`: a one-thread Dask
    worker, the nightly's shape), fit after fit, beside other such processes."""
    return _sized == 1


def fresh_state() -> None:
    """Keras' global state dropped before the next model is built. Only for a process
    that runs one fit at a time with nothing else building models beside it (a Dask
    worker's single task thread): the state is shared by every thread."""
    import keras

    keras.backend.clear_session(free_memory=True)


def between_fits(every: int = FRESH_EVERY) -> bool:
    """Counts a fit of this process and resets Keras' state (`fresh_state`) every
    `every` fits; True when it did. For the same one-fit-at-a-time processes only."""
    global _fits
    _fits += 1
    if _fits % every:
        return False
    fresh_state()
    return True
