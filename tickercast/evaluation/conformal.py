"""Split-conformal prediction intervals: calibrated on validation residuals, checked by
their coverage on later windows (evaluation, rolling backtest, served forecasts).

Scores are log-space residuals divided by the recent volatility at each window's last day
(the standard deviation of the last VOLATILITY_DAYS daily log returns, the `volatility`
feature's definition): |log(A / F)| / vol. A band is then F * exp(+-q * vol): it widens
when the market does, and it stays a price (> 0) however wide it gets, where the linear
F * (1 +- q * vol) went below zero on volatile windows. Calibration and bands use the same
space (recorded as `space` with the quantiles), so the coverage stays honest. Bundles
calibrated before (no `space`) keep their linear bands, the lower bound cut at zero
(which only adds coverage: prices are never below zero)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tickercast.modeling.features import VOLATILITY_WINDOW

LEVELS = (0.8, 0.95)  # nominal coverage of the conformal intervals


VOLATILITY_DAYS = VOLATILITY_WINDOW  # the `volatility` feature's window
SCALE = "volatility"  # recorded with the quantiles: bands need each window's volatility
MIN_VOLATILITY = 1e-4  # a flat stretch of prices must not give a zero-width band
LOG_SPACE = "log"  # recorded with the quantiles: scores and bands in log prices
LINEAR_SPACE = "linear"  # bundles calibrated before LOG_SPACE (no `space` recorded)


def recent_volatility(close, rows) -> np.ndarray:
    """Per row: the standard deviation (ddof 1) of the last VOLATILITY_DAYS daily log
    returns up to and including that row's close (fewer at the start); causal. The same
    rolling window as the `volatility` feature, which it equals once the window is full."""
    returns = pd.Series(np.log(np.asarray(close, dtype=np.float64))).diff()
    vol = returns.rolling(VOLATILITY_DAYS, min_periods=2).std().to_numpy()
    vol = vol[np.asarray(rows, dtype=np.int64)]
    return np.where(np.isfinite(vol), np.maximum(vol, MIN_VOLATILITY), np.nan)


def _per_window(scale, values: np.ndarray) -> np.ndarray:
    """`scale` (one value per window, or None for 1) broadcast against `values`."""
    if scale is None:
        return np.ones(1)
    scale = np.asarray(scale, dtype=np.float64)
    return scale.reshape(-1, *([1] * (values.ndim - 1))) if values.ndim else scale


def conformal_scores(actual, predicted, scale=None) -> np.ndarray:
    """Log-space absolute residuals |log(A / F)| (per unit of `scale`, the windows' recent
    volatility): a band in percent carries to a later, differently priced test. inf where
    the forecast or the actual is not a positive price (no band of prices holds it)."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.abs(np.log(a) - np.log(p))
    scores = np.where((a > 0) & (p > 0), scores, np.inf)
    return scores / _per_window(scale, scores)


def conformal_quantile(scores, level: float) -> float:
    """The ceil((n+1)·level)-th smallest score: split-conformal's finite-sample quantile.
    inf when there are too few calibration scores for the level."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    rank = math.ceil((len(s) + 1) * level)
    return float(s[rank - 1]) if 1 <= rank <= len(s) else float("inf")


def interval(predicted, q, scale=None, space: str = LOG_SPACE) -> tuple[np.ndarray, np.ndarray]:
    """F * exp(-+q) (q times each window's volatility, when the quantiles were calibrated
    so): both bounds are prices > 0; NaN where the forecast is not a positive price.
    `space` LINEAR_SPACE: a legacy bundle's F -+ |F| * q, its lower bound cut at zero."""
    p = np.asarray(predicted, dtype=np.float64)
    width = np.asarray(q, dtype=np.float64) * _per_window(scale, p)
    if space == LINEAR_SPACE:
        return np.maximum(p - np.abs(p) * width, 0.0), p + np.abs(p) * width
    if space != LOG_SPACE:
        raise ValueError(
            f"unknown interval space {space!r}; known: {LOG_SPACE!r}, {LINEAR_SPACE!r}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = p * np.exp(-width), p * np.exp(width)
    positive = p > 0
    return np.where(positive, lo, np.nan), np.where(positive, hi, np.nan)


def coverage(actual, lo, hi) -> float:
    a = np.asarray(actual, dtype=np.float64)
    return float(np.mean((a >= lo) & (a <= hi)))


def level_key(level: float) -> str:
    return str(int(round(level * 100)))


def calibrate(
    val_actual: np.ndarray, val_pred: np.ndarray, levels=LEVELS, scale=None
) -> dict[str, dict]:
    """Per level: nominal coverage and one quantile per model output, from validation
    (`scale`: the validation windows' recent volatility, recorded as `scale`)."""
    out = {}
    for level in levels:
        q = [
            conformal_quantile(conformal_scores(val_actual[:, j], val_pred[:, j], scale), level)
            for j in range(val_pred.shape[1])
        ]
        out[level_key(level)] = {
            "nominal": level,
            "q": q,
            "n_calibration": int(len(val_pred)),
            "space": LOG_SPACE,
        }
        if scale is not None:
            out[level_key(level)]["scale"] = SCALE
    return out
