"""The baselines' arithmetic (their names, descriptions and parameters are registered in
`tickercast.evaluation.baseline_registry`, the one place consumers look them up).

Every baseline that reads closes has two forms of one definition:

- `window_<name>(history, horizon, ...)`: one origin; `history` is its training window,
  closes s..o, and the result the next `horizon` closes. Obvious code, the specification;
  the retrain evaluation forecasts each test window with it.
- `rolling_<name>(close, rows, starts, horizon, ...)`: every origin at once (origin rows
  `rows`, training windows starting at `starts`), vectorised with prefix sums; backtests use
  it. tests/test_baselines.py holds both forms equal on every baseline, and
  bench/backtest_baselines.py measures the speed-up.

`ridge_inputs` reads the model's own scaled input windows instead (`fit_ridge`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from tickercast.choices import MA_WINDOW, RIDGE_ALPHA, RIDGE_LAGS
from tickercast.evaluation.metrics import rmse
from tickercast.modeling.windows import gather_windows

# The baselines' parameters' defaults are stated once, in choices (the backtest's config
# section offers them too, and sits below this module).
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # ridge_inputs: validation grid


class OriginRows(Protocol):
    """Rolling origins as `tickercast.folds.Origins` holds them (rows and window starts)."""

    rows: np.ndarray
    starts: np.ndarray


def _steps(horizon: int) -> np.ndarray:
    return np.arange(1, horizon + 1, dtype=np.float64)


def flat_paths(level: np.ndarray, horizon: int) -> np.ndarray:
    """One level per origin, held for every day of the horizon; shape (n, horizon)."""
    return np.repeat(np.asarray(level, dtype=np.float64)[:, None], horizon, axis=1)


def naive_forecast(close: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Tomorrow (and every day of the horizon) looks like the last close."""
    return np.asarray(close, dtype=np.float64)[anchors]


def moving_average_forecast(
    close: np.ndarray,
    anchors: np.ndarray,
    window: int | np.ndarray,
    starts: np.ndarray | int = 0,
) -> np.ndarray:
    """Mean of the last `window` closes up to and including each anchor, never reaching
    before the anchor's `starts` (its training window's first row): a longer window
    averages what there is."""
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(close, dtype=np.float64))])
    lo = np.maximum(anchors + 1 - window, starts)
    return (csum[anchors + 1] - csum[lo]) / (anchors + 1 - lo)


# --------------------------------------------------------------------------- one origin


def window_naive(history: np.ndarray, horizon: int) -> np.ndarray:
    return np.full(horizon, float(history[-1]))


def window_drift(history: np.ndarray, horizon: int) -> np.ndarray:
    """The line through the window's first and last close, walked on `horizon` days."""
    span = len(history) - 1
    slope = (history[-1] - history[0]) / span if span > 0 else 0.0
    return history[-1] + slope * _steps(horizon)


def window_mean(history: np.ndarray, horizon: int) -> np.ndarray:
    return np.full(horizon, float(np.mean(history)))


def window_moving_average(
    history: np.ndarray, horizon: int, ma_window: int = MA_WINDOW
) -> np.ndarray:
    return np.full(horizon, float(np.mean(history[-ma_window:])))


def window_moving_average_horizon(history: np.ndarray, horizon: int) -> np.ndarray:
    return window_moving_average(history, horizon, horizon)


def window_ridge(
    history: np.ndarray,
    horizon: int,
    ridge_lags: int = RIDGE_LAGS,
    ridge_alpha: float = RIDGE_ALPHA,
) -> np.ndarray:
    """Per day t of the window with `ridge_lags` returns behind it and `horizon` closes
    ahead inside it, regress the log return t -> t+h (h = 1..horizon) on the last
    `ridge_lags` daily log returns (newest first), standardised with the window's own mean
    and std (a constant column drops out), intercept free, penalty `ridge_alpha`; forecast
    from the window's last `ridge_lags` returns."""
    lt = np.log(np.asarray(history, dtype=np.float64))
    lr = np.diff(lt)  # lr[k] = lt[k+1] - lt[k]
    ts = np.arange(ridge_lags, len(lt) - horizon)
    xs = lr[ts[:, None] - 1 - np.arange(ridge_lags)]
    ys = lt[ts[:, None] + np.arange(1, horizon + 1)] - lt[ts][:, None]
    mu, sd = xs.mean(axis=0), xs.std(axis=0)
    keep = sd > 1e-6 * np.sqrt((xs**2).mean(axis=0)) + 1e-300
    safe = np.where(keep, sd, 1.0)
    model = Ridge(ridge_alpha).fit(np.where(keep, (xs - mu) / safe, 0.0), ys)
    z0 = np.where(keep, (lr[len(lr) - ridge_lags :][::-1] - mu) / safe, 0.0)
    return history[-1] * np.exp(model.predict(z0[None, :])[0])


# --------------------------------------------------------------------------- all origins


def rolling_naive(close: np.ndarray, rows: np.ndarray, starts: np.ndarray, horizon: int):
    return flat_paths(naive_forecast(close, rows), horizon)


def rolling_drift(close: np.ndarray, rows: np.ndarray, starts: np.ndarray, horizon: int):
    close = np.asarray(close, dtype=np.float64)
    span = rows - starts
    slope = np.divide(close[rows] - close[starts], span, out=np.zeros(len(rows)), where=span > 0)
    return close[rows][:, None] + slope[:, None] * _steps(horizon)


def rolling_mean(close: np.ndarray, rows: np.ndarray, starts: np.ndarray, horizon: int):
    return flat_paths(moving_average_forecast(close, rows, rows - starts + 1, starts), horizon)


def rolling_moving_average(
    close: np.ndarray,
    rows: np.ndarray,
    starts: np.ndarray,
    horizon: int,
    ma_window: int = MA_WINDOW,
):
    return flat_paths(moving_average_forecast(close, rows, ma_window, starts), horizon)


def rolling_moving_average_horizon(
    close: np.ndarray, rows: np.ndarray, starts: np.ndarray, horizon: int
):
    return rolling_moving_average(close, rows, starts, horizon, horizon)


def _log_close_design(close: np.ndarray, lags: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row t: the last `lags` daily log returns (newest first) and the log returns
    t -> t+h for h = 1..horizon; NaN where a row lacks them."""
    lc = np.log(np.asarray(close, dtype=np.float64))
    n = len(lc)
    x = np.full((n, lags), np.nan)
    for j in range(lags):  # x[t, j] = log c[t-j] - log c[t-j-1]
        x[lags:, j] = lc[lags - j : n - j] - lc[lags - j - 1 : n - j - 1]
    y = np.full((n, horizon), np.nan)
    for h in range(1, horizon + 1):
        y[: n - h, h - 1] = lc[h:] - lc[: n - h]
    return x, y


def _window_moments(x, y, lo, hi):
    """Means and (co)variances of x and y over rows [lo, hi) per origin, by prefix sums."""

    def total(a: np.ndarray) -> np.ndarray:
        p = np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0)])
        return p[hi] - p[lo]

    m = (hi - lo).astype(np.float64)
    sx = total(x) / m[:, None]
    sy = total(y) / m[:, None]
    sxx = total(x[:, :, None] * x[:, None, :]) / m[:, None, None]
    sxy = total(x[:, :, None] * y[:, None, :]) / m[:, None, None]
    cxx = sxx - sx[:, :, None] * sx[:, None, :]
    cxy = sxy - sx[:, :, None] * sy[:, None, :]
    return m, sx, sy, sxx, cxx, cxy


def rolling_ridge(
    close: np.ndarray,
    rows: np.ndarray,
    starts: np.ndarray,
    horizon: int,
    ridge_lags: int = RIDGE_LAGS,
    ridge_alpha: float = RIDGE_ALPHA,
) -> np.ndarray:
    """`window_ridge` at every origin at once: the sums every fit needs come from prefix
    sums over t, so each origin costs one small (lags x lags) solve."""
    if ridge_alpha <= 0:
        raise ValueError(f"ridge_alpha must be > 0, got {ridge_alpha}")
    close = np.asarray(close, dtype=np.float64)
    x, y = _log_close_design(close, ridge_lags, horizon)
    usable = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    xu, yu = np.where(usable[:, None], x, 0.0), np.where(usable[:, None], y, 0.0)
    lo = starts + ridge_lags  # first usable training day of each origin
    hi = rows - horizon + 1  # one past the last
    if (hi - lo < 2).any():
        raise ValueError(
            f"ridge: an origin has {int((hi - lo).min())} training windows (ridge_lags "
            f"{ridge_lags}, horizon {horizon}); it needs a longer training window"
        )
    m, sx, sy, sxx, cxx, cxy = _window_moments(xu, yu, lo, hi)
    var = np.einsum("kii->ki", cxx)
    constant = var <= 1e-12 * np.maximum(np.einsum("kii->ki", sxx), 1e-300)
    sd = np.where(constant, np.inf, np.sqrt(np.maximum(var, 0.0)))  # inf: the column drops out
    corr = cxx / (sd[:, :, None] * sd[:, None, :])
    a = m[:, None, None] * corr + ridge_alpha * np.eye(ridge_lags)
    b = m[:, None, None] * cxy / sd[:, :, None]
    beta = np.linalg.solve(a, b)  # (n, lags, horizon), standardised coefficients
    z = (x[rows] - sx) / sd
    return close[rows][:, None] * np.exp(sy + np.einsum("kl,klh->kh", z, beta))


def training_scale(close: np.ndarray, origins: OriginRows) -> np.ndarray:
    """MASE's denominator per origin: the in-sample MAE of the one-step naive forecast on
    the origin's own training window, mean |c_t - c_(t-1)| for t in s+1..o (Hyndman &
    Koehler). Every model is scaled by the same number at a given origin."""
    close = np.asarray(close, dtype=np.float64)
    steps = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(close)))])  # steps[i]: t=1..i
    o, s = origins.rows, origins.starts
    return (steps[o] - steps[s]) / (o - s)


# --------------------------------------------------------------------------- model inputs


def ridge_design(x: np.ndarray, anchors: np.ndarray, lookback: int) -> np.ndarray:
    """Each anchor's window of scaled features, flattened: one design row per anchor."""
    windows = gather_windows(x, anchors, lookback).astype(np.float64)
    return windows.reshape(len(anchors), -1)


class Ridge:
    """Closed-form ridge regression (SVD), intercept unpenalised; no scikit-learn needed."""

    def __init__(self, alpha: float):
        self.alpha = alpha

    def fit(self, xs: np.ndarray, ys: np.ndarray, svd=None) -> Ridge:
        self.x_mean, self.y_mean = xs.mean(axis=0), ys.mean(axis=0)
        u, s, vt = svd if svd is not None else np.linalg.svd(xs - self.x_mean, full_matrices=False)
        shrink = s / (s**2 + self.alpha)
        self.coef = vt.T @ (shrink[:, None] * (u.T @ (ys - self.y_mean)))
        return self

    def predict(self, xs: np.ndarray) -> np.ndarray:
        return (xs - self.x_mean) @ self.coef + self.y_mean


def fit_ridge(
    arrays: dict, anchors: dict[str, np.ndarray], lookback: int, to_prices: Callable
) -> tuple[Ridge, float]:
    """Ridge on the model's own scaled windows and scaled target: fit on training windows,
    alpha picked by validation RMSE in prices (the test split is never looked at).
    `to_prices(scaled, anchors)` maps its outputs to prices like the model's."""
    x, y = arrays["x"], np.asarray(arrays["y"], dtype=np.float64)
    xs = ridge_design(x, anchors["train"], lookback)
    ys = y[anchors["train"]]
    svd = np.linalg.svd(xs - xs.mean(axis=0), full_matrices=False)
    if len(anchors["val"]) == 0:
        return Ridge(1.0).fit(xs, ys, svd), 1.0
    xv = ridge_design(x, anchors["val"], lookback)
    actual = np.asarray(arrays["y_price"], dtype=np.float64)[anchors["val"]]
    best = None
    for alpha in RIDGE_ALPHAS:
        model = Ridge(alpha).fit(xs, ys, svd)
        score = rmse(actual, to_prices(model.predict(xv), anchors["val"]))
        if best is None or score < best[0]:
            best = (score, alpha, model)
    return best[2], best[1]


def fit_ridge_inputs(
    arrays: dict, anchors: dict[str, np.ndarray], lookback: int, to_prices: Callable
) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """`ridge_inputs` fitted (`fit_ridge`): its forecaster (anchors -> prices, like the
    model's) and the penalty validation chose."""
    model, alpha = fit_ridge(arrays, anchors, lookback, to_prices)

    def predict(at: np.ndarray) -> np.ndarray:
        return to_prices(model.predict(ridge_design(arrays["x"], at, lookback)), at)

    return predict, {"alpha": alpha}
