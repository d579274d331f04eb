"""Validation windows held as tensors vs gathered again each epoch: seconds per epoch of a
fit, side by side in one process.

Keras' fit evaluates its validation data after every epoch with a new iterator. The
windows were gathered from the feature array again each time (tf.data's parallel map and
prefetch started anew for two or so batches); `tickercast.modeling.windows.held_batches`
gathers them once per fit and serves the same batches from tensors. This runs the
pipeline's own `train_model` on the MSFT sample with the nightly network (stacked_lstm
[64, 32], batch 256, 60-day windows, one TensorFlow thread as a one-thread Dask worker),
`--epochs` epochs a fit (patience above them, so both arms run every epoch), `--fits`
fits per arm, the arms alternating fit by fit ("gathered": HELD_BYTES 0, so no stream is
held), and checks that both arms' fits report the same losses.

Run: python bench/validation_pass.py [--fits 5] [--epochs 10]  (RESULTS.md row
`validation_pass`)
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

from bench.pool_fit import msft_fit  # noqa: E402

BATCH = 256  # the recommended preset's batch


def measure(fits: int, epochs: int) -> tuple[dict[str, list[float]], bool]:
    """({arm: [seconds per epoch, ...]}, whether every fit of both arms had the same
    validation losses), the arms alternating fit by fit."""
    from tickercast.modeling import windows
    from tickercast.modeling.threads import size_pools
    from tickercast.modeling.train import train_model

    size_pools(1)
    bound = windows.HELD_BYTES
    arms: dict[str, list[float]] = {"held": [], "gathered": []}
    losses: set[tuple[float, ...]] = set()
    with tempfile.TemporaryDirectory() as tmp:
        fit_spec, spec, arrays, anchors, naive = msft_fit(Path(tmp) / "data", epochs, BATCH)
        warm = Path(tmp) / "work" / "warm"  # the pooled network's first build: not timed
        train_model(arrays, anchors, spec.lookback, fit_spec, warm, naive=naive)
        try:
            for i in range(2 * fits):
                arm = ("held", "gathered")[i % 2]
                windows.HELD_BYTES = bound if arm == "held" else 0
                out = Path(tmp) / "work" / str(i)
                started = time.perf_counter()
                summary = train_model(arrays, anchors, spec.lookback, fit_spec, out, naive=naive)
                arms[arm].append((time.perf_counter() - started) / summary["epochs_run"])
                losses.add(tuple(summary["history"]["val_loss"]))
        finally:
            windows.HELD_BYTES = bound
    print({k: [round(v * 1000, 1) for v in vs] for k, vs in arms.items()}, flush=True)
    return arms, len(losses) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=5, help="fits per arm")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    arms, same = measure(args.fits, args.epochs)
    held, gathered = (statistics.median(arms[k]) for k in ("held", "gathered"))
    row = (
        f"| seconds per epoch of a `train_model` fit (the epoch's training steps and its "
        f"validation pass), validation windows held as tensors vs gathered each epoch "
        f"(nightly network [64, 32], batch {BATCH}, MSFT sample, 60-day windows, one thread, "
        f"{args.epochs} epochs a fit; median of {args.fits} fits per arm, arms alternating) | "
        f"gathered each epoch: {gathered * 1000:.0f} ms | held: {held * 1000:.0f} ms | "
        f"{held / gathered:.2f}x; validation losses identical in every fit: {same} |"
    )
    from bench.results import publish

    publish("validation_pass", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
