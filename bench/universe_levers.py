"""The levers for a fast nightly universe (issue 22), each measured side by side in one run.

Sections (`--only a,b`; all by default), on the nightly deployment's own shape: the
recommended preset (daily log return + 20-day volatility in, the 5-day mean close's log
return out), 60-day windows, stacked_lstm [64, 32], Adam(clipvalue 1):

- speed: training windows/s (steady epochs, tracing excluded) of Keras at batch 32 (Keras'
  own default; the default here was 32 until the quality section below measured 256) vs
  larger batches, `steps_per_execution`, `jit_compile` (XLA); and of the
  prototype in bench/stacked_lstm.py (the LSTM's input projection hoisted out of the
  time loop; K tickers' networks trained as one graph); each as a share of the same
  process's float32 matmul GFLOP/s. Checks: the prototype computes Keras' network (same
  weights, same outputs) and K tickers trained together end exactly where each trained
  alone ends.
- threads: one process with TensorFlow's default pools vs one thread each, and two
  single-thread processes side by side (how a Dask worker per core would train); and two
  tickers' networks as branches of one graph, on one thread and with the default pools.
  Networks train as the pipeline's CPU fits do, their LSTMs unrolled
  (`tickercast.modeling.models.unroll_on_cpu`); batch 256 is also measured with Keras'
  time loop, the unrolling's side-by-side yardstick, and with the same layers run by
  other kernels (bench/stacked_lstm.KERNELS: TensorFlow's fused LSTM kernel; the input
  projection hoisted out of the unrolled steps), each checked against Keras' gradient.
- quality: the real `train_model` (early stopping, ReduceLROnPlateau, checkpoints,
  shrinkage) on the five sample tickers: batch 32 vs batch 256 with a matched learning
  rate: fit time, epochs, validation loss and test skill vs naive (scaled MSE).
- global: one network over the quality section's tickers (the pipeline's global mode)
  against one per ticker, both with the nightly's fit settings: time, epochs, and each
  ticker's shipped test skill, with a paired test of whether global is worse.
- global_scale: a global network over 10, 20 and 40 synthetic tickers: whether its epochs
  fall as the universe grows, against per-ticker fits over the first ten.
- stopping: early stopping replayed on the nightly benchmark's recorded curves
  (`--curves`, bench/nightly_universe.py --json): a patience p below the one the runs
  used stops at the first epoch where p epochs brought no improvement; until then the run
  is the same, so the replay is exact (ReduceLROnPlateau unchanged).
- stopping_quality: the real `train_model` on 30 tickers at patience 5, 4 and 3: time,
  epochs, and the shipped models' test MSE against patience 5's, paired over the tickers
  (what the replay's validation-loss regret means for forecasts).
- export: what the "tf.function retracing" warning counts, and what the traces cost.

The second night's warm start is measured by bench/warm_start.py (the pipeline's own
warm start) and each stage's time by bench/nightly_universe.py.

Run: python bench/universe_levers.py [--only speed,threads] [--curves night.json]
(prints JSON and writes RESULTS.md rows `universe_*`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SAMPLES = ("AAPL", "AMZN", "GOOG", "MSFT", "NVDA")
UNITS = [64, 32]
BASE_LR = 1e-3
KERAS_B32 = "keras b32 (Keras' batch)"  # the speed section's yardstick
QUALITY_BASE = "b32 lr 1e-3 (Keras' batch)"  # the quality section's yardstick


def nightly_cfg(**changes):
    """The nightly deployment's config (deployments/nightly.json over RetrainConfig),
    with `changes` (flat setting names)."""
    from bench.nightly_universe import nightly

    return nightly(changes)


def lake_frame(ticker: str, extra_days: int = 0):
    """Lake rows of a sample ticker (data/sample, plus `extra_days` new days) or of a
    synthetic one (tests/synthetic.py, without quirks)."""
    import pandas as pd

    from bench.nightly_universe import sample_frame
    from tests.synthetic import UNIVERSE_YEARS, yahoo_history

    if ticker in SAMPLES:
        frame = sample_frame(ticker, extra_days)
    else:
        frame = yahoo_history(ticker, UNIVERSE_YEARS * 252 + extra_days, quirks=False)
    return pd.DataFrame(
        {
            "date": pd.to_datetime(frame["Date"]).dt.date,
            "open": frame["Open"],
            "high": frame["High"],
            "low": frame["Low"],
            "close": frame["Close"],
            "adj_close": frame["Adj Close"],
            "volume": frame["Volume"].astype("int64"),
        }
    )


def prepared(ticker: str, extra_days: int = 0) -> dict:
    """A ticker's scaled arrays, split anchors and spec, as the flow's steps make them."""
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.windows import split_anchors

    section = nightly_cfg().preprocessing
    spec, arrays = preprocess(lake_frame(ticker, extra_days), section, ticker)
    anchors = split_anchors(len(arrays["x"]), spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    return {"spec": spec, "x": arrays["x"], "y": arrays["y"], "anchors": anchors, "arrays": arrays}


# ----------------------------------------------------------------------------- speed


def epoch_timer():
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t0)

    return Timer()


def keras_speed(
    data: dict,
    batch: int,
    jit: bool = False,
    spe: int = 1,
    epochs: int = 3,
    unroll: bool = False,
    kernel: str | None = None,
) -> float:
    """Steady windows/s of Keras' fit (epochs after the first) on the pipeline's tf.data;
    `unroll`: the LSTMs unrolled, as the pipeline's CPU fits train; `kernel`: the LSTMs
    run by another kernel (bench/stacked_lstm.KERNELS)."""
    import keras

    from tickercast.modeling.models import build_model, model_seed, unroll_on_cpu
    from tickercast.modeling.windows import make_dataset, n_batches

    spec, train = data["spec"], data["anchors"]["train"]
    model = build_model(
        "stacked_lstm", spec.lookback, data["x"].shape[1], UNITS, compile=False, seed=model_seed(1)
    )
    if unroll:
        unroll_on_cpu(model)
    if kernel:
        from bench.stacked_lstm import use_kernel

        use_kernel(model, kernel)
    model.compile(
        optimizer=keras.optimizers.Adam(BASE_LR, clipvalue=1.0),
        loss="mse",
        jit_compile=jit,
        steps_per_execution=spe,
    )
    ds = make_dataset(
        data["x"], data["y"], train, spec.lookback, batch, shuffle=True, seed=1, epochs=epochs
    )
    timer = epoch_timer()
    model.fit(
        ds,
        epochs=epochs,
        steps_per_epoch=n_batches(len(train), batch),
        callbacks=[timer],
        verbose=0,
    )
    return len(train) / float(np.mean(timer.seconds[1:]))


def keras_k_speed(datas: list[dict], batch: int, epochs: int = 3, unroll: bool = False) -> float:
    """Windows/s (all tickers') of K per-ticker networks as branches of one Keras model:
    K inputs, K outputs, the loss their sum, one fit (each ticker's weights its own)."""
    import keras
    import tensorflow as tf

    from tickercast.modeling.models import build_model, model_seed, unroll_on_cpu
    from tickercast.modeling.windows import make_dataset, n_batches

    lb, width = datas[0]["spec"].lookback, datas[0]["x"].shape[1]
    inputs, outputs = [], []
    for k in range(len(datas)):
        branch = build_model(
            "stacked_lstm", lb, width, UNITS, compile=False, seed=model_seed(1, f"U{k + 1:03d}")
        )
        branch.name = f"ticker_{k}"  # nested models need distinct names
        inputs.append(keras.Input((lb, width), name=f"window_{k}"))
        outputs.append(branch(inputs[-1]))
    model = keras.Model(inputs, outputs)
    if unroll:
        unroll_on_cpu(model)
    adam = keras.optimizers.Adam(BASE_LR, clipvalue=1.0)
    model.compile(optimizer=adam, loss=["mse"] * len(datas))
    steps = min(n_batches(len(d["anchors"]["train"]), batch) for d in datas)
    streams = tuple(
        make_dataset(
            d["x"], d["y"], d["anchors"]["train"], lb, batch, shuffle=True, seed=1, epochs=epochs
        ).take(steps * epochs)
        for d in datas
    )
    ds = tf.data.Dataset.zip(streams).map(
        lambda *pairs: (tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
    )
    timer = epoch_timer()
    model.fit(ds, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return len(datas) * steps * batch / float(np.mean(timer.seconds[1:]))


def raw_batches(datas: list[dict], batch: int, n: int, seed: int = 0):
    """`n` batches [K, batch, T, F] / [K, batch, out] of K tickers' training windows."""
    import tensorflow as tf

    from tickercast.modeling.windows import gather_windows

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        xs, ys = [], []
        for d in datas:
            anchors = rng.choice(d["anchors"]["train"], batch, replace=False)
            xs.append(gather_windows(d["x"], anchors, d["spec"].lookback))
            ys.append(d["y"][anchors])
        out.append((tf.constant(np.stack(xs), tf.float32), tf.constant(np.stack(ys), tf.float32)))
    return out


def raw_speed(datas: list[dict], batch: int, hoist: bool, jit: bool = False, steps: int = 60):
    """Windows/s (all K tickers' windows) of the prototype's training step, traced first."""
    from bench.stacked_lstm import StackedLSTM, make_train_step

    model = StackedLSTM(len(datas), datas[0]["x"].shape[1], UNITS, datas[0]["y"].shape[1])
    step = make_train_step(model, BASE_LR, 1.0, hoist=hoist, jit=jit)
    batches = raw_batches(datas, batch, 8)
    step(*batches[0]).numpy()  # trace
    started = time.perf_counter()
    for i in range(steps):
        losses = step(*batches[i % len(batches)])
    losses.numpy()
    return steps * batch * len(datas) / (time.perf_counter() - started)


def prototype_checks(datas: list[dict]) -> dict:
    """The prototype is Keras' network, and K together = each alone (max abs differences)."""
    from bench.stacked_lstm import StackedLSTM, make_train_step
    from tickercast.modeling.models import build_model, model_seed
    from tickercast.modeling.windows import gather_windows

    d = datas[0]
    keras_model = build_model(
        "stacked_lstm", d["spec"].lookback, d["x"].shape[1], UNITS, seed=model_seed(1)
    )
    proto = StackedLSTM(1, d["x"].shape[1], UNITS, d["y"].shape[1])
    proto.set_from_keras(0, keras_model)
    windows = gather_windows(d["x"], d["anchors"]["val"][:64], d["spec"].lookback)
    expected = keras_model.predict(windows, verbose=0)
    forward = float(np.abs(proto(windows[None].astype(np.float32))[0].numpy() - expected).max())
    k = min(3, len(datas))
    together = StackedLSTM(k, d["x"].shape[1], UNITS, d["y"].shape[1], seed=5)
    alone = [StackedLSTM(1, d["x"].shape[1], UNITS, d["y"].shape[1]) for _ in range(k)]
    for i, single in enumerate(alone):
        for a, b in zip(single.variables, together.variables, strict=True):
            a.assign(b[i : i + 1])
    batches = raw_batches(datas[:k], 32, 5, seed=3)
    step_k = make_train_step(together, BASE_LR, 1.0, hoist=True)
    steps_1 = [make_train_step(single, BASE_LR, 1.0, hoist=True) for single in alone]
    for x, y in batches:
        step_k(x, y)
        for i, step in enumerate(steps_1):
            step(x[i : i + 1], y[i : i + 1])
    apart = max(
        float(np.abs(a.numpy()[0] - b.numpy()[i]).max())
        for i, single in enumerate(alone)
        for a, b in zip(single.variables, together.variables, strict=True)
    )
    return {"forward_max_abs_diff_vs_keras": forward, "k_together_vs_alone_max_abs_diff": apart}


def speed(tickers: list[str]) -> dict:
    from bench.training_speed import matmul_gflops
    from tickercast.modeling.models import build_model, lstm_flops_per_sample

    datas = [prepared(t) for t in tickers]
    d = datas[0]
    flops = 3 * lstm_flops_per_sample(
        build_model("stacked_lstm", d["spec"].lookback, 2, UNITS, compile=False), d["spec"].lookback
    )
    variants = {
        KERAS_B32: lambda: keras_speed(d, 32),
        "keras b32 steps_per_execution=16": lambda: keras_speed(d, 32, spe=16),
        "keras b32 jit_compile": lambda: keras_speed(d, 32, jit=True),
        "keras b128": lambda: keras_speed(d, 128),
        "keras b256": lambda: keras_speed(d, 256),
        "keras b256 jit_compile": lambda: keras_speed(d, 256, jit=True),
        "keras b512": lambda: keras_speed(d, 512),
        "keras K=2 tickers as branches of one model, b32 each": lambda: keras_k_speed(
            datas[:2], 32
        ),
        "keras K=8 tickers as branches of one model, b32 each": lambda: keras_k_speed(
            datas[:8], 32
        ),
        "keras K=2 branches, b256 each": lambda: keras_k_speed(datas[:2], 256),
        "prototype K=1 b32, projection in loop": lambda: raw_speed(datas[:1], 32, hoist=False),
        "prototype K=1 b32, hoisted": lambda: raw_speed(datas[:1], 32, hoist=True),
        "prototype K=1 b32, hoisted, jit": lambda: raw_speed(datas[:1], 32, True, jit=True),
        "prototype K=8 b32 each, hoisted": lambda: raw_speed(datas[:8], 32, hoist=True),
        "prototype K=1 b256, hoisted": lambda: raw_speed(datas[:1], 256, hoist=True),
    }
    out = {"flops_per_window": flops, "windows_per_s": {}}
    for name, run in variants.items():
        out["windows_per_s"][name] = run()
        print(f"{name}: {out['windows_per_s'][name]:.0f} windows/s", flush=True)
    out["matmul_gflops"] = matmul_gflops()
    base = out["windows_per_s"][KERAS_B32]
    out["ratio_vs_default"] = {k: v / base for k, v in out["windows_per_s"].items()}
    out["share_of_matmul"] = {
        k: v * flops / 1e9 / out["matmul_gflops"] for k, v in out["windows_per_s"].items()
    }
    out["checks"] = prototype_checks(datas)
    return out


# ---------------------------------------------------------------------------- threads


def threads_child(intra: int, measure: str = "train") -> dict:
    """In a fresh process with `intra` threads (0 = TensorFlow's default pools): training
    windows/s at batch 32 and 256 (`measure` "train") or float32 matmul GFLOP/s
    ("matmul")."""
    import tensorflow as tf

    from bench.stacked_lstm import KERNELS

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(intra)
    if measure == "matmul":
        return {"matmul_gflops": steady_matmul_gflops()}
    d = prepared("U001")
    return {  # unrolled, as the pipeline's CPU fits train
        "b32": keras_speed(d, 32, unroll=True),
        "b256": keras_speed(d, 256, unroll=True),
        "b256_loop": keras_speed(d, 256),  # Keras' own time loop
        # the same layers run by TensorFlow's fused LSTM kernel, and with the input
        # projection hoisted out of the unrolled steps (bench/stacked_lstm.KERNELS)
        **{f"b256_{k}": keras_speed(d, 256, kernel=k) for k in KERNELS},
        # two tickers' networks as branches of one graph (all windows/s): what the speed
        # section's 2x at K=2 is worth on one thread, the shape a worker trains at
        "k2_b256": keras_k_speed([d, prepared("U002")], 256, unroll=True),
    }


def steady_matmul_gflops(rounds: int = 7) -> float:
    """The median of `rounds` timed float32 matmul runs (bench/training_speed's, about a
    second each at this machine's speed): long enough that two processes started
    together overlap while they time."""
    from bench.training_speed import matmul_gflops

    return float(np.median([matmul_gflops(repeats=120) for _ in range(rounds)]))


def _spawn(intra: int, measure: str = "train") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--threads-child", str(intra), "--child-measures", measure],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"threads child exited {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _side_by_side(measure: str) -> list[dict]:
    """Two one-thread processes measuring at once (a Dask worker per core)."""
    pair = [_spawn(1, measure), _spawn(1, measure)]
    return [_result(p) for p in pair]


def threads() -> dict:
    """Default pools (0 = TensorFlow's choice: every core) vs one thread, alone and two
    processes at once (their windows/s added). Then the nightly's production shape (two
    one-thread workers training batch 256 at once) as a share of this machine's float32
    matmul, measured here both ways (one process with the default pools, before and after
    the training; two one-thread processes at once, added) and the largest taken as the
    peak: this machine's matmul has swung between ~200 and ~345 GFLOP/s from one run to
    the next while the training's GFLOP/s hardly moved."""
    from bench.stacked_lstm import KERNELS
    from tickercast.modeling.models import build_model, lstm_flops_per_sample

    matmul_before = _result(_spawn(0, "matmul"))["matmul_gflops"]
    default = _result(_spawn(0))
    single = _result(_spawn(1))
    both = _side_by_side("train")
    summed = {k: sum(r[k] for r in both) for k in both[0]}
    matmul_default = _result(_spawn(0, "matmul"))["matmul_gflops"]
    matmul_pair = sum(r["matmul_gflops"] for r in _side_by_side("matmul"))
    lookback = nightly_cfg().preprocessing.lookback
    flops = 3 * lstm_flops_per_sample(
        build_model("stacked_lstm", lookback, 2, UNITS, compile=False), lookback
    )
    peak = max(matmul_before, matmul_default, matmul_pair)
    kernels = {k: summed[f"b256_{k}"] * flops / 1e9 / peak for k in KERNELS}
    return {
        "production_share_by_kernel": kernels,
        "kernel_checks": _kernel_checks(),
        "one_process_default_pools": default,
        "one_process_one_thread": single,
        "two_processes_one_thread_each_total": summed,
        "ratio_two_procs_vs_default": {k: summed[k] / default[k] for k in summed},
        "flops_per_window": flops,
        "matmul_gflops_default_pools_before": matmul_before,
        "matmul_gflops_default_pools": matmul_default,
        "matmul_gflops_peak": peak,
        "matmul_gflops_two_one_thread_processes": matmul_pair,
        "production_gflops": summed["b256"] * flops / 1e9,
        "production_share_of_matmul": summed["b256"] * flops / 1e9 / peak,
        "production_share_loop": summed["b256_loop"] * flops / 1e9 / peak,
    }


def _kernel_checks() -> dict:
    """bench/stacked_lstm.kernel_checks on the nightly's network and 64 of U001's training
    windows."""
    from bench.stacked_lstm import kernel_checks
    from tickercast.modeling.models import build_model, model_seed
    from tickercast.modeling.windows import gather_windows

    d = prepared("U001")
    lookback = d["spec"].lookback
    model = build_model(
        "stacked_lstm", lookback, d["x"].shape[1], UNITS, compile=False, seed=model_seed(1)
    )
    anchors = d["anchors"]["train"][:64]
    x = gather_windows(d["x"], anchors, lookback).astype(np.float32)
    return kernel_checks(model, x, d["y"][anchors].astype(np.float32))


# ---------------------------------------------------------------------------- quality


def shipped_model(path):
    """A saved model, loaded for prediction only (what a bundle ships)."""
    import keras

    return keras.models.load_model(path, safe_mode=True, compile=False)


def test_skill(model, data: dict, split: str = "test") -> float:
    """1 - MSE(network) / MSE(naive) on the `split`'s windows, in the scaled target."""
    return skill(squared_errors(model, data, split))


def skill(errors: dict[str, np.ndarray]) -> float:
    return 1.0 - float(errors["network"].mean() / errors["naive"].mean())


def skill_scores(model, data: dict) -> dict:
    """Validation and test skill vs the last close, and the test MSE (scaled target)."""
    test = squared_errors(model, data)
    return {
        "val_skill": test_skill(model, data, "val"),
        "test_skill": skill(test),
        "test_mse": float(test["network"].mean()),
    }


def squared_errors(model, data: dict, split: str = "test") -> dict[str, np.ndarray]:
    """Per window, the network's and the last close's mean squared error (scaled target)."""
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.windows import gather_windows

    anchors = data["anchors"][split]
    pred = model.predict(gather_windows(data["x"], anchors, data["spec"].lookback), verbose=0)
    actual = data["y"][anchors]
    naive = naive_output(data["spec"]).output.reshape(1, -1)
    return {
        "network": ((actual - pred) ** 2).mean(axis=1),
        "naive": ((actual - naive) ** 2).mean(axis=1),
    }


def fit_variant(data: dict, config, out: Path) -> dict:
    """The pipeline's train_model on one ticker; time, epochs, val loss, and the shipped
    model's skill (`skill_scores`)."""
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model

    started = time.perf_counter()
    summary = train_model(
        data["arrays"],
        data["anchors"],
        data["spec"].lookback,
        config.fit_spec(),
        out,
        naive=naive_output(data["spec"]),
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "epochs": summary["epochs_run"],
        "best_val_loss": summary["best_val_loss"],
        "alpha": summary["shrinkage"]["alpha"],
        **skill_scores(shipped_model(out / "model.keras"), data),
    }


QUALITY_VARIANTS = {
    QUALITY_BASE: {"batch_size": 32, "learning_rate": 1e-3},
    "b256 lr 2.8e-3 (sqrt-scaled, the default)": {"batch_size": 256, "learning_rate": 2.8e-3},
    "b256 lr 2.8e-3, patience 5": {
        "batch_size": 256,
        "learning_rate": 2.8e-3,
        "patience": 5,
        "reduce_lr_patience": 3,
    },
    "b512 lr 4e-3 (sqrt-scaled)": {"batch_size": 512, "learning_rate": 4e-3},
    "b512 lr 4e-3, patience 5": {
        "batch_size": 512,
        "learning_rate": 4e-3,
        "patience": 5,
        "reduce_lr_patience": 3,
    },
}
# The quality section's tickers: the samples (2015-2020) and synthetic 10-year histories
# (the universe bench's shape, where a larger batch leaves more steps per epoch).
QUALITY_TICKERS = (*SAMPLES, "U001", "U002", "U003", "U004", "U005")


def quality(tickers: list[str]) -> dict:
    datas = {t: prepared(t) for t in tickers}
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, changes in QUALITY_VARIANTS.items():
            runs = {
                t: fit_variant(d, nightly_cfg(**changes), Path(tmp) / name / t)
                for t, d in datas.items()
            }
            out[name] = {"per_ticker": runs, **_totals(runs)}
            print(name, json.dumps(_totals(runs)), flush=True)
    base = out[QUALITY_BASE]
    for result in out.values():
        result["time_ratio"] = result["seconds"] / base["seconds"]
        result["val_loss_ratio"] = float(
            np.mean(
                [
                    r["best_val_loss"] / base["per_ticker"][t]["best_val_loss"]
                    for t, r in result["per_ticker"].items()
                ]
            )
        )
    return out


def _totals(runs: dict) -> dict:
    return {
        "seconds": sum(r["seconds"] for r in runs.values()),
        "epochs_mean": float(np.mean([r["epochs"] for r in runs.values()])),
        "test_skill_mean": float(np.mean([r["test_skill"] for r in runs.values()])),
        "shrunk_to_naive": sum(1 for r in runs.values() if not r["alpha"]),
    }


# ----------------------------------------------------------------------------- global


def global_source(datas: dict[str, dict], names: list[str]):
    """`train_global`'s view of the `names` tickers of `datas` (each `prepared`)."""
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import GlobalData

    return GlobalData(
        names,
        [len(datas[t]["x"]) for t in names],
        lambda i: (datas[names[i]]["x"], datas[names[i]]["y"], datas[names[i]]["anchors"]),
        [naive_output(datas[t]["spec"]) for t in names],
    )


def global_quality(tickers: list[str]) -> dict:
    """The issue's first lever: one global network over the tickers (the pipeline's
    `train_global`, no ticker embedding, each ticker's model shrunk on its own validation
    windows) against one network per ticker (`train_model`), both with the nightly's
    fit settings: fit time, epochs, and per ticker the shipped model's validation and test
    skill vs the last close. Whether global is worse is a paired test over the tickers
    (Wilcoxon signed-rank on their test MSE ratios), not the sign of a mean. Each ticker
    keeps its own split (the samples share one calendar; the synthetic tickers are
    independent draws, so training on one's later rows tells nothing of another's)."""
    from scipy.stats import wilcoxon

    from tickercast.modeling.train import train_global

    datas = {t: prepared(t) for t in tickers}
    names = list(datas)
    config = nightly_cfg()
    with tempfile.TemporaryDirectory() as tmp:
        per = {t: fit_variant(d, config, Path(tmp) / "per" / t) for t, d in datas.items()}
        started = time.perf_counter()
        summary = train_global(
            global_source(datas, names),
            datas[names[0]]["spec"].lookback,
            config.fit_spec(),
            0,
            Path(tmp) / "g",
        )
        seconds = time.perf_counter() - started
        together = {
            t: {
                "alpha": summary["shrinkage"][t]["alpha"],
                **skill_scores(shipped_model(summary["models"][t]), datas[t]),
            }
            for t in names
        }
    per_seconds = sum(r["seconds"] for r in per.values())
    ratios = [together[t]["test_mse"] / per[t]["test_mse"] for t in names]
    differing = sum(r != 1.0 for r in ratios)  # equal: both shipped the last close
    p = float(wilcoxon(np.log(ratios)).pvalue) if differing >= 2 else 1.0
    return {
        "per_ticker": {
            "seconds": per_seconds,
            "epochs_mean": float(np.mean([r["epochs"] for r in per.values()])),
            "fits": per,
        },
        "global": {
            "seconds": seconds,
            "epochs": summary["epochs_run"],
            "train_windows": summary["train_windows"],
            "tickers": together,
        },
        "time_ratio": seconds / per_seconds,
        "test_mse_ratio_mean": float(np.exp(np.mean(np.log(ratios)))),
        "global_worse_on": sum(r > 1.0 for r in ratios),
        "wilcoxon_p": p,
        "shrunk_to_naive": {
            "per_ticker": sum(1 for r in per.values() if not r["alpha"]),
            "global": sum(1 for r in together.values() if not r["alpha"]),
        },
        "test_skill_mean": {
            "per_ticker": float(np.mean([r["test_skill"] for r in per.values()])),
            "global": float(np.mean([r["test_skill"] for r in together.values()])),
        },
        "val_skill_mean": {
            "per_ticker": float(np.mean([r["val_skill"] for r in per.values()])),
            "global": float(np.mean([r["val_skill"] for r in together.values()])),
        },
    }


GLOBAL_SIZES = (10, 20, 40)


def global_scale(sizes=GLOBAL_SIZES) -> dict:
    """Whether a global network's epochs fall as the universe grows (what would make it
    cheap at 500 tickers): `train_global` with the nightly's fit settings over the first n
    synthetic 10-year tickers for each n, against one network per ticker over the first
    ten, in the same run: seconds, epochs and seconds per ticker; and each global model's
    mean test skill vs the last close, with how many tickers it shrank to it."""
    from tickercast.modeling.train import train_global

    names = [f"U{i:03d}" for i in range(1, max(sizes) + 1)]
    datas = {t: prepared(t) for t in names}
    config = nightly_cfg()
    out: dict = {"global": {}}
    with tempfile.TemporaryDirectory() as tmp:
        per = [fit_variant(datas[t], config, Path(tmp) / "per" / t) for t in names[:10]]
        out["per_ticker_10"] = {
            "seconds_per_ticker": float(np.mean([r["seconds"] for r in per])),
            "epochs_mean": float(np.mean([r["epochs"] for r in per])),
        }
        for n in sizes:
            chosen = names[:n]
            started = time.perf_counter()
            summary = train_global(
                global_source(datas, chosen),
                datas[chosen[0]]["spec"].lookback,
                config.fit_spec(),
                0,
                Path(tmp) / f"g{n}",
            )
            seconds = time.perf_counter() - started
            skills = [test_skill(shipped_model(summary["models"][t]), datas[t]) for t in chosen]
            out["global"][n] = {
                "seconds": seconds,
                "seconds_per_ticker": seconds / n,
                "epochs": summary["epochs_run"],
                "best_epoch": summary["best_epoch"],
                "train_windows": summary["train_windows"],
                "test_skill_mean": float(np.mean(skills)),
                "shrunk_to_naive": sum(1 for t in chosen if not summary["shrinkage"][t]["alpha"]),
            }
            print(n, json.dumps(out["global"][n]), flush=True)
    return out


# --------------------------------------------------------------------------- stopping


def replay(val_loss: list[float], patience: int) -> tuple[int, float]:
    """(epochs run, best val_loss restored) of Keras' EarlyStopping with `patience`
    (min_delta 0) over a recorded curve; the curve ends where the real run stopped."""
    best, wait = np.inf, 0
    for epoch, value in enumerate(val_loss, start=1):
        if value < best:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch, best
    return len(val_loss), best


def _ran_patience(recorded: dict) -> int:
    """The patience a recording's fits ran (one written before the recording said it):
    a fit that early stopping ended ran that many epochs after its best one; the most
    common such gap over the first nights' fits (a fit the epoch cap ended ran fewer)."""
    gaps = [
        fit["epochs_run"] - fit["best_epoch"]
        for size in recorded["sizes"]
        for fit in size["nights"][0]["fits"].values()
    ]
    return int(np.bincount(gaps).argmax())


def stopping(curves: Path, patiences=(7, 5, 4, 3)) -> dict:
    """Early stopping replayed on every first-night fit the nightly benchmark recorded, at
    the patience the runs used and each shorter one (a longer one cannot be replayed: the
    curves end where the runs stopped)."""
    recorded = json.loads(curves.read_text())
    ran = recorded.get("patience") or _ran_patience(recorded)
    by_ticker = {}  # a ticker measured at several sizes fit the same way each time
    for size in recorded["sizes"]:
        by_ticker.update(size["nights"][0]["fits"])
    fits = list(by_ticker.values())
    out = {
        "fits": len(fits),
        "shrunk_to_naive": sum(1 for f in fits if not f["alpha"]),
        "run_patience": ran,
    }
    actual = sum(f["epochs_run"] for f in fits)
    for p in sorted({ran, *(q for q in patiences if q < ran)}, reverse=True):
        replays = [replay(f["val_loss"], p) for f in fits]
        out[f"patience {p}"] = {
            "epochs": sum(e for e, _ in replays),
            "epochs_ratio": sum(e for e, _ in replays) / actual,
            "val_loss_regret_mean": float(
                np.mean(
                    [b / min(f["val_loss"]) - 1 for (_, b), f in zip(replays, fits, strict=True)]
                )
            ),
            "val_loss_regret_max": float(
                max(b / min(f["val_loss"]) - 1 for (_, b), f in zip(replays, fits, strict=True))
            ),
        }
    out["replay_matches_the_runs"] = all(
        replay(f["val_loss"], ran)[0] == f["epochs_run"] for f in fits
    )
    out["lr_at_stop"] = sorted(f["learning_rate"][-1] for f in fits if f.get("learning_rate"))
    return out


STOPPING_PATIENCES = (5, 4, 3)  # the first is the reference: each other is paired with it
STOPPING_TICKERS = (*SAMPLES, *(f"U{i:03d}" for i in range(1, 26)))


def stopping_quality(tickers: list[str], patiences=STOPPING_PATIENCES) -> dict:
    """What a shorter early-stopping patience costs in forecasts: the pipeline's
    train_model on each ticker at the nightly's settings with each patience (the same
    seed, so a shorter patience's fit is the longer one's stopped earlier), each shipped
    model (shrunk toward the last close on its validation windows) scored on the test
    windows. Whether a shorter patience is worse than the reference (the first) is a
    paired test over the tickers (Wilcoxon signed-rank on their test MSE ratios), not the
    sign of a mean; tickers where both ship the same model (both shrunk to the last close,
    or the same epoch restored) tie and drop out of the test."""
    from scipy.stats import wilcoxon

    datas = {t: prepared(t) for t in tickers}
    reference = patiences[0]
    out: dict = {
        "reference_patience": reference,
        "nightly_patience": nightly_cfg().training.patience,
        "tickers": len(datas),
    }
    with tempfile.TemporaryDirectory() as tmp:
        fits = {
            p: {
                t: fit_variant(d, nightly_cfg(patience=p), Path(tmp) / f"p{p}" / t)
                for t, d in datas.items()
            }
            for p in patiences
        }
    base = fits[reference]
    for p, runs in fits.items():
        ratios = np.array([runs[t]["test_mse"] / base[t]["test_mse"] for t in datas])
        differing = int(np.sum(ratios != 1.0))
        out[f"patience {p}"] = {
            **_totals(runs),
            "time_ratio": _totals(runs)["seconds"] / _totals(base)["seconds"],
            "epochs_ratio": sum(r["epochs"] for r in runs.values())
            / sum(r["epochs"] for r in base.values()),
            "test_mse_ratio_mean": float(np.exp(np.mean(np.log(ratios)))),
            "differing": differing,
            "worse_on": int(np.sum(ratios > 1.0)),
            "better_on": int(np.sum(ratios < 1.0)),
            "wilcoxon_p": float(wilcoxon(np.log(ratios)).pvalue) if differing >= 2 else 1.0,
            "per_ticker": runs,
        }
    return out


# ----------------------------------------------------------------------------- export


def _first_calls(model, x1: np.ndarray, x2: np.ndarray) -> dict:
    calls = {
        "predict_on_batch 1 window (first call: trace)": lambda: model.predict_on_batch(x1),
        "predict 2 windows (new shape: retrace)": lambda: model.predict(x2, verbose=0),
        "predict 2 windows again (steady)": lambda: model.predict(x2, verbose=0),
        "model(x) eager, 2 windows": lambda: model(x2, training=False),
    }
    row = {}
    for label, call in calls.items():
        started = time.perf_counter()
        call()
        row[label] = time.perf_counter() - started
    row["traces"] = model.predict_function.experimental_get_tracing_count()
    return row


def export_traces() -> dict:
    """Freshly loaded models (one per ticker's export) called as export calls them: the
    first call traces, a second batch shape retraces, then steady; and eager."""

    from tickercast.modeling.models import build_model, model_seed

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        build_model("stacked_lstm", 60, 2, UNITS, seed=model_seed(1)).save(path)
        x1 = np.zeros((1, 60, 2), np.float32)
        x2 = np.zeros((2, 60, 2), np.float32)
        return {"per_model": [_first_calls(shipped_model(path), x1, x2) for _ in range(3)]}


# ------------------------------------------------------------------------------- main


SECTIONS = (
    "speed",
    "threads",
    "quality",
    "global",
    "global_scale",
    "stopping",
    "stopping_quality",
    "export",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--curves", type=Path, help="bench/nightly_universe.py --json output")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--threads-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-measures", default="train", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads_child is not None:
        print(json.dumps(threads_child(args.threads_child, args.child_measures)))
        return
    synthetic = [f"U{i:03d}" for i in range(1, 9)]
    runners = {
        "speed": lambda: speed(synthetic),
        "threads": threads,
        "quality": lambda: quality(list(QUALITY_TICKERS)),
        "global": lambda: global_quality(list(QUALITY_TICKERS)),
        "global_scale": global_scale,
        "stopping": lambda: stopping(args.curves),
        "stopping_quality": lambda: stopping_quality(list(STOPPING_TICKERS)),
        "export": export_traces,
    }
    results = {}
    for name in args.only.split(","):
        if name == "stopping" and args.curves is None:
            print("stopping: needs --curves (bench/nightly_universe.py --json)")
            continue
        started = time.perf_counter()
        results[name] = runners[name]()
        results[name]["section_seconds"] = time.perf_counter() - started
        print(name, json.dumps(results[name], indent=1, default=str), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    from bench.results import record

    for tag, row in result_rows(results).items():
        print(row)
        record(tag, row)


def _other_patiences(section: dict, reference: int) -> list[tuple[int, dict]]:
    """A stopping section's arms ("patience N" entries) other than `reference`'s, in order."""
    return [
        (int(key.split()[1]), arm)
        for key, arm in section.items()
        if key.startswith("patience ") and key != f"patience {reference}"
    ]


KERNEL_NAMES = {
    "fused": "TensorFlow's fused LSTM kernel (BlockLSTMV2, V2 gradient)",
    "hoisted": "input projection hoisted out of the unrolled steps",
}


def _kernel_cells(r: dict) -> str:
    """The production shape's windows/s and matmul share by LSTM kernel, with each
    kernel's check against Keras'."""
    pair = r["two_processes_one_thread_each_total"]
    return "; ".join(
        f"{KERNEL_NAMES[k]} {pair[f'b256_{k}']:.0f} windows/s = "
        f"{pair[f'b256_{k}'] / pair['b256']:.2f}x ({share:.0%}; gradient within "
        f"{r['kernel_checks'][k]['grad_max_abs_diff']:.0e} of Keras')"
        for k, share in r["production_share_by_kernel"].items()
    )


def result_rows(results: dict) -> dict[str, str]:
    """RESULTS.md rows for the sections that ran."""
    rows = {}
    if "speed" in results:
        r = results["speed"]
        ratios = "; ".join(
            f"{k} {r['windows_per_s'][k]:.0f}/s = {v:.2f}x ({r['share_of_matmul'][k]:.0%})"
            for k, v in r["ratio_vs_default"].items()
        )
        best = max(r["share_of_matmul"].values())
        rows["universe_speed"] = (
            f"| training windows/s by lever (stacked_lstm {UNITS}, 60x2 windows, one ticker's "
            f"10 years; share of the same run's float32 matmul, {r['matmul_gflops']:.0f} "
            f"GFLOP/s) | Keras fit, batch 32 (Keras' own) "
            f"{r['windows_per_s'][KERAS_B32]:.0f} windows/s | {ratios} | best "
            f"{best:.0%} of matmul (target >= 30%) |"
        )
    if "threads" in results:
        r = results["threads"]
        one, pair = r["one_process_one_thread"], r["two_processes_one_thread_each_total"]
        rows["universe_threads"] = (
            "| TensorFlow thread pools on this machine (windows/s, batch 32 / 256; LSTMs "
            "unrolled as the pipeline's CPU fits train) | one process, default pools: "
            f"{r['one_process_default_pools']['b32']:.0f} / "
            f"{r['one_process_default_pools']['b256']:.0f} | one thread: "
            f"{r['one_process_one_thread']['b32']:.0f} / {r['one_process_one_thread']['b256']:.0f}"
            f"; two one-thread processes at once, total: "
            f"{r['two_processes_one_thread_each_total']['b32']:.0f} / "
            f"{r['two_processes_one_thread_each_total']['b256']:.0f} | two one-thread "
            f"processes {pair['b32'] / one['b32']:.2f}x / {pair['b256'] / one['b256']:.2f}x "
            "the windows/s of one one-thread process (as 2 vs 1 one-thread Dask workers), "
            f"{r['ratio_two_procs_vs_default']['b32']:.2f}x / "
            f"{r['ratio_two_procs_vs_default']['b256']:.2f}x of one process with the "
            "default pools; two tickers' networks "
            "as branches of one graph, b256 each, all windows/s: default pools "
            f"{r['one_process_default_pools']['k2_b256']:.0f}, one thread "
            f"{one['k2_b256']:.0f} ({one['k2_b256'] / one['b256']:.2f}x one network on one "
            f"thread), two one-thread processes at once {pair['k2_b256']:.0f} "
            f"({pair['k2_b256'] / pair['b256']:.2f}x one network each) |"
        )
        loop = r["two_processes_one_thread_each_total"]["b256_loop"]
        rows["universe_production_share"] = (
            f"| training at the nightly's production shape (stacked_lstm {UNITS}, 60x2 "
            "windows, batch 256, two one-thread processes training at once as the nightly's "
            "Dask workers do, LSTMs unrolled as its CPU fits train; "
            f"{r['flops_per_window'] / 1e6:.1f} MFLOP a window, training = 3x "
            "the forward LSTM matmuls) | float32 matmul in the same run: one process with the "
            f"default pools {r['matmul_gflops_default_pools_before']:.0f} GFLOP/s before the "
            f"training and {r['matmul_gflops_default_pools']:.0f} after, two one-thread "
            f"processes at once {r['matmul_gflops_two_one_thread_processes']:.0f} GFLOP/s "
            "(each the median of 7 runs of 120 chained 1024x1024 products; the largest, "
            f"{r['matmul_gflops_peak']:.0f}, is the peak) | "
            f"{r['two_processes_one_thread_each_total']['b256']:.0f}"
            f" windows/s = {r['production_gflops']:.0f} GFLOP/s (steady epochs, no validation "
            f"or callbacks); with Keras' time loop {loop:.0f} windows/s "
            f"({r['production_share_loop']:.0%}) | "
            f"{r['production_share_of_matmul']:.0%} of matmul (target >= 30%); unrolled "
            f"{r['two_processes_one_thread_each_total']['b256'] / loop:.2f}x the loop's "
            f"windows/s; the same layers by other kernels: {_kernel_cells(r)} |"
        )
    if "quality" in results:
        r = results["quality"]
        base = r[QUALITY_BASE]
        cells = "; ".join(
            f"{k}: {v['time_ratio']:.2f}x time, {v['epochs_mean']:.1f} epochs, val loss "
            f"{v['val_loss_ratio']:.3f}x, test skill {v['test_skill_mean']:+.2%}, "
            f"{v['shrunk_to_naive']} shrunk to naive"
            for k, v in r.items()
            if k != "section_seconds"
        )
        rows["universe_batch_quality"] = (
            f"| batch size with a matched learning rate, train_model on "
            f"{', '.join(QUALITY_TICKERS)} (samples 2015-2020, synthetic 10 years; nightly "
            f"config, patience {nightly_cfg().training.patience} unless named) | batch 32, "
            f"lr 1e-3: {base['seconds']:.0f} s, "
            f"{base['epochs_mean']:.1f} epochs, test skill {base['test_skill_mean']:+.2%} | "
            f"{cells} | see cells |"
        )
    if "global" in results:
        r = results["global"]
        per, together = r["per_ticker"], r["global"]
        rows["universe_global"] = (
            f"| one global network vs one per ticker, nightly fit settings, on "
            f"{', '.join(QUALITY_TICKERS)} (train_global without an embedding, each "
            f"ticker's model shrunk on its own validation windows) | per ticker: "
            f"{per['seconds']:.0f} s, {per['epochs_mean']:.1f} epochs each, test skill "
            f"{r['test_skill_mean']['per_ticker']:+.2%} (val "
            f"{r['val_skill_mean']['per_ticker']:+.2%}), {r['shrunk_to_naive']['per_ticker']}"
            f" shrunk to naive | global: {together['seconds']:.0f} s = "
            f"{r['time_ratio']:.2f}x, {together['epochs']} epochs over "
            f"{together['train_windows']} windows, test skill "
            f"{r['test_skill_mean']['global']:+.2%} (val {r['val_skill_mean']['global']:+.2%}), "
            f"{r['shrunk_to_naive']['global']} shrunk to naive | test MSE global/per ticker "
            f"{r['test_mse_ratio_mean']:.4f}x (geometric mean), higher on "
            f"{r['global_worse_on']} of {len(together['tickers'])}, Wilcoxon p = "
            f"{r['wilcoxon_p']:.2g} |"
        )
    if "global_scale" in results:
        r = results["global_scale"]
        per = r["per_ticker_10"]
        cells = "; ".join(
            f"{n} tickers: {g['seconds']:.0f} s = {g['seconds_per_ticker']:.1f} s/ticker "
            f"({g['seconds_per_ticker'] / per['seconds_per_ticker']:.2f}x), {g['epochs']} "
            f"epochs (best {g['best_epoch']}) over {g['train_windows']} windows, test skill "
            f"{g['test_skill_mean']:+.2%}, {g['shrunk_to_naive']} shrunk to naive"
            for n, g in r["global"].items()
        )
        rows["universe_global_scale"] = (
            "| a global network's epochs as the universe grows (synthetic 10-year tickers, "
            "nightly fit settings, one process with the default pools) | one network per "
            f"ticker over 10: {per['seconds_per_ticker']:.1f} s/ticker, "
            f"{per['epochs_mean']:.1f} epochs | {cells} | see cells |"
        )
    if "stopping" in results:
        r = results["stopping"]
        ran = r["run_patience"]
        cells = "; ".join(
            f"patience {p}: {v['epochs_ratio']:.2f}x epochs, val loss regret mean "
            f"{v['val_loss_regret_mean']:.2%} max {v['val_loss_regret_max']:.2%}"
            for p, v in _other_patiences(r, ran)
        )
        rows["universe_stopping"] = (
            f"| early stopping patience, replayed on the nightly benchmark's first-night "
            f"curves ({r['fits']} fits, {r['shrunk_to_naive']} then shrunk to the last close; "
            f"exact: the runs stop where the replay at their patience does: "
            f"{r['replay_matches_the_runs']}) | patience {ran} (as the runs fit): "
            f"{r[f'patience {ran}']['epochs']} epochs | {cells} | regret 0 = the same best "
            f"epoch restored, the same model |"
        )
    if "stopping_quality" in results:
        r = results["stopping_quality"]
        ref, nightly = r["reference_patience"], r["nightly_patience"]

        def named(p: int) -> str:
            return f"patience {p}" + (" (the nightly's)" if p == nightly else "")

        base = r[f"patience {ref}"]
        cells = "; ".join(
            f"{named(p)}: {v['time_ratio']:.2f}x time, {v['epochs_ratio']:.2f}x "
            f"epochs, test skill {v['test_skill_mean']:+.2%}, {v['shrunk_to_naive']} shrunk to "
            f"the last close, test MSE {v['test_mse_ratio_mean']:.4f}x (geometric mean), worse "
            f"on {v['worse_on']} and better on {v['better_on']} of {v['differing']} that "
            f"differ, Wilcoxon p = {v['wilcoxon_p']:.2g}"
            for p, v in _other_patiences(r, ref)
        )
        rows["universe_stopping_quality"] = (
            f"| early stopping patience and forecasts: train_model at the nightly's settings "
            f"on {r['tickers']} tickers (the 5 samples 2015-2020 and synthetic 10-year "
            f"histories), the shipped model's test MSE (scaled target) at each shorter "
            f"patience against patience {ref}'s | {named(ref)}: {base['seconds']:.0f} s, "
            f"{base['epochs_mean']:.1f} epochs a fit, test skill "
            f"{base['test_skill_mean']:+.2%}, {base['shrunk_to_naive']} shrunk to the last "
            f"close | {cells} | a tie: both ship the same model |"
        )
    return rows


if __name__ == "__main__":
    main()
