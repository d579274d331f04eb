"""End to end, for real: a Prefect server, the served deployment, a run triggered like the UI.

`prefect server start` on a free loopback port, `deployments/serve.py` in its own process
(as a user starts it), `run_deployment` with custom parameters, on the Dask cluster serve.py
keeps, then the bundle, the artifacts and the cluster's restart are checked. Slow: about a
minute or two on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _wait_for_deployment(client, name: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return client.read_deployment_by_name(name)
        except Exception:
            time.sleep(1)
    raise TimeoutError(f"deployment {name} was not registered within {timeout:.0f} s")


def kept_workers(serve_pid: int) -> set[int]:
    """The worker processes of the cluster serve.py keeps: its spawned children (a flow
    run's own cluster would be the flow run's children)."""
    import psutil

    children = psutil.Process(serve_pid).children()
    return {p.pid for p in children if "spawn_main" in " ".join(p.cmdline())}


def wait_for_workers(serve_pid: int, count: int, not_in: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = kept_workers(serve_pid) - not_in
        if len(pids) == count:
            return pids
        time.sleep(0.5)
    raise TimeoutError(f"serve.py kept no {count} new workers within {timeout:.0f} s")


def test_served_deployment_runs_with_custom_parameters(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tickercast.deployments.serve import start_server
    from tickercast.tasks.runners import local_workers

    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    server, api = start_server(timeout=180, env=env)
    served = None
    try:
        served = subprocess.Popen(
            [sys.executable, "deployments/serve.py"],
            cwd=ROOT,
            env={**env, "PREFECT_API_URL": api},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        data_dir = tmp_path / "data"
        config = {
            "tickers": ["MSFT"],
            "start": "2019-01-01",
            "lookback": 20,
            "epochs": 2,
            "units": [8, 4],
            "data_dir": str(data_dir),
            "task_runner": "dask",  # as deployments/nightly.json runs it
        }
        with temporary_settings({PREFECT_API_URL: api}):
            with get_client(sync_client=True) as client:
                _wait_for_deployment(client, "retrain/nightly-retrain", timeout=120)
            workers = local_workers(4)  # the config's max_workers: the kept cluster's size
            before = wait_for_workers(served.pid, workers, set(), timeout=120)
            flow_run = run_deployment(
                "retrain/nightly-retrain", parameters={"config": config}, timeout=420
            )
            assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
            with get_client(sync_client=True) as client:
                artifacts = client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])
                    )
                )
        # the run used the kept workers, restarted once it ended
        assert wait_for_workers(served.pid, workers, before, timeout=120)
        assert (data_dir / "models/MSFT/versions/1/model.keras").is_file()
        kinds = {a.type for a in artifacts}
        assert {"table", "markdown"} <= kinds, kinds
        assert any(a.key == "metrics-msft" for a in artifacts)
    finally:
        for proc in (served, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
