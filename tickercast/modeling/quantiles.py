"""A quantile head's distribution: conformalized on the validation split, mapped to prices.

Calibration is conformalized quantile regression (CQR, Romano, Patterson & Candes 2019),
one band at a time (95%, 90%, 80%, 50% on the QUANTILES grid), on the validation windows
in the scaled target space after shrinkage, with split conformal's finite-sample rank
ceil((n + 1) * level). Two forms:

- `relative` (the default): the score of a window is how many half-widths (median to the
  bound on y's side) y lies from the median; both half-widths are multiplied by Q, the
  conformal quantile of those scores. The band keeps the network's shape and width
  dynamics (a wide band stays wider than a narrow one), so it suits a spread that moves
  with volatility.
- `additive` (CQR as published): score max(q_lo - y, y - q_hi); the band is widened by Q.

Either is folded into the network's `quantile_calibration` layer (a factor: a lower-
triangular kernel over each side's steps; a shift: its bias), so the saved model.keras,
the evaluation, `predict` and the SavedModel all apply the very same calibrated
quantiles; a ReLU after it keeps every step non-negative, so calibrated quantiles cannot
cross either. The median (the point forecast) is left as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tickercast.choices import QUANTILES
from tickercast.modeling.models import CALIBRATION, MEDIAN, step_layout

METHODS = {
    "additive": "conformalized quantile regression (CQR) per band on the validation "
    "split: each band widened by the conformal quantile of max(lower - y, y - upper)",
    "relative": "conformalized quantile regression (CQR) per band on the validation "
    "split, relative: both half-widths of each band multiplied by the conformal quantile "
    "of the distance of y from the median in half-widths on its side",
}
FORM = "relative"


def band_levels() -> list[float]:
    """Nominal coverage of each band, innermost first (0.5, 0.8, 0.9, 0.95 on the grid)."""
    return [QUANTILES[MEDIAN + r] - QUANTILES[MEDIAN - r] for r in range(1, MEDIAN + 1)]


def conformal_rank(n: int, level: float) -> int | None:
    """The rank (1-based) of split conformal's quantile; None with too few scores."""
    rank = int(np.ceil((n + 1) * level - 1e-9))
    return rank if 1 <= rank <= n else None


def cqr_shifts(scaled: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, list]:
    """Per output and band (innermost first), CQR's shift Q in the scaled target space
    ((outputs, bands); 0 where too few windows) and a note per band without enough."""
    q = np.asarray(scaled, dtype=np.float64)
    y = np.asarray(actual, dtype=np.float64).reshape(len(q), -1)
    keep = np.isfinite(y).all(axis=1) & np.isfinite(q).all(axis=(1, 2))
    q, y = q[keep], y[keep]
    shifts = np.zeros((y.shape[1], MEDIAN))
    notes = []
    for r, level in enumerate(band_levels(), start=1):
        rank = conformal_rank(len(y), level)
        if rank is None:
            notes.append(f"{level:.0%} band: {len(y)} validation windows are too few; uncalibrated")
            continue
        scores = np.maximum(q[:, :, MEDIAN - r] - y, y - q[:, :, MEDIAN + r])
        shifts[:, r - 1] = np.sort(scores, axis=0)[rank - 1]
    return shifts, notes


def cqr_factors(scaled: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, list]:
    """Per output and band, the factor Q by which both half-widths of the band (median to
    each bound) are multiplied so the band covers its level (CQR with scores relative to
    the half-width on the side of y: max((m - y) / lower half, (y - m) / upper half));
    1 where too few windows."""
    q = np.asarray(scaled, dtype=np.float64)
    y = np.asarray(actual, dtype=np.float64).reshape(len(q), -1)
    keep = np.isfinite(y).all(axis=1) & np.isfinite(q).all(axis=(1, 2))
    q, y = q[keep], y[keep]
    factors = np.ones((y.shape[1], MEDIAN))
    notes = []
    m = q[:, :, MEDIAN]
    for r, level in enumerate(band_levels(), start=1):
        rank = conformal_rank(len(y), level)
        if rank is None:
            notes.append(f"{level:.0%} band: {len(y)} validation windows are too few; uncalibrated")
            continue
        below = np.maximum(m - q[:, :, MEDIAN - r], TINY)
        above = np.maximum(q[:, :, MEDIAN + r] - m, TINY)
        scores = np.maximum((m - y) / below, (y - m) / above)
        factors[:, r - 1] = np.maximum(np.sort(scores, axis=0)[rank - 1], 0.0)
    return factors, notes


def step_kernel(factors: np.ndarray) -> np.ndarray:
    """The calibration layer's kernel: band r's offset (the sum of its side's steps up to
    r) becomes Q_r times itself, so step r maps to Q_r * (sum of steps <= r) - Q_(r-1) *
    (sum of steps < r): a lower-triangular map per output and side."""
    layout = step_layout(len(factors))
    kernel = np.zeros((len(layout), len(layout)))
    for k, (j, band, side) in enumerate(layout):
        for s, (j2, band2, side2) in enumerate(layout):
            if (j2, side2) != (j, side) or band2 > band:
                continue
            previous = factors[j, band - 2] if band > 1 else 0.0
            kernel[s, k] = factors[j, band - 1] - (previous if band2 < band else 0.0)
    return kernel


def step_biases(shifts: np.ndarray) -> np.ndarray:
    """The calibration layer's bias per step: band r's step gets Q_r - Q_(r-1), so the
    cumulative steps add exactly Q_r to band r on both sides."""
    increments = np.diff(np.concatenate([np.zeros((len(shifts), 1)), shifts], axis=1), axis=1)
    return np.array([increments[j, band - 1] for j, band, _ in step_layout(len(shifts))])


TINY = 1e-12  # a half-width this small is taken as this (scores stay finite)


def apply_factors(model: Any, factors: np.ndarray) -> None:
    """Write CQR's multiplicative factors into the calibration layer (kernel), in place."""
    layer = model.get_layer(CALIBRATION)
    kernel, bias = layer.get_weights()
    layer.set_weights([step_kernel(factors).astype(kernel.dtype), np.zeros_like(bias)])


def apply_calibration(model: Any, shifts: np.ndarray) -> None:
    """Write the shifts into the network's calibration layer, in place."""
    layer = model.get_layer(CALIBRATION)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, step_biases(shifts).astype(bias.dtype)])


def reset_calibration(model: Any) -> None:
    """The calibration layer as built: identity kernel, zero bias (no calibration)."""
    layer = model.get_layer(CALIBRATION)
    kernel, bias = layer.get_weights()
    layer.set_weights([np.eye(len(kernel), dtype=kernel.dtype), np.zeros_like(bias)])


def calibrate_model(
    model: Any, predict_val: Any, actual_val: np.ndarray, form: str | None = None
) -> dict:
    """CQR on the validation windows (`predict_val()`: the head's scaled quantiles there),
    folded into `model`: `relative` (each band's half-widths times a factor) or
    `additive` (each band widened by a shift); returns what metadata.json records (with
    validation coverage before and after, per band)."""
    form = form or FORM
    reset_calibration(model)
    before = np.asarray(predict_val(), dtype=np.float64)
    if form == "relative":
        values, notes = cqr_factors(before, actual_val)
        apply_factors(model, values)
    else:
        values, notes = cqr_shifts(before, actual_val)
        apply_calibration(model, values)
    after = np.asarray(predict_val(), dtype=np.float64)
    return {
        "method": METHODS[form],
        "form": form,
        "levels": [float(v) for v in QUANTILES],
        "bands": [round(v, 6) for v in band_levels()],
        "factors" if form == "relative" else "shifts_scaled": values.tolist(),
        "windows": int(len(before)),
        "val_coverage_before": band_coverage(before, actual_val),
        "val_coverage_after": band_coverage(after, actual_val),
        "notes": notes,
    }


def band_coverage(quantiles: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    """Share of windows (all outputs) inside each band, keyed by its nominal percent."""
    q = np.asarray(quantiles, dtype=np.float64)
    y = np.asarray(actual, dtype=np.float64).reshape(len(q), -1)
    out: dict[str, float | None] = {}
    for r, level in enumerate(band_levels(), start=1):
        inside = (y >= q[:, :, MEDIAN - r]) & (y <= q[:, :, MEDIAN + r])
        out[str(round(level * 100))] = float(np.mean(inside)) if inside.size else None
    return out


def quantiles_to_prices(spec: Any, scaled: np.ndarray, last_close=None) -> np.ndarray:
    """A head's scaled quantiles (n, outputs, len(QUANTILES)) in prices, with the
    training-fit target scaler (and each window's last close for a log-return target).
    Every step is increasing, so the grid stays ordered."""
    from tickercast.modeling.preprocess import is_log_return

    q = np.asarray(scaled, dtype=np.float64)
    q = q.reshape(len(q), -1, len(QUANTILES))
    lo, span = spec.target_scaler.offset_and_span()
    values = q * np.asarray(span)[None, :, None] + np.asarray(lo)[None, :, None]
    if not is_log_return(spec.target):
        return values
    if last_close is None:
        raise ValueError(f"target {spec.target!r}: quantiles in prices need the last close")
    last = np.asarray(last_close, dtype=np.float64).reshape(-1, 1, 1)
    return last * np.exp(values)


def predict_quantile_prices(model: Any, spec: Any, x: np.ndarray, anchors, close=None):
    """A quantile head's grid in prices at the windows ending on `anchors` rows:
    (n, outputs, len(QUANTILES)); what the evaluation's `predict_quantiles` hook takes."""
    from tickercast.modeling.windows import predict_windows

    anchors = np.asarray(anchors)
    scaled = predict_windows(model, x, anchors, spec.lookback)
    last = None if close is None else np.asarray(close, dtype=np.float64)[anchors]
    return quantiles_to_prices(spec, scaled, last)
