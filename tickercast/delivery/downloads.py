"""What the page offers to download: rows as CSV, a version's test predictions as rows.

A bundle's predictions are read only when its manifest lists the file and its checksum
still matches, like its plots: a download is the file that was exported, or an error.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from tickercast import layout
from tickercast.delivery.bundle import checked_file


def _plain(value: object) -> object:
    """JSON- and CSV-ready: dates as ISO text, NaN as null, numpy scalars as Python."""
    if hasattr(value, "isoformat"):
        return value.isoformat()[:10] if "00:00:00" in value.isoformat() else value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def test_predictions(bundle_dir: Path) -> list[dict]:
    """The version's test-split predictions (its window table) as rows."""
    import pandas as pd

    data, _ = checked_file(bundle_dir, layout.PREDICTIONS_FILE)
    table = pd.read_parquet(io.BytesIO(data))
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def _flat(row: dict) -> dict:
    """A row for CSV: a quantile grid (`quantile_levels`, `quantiles`) as one column per
    level, q_0.025 ... q_0.975."""
    levels, values = row.get("quantile_levels"), row.get("quantiles")
    if not isinstance(levels, list) or not isinstance(values, list):
        return row
    flat = {k: v for k, v in row.items() if k not in ("quantile_levels", "quantiles")}
    flat.update({f"q_{level:g}": v for level, v in zip(levels, values, strict=False)})
    return flat


def to_csv(rows: list[dict]) -> str:
    """Rows as CSV, columns in first-seen order (a row without a column leaves it empty)."""
    rows = [_flat(row) for row in rows]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _plain(v) for k, v in row.items()})
    return out.getvalue()
