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

WARM = 10  # fits before the baseline RSS reading, as bench/fit_memory.py


def label(every: int) -> str:
    return f"every {every} fits" if every else "never"


def rss_cell(readings: list[float]) -> str:
    """A process's RSS after its WARM-th fit (or its first, in a short run) and the growth
    from there to its last."""
    at = min(WARM, len(readings))
    base = readings[at - 1]
    return f"{base:.0f} MB after {at}, {readings[-1] - base:+.0f} MB by fit {len(readings)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=64)
    parser.add_argument("--every", default="16,0", help="comma-separated; 0 = never")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    from bench.unrolled_workers import pair

    arms = [int(v) for v in args.every.split(",")]
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
        fits = runs[every][0]["fits"]
        same = all(fits[t][0] == first[t][0] for t in tickers)
        worst = max(abs(fits[t][1] - first[t][1]) / abs(first[t][1]) for t in tickers)
        rss = "; ".join(rss_cell(r) for r in best["rss_mb"])
        cells.append(
            f"{label(every)}: {best['wall_s']:.0f} s (per process: {rss}); same epochs as "
            f"the first arm: {same}, best val loss within {worst:.1e}"
        )
    base = min(r["wall_s"] for r in runs[arms[0]])
    ratios = ", ".join(
        f"{label(e)} {min(r['wall_s'] for r in runs[e]) / base:.2f}x" for e in arms[1:]
    )
    row = (
        f"| a one-thread worker's resets of Keras' state (clear_session, which also clears "
        f"TensorFlow's kernel cache): the nightly's train stage as two one-thread workers "
        f"run it, LSTMs unrolled ({args.tickers} synthetic 10-year tickers, half each, two "
        f"processes at once; `train_model` with the nightly settings, pooled network; best "
        f"of {args.rounds} round(s), arms alternating) | {cells[0]} | "
        + " | ".join(cells[1:])
        + f" | {ratios} the seconds of {label(arms[0])} |"
    )
    from bench.results import publish

    publish("worker_resets", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
