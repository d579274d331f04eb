"""Peak memory of global-mode training on 200 tickers x 5,000 days x 6 features.

Windows are never materialised: every ticker's rows are stacked once into one float32
array, and tf.data gathers each batch's windows from it by (global) anchor index, so
peak memory should grow by a small multiple of the raw array (target: <= 3x), where
materialised windows would need ~lookback (60) times it.

Method, in a fresh process per measurement: warm TensorFlow and Keras up with the same
model on a tiny data set (so their one-off start-up memory is not counted), reset the
kernel's peak-RSS counter (/proc/self/clear_refs), then stack the tickers and train one
short epoch (a capped number of steps; the full index and the epoch's permutation are
still built) in global mode with a ticker embedding. Per-ticker arrays are generated
inside `load(i)`, like reading each ticker's preprocessed file, so they count.

Part of the growth does not depend on the data size at all (tracing a new model's
train/test functions, tf.data's runtime): the same measurement on 200 x 300 days
gives that size-independent part, reported next to the total.

Run: python bench/training_memory.py  (writes a RESULTS.md row)
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TICKERS, DAYS, FEATURES, LOOKBACK, BATCH, STEPS = 200, 5000, 6, 60, 256, 40
CFG = {
    "model": "lstm",
    "units": [16],
    "learning_rate": 1e-3,
    "clipvalue": 1.0,
    "epochs": 1,
    "batch_size": BATCH,
    "patience": 5,
    "seed": 1,
}
EMBEDDING = 4  # global mode with a ticker embedding


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) * 1024


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_loader(days: int):
    from tickercast.modeling.windows import split_anchors

    n_train, n_val = int(days * 0.7), int(days * 0.15)

    def load(i: int):
        rng = np.random.default_rng(i)
        x = rng.random((days, FEATURES), dtype=np.float32)
        y = x[:, :1].copy()
        return x, y, split_anchors(days, n_train, n_val, LOOKBACK, 1)

    return load


def main(days: int = DAYS) -> dict:
    from tickercast.modeling.train import GlobalData, train_global
    from tickercast.sections import FitSpec

    spec = FitSpec(**CFG)
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: same model and shapes on a tiny data set
        warm = GlobalData([f"W{i}" for i in range(TICKERS)], [200] * TICKERS, make_loader(200))
        train_global(warm, LOOKBACK, spec, EMBEDDING, Path(tmp, "warm"), max_steps=2)
        raw = TICKERS * days * FEATURES * 4
        base = _status("VmRSS")
        exact = reset_peak()
        started = time.perf_counter()
        source = GlobalData([f"T{i}" for i in range(TICKERS)], [days] * TICKERS, make_loader(days))
        summary = train_global(source, LOOKBACK, spec, EMBEDDING, Path(tmp, "run"), max_steps=STEPS)
        seconds = time.perf_counter() - started
        peak = _status("VmHWM")
    growth = peak - base
    windows = summary["train_windows"] + summary["val_windows"]
    materialised = windows * LOOKBACK * FEATURES * 4
    return {
        "raw_mb": raw / 1e6,
        "growth_mb": growth / 1e6,
        "ratio": growth / raw,
        "materialised_ratio": materialised / raw,
        "windows": windows,
        "seconds": seconds,
        "exact_peak": exact,
    }


def measure(days: int) -> dict:
    """One measurement in a fresh interpreter, so earlier runs' memory cannot be reused."""
    import json
    import subprocess

    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); "
        f"from bench.training_memory import main; print('RESULT', json.dumps(main({days})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return json.loads(out.split("RESULT", 1)[1])


if __name__ == "__main__":
    from bench.results import record

    r = measure(DAYS)
    fixed = measure(300)
    data_part = r["growth_mb"] - fixed["growth_mb"]
    row = (
        f"| global training memory ({TICKERS} tickers x {DAYS} days x {FEATURES} features = "
        f"{r['raw_mb']:.0f} MB, lookback {LOOKBACK}, 1 epoch capped at {STEPS} steps) | "
        f"materialised windows would be {r['materialised_ratio']:.0f}x the raw array | "
        f"peak RSS grew {r['growth_mb']:.0f} MB ({r['ratio']:.1f}x raw) over "
        f"{r['windows']:,} windows; {fixed['growth_mb']:.0f} MB of it is size-independent "
        f"(same run on {TICKERS} x 300 days) | data-dependent growth "
        f"{data_part / r['raw_mb']:.1f}x raw (target <= 3x); total {r['ratio']:.1f}x |"
    )
    print(row)
    if not r["exact_peak"]:
        print("note: /proc/self/clear_refs unavailable; peak includes earlier usage")
    record("training_memory", row)
