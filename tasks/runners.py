"""Where per-ticker branches run: threads here, or Dask workers here or on other machines."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tickercast import layout


def make_task_runner(kind: str, max_workers: int = 4, dask_address: str | None = None) -> Any:
    """A fresh Prefect task runner; Dask is how a user grows past one machine."""
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max_workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(max_workers))
    raise ValueError(f"unknown task runner {kind!r}; valid: ['dask', 'threads']")


def local_cluster_kwargs(max_workers: int) -> dict[str, Any]:
    """A local Dask cluster of one-thread worker processes (`local_workers`) that report
    to this run's Prefect API (`worker_env`), without the dashboard and without Dask's
    statistical profiler, which samples every worker thread's stack every 10 ms (5% of the
    workers' CPU in a profiled second night; this project never reads its profiles)."""
    return {
        "n_workers": local_workers(max_workers),
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "env": worker_env(),
        "config": {"distributed.worker.profile.enabled": False},
    }


def worker_env() -> dict[str, str]:
    """The Prefect API of this flow run, for local Dask workers to report their task runs
    to. A run without PREFECT_API_URL talks to a temporary server its process started;
    the workers, separate processes, would each start a temporary server of their own
    (10-25 s and a server process each) and record their task runs there, where the flow
    run's server never sees them."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    client = getattr(context, "client", None)
    url = str(client.api_url) if client is not None else os.environ.get("PREFECT_API_URL")
    return {"PREFECT_API_URL": url.rstrip("/")} if url else {}


def local_workers(max_workers: int) -> int:
    """Worker processes of a local Dask cluster: `max_workers`, at most one per core the
    process may use. Each worker trains on one TensorFlow thread, so a worker per core is
    the machine's whole training capacity; more would only share cores (bench/RESULTS.md,
    "TensorFlow thread pools": two one-thread processes train 2.8x one default process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(int(max_workers), cores or 1))


@contextlib.contextmanager
def use_task_runner(runner: Any) -> Iterator[Any]:
    """Run `.submit`/`.map` calls in this block on `runner`, inside the current flow run.

    A flow's runner is fixed when it is decorated; swapping it in the run's context lets a
    config field (set from the CLI or the deployment's UI form) choose it per run, while
    the task runs stay attached to this flow run.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("use_task_runner needs a running flow")
    with runner.duplicate() as started, context.model_copy(update={"task_runner": started}):
        yield started


# One training at a time per process: seeds and the dtype policy are process-wide in
# TensorFlow, and TF already spreads one fit over every core. Other steps of other
# tickers' branches run alongside; Dask workers are separate processes and train in parallel.
_TRAINING_LOCK = threading.Lock()


def dask_worker_threads() -> int | None:
    """The task threads of the Dask worker running this code, or None outside one. A
    worker process has imported `distributed`; elsewhere importing it only to ask would
    cost seconds (measured: 3.7 s of a 5-ticker night's train step)."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError):
        return None


@contextlib.contextmanager
def _training_slot() -> Iterator[None]:
    with _TRAINING_LOCK:
        threads = dask_worker_threads()
        if threads is not None:
            from tickercast.modeling.threads import between_fits, size_pools

            size_pools(threads)  # the worker's share of the cores, not all of them
            if threads == 1:  # nothing else builds a model in this process meanwhile
                between_fits()
        yield


def training_lock() -> contextlib.AbstractContextManager[None]:
    """The one training slot of this process (`with training_lock(): fit`). On a Dask
    worker it also sizes TensorFlow's pools to the worker's threads and, on a one-thread
    worker, resets Keras' state every few fits (`between_fits`). A function, not a
    global, so tasks pickled by value for Dask refer to it by name."""
    return _training_slot()


def result_storage(url: str | None, data_dir: str) -> Any:
    """Prefect result storage for cached steps: a local folder, or any fsspec URL."""
    if not url:
        return layout.results_dir(data_dir)
    if "://" in url and not url.startswith("file://"):
        from prefect.filesystems import RemoteFileSystem

        from tickercast.hashing import json_sha256

        # Prefect needs remote result storage saved as a block on the server.
        block = RemoteFileSystem(basepath=url.rstrip("/"))
        block.save(f"tickercast-results-{json_sha256(url)[:12]}", overwrite=True)
        return block
    return Path(url.removeprefix("file://"))


def step_options(
    data_dir: str,
    refresh: bool = False,
    storage: str | None = None,
    expiration_days: float | None = None,
) -> dict:
    """`with_options` for a flow's cached steps: results persisted as JSON (paths and
    hashes, never arrays) in `storage` (default <data_dir>/results), recomputed on
    `refresh`, expiring after `expiration_days` when set."""
    import datetime as dt

    options: dict = {
        "persist_result": True,
        "result_storage": result_storage(storage, data_dir),
        "result_serializer": "json",
        "refresh_cache": refresh,
    }
    if expiration_days:
        options["cache_expiration"] = dt.timedelta(days=expiration_days)
    return options
