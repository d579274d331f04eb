"""Split-conformal prediction intervals: calibrated on validation residuals, checked by
their coverage on later windows (evaluation, rolling backtest, served forecasts)."""

from __future__ import annotations

import math

import numpy as np

LEVELS = (0.8, 0.95)  # nominal coverage of the conformal intervals


def conformal_scores(actual, predicted) -> np.ndarray:
    """Relative absolute residuals |A - F| / |F|: price errors scale with the price level,
    so a band in percent carries from validation to a later, differently priced test."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    return np.abs(a - p) / np.abs(p)


def conformal_quantile(scores, level: float) -> float:
    """The ceil((n+1)·level)-th smallest score: split-conformal's finite-sample quantile.
    inf when there are too few calibration scores for the level."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    rank = math.ceil((len(s) + 1) * level)
    return float(s[rank - 1]) if 1 <= rank <= len(s) else float("inf")


def interval(predicted, q) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predicted, dtype=np.float64)
    width = np.abs(p) * np.asarray(q, dtype=np.float64)
    return p - width, p + width


def coverage(actual, lo, hi) -> float:
    a = np.asarray(actual, dtype=np.float64)
    return float(np.mean((a >= lo) & (a <= hi)))


def level_key(level: float) -> str:
    return str(int(round(level * 100)))


def calibrate(val_actual: np.ndarray, val_pred: np.ndarray, levels=LEVELS) -> dict[str, dict]:
    """Per level: nominal coverage and one quantile per model output, from validation."""
    out = {}
    for level in levels:
        q = [
            conformal_quantile(conformal_scores(val_actual[:, j], val_pred[:, j]), level)
            for j in range(val_pred.shape[1])
        ]
        out[level_key(level)] = {"nominal": level, "q": q, "n_calibration": int(len(val_pred))}
    return out
