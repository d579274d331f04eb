"""Price-unit metrics and skill against naive: the numbers every forecaster is judged by
(evaluation, both backtest engines and the registry's promotion gate)."""

from __future__ import annotations

import numpy as np

from tickercast.choices import PromotionMetric, values
from tickercast.evaluation.names import NAIVE

# Lower is better for these: the promotion gate may rank by any of them.
LOWER_IS_BETTER = values(PromotionMetric)


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


def directional_accuracy(actual, predicted, last_close) -> float | None:
    """Percent of the direction calls that were right: of the forecasts whose change from
    the last close has a sign, the share whose sign the actual change had.

    A forecast equal to the last close calls no direction, so it is neither right nor
    wrong and is left out; a forecaster that never calls one (naive, a network shrunk to
    the last close) gets None, "not applicable", rather than 0%, which reads as always
    wrong. Compare with the share of up moves for what always calling "up" would score.
    """
    last = np.asarray(last_close, dtype=np.float64).reshape(-1, 1)
    a = np.asarray(actual, dtype=np.float64).reshape(len(last), -1)
    p = np.asarray(predicted, dtype=np.float64).reshape(len(last), -1)
    called = _direction(p, last)
    calls = called != 0
    if not calls.any():
        return None
    return float(np.mean(called[calls] == _direction(a, last)[calls]) * 100.0)


def _direction(values: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Sign of the change from the last close; rounding-level changes count as none."""
    change = values - last
    return np.where(np.abs(change) <= 1e-9 * np.abs(last), 0.0, np.sign(change))


def metrics(
    actual, predicted, last_close=None, scale: float | np.ndarray | None = None
) -> dict[str, float | None]:
    """Every metric the data allows: MASE needs the scale (one, or one per row), direction
    needs the last close (None where the forecaster calls no direction)."""
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
