"""Prefect's cost and caching's payoff, measured side by side in one run.

Runs the retrain flow on the bundled sample twice with the same config (cold, then
warm), under one temporary Prefect server:
- orchestration overhead of the cold run = flow wall time minus the sum of the task
  runs' own run time (as Prefect recorded it);
- a cached rerun's wall time as a fraction of the cold run's;
- against a real server (`prefect server start`), the same `tickercast retrain --source
  sine --epochs 3` twice from the command line, as a user runs it: the second run finds
  nothing changed, reuses every step and exports no new version ("unchanged since v1").
Run: python bench/orchestration.py  (writes rows to bench/RESULTS.md)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _task_seconds(flow_run_id) -> tuple[float, dict[str, str]]:
    from bench.nightly_universe import task_runs

    runs = task_runs(flow_run_id)
    total = sum(r.total_run_time.total_seconds() for r in runs)
    return total, {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


def main() -> list[str]:
    from prefect.testing.utilities import prefect_test_harness

    from tickercast.config import RetrainConfig
    from tickercast.flows.retrain import retrain

    with tempfile.TemporaryDirectory() as data_dir, prefect_test_harness(180):
        config = RetrainConfig(tickers=["AAPL"], start="2017-01-01", epochs=5, data_dir=data_dir)
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            state = retrain(config, return_state=True)
            wall = time.perf_counter() - started
            assert state.is_completed(), state.message
            tasks, states = _task_seconds(state.state_details.flow_run_id)
            timings.append((wall, tasks, states))
    (cold, cold_tasks, _), (warm, _, warm_states) = timings
    cached = sorted(k for k, v in warm_states.items() if v == "Cached")
    overhead = cold - cold_tasks
    rows = [
        f"| orchestration overhead, cold retrain (AAPL 2017-2020, 5 epochs) | "
        f"task compute {cold_tasks:.1f} s | flow wall {cold:.1f} s | "
        f"overhead {overhead:.1f} s = {overhead / cold:.0%} of wall |",
        f"| cached rerun vs cold run (same config) | cold {cold:.1f} s | "
        f"rerun {warm:.1f} s (cached: {', '.join(cached)}) | {warm / cold:.2f}x |",
    ]
    for row in rows:
        print(row)
    return rows


def _flow_seconds(log: str) -> float:
    """The flow run's own duration, from Prefect's log lines (begin .. finished)."""
    import datetime as dt
    import re

    stamps = [
        dt.datetime.strptime(m.group(1), "%H:%M:%S.%f")
        for m in re.finditer(
            r"^(\d\d:\d\d:\d\d\.\d+) \| INFO +\| Flow run '[^']+' - "
            r"(?:Beginning flow run|Finished in state)",
            log,
            re.M,
        )
    ]
    return (stamps[-1] - stamps[0]).total_seconds() % 86_400  # a run across midnight


def unchanged_rerun() -> str:
    """Cold vs unchanged rerun of the CLI against a real `prefect server start`: the whole
    process (what a user waits for) and the flow run alone (what the server records)."""
    import subprocess

    from tickercast.deployments.serve import start_server

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PREFECT_HOME": str(Path(tmp) / "prefect-home")}
        env["PREFECT_LOGGING_LEVEL"] = "INFO"
        server, api = start_server(env=env)
        env["PREFECT_API_URL"] = api
        try:
            cli = [
                str(Path(sys.executable).with_name("tickercast")),
                "retrain",
                "--source",
                "sine",
                "--epochs",
                "3",
                "--data-dir",
                str(Path(tmp) / "data"),
            ]
            walls, flows, outputs = [], [], []
            for _ in range(2):
                started = time.perf_counter()
                run = subprocess.run(cli, env=env, capture_output=True, text=True, check=True)
                walls.append(time.perf_counter() - started)
                flows.append(_flow_seconds(run.stderr + run.stdout))
                outputs.append(run.stdout)
            floors = []  # Prefect's own floor: a flow with no tasks, same server, same way
            for _ in range(2):
                started = time.perf_counter()
                empty = [sys.executable, str(ROOT / "bench" / "empty_flow.py")]
                run = subprocess.run(empty, env=env, capture_output=True, text=True, check=True)
                floors.append((time.perf_counter() - started, _flow_seconds(run.stderr)))
        finally:
            server.terminate()
            server.wait(timeout=60)
        versions = sorted(p.name for p in (Path(tmp) / "data/models/AAPL/versions").iterdir())
    assert "unchanged since v1" in outputs[1], outputs[1]
    assert versions == ["1"], versions
    (cold, warm), (cold_flow, warm_flow) = walls, flows
    floor, floor_flow = min(floors)
    row = (
        f"| unchanged rerun vs cold run, real Prefect server (`tickercast retrain --source sine "
        f"--epochs 3` twice) | cold: process {cold:.1f} s, flow run {cold_flow:.1f} s | "
        f'rerun: process {warm:.1f} s, flow run {warm_flow:.2f} s; "unchanged since v1", no '
        f"new version. Prefect's floor, a flow with no tasks (`bench/empty_flow.py`): process "
        f"{floor:.1f} s, flow run {floor_flow:.2f} s | flow run {warm_flow / cold_flow:.2f}x, "
        f"whole process {warm / cold:.2f}x; the empty flow alone is {floor / cold:.2f}x of the "
        f"cold process, so the rerun's own cost above that floor is "
        f"{(warm - floor) / cold:.2f}x (target <= 0.10x) |"
    )
    print(row)
    return row


if __name__ == "__main__":
    from bench.results import record

    record("unchanged_rerun", unchanged_rerun())
    overhead_row, cached_row = main()
    record("orchestration_overhead", overhead_row)
    record("cached_rerun", cached_row)
