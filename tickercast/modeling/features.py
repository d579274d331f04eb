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


# |log return| * sqrt(pi / 2) estimates a day's volatility (E|r| = sigma * sqrt(2 / pi) for
# a normal return): what a range estimator falls back to on a day whose range is unusable.
ABS_TO_SIGMA = float(np.sqrt(np.pi / 2.0))
PARKINSON_DIVISOR = float(np.sqrt(4.0 * np.log(2.0)))
GARMAN_KLASS_C = float(2.0 * np.log(2.0) - 1.0)


def _field(p: pd.DataFrame, name: str) -> np.ndarray:
    if name not in p.columns:
        return np.full(len(p), np.nan)
    return pd.to_numeric(p[name], errors="coerce").to_numpy(dtype=np.float64)


def _usable_range(p: pd.DataFrame, fields: tuple[str, ...]) -> np.ndarray:
    """Days whose `fields` are all finite and > 0 and whose high >= low: a quirk ingest
    marks missing (NaN), Yahoo's Open = 0 or a high below the low fails this."""
    ok = np.ones(len(p), dtype=bool)
    for name in fields:
        values = _field(p, name)
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(values) & (values > 0)
    with np.errstate(invalid="ignore"):
        return ok & (_field(p, "high") >= _field(p, "low"))


def _fallback(p: pd.DataFrame) -> np.ndarray:
    return np.abs(_log_return(p).to_numpy(dtype=np.float64)) * ABS_TO_SIGMA


def parkinson(p: pd.DataFrame) -> pd.Series:
    """Parkinson's daily volatility from the day's range, |ln(high / low)| / sqrt(4 ln 2);
    on a day without a usable range, the |log return| estimate (never NaN past day 0)."""
    ok = _usable_range(p, ("high", "low"))
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.abs(np.log(_field(p, "high") / _field(p, "low"))) / PARKINSON_DIVISOR
    return pd.Series(np.where(ok, value, _fallback(p)), index=p.index)


def garman_klass(p: pd.DataFrame) -> pd.Series:
    """Garman-Klass daily volatility, sqrt(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2); on a
    day without usable open/high/low (or a negative variance: a close outside the
    range), the |log return| estimate."""
    ok = _usable_range(p, ("open", "high", "low"))
    with np.errstate(invalid="ignore", divide="ignore"):
        hl = np.log(_field(p, "high") / _field(p, "low"))
        co = np.log(_field(p, "close") / _field(p, "open"))
        variance = 0.5 * hl * hl - GARMAN_KLASS_C * co * co
        ok &= np.isfinite(variance) & (variance >= 0)
        value = np.sqrt(np.where(ok, variance, 0.0))
    return pd.Series(np.where(ok, value, _fallback(p)), index=p.index)


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
    "abs_log_return": lambda p: _log_return(p).abs(),
    "parkinson": parkinson,
    "garman_klass": garman_klass,
}
# The price columns each feature reads (every one also needs the close, for the targets).
NEEDS: dict[str, tuple[str, ...]] = {
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "volume": ("volume",),
    "log_volume": ("volume",),
}


# The price columns a feature reads where they are usable and does without where not (a
# range estimator falls back to the |log return| on a quirky day): never refused for a
# missing value, but a serving window carries them.
READS: dict[str, tuple[str, ...]] = {
    "parkinson": ("high", "low"),
    "garman_klass": ("open", "high", "low"),
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
