"""How often a one-thread worker resets Keras' state: the cost in time and the memory kept.

`between_fits` calls Keras' clear_session every FRESH_EVERY fits so that a long-lived
worker does not carry state from ticker to ticker. clear_session also clears TensorFlow's
kernel cache, so the next fit instantiates and optimises its traced training and
validation steps again (seconds for the unrolled nightly network). Arms, alternating:
the nightly's train stage as two one-thread workers run it (bench/unrolled_workers.py's
`pair`: LSTMs unrolled, the pooled network, the nightly settings, each process on half of
`--tickers` synthetic 10-year tickers) resetting every `--every` fits, one value per arm
(0: never). Reported per arm: the slower process's wall seconds, the RSS of each process
after its 10th fit and after its last, and whether every fit reached the same epochs and
best validation loss as the first arm's.

Run: python bench/worker_resets.py [--tickers 64] [--every 16,0] [--rounds 1]
(RESULTS.md row `worker_resets`)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.fit_memory import WARM, growth  # noqa: E402
from bench.unrolled_workers import agreement, pair  # noqa: E402


def label(every: int) -> str:
    return f"every {every} fits" if every else "never"


def rss_cell(readings: list[float]) -> str:
    """A process's RSS after its WARM-th fit and its growth from there to its last, as
    bench/fit_memory.py reads them."""
    g = growth(readings)
    return (
        f"{g['rss_after_10_mb']:.0f} MB after {WARM}, {g['growth_mb']:+.0f} MB by fit {g['fits']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=64)
    parser.add_argument("--every", default="16,0", help="two intervals, 0 = never: BASE,OTHER")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    arms = [int(v) for v in args.every.split(",")]
    if len(arms) != 2 or args.tickers < 2 * WARM:
        parser.error(f"--every takes two intervals; --tickers at least {2 * WARM}")
    tickers = [f"U{i:03d}" for i in range(1, args.tickers + 1)]
    runs: dict[int, list[dict]] = {every: [] for every in arms}
    for _ in range(args.rounds):
        for every in arms:
            runs[every].append(pair("unrolled", tickers, every))
            print(label(every), round(runs[every][-1]["wall_s"], 1), flush=True)
    first = runs[arms[0]][0]["fits"]
    cells = []
    for every in arms:
        best = min(runs[every], key=lambda r: r["wall_s"])
        same, worst = agreement(runs[every][0]["fits"], first)
        rss = "; ".join(rss_cell(r) for r in best["rss_mb"])
        cells.append(
            f"{label(every)}: {best['wall_s']:.0f} s (per process: {rss}); same epochs as "
            f"the first arm: {same}, best val loss within {worst:.1e}"
        )
    base, other = (min(r["wall_s"] for r in runs[e]) for e in arms)
    row = (
        f"| a one-thread worker's resets of Keras' state (clear_session, which also clears "
        f"TensorFlow's kernel cache): the nightly's train stage as two one-thread workers "
        f"run it, LSTMs unrolled ({args.tickers} synthetic 10-year tickers, half each, two "
        f"processes at once; `train_model` with the nightly settings, pooled network; best "
        f"of {args.rounds} round(s), arms alternating) | {cells[0]} | {cells[1]} | "
        f"{label(arms[1])} {other / base:.2f}x the seconds of {label(arms[0])} |"
    )
    from bench.results import publish

    publish("worker_resets", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
