"""Knowing when it knows nothing: shrink a network's forecast toward the last close.

Daily prices are close to a random walk, so a network often has no skill over "tomorrow
looks like today"; its forecast is then naive plus noise. For a target relative to the
last close (`*_log_return`), "no change" is one fixed point in the scaled output space,
y0 = scaled(log return 0). The shrunk forecast is

    y = y0 + alpha * (network(x) - y0),   alpha in [0, 1]

with alpha the least-squares fit on the validation windows (no test row is seen): near 0
when the network's validation forecasts carry no information about the actual move, near
1 when they do. It is written into the network's final Dense layer (kernel * alpha,
bias * alpha + (1 - alpha) * y0), so the saved model.keras, the SavedModel, evaluation,
`predict` and `serve` all apply exactly the same forecast. Price-level targets have no
fixed naive point in the output space and are left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORECAST_LAYER = "forecast"  # the family's final Dense layer (tickercast.modeling.models)


def naive_output(spec: Any) -> np.ndarray | None:
    """The scaled model output that means "no change from the last close" (one value per
    output), or None where the target is a price level."""
    if not str(spec.target).endswith("_log_return"):
        return None
    width = len(np.atleast_1d(spec.target_scaler.min))
    return spec.target_scaler.transform(np.zeros((1, width))).reshape(width)


def fit_alpha(actual: np.ndarray, predicted: np.ndarray, y0: np.ndarray) -> dict[str, float]:
    """Least-squares alpha in [0, 1] for actual ~ y0 + alpha * (predicted - y0), with the
    validation MSE (scaled) of the naive, the network and the shrunk forecast."""
    actual = np.asarray(actual, dtype=np.float64).reshape(len(actual), -1)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(len(predicted), -1)
    y0 = np.asarray(y0, dtype=np.float64).reshape(1, -1)
    a, p = actual - y0, predicted - y0
    keep = np.isfinite(a).all(axis=1) & np.isfinite(p).all(axis=1)
    a, p = a[keep], p[keep]
    denominator = float(np.sum(p * p))
    alpha = float(np.clip(np.sum(a * p) / denominator, 0.0, 1.0)) if denominator > 0 else 0.0
    return {
        "alpha": alpha,
        "windows": int(keep.sum()),
        "val_mse_naive": float(np.mean(a * a)) if len(a) else float("nan"),
        "val_mse_network": float(np.mean((a - p) ** 2)) if len(a) else float("nan"),
        "val_mse_shrunk": float(np.mean((a - alpha * p) ** 2)) if len(a) else float("nan"),
    }


def apply_alpha(model: Any, alpha: float, y0: np.ndarray) -> None:
    """Fold the shrinkage into the final Dense layer, in place."""
    layer = model.get_layer(FORECAST_LAYER)
    kernel, bias = layer.get_weights()
    y0 = np.asarray(y0, dtype=np.float64).reshape(bias.shape)
    layer.set_weights(
        [
            (kernel * alpha).astype(kernel.dtype),
            (bias * alpha + (1.0 - alpha) * y0).astype(bias.dtype),
        ]
    )


def shrink_model(model: Any, predict_val: Any, actual_val: np.ndarray, y0: np.ndarray) -> dict:
    """Fit alpha on the validation windows (`predict_val()` gives the network's scaled
    forecasts for them) and fold it into `model`; returns what metadata.json records."""
    fitted = fit_alpha(actual_val, predict_val(), y0)
    apply_alpha(model, fitted["alpha"], y0)
    return {
        "method": "least-squares factor toward the last close, fit on the validation split",
        "naive_output": [float(v) for v in np.ravel(y0)],
        **fitted,
    }
