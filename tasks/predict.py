"""Inference from a bundle and raw prices, with the bundle's own (training-fit) scalers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.evaluate import predict_prices
from tasks.export import Bundle
from tasks.features import build_features


def model_inputs(bundle: Bundle, prices: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Scaled feature rows and their dates; features use only past days, so any longer
    history gives the same rows as training once past the warm-up."""
    frame = build_features(prices, bundle.spec.features)
    raw = frame[bundle.spec.features].to_numpy(dtype=np.float64)
    x = bundle.spec.feature_scaler.transform(raw).astype(np.float32)
    return x, np.array(frame["date"].astype(str).tolist(), dtype="datetime64[D]")


def predict_at(bundle: Bundle, prices: pd.DataFrame, anchor_dates) -> np.ndarray:
    """Forecast (in prices) for windows ending on each of `anchor_dates`."""
    x, dates = model_inputs(bundle, prices)
    wanted = np.asarray(pd.to_datetime(anchor_dates).values.astype("datetime64[D]"))
    positions = np.searchsorted(dates, wanted)
    found = (positions < len(dates)) & (dates[np.minimum(positions, len(dates) - 1)] == wanted)
    if not found.all():
        raise ValueError(f"no price row for anchor day(s) {wanted[~found][:3]}")
    if (positions < bundle.spec.lookback - 1).any():
        raise ValueError(f"fewer than lookback={bundle.spec.lookback} rows before an anchor day")
    return predict_prices(bundle.model, bundle.spec, x, positions)
