"""bench/RESULTS.md: one row per benchmark, each a side-by-side ratio measured in one run."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

Each row is measured side by side in one run (project vs its baseline) on the machine
named below; timings on shared machines are noisy, so read the ratios, not the seconds.
Regenerate with `make bench` (all) or `python bench/<name>.py` (one row).

| benchmark | baseline | project | ratio |
|---|---|---|---|
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def rows() -> dict[str, str]:
    """The rows in RESULTS.md by tag."""
    found: dict[str, str] = {}
    if RESULTS.exists():
        for line in RESULTS.read_text().splitlines():
            match = re.match(r"^(\|.*\|) <!-- (\S+) -->$", line)
            if match:
                found[match.group(2)] = match.group(1)
    return found


def _write(table: dict[str, str]) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f"{r} <!-- {k} -->\n" for k, r in sorted(table.items()))
    RESULTS.write_text(HEADER + body + f"\nMachine: {machine()}; last run {stamp}.\n")


def record(name: str, row: str) -> None:
    """Replace (or add) the row tagged `name`, keeping the others."""
    _write({**rows(), name: row})


def publish(name: str, row: str, keep: bool = True) -> None:
    """Print a benchmark's row and, unless told not to (`--no-record`), record it."""
    print(row)
    if keep:
        record(name, row)


def reset() -> None:
    """An empty table: `make bench` starts here, so every row it leaves is from its run."""
    _write({})
