"""Per-day model inputs computed from one ticker's prices, by name.

Every feature at day t uses only days <= t, so no feature can leak the future.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

VOLATILITY_WINDOW = 20


def _log_return(p: pd.DataFrame) -> pd.Series:
    return np.log(p["close"]).diff()


_BUILDERS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "close": lambda p: p["close"],
    "open": lambda p: p["open"],
    "high": lambda p: p["high"],
    "low": lambda p: p["low"],
    "volume": lambda p: p["volume"].astype(float),
    "log_volume": lambda p: np.log1p(p["volume"].astype(float)),
    "return": lambda p: p["close"].pct_change(),
    "log_return": _log_return,
    "volatility": lambda p: _log_return(p).rolling(VOLATILITY_WINDOW).std(),
    "day_of_week": lambda p: pd.to_datetime(p["date"]).dt.day_of_week.astype(float) / 4.0,
}


def build_features(prices: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Feature columns in the requested order; rows lost to warm-up (NaN) are dropped."""
    unknown = [n for n in names if n not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; valid: {sorted(_BUILDERS)}")
    prices = prices.reset_index(drop=True)
    frame = pd.DataFrame({name: _BUILDERS[name](prices) for name in names})
    frame.insert(0, "date", pd.to_datetime(prices["date"]).dt.date)
    frame["_close"] = prices["close"].astype(float)
    return frame.dropna().reset_index(drop=True)
