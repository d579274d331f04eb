"""tf.data's autotuning on or off for the nightly's train stage: two one-thread workers
training ticker after ticker, side by side in one run.

With autotuning on, every tf.data iterator runs a model thread that sleeps between
optimisations, and destroying the iterator (the end of each fit, each prediction) waits
for it. Each arm starts two processes at once, as `dask worker --nthreads 1 --nworkers 2`
runs the nightly: TensorFlow on one thread (`size_pools(1)`), LSTMs unrolled, the pooled
network, the pipeline's own `train_model` with the nightly deployment's settings, each
process on its own half of `--tickers` synthetic 10-year tickers. "on" is the pipeline
with tf.data's autotuning back on (`windows._without_rewrites` without
`autotune.enabled = False`); "off" is the pipeline as it is. Per arm: the slower
process's wall seconds and the share of 0.1 s intervals in which a process used no CPU
at all (sampled by a thread of its own). Both arms must fit every ticker to the same
epochs and best validation loss.

Run: python bench/tfdata_autotune.py [--tickers 16] [--rounds 2]  (RESULTS.md row
`tfdata_autotune`)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.nightly_universe import Sampler  # noqa: E402

ARMS = ("on", "off")


def _autotuning_back_on() -> None:
    """The pipeline's datasets as before this bench's change: rewrites off, autotuning
    left at tf.data's default (on)."""
    from tickercast.modeling import windows

    def without_rewrites(ds):
        import tensorflow as tf

        options = tf.data.Options()
        options.experimental_optimization.apply_default_optimizations = False
        return ds.with_options(options)

    windows._without_rewrites = without_rewrites


class IdleSampler(Sampler):
    """Counts the 0.1 s intervals in which this process used no CPU."""

    def __init__(self) -> None:
        self.intervals = self.idle = 0
        super().__init__()

    def _run(self) -> None:
        last = time.process_time()
        while not self._stop.wait(0.1):
            now = time.process_time()
            self.intervals += 1
            self.idle += now - last < 0.005
            last = now


def child(arm: str, tickers: list[str]) -> dict:
    """One worker's fits (bench/unrolled_workers.train_stage), with the share of 0.1 s
    intervals in which the process used no CPU while they ran."""
    from bench.unrolled_workers import train_stage

    if arm == "on":
        _autotuning_back_on()
    sampler = IdleSampler()
    result = train_stage(tickers, timed=lambda: sampler)
    return {**result, "idle": sampler.idle, "intervals": sampler.intervals}


def pair(arm: str, tickers: list[str]) -> dict:
    """Two worker processes at once, each fitting its half of `tickers`."""
    from bench.unrolled_workers import two_workers

    results = two_workers(__file__, [arm], tickers)
    return {
        "wall_s": max(r["wall_s"] for r in results),
        "fits": {k: v for r in results for k, v in r["fits"].items()},
        "idle_share": sum(r["idle"] for r in results) / sum(r["intervals"] for r in results),
    }


def main() -> None:
    from bench.results import publish
    from bench.unrolled_workers import agreement

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.names.split(","))))
        return
    tickers = [f"U{i:03d}" for i in range(1, args.tickers + 1)]
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for _ in range(args.rounds):
        for arm in ARMS:
            runs[arm].append(pair(arm, tickers))
            print(arm, json.dumps({k: v for k, v in runs[arm][-1].items() if k != "fits"}))
    on, off = (min(r["wall_s"] for r in runs[arm]) for arm in ARMS)
    idle = {arm: [f"{r['idle_share']:.1%}" for r in runs[arm]] for arm in ARMS}
    same_epochs, worst = agreement(runs["off"][0]["fits"], runs["on"][0]["fits"])
    row = (
        "| tf.data autotuning on vs off, the nightly's train stage as two one-thread workers "
        f"run it ({args.tickers} synthetic 10-year tickers, half each, two processes at "
        "once; `train_model` with the nightly settings, LSTMs unrolled, pooled network; "
        f"first traces included; best of {args.rounds} round(s), arms alternating) | "
        f"autotuning on (tf.data's default): {on:.1f} s; 0.1 s intervals with no CPU in a "
        f"process: {', '.join(idle['on'])} | off (the pipeline's): {off:.1f} s; "
        f"{', '.join(idle['off'])} | {off / on:.2f}x; same epochs {same_epochs}, best "
        f"validation loss within {worst:.1e} |"
    )
    publish("tfdata_autotune", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
