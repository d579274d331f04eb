"""What a training progress update costs: a progress artifact updated through the API vs a
log line vs nothing, side by side on one real Prefect server.

A fit's `EpochLog` (tickercast/modeling/callbacks.py) logs every epoch and updates the
fit's progress artifact. The log line goes through Prefect's batched API log handler; the
artifact update is a blocking API call. This starts `prefect server start` with its own
PREFECT_HOME (deployments/serve.start_server), runs a task that makes `--calls` of each
kind, the arms alternating `--rounds` times, and reads the task's wall and CPU seconds and
the server process tree's CPU seconds (3 s after each task, so the server has written what
it was sent). Per call, against the arm with no calls: what the worker waits, and what the
server spends. It is why EpochLog updates the artifact at most every PROGRESS_EVERY_S.

Run: python bench/progress_updates.py [--calls 200] [--rounds 2] [--no-record]
(RESULTS.md row `progress_updates`)
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

ARMS = ("none", "artifact", "log")
SETTLE_S = 3.0


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants."""
    import psutil  # the dev extra (bench and tests)

    from bench.nightly_universe import cpu_seconds, process_tree

    return sum(cpu_seconds(process_tree(psutil.Process(pid))).values())


def measure(server_pid: int, calls: int, rounds: int) -> dict[str, list[dict]]:
    from prefect import flow, get_run_logger, task
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    @task
    def updates(arm: str, n: int) -> tuple[float, float]:
        logger = get_run_logger()
        artifact = create_progress_artifact(0.0, key=f"bench-{arm}")
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            if arm == "artifact":
                update_progress_artifact(artifact, 100.0 * i / n, description=f"epoch {i}")
            elif arm == "log":
                logger.info("epoch %d/%d: loss=%.6g", i + 1, n, 0.1)
        return time.perf_counter() - wall, time.process_time() - cpu

    @flow(name="progress-updates", persist_result=False)
    def run(arm: str, n: int) -> tuple[float, float]:
        return updates(arm, n)

    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    run("none", 1)  # warm: the flow, the task and their clients
    for r in range(rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            before = tree_cpu(server_pid)
            wall, cpu = run(arm, calls)
            time.sleep(SETTLE_S)
            runs[arm].append({"wall": wall, "cpu": cpu, "server": tree_cpu(server_pid) - before})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    from tickercast.deployments.serve import start_server

    with tempfile.TemporaryDirectory(prefix="progress-bench-") as tmp:
        env = {
            **os.environ,
            "PREFECT_HOME": str(Path(tmp) / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        server, api = start_server(timeout=240, env=env)
        os.environ["PREFECT_API_URL"] = api
        try:
            runs = measure(server.pid, args.calls, args.rounds)
        finally:
            server.terminate()
            server.wait(timeout=60)

    def per_call(arm: str, key: str) -> float:
        """Milliseconds per call above the arm with no calls (median over rounds)."""
        value = statistics.median(m[key] for m in runs[arm])
        return 1000 * (value - statistics.median(m[key] for m in runs["none"])) / args.calls

    art = {k: per_call("artifact", k) for k in ("wall", "cpu", "server")}
    log = {k: per_call("log", k) for k in ("wall", "cpu", "server")}
    row = (
        f"| cost of one training progress update inside a task on a local `prefect server` "
        f"({args.calls} calls a task, median of {args.rounds} rounds, arms alternating; "
        f"against a task with no calls) | a log line (batched API handler): "
        f"{log['wall']:.1f} ms of the task's wall, {log['cpu']:.1f} ms its CPU, "
        f"{log['server']:.1f} ms the server's CPU | a progress artifact update (blocking API "
        f"call): {art['wall']:.1f} ms of the task's wall, {art['cpu']:.1f} ms its CPU, "
        f"{art['server']:.1f} ms the server's CPU | an update costs "
        f"{art['wall'] / max(log['wall'], 1e-3):.0f}x a log line's wall; EpochLog updates "
        f"at most every 2 s (~1000 epochs a 100-ticker first night) |"
    )
    from bench.results import publish

    publish("progress_updates", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
