"""Windows as indices, never as copies.

A window is named by its anchor t, the last input day: inputs are rows
t-lookback+1..t, the target is row t's target (days t+1..t+horizon). Only anchors are
stored; `make_dataset` gathers each batch's windows from the one feature array inside
tf.data, so memory stays at the size of the data, not lookback times it.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def split_anchors(
    n_rows: int, n_train: int, n_val: int, lookback: int, horizon: int
) -> dict[str, np.ndarray]:
    """Anchors per split such that every target day lies inside the window's own split.

    Inputs may reach back into earlier splits (that is the past, not a leak); a window
    whose target days straddle a boundary belongs to no split.
    """
    first = lookback - 1
    val_start, test_start = n_train, n_train + n_val
    bounds = {
        "train": (first, n_train - horizon - 1),
        "val": (max(first, val_start - 1), test_start - horizon - 1),
        "test": (max(first, test_start - 1), n_rows - horizon - 1),
    }
    return {
        name: np.arange(lo, hi + 1, dtype=np.int64) if hi >= lo else np.empty(0, np.int64)
        for name, (lo, hi) in bounds.items()
    }


def gather_windows(x: np.ndarray, anchors: np.ndarray, lookback: int) -> np.ndarray:
    """Materialise windows (for small evaluation sets and tests only)."""
    offsets = np.arange(-lookback + 1, 1)
    return x[anchors[:, None] + offsets]


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    anchors: np.ndarray,
    lookback: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
):
    """A tf.data pipeline of (window, target) batches gathered from `x` by anchor index."""
    import tensorflow as tf

    features = tf.constant(x, dtype=tf.float32)
    targets = tf.constant(y, dtype=tf.float32)
    offsets = tf.range(-lookback + 1, 1, dtype=tf.int64)
    index = tf.constant(np.asarray(anchors, dtype=np.int64))
    n_windows = len(anchors)
    if shuffle:
        # A fresh permutation per epoch (Dataset.random re-draws on each iteration), one
        # int64 per window; tf.data's shuffle buffer would hold a tensor per window instead.
        seed_pair = tf.constant(int(seed), tf.int64)

        def permuted(epoch_seed):
            order = tf.random.experimental.stateless_shuffle(
                index, seed=tf.stack([epoch_seed, seed_pair])
            )
            return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

        seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True)
        n_batches = -(-n_windows // batch_size)
        ds = seeds.take(1).flat_map(permuted)
        ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
    else:
        ds = tf.data.Dataset.from_tensor_slices(index).batch(batch_size)

    def gather(batch):
        return tf.gather(features, batch[:, None] + offsets), tf.gather(targets, batch)

    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
