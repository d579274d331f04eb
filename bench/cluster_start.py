"""The nights after the first: a local Dask cluster per run, the one serve.py keeps, and
a long-lived cluster of the user's own.

What runs: a real Prefect server and `deployments/serve.py` (bench/nightly_universe.py's
`prefect_server` and `serving`), the `retrain/nightly-retrain` deployment with its
defaults, over the five samples plus `--synthetic` Yahoo-like tickers. A first night (not
counted) trains them all on a per-run local cluster; then each night adds one trading day
to every ticker, in rounds of the three ways a user can run it:
- per run (`serve.py --cluster-per-run`, the default before serve.py kept a cluster): the
  flow run starts a local cluster of one-thread worker processes and closes it at its end;
- kept by serve.py (the default): serve.py started that cluster as it started (its workers
  preloading Prefect and the data libraries) and restarts the workers after each night,
  so every night runs on fresh, idle workers;
- long-lived: `dask scheduler` and two one-thread `dask worker` processes started once, as
  the README starts them, the nightly pointed at them with `dask_address`; their first
  night (not counted) is when their workers import Prefect and the steps, and they keep
  them (and TensorFlow) from night to night.
The first two need serve.py started each way: each round runs the per-run and long-lived
nights on one serve.py, then the kept night on another, each started for its nights.

Reported: each arm's median orchestration (the flow run's wall minus the time any task
ran, nightly_universe's measure), the time from the flow's start to its first task
running, the tail after its last task, and the night's wall. It measures what the
second night's orchestration share (issue #22's 5% target) is made of: the cluster's
start. Run: python bench/cluster_start.py [--synthetic 27] [--rounds 3]
(writes the RESULTS.md row `cluster_start`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
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
    prefect_server,
    run_night,
    serving,
    synthetic_names,
    write_universe,
)

ARMS = ("per run", "kept by serve.py", "long-lived")
PER_RUN = ("--cluster-per-run",)


def edges(night: dict) -> dict:
    """The flow's start to its first task running, and its last task's end to the flow's
    end, seconds (from the night's task-run spans, relative to the flow's start)."""
    spans = night["spans"]
    first = min(start for _, start, _ in spans)
    last = max(end for _, _, end in spans)
    return {"first_task_s": first, "tail_s": night["flow_run_s"] - last}


def summary(nights: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Each arm's medians over its nights: orchestration, first task, tail, wall."""
    keys = ("orchestration_s", "first_task_s", "tail_s", "wall_s")
    return {
        arm: {key: statistics.median(n[key] for n in runs) for key in keys}
        for arm, runs in nights.items()
    }


def result_row(tickers: int, rounds: int, medians: dict[str, dict[str, float]]) -> str:
    """The RESULTS.md row: the arms' medians and the ratios of their orchestration to the
    per-run cluster's."""
    local, kept, lived = (medians[arm] for arm in ARMS)

    def arm(m: dict[str, float]) -> str:
        share = m["orchestration_s"] / m["wall_s"]
        return (
            f"orchestration {m['orchestration_s']:.1f} s = {share:.1%} of a {m['wall_s']:.0f} s "
            f"night (first task {m['first_task_s']:.2f} s after the flow's start, tail "
            f"{m['tail_s']:.2f} s)"
        )

    def ratio(m: dict[str, float]) -> float:
        return m["orchestration_s"] / local["orchestration_s"]

    return (
        f"| the nights after the first (one new day per ticker), {tickers} tickers, the "
        f"deployment's defaults on a real Prefect server, medians of {rounds} nights per arm "
        f"in rounds: baseline a local Dask cluster per run (serve.py --cluster-per-run), "
        f"project the cluster serve.py keeps (workers restarted after each night); beside "
        f"them a long-lived `dask scheduler` + 2 one-thread `dask worker` (`dask_address`) | "
        f"per run: {arm(local)} | kept by serve.py: {arm(kept)}; long-lived: {arm(lived)} | "
        f"kept {ratio(kept):.2f}x the orchestration, long-lived {ratio(lived):.2f}x |"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=27, help="synthetic tickers added")
    parser.add_argument("--rounds", type=int, default=3, help="measured nights per arm")
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    tickers = [*SAMPLES, *synthetic_names(args.synthetic)]
    nights: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with (
        tempfile.TemporaryDirectory(prefix="cluster-start-") as name,
        prefect_server(Path(name)) as (server, env),
    ):
        tmp = Path(name)
        csv_dir, data_dir, day = tmp / "csv", tmp / "data", 0

        def night(ctx, extra: dict, label: str) -> dict:
            nonlocal day
            write_universe(csv_dir, synthetic_names(args.synthetic), extra_days=day)
            day += 1
            measured = run_night(parameters(tickers, csv_dir, data_dir, extra), ctx, 3600)
            measured.update(edges(measured))
            shown = {k: round(v, 3) for k, v in measured.items() if isinstance(v, float)}
            print(json.dumps({"night": label, **shown}), flush=True)
            return measured

        with cluster(2, env, tmp) as (address, _):
            lived = {"task_runner": "dask", "dask_address": address}
            with serving(tmp, server, env, PER_RUN) as ctx:
                night(ctx, {}, "first (not counted)")
                night(ctx, lived, "long-lived cluster's first (not counted)")
            for _ in range(args.rounds):
                with serving(tmp, server, env, PER_RUN) as ctx:
                    nights["per run"].append(night(ctx, {}, "per run"))
                    nights["long-lived"].append(night(ctx, lived, "long-lived"))
                with serving(tmp, server, env) as ctx:
                    nights["kept by serve.py"].append(night(ctx, {}, "kept by serve.py"))
    medians = summary(nights)
    row = result_row(len(tickers), args.rounds, medians)
    print(row)
    if not args.no_record:
        from bench.results import record

        record("cluster_start", row)
    return medians


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
