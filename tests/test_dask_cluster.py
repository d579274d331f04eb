"""A real Dask cluster, started as users start one (`dask scheduler`, `dask worker`
processes), runs the retrain's per-ticker branches: results every worker can read, one
TensorFlow pool per worker sized to its threads, a clean Keras state per fit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.dask_processes import SCHEDULER_ENV, WORKER_ENV
from tickercast.config import RetrainConfig
from tickercast.deployments.serve import free_port

TINY = {"start": "2019-06-01", "lookback": 15, "horizon": 3, "epochs": 1, "units": [4, 4]}
DASK = Path(sys.executable).with_name("dask")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # the README's commands: Dask's background work cut (QUIET_DASK), the scheduler's
    # worker TTL the local cluster's, as the benchmark starts them
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **WORKER_ENV, **SCHEDULER_ENV}
    out = log.open("w")
    return subprocess.Popen([str(DASK), *args], stdout=out, stderr=out, env=env)


def _wait_for_workers(address: str, n: int, timeout: float = 120) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(n, timeout=timeout)


def _worker_pools(address: str) -> dict:
    """Per worker: TensorFlow's intra-op pool size and whether TF is loaded there."""
    from distributed import Client

    def pools() -> tuple[int, bool]:
        loaded = "tensorflow" in sys.modules
        if not loaded:
            return 0, False
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads(), True

    with Client(address, timeout=60) as client:
        return client.run(pools)


def _worker_ttl(address: str) -> float | None:
    """The scheduler's worker TTL, seconds."""
    from distributed import Client

    with Client(address, timeout=60) as client:
        return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_ttl)


def test_the_readme_starts_the_cluster_with_the_local_clusters_settings():
    """The README's cluster commands set what the nightly's local cluster sets, in Dask's
    environment variables: every QUIET_DASK value, and the scheduler's worker TTL; the
    benchmark and these tests start their clusters with the same variables."""
    import re

    from tickercast.tasks.runners import QUIET_DASK, WORKER_TTL, dask_env

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index("**Pointing the nightly at a cluster**") :]
    block = block[block.index("```bash") : block.index("```", block.index("```bash") + 3)]
    found = dict(re.findall(r"(DASK_[A-Z_]+)=(\S+)", block))
    expected = {**dask_env(QUIET_DASK), "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": WORKER_TTL}
    assert found == expected
    assert {**WORKER_ENV, **SCHEDULER_ENV} == expected


@pytest.fixture
def dask_cluster(tmp_path):
    """One scheduler and one one-thread worker process on loopback; the address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        _start(
            ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        time.sleep(2)
        procs.append(
            _start(
                ["worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                tmp_path / "worker.log",
            )
        )
        _wait_for_workers(address, 1)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.slow
def test_a_real_cluster_trains_every_ticker_on_one_long_lived_worker(
    prefect_server, dask_cluster, tmp_path
):
    from tickercast.flows.retrain import retrain

    config = RetrainConfig(
        tickers=["MSFT", "NVDA"],
        task_runner="dask",
        dask_address=dask_cluster,
        data_dir=str(tmp_path / "data"),
        **TINY,
    )
    state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    for ticker in ("MSFT", "NVDA"):  # both fits ran in the one worker process, one by one
        assert Path(result[ticker]["bundle"]).joinpath("model.keras").is_file()
    pools = list(_worker_pools(dask_cluster).values())
    assert pools == [(1, True)], pools  # the worker's one thread, not every core
    assert _worker_ttl(dask_cluster) == 60  # SCHEDULER_ENV reached the scheduler
