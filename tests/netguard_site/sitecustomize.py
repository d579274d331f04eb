"""Installs the tests' network guard (../netguard.py) in every Python process a test starts.

conftest puts this folder first on PYTHONPATH and exports TICKERCAST_NETGUARD_DIR, so
Python runs this file at startup in each child (and their children): Prefect's test
servers, uvicorn, Dask workers, CLI subprocesses. Nothing else lives in this folder, so
it adds no importable names to a child's path. Another sitecustomize further along the
path (a distribution's) still runs afterwards.
"""

import importlib.util
import os
import sys

if os.environ.get("TICKERCAST_NETGUARD_DIR"):
    _here = os.path.dirname(os.path.abspath(__file__))
    _spec = importlib.util.spec_from_file_location(
        "_tickercast_netguard", os.path.join(os.path.dirname(_here), "netguard.py")
    )
    _guard = importlib.util.module_from_spec(_spec)
    sys.modules["_tickercast_netguard"] = _guard
    _spec.loader.exec_module(_guard)
    _guard.install()


def _chain() -> None:
    """Run the sitecustomize this one shadows, if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    module = sys.modules.pop("sitecustomize", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        import sitecustomize  # noqa: F401
    except ImportError:
        if module is not None:
            sys.modules["sitecustomize"] = module
    finally:
        sys.path[:] = saved


_chain()
