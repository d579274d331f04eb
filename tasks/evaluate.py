"""Test-split evaluation in price units against naive baselines on the very same windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.preprocess import Preprocessing
from tasks.windows import make_dataset

MODEL, NAIVE, MOVING_AVERAGE = "model", "naive", "moving_average"


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error, in percent (prices are > 0, so it is defined)."""
    actual = np.asarray(actual, dtype=np.float64)
    return float(np.mean(np.abs((np.asarray(predicted) - actual) / actual)) * 100.0)


def metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "rmse": rmse(actual, predicted),
        "mae": mae(actual, predicted),
        "mape": mape(actual, predicted),
    }


def naive_forecast(close: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Tomorrow (and every day of the horizon) looks like the last close."""
    return close[anchors]


def moving_average_forecast(close: np.ndarray, anchors: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` closes up to and including the anchor day."""
    csum = np.concatenate([[0.0], np.cumsum(close)])
    lo = np.maximum(anchors + 1 - window, 0)
    return (csum[anchors + 1] - csum[lo]) / (anchors + 1 - lo)


def predict_prices(model, spec: Preprocessing, x: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Model forecasts for the given anchors, mapped back to prices; shape (n, outputs)."""
    dummy = np.zeros((len(x), 1), dtype=np.float32)
    ds = make_dataset(x, dummy, anchors, spec.lookback, batch_size=256)
    scaled = model.predict(ds.map(lambda w, _t: w), verbose=0)
    return spec.target_scaler.inverse(scaled.reshape(len(anchors), -1))


def evaluate(
    model, spec: Preprocessing, arrays: dict, anchors: np.ndarray
) -> tuple[dict, pd.DataFrame]:
    """Metrics for the model and both baselines, plus the per-day predictions table."""
    close = arrays["close"]
    actual = arrays["y_price"][anchors, 0]
    forecasts = {
        MODEL: predict_prices(model, spec, arrays["x"], anchors)[:, 0],
        NAIVE: naive_forecast(close, anchors),
        MOVING_AVERAGE: moving_average_forecast(close, anchors, spec.horizon),
    }
    table = pd.DataFrame(
        {
            "anchor_date": pd.to_datetime(arrays["dates"][anchors]),
            "target_date": pd.to_datetime(arrays["dates"][anchors + spec.horizon]),
            "last_close": close[anchors],
            "actual": actual,
            **forecasts,
        }
    )
    return {name: metrics(actual, pred) for name, pred in forecasts.items()}, table


def verdict(results: dict[str, dict[str, float]]) -> str:
    """One honest sentence: does the model beat the naive last-close forecast on RMSE?"""
    model_rmse, naive_rmse = results[MODEL]["rmse"], results[NAIVE]["rmse"]
    skill = 1.0 - model_rmse / naive_rmse if naive_rmse > 0 else float("nan")
    if model_rmse < naive_rmse:
        return f"The model beats the naive last-close forecast (RMSE skill {skill:+.1%})."
    return (
        f"The model does NOT beat the naive last-close forecast (RMSE skill {skill:+.1%}): "
        "do not trade on it."
    )


def plot_loss(history: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], label=label)
    ax.set(title=title, xlabel="epoch", ylabel="MSE (scaled)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_forecast(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(table["target_date"], table["actual"], label="actual", color="black", lw=1.2)
    ax.plot(table["target_date"], table[MODEL], label="model", lw=1.2)
    ax.plot(table["target_date"], table[NAIVE], label="naive (last close)", lw=0.8, alpha=0.7)
    ax.set(title=title, xlabel="target day", ylabel="price")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
