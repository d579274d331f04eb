"""The nights after the first: a local Dask cluster per run vs a long-lived cluster.

What runs: a real Prefect server and `deployments/serve.py --cluster-per-run`
(bench/nightly_universe.py's `served`), the `retrain/nightly-retrain` deployment with its
defaults, over the five samples plus `--synthetic` Yahoo-like tickers. A first night (not
counted) trains them all on the deployment's own per-run local cluster; then each night
adds one trading day to every ticker and alternates the two ways a user can run it:
- per run (the default before serve.py kept a cluster): the flow run starts a local
  cluster of one-thread worker processes and closes it at its end;
- long-lived: `dask scheduler` and two one-thread `dask worker` processes started once, as
  the README starts them, the nightly pointed at them with `dask_address`; their first
  night (not counted) is when their workers import Prefect and the steps.

Reported: each arm's median orchestration (the flow run's wall minus the time any task
ran, nightly_universe's measure), the time from the flow's start to its first task
running, the tail after its last task, and the night's wall. It measures what the
second night's orchestration share (issue #22's 5% target) is made of: the per-run
cluster's start. Run: python bench/cluster_start.py [--synthetic 27] [--rounds 3]
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
    run_night,
    served,
    synthetic_names,
    write_universe,
)

ARMS = ("per run", "long-lived")


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
    """The RESULTS.md row: both arms' medians and the ratio of their orchestration."""
    local, lived = (medians[arm] for arm in ARMS)

    def arm(m: dict[str, float]) -> str:
        share = m["orchestration_s"] / m["wall_s"]
        return (
            f"orchestration {m['orchestration_s']:.1f} s = {share:.1%} of a {m['wall_s']:.0f} s "
            f"night (first task {m['first_task_s']:.2f} s after the flow's start, tail "
            f"{m['tail_s']:.2f} s)"
        )

    ratio = lived["orchestration_s"] / local["orchestration_s"]
    return (
        f"| the nights after the first (one new day per ticker), {tickers} tickers, the "
        f"deployment's defaults on a real Prefect server, medians of {rounds} nights per arm "
        f"alternating: baseline a local Dask cluster per run (serve.py --cluster-per-run), "
        f"project a "
        f"long-lived `dask scheduler` + 2 one-thread `dask worker` (`dask_address`) | "
        f"per run: {arm(local)} | long-lived: {arm(lived)} | {ratio:.2f}x the orchestration |"
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
        tempfile.TemporaryDirectory(prefix="cluster-start-") as tmp,
        served(Path(tmp), ("--cluster-per-run",)) as ctx,
    ):
        csv_dir, data_dir, day = Path(tmp) / "csv", Path(tmp) / "data", 0

        def night(extra: dict, label: str) -> dict:
            nonlocal day
            write_universe(csv_dir, synthetic_names(args.synthetic), extra_days=day)
            day += 1
            measured = run_night(parameters(tickers, csv_dir, data_dir, extra), ctx, 3600)
            measured.update(edges(measured))
            shown = {k: round(v, 3) for k, v in measured.items() if isinstance(v, float)}
            print(json.dumps({"night": label, **shown}), flush=True)
            return measured

        night({}, "first (not counted)")
        with cluster(2, ctx.env, Path(tmp)) as (address, _):
            lived = {"task_runner": "dask", "dask_address": address}
            night(lived, "long-lived cluster's first (not counted)")
            for _ in range(args.rounds):
                nights["per run"].append(night({}, "per run"))
                nights["long-lived"].append(night(lived, "long-lived"))
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
