"""The per-window forecast table an evaluation writes (`layout.PREDICTIONS_FILE`): one
row per test window, so the gate and `models show` read a version's forecasts instead of
re-running it from the lake.

Columns (prices; output j >= 2 of a vector target carries the suffix `_j`):
`anchor_date`, `target_date`, `last_close`; `actual`, `actual_j`; `model`, `model_j`
and each point baseline with its `_j`; the conformal bands `lo_<level>` / `hi_<level>`
(first output); the model's quantile grid `q_<level>` (and `q_<level>_j`); each
forecaster's per-origin CRPS `crps_<name>`.

Tables written before every output was recorded lack some of these columns; the readers
here return None for what is missing, and the caller re-runs that part.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from tickercast.evaluation.distribution import GRID

ANCHOR, ACTUAL, LAST_CLOSE = "anchor_date", "actual", "last_close"


class TableChanged(ValueError):
    """A recorded table whose content no longer matches the hash it was recorded with."""


def column(name: str, j: int) -> str:
    """Output `j`'s column of forecaster (or `actual`) `name` (j counts from 1)."""
    return name if j == 1 else f"{name}_{j}"


def grid_column(level: float, j: int) -> str:
    return column(f"q_{level:g}", j)


def n_outputs(table: pd.DataFrame) -> int:
    """How many outputs the target has: `actual` and its `actual_j` columns."""
    return 1 + sum(1 for c in table.columns if c.startswith(f"{ACTUAL}_"))


def forecast_columns(forecasts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of every forecaster, (n, outputs) each, as table columns."""
    out: dict[str, np.ndarray] = {}
    for name, pred in forecasts.items():
        pred = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
        out |= {column(name, j + 1): pred[:, j] for j in range(pred.shape[1])}
    return out


def grid_columns(grid: np.ndarray) -> dict[str, np.ndarray]:
    """A quantile grid (n, outputs, len(GRID)) as table columns, every output."""
    q = np.asarray(grid, dtype=np.float64)
    return {
        grid_column(level, j + 1): q[:, j, i]
        for j in range(q.shape[1])
        for i, level in enumerate(GRID)
    }


def outputs(table: pd.DataFrame, name: str, n_out: int) -> np.ndarray | None:
    """(n, outputs) of `name` from the table; None when any output's column is missing."""
    columns = [column(name, j) for j in range(1, n_out + 1)]
    if not all(c in table.columns for c in columns):
        return None
    return table[columns].to_numpy(dtype=np.float64)


def grid(table: pd.DataFrame, n_out: int) -> np.ndarray | None:
    """The model's recorded quantile grid (n, outputs, len(GRID)); None when the table
    lacks any output's grid (no distribution, or written before every output was)."""
    columns = [grid_column(level, j) for j in range(1, n_out + 1) for level in GRID]
    if not all(c in table.columns for c in columns):
        return None
    return table[columns].to_numpy(dtype=np.float64).reshape(len(table), n_out, len(GRID))


def rows_at(table: pd.DataFrame, window: pd.DataFrame) -> pd.DataFrame | None:
    """`table`'s rows at the windows of `window`, in its order, when `table` recorded
    every one of them on the same data (same anchor day, actual and last close); else
    None: forecasts recorded on other closes do not stand for these windows."""
    keys = pd.to_datetime(table[ANCHOR])
    if keys.duplicated().any():
        return None
    indexed = table.set_axis(keys, axis=0)
    wanted = pd.to_datetime(window[ANCHOR])
    if not wanted.isin(indexed.index).all():
        return None
    rows = indexed.loc[wanted].reset_index(drop=True)
    n_out = n_outputs(window)
    for name in (ACTUAL, LAST_CLOSE):
        mine = outputs(rows, name, n_out if name == ACTUAL else 1)
        theirs = outputs(window, name, n_out if name == ACTUAL else 1)
        if mine is None or theirs is None or not np.allclose(mine, theirs, rtol=1e-12, atol=0):
            return None
    return rows


def write(path: str | Path, table: pd.DataFrame) -> Path:
    """Write the table atomically (a reader never sees half of it)."""
    from tickercast.atomic import atomic_path

    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(path)


def from_bytes(data: bytes) -> pd.DataFrame:
    """A table from the bytes of its file (already checked by the caller)."""
    return pd.read_parquet(io.BytesIO(data))


def verified_bytes(path: str | Path, sha256: str) -> bytes:
    """The bytes at `path`, refused (TableChanged, naming the file) unless they hash to
    `sha256`: the forecasts read are the ones recorded."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise TableChanged(f"{path} does not match the sha256 it was recorded with")
    return data


def read(path: str | Path, sha256: str) -> pd.DataFrame:
    """The table at `path`, as recorded with `sha256` (`verified_bytes`)."""
    return from_bytes(verified_bytes(path, sha256))
