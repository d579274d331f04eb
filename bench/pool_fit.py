"""Pooled vs freshly built networks: seconds per fit, side by side in one process.

A nightly worker fits ticker after ticker with the same architecture. A fresh network
per fit makes TensorFlow trace its training and validation steps again (and keep the
trace: bench/fit_memory.py); a pooled one (tickercast.modeling.pool) is reset to the
fresh build's weights and reuses them. This runs the pipeline's own `train_model` on the
MSFT sample with the nightly network (stacked_lstm [64, 32], the recommended preset,
60-day windows, one TensorFlow thread as a one-thread Dask worker) `--fits` times per
arm, alternating the arms fit by fit (fresh: the pool emptied before the fit), and
reports the median seconds per fit of each arm at 1 epoch and at `--epochs` epochs (a
warm second night's fine-tune is a few epochs; a first night's full fit 10-20).

Run: python bench/pool_fit.py [--fits 6] [--epochs 5]  (writes the RESULTS.md row `pool_fit`)
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

UNITS = [64, 32]


def msft_fit(data: Path, epochs: int, batch_size: int):
    """(fit spec, spec, arrays, anchors, naive) of the nightly network on the MSFT sample
    ingested into `data`, with patience above `epochs`: every fit runs all of them, so
    arms compare."""
    from tests.tiny_models import tiny_config
    from tickercast.market import lake
    from tickercast.market.ingest import ingest_ticker
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.windows import anchors_for

    if not lake.partition_path(data, "MSFT").exists():
        ingest_ticker("MSFT", "sample", data)
    config = tiny_config(
        data,
        preset="recommended",
        lookback=60,
        units=UNITS,
        epochs=epochs,
        batch_size=batch_size,
        patience=epochs + 1,
    )
    spec, arrays = preprocess(lake.read_partition(data, "MSFT"), config.preprocessing, who="MSFT")
    return config.fit_spec(), spec, arrays, anchors_for(spec), naive_output(spec)


def measure(fits: int, epochs_list: list[int]) -> dict[int, dict[str, list[float]]]:
    """{epochs: {"fresh": [s, ...], "pooled": [s, ...]}}, the arms alternating."""
    from tickercast.modeling import pool
    from tickercast.modeling.threads import fresh_state, size_pools
    from tickercast.modeling.train import train_model

    size_pools(1)
    results: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for epochs in epochs_list:
            fit_spec, spec, arrays, anchors, naive = msft_fit(data, epochs, batch_size=32)
            arms: dict[str, list[float]] = {"fresh": [], "pooled": []}
            warm = Path(tmp) / "work" / f"warm-{epochs}"  # the pool's first build: not timed
            train_model(arrays, anchors, spec.lookback, fit_spec, warm, naive=naive)
            for i in range(2 * fits):
                arm = ("pooled", "fresh")[i % 2]
                fresh_state()
                if arm == "fresh":  # its build is then the one the next pooled fit reuses
                    pool.clear()
                out = Path(tmp) / "work" / f"{epochs}-{i}"
                started = time.perf_counter()
                train_model(arrays, anchors, spec.lookback, fit_spec, out, naive=naive)
                arms[arm].append(time.perf_counter() - started)
            results[epochs] = arms
            print(epochs, {k: [round(v, 2) for v in vs] for k, vs in arms.items()}, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=6, help="fits per arm and epoch count")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    results = measure(args.fits, [1, args.epochs])
    parts = []
    for epochs, arms in results.items():
        fresh, pooled = (statistics.median(arms[k]) for k in ("fresh", "pooled"))
        parts.append(
            f"{epochs} epoch{'s' if epochs > 1 else ''}: fresh {fresh:.2f} s, pooled "
            f"{pooled:.2f} s = {pooled / fresh:.2f}x ({fresh - pooled:.2f} s saved a fit)"
        )
    row = (
        f"| seconds per `train_model` fit, a fresh network vs this process's pooled one "
        f"(nightly network [64, 32], MSFT sample, 60-day windows, one thread; median of "
        f"{args.fits} fits per arm, arms alternating) | fresh build each fit | "
        f"{'; '.join(parts)} | bit for bit the same fits (tests/test_pool.py) |"
    )
    from bench.results import publish

    publish("pool_fit", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
