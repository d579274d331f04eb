"""What every step shares: its content-addressed work folder and the files it hashes
(paths and hashes pass between tasks, never arrays)."""

from __future__ import annotations

from pathlib import Path

from tickercast import layout
from tickercast.hashing import file_sha256
from tickercast.tasks.caching import step_key


def work_dir(data_dir: str, step: str, modules: tuple[str, ...], params: dict) -> Path:
    """The content-addressed folder a step writes into (same key as its cache entry)."""
    return layout.work_dir(data_dir, step) / step_key(step, modules, params)


def outputs(*paths: Path) -> dict[str, str]:
    return {str(p): file_sha256(p) for p in paths}
