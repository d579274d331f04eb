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


def anchors_for(spec) -> dict[str, np.ndarray]:
    """`split_anchors` of a fitted preprocessing (`tickercast.modeling.preprocess`'s
    Preprocessing: its rows per split, lookback and horizon), without the windows that
    span a gap in its days when its `on_gap` is "split" (`gap_windows`)."""
    anchors = split_anchors(spec.n_rows, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    on_gap = getattr(spec, "on_gap", "bridge")
    memory = getattr(spec, "feature_memory", 1)
    return without_gap_windows(anchors, gap_rows(spec), on_gap, spec.lookback, spec.horizon, memory)


def without_gap_windows(
    anchors: dict[str, np.ndarray],
    gaps: np.ndarray,
    on_gap: str,
    lookback: int,
    horizon: int,
    memory: int = 1,
) -> dict[str, np.ndarray]:
    """The anchors per split less those spanning a gap (`spans_gap`) when `on_gap` is
    "split"; as they are otherwise. The one rule for every window builder (retrain,
    evaluation, the tuning search's trials with their own lookback)."""
    if on_gap != "split" or not len(gaps):
        return anchors
    return {k: a[~spans_gap(a, gaps, lookback, horizon, memory)] for k, a in anchors.items()}


def gap_rows(spec) -> np.ndarray:
    """The row before each gap of a preprocessing (its `gaps`)."""
    return np.array([g[0] for g in getattr(spec, "gaps", [])], dtype=np.int64)


def spans_gap(
    anchors: np.ndarray, gaps: np.ndarray, lookback: int, horizon: int, memory: int = 1
) -> np.ndarray:
    """Which windows span a gap after row g: those whose rows
    t-lookback+1-memory..t+horizon hold both g and g+1. The `memory` rows before the
    inputs count, as the features of the first input rows read them (a return the close
    before it, a 20-day volatility 20 rows): a window right after a gap is skipped until
    its features no longer reach across it (the warm-up after a gap)."""
    anchors = np.asarray(anchors, dtype=np.int64)
    out = np.zeros(len(anchors), dtype=bool)
    for g in np.asarray(gaps, dtype=np.int64):
        out |= (anchors - lookback + 1 - memory <= g) & (g <= anchors + horizon - 1)
    return out


def gap_windows(spec) -> dict[str, int]:
    """Windows per split that span a gap (skipped under on_gap=split, built under bridge)."""
    anchors = split_anchors(spec.n_rows, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    rows, memory = gap_rows(spec), getattr(spec, "feature_memory", 1)
    return {
        k: int(spans_gap(a, rows, spec.lookback, spec.horizon, memory).sum())
        for k, a in anchors.items()
    }


def describe_gaps(gaps: list[list]) -> str:
    """'2 gap(s): 2019-01-02..2019-06-03 (104 weekdays missing), ...' (first three)."""
    shown = ", ".join(f"{b}..{a} ({n} weekdays missing)" for _, b, a, n in gaps[:3])
    return f"{len(gaps)} gap(s): {shown}" + (", ..." if len(gaps) > 3 else "")


def gap_report(spec) -> dict | None:
    """What the gaps of a preprocessing did to its windows, for the run's records (the
    preprocess step's window counts and log, the evaluation's `gaps`); None without a gap."""
    if not getattr(spec, "gaps", None):
        return None
    per_split = gap_windows(spec)
    total = sum(per_split.values())
    done = "skipped" if spec.on_gap == "split" else "built across it (bridged)"
    return {
        "gaps": spec.gaps,
        "on_gap": spec.on_gap,
        "windows": per_split,
        "text": f"{describe_gaps(spec.gaps)}: {total} window(s) span them: {done} "
        f"(on_gap={spec.on_gap})",
    }


def gather_windows(x: np.ndarray, anchors: np.ndarray, lookback: int) -> np.ndarray:
    """Materialise windows (for small evaluation sets and tests only)."""
    offsets = np.arange(-lookback + 1, 1)
    return x[anchors[:, None] + offsets]


ALIGN = 128  # bytes; TensorFlow can only alias host memory aligned to its (<= 128) boundary


def aligned_empty(shape: tuple[int, ...] | int, dtype) -> np.ndarray:
    """An uninitialised array whose buffer TensorFlow can use without copying (`as_tensor`)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def as_tensor(array: np.ndarray, dtype):
    """A tf.Tensor over `array`: zero-copy through DLPack when the array is aligned,
    C-contiguous and already of `dtype` (then the array must not change while the tensor
    is in use); otherwise a copy."""
    import tensorflow as tf

    array = np.asarray(array)
    if (
        array.size
        and array.dtype == np.dtype(dtype)
        and array.flags.c_contiguous
        and array.ctypes.data % ALIGN == 0
    ):
        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except (BufferError, TypeError, ValueError):  # read-only arrays cannot be exported
            pass
    return tf.convert_to_tensor(np.ascontiguousarray(array, dtype=dtype))


def index_dtype(n_rows: int):
    """int32 row indices (half the memory of int64) whenever the rows allow it."""
    return np.int32 if n_rows < 2**31 - 1 else np.int64


def concat_anchors(
    per_ticker: list[dict[str, np.ndarray]], n_rows: list[int]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Global mode: every ticker's rows stacked in one array, windows as global row indices.

    Returns anchors per split (ticker's row offset + its own anchors, in aligned arrays of
    the smallest index type) and each ticker's first row (`offsets`). A window never
    crosses tickers because each ticker's anchors start at lookback - 1 within its rows;
    a window's ticker is found from its anchor by binary search over `offsets`.
    """
    offsets = np.concatenate([[0], np.cumsum(n_rows)[:-1]]).astype(np.int64)
    kind = index_dtype(int(sum(n_rows)))
    anchors = {}
    for split in SPLITS:
        parts = [np.asarray(a[split]) for a in per_ticker]
        out = aligned_empty(sum(len(p) for p in parts), kind)
        at = 0
        for part, off in zip(parts, offsets, strict=True):
            out[at : at + len(part)] = part + off
            at += len(part)
        anchors[split] = out
    return anchors, offsets


def n_batches(n_windows: int, batch_size: int) -> int:
    return -(-n_windows // batch_size)


# plain tensor code: autograph's conversion only costs tracing time (~1 s per pipeline)
def _plain(fn):
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(fn)


def _batches(order, batch_size: int, tf_kind):
    """The batches of `order` (an index tensor), as slices of it: no per-element dataset
    copy of the anchors."""
    import tensorflow as tf

    n = int(order.shape[0])

    @_plain
    def take(i):
        i = tf.cast(i, tf_kind)
        return order[i * batch_size : tf.minimum((i + 1) * batch_size, n)]

    return tf.data.Dataset.range(n_batches(n, batch_size)).map(take)


def _shuffled_batches(index, batch_size: int, tf_kind, seed: int, first_epoch: int, epochs: int):
    """Epochs `first_epoch..epochs-1` back to back, each the batches of a permutation of
    `index` seeded by (seed, epoch)."""
    import tensorflow as tf

    base_seed = tf.constant(int(seed), tf.int64)

    @_plain
    def permuted(epoch):
        order = tf.random.experimental.stateless_shuffle(index, seed=tf.stack([base_seed, epoch]))
        return _batches(order, batch_size, tf_kind)

    ds = tf.data.Dataset.range(int(first_epoch), int(epochs)).flat_map(permuted)
    total = max(int(epochs) - int(first_epoch), 0) * n_batches(int(index.shape[0]), batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(total))


def _gatherer(x, y, lookback: int, tf_kind, ticker_offsets, kind):
    """A batch of anchors -> (windows, targets); with `ticker_offsets`, the windows come
    with each one's ticker index."""
    import tensorflow as tf

    features = as_tensor(x, np.float32)
    targets = as_tensor(y, np.float32)
    offsets = tf.range(-lookback + 1, 1, dtype=tf_kind)
    starts = None if ticker_offsets is None else tf.constant(np.asarray(ticker_offsets, kind))

    @_plain
    def gather(batch):
        windows = tf.gather(features, batch[:, None] + offsets)
        if starts is None:
            return windows, tf.gather(targets, batch)
        ticker = tf.searchsorted(starts[None, :], batch[None, :], side="right")[0] - 1
        inputs = {"window": windows, "ticker": tf.cast(ticker, tf.int32)}
        return inputs, tf.gather(targets, batch)

    return gather


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    anchors: np.ndarray,
    lookback: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    *,
    ticker_offsets: np.ndarray | None = None,
    epochs: int = 1,
    first_epoch: int = 0,
):
    """A tf.data pipeline of (window, target) batches gathered from `x` by anchor index.

    With `shuffle`, the stream holds epochs `first_epoch..epochs-1` back to back, each a
    permutation of the anchors seeded by (seed, epoch): one index per window instead of a
    shuffle buffer of tensors, and a run resumed at epoch k sees exactly the batches an
    uninterrupted run would (fit it with steps_per_epoch = n_batches). With
    `ticker_offsets` (global mode with an embedding: each ticker's first row) inputs are
    {"window", "ticker"}. Aligned arrays (`aligned_empty`) are used without a copy.
    """
    import tensorflow as tf

    kind = index_dtype(len(x))
    tf_kind = tf.int32 if kind == np.int32 else tf.int64
    index = as_tensor(anchors, kind)
    if shuffle:
        ds = _shuffled_batches(index, batch_size, tf_kind, seed, first_epoch, epochs)
    else:
        ds = _batches(index, batch_size, tf_kind)
    gather = _gatherer(x, y, lookback, tf_kind, ticker_offsets, kind)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _without_rewrites(ds.prefetch(tf.data.AUTOTUNE))


def _without_rewrites(ds):
    """`ds` without tf.data's default graph rewrites and without its autotuning model.

    The rewrites serialise the pipeline, copying every captured tensor (the whole feature
    array, or held windows) on each new iterator. The autotuning model runs a thread per
    iterator that sleeps between optimisations, and destroying the iterator waits for
    that thread: with two one-thread processes training at once (the nightly's Dask
    workers), a process sat idle for 0.5-2 s at a time at the end of its fits and predicts
    (a native stack: ~IteratorResource waiting on the model thread's OptimizeLoop). Without
    it, the AUTOTUNE settings take TensorFlow's static choices and nothing waits
    (bench/RESULTS.md, "tf.data autotuning")."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    return ds.with_options(options)


HELD_BYTES = 64 * 2**20
"""Validation windows up to this size are gathered once per fit and held as tensors
(`held_batches`): a per-ticker fit's are ~1 MB; a global fit over a large universe gathers
its batches again each epoch, as before, rather than hold more."""


def held_batches(ds, n_windows: int, batch_size: int):
    """`ds` (a `make_dataset` stream of `n_windows` windows, unshuffled) read once now and
    served from the tensors it gave: the same batches in the same order. Keras' fit
    evaluates validation data with a new iterator each epoch, which gathered every window
    again (bench/validation_pass.py). Streams over HELD_BYTES are returned as they are."""
    import tensorflow as tf

    spec = ds.element_spec
    row_bytes = sum(int(np.prod(s.shape[1:])) * s.dtype.size for s in tf.nest.flatten(spec))
    if n_windows == 0 or n_windows * row_bytes > HELD_BYTES:
        return ds
    batches = list(ds)
    joined = tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *batches)
    return _without_rewrites(tf.data.Dataset.from_tensor_slices(joined).batch(batch_size))


# Windows per prediction call: 4096 windows x 60 days x 64 units is ~60 MB of
# activations; outputs do not depend on the batching (tests/test_windows.py).
PREDICT_BATCH = 4096


def predict_dataset(model, ds) -> np.ndarray:
    """The model's outputs for every batch of `ds` ((inputs, targets) or inputs), through
    `inference.predict` (one traced function per architecture and process; `predict_windows`
    builds `ds` with PREDICT_BATCH). Why not `model.predict`: it traces a function per
    model, and a walk-forward backtest or a nightly universe predicts with many new models
    (TensorFlow warned of excessive retracing)."""
    from tickercast.modeling.inference import predict

    outputs = []
    for batch in ds:
        inputs = batch[0] if isinstance(batch, tuple) else batch
        outputs.append(predict(model, inputs))
    if not outputs:
        return np.zeros((0, *model.output_shape[1:]), dtype=np.float32)
    return np.concatenate(outputs)


def predict_windows(
    model, x: np.ndarray, anchors, lookback: int, ticker_offsets: np.ndarray | None = None
) -> np.ndarray:
    """The model's outputs for the windows of `x` ending on `anchors` rows, PREDICT_BATCH
    windows per call: what shrinkage, calibration, evaluation, the gate and tuning
    trials predict with."""
    dummy = np.zeros((len(x), 1), dtype=np.float32)  # targets: not read by a prediction
    ds = make_dataset(x, dummy, anchors, lookback, PREDICT_BATCH, ticker_offsets=ticker_offsets)
    return predict_dataset(model, ds)
