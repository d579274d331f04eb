"""The nightly retrain on a real Dask cluster: 1 vs 2 worker processes, side by side.

What runs: a real Prefect server and `deployments/serve.py` (bench/nightly_universe.py's
`served`), a `dask scheduler` and N `dask worker --nthreads 1` processes on loopback,
started as the README starts them (Dask's profiler off), and the
`retrain/nightly-retrain` deployment triggered with `task_runner=dask` and `dask_address`
pointing at the scheduler (the README's way of pointing the nightly at a cluster). The
universe: the five sample tickers plus `--synthetic` Yahoo-like ones (tests/synthetic.py),
a fresh data folder per arm, so both arms train every ticker from scratch, after a night
not counted (the samples alone, one worker: a fresh server's first night runs longer,
and would land on the first arm). Each worker
sizes TensorFlow's pools to its one thread (tasks/runners.py); results and bundles live in
the data folder, which every worker on this machine reads.

Reported: the night's wall (trigger -> final state) with 1 and with 2 workers, and the
ratio (target <= 0.6); with `--rounds N`, N rounds of both arms, their order alternating,
and the median ratio; with `--warm-workers`, each arm's cluster first runs a night on the
samples (not counted), so the measured night finds long-lived workers; with
`--preloaded-workers`, fresh workers started with the README's
`--preload tickercast.deployments.warm_worker` (each warms up as it starts, before it
joins the scheduler; the row says how long that took). Run:
python bench/dask_cluster.py [--synthetic 3] [--rounds 1]
    [--warm-workers | --preloaded-workers] [--set epochs=5]
(writes the RESULTS.md row `dask_cluster`, `dask_cluster_warm` or `dask_cluster_preload`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.dask_processes import cluster  # noqa: E402
from bench.nightly_universe import (  # noqa: E402
    SAMPLES,
    cpu_seconds,
    parameters,
    process_tree,
    run_night,
    served,
    synthetic_names,
    write_universe,
)
from tickercast.deployments import warm_worker  # noqa: E402


def night_on_cluster(
    workers: int,
    ctx,
    tmp: Path,
    params: tuple[list[str], Path, Path],
    overrides: dict,
    timeout: float,
    envs: tuple[dict | None, dict | None] = (None, None),
    warm: tuple[list[str], Path, Path] | None = None,
    preload: tuple[str, ...] = (),
) -> dict:
    """One nightly run (`run_night`) on a fresh cluster of `workers` one-thread workers
    (`cluster`, with the README's variables unless `envs` gives the scheduler's and the
    workers', each worker preloading `preload`); `params`: the tickers, their CSV folder
    and the night's data folder. With `warm` (the same, for a night not counted), the
    cluster first runs that night: the measured night finds long-lived workers,
    TensorFlow imported and the network traced, as a user's cluster is after its first
    night. Also reports the seconds from the cluster's start to every worker joining it."""
    started = time.perf_counter()
    with cluster(workers, ctx.env, tmp, *envs, preload=preload) as (address, procs):
        ready = time.perf_counter() - started
        extra = {**overrides, "task_runner": "dask", "dask_address": address}
        for tickers, csv_dir, data_dir in [warm, params] if warm is not None else [params]:
            before = cluster_cpu(procs)
            measured = run_night(
                parameters(tickers, csv_dir, data_dir, extra), ctx, timeout, every=SAMPLE_EVERY
            )
            after = cluster_cpu(procs)
        # the last night's: the warm one is not counted
        return {**measured, **{k: after[k] - before[k] for k in after}, "cluster_start_s": ready}


def cluster_cpu(procs: list) -> dict[str, float]:
    """CPU seconds so far of the `dask scheduler` (the first of `procs`) and of the
    `dask worker` processes (the others), each with its children (a worker's nanny
    starts the process that runs the tasks)."""
    import psutil  # the dev extra (bench and tests)

    def tree(proc) -> float:
        return sum(cpu_seconds(process_tree(psutil.Process(proc.pid))).values())

    return {
        "scheduler_cpu_s": tree(procs[0]),
        "workers_cpu_s": sum(tree(proc) for proc in procs[1:]),
    }


WARMED = (
    "each arm's workers long-lived: they first ran a night on the 5 samples, not counted "
    "(TensorFlow imported, the network traced, as on a user's cluster after its first "
    "night), "
)

WARM_WORKER = warm_worker.__name__
"""The README's worker preload (`--preloaded-workers`)."""

KINDS = {
    "fresh": "dask_cluster",
    "long-lived": "dask_cluster_warm",
    "preloaded": "dask_cluster_preload",
}
"""The arms' workers (`fresh`, `long-lived`: `--warm-workers`, `preloaded`:
`--preloaded-workers`) and the RESULTS.md row each writes."""


def workers_text(kind: str, start: dict[int, float]) -> tuple[str, str]:
    """What the row says of the workers (`kind`, `start`: the arms' median seconds from
    the cluster's start to every worker joining it), and of their CPU."""
    if kind == "long-lived":
        return WARMED, "warmed before the night"
    if kind == "preloaded":
        return (
            f"each arm on fresh workers started with `--preload {WARM_WORKER}` (the README's "
            "command: each fitted and plotted a made-up ticker as it started, before joining "
            f"the scheduler; the cluster took {start[1]:.0f} s to start with 1 worker, "
            f"{start[2]:.0f} s with 2, not in the night), "
        ), "warmed as they started"
    return "each arm on fresh workers, ", "each warming up in it"


SAMPLE_EVERY = 1.0
"""Seconds between run_night's CPU samples and looks at the run (it reports no peak
memory here): the sampling and the API calls share the two cores the workers fill."""


def round_ratios(rounds: list[dict[int, dict]]) -> list[float]:
    """Each round's wall on 2 workers over its wall on 1."""
    return [r[2]["wall_s"] / r[1]["wall_s"] for r in rounds]


def result_row(
    tickers: int,
    synthetic: int,
    shape: str,
    rounds: list[dict[int, dict]],
    kind: str = "fresh",
) -> str:
    """The RESULTS.md row: each round's walls and ratio, the median ratio (three
    decimals: the target is a threshold), the train steps' own seconds on each, the time
    no task ran, and where the night's CPU went: the workers, and beside them the
    scheduler, the Prefect server and the flow run, which on one worker have the other
    core to themselves and on two take turns with the fits (medians over the rounds)."""
    ratios = round_ratios(rounds)

    def median(read) -> dict[int, float]:
        return {w: statistics.median(read(r[w]) for r in rounds) for w in (1, 2)}

    wall = median(lambda night: night["wall_s"])
    train = median(lambda night: night["stages"]["train"]["task_s"])
    idle = median(lambda night: night["orchestration_s"])
    server = median(lambda night: night["server_cpu_s"])
    flow = median(lambda night: night["serve_tree_cpu_s"])
    scheduler = median(lambda night: night["scheduler_cpu_s"])
    workers = median(lambda night: night["workers_cpu_s"])
    start = median(lambda night: night.get("cluster_start_s", 0.0))
    arms, warmed = workers_text(kind, start)
    each = "; ".join(
        f"round {i + 1} ({'1 then 2' if i % 2 == 0 else '2 then 1'}): "
        f"{r[1]['wall_s']:.0f} s / {r[2]['wall_s']:.0f} s = {ratio:.3f}x"
        for i, (r, ratio) in enumerate(zip(rounds, ratios, strict=True))
    )
    return (
        f"| nightly retrain on a real Dask cluster (`dask scheduler` + one-thread `dask worker` "
        f"processes on loopback, started with QUIET_DASK, after a night not counted, "
        f"{arms}"
        f"{tickers} tickers: 5 samples + {synthetic} synthetic, {shape}; "
        f"{len(rounds)} round(s), the arms' order alternating, medians) "
        f"| 1 worker: {wall[1]:.0f} s | 2 workers: {wall[2]:.0f} s "
        f"| median ratio {statistics.median(ratios):.3f}x (target <= 0.6x); {each}; the "
        f"train steps ran {train[1]:.0f} s in all on 1 worker, {train[2]:.0f} s on 2 "
        f"({train[2] / train[1]:.2f}x); no task running for {idle[1]:.0f} s of the flow run "
        f"on 1 worker, {idle[2]:.0f} s on 2; CPU seconds on 1 worker / on 2: the workers "
        f"{workers[1]:.0f} / {workers[2]:.0f} ({workers[2] / workers[1]:.2f}x, "
        f"{warmed}), "
        f"beside them the scheduler {scheduler[1]:.0f} / "
        f"{scheduler[2]:.0f}, the Prefect server {server[1]:.0f} / {server[2]:.0f} and the "
        f"flow run {flow[1]:.0f} / {flow[2]:.0f} (on 1 worker these have the other core, on "
        f"2 they take turns with the fits; what two fits at once cost each other without them: "
        f"row `paired_fits`) |"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=3, help="synthetic tickers added")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both arms")
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument(
        "--warm-workers",
        action="store_true",
        help="each arm's cluster first runs a night on the samples (long-lived workers)",
    )
    kinds.add_argument(
        "--preloaded-workers",
        action="store_true",
        help=f"fresh workers started with the README's --preload {WARM_WORKER}",
    )
    parser.add_argument("--set", action="append", default=[], help="a RetrainConfig field")
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    kind = "long-lived" if args.warm_workers else "preloaded" if args.preloaded_workers else "fresh"
    preload = (WARM_WORKER,) if kind == "preloaded" else ()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    tickers = [*SAMPLES, *synthetic_names(args.synthetic)]
    rounds: list[dict[int, dict]] = []
    # its own clusters: serve.py keeps none beside them
    with (
        tempfile.TemporaryDirectory(prefix="dask-bench-") as tmp,
        served(Path(tmp), ("--cluster-per-run",)) as ctx,
    ):
        csv_dir = Path(tmp) / "csv"
        write_universe(csv_dir, synthetic_names(args.synthetic))
        # a night not counted, on the samples alone: a fresh server's first night ran
        # 10-35 s longer than the same arm's next (bench/dask_quiet.py), which would
        # land on the first arm (1 worker) and flatter the ratio
        samples = (list(SAMPLES), csv_dir, Path(tmp) / "warm")
        warm = night_on_cluster(1, ctx, Path(tmp), samples, overrides, 3600)
        print("warm-up night (not counted):", round(warm["wall_s"], 1), "s", flush=True)
        for index in range(args.rounds):
            walls: dict[int, dict] = {}
            # the order alternates: a drift of the machine's speed lands on both arms
            for workers in (1, 2) if index % 2 == 0 else (2, 1):
                # a data folder of its own: every night trains every ticker from scratch
                data_dir = Path(tmp) / f"data-{index}-{workers}"
                universe = (tickers, csv_dir, data_dir)
                warm_night = (list(SAMPLES), csv_dir, Path(tmp) / f"warm-{index}-{workers}")
                measured = night_on_cluster(
                    workers,
                    ctx,
                    Path(tmp),
                    universe,
                    overrides,
                    6 * 3600,
                    warm=warm_night if args.warm_workers else None,
                    preload=preload,
                )
                walls[workers] = measured
                print(json.dumps({"round": index, "workers": workers, **measured}, default=str))
            rounds.append(walls)
    ratios = round_ratios(rounds)
    shape = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the deployment's defaults"
    row = result_row(len(tickers), args.synthetic, shape, rounds, kind)
    print(row)
    if not args.no_record:
        from bench.results import record

        record(KINDS[kind], row)
    return {"rounds": rounds, "ratios": ratios, "ratio": statistics.median(ratios)}


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
