"""Device choice, precision, strategies and the GPU concurrency slot, tested on a CPU.

No GPU is available here: the decision logic is tested with GPU lists passed in, the
strategy code path with a MirroredStrategy over the CPU, and the Prefect concurrency
slot with a choice that claims a GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tickercast.modeling.device import (
    DeviceChoice,
    DeviceUnavailableError,
    decide,
    precision_scope,
)
from tickercast.runcontext import GPU_CONCURRENCY_LIMIT, gpu_slot

GPU0, GPU1 = "/physical_device:GPU:0", "/physical_device:GPU:1"


@pytest.mark.parametrize(
    "requested, gpus, mixed, device, strategy, uses_mixed, fragment",
    [
        ("auto", [], False, "cpu", "default", False, "no GPU visible"),
        ("auto", [GPU0], False, "gpu", "default", False, "1 GPU(s) visible"),
        ("auto", [GPU0, GPU1], True, "gpu", "mirrored", True, "MirroredStrategy"),
        ("gpu", [GPU0], True, "gpu", "default", True, "mixed precision (float16"),
        ("cpu", [GPU0], False, "cpu", "one_device_cpu", False, "visible but not used"),
        ("cpu", [], True, "cpu", "default", False, "not used on CPU"),
        ("auto", [], True, "cpu", "default", False, "not used on CPU"),
    ],
)
def test_device_decision(requested, gpus, mixed, device, strategy, uses_mixed, fragment):
    choice = decide(requested, gpus, mixed)
    assert (choice.device, choice.strategy, choice.mixed_precision) == (
        device,
        strategy,
        uses_mixed,
    )
    assert fragment in choice.reason


def test_gpu_requested_without_a_gpu_is_refused_clearly():
    with pytest.raises(DeviceUnavailableError, match=r"sees no GPU.*\[gpu\]"):
        decide("gpu", [])
    with pytest.raises(ValueError, match="valid: \\['auto', 'cpu', 'gpu'\\]"):
        decide("tpu", [])


def test_mixed_precision_scope_is_local():
    import keras

    from tickercast.modeling.models import build_model

    with precision_scope(True):
        model = build_model("stacked_lstm", 5, 2, [4, 3])
    assert keras.config.dtype_policy().name == "float32"
    assert model.get_layer("lstm_0").dtype_policy.name == "mixed_float16"
    assert model.get_layer("forecast").dtype_policy.name == "float32"
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    out = model.predict(np.zeros((2, 5, 2), np.float32), verbose=0)
    assert out.dtype == np.float32
    assert build_model("lstm", 5, 2, [4]).get_layer("lstm_0").dtype_policy.name == "float32"


@pytest.mark.parametrize("strategy", ["mirrored", "one_device_cpu"])
def test_training_runs_under_distribution_strategies(strategy, monkeypatch, tmp_path):
    """The multi-GPU code path (MirroredStrategy scope, distributed datasets, per-epoch
    checkpoints) exercised with one CPU replica, and device=cpu on a GPU machine
    (OneDeviceStrategy on the CPU, LSTM kept off the GPU-only cuDNN kernel)."""
    import keras
    import tensorflow as tf

    import tickercast.modeling.train as train
    from tests.test_train import PRE, tiny_fit
    from tickercast.market.sources import sine_prices
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.windows import split_anchors
    from tickercast.sections import PreprocessSettings

    choice = DeviceChoice("cpu", f"test: {strategy} on the CPU", strategy, False)
    monkeypatch.setattr(train, "resolve_device", lambda cfg: choice)
    if strategy == "mirrored":
        monkeypatch.setattr(
            train, "make_strategy", lambda c: tf.distribute.MirroredStrategy(["/cpu:0"])
        )
    spec, arrays = preprocess(sine_prices().prices, PreprocessSettings(**PRE), "SINE")
    anchors = split_anchors(len(arrays["x"]), spec.n_train, spec.n_val, 10, 1)
    data = train.per_ticker_data(arrays, anchors)
    summary, model = train.fit(data, 10, tiny_fit(epochs=2), tmp_path)
    assert summary["epochs_run"] == 2 and summary["device"]["strategy"] == strategy
    assert np.isfinite(summary["best_val_loss"])
    expected = False if strategy == "one_device_cpu" else "auto"
    assert all(
        layer.use_cudnn == expected
        for layer in model.layers
        if isinstance(layer, keras.layers.LSTM)
    )


def test_no_concurrency_slot_on_cpu_or_outside_a_run():
    with gpu_slot(decide("auto", []).device) as note:
        assert "no GPU concurrency slot needed on CPU" == note
    with gpu_slot(decide("gpu", [GPU0]).device) as note:
        assert "not in a Prefect run" in note


def test_gpu_slot_takes_the_limit_when_it_exists_and_skips_it_when_not(prefect_server):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    gpu = decide("gpu", [GPU0])
    seen = {}

    def active_slots() -> int:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(GPU_CONCURRENCY_LIMIT).active_slots

    @flow(persist_result=False)
    def guarded(check: bool):
        with gpu_slot(gpu.device, logging.getLogger("test")) as note:
            seen["note"] = note
            if check:
                seen["inside"] = active_slots()

    guarded(False)  # no such limit yet: skipped with a warning, never a failure
    assert "holding a slot" in seen["note"]
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=GPU_CONCURRENCY_LIMIT, limit=1)
        )
    try:
        guarded(True)
        assert seen["inside"] == 1 and active_slots() == 0
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(GPU_CONCURRENCY_LIMIT)


def test_mixed_precision_training_checkpoints_and_resumes(monkeypatch, tmp_path):
    """The GPU-only mixed-precision path (float16 layers, LossScaleOptimizer state in the
    checkpoint) run on the CPU: interrupted after epoch 2, resumed, float32 left global."""
    import keras

    import tickercast.modeling.train as train
    from tests.test_train import sine_data, tiny_fit

    monkeypatch.setattr(
        train, "resolve_device", lambda cfg: DeviceChoice("cpu", "test", "default", True)
    )
    spec, arrays, anchors = sine_data()

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train_model(arrays, anchors, 10, tiny_fit(), tmp_path, callbacks=[Interrupt()])
    assert keras.config.dtype_policy().name == "float32"
    summary = train.train_model(arrays, anchors, 10, tiny_fit(), tmp_path)
    assert summary["resumed_from_epoch"] == 2 and summary["epochs_run"] == 4
    assert summary["device"]["mixed_precision"] is True
    assert np.isfinite(summary["history"]["loss"]).all()
    model = keras.models.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert model.get_layer("lstm_0").dtype_policy.name == "mixed_float16"
