"""Eager calls vs traced twins (tickercast.modeling.inference): seconds per prediction
call, side by side in one process.

A nightly ticker's model is loaded or built anew, and shrinkage, evaluation, the export
check and the gate each call it about eight times in all. This builds `--models`
networks of the nightly architecture (stacked_lstm [64, 32], 60 days x 2 features, each
its own seed: one per ticker), and for each calls it eagerly (`model(x,
training=False)`, what the pipeline did) and through `inference.predict` (the first model
pays its architecture's trace), alternating, at 1 window (a forecast, the export's
probes), 300 (a split) and 2048 (a ten-year history). Outputs are checked equal.

Run: python bench/graph_predict.py [--models 8]  (writes the RESULTS.md row `graph_predict`)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZES = (1, 300, 2048)


def measure(n_models: int) -> dict:
    from tickercast.modeling import inference
    from tickercast.modeling.models import build_model, model_seed

    def net(i: int):
        seed = model_seed(42, f"T{i}")
        return build_model("stacked_lstm", 60, 2, [64, 32], seed=seed, compile=False)

    rng = np.random.default_rng(0)
    inputs = {n: rng.random((n, 60, 2)).astype(np.float32) for n in SIZES}
    inference.clear()
    first = net(0)
    started = time.perf_counter()
    inference.predict(first, inputs[1])
    first_call = time.perf_counter() - started  # clone + trace + call
    out: dict = {n: {"eager": [], "graph": []} for n in SIZES}
    for i in range(1, n_models + 1):
        model = net(i)
        for n, x in inputs.items():
            t0 = time.perf_counter()
            want = np.asarray(model(x, training=False))
            t1 = time.perf_counter()
            got = inference.predict(model, x)
            t2 = time.perf_counter()
            if not np.array_equal(got, want):
                raise AssertionError("the traced twin's outputs differ from the eager call's")
            out[n]["eager"].append(t1 - t0)
            out[n]["graph"].append(t2 - t1)
    return {"first_call": first_call, "calls": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8)
    args = parser.parse_args()
    r = measure(args.models)
    med = {
        n: {arm: statistics.median(v) for arm, v in arms.items()} for n, arms in r["calls"].items()
    }
    cells = "; ".join(
        f"{n} window{'s' if n > 1 else ''}: {m['eager']:.3f} s eager, {m['graph']:.4f} s traced "
        f"({m['graph'] / m['eager']:.2f}x)"
        for n, m in med.items()
    )
    row = (
        f"| prediction calls, eager vs a traced twin per architecture "
        f"(tickercast.modeling.inference): {args.models} stacked_lstm [64, 32] networks "
        f"(60 x 2 windows, one seed each), median seconds per call, outputs equal bit for bit "
        f"| eager `model(x, training=False)` | {cells}; the architecture's first call "
        f"(clone, trace, call) {r['first_call']:.2f} s once per process | 1-window call "
        f"{med[1]['graph'] / med[1]['eager']:.2f}x |"
    )
    print(row)
    from bench.results import record

    record("graph_predict", row)


if __name__ == "__main__":
    main()
