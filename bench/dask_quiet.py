"""Dask's own background work, as the project starts a cluster (tasks/runners.QUIET_DASK)
vs as the project started it before (only the statistical profiler off), side by side.

Each arm starts a `dask scheduler` and two one-thread `dask worker` processes (each with
its nanny) on loopback, the README's way, and measures:
- idle: the CPU all five processes use in `--idle` seconds with no task (% of one core),
  what the cluster's bookkeeping takes from the workers' fits on a machine they fill;
- nights (`--synthetic N`, 0 to skip): the nightly retrain on that cluster, as
  bench/dask_cluster.py runs it (a real Prefect server, `deployments/serve.py`, the five
  samples plus N synthetic tickers, a fresh data folder per night): its wall, and the
  train steps' task-seconds.
The arms alternate `--rounds` times; medians are reported. (Sixteen one-second
pure-Python tasks were tried as the loaded arm first: 8.2-9.4 s in both arms, the
difference lost in that noise.)

Run: python bench/dask_quiet.py [--rounds 2] [--idle 20] [--synthetic 27]  (RESULTS.md row
`dask_quiet`)
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

from bench.dask_cluster import night_on_cluster  # noqa: E402
from bench.dask_processes import SCHEDULER_ENV, WORKER_ENV, cluster  # noqa: E402
from bench.nightly_universe import SAMPLES, served, synthetic_names, write_universe  # noqa: E402
from tickercast.tasks.runners import QUIET_DASK, WORKER_TTL, dask_env  # noqa: E402

# the project's cluster before QUIET_DASK: only the profiler off
PROFILER = "distributed.worker.profile.enabled"
BEFORE = dask_env({PROFILER: QUIET_DASK[PROFILER]})
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


def night(name: str, ctx, tmp: Path, csv_dir: Path, tickers: list[str], n: int) -> dict:
    """The nightly on the arm's two-worker cluster: wall and train task-seconds."""
    universe = (tickers, csv_dir, tmp / f"data-{name}-{n}")
    measured = night_on_cluster(2, ctx, tmp, universe, {}, 3600, ARMS[name])
    return {"wall_s": measured["wall_s"], "train_s": measured["stages"]["train"]["task_s"]}


def nights(rounds: int, synthetic: int) -> dict[str, list[dict]]:
    """`rounds` nights per arm on one Prefect server, arms alternating, after a night not
    counted (the server's and the page cache's first night: 158 s where the same arm's
    next took 123 s in the first run of this bench)."""
    seen: dict[str, list[dict]] = {name: [] for name in ARMS}
    # their own clusters: serve.py keeps none beside them
    with (
        tempfile.TemporaryDirectory(prefix="dask-quiet-") as tmp,
        served(Path(tmp), ("--cluster-per-run",)) as ctx,
    ):
        csv_dir = Path(tmp) / "csv"
        write_universe(csv_dir, synthetic_names(synthetic))
        tickers = [*SAMPLES, *synthetic_names(synthetic)]
        print("warm-up", night("quiet", ctx, Path(tmp), csv_dir, tickers, -1), flush=True)
        for r in range(rounds):
            for name in list(ARMS) if r % 2 == 0 else list(reversed(ARMS)):
                seen[name].append(night(name, ctx, Path(tmp), csv_dir, tickers, r))
                print(name, seen[name][-1], flush=True)
    return seen


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds measured idle")
    parser.add_argument("--synthetic", type=int, default=27, help="nights' synthetic tickers")
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
    loaded = {"before": "", "quiet": "", "ratio": ""}
    if args.synthetic:
        ran = nights(args.rounds, args.synthetic)
        wall = {k: statistics.median(n["wall_s"] for n in v) for k, v in ran.items()}
        train = {k: statistics.median(n["train_s"] for n in v) for k, v in ran.items()}
        for name in ARMS:
            walls = ", ".join(f"{n['wall_s']:.0f}" for n in ran[name])
            loaded[name] = (
                f"; the nightly over {len(SAMPLES) + args.synthetic} tickers on it: "
                f"{wall[name]:.0f} s ({walls}), train steps {train[name]:.0f} task-s"
            )
        rounds = zip(ran["quiet"], ran["before"], strict=True)
        pairs = ", ".join(f"{q['wall_s'] / b['wall_s']:.2f}" for q, b in rounds)
        loaded["ratio"] = (
            f"; nightly wall {wall['quiet'] / wall['before']:.3f}x (each round's pair: "
            f"{pairs}), train task-s {train['quiet'] / train['before']:.3f}x"
        )
        med.update({f"{k}_wall_s": v for k, v in wall.items()})
    row = (
        "| Dask's background work: the CPU of an idle `dask scheduler` and two one-thread "
        "`dask worker` processes (with their nannies) on loopback, started as the README "
        f"starts them, over {args.idle:.0f} s, and the nightly on such a cluster (after a "
        "night not counted; medians of "
        f"{args.rounds} rounds, arms alternating) | before (only the profiler off): "
        f"{med['before']:.1f}% of a core "
        f"({each['before']}){loaded['before']} | `QUIET_DASK` (event-loop tick 1 s, memory "
        f"monitor 1 s, system monitor 2 s, profiler off): {med['quiet']:.1f}% of a core "
        f"({each['quiet']}){loaded['quiet']} | idle CPU "
        f"{med['quiet'] / med['before']:.2f}x{loaded['ratio']} |"
    )
    print(row)
    if not args.no_record:
        from bench.results import record

        record("dask_quiet", row)
    return med


if __name__ == "__main__":
    main()
