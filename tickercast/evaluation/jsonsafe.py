"""JSON-ready numbers: metrics can be NaN or inf (a zero scale, too few windows), which
JSON, Prefect artifacts and the registry's gate cannot read; they become None here."""

from __future__ import annotations

import math

import numpy as np


def _json_number(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def clean(obj):
    """NaN/inf -> None so the result is valid JSON and a valid Prefect artifact."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return _json_number(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
