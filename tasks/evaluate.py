"""Evaluation a sceptic can sign: price-unit metrics, baselines on the very same windows,
split-conformal intervals, and the plots that go into the bundle.

Every forecaster is scored on exactly the test windows the model is scored on. The
baselines need nothing but the closes up to each window's last day (naive, drift, moving
averages) or the model's own scaled window (ridge, fitted on training windows only).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.preprocess import Preprocessing
from tasks.windows import gather_windows, make_dataset

MODEL, NAIVE, MOVING_AVERAGE = "model", "naive", "moving_average"
DRIFT, MOVING_AVERAGE_20, RIDGE = "drift", "moving_average_20", "ridge"
FORECASTERS = (MODEL, NAIVE, DRIFT, MOVING_AVERAGE, MOVING_AVERAGE_20, RIDGE)
LONG_MA_DAYS = 20
LEVELS = (0.8, 0.95)  # nominal coverage of the conformal intervals
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
# Lower is better for these; the promotion gate may use any of them.
LOWER_IS_BETTER = ("rmse", "mae", "mape", "smape", "mase")


# --------------------------------------------------------------------------- metrics


def _pair(actual, predicted) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(actual, dtype=np.float64).ravel()
    p = np.asarray(predicted, dtype=np.float64).ravel()
    if a.shape != p.shape:
        raise ValueError(f"actual has {a.size} values, predicted {p.size}")
    return a, p


def rmse(actual, predicted) -> float:
    a, p = _pair(actual, predicted)
    return float(np.sqrt(np.mean((p - a) ** 2)))


def mae(actual, predicted) -> float:
    a, p = _pair(actual, predicted)
    return float(np.mean(np.abs(p - a)))


def mape(actual, predicted) -> float:
    """Mean absolute percentage error, in percent (prices are > 0, so it is defined)."""
    a, p = _pair(actual, predicted)
    return float(np.mean(np.abs((p - a) / a)) * 100.0)


def smape(actual, predicted) -> float:
    """Symmetric MAPE in percent: mean of 2|F-A| / (|A|+|F|); a 0/0 term counts as 0."""
    a, p = _pair(actual, predicted)
    denom = np.abs(a) + np.abs(p)
    terms = np.divide(2.0 * np.abs(p - a), denom, out=np.zeros_like(a), where=denom > 0)
    return float(np.mean(terms) * 100.0)


def naive_scale(train_close) -> float:
    """In-sample one-step naive MAE on the training closes: MASE's denominator."""
    close = np.asarray(train_close, dtype=np.float64).ravel()
    if close.size < 2:
        raise ValueError("MASE needs at least two training closes")
    return float(np.mean(np.abs(np.diff(close))))


def mase(actual, predicted, scale) -> float:
    """MAE divided by the in-sample naive MAE (Hyndman & Koehler); < 1 beats it in-sample.

    `scale` is one number, or one per row of `actual` (rolling origin: each origin's own
    in-sample MAE); then it is the mean of the scaled errors |F - A| / scale_row.
    """
    if np.ndim(scale) == 0:
        return mae(actual, predicted) / scale if scale > 0 else float("nan")
    s = np.asarray(scale, dtype=np.float64).reshape(-1, 1)
    a = np.asarray(actual, dtype=np.float64).reshape(len(s), -1)
    p = np.asarray(predicted, dtype=np.float64).reshape(len(s), -1)
    if a.shape != p.shape:
        raise ValueError(f"actual has {a.size} values, predicted {p.size}")
    if not (s > 0).all():
        return float("nan")
    return float(np.mean(np.abs(p - a) / s))


def directional_accuracy(actual, predicted, last_close) -> float:
    """Percent of forecasts whose change from the last close has the actual change's sign.

    A forecast of "no change" (the naive one) calls no direction and scores only on days
    whose actual change is exactly zero, so naive sits near 0 here by construction.
    """
    last = np.asarray(last_close, dtype=np.float64).reshape(-1, 1)
    a = np.asarray(actual, dtype=np.float64).reshape(len(last), -1)
    p = np.asarray(predicted, dtype=np.float64).reshape(len(last), -1)
    return float(np.mean(_direction(p, last) == _direction(a, last)) * 100.0)


def _direction(values: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Sign of the change from the last close; rounding-level changes count as none."""
    change = values - last
    return np.where(np.abs(change) <= 1e-9 * np.abs(last), 0.0, np.sign(change))


def metrics(
    actual, predicted, last_close=None, scale: float | np.ndarray | None = None
) -> dict[str, float]:
    """Every metric the data allows: MASE needs the scale (one, or one per row), direction
    needs the last close."""
    out = {
        "rmse": rmse(actual, predicted),
        "mae": mae(actual, predicted),
        "mape": mape(actual, predicted),
        "smape": smape(actual, predicted),
    }
    if scale is not None:
        out["mase"] = mase(actual, predicted, scale)
    if last_close is not None:
        out["directional_accuracy"] = directional_accuracy(actual, predicted, last_close)
    return out


def skill(model_rmse: float, naive_rmse: float) -> float:
    """1 - RMSE_model / RMSE_naive: > 0 beats naive, 0 ties it, < 0 loses to it."""
    return 1.0 - model_rmse / naive_rmse if naive_rmse > 0 else float("nan")


def score_all(
    actual: np.ndarray, forecasts: dict[str, np.ndarray], last_close: np.ndarray, scale: float
) -> dict[str, dict[str, float]]:
    """Metrics per forecaster plus each one's skill against naive on the same windows."""
    results = {
        name: metrics(actual, pred, last_close=last_close, scale=scale)
        for name, pred in forecasts.items()
    }
    if NAIVE in results:
        for values in results.values():
            values["skill"] = skill(values["rmse"], results[NAIVE]["rmse"])
    return results


# --------------------------------------------------------------------------- targets


def target_weights(target: str, horizon: int, n_outputs: int) -> np.ndarray:
    """W (outputs x horizon) with target_j = sum_s W[j, s] * close[t + 1 + s].

    Lets every path forecaster (naive, drift, moving average) be scored against any
    price-level target: the mean of the next `horizon` closes, the close at t+h, or the
    vector of the next h closes.
    """
    if n_outputs == horizon and horizon > 1 and "mean" not in target:
        return np.eye(horizon)
    w = np.zeros((n_outputs, horizon))
    if n_outputs != 1:
        raise ValueError(f"target {target!r}: cannot map {n_outputs} outputs onto {horizon} days")
    if "mean" in target:
        w[0, :] = 1.0 / horizon
    else:
        w[0, -1] = 1.0
    return w


def check_targets(arrays: dict, anchors: np.ndarray, weights: np.ndarray) -> None:
    """Refuse to score against a target whose meaning `target_weights` got wrong."""
    close, y = arrays["close"], np.asarray(arrays["y_price"], dtype=np.float64)
    horizon = weights.shape[1]
    anchors = anchors[anchors + horizon < len(close)][:50]
    if len(anchors) == 0:
        return
    path = close[anchors[:, None] + np.arange(1, horizon + 1)]
    expected = path @ weights.T
    if not np.allclose(expected, y[anchors], rtol=1e-6, atol=1e-6):
        raise ValueError(
            "evaluate: the price targets are not a weighted sum of future closes as assumed; "
            "teach tasks.evaluate.target_weights this target"
        )


# --------------------------------------------------------------------------- baselines


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


def _ridge_design(x: np.ndarray, anchors: np.ndarray, lookback: int) -> np.ndarray:
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
    xs = _ridge_design(x, anchors["train"], lookback)
    ys = y[anchors["train"]]
    svd = np.linalg.svd(xs - xs.mean(axis=0), full_matrices=False)
    if len(anchors["val"]) == 0:
        return Ridge(1.0).fit(xs, ys, svd), 1.0
    xv = _ridge_design(x, anchors["val"], lookback)
    actual = np.asarray(arrays["y_price"], dtype=np.float64)[anchors["val"]]
    best = None
    for alpha in RIDGE_ALPHAS:
        model = Ridge(alpha).fit(xs, ys, svd)
        score = rmse(actual, to_prices(model.predict(xv), anchors["val"]))
        if best is None or score < best[0]:
            best = (score, alpha, model)
    return best[2], best[1]


# --------------------------------------------------------------------------- conformal


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


# --------------------------------------------------------------------------- evaluation


def scaled_to_prices(
    spec: Preprocessing, scaled: np.ndarray, last_close: np.ndarray | None = None
) -> np.ndarray:
    """Model outputs (scaled targets) back to prices with the training-fit scaler; the
    log-return targets also need each window's last close (tasks.preprocess.to_prices)."""
    from tasks.preprocess import to_prices

    scaled = np.asarray(scaled, dtype=np.float64)
    return to_prices(spec, scaled.reshape(len(scaled), -1), last_close)


def predict_prices(
    model,
    spec: Preprocessing,
    x: np.ndarray,
    anchors: np.ndarray,
    close: np.ndarray | None = None,
) -> np.ndarray:
    """Model forecasts for the given anchors, mapped back to prices; shape (n, outputs).
    `close` (per row) is needed only by log-return targets."""
    dummy = np.zeros((len(x), 1), dtype=np.float32)
    ds = make_dataset(x, dummy, anchors, spec.lookback, batch_size=256)
    scaled = model.predict(ds.map(lambda w, _t: w), verbose=0)
    last = None if close is None else np.asarray(close, dtype=np.float64)[anchors]
    return scaled_to_prices(spec, scaled.reshape(len(anchors), -1), last)


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


def evaluate_forecasts(
    spec: Preprocessing,
    arrays: dict,
    anchors: dict[str, np.ndarray],
    predict: Callable[[np.ndarray], np.ndarray],
) -> dict:
    """Score `predict` (anchors -> prices, shape (n, outputs)) and every baseline on the
    test windows; calibrate conformal intervals on the validation windows.

    Returns {"metrics", "table", "intervals", "mase_scale", "window", "up_share"}.
    """
    close = np.asarray(arrays["close"], dtype=np.float64)
    y_price = np.asarray(arrays["y_price"], dtype=np.float64).reshape(len(close), -1)
    test, val = np.asarray(anchors["test"]), np.asarray(anchors["val"])
    if len(test) == 0:
        raise ValueError("evaluate: the test split has no windows")
    n_out, horizon = y_price.shape[1], spec.horizon
    weights = target_weights(spec.target, horizon, n_out)
    check_targets(arrays, test, weights)
    actual = y_price[test]
    last = close[test]

    def project(paths: np.ndarray) -> np.ndarray:
        return paths @ weights.T

    ridge, alpha = fit_ridge(
        {**arrays, "y_price": y_price},
        anchors,
        spec.lookback,
        lambda scaled, a: scaled_to_prices(spec, scaled, close[a]),
    )
    model_test = np.asarray(predict(test), dtype=np.float64).reshape(len(test), -1)
    forecasts = {
        MODEL: model_test,
        NAIVE: project(flat_paths(naive_forecast(close, test), horizon)),
        DRIFT: project(drift_paths(close, test, horizon)),
        MOVING_AVERAGE: project(flat_paths(moving_average_forecast(close, test, horizon), horizon)),
        MOVING_AVERAGE_20: project(
            flat_paths(moving_average_forecast(close, test, LONG_MA_DAYS), horizon)
        ),
        RIDGE: scaled_to_prices(
            spec, ridge.predict(_ridge_design(arrays["x"], test, spec.lookback)), last
        ),
    }
    scale = naive_scale(close[: spec.n_train])
    results = score_all(actual, forecasts, last, scale)

    intervals: dict[str, dict] = {}
    if len(val):
        val_pred = np.asarray(predict(val), dtype=np.float64).reshape(len(val), -1)
        intervals = calibrate(y_price[val], val_pred)
    table = pd.DataFrame(
        {
            "anchor_date": pd.to_datetime(arrays["dates"][test]),
            "target_date": pd.to_datetime(arrays["dates"][test + horizon]),
            "last_close": last,
            "actual": actual[:, 0],
            **{name: pred[:, 0] for name, pred in forecasts.items()},
        }
    )
    for j in range(1, n_out):  # vector targets: one column per further output
        table[f"actual_{j + 1}"] = actual[:, j]
        table[f"{MODEL}_{j + 1}"] = model_test[:, j]
    for key, cal in intervals.items():
        q = np.asarray(cal["q"], dtype=np.float64)
        q = np.where(np.isfinite(q), q, np.nan)  # too few calibration windows: no band
        lo, hi = interval(model_test, q)
        cal["coverage_test"] = coverage(actual, lo, hi) if np.isfinite(q).all() else None
        table[f"lo_{key}"], table[f"hi_{key}"] = lo[:, 0], hi[:, 0]
    window = {
        "windows": int(len(test)),
        "first_anchor": str(arrays["dates"][test[0]]),
        "last_anchor": str(arrays["dates"][test[-1]]),
        "first_target": str(arrays["dates"][test[0] + 1]),
        "last_target": str(arrays["dates"][test[-1] + horizon]),
    }
    return {
        "metrics": clean(results),
        "table": table,
        "intervals": clean(intervals),
        "mase_scale": scale,
        "ridge_alpha": alpha,
        "window": window,
        "up_share": float(np.mean(actual[:, 0] > last) * 100.0),
    }


def evaluate(model, spec: Preprocessing, arrays: dict, anchors: dict[str, np.ndarray]) -> dict:
    """`evaluate_forecasts` for a Keras model on the preprocessed arrays."""
    return evaluate_forecasts(
        spec,
        arrays,
        anchors,
        lambda a: predict_prices(model, spec, arrays["x"], a, arrays["close"]),
    )


def verdict(results: dict[str, dict[str, float]]) -> str:
    """Plain sentences: does the model beat naive on RMSE, and which baselines beat it?"""
    model_rmse, naive_rmse = results[MODEL]["rmse"], results[NAIVE]["rmse"]
    s = skill(model_rmse, naive_rmse)
    if model_rmse < naive_rmse:
        text = f"The model beats the naive last-close forecast (RMSE skill {s:+.1%})."
    else:
        text = (
            f"The model does NOT beat the naive last-close forecast (RMSE skill {s:+.1%}): "
            "do not trade on it."
        )
    better = [
        name
        for name, values in results.items()
        if name not in (MODEL, NAIVE)
        and values.get("rmse") is not None
        and values["rmse"] < model_rmse
    ]
    if better:
        text += f" Baselines with a lower RMSE than the model: {', '.join(better)}."
    return text


def report_rows(results: dict[str, dict[str, float]]) -> list[dict]:
    """One row per forecaster for a table artifact, rounded, None where undefined."""
    return [
        {"forecaster": name, **{k: (None if v is None else round(v, 6)) for k, v in values.items()}}
        for name, values in results.items()
    ]


def markdown_table(results: dict[str, dict[str, float]]) -> list[str]:
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    lines = [
        "| forecaster | RMSE | MAE | MAPE % | sMAPE % | MASE | direction % | skill vs naive |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in results.items():
        lines.append(
            f"| {name} | {fmt(v.get('rmse'), '.4f')} | {fmt(v.get('mae'), '.4f')} | "
            f"{fmt(v.get('mape'), '.2f')} | {fmt(v.get('smape'), '.2f')} | "
            f"{fmt(v.get('mase'), '.3f')} | {fmt(v.get('directional_accuracy'), '.1f')} | "
            f"{fmt(v.get('skill'), '+.1%')} |"
        )
    return lines


# --------------------------------------------------------------------------- plots


def _save(fig, path: Path) -> None:
    """PNG via a temporary file renamed into place; the figure is closed either way."""
    import matplotlib.pyplot as plt

    from tasks.atomic import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


# Matplotlib's pyplot state (font cache, mathtext parser, figure manager) is not
# thread-safe, and tickers' evaluate steps run in parallel threads: one figure at a time.
_PLOT_LOCK = threading.RLock()


def _one_at_a_time(draw):
    @functools.wraps(draw)
    def locked(*args, **kwargs):
        with _PLOT_LOCK:
            return draw(*args, **kwargs)

    return locked


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@_one_at_a_time
def plot_loss(history: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], label=label)
    ax.set(title=title, xlabel="epoch", ylabel="MSE (scaled)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


@_one_at_a_time
def plot_forecast(table: pd.DataFrame, path: Path, title: str) -> None:
    """Forecast vs actual, with the conformal bands when the table has them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    dates = table["target_date"]
    for key, alpha in (("95", 0.15), ("80", 0.3)):
        if f"lo_{key}" in table and table[f"lo_{key}"].notna().all():
            ax.fill_between(
                dates,
                table[f"lo_{key}"],
                table[f"hi_{key}"],
                alpha=alpha,
                color="tab:blue",
                lw=0,
                label=f"{key}% conformal interval",
            )
    ax.plot(dates, table["actual"], label="actual", color="black", lw=1.2)
    ax.plot(dates, table[MODEL], label="model", color="tab:blue", lw=1.2)
    ax.plot(dates, table[NAIVE], label="naive (last close)", color="tab:orange", lw=0.8, alpha=0.8)
    ax.set(title=title, xlabel="target day", ylabel="price")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    _save(fig, path)


@_one_at_a_time
def plot_residuals(table: pd.DataFrame, path: Path, title: str) -> None:
    """Histogram of test residuals (forecast - actual, prices): model against naive."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    model_res = table[MODEL] - table["actual"]
    naive_res = table[NAIVE] - table["actual"]
    bins = np.histogram_bin_edges(np.concatenate([model_res, naive_res]), bins=40)
    ax.hist(naive_res, bins=bins, alpha=0.5, label="naive", color="tab:orange")
    ax.hist(model_res, bins=bins, alpha=0.6, label="model", color="tab:blue")
    ax.axvline(0, color="black", lw=0.8)
    ax.set(title=title, xlabel="forecast - actual (price)", ylabel="windows")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


@_one_at_a_time
def plot_folds(folds: list[dict], path: Path, title: str, metric: str = "rmse") -> None:
    """Per-fold `metric` of every forecaster, grouped by fold."""
    plt = _pyplot()
    names = list(folds[0]["metrics"]) if folds else []
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(names), 1)
    xs = np.arange(len(folds))
    for i, name in enumerate(names):
        values = [f["metrics"][name].get(metric) or np.nan for f in folds]
        ax.bar(xs + i * width, values, width, label=name)
    ax.set_xticks(xs + width * (len(names) - 1) / 2)
    ax.set_xticklabels([f"fold {f['fold']}\n{f['test_first_target']}" for f in folds], fontsize=8)
    ax.set(title=title, ylabel=f"{metric.upper()} (price)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------------- files


def evaluation_summary(ev: dict) -> dict:
    """The JSON-ready part of an evaluation (what metadata.json and the gate read)."""
    return clean(
        {
            "metrics": ev["metrics"],
            "verdict": verdict(ev["metrics"]),
            "intervals": ev["intervals"],
            "evaluation": {
                "window": ev["window"],
                "mase_scale": ev["mase_scale"],
                "ridge_alpha": ev["ridge_alpha"],
                "up_share": ev["up_share"],
            },
        }
    )


def write_evaluation(out_dir: Path, ev: dict, history: dict, ticker: str) -> dict[str, Path]:
    """predictions.parquet, metrics.json and the three plots of one evaluation."""
    from tasks.atomic import atomic_path, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "predictions": out_dir / "predictions.parquet",
        "metrics_json": out_dir / "metrics.json",
        "loss_png": out_dir / "loss.png",
        "forecast_png": out_dir / "forecast.png",
        "residuals_png": out_dir / "residuals.png",
    }
    with atomic_path(paths["predictions"]) as tmp:
        ev["table"].to_parquet(tmp, index=False)
    write_json(paths["metrics_json"], evaluation_summary(ev))
    plot_loss(history, paths["loss_png"], f"{ticker}: training loss")
    plot_forecast(ev["table"], paths["forecast_png"], f"{ticker}: test-split forecast vs actual")
    plot_residuals(ev["table"], paths["residuals_png"], f"{ticker}: test residuals")
    return paths
