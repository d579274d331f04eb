"""`make bench`: run every benchmark script in bench/ (each records its own RESULTS.md row)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"__init__.py", "results.py", "run_all.py"}

if __name__ == "__main__":
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.name in SKIP:
            continue
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode:
            failed.append(script.name)
    print((HERE / "RESULTS.md").read_text())
    sys.exit(f"failed: {failed}" if failed else 0)
