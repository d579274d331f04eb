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
ratio (target <= 0.6). Run: python bench/dask_cluster.py [--synthetic 3] [--set epochs=5]
(writes the RESULTS.md row `dask_cluster`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.dask_processes import cluster  # noqa: E402
from bench.nightly_universe import (  # noqa: E402
    SAMPLES,
    parameters,
    run_night,
    served,
    synthetic_names,
    write_universe,
)


def night_on_cluster(
    workers: int,
    ctx,
    tmp: Path,
    params: tuple[list[str], Path, Path],
    overrides: dict,
    timeout: float,
    envs: tuple[dict | None, dict | None] = (None, None),
) -> dict:
    """One nightly run (`run_night`) on a fresh cluster of `workers` one-thread workers
    (`cluster`, with the README's variables unless `envs` gives the scheduler's and the
    workers'); `params`: the tickers, their CSV folder and the night's data folder."""
    tickers, csv_dir, data_dir = params
    with cluster(workers, ctx.env, tmp, *envs) as (address, _):
        extra = {**overrides, "task_runner": "dask", "dask_address": address}
        return run_night(parameters(tickers, csv_dir, data_dir, extra), ctx, timeout)


def result_row(tickers: int, synthetic: int, shape: str, walls: dict[int, dict]) -> str:
    """The RESULTS.md row: both walls, their ratio (three decimals: the target is a
    threshold), the train steps' own seconds on each (what two fits at once cost each
    other on this machine's cores), the time no task ran, and the Prefect server's CPU."""
    ratio = walls[2]["wall_s"] / walls[1]["wall_s"]
    train = {w: walls[w]["stages"]["train"]["task_s"] for w in (1, 2)}
    idle = {w: walls[w]["orchestration_s"] for w in (1, 2)}
    server = {w: walls[w]["server_cpu_s"] for w in (1, 2)}
    return (
        f"| nightly retrain on a real Dask cluster (`dask scheduler` + one-thread `dask worker` "
        f"processes on loopback, started with QUIET_DASK, after a night not counted, "
        f"{tickers} tickers: 5 samples + "
        f"{synthetic} synthetic, "
        f"{shape}) | 1 worker: {walls[1]['wall_s']:.0f} s | 2 workers: "
        f"{walls[2]['wall_s']:.0f} s | {ratio:.3f}x (target <= 0.6x); the train steps ran "
        f"{train[1]:.0f} s in all on 1 worker, {train[2]:.0f} s on 2 ({train[2] / train[1]:.2f}x: "
        f"each fit slows when two share the cores); no task running for {idle[1]:.0f} s of "
        f"the flow run on 1 worker, {idle[2]:.0f} s on 2; the Prefect server's CPU "
        f"{server[1]:.0f} and {server[2]:.0f} s |"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=3, help="synthetic tickers added")
    parser.add_argument("--set", action="append", default=[], help="a RetrainConfig field")
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    tickers = [*SAMPLES, *synthetic_names(args.synthetic)]
    walls: dict[int, dict] = {}
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
        for workers in (1, 2):
            universe = (tickers, csv_dir, Path(tmp) / f"data-{workers}")
            measured = night_on_cluster(workers, ctx, Path(tmp), universe, overrides, 6 * 3600)
            walls[workers] = measured
            print(json.dumps({"workers": workers, **measured}, default=str), flush=True)
    ratio = walls[2]["wall_s"] / walls[1]["wall_s"]
    shape = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the deployment's defaults"
    row = result_row(len(tickers), args.synthetic, shape, walls)
    print(row)
    if not args.no_record:
        from bench.results import record

        record("dask_cluster", row)
    return {"walls": walls, "ratio": ratio}


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
