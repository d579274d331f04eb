"""Checks a price frame must pass before it may enter the lake."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class InvalidPricesError(ValueError):
    """Prices that break an invariant; the message names the ticker, day and field."""


@dataclass
class ValidationReport:
    rows: int
    warnings: list[str] = field(default_factory=list)


def validate_prices(
    frame: pd.DataFrame, ticker: str, *, move_threshold: float = 0.5, split_days: set | None = None
) -> ValidationReport:
    """Refuse impossible bars; warn about one-day moves beyond `move_threshold` without a split.

    Dates must be unique and increasing, prices > 0, high >= max(open, close),
    low <= min(open, close) (1e-6 relative slack for the CSV's rounding), volume >= 0.
    """
    if frame.empty:
        raise InvalidPricesError(f"ticker {ticker}: no price rows")
    dates = pd.to_datetime(frame["date"])
    duplicated = dates[dates.duplicated()]
    if len(duplicated):
        raise InvalidPricesError(
            f"ticker {ticker}: duplicate trading day {duplicated.iloc[0].date()}"
        )
    if not dates.is_monotonic_increasing:
        raise InvalidPricesError(f"ticker {ticker}: trading days are not sorted")

    def fail(mask: pd.Series, what: str) -> None:
        if mask.any():
            day = dates[mask.to_numpy()].iloc[0].date()
            raise InvalidPricesError(f"ticker {ticker}, {day}: {what} ({int(mask.sum())} rows)")

    for column in ("open", "high", "low", "close", "adj_close"):
        values = frame[column].astype(float)
        fail(~np.isfinite(values), f"{column} is missing or not finite")
        fail(values <= 0, f"{column} <= 0")
    slack = 1 + 1e-6
    body_high = frame[["open", "close"]].max(axis=1)
    body_low = frame[["open", "close"]].min(axis=1)
    fail(frame["high"] * slack < body_high, "high below max(open, close)")
    fail(frame["low"] > body_low * slack, "low above min(open, close)")
    fail(frame["volume"] < 0, "volume < 0")

    report = ValidationReport(rows=len(frame))
    moves = frame["close"].astype(float).pct_change().abs()
    splits = split_days or set()
    for i in np.flatnonzero(moves.to_numpy() > move_threshold):
        day = dates.iloc[i].date()
        if day not in splits:
            report.warnings.append(
                f"ticker {ticker}, {day}: close moved {moves.iloc[i]:.0%} in one day "
                "with no split recorded"
            )
    return report
