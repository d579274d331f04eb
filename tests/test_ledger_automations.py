"""End to end, for real (issue 23): a `prefect server start` subprocess (its services on),
the shipped automations applied with Prefect's own command (`prefect automation create
--from-file`, from the YAML `deployments/automations.py --write-yaml` writes), an event a
flow would emit, and the automation's webhook reaching a local HTTP receiver. Slow: the
server's start-up is most of it (about a minute on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
CAUSE = 'no "data" in the answer\nat all'  # quotes and a newline: the body stays JSON
EMIT = f"""
from prefect.events.worker import EventsWorker
from tickercast.tasks.events import emit
assert emit("ticker.failed", "AAPL", 4, stage="ingest", cause={CAUSE!r}) is not None
EventsWorker.drain_all()
"""


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Receiver.received.append({"path": self.path, "body": body.decode()})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def test_an_emitted_event_fires_the_shipped_automation_webhook(tmp_path):
    from prefect.automations import Automation
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tickercast.deployments import automations
    from tickercast.deployments.serve import start_server

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/alerts"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server, api = start_server(timeout=240, env=env)
    try:
        with temporary_settings({PREFECT_API_URL: api}):
            written = tmp_path / "automations.yaml"
            assert automations.main(["--webhook-url", url, "--write-yaml", str(written)]) == 0
            for name in automations.RULES:  # applied again below by Prefect's own command
                Automation.read(name=name).delete()
            created = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "automation",
                    "create",
                    "--from-file",
                    str(written),
                ],
                cwd=ROOT,
                env={**env, "PREFECT_API_URL": api},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert created.returncode == 0, created.stdout + created.stderr
            assert {Automation.read(name=n).name for n in automations.RULES} == set(
                automations.RULES
            )
            time.sleep(3)  # the triggers service loads the new automations
            # emitted by another process, as a flow run does (this process's events
            # worker may still be bound to an earlier server of the test session)
            emitted = subprocess.run(
                [sys.executable, "-c", EMIT],
                cwd=ROOT,
                env={**env, "PREFECT_API_URL": api},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert emitted.returncode == 0, emitted.stdout + emitted.stderr
            hit = _wait(lambda: list(Receiver.received), 120, "no webhook call arrived")
        body = json.loads(hit[0]["body"])  # valid JSON, whatever the cause's text
        assert hit[0]["path"] == "/alerts"
        assert body["event"] == "tickercast.ticker.failed" and body["ticker"] == "AAPL"
        assert body["payload"]["cause"] == CAUSE
        assert body["payload"]["stage"] == "ingest"
    finally:
        receiver.shutdown()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
