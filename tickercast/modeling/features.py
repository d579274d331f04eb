"""Per-day model inputs computed from one ticker's prices, by name.

Every feature at day t uses only days <= t, so no feature can leak the future.

The lake may hold rows whose open, high or low is missing (NaN): vendor quirks that ingest
marked instead of guessing (`tickercast.market.validate`). A feature that reads such a
field refuses a date range holding one (`check_fields`), naming the field and the first
and last affected day, rather than dropping those days from the middle of the series (a
window would then span a gap) or letting NaN reach a model.
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
# The price columns each feature reads (every one also needs the close, for the targets).
NEEDS: dict[str, tuple[str, ...]] = {
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "volume": ("volume",),
    "log_volume": ("volume",),
}


class MissingFieldError(ValueError):
    """A requested feature reads a field that is missing on some days of the range."""


def check_fields(prices: pd.DataFrame, names: list[str], who: str | None = None) -> None:
    """Refuse when a field that `names` need (close always) is missing in `prices`.

    `prices` are the rows of the selected date range; the message names `who` (e.g.
    "ticker AAPL"), the feature, the field, and the first and last day it is missing.
    """
    fields = ["close"] + [f for n in names for f in NEEDS.get(n, ()) if f != "close"]
    for field in dict.fromkeys(fields):
        if field not in prices.columns:
            raise MissingFieldError(f"{who or 'prices'}: no column {field!r}")
        values = pd.to_numeric(prices[field], errors="coerce").to_numpy(dtype="float64")
        missing = ~np.isfinite(values)
        if not missing.any():
            continue
        days = pd.to_datetime(prices["date"]).dt.date.to_numpy()[missing]
        users = [repr(n) for n in names if field in NEEDS.get(n, ())]
        subject = f"feature {', '.join(users)}" if users else "the forecast target"
        raise MissingFieldError(
            f"{who or 'prices'}: {subject} needs {field}, which is missing on "
            f"{int(missing.sum())} day(s) in the selected date range, first {days[0]}, "
            f"last {days[-1]} (vendor quirks, counted in the ingest report); start after "
            f"{days[-1]} or use features without {field}"
        )


def build_features(prices: pd.DataFrame, names: list[str], who: str | None = None) -> pd.DataFrame:
    """Feature columns in the requested order; rows lost to warm-up (NaN) are dropped.

    Fields the features need must be there on every row (`check_fields`): the only NaN
    left to drop is the warm-up's, so no day inside the range silently goes missing.
    """
    unknown = [n for n in names if n not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; valid: {sorted(_BUILDERS)}")
    prices = prices.reset_index(drop=True)
    check_fields(prices, names, who)
    frame = pd.DataFrame({name: _BUILDERS[name](prices) for name in names})
    frame.insert(0, "date", pd.to_datetime(prices["date"]).dt.date)
    frame["_close"] = prices["close"].astype(float)
    return frame.dropna().reset_index(drop=True)
