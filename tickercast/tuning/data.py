"""Search data: the train + validation rows a search may see, saved per ticker.

Selection never sees the test split: the search file holds only the rows up to the end
of the validation split, with every target that would reach a test day blanked. The
chosen configuration is evaluated on the test split once, afterwards, by the retrain flow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tickercast.atomic import atomic_path
from tickercast.records import Record

if TYPE_CHECKING:  # settings arrive as values: their classes' code is no part of a step
    from tickercast.sections import PreprocessSettings


class SearchData(Record):
    """A ticker's search data (what the tune-data step returns, every trial reads)."""

    ticker: str
    search: str
    meta: dict[str, Any]
    content: str  # sha256 of the values (the .npz's zip records a time)

    def load(self) -> tuple[np.ndarray, np.ndarray, dict]:
        """(x, y, meta) as `save_search_data` wrote them."""
        return load_search_data(self.search)


def search_data(prices, section: PreprocessSettings, who: str) -> tuple[dict, dict]:
    """The rows a search may see: preprocessed exactly as retrain does (same features,
    train-only scalers, same split), cut after the last validation row, with each target
    whose days reach past it set to NaN. Nothing in the result depends on a test-split
    value (tests/test_tune_flow.py proves it by poisoning them)."""
    from tickercast.modeling.preprocess import preprocess

    spec, arrays = preprocess(prices, section, who)
    rows = spec.n_train + spec.n_val
    x = np.ascontiguousarray(arrays["x"][:rows])
    y = np.array(arrays["y"][:rows], dtype=np.float32)
    # row t's target covers days t+1..t+horizon: from rows - horizon on it needs a test day
    y[max(rows - spec.horizon, 0) :] = np.nan
    meta = {
        "rows": rows,
        "n_train": spec.n_train,
        "n_val": spec.n_val,
        "horizon": spec.horizon,
        "features": spec.features,
        "target": spec.target,
        "first_day": spec.first_day,
        "train_end": spec.train_end,
        "val_end": spec.val_end,
        # rows before a gap in the days and what windows over one do, as in retrain
        # (`tickercast.modeling.windows.without_gap_windows`)
        "gap_rows": [int(g[0]) for g in spec.gaps if g[0] < rows - 1],
        "on_gap": spec.on_gap,
        "feature_memory": spec.feature_memory,
    }
    return {"x": x, "y": y}, meta


def content_hash(arrays: dict, meta: dict) -> str:
    """sha256 of the search data's values (not of the .npz, whose zip records a time)."""
    import hashlib

    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def save_search_data(out_dir: Path, arrays: dict, meta: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "search.npz"
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_search_data(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with np.load(path, allow_pickle=False) as data:
        return data["x"], data["y"], json.loads(str(data["meta"]))


def search_anchors(meta: dict, lookback: int, y: np.ndarray) -> dict[str, np.ndarray]:
    """Train and validation anchors for `lookback` (the split and the gap rule retrain
    uses: no window spans a gap under on_gap=split), checked to stay inside the search
    rows with known targets: a tripwire, never expected to fire."""
    from tickercast.modeling.windows import split_anchors, without_gap_windows

    rows, horizon = meta["rows"], meta["horizon"]
    anchors = split_anchors(rows, meta["n_train"], meta["n_val"], lookback, horizon)
    gaps = np.asarray(meta.get("gap_rows", []), dtype=np.int64)  # older search files: none
    on_gap, memory = meta.get("on_gap", "bridge"), meta.get("feature_memory", 1)
    anchors = without_gap_windows(anchors, gaps, on_gap, lookback, horizon, memory)
    anchors["test"] = np.empty(0, np.int64)
    for split in ("train", "val"):
        a = anchors[split]
        if not len(a):
            raise ValueError(f"no {split} windows for lookback {lookback}")
        if a.max() >= rows or not np.isfinite(y[a]).all():
            raise RuntimeError(f"{split} window reaches past the validation split")
    return anchors
