"""A Dask cluster started as the README starts one: `dask scheduler` and one-thread `dask
worker` processes on loopback, with the variables the README exports. Shared by the
benchmarks that run the nightly on a cluster (dask_cluster, dask_quiet, cluster_start,
nightly_universe --kept-cluster) and tests/test_dask_cluster.py; not a benchmark itself.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tickercast.deployments.serve import free_port
from tickercast.tasks.runners import QUIET_DASK, WORKER_TTL, dask_env

DASK = Path(sys.executable).with_name("dask")
# The README's commands: Dask's background work cut as the nightly's local cluster has it
# (tasks/runners.py, QUIET_DASK: the statistical profiler off, slower ticks and monitors),
# in the scheduler and every worker. Two runs with the profiler on stalled a worker
# (README, "Pointing the nightly at a cluster").
WORKER_ENV = dask_env(QUIET_DASK)
# The scheduler's too: a worker that stops heartbeating is restarted after the local
# cluster's WORKER_TTL, not Dask's 5 minutes.
SCHEDULER_ENV = {**dask_env(QUIET_DASK), "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": WORKER_TTL}


@contextlib.contextmanager
def cluster(
    workers: int,
    env: dict,
    logs: Path,
    scheduler_env: dict | None = None,
    worker_env: dict | None = None,
    preload: Iterable[str] = (),
) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """`dask scheduler` and `workers` one-thread `dask worker` processes, started with the
    README's variables (or those given), each worker preloading the modules in `preload`;
    the address and the processes, once every worker joined."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    out = (logs / f"dask-{workers}.log").open("w")
    start = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    scheduler_env = SCHEDULER_ENV if scheduler_env is None else scheduler_env
    worker_env = WORKER_ENV if worker_env is None else worker_env
    procs = [
        subprocess.Popen(
            [*start, "--no-dashboard"], env={**env, **scheduler_env}, stdout=out, stderr=out
        )
    ]
    try:
        time.sleep(2)
        for _ in range(workers):
            args = [str(DASK), "worker", address, "--nthreads", "1", "--no-dashboard"]
            args += [arg for module in preload for arg in ("--preload", module)]
            procs.append(subprocess.Popen(args, env={**env, **worker_env}, stdout=out, stderr=out))
        with Client(address, timeout=120) as client:
            client.wait_for_workers(workers, timeout=300)  # a warm-up preload: ~10-20 s
        yield address, procs
    finally:
        stop(reversed(procs), timeout=30)
        out.close()


def stop(procs: Iterable[subprocess.Popen], timeout: float) -> None:
    """Terminate each process in turn, killing one that has not exited after `timeout` s."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
