"""Every baseline a forecast must beat, in one place.

Evaluation's baselines need nothing but the closes up to each window's last day (naive,
drift, moving averages) or the model's own scaled window (ridge, fitted on training
windows only). The rolling-origin baselines are refit at every origin on its training
window alone, vectorised over all origins at once (`baseline_paths`); `reference_paths`
is the obvious per-origin loop, kept as the executable specification the vectorised code
is tested and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tickercast.choices import BASELINES
from tickercast.evaluation.metrics import rmse
from tickercast.folds import BacktestError, Origins
from tickercast.modeling.windows import gather_windows

RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


# --------------------------------------------------------------------------- test windows


def naive_forecast(close: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Tomorrow (and every day of the horizon) looks like the last close."""
    return np.asarray(close, dtype=np.float64)[anchors]


def moving_average_forecast(
    close: np.ndarray, anchors: np.ndarray, window: int | np.ndarray
) -> np.ndarray:
    """Mean of the last `window` closes up to and including the anchor day (`window` may
    be one per anchor: the backtest's `mean` is the mean of each origin's whole window)."""
    csum = np.concatenate([[0.0], np.cumsum(close)])
    lo = np.maximum(anchors + 1 - window, 0)
    return (csum[anchors + 1] - csum[lo]) / (anchors + 1 - lo)


def drift_slope(close: np.ndarray, anchors: np.ndarray, window: int | None = None) -> np.ndarray:
    """Average daily change over the history up to the anchor (textbook drift), or over the
    last `window` days when given; 0 where there is only one day."""
    close = np.asarray(close, dtype=np.float64)
    start = np.zeros_like(anchors) if window is None else np.maximum(anchors - window + 1, 0)
    span = anchors - start
    return np.divide(
        close[anchors] - close[start], span, out=np.zeros(len(anchors)), where=span > 0
    )


def drift_paths(
    close: np.ndarray, anchors: np.ndarray, horizon: int, window: int | None = None
) -> np.ndarray:
    """Drift forecast of the next `horizon` closes per anchor, shape (n, horizon)."""
    steps = np.arange(1, horizon + 1, dtype=np.float64)
    slope = drift_slope(close, anchors, window)
    return np.asarray(close, dtype=np.float64)[anchors][:, None] + slope[:, None] * steps


def flat_paths(level: np.ndarray, horizon: int) -> np.ndarray:
    return np.repeat(np.asarray(level, dtype=np.float64)[:, None], horizon, axis=1)


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


# --------------------------------------------------------------------------- rolling origins


def training_scale(close: np.ndarray, origins: Origins) -> np.ndarray:
    """MASE's denominator per origin: the in-sample MAE of the one-step naive forecast on
    the origin's own training window, mean |c_t - c_(t-1)| for t in s+1..o (Hyndman &
    Koehler). Every model is scaled by the same number at a given origin."""
    close = np.asarray(close, dtype=np.float64)
    steps = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(close)))])  # steps[i]: t=1..i
    o, s = origins.rows, origins.starts
    return (steps[o] - steps[s]) / (o - s)


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


def ridge_paths(close: np.ndarray, origins: Origins, lags: int, alpha: float) -> np.ndarray:
    """Ridge autoregression refit at every origin, all origins at once; (n, horizon) prices.

    At origin o with window [s, o]: the h-day log return from t is regressed on the last
    `lags` daily log returns at t, over the windows t in [s + lags, o - horizon] (inputs and
    targets inside the training window), features standardised with that window's own mean
    and std, intercept unpenalised, penalty `alpha`. The sums every fit needs come from
    prefix sums over t, so each origin costs one small (lags x lags) solve.
    """
    if alpha <= 0:
        raise BacktestError(f"ridge_alpha must be > 0, got {alpha}")
    close = np.asarray(close, dtype=np.float64)
    h_max = origins.horizon
    x, y = _log_close_design(close, lags, h_max)
    usable = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    xu, yu = np.where(usable[:, None], x, 0.0), np.where(usable[:, None], y, 0.0)

    def prefix(a: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0)])

    lo = origins.starts + lags  # first usable training window of each origin
    hi = origins.rows - h_max + 1  # one past the last
    m = (hi - lo).astype(np.float64)
    if (m < 2).any():
        raise BacktestError(
            f"ridge: an origin has {int(m.min())} training windows (ridge_lags {lags}, "
            f"horizon {h_max}); raise initial"
        )

    def window_sum(p: np.ndarray) -> np.ndarray:
        return p[hi] - p[lo]

    sx = window_sum(prefix(xu)) / m[:, None]
    sy = window_sum(prefix(yu)) / m[:, None]
    sxx = window_sum(prefix(xu[:, :, None] * xu[:, None, :])) / m[:, None, None]
    sxy = window_sum(prefix(xu[:, :, None] * yu[:, None, :])) / m[:, None, None]
    cxx = sxx - sx[:, :, None] * sx[:, None, :]
    cxy = sxy - sx[:, :, None] * sy[:, None, :]
    var = np.einsum("kii->ki", cxx)
    constant = var <= 1e-12 * np.maximum(np.einsum("kii->ki", sxx), 1e-300)
    sd = np.where(constant, np.inf, np.sqrt(np.maximum(var, 0.0)))  # inf: the column drops out
    corr = cxx / (sd[:, :, None] * sd[:, None, :])
    a = m[:, None, None] * corr + alpha * np.eye(lags)
    b = m[:, None, None] * cxy / sd[:, :, None]
    beta = np.linalg.solve(a, b)  # (n, lags, horizon), standardised coefficients
    z = (x[origins.rows] - sx) / sd
    pred = sy + np.einsum("kl,klh->kh", z, beta)
    return close[origins.rows][:, None] * np.exp(pred)


def baseline_paths(
    name: str,
    close: np.ndarray,
    origins: Origins,
    *,
    ma_window: int = 20,
    ridge_lags: int = 5,
    ridge_alpha: float = 1.0,
) -> np.ndarray:
    """A baseline's forecast of the next `horizon` closes at every origin; (n, horizon).

    Each one reads only its origin's training window, closes[s..o]:
    naive: c_o; drift: c_o + h (c_o - c_s) / (o - s), the textbook line through the
    window's first and last close; mean: the window's mean; moving_average: the mean of
    the last `ma_window` closes; ridge: `ridge_paths`.
    """
    close = np.asarray(close, dtype=np.float64)
    rows, h = origins.rows, origins.horizon
    if name == "naive":
        return flat_paths(naive_forecast(close, rows), h)
    if name == "drift":
        window = None if origins.window == "expanding" else origins.initial
        return drift_paths(close, rows, h, window)
    if name == "mean":
        return flat_paths(moving_average_forecast(close, rows, rows - origins.starts + 1), h)
    if name == "moving_average":
        if ma_window > origins.initial:
            raise BacktestError(
                f"moving_average window {ma_window} is longer than the first training "
                f"window (initial {origins.initial})"
            )
        return flat_paths(moving_average_forecast(close, rows, ma_window), h)
    if name == "ridge":
        return ridge_paths(close, origins, ridge_lags, ridge_alpha)
    raise BacktestError(f"unknown baseline {name!r}; valid: {list(BASELINES)}")


def reference_paths(
    name: str,
    close: np.ndarray,
    origins: Origins,
    *,
    ma_window: int = 20,
    ridge_lags: int = 5,
    ridge_alpha: float = 1.0,
) -> np.ndarray:
    """The same forecasts as `baseline_paths` by the obvious loop: per origin, slice the
    training window and fit the baseline on it alone (ridge: `Ridge`).
    Slow; it is the specification the vectorised code is tested and benchmarked against."""
    close = np.asarray(close, dtype=np.float64)
    h = origins.horizon
    steps = np.arange(1, h + 1, dtype=np.float64)
    out = np.empty((len(origins), h))
    for i, (o, s) in enumerate(zip(origins.rows, origins.starts, strict=True)):
        train = close[s : o + 1]  # all this origin may know
        if name == "naive":
            out[i] = train[-1]
        elif name == "drift":
            slope = (train[-1] - train[0]) / (len(train) - 1) if len(train) > 1 else 0.0
            out[i] = train[-1] + slope * steps
        elif name == "mean":
            out[i] = train.mean()
        elif name == "moving_average":
            out[i] = train[-ma_window:].mean()
        elif name == "ridge":
            lt = np.log(train)
            lr = np.diff(lt)  # lr[k] = lt[k+1] - lt[k]
            ts = np.arange(ridge_lags, len(train) - h)  # windows inside the training rows
            xs = lr[ts[:, None] - 1 - np.arange(ridge_lags)]  # newest return first
            ys = lt[ts[:, None] + np.arange(1, h + 1)] - lt[ts][:, None]
            mu, sd = xs.mean(axis=0), xs.std(axis=0)
            keep = sd > 1e-6 * np.sqrt((xs**2).mean(axis=0)) + 1e-300
            safe = np.where(keep, sd, 1.0)
            zs = np.where(keep, (xs - mu) / safe, 0.0)
            model = Ridge(ridge_alpha).fit(zs, ys)
            z0 = np.where(keep, (lr[len(lr) - ridge_lags :][::-1] - mu) / safe, 0.0)
            out[i] = train[-1] * np.exp(model.predict(z0[None, :])[0])
        else:
            raise BacktestError(f"unknown baseline {name!r}; valid: {list(BASELINES)}")
    return out
