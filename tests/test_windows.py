import math
import os
import subprocess
import sys

import numpy as np

from tickercast.market.sources import sine_prices
from tickercast.modeling.preprocess import preprocess
from tickercast.modeling.windows import (
    PREDICT_BATCH,
    aligned_empty,
    as_tensor,
    concat_anchors,
    gather_windows,
    held_batches,
    make_dataset,
    predict_dataset,
    predict_windows,
    split_anchors,
)
from tickercast.sections import PreprocessSettings


def tutorial_create_dataset(dataset, look_back=1):
    """The reference tutorial's Python loop, verbatim in behaviour (note its `- 1`)."""
    data_x, data_y = [], []
    for i in range(len(dataset) - look_back - 1):
        data_x.append(dataset[i : (i + look_back), 0])
        data_y.append(dataset[i + look_back, 0])
    return np.array(data_x), np.array(data_y)


def test_equals_tutorial_loop_on_the_sine_wave():
    wave = np.sin(np.arange(0, 20 * math.pi, 0.1)).reshape(-1, 1).astype(np.float32)
    lookback = 10
    ref_x, ref_y = tutorial_create_dataset(wave, lookback)
    # horizon 1, target = next value: anchor t = i + lookback - 1, target row t + 1
    targets = np.vstack([wave[1:], [[np.nan]]]).astype(np.float32)
    anchors = np.arange(lookback - 1, len(wave) - 1)
    assert len(anchors) == len(ref_x) + 1  # the loop's `- 1` drops the last valid window
    batches = list(make_dataset(wave, targets, anchors, lookback, batch_size=64))
    got_x = np.concatenate([b[0].numpy() for b in batches])[..., 0]
    got_y = np.concatenate([b[1].numpy() for b in batches])[:, 0]
    np.testing.assert_array_equal(got_x[: len(ref_x)], ref_x)
    np.testing.assert_array_equal(got_y[: len(ref_y)], ref_y)


def test_pipeline_windows_match_explicit_gather_on_sine():
    cfg = {
        "start": None,
        "end": None,
        "features": ["close"],
        "lookback": 20,
        "horizon": 1,
        "target": "close",
        "val_fraction": 0.15,
        "test_fraction": 0.15,
    }
    spec, arrays = preprocess(sine_prices().prices, PreprocessSettings(**cfg), "SINE")
    n = len(arrays["x"])
    anchors = split_anchors(n, spec.n_train, spec.n_val, spec.lookback, spec.horizon)["train"]
    ds = make_dataset(arrays["x"], arrays["y"], anchors, spec.lookback, batch_size=32)
    got = np.concatenate([b[0].numpy() for b in ds])
    np.testing.assert_array_equal(got, gather_windows(arrays["x"], anchors, spec.lookback))


MEMORY_PROBE = """
import resource, sys, numpy as np
from tickercast.modeling.windows import make_dataset
import tensorflow as tf
x = np.random.default_rng(0).normal(size=(1_000_000, 6)).astype(np.float32)
y = np.zeros((1_000_000, 1), np.float32)
anchors = np.arange(59, 999_990)
warm = make_dataset(x[:1000], y[:1000], anchors[:100], 60, 1024)
for _ in warm: pass
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
seen = 0
for bx, by in make_dataset(x, y, anchors, 60, 1024, shuffle=True, seed=1):
    seen += bx.shape[0]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(seen, peak - base, x.nbytes)
"""


def test_streaming_windows_never_materialise_lookback_copies():
    """One pass over 1M windows of 60x6 grows peak memory by a few times the data, not 60x."""
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    ).stdout.split()
    seen, growth, data_bytes = (int(v) for v in out[-3:])
    assert seen == 999_990 - 59
    assert growth < 6 * data_bytes, f"peak grew {growth / data_bytes:.1f}x the data"


def test_shuffle_is_seeded():
    x = np.arange(200, dtype=np.float32).reshape(-1, 1)
    y = x.copy()
    anchors = np.arange(9, 199)
    a = np.concatenate([b[1].numpy() for b in make_dataset(x, y, anchors, 10, 16, True, 7)])
    b = np.concatenate([b[1].numpy() for b in make_dataset(x, y, anchors, 10, 16, True, 7)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 0], y[anchors, 0])


def test_resumed_stream_is_the_tail_of_the_uninterrupted_one():
    x = np.arange(300, dtype=np.float32).reshape(-1, 1)
    anchors = np.arange(9, 290)
    full = [b[1].numpy() for b in make_dataset(x, x, anchors, 10, 32, True, 5, epochs=4)]
    tail = [
        b[1].numpy() for b in make_dataset(x, x, anchors, 10, 32, True, 5, epochs=4, first_epoch=2)
    ]
    per_epoch = len(full) // 4
    assert len(tail) == 2 * per_epoch
    for a, b in zip(full[2 * per_epoch :], tail, strict=True):
        np.testing.assert_array_equal(a, b)
    epochs = [
        np.sort(np.concatenate(full[i * per_epoch : (i + 1) * per_epoch])[:, 0]) for i in range(4)
    ]
    for e in epochs:  # every epoch is a permutation of all windows
        np.testing.assert_array_equal(e, anchors.astype(np.float32))
    assert not np.array_equal(
        np.concatenate(full[:per_epoch]), np.concatenate(full[per_epoch : 2 * per_epoch])
    )


def test_global_windows_stay_inside_their_ticker():
    lookback, horizon = 5, 2
    n_rows = [40, 25, 60]
    per_ticker = [split_anchors(n, int(n * 0.7), int(n * 0.15), lookback, horizon) for n in n_rows]
    anchors, offsets = concat_anchors(per_ticker, n_rows)
    # rows hold (ticker, own row number) so every gathered window can be checked
    x = np.concatenate(
        [np.stack([np.full(n, t), np.arange(n)], axis=1) for t, n in enumerate(n_rows)]
    ).astype(np.float32)
    y = x[:, :1].copy()
    assert offsets.tolist() == [0, 40, 65]
    assert len(anchors["train"]) == sum(len(a["train"]) for a in per_ticker)
    ds = make_dataset(x, y, anchors["train"], lookback, 16, True, 1, ticker_offsets=offsets)
    seen = 0
    for inputs, target in ds:
        windows, ids = inputs["window"].numpy(), inputs["ticker"].numpy()
        assert (windows[:, :, 0] == ids[:, None]).all()  # one ticker per window
        assert (np.diff(windows[:, :, 1], axis=1) == 1).all()  # consecutive own rows
        assert (windows[:, 0, 1] >= 0).all()
        np.testing.assert_array_equal(target.numpy()[:, 0], ids)
        seen += len(ids)
    assert seen == len(anchors["train"])


def test_aligned_arrays_are_read_in_place_others_copied():
    aligned = aligned_empty((1000, 3), np.float32)
    aligned[:] = 1
    tensor = as_tensor(aligned, np.float32)
    aligned[0, 0] = 5
    assert float(tensor[0, 0]) == 5  # same memory: no copy of the data
    shifted = aligned_empty(3001, np.float32)[1:].reshape(1000, 3)
    shifted[:] = 1
    copy = as_tensor(shifted, np.float32)
    shifted[0, 0] = 5
    assert float(copy[0, 0]) == 1
    frozen = aligned_empty((10, 2), np.float32)
    frozen[:] = 2
    frozen.flags.writeable = False
    assert float(as_tensor(frozen, np.float32)[3, 1]) == 2
    assert as_tensor(np.arange(4), np.int32).dtype.name == "int32"


def test_predictions_in_one_call_equal_predictions_batch_by_batch():
    """Shrinkage, evaluation and the gate predict PREDICT_BATCH windows per eager call
    (one call instead of dozens); the outputs must not depend on how windows are batched."""
    import keras

    from tickercast.modeling.models import build_model, model_seed

    rng = np.random.default_rng(0)
    x = rng.random((700, 2), dtype=np.float32)
    y = rng.random((700, 1), dtype=np.float32)
    anchors = np.arange(59, 700)
    keras.utils.set_random_seed(0)
    model = build_model("stacked_lstm", 60, 2, [16, 8], seed=model_seed(0))
    one_call = predict_windows(model, x, anchors, 60)
    assert PREDICT_BATCH >= len(anchors)  # so the above was a single call
    batched = predict_dataset(model, make_dataset(x, y, anchors, 60, 32))
    assert one_call.shape == batched.shape == (len(anchors), 1)
    np.testing.assert_allclose(one_call, batched, rtol=1e-6, atol=1e-7)


def _values(ds) -> list:
    """Every batch of `ds` as its flattened numpy arrays."""
    import tensorflow as tf

    return [[t.numpy() for t in tf.nest.flatten(batch)] for batch in ds]


def test_held_validation_batches_are_the_streams_batches_in_order(monkeypatch):
    import tickercast.modeling.windows as windows

    lookback = 5
    n_rows = [40, 25, 60]
    per_ticker = [split_anchors(n, int(n * 0.7), int(n * 0.15), lookback, 2) for n in n_rows]
    anchors, offsets = concat_anchors(per_ticker, n_rows)
    x = np.random.default_rng(0).random((sum(n_rows), 3)).astype(np.float32)
    y = x[:, :1].copy()
    val = anchors["val"]
    for ticker_offsets in (None, offsets):  # windows alone, and {"window", "ticker"} inputs

        def stream(ticker_offsets=ticker_offsets):
            return make_dataset(x, y, val, lookback, 4, ticker_offsets=ticker_offsets)

        held = held_batches(stream(), len(val), 4)
        expected = _values(stream())
        assert len(expected) > 2  # a last, partial batch included
        for _ in range(2):  # each epoch's new iterator gives them again
            got = _values(held)
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                for u, v in zip(a, b, strict=True):
                    np.testing.assert_array_equal(u, v)
    # over the bound (a global fit over a large universe), the stream itself is kept
    monkeypatch.setattr(windows, "HELD_BYTES", 10)
    ds = make_dataset(x, y, val, lookback, 4)
    assert windows.held_batches(ds, len(val), 4) is ds


def test_datasets_run_without_tf_data_autotuning_or_its_rewrites():
    """Every stream a fit or a prediction reads (training, held validation) runs without
    tf.data's autotuning model: destroying an iterator waited for its model thread, which
    left a one-thread worker idle for seconds beside another (bench/RESULTS.md, "tf.data
    autotuning"); and without the default rewrites, which copy captured arrays."""
    x = np.random.default_rng(0).random((300, 2)).astype(np.float32)
    y = x[:, :1].copy()
    anchors = np.arange(20, 280)
    streams = {
        "train": make_dataset(x, y, anchors, 20, 32, shuffle=True, seed=1, epochs=2),
        "plain": make_dataset(x, y, anchors, 20, 32),
    }
    streams["held"] = held_batches(streams["plain"], len(anchors), 32)
    for name, ds in streams.items():
        options = ds.options()
        assert options.autotune.enabled is False, name
        assert options.experimental_optimization.apply_default_optimizations is False, name
