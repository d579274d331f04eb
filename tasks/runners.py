"""Where per-ticker branches run: threads here, or Dask workers here or on other machines."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tickercast import fastexit, layout


def make_task_runner(kind: str, max_workers: int = 4, dask_address: str | None = None) -> Any:
    """A fresh Prefect task runner; Dask is how a user grows past one machine."""
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max_workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        address = dask_address or kept_cluster(max_workers)
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(max_workers))
    raise ValueError(f"unknown task runner {kind!r}; valid: ['dask', 'threads']")


KEPT_CLUSTER = "TICKERCAST_KEPT_CLUSTER"
"""The environment variable through which a serving process (deployments/serve.py,
`tickercast.tasks.kept_cluster`) hands its flow runs the local cluster it keeps:
`<workers> <scheduler address>`."""


def kept_cluster(max_workers: int) -> str | None:
    """The scheduler address of the local cluster this process's server keeps, when it
    has the workers a local cluster for `max_workers` would have; else None (the run
    starts a cluster of its own, as when nothing keeps one, or `KEPT_CLUSTER` is garbled)."""
    kept = os.environ.get(KEPT_CLUSTER, "").split()
    if len(kept) != 2 or kept[0] != str(local_workers(max_workers)):
        return None
    return kept[1]


def on_this_machine(runner: Any) -> bool:
    """Whether a task runner's processes run on this machine: threads, a local cluster
    it starts, or a scheduler listening on a loopback address, which only this machine's
    processes can reach (the local cluster this process's server keeps, which Dask's
    LocalCluster starts on 127.0.0.1, or a cluster started by hand beside the server, as
    bench/dask_cluster.py starts one)."""
    address = getattr(runner, "address", None)
    return address is None or loopback(address)


def loopback(address: str) -> bool:
    """Whether a Dask scheduler address (`tcp://host:port`, `inproc://...`) names this
    machine's loopback interface."""
    import ipaddress
    from urllib.parse import urlsplit

    if address.startswith("inproc://"):
        return True
    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


WORKER_TTL = "60s"
"""How long the local cluster's scheduler waits for a worker's heartbeat before the
worker's nanny restarts it and its tasks run again (Dask's default: 5 minutes, checked
every 5 minutes). A worker stalled holding the GIL (README, "Pointing the nightly at a
cluster") sent none for 550 s before Dask restarted it; a healthy one heartbeats every
0.5-1 s, as its event loop runs beside a training thread that releases the GIL."""


FAST_EXIT = fastexit.__name__
"""The module a local cluster's workers preload (its `dask_setup`)."""

QUIET_DASK: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}
"""Dask's background work in every scheduler, nanny and worker process, cut to what this
project uses. The statistical profiler sampled each worker thread's stack every 10 ms (5%
of the workers' CPU in a profiled second night; this project never reads its profiles).
The event loop's health tick ran every 20 ms, the memory monitor every 100 ms and the
system monitor every 500 ms: an idle scheduler and two workers burnt 10% of a core
(1.4% with these), and on a machine the workers fill it is taken from their fits: the
nightly over 32 tickers on two workers ran 0.93x the time (bench/dask_quiet.py; the tick
also takes the GIL from the worker's task thread). Slower, they still warn of a blocked
event loop after 3 s, pause or restart a worker over its memory limit within a second,
and feed the dashboard."""


def dask_env(config: dict[str, Any]) -> dict[str, str]:
    """Environment variables that set `config` in a `dask scheduler` or `dask worker`
    process (the README's commands), as Dask reads them (`DASK_` + path, `__` per dot)."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
        for key, value in config.items()
    }


@contextlib.contextmanager
def quiet_dask(runner: Any) -> Iterator[None]:
    """`QUIET_DASK` in this process while a local Dask cluster runs: its scheduler and
    nannies live here and read their intervals as they start (workers get it through the
    cluster's `config`). Other runners, and a cluster elsewhere, change nothing here."""
    local_cluster = hasattr(runner, "cluster_kwargs") and runner.address is None
    if not local_cluster:  # threads, or a cluster started elsewhere
        yield
        return
    import dask

    with dask.config.set(QUIET_DASK):
        yield


def local_cluster_kwargs(max_workers: int) -> dict[str, Any]:
    """A local Dask cluster of one-thread worker processes (`local_workers`) that report
    to this run's Prefect API (`worker_env`), without the dashboard, Dask's background
    work cut to `QUIET_DASK`; a worker that stops heartbeating is restarted after
    `WORKER_TTL`. Each worker preloads
    `tickercast.fastexit`, so the cluster's close at the run's end does not wait ~1 s for
    workers holding TensorFlow to exit."""
    return {
        "n_workers": local_workers(max_workers),
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "env": worker_env(),
        "config": dict(QUIET_DASK),
        "scheduler_kwargs": {"worker_ttl": WORKER_TTL},
        "preload": [FAST_EXIT],
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


def plain_http(url: str | None) -> bool:
    """Whether the API is plain http: no TLS, so its clients never verify a certificate
    and any CA bundle serves them alike (`light_api_clients`)."""
    return bool(url) and url.lower().startswith("http://")


def one_certificate_bundle() -> Path | None:
    """A CA bundle holding certifi's first certificate, written once per user and certifi
    release to the temporary folder (read by this machine's processes only); None when it
    cannot be read or written (Prefect's setting then stays)."""
    import hashlib
    import re
    import tempfile

    import certifi

    from tickercast.atomic import atomic_path

    pem = Path(certifi.where()).read_text()
    first = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", pem, re.S)
    if first is None:
        return None
    text = first.group(0)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    user = os.getuid() if hasattr(os, "getuid") else "user"
    path = Path(tempfile.gettempdir()) / f"tickercast-{user}-one-ca-{digest}.pem"
    try:
        if not path.exists() or path.read_text() != text:  # another's file: replace fails
            with atomic_path(path) as tmp:
                tmp.write_text(text)
    except OSError:
        return None
    return path


@contextlib.contextmanager
def light_api_clients(local: bool) -> Iterator[None]:
    """Task runs submitted in this block build their Prefect API clients without reading
    certifi's CA bundle, when the runner is on this machine (`local`) and the API is
    plain http.

    Prefect builds a client for every task run (two on a Dask worker), and each loads the
    ~150 certificates of certifi's bundle into a TLS context: ~15-27 ms a client here, a
    fifth to a third of a task run's cost beside its work (py-spy on a second night's
    workers), although a plain-http API never verifies a certificate. Here they load a
    one-certificate bundle (Prefect's api.ssl_cert_file, carried to the workers with the
    run's settings, in place of certifi's or a cert file set for https APIs, which http
    never reads). An https API, or workers on other machines (which cannot read this
    machine's file), keep the setting as it is, as does a run on its own temporary server."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_URL, temporary_settings

    # only with a set API URL: a run on a temporary server of its own (no URL set) keeps
    # its settings as they are, or its workers would each start a temporary server (tested)
    url = PREFECT_API_URL.value()
    bundle = one_certificate_bundle() if local and plain_http(url) else None
    if bundle is None:
        yield
        return
    with temporary_settings(updates={PREFECT_API_SSL_CERT_FILE: str(bundle)}):
        yield


def local_workers(max_workers: int) -> int:
    """Worker processes of a local Dask cluster: `max_workers`, at most one per core the
    process may use. Each worker trains on one TensorFlow thread, so a worker per core is
    the machine's whole training capacity; more would only share cores (bench/RESULTS.md,
    "TensorFlow thread pools": two one-thread processes train 1.8-2.8x one default process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(int(max_workers), cores or 1))


@contextlib.contextmanager
def use_task_runner(runner: Any) -> Iterator[Any]:
    """Run `.submit`/`.map` calls in this block on `runner`, inside the current flow run.

    A flow's runner is fixed when it is decorated; swapping it in the run's context lets a
    config field (set from the CLI or the deployment's UI form) choose it per run, while
    the task runs stay attached to this flow run. A local Dask cluster starts with Dask's
    background work cut (`quiet_dask`); task runs on this machine (threads, a local or a
    kept cluster) build their API clients lighter (`light_api_clients`).
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("use_task_runner needs a running flow")
    with (
        quiet_dask(runner),
        runner.duplicate() as started,
        context.model_copy(update={"task_runner": started}),
        light_api_clients(on_this_machine(runner)),
    ):
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
