"""The local Dask cluster a serving process keeps for its runs (tasks/kept_cluster.py)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tickercast.tasks.runners import (
    KEPT_CLUSTER,
    kept_cluster,
    local_workers,
    loopback,
    make_task_runner,
    on_this_machine,
)


def test_a_run_uses_the_kept_cluster_only_when_it_has_the_workers_asked_for(monkeypatch):
    """The address a serving process hands over is used by a Dask run without an address
    of its own whose max_workers gives the kept cluster's worker count; any other run
    starts a cluster of its own (or uses the address it was given), as without one."""
    workers = local_workers(4)
    monkeypatch.setenv(KEPT_CLUSTER, f"{workers} tcp://127.0.0.1:8790")
    assert kept_cluster(4) == "tcp://127.0.0.1:8790"
    assert make_task_runner("dask", 4).address == "tcp://127.0.0.1:8790"
    assert make_task_runner("dask", 4, "tcp://elsewhere:8786").address == "tcp://elsewhere:8786"
    monkeypatch.setenv(KEPT_CLUSTER, f"{workers + 1} tcp://127.0.0.1:8790")  # another size
    assert kept_cluster(4) is None
    assert make_task_runner("dask", 4).address is None  # a cluster of its own
    monkeypatch.setenv(KEPT_CLUSTER, "garbled")
    assert kept_cluster(4) is None
    monkeypatch.delenv(KEPT_CLUSTER)
    assert kept_cluster(4) is None


def test_the_kept_cluster_counts_as_this_machine(monkeypatch):
    """Task runs on the kept cluster (loopback, this machine's processes) build the light
    API clients, as on a local cluster; another scheduler's workers keep the setting."""
    monkeypatch.setenv(KEPT_CLUSTER, "2 tcp://127.0.0.1:8790")
    assert on_this_machine(make_task_runner("threads", 2))
    assert on_this_machine(make_task_runner("dask", 2, "tcp://127.0.0.1:8790"))
    assert not on_this_machine(make_task_runner("dask", 2, "tcp://elsewhere:8786"))
    assert not on_this_machine(make_task_runner("dask", 2, "tcp://10.0.0.5:8786"))
    monkeypatch.delenv(KEPT_CLUSTER)
    assert on_this_machine(make_task_runner("dask", 2))  # starts its own, here


def test_a_scheduler_on_loopback_counts_as_this_machine():
    """Only this machine's processes reach a scheduler on a loopback address, so its
    workers read this machine's files (the light clients' bundle)."""
    for here in (
        "tcp://127.0.0.1:8786",
        "tcp://localhost:8786",
        "tcp://[::1]:8786",
        "127.0.0.2:8786",
        "inproc://10.0.0.5/1/1",
    ):
        assert loopback(here), here
        assert on_this_machine(make_task_runner("dask", 2, here)), here
    for there in (
        "tcp://10.0.0.5:8786",
        "tcp://sched:8786",
        "tls://sched.example:8786",
        "tcp://0.0.0.0:8786",
        "tcp://192.168.1.2:8786",
    ):
        assert not loopback(there), there
        assert not on_this_machine(make_task_runner("dask", 2, there)), there


def test_serve_keeps_a_cluster_only_for_a_nightly_on_dask_without_an_address(monkeypatch):
    """deployments/serve.py keeps the cluster the nightly settings would start; with
    --cluster-per-run, threads or a scheduler address of their own, nothing is kept."""
    import contextlib

    from tickercast.deployments import nightly, serve

    # nightly.json: dask
    assert not isinstance(serve.keep_nightly_cluster(), contextlib.nullcontext)
    assert isinstance(serve.keep_nightly_cluster(per_run=True), contextlib.nullcontext)
    for field, value in (("task_runner", "threads"), ("dask_address", "tcp://h:8786")):
        settings = {**nightly.nightly_settings(), field: value}
        monkeypatch.setattr("tickercast.deployments.nightly.nightly_settings", lambda s=settings: s)
        assert isinstance(serve.keep_nightly_cluster(), contextlib.nullcontext), field


def test_nothing_is_kept_without_a_prefect_api(monkeypatch):
    """Workers started before any run must be told the API their task runs report to."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tickercast.tasks.kept_cluster import keep_cluster

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with keep_cluster(2) as cluster:
            assert cluster is None
            assert KEPT_CLUSTER not in os.environ


def test_workers_restart_once_when_the_last_client_leaves():
    """Another run still connected keeps the workers; the last one leaving restarts them
    once (the scheduler may report a client's removal twice); a failed restart is logged,
    not raised into the scheduler."""
    import asyncio

    from tickercast.tasks.kept_cluster import RestartAfterRun

    class Scheduler:
        def __init__(self, fail: bool = False) -> None:
            self.calls: list[dict] = []
            self.fail = fail

        async def restart_workers(self, **kwargs) -> dict:
            self.calls.append(kwargs)
            if self.fail:
                raise TimeoutError("a worker did not come back")
            return {}

    async def scenario(scheduler: Scheduler) -> RestartAfterRun:
        plugin = RestartAfterRun()
        plugin.add_client(scheduler, "night")
        plugin.add_client(scheduler, "custom run")
        plugin.remove_client(scheduler, "night")
        await asyncio.sleep(0.01)
        assert not scheduler.calls  # the custom run still uses the workers
        plugin.remove_client(scheduler, "custom run")
        plugin.remove_client(scheduler, "custom run")
        await asyncio.sleep(0.01)
        return plugin

    ok = Scheduler()
    assert asyncio.run(scenario(ok)).restarts == 1
    assert len(ok.calls) == 1 and ok.calls[0]["on_error"] == "return"
    failing = Scheduler(fail=True)
    assert asyncio.run(scenario(failing)).restarts == 0 and len(failing.calls) == 1


def _worker_pids(cluster) -> set[int]:
    return {nanny.process.pid for nanny in cluster.workers.values() if nanny.process}


def _restarted(cluster, count: int, timeout: float = 120) -> set[int]:
    plugin = cluster.scheduler.plugins["tickercast-restart-after-run"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _worker_pids(cluster)
        if plugin.restarts >= count and len(pids) == len(cluster.workers):
            return pids
        time.sleep(0.2)
    raise TimeoutError(f"the kept cluster's workers did not restart ({plugin.restarts})")


@pytest.mark.slow  # a kept cluster of two workers, two runs, three restarts: ~30 s
def test_runs_use_the_kept_cluster_and_the_next_run_gets_fresh_workers(prefect_server):
    """A Dask run started beside a kept cluster runs its tasks on the kept workers (no
    cluster of its own); when it ends, the workers are restarted: new processes that have
    imported the PRELOADED libraries but not the project's steps (a night imports its
    code afresh), on which the next run's tasks run; the environment variable is gone with
    the cluster."""
    from distributed import Client
    from prefect import flow, task

    from tickercast.tasks.kept_cluster import PRELOADED, keep_cluster
    from tickercast.tasks.runners import use_task_runner

    @task
    def where(_: int) -> int:
        import tickercast.tasks.train  # noqa: F401 - as a night's training step imports it

        time.sleep(0.2)
        return os.getpid()

    @flow
    def night() -> set[int]:
        with use_task_runner(make_task_runner("dask", 2)) as runner:
            assert runner.address == os.environ[KEPT_CLUSTER].split()[1]
            return {future.result() for future in where.map(range(6))}

    def modules() -> tuple[bool, bool]:
        return all(m in sys.modules for m in PRELOADED), "tickercast.tasks.train" in sys.modules

    with keep_cluster(2) as cluster:
        assert cluster is not None
        first = _worker_pids(cluster)
        assert len(first) == local_workers(2)
        assert night() <= first
        second = _restarted(cluster, 1)
        assert not second & first
        with Client(cluster.scheduler_address) as client:  # leaving restarts them too
            assert set(client.run(modules).values()) == {(True, False)}
        third = _restarted(cluster, 2)
        assert night() <= third
        assert not _restarted(cluster, 3) & third
    assert KEPT_CLUSTER not in os.environ
