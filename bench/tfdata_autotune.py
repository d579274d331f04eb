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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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


class IdleSampler:
    """Counts the 0.1 s intervals in which this process used no CPU."""

    def __init__(self) -> None:
        self.intervals = self.idle = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.process_time()
        while not self._stop.wait(0.1):
            now = time.process_time()
            self.intervals += 1
            self.idle += now - last < 0.005
            last = now

    def __enter__(self) -> IdleSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def child(arm: str, tickers: list[str]) -> dict:
    """One worker's fits: wall seconds from the first fit's start, idle intervals, each
    fit's epochs and best validation loss."""
    from bench.universe_levers import nightly_cfg, prepared
    from tickercast.modeling import train
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.threads import size_pools

    size_pools(1)
    if arm == "on":
        _autotuning_back_on()
    datas = {t: prepared(t) for t in tickers}  # not timed: the lake's work, not training
    fit_spec = nightly_cfg().fit_spec()
    fits = {}
    with tempfile.TemporaryDirectory() as tmp, IdleSampler() as sampler:
        started = time.perf_counter()
        for ticker, d in datas.items():
            summary = train.train_model(
                d["arrays"],
                d["anchors"],
                d["spec"].lookback,
                fit_spec,
                Path(tmp) / ticker,
                label=ticker,
                naive=naive_output(d["spec"]),
            )
            fits[ticker] = [summary["epochs_run"], summary["best_val_loss"]]
        wall = time.perf_counter() - started
    return {"wall_s": wall, "fits": fits, "idle": sampler.idle, "intervals": sampler.intervals}


def pair(arm: str, tickers: list[str]) -> dict:
    """Two worker processes at once, each fitting its half of `tickers`."""
    half = len(tickers) // 2
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", arm, "--names", ",".join(part)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for part in (tickers[:half], tickers[half:])
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"{arm} worker exited {proc.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
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
