"""A killed `tickercast retrain` leaves no Prefect temporary server behind (issue 25).

A real CLI process, with no Prefect API configured, so it starts its own temporary server
(a child process), is stopped with SIGTERM or SIGINT in the middle of training. It must
exit with one line and take the server with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER = b"prefect.server.api.server:create_app"


def children(pid: int) -> dict[int, bytes]:
    """Processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.slow  # a temporary server starts (10-25 s on 2 cores) and a run is trained
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_killed_retrain_leaves_no_temporary_server(tmp_path: Path, signum: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    argv = [
        sys.executable,
        "-m",
        "tickercast.app.cli",
        "retrain",
        "--source=sine",
        "--tickers=SINE",
        "--start=2000-01-01",
        "--features=close",
        "--target=close",
        "--lookback=5",
        "--units=4",
        "--model=lstm",
        "--epochs=1000",
        f"--data-dir={tmp_path / 'data'}",
    ]
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
    servers: dict[int, bytes] = {}
    try:

        def training() -> bool:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            servers.update({p: c for p, c in children(proc.pid).items() if SERVER in c})
            return bool(servers) and "epoch 2/" in log_path.read_text()

        wait_for(training, 240, "the run never reached training with its own server")
        proc.send_signal(signum)
        code = proc.wait(timeout=60)  # the fit gives up at its next batch
        wait_for(lambda: not any(alive(p) for p in servers), 20, "the server outlived the run")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in servers:  # only the server this test's own process started
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    out = log_path.read_text()
    assert code == (143 if signum == signal.SIGTERM else 130), out[-3000:]
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert f"tickercast: {word}" in out
    assert "Traceback" not in out
