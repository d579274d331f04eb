"""Do two one-thread fits at once slow each other on this machine's two cores?

The Dask ratio (bench/dask_cluster.py) runs each night's tasks ~1.2-1.4x longer on two
workers than on one. This separates the fits themselves from what surrounds them in a
night (the second worker's warm-up, the Prefect server, the flow run and the scheduler on
the same cores): a process fits its tickers alone, then beside a second process fitting
as many others, as two one-thread Dask workers share a night (`bench/unrolled_workers.py`'s
`train_stage`: TensorFlow on one thread, the pooled network, the pipeline's `train_model`
with the nightly settings). The arms alternate `--rounds` times; the first process's
tickers, and so its work, are the same in both (its fits must reach the same epochs).

Reported: each round's ratio of that process's wall paired over alone, the median of the
rounds' wall and CPU ratios (1.00x: no slowdown), and the arms' medians.
Run: python bench/paired_fits.py [--tickers 4] [--rounds 3]  (RESULTS.md row `paired_fits`)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def child(tickers: list[str]) -> dict:
    """Fit `tickers` in this process: the fits' wall, this process's CPU seconds over
    them, and each fit's epochs and best validation loss."""
    from bench.unrolled_workers import train_stage

    spent: dict[str, float] = {}

    class timed:  # CPU over the fits alone, as train_stage times their wall
        def __enter__(self):
            spent["before"] = cpu_now()

        def __exit__(self, *exc):
            spent["cpu"] = cpu_now() - spent["before"]

    out = train_stage(tickers, timed=timed)
    return {"wall_s": out["wall_s"], "cpu_s": spent["cpu"], "fits": out["fits"]}


def cpu_now() -> float:
    """This process's user + system CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def result_row(tickers: int, rounds: list[dict[str, dict]]) -> str:
    """The RESULTS.md row: each round's ratio of the first process's wall paired over its
    wall alone (the arms of a round ran minutes apart; the machine's speed drifts more
    between rounds), the median of those ratios and of the CPU's, and the arms' medians."""

    def median(arm: str, key: str) -> float:
        return statistics.median(r[arm][key] for r in rounds)

    def ratios(key: str) -> list[float]:
        return [r["pair"][key] / r["solo"][key] for r in rounds]

    wall, cpu = (statistics.median(ratios(k)) for k in ("wall_s", "cpu_s"))
    same = all(r["pair"]["fits"] == r["solo"]["fits"] for r in rounds)
    each = "; ".join(
        f"round {i + 1}: {r['solo']['wall_s']:.1f} s alone, {r['pair']['wall_s']:.1f} s "
        f"paired = {ratio:.2f}x"
        for i, (r, ratio) in enumerate(zip(rounds, ratios("wall_s"), strict=True))
    )
    return (
        f"| two one-thread fitting processes at once vs one alone ({tickers} synthetic "
        f"10-year tickers each, `train_model` with the nightly settings, TensorFlow on one "
        f"thread, the pooled network; {len(rounds)} round(s), arms alternating) "
        f"| alone: {median('solo', 'wall_s'):.1f} s, {median('solo', 'cpu_s'):.1f} CPU-s "
        f"| paired: {median('pair', 'wall_s'):.1f} s, {median('pair', 'cpu_s'):.1f} CPU-s "
        f"| median of the rounds' ratios: wall {wall:.2f}x, CPU {cpu:.2f}x (1.00x: no "
        f"slowdown); {each}; same fits (epochs, best val loss) alone and paired: {same} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=4, help="tickers each process fits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child.split(","))))
        return
    from bench.unrolled_workers import at_once

    first = [f"U{i:03d}" for i in range(1, args.tickers + 1)]
    second = [f"U{i:03d}" for i in range(args.tickers + 1, 2 * args.tickers + 1)]
    rounds: list[dict[str, dict]] = []
    for index in range(args.rounds):
        measured: dict[str, dict] = {}
        # the order alternates: a drift of the machine's speed lands on both arms
        for arm in ("solo", "pair") if index % 2 == 0 else ("pair", "solo"):
            groups = [first] if arm == "solo" else [first, second]
            runs = [["--child", ",".join(group)] for group in groups]
            measured[arm] = at_once(__file__, runs)[0]
            print(arm, round(measured[arm]["wall_s"], 1), flush=True)
        rounds.append(measured)
    from bench.results import publish

    publish("paired_fits", result_row(args.tickers, rounds), keep=not args.no_record)


if __name__ == "__main__":
    main()
