"""Dask's own background work, as the project starts a cluster (tasks/runners.QUIET_DASK)
vs as the project started it before (only the statistical profiler off), side by side.

Each arm starts a `dask scheduler` and two one-thread `dask worker` processes (each with
its nanny) on loopback, the README's way, and measures the CPU all five processes use in
`--idle` seconds with no task (% of one core): what the cluster's bookkeeping takes from
the workers' fits on a machine they fill. (Sixteen one-second pure-Python tasks on the two
workers were tried as a loaded arm: 8.2-9.4 s in both arms, the difference lost in that
noise; the nightly on the cluster, bench/dask_cluster.py, is the loaded measurement.)
The arms alternate `--rounds` times; medians are reported.

Run: python bench/dask_quiet.py [--rounds 3] [--idle 20]  (RESULTS.md row `dask_quiet`)
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

from bench.dask_cluster import SCHEDULER_ENV, WORKER_ENV, cluster  # noqa: E402
from tickercast.tasks.runners import WORKER_TTL  # noqa: E402

BEFORE = {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
ARMS = {
    "before": ({**BEFORE, "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": WORKER_TTL}, BEFORE),
    "quiet": (SCHEDULER_ENV, WORKER_ENV),
}


def tree_cpu(procs: list) -> float:
    """CPU seconds of the processes and their children (a worker's nanny spawns it)."""
    import psutil

    total = 0.0
    for proc in procs:
        root = psutil.Process(proc.pid)
        for p in (root, *root.children(recursive=True)):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def idle_cpu(name: str, idle_s: float, logs: Path) -> float:
    """% of one core the arm's idle cluster uses."""
    scheduler_env, worker_env = ARMS[name]
    with cluster(2, dict(os.environ), logs, scheduler_env, worker_env) as (_, procs):
        time.sleep(3)  # the workers' start-up done
        before = tree_cpu(procs)
        time.sleep(idle_s)
        return (tree_cpu(procs) - before) / idle_s * 100


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds measured idle")
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    seen: dict[str, list[float]] = {name: [] for name in ARMS}
    with tempfile.TemporaryDirectory(prefix="dask-quiet-") as tmp:
        for r in range(args.rounds):
            order = list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
            for name in order:
                seen[name].append(idle_cpu(name, args.idle, Path(tmp)))
                print(name, f"{seen[name][-1]:.1f}% of a core", flush=True)
    med = {name: statistics.median(runs) for name, runs in seen.items()}
    each = {name: ", ".join(f"{v:.1f}" for v in runs) for name, runs in seen.items()}
    row = (
        "| Dask's background work: the CPU of an idle `dask scheduler` and two one-thread "
        "`dask worker` processes (with their nannies) on loopback, started as the README "
        f"starts them, over {args.idle:.0f} s (medians of {args.rounds} rounds, arms "
        f"alternating) | before (only the profiler off): {med['before']:.1f}% of a core "
        f"({each['before']}) | `QUIET_DASK` (event-loop tick 1 s, memory monitor 1 s, "
        f"system monitor 2 s, profiler off): {med['quiet']:.1f}% of a core ({each['quiet']}) "
        f"| {med['quiet'] / med['before']:.2f}x |"
    )
    print(row)
    if not args.no_record:
        from bench.results import record

        record("dask_quiet", row)
    return med


if __name__ == "__main__":
    main()
