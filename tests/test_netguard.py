"""The tests' network guard (tests/netguard.py): in this process, in every child, in curl.

Unroutable 10.255.255.1 stands for "the network": without the guard a connection there
hangs until its timeout (or fails with a routing error), so each test checks that the
refusal is the guard's (`NetworkAccessError`, logged, immediate), not the network's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import netguard

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ("10.255.255.1", 9)

# Prints which exception the connection attempt raised and how long it took.
TRY_CONNECT = """
import socket, sys, time
start = time.monotonic()
try:
    socket.create_connection(({host!r}, {port}), timeout=5)
    print("connected")
except Exception as exc:
    print(type(exc).__name__, round(time.monotonic() - start, 3))
"""


def run_child(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def expect_logged(*fragments: str) -> list[str]:
    """Take this test's expected refusals from the log (else the autouse fixture fails it)."""
    lines = netguard.take_violations()
    netguard.VIOLATIONS.clear()
    for fragment in fragments:
        assert any(fragment in line for line in lines), (fragment, lines)
    return lines


def refused_by_guard(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, seconds = proc.stdout.split()[-2:]
    assert name == "NetworkAccessError", proc.stdout + proc.stderr[-2000:]
    assert float(seconds) < 1.0, "refused at once, not after a network timeout"


def test_outside_connections_fail_loudly():
    with pytest.raises(netguard.NetworkAccessError, match="93.184.216.34"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    with pytest.raises(netguard.NetworkAccessError, match="query2.finance.yahoo.com"):
        socket.getaddrinfo("query2.finance.yahoo.com", 443)
    with pytest.raises(netguard.NetworkAccessError, match="example.com"):
        socket.gethostbyname("example.com")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(netguard.NetworkAccessError, match="10.255.255.1:9"):
            udp.sendto(b"x", OUTSIDE)
    lines = expect_logged("93.184.216.34:80", "query2.finance.yahoo.com", "10.255.255.1:9")
    assert all(line.startswith(f"pid {os.getpid()} ") for line in lines)


def test_loopback_and_unix_sockets_are_allowed(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=2)
    client.close()
    server.close()
    assert socket.getaddrinfo("localhost", 80)
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as unix_server, socket.socket(socket.AF_UNIX) as c:
        unix_server.bind(path)
        unix_server.listen(1)
        c.connect(path)


def test_a_child_process_is_refused_by_the_guard_not_the_network():
    proc = run_child(TRY_CONNECT.format(host=OUTSIDE[0], port=OUTSIDE[1]))
    refused_by_guard(proc)
    (line,) = expect_logged("connect to 10.255.255.1:9")
    assert not line.startswith(f"pid {os.getpid()} "), "logged by the child itself"


def test_a_child_with_an_environment_of_its_own_is_guarded_too():
    # as a test that hides the repo from a child would start it (PYTHONPATH emptied)
    scrubbed = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ""}
    refused_by_guard(run_child(TRY_CONNECT.format(host=OUTSIDE[0], port=OUTSIDE[1]), scrubbed))
    expect_logged("connect to 10.255.255.1:9")


def test_a_refusal_swallowed_in_a_grandchild_still_reaches_the_test():
    """A multiprocessing 'spawn' grandchild (as Dask and Prefect start workers) catches
    the refusal and exits cleanly; the log still shows it, with the grandchild's pid."""
    code = (
        "import multiprocessing as mp, os, socket\n"
        "def quietly():\n"
        "    try:\n"
        f"        socket.create_connection({OUTSIDE!r}, timeout=5)\n"
        "    except Exception:\n"
        "        pass\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=quietly)\n"
        "    p.start(); p.join(60)\n"
        "    print(os.getpid(), p.pid, p.exitcode)\n"
    )
    script = ROOT / "tests" / f"_netguard_probe_{os.getpid()}.py"
    script.write_text(code)
    try:
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
    finally:
        script.unlink()
    assert proc.returncode == 0, proc.stderr[-2000:]
    child, grandchild, exitcode = proc.stdout.split()
    assert exitcode == "0"
    (line,) = expect_logged("connect to 10.255.255.1:9")
    assert line.startswith(f"pid {grandchild} ")
    assert {int(child), int(grandchild)} <= netguard.guarded_pids()


def test_a_python_child_without_the_guard_is_found():
    """The autouse fixture's check: `-I` ignores PYTHONPATH, so sitecustomize never runs."""
    proc = subprocess.Popen([sys.executable, "-I", "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while not any(f"pid {proc.pid}:" in c for c in netguard.unguarded_children()):
            assert time.monotonic() < deadline, "unguarded child not reported"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    guarded = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while guarded.pid not in netguard.guarded_pids():
            assert time.monotonic() < deadline, "guarded child never registered"
            time.sleep(0.2)
        assert not any(f"pid {guarded.pid}:" in c for c in netguard.unguarded_children())
    finally:
        guarded.kill()
        guarded.wait()


def test_the_prefect_test_server_runs_guarded(prefect_server):
    import psutil

    servers = [
        child
        for child in psutil.Process().children(recursive=True)
        if "uvicorn" in " ".join(child.cmdline()) and "prefect.server" in " ".join(child.cmdline())
    ]
    assert servers, "prefect_test_harness starts its server in a subprocess"
    assert {s.pid for s in servers} <= netguard.guarded_pids()
    assert all(
        str(netguard.SITE_DIR) in s.environ().get("PYTHONPATH", "").split(os.pathsep)
        for s in servers
    )


def try_connect_outside() -> tuple[str, int]:
    """Run in a Dask worker: which exception a connection attempt raised there, and where."""
    try:
        socket.create_connection(OUTSIDE, timeout=5)
        return "connected", os.getpid()
    except Exception as exc:  # noqa: BLE001 - the kind is the answer
        return type(exc).__name__, os.getpid()


def test_a_dask_worker_process_is_guarded():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        kind, worker_pid = client.submit(try_connect_outside, pure=False).result(timeout=120)
    assert worker_pid != os.getpid(), "ran in a worker process"
    assert kind == "NetworkAccessError"
    (line,) = expect_logged("connect to 10.255.255.1:9")
    assert line.startswith(f"pid {worker_pid} ")


# --- curl_cffi: libcurl connects from C, past the socket guard ---------------------------


def test_curl_cffi_is_refused_before_libcurl_connects():
    from curl_cffi import requests as curl_requests

    start = time.monotonic()
    with pytest.raises(netguard.NetworkAccessError, match="curl_cffi request to http://10.255"):
        curl_requests.get("http://10.255.255.1:9/", timeout=5)
    with pytest.raises(netguard.NetworkAccessError, match="through proxy"):
        curl_requests.get("http://127.0.0.1:9/", proxies={"http": "http://10.255.255.1:9"})
    assert time.monotonic() - start < 1.0
    expect_logged("curl_cffi request to http://10.255.255.1:9", "through proxy")


def test_curl_cffi_is_refused_in_a_child_process():
    code = (
        "import time\n"
        "from curl_cffi import requests\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    requests.get('https://query2.finance.yahoo.com/v8/finance/chart/AAPL', timeout=5)\n"
        "    print('connected')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, round(time.monotonic() - start, 3))\n"
    )
    refused_by_guard(run_child(code))
    expect_logged("curl_cffi request to https://query2.finance.yahoo.com")


class _RedirectOutside(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(302)
        self.send_header("Location", "http://10.255.255.1:9/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_redirect_curl_follows_by_itself_cannot_leave_loopback():
    from curl_cffi import requests as curl_requests

    server = ThreadingHTTPServer(("127.0.0.1", 0), _RedirectOutside)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = time.monotonic()
        with pytest.raises(netguard.NetworkAccessError, match="redirect to http://10.255"):
            curl_requests.get(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5)
        assert time.monotonic() - start < 1.0, "stopped at the dead proxy, not by a timeout"
    finally:
        server.shutdown()
        server.server_close()
    expect_logged("followed a redirect to http://10.255.255.1:9/elsewhere")
