"""Which device trains, and why: decided once per training run, logged and recorded.

`decide` is pure logic (testable without a GPU); `resolve_device` feeds it what
TensorFlow sees. On a GPU the run may use mixed precision and, with more than one GPU
visible, a MirroredStrategy over all of them; `gpu_slot` holds a Prefect global
concurrency slot while training so concurrent runs don't oversubscribe the GPU
(`tickercast.runcontext.gpu_slot`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from tickercast.choices import DEVICES


class DeviceUnavailableError(RuntimeError):
    """device='gpu' was asked for but TensorFlow sees no GPU."""


@dataclass
class DeviceChoice:
    device: str  # "cpu" | "gpu"
    reason: str
    strategy: str  # "default" | "mirrored" | "one_device_cpu"
    mixed_precision: bool
    gpus: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def decide(requested: str, gpus: list[str], mixed_precision: bool = False) -> DeviceChoice:
    """The device, distribution strategy and precision for a request, given the visible GPUs."""
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; valid: {list(DEVICES)}")
    if requested == "gpu" and not gpus:
        raise DeviceUnavailableError(
            "device 'gpu' requested but TensorFlow sees no GPU: install the gpu extra "
            "(pip install -e '.[gpu]'), check the CUDA driver (nvidia-smi), or use device auto/cpu"
        )
    if requested == "cpu":
        device = "cpu"
        reason = "device 'cpu' requested"
        if gpus:
            reason += f" ({len(gpus)} GPU(s) visible but not used)"
    elif requested == "gpu":
        device, reason = "gpu", f"device 'gpu' requested; {len(gpus)} GPU(s) visible"
    elif gpus:
        device, reason = "gpu", f"device 'auto': {len(gpus)} GPU(s) visible to TensorFlow"
    else:
        device, reason = "cpu", "device 'auto': no GPU visible to TensorFlow"
    if device == "gpu":
        strategy = "mirrored" if len(gpus) > 1 else "default"
        if strategy == "mirrored":
            reason += "; MirroredStrategy over all of them (batch_size is the global batch)"
    else:
        # On a machine with GPUs, pin the work to the CPU explicitly.
        strategy = "one_device_cpu" if gpus else "default"
    mixed = bool(mixed_precision and device == "gpu")
    if mixed_precision and not mixed:
        reason += "; mixed precision requested but not used on CPU (float16 is slower there)"
    elif mixed:
        reason += "; mixed precision (float16 compute, float32 weights and outputs)"
    return DeviceChoice(device, reason, strategy, mixed, list(gpus))


def visible_gpus() -> list[str]:
    import tensorflow as tf

    return [g.name for g in tf.config.list_physical_devices("GPU")]


def resolve_device(requested: str = "auto", mixed_precision: bool = False) -> DeviceChoice:
    return decide(requested, visible_gpus(), mixed_precision)


def describe_visible() -> dict[str, str]:
    """What TensorFlow can see on this machine (the bundle's `device` entry)."""
    choice = resolve_device("auto")
    return {"device": choice.device, "reason": choice.reason}


def make_strategy(choice: DeviceChoice):
    """The tf.distribute strategy whose scope builds, compiles and fits the model."""
    import tensorflow as tf

    if choice.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()  # every visible GPU
    if choice.strategy == "one_device_cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def precision_scope(mixed: bool) -> Iterator[None]:
    """Layers built inside use mixed_float16 when `mixed`; the global policy is restored after,
    so other models in the same process stay float32."""
    if not mixed:
        yield
        return
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
