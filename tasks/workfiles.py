"""What every step shares: its content-addressed work folder, the files it hashes,
and reading what upstream steps wrote (paths and hashes pass between tasks, never arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tickercast import layout
from tickercast.hashing import file_sha256
from tickercast.tasks.caching import step_key


def work_dir(data_dir: str, step: str, modules: tuple[str, ...], params: dict) -> Path:
    """The content-addressed folder a step writes into (same key as its cache entry)."""
    return layout.work_dir(data_dir, step) / step_key(step, modules, params)


def ingested_prices(ingested: dict):
    """The prices the ingest step stored for this run (its exact lake file)."""
    from tickercast.market import lake

    return lake.read_price_file(Path(ingested["path"])).to_pandas()


def outputs(*paths: Path) -> dict[str, str]:
    return {str(p): file_sha256(p) for p in paths}


def load_anchors(win: dict) -> dict[str, np.ndarray]:
    with np.load(win["anchors"], allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
