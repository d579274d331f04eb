"""Test-wide setup: offline guard, a private PREFECT_HOME, one Prefect test server.

Environment is set before Prefect is imported anywhere, so its settings pick it up.
The network guard (tests/netguard.py) is installed here before anything can start a
process, so every child (Prefect test servers, uvicorn, Dask workers, CLI subprocesses)
runs it too; see `_no_network` for how their refusals reach the test that caused them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
_PREFECT_HOME = tempfile.mkdtemp(prefix="tickercast-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["MPLBACKEND"] = "Agg"
# a checkpoint after every epoch, so tests can kill tiny fits between two of them (the
# default interval is tested in tests/test_train.py)
os.environ["TICKERCAST_CHECKPOINT_SECONDS"] = "0"

sys.path.insert(0, str(ROOT))
from tests import netguard  # noqa: E402

_NETGUARD_DIR = tempfile.mkdtemp(prefix="tickercast-netguard-")
netguard.install(_NETGUARD_DIR)
# Refusals logged between tests (a server's background work); reported at session end.
_STRAY_VIOLATIONS: list[str] = []
# A child gets this long to start and install the guard before it counts as unguarded.
_GUARD_GRACE_S = 15.0


def _unguarded_children() -> list[str]:
    deadline = time.monotonic() + _GUARD_GRACE_S
    while True:
        missing = netguard.unguarded_children()
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


@pytest.fixture(autouse=True)
def _no_network():
    """A blocked connection attempt during a test fails it, in whichever process it was
    made and even if something caught it; so does a live child without the guard."""
    _STRAY_VIOLATIONS.extend(netguard.take_violations())
    yield
    new = netguard.take_violations()
    netguard.VIOLATIONS.clear()
    if new:
        pytest.fail("test touched the network: " + "; ".join(new))
    unguarded = _unguarded_children()
    if unguarded:
        pytest.fail("processes running without the network guard: " + "; ".join(unguarded))


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server (temporary database) for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_sessionfinish(session, exitstatus):
    stray = _STRAY_VIOLATIONS + netguard.take_violations()
    if stray:
        lines = "\n  ".join(stray)
        print(f"\nnetwork access blocked outside any test:\n  {lines}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
    shutil.rmtree(_NETGUARD_DIR, ignore_errors=True)
