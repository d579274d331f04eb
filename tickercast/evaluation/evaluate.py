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

from tickercast.choices import BAND
from tickercast.evaluation import distribution as dist
from tickercast.evaluation import window_table
from tickercast.evaluation.baseline_registry import (
    InputsBaseline,
    PointBaseline,
    distribution_quantiles,
    forecast_windows,
    of_kind,
)
from tickercast.evaluation.conformal import calibrate, coverage, interval, recent_volatility
from tickercast.evaluation.distribution import target_weights
from tickercast.evaluation.jsonsafe import clean
from tickercast.evaluation.metrics import naive_scale, score_all
from tickercast.evaluation.names import MODEL
from tickercast.modeling.preprocess import Preprocessing
from tickercast.modeling.windows import predict_windows
from tickercast.significance import LEVEL, compare

# --------------------------------------------------------------------------- targets


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
            "teach tickercast.evaluation.distribution.target_weights this target"
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
    scaled = predict_windows(model, x, anchors, spec.lookback)
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


QuantileFn = Callable[[np.ndarray], np.ndarray]  # anchors -> (n, outputs, len(QUANTILES))


def distribution_evaluation(
    spec: Preprocessing,
    arrays: dict,
    anchors: dict[str, np.ndarray],
    medians: tuple[np.ndarray, np.ndarray],
    predict_quantiles: QuantileFn | None = None,
    band: str = BAND,
) -> tuple[dict, np.ndarray | None, dict[str, np.ndarray]]:
    """The model's distribution against every distribution baseline on the test windows,
    all around the model's median (`medians`: its point forecasts at the validation and
    the test windows) and calibrated on the validation windows; the GARCH fits read the
    training rows (the network's fit). The model's grid is `predict_quantiles`' (a
    quantile head, in prices), else the band it ships (`band`, `dist.model_band`: fit on
    the training rows, calibrated on the validation windows) on the grid.

    Returns the JSON-ready record (`levels`, `model`, `metrics`, `verdicts`, `baselines`,
    `failed`), the model's test grid (None when there are no validation windows) and
    every forecaster's per-origin CRPS."""
    close = np.asarray(arrays["close"], dtype=np.float64)
    y_price = np.asarray(arrays["y_price"], dtype=np.float64).reshape(len(close), -1)
    test, val = np.asarray(anchors["test"]), np.asarray(anchors["val"])
    val_pred, model_test = medians
    if len(val) == 0:
        return {"levels": list(dist.GRID), "note": "no validation windows: no bands"}, None, {}
    weights = target_weights(spec.target, spec.horizon, y_price.shape[1])
    calibration = (val, y_price[val], val_pred)
    bands, failed = {}, {}
    for entry in of_kind("distribution"):
        try:
            bands |= distribution_quantiles(
                [entry.name], close, weights, calibration, (test, model_test), spec.n_train - 1
            )
        except (ValueError, np.linalg.LinAlgError, RuntimeError) as exc:  # e.g. a flat series
            failed[entry.name] = f"{type(exc).__name__}: {exc}"
    if predict_quantiles is not None:
        grid = dist.sort_quantiles(np.asarray(predict_quantiles(test), dtype=np.float64))
        model = {"form": "network"}
    else:  # the band it ships, around the model's median
        fit_rows = (0, spec.n_train - 1)
        grid, record = dist.model_band(
            band, close, weights, calibration, (test, model_test), fit_rows, spec.lookback
        )
        model = {"form": band, "calibration": record}
    grid = grid.reshape(len(test), y_price.shape[1], len(dist.GRID))
    judged = dist.judge(y_price[test], grid, bands, spec.horizon, MODEL)
    crps = judged.pop("crps")
    described = {e.name: e.describe(horizon=spec.horizon) for e in of_kind("distribution")}
    record = {"levels": list(dist.GRID), "model": model, **judged, "baselines": described}
    return {**record, "failed": failed}, grid, crps


def evaluate_forecasts(
    spec: Preprocessing,
    arrays: dict,
    anchors: dict[str, np.ndarray],
    predict: Callable[[np.ndarray], np.ndarray],
    predict_quantiles: QuantileFn | None = None,
    band: str = BAND,
) -> dict:
    """Score `predict` (anchors -> prices (n, outputs)) and every baseline on the test
    windows, calibrate intervals on the validation windows and judge the model's
    distribution (`predict_quantiles`: anchors -> its grid in prices; absent: the band it
    ships, `band`) against every distribution baseline around the same median. A fitted
    band's intervals are its grid's levels (`dist.band_intervals`): what predict serves.
    Returns {"metrics", "table", "intervals", "distribution", "mase_scale", "baselines",
    "window", "up_share"}."""
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

    val_pred, intervals = _validation_intervals(predict, y_price, close, val)
    medians = (val_pred, model_test)
    distribution, grid, crps = distribution_evaluation(
        spec, {**arrays, "y_price": y_price}, anchors, medians, predict_quantiles, band
    )
    table = _forecast_table(arrays, test, horizon, last, actual, forecasts)
    shipped = dist.band_intervals(distribution.get("model") or {}, grid, actual)
    if shipped:  # a fitted band's intervals are its grid's levels
        intervals = shipped
        _add_grid_interval_columns(table, grid)
    else:
        _add_interval_columns(table, intervals, model_test, actual, recent_volatility(close, test))
    _add_distribution_columns(table, grid, crps)
    window = _test_window(arrays["dates"], test, horizon)
    return {
        "metrics": clean(results),
        "table": table,
        "intervals": clean(intervals),
        "distribution": clean(distribution),
        "mase_scale": scale,
        "baselines": clean(described),
        "window": window,
        "up_share": float(np.mean(actual[:, 0] > last) * 100.0),
    }


def _validation_intervals(
    predict: Callable[[np.ndarray], np.ndarray], y_price: np.ndarray, close, val: np.ndarray
) -> tuple[np.ndarray, dict[str, dict]]:
    """The model's validation forecasts (n, outputs) and the 20-day-volatility conformal
    intervals calibrated on them ({} without validation windows)."""
    if not len(val):
        return np.zeros((0, y_price.shape[1])), {}
    val_pred = np.asarray(predict(val), dtype=np.float64).reshape(len(val), -1)
    return val_pred, calibrate(y_price[val], val_pred, scale=recent_volatility(close, val))


def _forecast_table(
    arrays: dict,
    test: np.ndarray,
    horizon: int,
    last: np.ndarray,
    actual: np.ndarray,
    forecasts: dict[str, np.ndarray],
) -> pd.DataFrame:
    """One row per test window: dates, last close, actual and every forecaster's outputs
    (`tickercast.evaluation.window_table` names the columns)."""
    table = pd.DataFrame(
        {
            "anchor_date": pd.to_datetime(arrays["dates"][test]),
            "target_date": pd.to_datetime(arrays["dates"][test + horizon]),
            "last_close": last,
            "actual": actual[:, 0],
            **{name: pred[:, 0] for name, pred in forecasts.items()},
        }
    )
    for j in range(1, actual.shape[1]):  # vector targets: every forecaster's further outputs
        table[f"actual_{j + 1}"] = actual[:, j]
        for name, pred in forecasts.items():
            table[f"{name}_{j + 1}"] = pred[:, j]
    return table


def _add_interval_columns(
    table: pd.DataFrame,
    intervals: dict[str, dict],
    model_test: np.ndarray,
    actual: np.ndarray,
    test_vol: np.ndarray,
) -> None:
    """Apply each calibrated band to the test windows: its test coverage into `intervals`,
    its first output's bounds into `table`."""
    for key, cal in intervals.items():
        q = np.asarray(cal["q"], dtype=np.float64)
        q = np.where(np.isfinite(q), q, np.nan)  # too few calibration windows: no band
        lo, hi = interval(model_test, q, test_vol)
        cal["coverage_test"] = coverage(actual, lo, hi) if np.isfinite(q).all() else None
        table[f"lo_{key}"], table[f"hi_{key}"] = lo[:, 0], hi[:, 0]


def _add_grid_interval_columns(table: pd.DataFrame, grid: np.ndarray) -> None:
    """The shipped band's 80%/95% bounds of the first output (its grid's levels)."""
    for key, (lower, upper) in dist.interval_bounds(grid).items():
        table[f"lo_{key}"], table[f"hi_{key}"] = lower[:, 0], upper[:, 0]


def _add_distribution_columns(
    table: pd.DataFrame, grid: np.ndarray | None, crps: dict[str, np.ndarray]
) -> None:
    """The model's quantile grid of every output (in prices; what the gate reads) and each
    forecaster's per-origin CRPS, which pooled tests read."""
    if grid is not None:
        for column, values in window_table.grid_columns(grid).items():
            table[column] = values
    for name, values in crps.items():
        table[f"crps_{name}"] = values


def _test_window(days: np.ndarray, test: np.ndarray, horizon: int) -> dict:
    """Which anchors and targets the test windows span, for the report."""
    return {
        "windows": int(len(test)),
        "first_anchor": str(days[test[0]]),
        "last_anchor": str(days[test[-1]]),
        "first_target": str(days[test[0] + 1]),
        "last_target": str(days[test[-1] + horizon]),
    }


def evaluate(
    model,
    spec: Preprocessing,
    arrays: dict,
    anchors: dict[str, np.ndarray],
    predict_quantiles: QuantileFn | None = None,
    band: str = BAND,
) -> dict:
    """`evaluate_forecasts` for a Keras model on the preprocessed arrays (`predict_quantiles`:
    the model's quantile grid in prices, when it has a quantile head; `band`: the band it
    ships otherwise)."""
    return evaluate_forecasts(
        spec,
        arrays,
        anchors,
        lambda a: predict_prices(model, spec, arrays["x"], a, arrays["close"]),
        predict_quantiles,
        band,
    )
