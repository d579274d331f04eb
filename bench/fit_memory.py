"""Resident memory of one long-lived process that trains ticker after ticker.

A Dask worker (or the threads runner's process) of a nightly universe runs hundreds of
fits in a row. Three arms, each in a fresh process with one TensorFlow thread, as a
one-thread Dask worker runs them: the pipeline's arms follow each step with the worker's
own between-fits policy (`between_fits`: Keras' clear_session and a garbage collection
every FRESH_EVERY fits, nothing forced in between, so the readings are what the worker
holds); the plain Keras arm clears and collects after every fit. On the MSFT sample with
the nightly network (stacked_lstm [64, 32], the recommended preset, 60-day windows,
2 epochs a fit):
- pipeline: `train_model` (checkpoints, shrinkage, saving; the network comes from the
  process's pool, tickercast.modeling.pool);
- ticker: the whole per-ticker work: preprocess, `train_model`, evaluate, and a bundle
  with its SavedModel exported and checked;
- keras: plain `model.fit` on arrays with a new model each time, which shows Keras and
  TensorFlow's own growth (each traced LSTM loop stays referenced after its model is
  dropped: keras-team/keras#17458, #20552), the growth pooling avoids.
Reported: RSS after step 10 and after the last, the growth per step in between, and the
peak reading after step 10.

Target (issue 22): at most 200 MB growth from 10 to 100 tickers in one process.

Run: python bench/fit_memory.py [--fits 100]  (writes the RESULTS.md row `fit_memory`)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

UNITS = [64, 32]
WARM = 10  # fits before the baseline reading: one-off start-up memory is not growth
KINDS = ("pipeline", "ticker", "keras")


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def pipeline_fit(fits: int) -> list[float]:
    """RSS after each of `fits` pipeline fits in this process."""
    from tests.tiny_models import tiny_config
    from tickercast.market import lake
    from tickercast.market.ingest import ingest_ticker
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.threads import between_fits, size_pools
    from tickercast.modeling.train import train_model
    from tickercast.modeling.windows import anchors_for

    size_pools(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        config = tiny_config(
            data, preset="recommended", lookback=60, units=UNITS, epochs=2, batch_size=32
        )
        ingest_ticker("MSFT", "sample", data)
        spec, arrays = preprocess(
            lake.read_partition(data, "MSFT"), config.preprocessing, who="MSFT"
        )
        anchors, naive = anchors_for(spec), naive_output(spec)
        readings = []
        for i in range(fits):
            out = Path(tmp) / "work" / f"fit-{i}"
            train_model(arrays, anchors, spec.lookback, config.fit_spec(), out, naive=naive)
            between_fits()
            readings.append(rss_mb())
        return readings


def ticker_version(fits: int) -> list[float]:
    """RSS after each of `fits` whole per-ticker steps in this process: preprocess, train
    (as `pipeline_fit`), evaluate, and a bundle written with its SavedModel exported and
    checked, as a nightly worker does for each ticker (tests/tiny_models.train_version)."""
    from tests.tiny_models import tiny_config, train_version
    from tickercast.market.ingest import ingest_ticker
    from tickercast.modeling.threads import between_fits, size_pools

    size_pools(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        config = tiny_config(
            data, preset="recommended", lookback=60, units=UNITS, epochs=2, batch_size=32
        )
        ingested = ingest_ticker("MSFT", "sample", data)
        readings = []
        for i in range(fits):
            train_version(data, ingested, config, f"fit-{i}")
            between_fits()
            readings.append(rss_mb())
        return readings


def keras_fit(fits: int) -> list[float]:
    """RSS after each of `fits` plain Keras fits of the same network shape."""
    import keras
    import numpy as np

    from tickercast.modeling.threads import fresh_state, size_pools

    size_pools(1)
    rng = np.random.default_rng(0)
    x = rng.random((1024, 60, 2), dtype=np.float32)
    y = rng.random((1024, 1), dtype=np.float32)
    readings = []
    for _ in range(fits):
        model = keras.Sequential(
            [
                keras.Input((60, 2)),
                keras.layers.LSTM(UNITS[0], return_sequences=True),
                keras.layers.LSTM(UNITS[1]),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y, epochs=2, batch_size=32, validation_split=0.25, verbose=0)
        del model
        fresh_state()
        gc.collect()
        readings.append(rss_mb())
    return readings


def growth(readings: list[float]) -> dict:
    base, last = readings[WARM - 1], readings[-1]
    fits = len(readings) - WARM
    return {
        "fits": len(readings),
        "rss_after_10_mb": base,
        "rss_after_last_mb": last,
        "growth_mb": last - base,
        "mb_per_fit": (last - base) / fits if fits else 0.0,
        "peak_growth_mb": max(readings[WARM - 1 :]) - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=100)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # each kind in a fresh process: neither inherits the other's memory
        run = {"pipeline": pipeline_fit, "ticker": ticker_version, "keras": keras_fit}
        print(json.dumps(growth(run[args.child](args.fits))))
        return
    results = {}
    for kind in KINDS:
        done = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--fits", str(args.fits)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        print(kind, results[kind], flush=True)
    from tickercast.modeling.threads import FRESH_EVERY

    p, t, k = results["pipeline"], results["ticker"], results["keras"]
    row = (
        f"| RSS of one process training fit after fit (nightly network [64, 32], 2 epochs "
        f"each, one TensorFlow thread, as a one-thread Dask worker runs them: Keras' "
        f"clear_session and a collection every {FRESH_EVERY} fits, nothing forced between) | "
        f"plain Keras fits, a new model each, cleared and collected after each: "
        f"{k['rss_after_10_mb']:.0f} MB after 10, +{k['growth_mb']:.0f} MB by fit "
        f"{k['fits']} ({k['mb_per_fit']:.1f} MB/fit) | pipeline train_model (pooled "
        f"network): {p['rss_after_10_mb']:.0f} MB after 10, +{p['growth_mb']:.0f} MB by fit "
        f"{p['fits']} ({p['mb_per_fit']:.2f} MB/fit); whole ticker (train, evaluate, bundle "
        f"with SavedModel export and check): {t['rss_after_10_mb']:.0f} MB after 10, "
        f"+{t['growth_mb']:.0f} MB by ticker {t['fits']} ({t['mb_per_fit']:.2f} MB/ticker; "
        f"peak +{t['peak_growth_mb']:.0f} MB) | growth 10 -> {t['fits']} tickers "
        f"{t['growth_mb']:.0f} MB, peak {t['peak_growth_mb']:.0f} MB (target <= 200 MB) |"
    )
    print(row)
    from bench.results import record

    record("fit_memory", row)


if __name__ == "__main__":
    main()
