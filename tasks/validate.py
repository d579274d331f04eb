"""Checks a price frame must pass before it may enter the lake.

`check_prices` refuses what cannot be true (the whole frame is refused, nothing is
written); `move_warnings` only flags what is suspicious (a one-day move beyond a
threshold on a day with no split recorded), so a real crash day never blocks a run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks.schema import PRICE_COLUMNS

# The CSV exports round to 6 decimals; a bar rounded that way may break high >= close by
# one unit in the last place, which is not a data error.
_SLACK = 1 + 1e-6


class InvalidPricesError(ValueError):
    """Prices that break an invariant; the message names the ticker, day and field.

    `day` is the first offending trading day (None for frame-wide problems), so a caller
    that knows where each row came from (a CSV line) can point there too.
    """

    def __init__(self, message: str, day: dt.date | None = None) -> None:
        super().__init__(message)
        self.day = day


@dataclass
class ValidationReport:
    rows: int
    warnings: list[str] = field(default_factory=list)


def check_prices(frame: pd.DataFrame, ticker: str) -> None:
    """Refuse impossible bars.

    The explicit schema's columns must all be there; dates unique and increasing; prices
    finite and > 0; high >= max(open, close); low <= min(open, close) (with 1e-6 relative
    slack for rounding); volume a whole number >= 0.
    """
    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidPricesError(f"ticker {ticker}: missing column(s) {missing}")
    if frame.empty:
        raise InvalidPricesError(f"ticker {ticker}: no price rows")
    dates = pd.Series(pd.to_datetime(frame["date"]).to_numpy())
    if dates.isna().any():
        raise InvalidPricesError(f"ticker {ticker}: missing trading day in column date")
    duplicated = dates[dates.duplicated()]
    if len(duplicated):
        day = duplicated.iloc[0].date()
        raise InvalidPricesError(f"ticker {ticker}: duplicate trading day {day}", day)
    if not dates.is_monotonic_increasing:
        backwards = np.flatnonzero(np.diff(dates.to_numpy()) < np.timedelta64(0))
        day = dates.iloc[int(backwards[0]) + 1].date()
        raise InvalidPricesError(f"ticker {ticker}: trading days are not sorted at {day}", day)

    def fail(mask: np.ndarray, what: str) -> None:
        if mask.any():
            day = dates[mask].iloc[0].date()
            raise InvalidPricesError(
                f"ticker {ticker}, {day}: {what} ({int(mask.sum())} rows)", day
            )

    values: dict[str, np.ndarray] = {}
    for column in ("open", "high", "low", "close", "adj_close"):
        try:
            values[column] = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):
            raise InvalidPricesError(f"ticker {ticker}: column {column} is not numeric") from None
        fail(~np.isfinite(values[column]), f"{column} is missing or not finite")
        fail(values[column] <= 0, f"{column} <= 0")
    body_high = np.maximum(values["open"], values["close"])
    body_low = np.minimum(values["open"], values["close"])
    fail(values["high"] * _SLACK < body_high, "high below max(open, close)")
    fail(values["low"] > body_low * _SLACK, "low above min(open, close)")
    try:
        volume = frame["volume"].to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        raise InvalidPricesError(f"ticker {ticker}: column volume is not numeric") from None
    fail(~np.isfinite(volume), "volume is missing or not finite")
    fail(volume < 0, "volume < 0")
    fail(volume != np.round(volume), "volume is not a whole number")


def move_warnings(
    frame: pd.DataFrame,
    ticker: str,
    *,
    move_threshold: float = 0.5,
    split_days: Iterable[dt.date] = (),
    after: dt.date | None = None,
) -> list[str]:
    """One warning per one-day close move beyond `move_threshold` with no split that day.

    Only days after `after` are reported, so an incremental run does not repeat the
    warnings of days it had already stored.
    """
    if len(frame) < 2:
        return []
    closes = frame["close"].to_numpy(dtype="float64")
    moves = np.abs(closes[1:] / closes[:-1] - 1.0)
    splits = set(split_days)
    found = []
    for i in np.flatnonzero(moves > move_threshold) + 1:
        day = pd.Timestamp(frame["date"].iloc[i]).date()  # only flagged rows are converted
        if day in splits or (after is not None and day <= after):
            continue
        found.append(
            f"ticker {ticker}, {day}: close moved {moves[i - 1]:.0%} in one day "
            "with no split recorded"
        )
    return found


def validate_prices(
    frame: pd.DataFrame,
    ticker: str,
    *,
    move_threshold: float = 0.5,
    split_days: Iterable[dt.date] | None = None,
) -> ValidationReport:
    """`check_prices`, then the move warnings over the whole frame."""
    check_prices(frame, ticker)
    warnings = move_warnings(
        frame, ticker, move_threshold=move_threshold, split_days=split_days or ()
    )
    return ValidationReport(rows=len(frame), warnings=warnings)
