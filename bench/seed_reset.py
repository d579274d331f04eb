"""A fit after a global-seed reset vs a fit that keeps the process's seed: seconds per
`train_model` fit, side by side in one process.

`tf.random.set_seed` clears TensorFlow's runtime caches, and `train.seed_everything`
called it before every fit, so each fit instantiated and optimised its traced training
and validation steps again on its first batch. It now sets the seed once per value. This
runs the pipeline's own `train_model` on the MSFT sample with the nightly network
(stacked_lstm [64, 32], batch 256, 60-day windows) on one TensorFlow thread, as a
one-thread Dask worker does, `--epochs` epochs a fit (patience above them), the arms
alternating fit by fit ("reset": the seed forgotten before the fit, as before). Once with
the LSTMs unrolled (how a one-thread worker trains) and once, in a child process, with
Keras' time loop; both report the same losses in every fit of both arms.

Run: python bench/seed_reset.py [--fits 5] [--epochs 5]  (RESULTS.md row `seed_reset`)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.pool_fit import msft_fit  # noqa: E402

BATCH = 256


def measure(fits: int, epochs: int, loop: bool) -> dict:
    """{arm: [seconds per fit]} and whether all fits had the same validation losses."""
    from tickercast.modeling import train
    from tickercast.modeling.threads import size_pools

    size_pools(1)
    if loop:
        train.one_thread_worker = lambda: False
    arms: dict[str, list[float]] = {"kept": [], "reset": []}
    losses: set[tuple[float, ...]] = set()
    with tempfile.TemporaryDirectory() as tmp:
        fit_spec, spec, arrays, anchors, naive = msft_fit(Path(tmp) / "data", epochs, BATCH)
        warm = Path(tmp) / "work" / "warm"  # the first trace of the process: not timed
        train.train_model(arrays, anchors, spec.lookback, fit_spec, warm, naive=naive)
        for i in range(2 * fits):
            arm = ("kept", "reset")[i % 2]
            if arm == "reset":
                train._global_seed.clear()  # as before: the seed set, the caches cleared
            started = time.perf_counter()
            summary = train.train_model(
                arrays, anchors, spec.lookback, fit_spec, Path(tmp) / "work" / str(i), naive=naive
            )
            arms[arm].append(time.perf_counter() - started)
            losses.add(tuple(summary["history"]["val_loss"]))
    return {"arms": arms, "same_losses": len(losses) == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=5, help="fits per arm")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--child-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    if args.child_loop:
        print(json.dumps(measure(args.fits, args.epochs, loop=True)))
        return
    unrolled = measure(args.fits, args.epochs, loop=False)
    child = subprocess.run(
        [sys.executable, __file__, "--child-loop", "--fits", str(args.fits)]
        + ["--epochs", str(args.epochs)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    looped = json.loads(child.stdout.strip().splitlines()[-1])
    cells = {}
    for name, result in (("unrolled", unrolled), ("Keras' loop", looped)):
        kept, reset = (statistics.median(result["arms"][k]) for k in ("kept", "reset"))
        cells[name] = (kept, reset, result["same_losses"])
    print(json.dumps(cells))
    row = (
        f"| seconds per `train_model` fit, the global seed kept vs reset before the fit "
        f"(nightly network [64, 32], batch {BATCH}, MSFT sample, 60-day windows, one thread as "
        f"a one-thread Dask worker, {args.epochs} epochs a fit; median of {args.fits} fits per "
        "arm, arms alternating) | reset before each fit (as before): "
        + "; ".join(f"{k} {v[1]:.2f} s" for k, v in cells.items())
        + " | kept: "
        + "; ".join(f"{k} {v[0]:.2f} s" for k, v in cells.items())
        + " | "
        + "; ".join(
            f"{k} {v[0] / v[1]:.2f}x ({v[1] - v[0]:.2f} s a fit saved), same losses: {v[2]}"
            for k, v in cells.items()
        )
        + " |"
    )
    from bench.results import publish

    publish("seed_reset", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
