"""Test-wide setup: offline guard, a private PREFECT_HOME, one Prefect test server.

Environment is set before Prefect is imported anywhere, so its settings pick it up.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
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

sys.path.insert(0, str(ROOT))
from tests import netguard  # noqa: E402

netguard.install()


@pytest.fixture(autouse=True)
def _no_network():
    """Any blocked connection attempt during a test fails it, even if something caught it."""
    start = len(netguard.VIOLATIONS)
    yield
    new = netguard.VIOLATIONS[start:]
    del netguard.VIOLATIONS[start:]
    if new:
        pytest.fail("test touched the network: " + "; ".join(new))


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
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
