"""Knowing when it knows nothing: shrink a network's forecast toward the last close.

Daily prices are close to a random walk, so a network often has no skill over "tomorrow
looks like today"; its forecast is then naive plus noise. For a target relative to the
last close (`*_log_return`), "no change" is one fixed point in the scaled output space,
y0 = scaled(log return 0). The shrunk forecast is

    y = y0 + alpha * (network(x) - y0),   alpha in [0, 1]

with alpha the least-squares fit on the validation windows (no test row is seen), kept
only when the shrunk forecast is *significantly* better than naive there: a one-sided
Diebold-Mariano test (overlapping h-step windows, HLN correction) at 5%. Otherwise alpha
is 0 and the exported model forecasts the last close: a network without demonstrated skill
adds no noise. On daily prices that is the common case; on a series with real structure
(the sine wave, an AR process) the test passes and alpha is near 1.

alpha is written into the network's final Dense layer (kernel * alpha, bias * alpha +
(1 - alpha) * y0), so the saved model.keras, the SavedModel, evaluation,
`predict` and `serve` all apply exactly the same forecast. Price-level targets have no
fixed naive point in the output space and are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FORECAST_LAYER = "forecast"  # the family's final Dense layer (tickercast.modeling.models)


@dataclass(frozen=True)
class NoChange:
    """The scaled model output meaning "no change from the last close" (one value per
    output), and the target's horizon (consecutive windows share horizon - 1 days)."""

    output: np.ndarray
    horizon: int


def naive_output(spec: Any) -> NoChange | None:
    """What "no change" is in the model's output space, or None for a price-level target."""
    if not str(spec.target).endswith("_log_return"):
        return None
    width = len(np.atleast_1d(spec.target_scaler.min))
    output = spec.target_scaler.transform(np.zeros((1, width))).reshape(width)
    return NoChange(output, int(spec.horizon))


def fit_alpha(
    actual: np.ndarray,
    predicted: np.ndarray,
    y0: np.ndarray,
    horizon: int = 1,
    level: float = 0.05,
) -> dict[str, float]:
    """alpha in [0, 1] for actual ~ y0 + alpha * (predicted - y0): the least-squares value
    when the shrunk forecast beats naive on these windows by a one-sided DM test at
    `level`, else 0; with the validation MSE (scaled) of naive, network and shrunk."""
    from tickercast.significance import dm_test

    actual = np.asarray(actual, dtype=np.float64).reshape(len(actual), -1)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(len(predicted), -1)
    y0 = np.asarray(y0, dtype=np.float64).reshape(1, -1)
    a, p = actual - y0, predicted - y0
    keep = np.isfinite(a).all(axis=1) & np.isfinite(p).all(axis=1)
    a, p = a[keep], p[keep]
    denominator = float(np.sum(p * p))
    fitted = float(np.clip(np.sum(a * p) / denominator, 0.0, 1.0)) if denominator > 0 else 0.0
    test = dm_test(a, fitted * p, np.zeros_like(a), horizon, alternative="less")
    skilled = fitted > 0 and np.isfinite(test.p_value) and test.p_value < level
    alpha = fitted if skilled else 0.0

    def mse(values: np.ndarray) -> float:
        return float(np.mean(values * values)) if len(values) else float("nan")

    return {
        "alpha": alpha,
        "alpha_least_squares": fitted,
        "dm_p_vs_naive": float(test.p_value) if np.isfinite(test.p_value) else None,
        "level": level,
        "windows": int(keep.sum()),
        "val_mse_naive": mse(a),
        "val_mse_network": mse(a - p),
        "val_mse_shrunk": mse(a - alpha * p),
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


def shrink_model(model: Any, predict_val: Any, actual_val: np.ndarray, naive: NoChange) -> dict:
    """Fit alpha on the validation windows (`predict_val()` gives the network's scaled
    forecasts for them) and fold it into `model`; returns what metadata.json records."""
    fitted = fit_alpha(actual_val, predict_val(), naive.output, naive.horizon)
    apply_alpha(model, fitted["alpha"], naive.output)
    return {
        "method": "least-squares factor toward the last close on the validation split, "
        "kept only when the shrunk forecast beats naive there (one-sided DM at 5%)",
        "naive_output": [float(v) for v in np.ravel(naive.output)],
        **fitted,
    }
