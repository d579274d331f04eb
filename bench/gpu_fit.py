"""The nightly network's fit on a GPU vs this machine's CPU, side by side (issue 22).

The device machine a task may borrow (one H200) has PyTorch and JAX but no TensorFlow, and
nothing there can install it. So the GPU side fits *the same Keras network* on Keras 3's
JAX backend: `spec` builds the default network here through the pipeline's own
`build_model` (stacked LSTM [64, 32], 60 days x 2 features, point head; the default
batch and learning rate) and writes it as Keras JSON; `measure` (Keras and NumPy only, any
backend) rebuilds it from that JSON, compiles it as `build_model` does (Adam, clipvalue 1,
MSE) and times, on random windows of the right shape:

- a ticker-sized fit: one 10-year ticker's training and validation windows, seconds per
  epoch after a warm-up epoch (what each nightly fit pays per epoch);
- throughput: many tickers' windows in one fit (the shape of a global model, or of K
  tickers' networks in one graph), training windows/s at the default batch and at 4096;
- the backend's float32 matmul (4096^2), and the LSTM's share of it at each shape (LSTM
  matmul FLOPs x3 for forward and backward, as bench/training_speed.py counts them).

`report` reads the CPU run (this machine, TensorFlow backend, the same JSON) and the GPU
run and writes the RESULTS.md row `gpu_fit`. What this does not measure: the pipeline's
own GPU path (TensorFlow with CUDA: cuDNN LSTM kernels, `device.py`'s mixed precision) and
the rest of the night (evaluation, export, gate stay on the CPU): no TensorFlow there.

Run here:     python bench/gpu_fit.py spec --out bench/.gpu/spec.json
              KERAS_BACKEND=tensorflow python bench/gpu_fit.py measure \
                  --spec bench/.gpu/spec.json --json bench/.gpu/cpu.json
On a device:  bash bench/gpu_device.sh   (puts Keras from carried wheels beside the image's
              JAX and PyTorch, runs `measure`; one JSON per backend)
Then:         python bench/gpu_fit.py report --cpu bench/.gpu/cpu.json --gpu <run>.json ...
No command (`make bench`): spec and this machine's side, reported with the GPU runs found
as bench/.gpu/gpu-*.json, or as unmeasured on the GPU in this run when there are none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# One synthetic 10-year ticker under the default windowing (about 2,520 rows from 2016; 70%
# training rows less the 60-day lookback and 5-day horizon; 15% validation rows).
TICKER_TRAIN_WINDOWS = 1700
TICKER_VAL_WINDOWS = 378
BIG_BATCH = 4096
NIGHTLY_EPOCHS = 14.2  # a first night's mean epochs per fit (bench/nightly_universe.py)


def spec(out: Path) -> None:
    """The default network as the pipeline builds it, as Keras JSON plus its training shape."""
    sys.path.insert(0, str(ROOT))
    from tickercast.modeling.models import build_model, lstm_flops_per_sample, model_seed
    from tickercast.sections import Network, Training, Windowing

    network, training, windowing = Network(), Training(), Windowing()
    model = build_model(
        network.model,
        windowing.lookback,
        len(windowing.features),
        network.units,
        learning_rate=training.learning_rate,
        seed=model_seed(42, "GPU"),
        compile=False,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "model": model.to_json(),
                "name": f"{network.model} {network.units}, {windowing.lookback} days x "
                f"{len(windowing.features)} features, point head",
                "lookback": windowing.lookback,
                "features": len(windowing.features),
                "batch_size": training.batch_size,
                "learning_rate": training.learning_rate,
                "flops_per_sample": lstm_flops_per_sample(model, windowing.lookback),
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


def _sync(value) -> None:
    import keras

    keras.ops.convert_to_numpy(value)


def matmul_gflops(n: int = 4096, repeats: int = 20) -> float:
    """The backend's float32 matmul rate on its default device, a chain of products."""
    import keras

    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.standard_normal((n, n)).astype("float32"))
    b = keras.ops.convert_to_tensor(rng.standard_normal((n, n)).astype("float32") / n)
    _sync(keras.ops.matmul(a, b))
    out = a
    start = time.perf_counter()
    for _ in range(repeats):
        out = keras.ops.matmul(out, b)
    _sync(out)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _model(spec_: dict):
    import keras

    model = keras.models.model_from_json(spec_["model"])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=spec_["learning_rate"], clipvalue=1.0),
        loss="mse",
    )
    return model


def _data(n: int, spec_: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, spec_["lookback"], spec_["features"])).astype("float32")
    return x, (0.1 * x[:, -5:, 0].mean(axis=1, keepdims=True)).astype("float32")


def ticker_epoch_seconds(spec_: dict, epochs: int) -> float:
    """Seconds per epoch of a ticker-sized fit (with its validation pass), after a warm-up."""
    model = _model(spec_)
    x, y = _data(TICKER_TRAIN_WINDOWS, spec_, 1)
    vx, vy = _data(TICKER_VAL_WINDOWS, spec_, 2)
    fit = {"batch_size": spec_["batch_size"], "validation_data": (vx, vy), "verbose": 0}
    model.fit(x, y, epochs=1, **fit)
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, shuffle=True, **fit)
    return (time.perf_counter() - start) / epochs


def throughput(spec_: dict, windows: int, batch: int) -> float:
    """Training windows/s of one fit over `windows` windows at `batch`, after a warm-up."""
    model = _model(spec_)
    x, y = _data(windows, spec_, 3)
    model.fit(x[: batch * 2], y[: batch * 2], batch_size=batch, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    return windows / (time.perf_counter() - start)


def device_name() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return f"jax {jax.__version__} {jax.devices()[0].device_kind}"
    if backend == "torch":
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        return f"torch {torch.__version__} {gpu}"
    import tensorflow as tf

    return (
        f"tensorflow {tf.__version__} {'gpu' if tf.config.list_physical_devices('GPU') else 'cpu'}"
    )


def measure(spec_path: Path, out: Path, tickers: int, epochs: int) -> None:
    import keras

    spec_ = json.loads(spec_path.read_text())
    result = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "device": device_name(),
        "tickers": tickers,
        "epochs_timed": epochs,
    }
    print(result, flush=True)
    result["matmul_gflops"] = matmul_gflops()
    print(f"matmul {result['matmul_gflops']:.0f} GFLOP/s", flush=True)
    result["ticker_epoch_s"] = ticker_epoch_seconds(spec_, epochs)
    print(f"ticker-sized fit {result['ticker_epoch_s']:.3f} s/epoch", flush=True)
    windows = tickers * TICKER_TRAIN_WINDOWS
    for batch in (spec_["batch_size"], BIG_BATCH):
        rate = throughput(spec_, windows, batch)
        share = rate * 3 * spec_["flops_per_sample"] / 1e9 / result["matmul_gflops"]
        result[f"windows_per_s_b{batch}"] = rate
        result[f"matmul_share_b{batch}"] = share
        print(f"batch {batch}: {rate:.0f} windows/s, {share:.1%} of matmul", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


def report(cpu_path: Path, gpu_paths: list[Path], nightly_epochs: float, keep: bool) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.results import publish

    cpu = json.loads(cpu_path.read_text())
    gpus = [json.loads(path.read_text()) for path in gpu_paths]
    b = next(k for k in cpu if k.startswith("windows_per_s_b") and not k.endswith(f"b{BIG_BATCH}"))
    batch = int(b.removeprefix("windows_per_s_b"))

    def train_min(run: dict) -> float:
        return 500 * nightly_epochs * run["ticker_epoch_s"] / 60

    def cells(run: dict) -> str:
        return (
            f"{run['device']} (Keras {run['keras']} on {run['backend']}): a ticker-sized fit "
            f"{run['ticker_epoch_s']:.3f} s/epoch; {run['tickers']} tickers' windows in one fit "
            f"{run[b]:.0f} windows/s at batch {batch} ({run[f'matmul_share_b{batch}']:.1%} of its "
            f"float32 matmul, {run['matmul_gflops']:.0f} GFLOP/s), "
            f"{run[f'windows_per_s_b{BIG_BATCH}']:.0f} at batch {BIG_BATCH} "
            f"({run[f'matmul_share_b{BIG_BATCH}']:.1%})"
        )

    row = (
        f"| the nightly network's fit on the lent GPU vs this machine's CPU (stacked_lstm "
        f"[64, 32], 60 days x 2 features, batch {batch}, Adam; random windows; built by "
        f"build_model, carried as Keras JSON). The GPU runs Keras on JAX (and PyTorch): the "
        f"device has no TensorFlow, so the pipeline's own GPU path (TensorFlow + CUDA) and the "
        f"night's CPU stages (evaluate, export, gate) are not measured there | {cells(cpu)}; "
        f"500 tickers x {nightly_epochs:g} epochs (the nightly bench's mean) of ticker-sized "
        f"fits: {train_min(cpu):.0f} min of training | "
        + "; ".join(
            f"run {i}: {cells(run)}; 500 tickers' training {train_min(run):.1f} min"
            for i, run in enumerate(gpus, 1)
        )
        + " | per ticker-sized epoch "
        + " / ".join(f"{run['ticker_epoch_s'] / cpu['ticker_epoch_s']:.2f}x" for run in gpus)
        + f"; one big fit at batch {batch} "
        + " / ".join(f"{run[b] / cpu[b]:.1f}x" for run in gpus)
        + " the windows/s |"
    )
    publish("gpu_fit", row, keep)


def auto(keep: bool) -> None:
    """`make bench`'s run: this machine's side, with whatever GPU runs bench/.gpu holds."""
    folder = ROOT / "bench" / ".gpu"
    spec(folder / "spec.json")
    measure(folder / "spec.json", folder / "cpu.json", tickers=16, epochs=5)
    gpus = sorted(folder.glob("gpu-*.json"))
    if gpus:
        report(folder / "cpu.json", gpus, NIGHTLY_EPOCHS, keep)
        return
    from bench.results import publish

    cpu = json.loads((folder / "cpu.json").read_text())
    publish(
        "gpu_fit",
        f"| the nightly network's fit on a GPU vs this machine's CPU | {cpu['device']}: a "
        f"ticker-sized fit {cpu['ticker_epoch_s']:.3f} s/epoch | no GPU measured in this run "
        "(bench/gpu_device.sh on a lent device writes bench/.gpu/gpu-*.json) | - |",
        keep,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-record", action="store_true", help="(no command) leave RESULTS.md")
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("spec")
    s.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("measure")
    m.add_argument("--spec", type=Path, required=True)
    m.add_argument("--json", type=Path, required=True)
    m.add_argument("--tickers", type=int, default=16, help="tickers' windows in the throughput fit")
    m.add_argument("--epochs", type=int, default=5, help="epochs timed in the ticker-sized fit")
    r = sub.add_parser("report")
    r.add_argument("--cpu", type=Path, required=True)
    r.add_argument("--gpu", type=Path, nargs="+", required=True, help="one JSON per GPU run")
    r.add_argument("--nightly-epochs", type=float, default=NIGHTLY_EPOCHS)
    args = parser.parse_args()
    if args.command is None:
        auto(not args.no_record)
    elif args.command == "spec":
        spec(args.out)
    elif args.command == "measure":
        measure(args.spec, args.json, args.tickers, args.epochs)
    else:
        report(args.cpu, args.gpu, args.nightly_epochs, not args.no_record)


if __name__ == "__main__":
    main()
