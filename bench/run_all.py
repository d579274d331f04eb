"""`make bench`: run every benchmark script in bench/ and rewrite bench/RESULTS.md.

The table is started afresh, so it holds only rows measured in this run on this machine
(each script records its own side-by-side row with `bench.results.record`); a script that
fails leaves a row saying so instead of an old figure.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
# peer_autoets.py is forecast_quality.py's helper (run in the peer's venv), stacked_lstm.py
# universe_levers.py's prototype and dask_processes.py the cluster the Dask ones start:
# not benchmarks
SKIP = {
    "__init__.py",
    "results.py",
    "run_all.py",
    "peer_autoets.py",
    "stacked_lstm.py",
    "dask_processes.py",
}

if __name__ == "__main__":
    from bench.results import RESULTS, record, reset

    reset()
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.name in SKIP:
            continue
        print(f"== {script.name}", flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode
        print(f"== {script.name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(script.name)
            record(
                f"{script.stem}_failed",
                f"| {script.stem} | - | failed in this run (exit {code}), no figure | - |",
            )
    print(RESULTS.read_text())
    sys.exit(f"failed: {failed}" if failed else 0)
