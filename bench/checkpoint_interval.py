"""Checkpoints after every epoch vs every 30 s: seconds per fit, side by side in one process.

A checkpoint (the model with its optimizer state, the callbacks' state, fsynced and renamed
into place) costs tens of milliseconds; at batch 256 the nightly network's epoch over ten
years is a few tenths of a second. This runs the pipeline's own `train_model` on the MSFT
sample with the nightly network (stacked_lstm [64, 32], the recommended preset and its
batch 256, 60-day windows, one TensorFlow thread, pooled as a worker's fits are) for
`--epochs` epochs (a first night's fits ran 14 on average), `--fits` fits per arm,
alternating: TICKERCAST_CHECKPOINT_SECONDS=0 (a checkpoint after every epoch, as before)
vs the default interval (a checkpoint after the last epoch, and every 30 s before it).

Run: python bench/checkpoint_interval.py [--fits 5] [--epochs 14]
(writes the RESULTS.md row `checkpoint_interval`)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(fits: int, epochs: int) -> dict[str, list[float]]:
    """{"every epoch": [s, ...], "default": [s, ...]}, the arms alternating."""
    from bench.pool_fit import msft_fit
    from tickercast.modeling.checkpoints import CHECKPOINT_SECONDS_ENV
    from tickercast.modeling.threads import fresh_state, size_pools
    from tickercast.modeling.train import train_model
    from tickercast.sections import Training

    size_pools(1)
    arms: dict[str, list[float]] = {"every epoch": [], "default": []}
    with tempfile.TemporaryDirectory() as tmp:
        batch = Training.model_fields["batch_size"].default
        fit_spec, spec, arrays, anchors, naive = msft_fit(Path(tmp) / "data", epochs, batch)
        warm = Path(tmp) / "work" / "warm"  # the pool's first build and traces: not timed
        train_model(arrays, anchors, spec.lookback, fit_spec, warm, naive=naive)
        for i in range(2 * fits):
            arm = ("every epoch", "default")[i % 2]
            if arm == "every epoch":
                os.environ[CHECKPOINT_SECONDS_ENV] = "0"
            else:
                os.environ.pop(CHECKPOINT_SECONDS_ENV, None)
            fresh_state()
            out = Path(tmp) / "work" / str(i)
            started = time.perf_counter()
            summary = train_model(arrays, anchors, spec.lookback, fit_spec, out, naive=naive)
            arms[arm].append(time.perf_counter() - started)
            assert summary["epochs_run"] == epochs
        os.environ.pop(CHECKPOINT_SECONDS_ENV, None)
    print({k: [round(v, 2) for v in vs] for k, vs in arms.items()}, flush=True)
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=5, help="fits per arm")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    arms = measure(args.fits, args.epochs)
    every, default = (statistics.median(arms[k]) for k in ("every epoch", "default"))
    row = (
        f"| seconds per `train_model` fit, a checkpoint after every epoch vs every 30 s and "
        f"after the last (nightly network [64, 32], batch 256, MSFT sample, {args.epochs} "
        f"epochs, one thread, pooled; median of {args.fits} fits per arm, arms alternating) "
        f"| every epoch {every:.2f} s | default {default:.2f} s "
        f"({(every - default) / (args.epochs - 1) * 1000:.0f} ms per checkpoint saved) | "
        f"{default / every:.2f}x |"
    )
    from bench.results import publish

    publish("checkpoint_interval", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
