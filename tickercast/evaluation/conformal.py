"""Split-conformal prediction intervals: calibrated on validation residuals, checked by
their coverage on later windows (evaluation, rolling backtest, served forecasts).

Scores are relative residuals divided by the recent volatility at each window's last day
(the standard deviation of the last VOLATILITY_DAYS daily log returns, the `volatility`
feature's definition): |A - F| / (|F| * vol). A band is then F * (1 +- q * vol), so it
widens when the market does. Calm validation months no longer give bands too narrow for
a turbulent test (2020), which is where price-scaled bands lost their coverage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tickercast.modeling.features import VOLATILITY_WINDOW

LEVELS = (0.8, 0.95)  # nominal coverage of the conformal intervals


VOLATILITY_DAYS = VOLATILITY_WINDOW  # the `volatility` feature's window
SCALE = "volatility"  # recorded with the quantiles: bands need each window's volatility
MIN_VOLATILITY = 1e-4  # a flat stretch of prices must not give a zero-width band


def recent_volatility(close, rows) -> np.ndarray:
    """Per row: the standard deviation (ddof 1) of the last VOLATILITY_DAYS daily log
    returns up to and including that row's close (fewer at the start); causal. The same
    rolling window as the `volatility` feature, which it equals once the window is full."""
    returns = pd.Series(np.log(np.asarray(close, dtype=np.float64))).diff()
    vol = returns.rolling(VOLATILITY_DAYS, min_periods=2).std().to_numpy()
    vol = vol[np.asarray(rows, dtype=np.int64)]
    return np.where(np.isfinite(vol), np.maximum(vol, MIN_VOLATILITY), np.nan)


def _scaled(values: np.ndarray, scale) -> np.ndarray:
    if scale is None:
        return values
    scale = np.asarray(scale, dtype=np.float64)
    return values * (scale.reshape(-1, *([1] * (values.ndim - 1))) if values.ndim else scale)


def conformal_scores(actual, predicted, scale=None) -> np.ndarray:
    """Relative absolute residuals |A - F| / |F| (per unit of `scale`, the windows'
    recent volatility): a band in percent carries to a later, differently priced test."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    return np.abs(a - p) / _scaled(np.abs(p), scale)


def conformal_quantile(scores, level: float) -> float:
    """The ceil((n+1)·level)-th smallest score: split-conformal's finite-sample quantile.
    inf when there are too few calibration scores for the level."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    rank = math.ceil((len(s) + 1) * level)
    return float(s[rank - 1]) if 1 <= rank <= len(s) else float("inf")


def interval(predicted, q, scale=None) -> tuple[np.ndarray, np.ndarray]:
    """F -+ |F| * q (* each window's volatility, when the quantiles were calibrated so)."""
    p = np.asarray(predicted, dtype=np.float64)
    width = _scaled(np.abs(p) * np.asarray(q, dtype=np.float64), scale)
    return p - width, p + width


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
        out[level_key(level)] = {"nominal": level, "q": q, "n_calibration": int(len(val_pred))}
        if scale is not None:
            out[level_key(level)]["scale"] = SCALE
    return out
