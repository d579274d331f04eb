"""Evaluation a sceptic can sign: the model and every baseline scored in prices on the very
same test windows, with split-conformal intervals calibrated on the validation windows.

Every forecaster is scored on exactly the test windows the model is scored on; the
baselines (every point forecaster of `tickercast.evaluation.baseline_registry`) see
nothing the model may not: at each test window the closes up to its last day, or the
model's own training and validation windows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from tickercast.evaluation.baseline_registry import (
    InputsBaseline,
    PointBaseline,
    forecast_windows,
    of_kind,
)
from tickercast.evaluation.conformal import calibrate, coverage, interval, recent_volatility
from tickercast.evaluation.jsonsafe import clean
from tickercast.evaluation.metrics import naive_scale, score_all
from tickercast.evaluation.names import MODEL
from tickercast.modeling.preprocess import Preprocessing
from tickercast.modeling.windows import make_dataset, predict_dataset
from tickercast.significance import LEVEL, compare

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
            "teach tickercast.evaluation.evaluate.target_weights this target"
        )


# --------------------------------------------------------------------------- evaluation


def scaled_to_prices(
    spec: Preprocessing, scaled: np.ndarray, last_close: np.ndarray | None = None
) -> np.ndarray:
    """Model outputs (scaled targets) back to prices with the training-fit scaler; the
    log-return targets also need each window's last close
    (tickercast.modeling.preprocess.to_prices)."""
    from tickercast.modeling.preprocess import to_prices

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
    scaled = predict_dataset(model, ds)
    last = None if close is None else np.asarray(close, dtype=np.float64)[anchors]
    return scaled_to_prices(spec, scaled.reshape(len(anchors), -1), last)


def add_significance(
    results: dict[str, dict], actual: np.ndarray, forecasts: dict[str, np.ndarray], horizon: int
) -> None:
    """Per other forecaster, the Diebold-Mariano test of the model against it on the same
    windows (squared errors, HLN correction, overlapping h-step errors): `dm_p` (two-sided)
    and `dm_verdict` (the model is "better" / "worse" / "indistinguishable" at 5%)."""
    others = {name: pred for name, pred in forecasts.items() if name != MODEL}
    for name, test in compare(actual, forecasts[MODEL], others, horizon, level=LEVEL).items():
        results[name]["dm_p"] = test["p_value"]
        results[name]["dm_verdict"] = test["verdict"]


def baseline_forecasts(
    spec: Preprocessing, arrays: dict, anchors: dict[str, np.ndarray], weights: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Every registered point baseline at the test windows, in target prices (n, outputs),
    and what each one was: its description, parameters and fitted values."""
    close = np.asarray(arrays["close"], dtype=np.float64)
    test, horizon = np.asarray(anchors["test"]), spec.horizon
    forecasts: dict[str, np.ndarray] = {}
    record: dict[str, dict] = {}
    for entry in of_kind("point"):
        record[entry.name] = {
            "description": entry.describe(horizon=horizon),
            "params": entry.settings(),
        }
        if isinstance(entry, PointBaseline):
            paths = forecast_windows(entry.name, close, test, horizon)
            forecasts[entry.name] = paths @ weights.T
        elif isinstance(entry, InputsBaseline):
            predict, fitted = entry.fit(
                arrays,
                anchors,
                spec.lookback,
                lambda scaled, a: scaled_to_prices(spec, scaled, close[a]),
            )
            forecasts[entry.name] = np.asarray(predict(test), dtype=np.float64)
            record[entry.name]["params"] = fitted
    return forecasts, record


def evaluate_forecasts(
    spec: Preprocessing,
    arrays: dict,
    anchors: dict[str, np.ndarray],
    predict: Callable[[np.ndarray], np.ndarray],
) -> dict:
    """Score `predict` (anchors -> prices, shape (n, outputs)) and every baseline on the
    test windows; calibrate conformal intervals on the validation windows.

    Returns {"metrics", "table", "intervals", "mase_scale", "baselines", "window",
    "up_share"}.
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

    model_test = np.asarray(predict(test), dtype=np.float64).reshape(len(test), -1)
    baselines, described = baseline_forecasts(
        spec, {**arrays, "y_price": y_price}, anchors, weights
    )
    forecasts = {MODEL: model_test, **baselines}
    scale = naive_scale(close[: spec.n_train])
    results = score_all(actual, forecasts, last, scale)
    add_significance(results, actual, forecasts, horizon)

    intervals: dict[str, dict] = {}
    if len(val):
        val_pred = np.asarray(predict(val), dtype=np.float64).reshape(len(val), -1)
        intervals = calibrate(y_price[val], val_pred, scale=recent_volatility(close, val))
    test_vol = recent_volatility(close, test)
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
        lo, hi = interval(model_test, q, test_vol)
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
        "baselines": clean(described),
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
