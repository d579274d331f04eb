"""A local Dask cluster that a serving process keeps for its flow runs, its workers
restarted after each run.

Why: a flow run that starts a local cluster of its own waits ~2 s for the worker
processes (spawned, importing Dask) before its first task and ~0.3 s to close them. On a
500-ticker second night (~65 s) that was 5.7% of the night (bench/RESULTS.md,
`nightly_universe_second`; issue #22 asks at most 5%). deployments/serve.py starts the
same cluster once (`keep_cluster`) and its flow runs connect to it
(`tasks.runners.kept_cluster`). When a run's client leaves, the nannies restart the
workers while no run waits (`RestartAfterRun`): the next run gets fresh processes, as a
cluster of its own would give it, with no TensorFlow state, model or memory carried from
one night to the next, and they import the project's code at their first task, so a code
update between nights is what the next night runs. Measured at 500 tickers: the second
night's orchestration 3.8% and 4.1% in two runs (README, "What the second night's
orchestration is made of").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from distributed.diagnostics.plugin import SchedulerPlugin

from tickercast.tasks.runners import KEPT_CLUSTER, QUIET_DASK, local_cluster_kwargs

if TYPE_CHECKING:
    from distributed import LocalCluster

logger = logging.getLogger(__name__)

RESTART_TIMEOUT_S = 120.0
"""How long the restart after a run waits for the workers to come back (a worker that
imported TensorFlow takes ~1 s to exit; a fresh one ~2 s to start on a busy machine)."""


PRELOADED = ("prefect.task_engine", "prefect_dask", "numpy", "pandas", "pyarrow")
"""Libraries the kept workers import as they start, while no run waits: a fresh worker's
first task otherwise spends ~1.3 s importing them (measured in one process: Prefect's task
engine and prefect-dask 0.8 s, then the steps 0.5 s, mostly pandas and pyarrow). Only
libraries: the project's own modules are imported at a night's first task, so the night
runs the code as it is then."""


class RestartAfterRun(SchedulerPlugin):
    """In the kept cluster's scheduler: when the last client leaves (a flow run ended, in
    any state), restart every worker through its nanny. A client that connects while
    the restart runs has its tasks wait for the new workers."""

    name = "tickercast-restart-after-run"

    def __init__(self) -> None:
        self.clients: set[str] = set()
        self.restarts = 0
        self._running: set[asyncio.Task] = set()

    def add_client(self, scheduler, client: str) -> None:
        self.clients.add(client)

    def remove_client(self, scheduler, client: str) -> None:
        if client not in self.clients:  # told twice
            return
        self.clients.discard(client)
        if self.clients:  # another run is still connected: its workers stay
            return
        task = asyncio.get_running_loop().create_task(self._restart(scheduler))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _restart(self, scheduler) -> None:
        try:
            await scheduler.restart_workers(
                timeout=RESTART_TIMEOUT_S,
                on_error="return",
                stimulus_id=f"tickercast-restart-after-run-{time.time()}",
            )
        except Exception as error:  # the scheduler's own worker_ttl still guards them
            logger.warning("the kept cluster's workers did not restart: %s", error)
            return
        self.restarts += 1
        logger.info("the kept cluster's workers restarted after a run (%d)", self.restarts)


@contextlib.contextmanager
def keep_cluster(max_workers: int) -> Iterator[LocalCluster | None]:
    """A local cluster for `max_workers` (`local_cluster_kwargs`: one-thread worker
    processes, Dask's background work cut; the `RestartAfterRun` plugin, the `PRELOADED`
    libraries), kept while the
    block runs and handed to the flow runs this process starts through `KEPT_CLUSTER`.

    Keeps nothing (yields None) without a Prefect API URL set: the workers' environment is
    fixed when they start, and a run on a temporary server of its own must send its
    workers that server's address (`tasks.runners.worker_env`)."""
    import dask
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        yield None
        return
    kwargs = local_cluster_kwargs(max_workers)
    kwargs["env"] = {**kwargs["env"], "PREFECT_API_URL": url.rstrip("/")}
    kwargs["scheduler_kwargs"] = {**kwargs["scheduler_kwargs"], "plugins": [RestartAfterRun()]}
    kwargs["preload"] = [*kwargs["preload"], *PRELOADED]
    previous = os.environ.get(KEPT_CLUSTER)
    with dask.config.set(QUIET_DASK), LocalCluster(**kwargs) as cluster:
        os.environ[KEPT_CLUSTER] = f"{kwargs['n_workers']} {cluster.scheduler_address}"
        try:
            yield cluster
        finally:
            if previous is None:
                os.environ.pop(KEPT_CLUSTER, None)
            else:
                os.environ[KEPT_CLUSTER] = previous
