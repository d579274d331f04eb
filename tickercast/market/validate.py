"""Checks a price frame must pass before it may enter the lake.

`screen_prices` is what ingest runs on every batch: a row needs a valid close (finite,
> 0) to mean anything to a feature or target, so a row without one is dropped and counted
with the source's null rows. Real vendor history (Yahoo's, back to the 1960s) also has rows
whose close is fine but whose other prices are not: Open = 0.0 on thousands of early rows,
a close outside [low, high], high < low. Those are *quirks*, handled by `on_quirk`:

- "repair" (the default) keeps the row; every quirky value is marked missing (NaN, stored
  as null) and never guessed, except where only one value is possible (below);
- "drop" drops every row with a quirk;
- "fail" refuses the whole batch with `check_prices`'s message, as before quirks existed.

Either way each kind is counted per ticker (`Screened.quirks`, the ingest report's
`quirks`) and noted with its first and last day. The kinds, in the order they are
checked (each on what the earlier ones left), and what "repair" marks missing:

- `<f>_missing`, `<f>_zero`, `<f>_negative`: f (open, high, low, adj_close) is empty or
  not finite, 0, or < 0 -> f;
- `high_below_low` -> high and low; `close_above_high` -> high; `close_below_low` -> low;
- `open_above_high` -> open and high; `open_below_low` -> open and low.

Bad prints of the close (`close_absurd`, `close_spike`, `close_outside_range`,
`last_close_jump`: rules and factors at MAX_PRICE and PRINT_FACTOR below) are checked
first: such a close cannot be repaired (nothing tells the true price), so its row is
dropped under "repair" and "drop" and the batch refused under "fail"; an absurd other
field (`<f>_absurd`) is marked missing. Otherwise the close is trusted (it is what the row
is kept for), so a range that contradicts it loses the side it contradicts; between two
other fields nothing tells which is wrong, so both go. Comparisons allow `_SLACK` for rounding.
The one repair: a missing open on a flat bar (high == low, consistent with the close) is
set to the close, the only value inside [low, high]. Features that need a missing field
refuse a date range that holds one (`tickercast.modeling.features.check_fields`).

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

from tickercast.choices import ON_QUIRK
from tickercast.market.schema import MISSING_OK, PRICE_COLUMNS

# The CSV exports round to 6 decimals; a bar rounded that way may break high >= close by
# one unit in the last place, which is not a data error.
_SLACK = 1 + 1e-6
_PRICES = ("open", "high", "low", "close", "adj_close")
# Bad prints. A price at or above MAX_PRICE is no price (Berkshire's A share, the dearest
# listed, is near 1e6): the field is invalid (a close: the row goes). A close is a bad
# print when it moves by a factor of PRINT_FACTOR or more in one day and the next day
# undoes it (back within a factor of sqrt(PRINT_FACTOR) of the day before), or when it
# lies a factor PRINT_FACTOR outside its own day's high/low. The last day cannot be seen to
# revert yet: a close PRINT_FACTOR away from the day before, or one that moved more than a
# factor LAST_DAY_FLOOR and more than LAST_DAY_SIGMAS times the recent volatility (1.4826 x
# the median absolute deviation of the VOLATILITY_DAYS daily log moves before it, robust to
# an earlier bad print; at least MIN_VOLATILITY_DAYS of them), is held back (dropped,
# counted) until a later day confirms the level: then it is a move like any other. A real
# move (GameStop's +135% of 27 Jan 2021) is far inside the factors; a decimal slip (10x,
# 100x, 1000x) is far outside; a 2x slip on a calm last day is caught by the volatility.
MAX_PRICE = 1e8
# A volume at or above MAX_VOLUME is no volume (a whole day of the busiest US stock trades
# ~1e10 shares): like a negative one it is refused frame-wide, not marked (volume has no
# missing value in the schema, and a guess would be a model input).
MAX_VOLUME = 1e15
PRINT_FACTOR = 3.0
LAST_DAY_FLOOR = 1.5
LAST_DAY_SIGMAS = 10.0
VOLATILITY_DAYS = 60
MIN_VOLATILITY_DAYS = 20
CLOSE_QUIRKS = ("close_absurd", "close_spike", "close_outside_range", "last_close_jump")


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


@dataclass
class Screened:
    """A batch after `screen_prices`: the rows to store and what was done to get them."""

    prices: pd.DataFrame
    quirks: dict[str, int] = field(default_factory=dict)  # kind -> rows that had it
    no_close: int = 0  # rows dropped for want of a valid close
    dropped: int = 0  # rows dropped for their quirks (on_quirk="drop")
    missing: int = 0  # values of kept rows that are missing (NaN)
    repaired: int = 0  # values set by the flat-bar rule
    notes: list[str] = field(default_factory=list)


def screen_prices(frame: pd.DataFrame, ticker: str, on_quirk: str = "repair") -> Screened:
    """Drop rows without a valid close and handle the quirks of the others (module doc).

    Frame-wide problems (columns, dates, non-numeric columns, volume) are refused as by
    `check_prices` whatever `on_quirk` says: they are not a vendor's missing values.
    """
    if on_quirk not in ON_QUIRK:
        raise ValueError(f"on_quirk must be one of {list(ON_QUIRK)}, got {on_quirk!r}")
    if on_quirk == "fail":
        return _screen_strictly(frame, ticker)
    dates = _check_frame(frame, ticker)
    values = {c: _numeric(frame, c, ticker).copy() for c in _PRICES}
    keep, no_close, notes = _valid_closes(values["close"], dates, ticker)
    found: dict[str, np.ndarray] = {
        kind: mask for kind, mask in bad_closes(frame, keep).items() if mask.any()
    }
    bad_close = np.zeros(len(keep), dtype=bool)
    for mask in found.values():
        bad_close |= mask
    keep &= ~bad_close
    flat = _mark_quirks(values, keep, found)
    quirky = bad_close.copy()
    for mask in found.values():
        quirky |= mask
    repaired = 0
    dropped = int(bad_close.sum())  # a bad print's row goes whatever on_quirk says
    if on_quirk == "drop":
        keep &= ~quirky
        dropped = int(quirky.sum())
    else:
        values["open"][flat] = values["close"][flat]
        repaired = int(flat.sum())
    if not keep.any():
        raise InvalidPricesError(
            f"ticker {ticker}: no row left: {dropped} row(s) with quirks dropped "
            f"(on_quirk=drop), {no_close} without a valid close"
        )
    out = frame.loc[keep].reset_index(drop=True)
    for name in _PRICES:
        out[name] = values[name][keep]
    missing = int(sum(np.isnan(out[name].to_numpy()).sum() for name in MISSING_OK))
    quirks = {kind: int(mask.sum()) for kind, mask in found.items()}
    if quirks:
        counts = (int(quirky.sum()), missing, int(bad_close.sum()), repaired)
        notes.append(_quirk_note(ticker, on_quirk, dates, found, counts))
    check_prices(out, ticker, missing_ok=True)  # the invariants hold on what is stored
    return Screened(out, quirks, no_close, dropped, missing, repaired, notes)


def _screen_strictly(frame: pd.DataFrame, ticker: str) -> Screened:
    """on_quirk=fail: the frame as it is, or the first problem as an error."""
    check_prices(frame, ticker)
    for kind, mask in bad_closes(frame).items():
        if not mask.any():
            continue
        day = pd.Timestamp(frame["date"].iloc[int(np.flatnonzero(mask)[0])]).date()
        raise InvalidPricesError(
            f"ticker {ticker}, {day}: the close looks like a bad print ({kind}, "
            f"{int(mask.sum())} rows; on_quirk=fail)",
            day,
        )
    return Screened(frame)


def _valid_closes(
    close: np.ndarray, dates: pd.Series, ticker: str
) -> tuple[np.ndarray, int, list[str]]:
    """(rows with a finite positive close, how many have none, the note saying so);
    refused when no row has one."""
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(close) & (close > 0)
    notes: list[str] = []
    no_close = int((~keep).sum())
    if no_close:
        notes.append(
            f"ticker {ticker}: dropped {no_close} row(s) without a valid close "
            f"({_span(dates, ~keep)})"
        )
    if not keep.any():
        raise InvalidPricesError(
            f"ticker {ticker}: no row has a valid close ({no_close} rows without one)",
            dates.iloc[0].date(),
        )
    return keep, no_close, notes


def _mark_quirks(values: dict[str, np.ndarray], keep: np.ndarray, found: dict) -> np.ndarray:
    """Each quirk of the kept rows into `found` (kind -> rows), its values set missing in
    `values`; returns the flat bars (no open, high == low) whose open the close repairs."""

    def mark(kind: str, mask: np.ndarray, *fields: str) -> None:
        mask = mask & keep
        if mask.any():
            found[kind] = mask
            for name in fields:
                values[name][mask] = np.nan

    with np.errstate(invalid="ignore"):
        for name in MISSING_OK:
            v = values[name]
            mark(f"{name}_missing", ~np.isfinite(v), name)
            mark(f"{name}_zero", v == 0, name)
            mark(f"{name}_negative", v < 0, name)
            mark(f"{name}_absurd", v >= MAX_PRICE, name)
        o, h, lo, c = values["open"], values["high"], values["low"], values["close"]
        mark("high_below_low", h * _SLACK < lo, "high", "low")
        mark("close_above_high", c > h * _SLACK, "high")
        mark("close_below_low", c * _SLACK < lo, "low")
        mark("open_above_high", o > h * _SLACK, "open", "high")
        mark("open_below_low", o * _SLACK < lo, "open", "low")
        return keep & np.isnan(o) & np.isfinite(h) & np.isfinite(lo) & (h <= lo * _SLACK)


def _quirk_note(ticker: str, on_quirk: str, dates, found: dict, counts: tuple) -> str:
    """What was done with the quirky rows. `counts`: (quirky rows, values marked missing,
    bad close prints dropped, flat-bar opens repaired)."""
    quirky, missing, bad_close, repaired = counts
    if on_quirk == "drop":
        action = "dropped"
    else:
        action = f"kept with {missing} value(s) marked missing"
        if bad_close:
            action += f", {bad_close} bad close print(s) dropped"
        if repaired:
            action += f", {repaired} flat-bar open(s) set to the close"
    kinds = ", ".join(f"{k} {int(m.sum())} ({_span(dates, m)})" for k, m in found.items())
    return (
        f"ticker {ticker}: {quirky} row(s) with vendor quirks, {action} "
        f"(on_quirk={on_quirk}): {kinds}"
    )


def bad_closes(frame: pd.DataFrame, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Rows whose close is a bad print, per kind (module doc; MAX_PRICE, PRINT_FACTOR),
    among the rows `valid` (default: every row with a finite close > 0). Jumps are read
    between consecutive valid rows, so a dropped null row between two does not hide one."""
    close = frame["close"].to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        if valid is None:
            valid = np.isfinite(close) & (close > 0)
        absurd = valid & (close >= MAX_PRICE)
        valid = valid & ~absurd
        high = frame["high"].to_numpy(dtype="float64", na_value=np.nan)
        low = frame["low"].to_numpy(dtype="float64", na_value=np.nan)
        high = np.where(np.isfinite(high) & (high > 0) & (high < MAX_PRICE), high, np.inf)
        low = np.where(np.isfinite(low) & (low > 0) & (low < MAX_PRICE), low, 0.0)
        outside = valid & ((close > high * PRINT_FACTOR) | (close * PRINT_FACTOR < low))
    rows = np.flatnonzero(valid & ~outside)
    spike = np.zeros(len(close), dtype=bool)
    last = np.zeros(len(close), dtype=bool)
    if len(rows) >= 2:
        step = np.diff(np.log(close[rows]))
        big = np.abs(step) >= np.log(PRINT_FACTOR)
        undone = np.abs(step[:-1] + step[1:]) <= 0.5 * np.log(PRINT_FACTOR)
        spike[rows[1:-1][big[:-1] & big[1:] & undone]] = True
        last[rows[-1]] = bool(big[-1]) or beyond_volatility(step)
    return {
        "close_absurd": absurd,
        "close_outside_range": outside,
        "close_spike": spike,
        "last_close_jump": last,
    }


def beyond_volatility(steps: np.ndarray) -> bool:
    """Whether the last of these daily log moves is far outside the recent volatility
    (the last-day rule above: LAST_DAY_FLOOR, LAST_DAY_SIGMAS, VOLATILITY_DAYS)."""
    move = abs(float(steps[-1]))
    recent = steps[:-1][-VOLATILITY_DAYS:]
    if move <= np.log(LAST_DAY_FLOOR) or len(recent) < MIN_VOLATILITY_DAYS:
        return False
    sigma = 1.4826 * float(np.median(np.abs(recent - np.median(recent))))
    return move > LAST_DAY_SIGMAS * sigma


def _span(dates: pd.Series, mask: np.ndarray) -> str:
    """'first..last' day of the rows in `mask` (one day alone when they are one)."""
    days = dates[mask]
    first, last = days.iloc[0].date(), days.iloc[-1].date()
    return str(first) if first == last else f"{first}..{last}"


def _check_frame(frame: pd.DataFrame, ticker: str) -> pd.Series:
    """Columns there, rows present, days known, unique and increasing; returns the days."""
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
    return dates


def _numeric(frame: pd.DataFrame, column: str, ticker: str) -> np.ndarray:
    try:
        return frame[column].to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        raise InvalidPricesError(f"ticker {ticker}: column {column} is not numeric") from None


def check_prices(frame: pd.DataFrame, ticker: str, *, missing_ok: bool = False) -> None:
    """Refuse impossible bars.

    The explicit schema's columns must all be there; dates unique and increasing; prices
    finite and > 0; high >= max(open, close); low <= min(open, close) (with 1e-6 relative
    slack for rounding); volume a whole number >= 0 and < MAX_VOLUME. With `missing_ok` (what
    `screen_prices` hands over), open, high, low and adj_close may be missing (NaN) and
    the bar checks compare only the values that are there.
    """
    dates = _check_frame(frame, ticker)

    def fail(mask: np.ndarray, what: str) -> None:
        if mask.any():
            day = dates[mask].iloc[0].date()
            raise InvalidPricesError(
                f"ticker {ticker}, {day}: {what} ({int(mask.sum())} rows)", day
            )

    values: dict[str, np.ndarray] = {}
    for column in _PRICES:
        values[column] = _numeric(frame, column, ticker)
        if missing_ok and column in MISSING_OK:
            fail(np.isinf(values[column]), f"{column} is not finite")
        else:
            fail(~np.isfinite(values[column]), f"{column} is missing or not finite")
        with np.errstate(invalid="ignore"):
            fail(values[column] <= 0, f"{column} <= 0")
            fail(values[column] >= MAX_PRICE, f"{column} >= {MAX_PRICE:g}, not a price")
    # fmax/fmin: a missing open leaves the close as the body (no NaN comparison passes).
    body_high = np.fmax(values["open"], values["close"])
    body_low = np.fmin(values["open"], values["close"])
    with np.errstate(invalid="ignore"):
        fail(values["high"] * _SLACK < body_high, "high below max(open, close)")
        fail(values["low"] > body_low * _SLACK, "low above min(open, close)")
    volume = _numeric(frame, "volume", ticker)
    fail(~np.isfinite(volume), "volume is missing or not finite")
    fail(volume < 0, "volume < 0")
    fail(volume >= MAX_VOLUME, f"volume >= {MAX_VOLUME:g}, not a volume")
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
        ratio = closes[i] / closes[i - 1]
        size = f"{moves[i - 1]:.0%}" if moves[i - 1] < 10 else f"by a factor of {ratio:.3g}"
        found.append(
            f"ticker {ticker}, {day}: close moved {size} in one day with no split recorded"
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
