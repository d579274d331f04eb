"""Serve `retrain` (17:30) and `ingest` (16:45) on weekdays after the US close, New York time.

They run on live data (yfinance) for the tickers in deployments/nightly.json, the one
place to set them (see deployments/nightly.py).

    python deployments/serve.py                # against PREFECT_API_URL (or a temporary server)
    python deployments/serve.py --with-server  # start a local Prefect server first (make serve)

Open the UI at the printed address, pick the `retrain/nightly-retrain` deployment and use
"Run > Custom run" to override any RetrainConfig field from the form.

When the nightly runs on Dask (deployments/nightly.json: task_runner "dask", no
dask_address), this process keeps the local cluster its runs use and restarts the
workers after each run (tickercast.tasks.kept_cluster); `--cluster-per-run` lets each run
start and close a cluster of its own instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

RETRAIN_CRON = "30 17 * * 1-5"  # 17:30, an hour and a half after the 16:00 close
INGEST_CRON = "45 16 * * 1-5"  # 16:45: the day's bars are in, retrain follows at 17:30
TIMEZONE = "America/New_York"


def build_deployments(
    name: str = "nightly-retrain", cron: str = RETRAIN_CRON, ingest_cron: str = INGEST_CRON
):
    """The deployments this project serves (also used by the deployment tests)."""
    from prefect.schedules import Cron

    from tickercast.config import IngestConfig, RetrainConfig
    from tickercast.deployments.nightly import nightly_config, nightly_ingest, nightly_retrain

    return [
        nightly_retrain.to_deployment(
            name=name,
            schedules=[Cron(cron, timezone=TIMEZONE)],
            parameters={"config": nightly_config(RetrainConfig).model_dump(mode="json")},
            concurrency_limit=1,  # one retrain at a time; later ones queue
            description="Retrain, evaluate and export the forecasters after each US close.",
            tags=["tickercast", "retrain"],
        ),
        nightly_ingest.to_deployment(
            name="nightly-ingest",
            schedules=[Cron(ingest_cron, timezone=TIMEZONE)],
            parameters={"config": nightly_config(IngestConfig).model_dump(mode="json")},
            concurrency_limit=1,
            description="Incremental ingest of the configured tickers into the Parquet lake.",
            tags=["tickercast", "ingest"],
        ),
    ]


def keep_nightly_cluster(per_run: bool = False) -> contextlib.AbstractContextManager:
    """The local Dask cluster this process keeps for the nightly's runs, when the nightly
    settings run on Dask without an address of their own (unless `per_run`); it yields
    None where nothing is kept."""
    from tickercast.config import RetrainConfig
    from tickercast.deployments.nightly import nightly_config
    from tickercast.tasks.kept_cluster import keep_cluster

    execution = nightly_config(RetrainConfig).execution
    if per_run or execution.task_runner != "dask" or execution.dask_address:
        return contextlib.nullcontext()
    return keep_cluster(execution.max_workers)


def free_port() -> int:
    """A TCP port free on loopback now (for a server, a scheduler, a test's endpoint)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    port: int | None = None, timeout: float = 120.0, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on loopback; returns the process and its API URL once healthy."""
    port = port or free_port()
    api = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        # Its own session: Ctrl-C stops the served deployments first, then the server.
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return proc, api
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"prefect server did not answer on {api} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-server", action="store_true", help="start a local Prefect server")
    parser.add_argument("--port", type=int, default=4200, help="server port (--with-server)")
    parser.add_argument("--cron", default=RETRAIN_CRON, help=f"retrain schedule ({TIMEZONE})")
    parser.add_argument("--ingest-cron", default=INGEST_CRON, help=f"ingest schedule ({TIMEZONE})")
    parser.add_argument(
        "--cluster-per-run",
        action="store_true",
        help="each Dask run starts a local cluster of its own (default: this process keeps one)",
    )
    args = parser.parse_args(argv)
    server = None
    if args.with_server:
        server, api = start_server(args.port)
        os.environ["PREFECT_API_URL"] = api
        print(f"Prefect UI: {api.removesuffix('/api')}", flush=True)
    from prefect import serve

    try:
        with keep_nightly_cluster(args.cluster_per_run) as cluster:
            if cluster is not None:
                print(
                    f"Dask: the nightly's runs use the cluster kept at "
                    f"{cluster.scheduler_address} (its workers restart after each run)",
                    flush=True,
                )
            serve(*build_deployments(cron=args.cron, ingest_cron=args.ingest_cron))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
