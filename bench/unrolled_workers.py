"""Two one-thread workers training ticker after ticker, their LSTMs unrolled vs Keras'
time loop: the nightly's train stage on this machine, side by side in one run.

Each arm starts two processes at once, as `dask worker --nthreads 1 --nworkers 2` runs the
nightly: TensorFlow on one thread (`size_pools(1)`), Keras' state reset every FRESH_EVERY
fits (`between_fits`), the pooled network, the pipeline's own `train_model` with the
nightly deployment's settings, each process on its own half of `--tickers` synthetic 10-year
tickers (tests/synthetic.py). A process's wall time includes its first trace, which the
unrolled network pays more for (~8 s), and the re-instantiation after each reset. The
arms alternate `--rounds` times; both arms must fit every ticker to the same epochs and
best validation loss (within float rounding).

Run: python bench/unrolled_workers.py [--tickers 32] [--rounds 1]  (RESULTS.md row
`unrolled_workers`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tickercast.modeling.threads import FRESH_EVERY  # noqa: E402

ARMS = ("loop", "unrolled")


def train_stage(tickers: list[str], every: int = FRESH_EVERY, timed=contextlib.nullcontext):
    """One one-thread worker's fits in this process, resetting Keras' state every `every`
    fits (0: never): wall seconds from the first fit's start, each fit's epochs and best
    validation loss, and the process's RSS after each fit. `timed()` is a context entered
    around the fits alone (the lake's preparation is not timed)."""
    from bench.fit_memory import rss_mb
    from bench.universe_levers import nightly_cfg, prepared
    from tickercast.modeling import train
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.threads import between_fits, size_pools

    size_pools(1)
    datas = {t: prepared(t) for t in tickers}  # not timed: the lake's work, not training
    fit_spec = nightly_cfg().fit_spec()
    fits, rss = {}, []
    with tempfile.TemporaryDirectory() as tmp, timed():
        started = time.perf_counter()
        for ticker, d in datas.items():
            between_fits(every or 1 << 62)
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
            rss.append(rss_mb())
        wall = time.perf_counter() - started
    return {"wall_s": wall, "fits": fits, "rss_mb": rss}


def child(arm: str, tickers: list[str], every: int = FRESH_EVERY) -> dict:
    """One worker of `arm`: its LSTMs unrolled, or Keras' time loop."""
    from tickercast.modeling import train

    if arm == "loop":
        train.one_thread_worker = lambda: False
    return train_stage(tickers, every)


def two_workers(script: str, child_args: list[str], tickers: list[str]) -> list[dict]:
    """`script --child ... --names <half>` twice at once, each on its half of `tickers`
    (as two one-thread Dask workers share a night); each process's JSON result."""
    half = len(tickers) // 2
    return at_once(
        script,
        [
            ["--child", *child_args, "--names", ",".join(part)]
            for part in (tickers[:half], tickers[half:])
        ],
    )


def at_once(script: str, runs: list[list[str]]) -> list[dict]:
    """`script` once per argument list in `runs`, all started together; each process's
    JSON result (its last line of output), in the order of `runs`."""
    procs = [
        subprocess.Popen(
            [sys.executable, script, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        for args in runs
    ]
    results = []
    for proc, args in zip(procs, runs, strict=True):
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def pair(arm: str, tickers: list[str], every: int = FRESH_EVERY) -> dict:
    """Two worker processes at once, each fitting its half of `tickers`: the slower's
    wall seconds, every fit, and each process's RSS after each of its fits."""
    results = two_workers(__file__, [arm, "--every", str(every)], tickers)
    return {
        "wall_s": max(r["wall_s"] for r in results),
        "fits": {k: v for r in results for k, v in r["fits"].items()},
        "rss_mb": [r["rss_mb"] for r in results],
    }


def agreement(fits: dict, reference: dict) -> tuple[bool, float]:
    """Whether every ticker's fit ran the reference's epochs, and the largest relative
    difference of their best validation losses."""
    same = all(fits[t][0] == reference[t][0] for t in reference)
    worst = max(abs(fits[t][1] - reference[t][1]) / abs(reference[t][1]) for t in reference)
    return same, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    parser.add_argument("--every", type=int, default=FRESH_EVERY, help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.names.split(","), args.every)))
        return
    tickers = [f"U{i:03d}" for i in range(1, args.tickers + 1)]
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for _ in range(args.rounds):
        for arm in ARMS:
            runs[arm].append(pair(arm, tickers))
            print(arm, round(runs[arm][-1]["wall_s"], 1), flush=True)
    loop, unrolled = (min(r["wall_s"] for r in runs[arm]) for arm in ARMS)
    a = runs["loop"][0]["fits"]
    same_epochs, worst = agreement(runs["unrolled"][0]["fits"], a)
    epochs = sum(v[0] for v in a.values())
    row = (
        f"| the nightly's train stage as two one-thread workers run it ({args.tickers} "
        f"synthetic 10-year tickers, half each, two processes at once; `train_model` with the "
        f"nightly settings, pooled network, Keras' state reset every {FRESH_EVERY} fits; first "
        f"traces included; best of {args.rounds} round(s), arms alternating) | Keras' time loop: "
        f"{loop:.0f} s | LSTMs unrolled: {unrolled:.0f} s | {unrolled / loop:.2f}x; "
        f"{epochs} epochs in all; same epochs in every fit: {same_epochs}, best val loss "
        f"within {worst:.1e} (relative) |"
    )
    from bench.results import publish

    publish("unrolled_workers", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
