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

The close is trusted (it is what the row is kept for), so a range that contradicts it
loses the side it contradicts; between two other fields nothing tells which is wrong, so
both go. Comparisons allow `_SLACK` for rounding.
The one repair: a missing open on a flat bar (high == low, consistent with the close) is
set to the close, the only value inside [low, high]. Features that need a missing field
refuse a date range that holds one (`tickercast.modeling.features.check_fields`).

Before the quirks, two kinds of rows are removed whatever `on_quirk` says (except
"fail", which refuses the batch instead, naming the day): rows with an absurd value (a
price above `MAX_PRICE` or a volume above `MAX_VOLUME`, e.g. 1e300), counted with the rows
without a valid close, and bad close prints (a one-day jump that reverts, a close far
outside its own bar, a last day far outside the recent volatility: market/outliers.py),
counted per kind in `quirks`. A close is what a row is kept for, so a wrong one is never
marked missing or guessed: the row goes.

`check_prices` refuses what cannot be true (the whole frame is refused, nothing is
written); `move_warnings` only flags what is suspicious (a one-day move beyond a
threshold on a day with no split recorded), so a real crash day never blocks a run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tickercast.choices import ON_QUIRK
from tickercast.market.outliers import (
    MAX_PRICE,
    MAX_VOLUME,
    describe,
    find_outliers,
    ratio_text,
)
from tickercast.market.schema import MISSING_OK, PRICE_COLUMNS

# The CSV exports round to 6 decimals; a bar rounded that way may break high >= close by
# one unit in the last place, which is not a data error.
_SLACK = 1 + 1e-6
_PRICES = ("open", "high", "low", "close", "adj_close")


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
    invalid: int = 0  # rows dropped for an absurd value (market/outliers.py: MAX_PRICE)
    removed_days: np.ndarray | None = None  # days of the rows dropped here (announced)


def screen_prices(
    frame: pd.DataFrame,
    ticker: str,
    on_quirk: str = "repair",
    *,
    threshold: float = 0.5,
    prior: Sequence[float] = (),
    split_days: Iterable[dt.date] = (),
) -> Screened:
    """Drop rows without a valid close, bad prints and absurd values, and handle the
    quirks of the other rows (module doc).

    `threshold` is the move that makes a close suspicious (`move_threshold`), `prior` the
    stored closes before this batch (market/outliers.py). Frame-wide problems (columns,
    dates, non-numeric columns, volume) are refused as by `check_prices` whatever
    `on_quirk` says: they are not a vendor's missing values.
    """
    if on_quirk not in ON_QUIRK:
        raise ValueError(f"on_quirk must be one of {list(ON_QUIRK)}, got {on_quirk!r}")
    skip = _split_mask(frame, split_days)
    if on_quirk == "fail":
        check_prices(frame, ticker)
        _refuse_outliers(frame, ticker, threshold, prior, skip)
        return Screened(frame)
    dates = _check_frame(frame, ticker)
    values = {c: _numeric(frame, c, ticker).copy() for c in _PRICES}
    notes: list[str] = []
    keep, no_close, invalid = _valid_rows(frame, ticker, dates, values, notes)
    bad = find_outliers(values["close"], values["high"], values["low"], threshold, prior, skip)
    bad = {kind: mask & keep for kind, mask in bad.items() if (mask & keep).any()}
    printed = _union(bad.values(), len(keep))
    if printed.any():
        keep &= ~printed
        notes.append(_bad_print_note(frame, ticker, dates, bad, prior, on_quirk))
    if not keep.any():
        raise InvalidPricesError(f"ticker {ticker}: no row left after dropping bad prints")
    found, flat = _mark_quirks(values, keep)
    quirky = _union(found.values(), len(keep))
    repaired = 0
    dropped = int(printed.sum())
    if on_quirk == "drop":
        keep &= ~quirky
        dropped += int(quirky.sum())
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
    if found:
        if on_quirk == "drop":
            action = "dropped"
        else:
            action = f"kept with {missing} value(s) marked missing"
            if repaired:
                action += f", {repaired} flat-bar open(s) set to the close"
        kinds = ", ".join(f"{k} {n} ({_span(dates, found[k])})" for k, n in quirks.items())
        notes.append(
            f"ticker {ticker}: {int(quirky.sum())} row(s) with vendor quirks, {action} "
            f"(on_quirk={on_quirk}): {kinds}"
        )
    check_prices(out, ticker, missing_ok=True)  # the invariants hold on what is stored
    quirks.update({kind: int(mask.sum()) for kind, mask in bad.items()})
    removed = day_values(dates[~keep])
    return Screened(out, quirks, no_close, dropped, missing, repaired, notes, invalid, removed)


def _union(masks: Iterable[np.ndarray], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for mask in masks:
        out |= mask
    return out


def _valid_rows(
    frame: pd.DataFrame,
    ticker: str,
    dates: pd.Series,
    values: dict[str, np.ndarray],
    notes: list[str],
) -> tuple[np.ndarray, int, int]:
    """(rows to keep, rows without a valid close, rows with an absurd value), noted."""
    close = values["close"]
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(close) & (close > 0) & (close <= MAX_PRICE)
        absurd = keep & _absurd(values, _numeric(frame, "volume", ticker))
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
    invalid = int(absurd.sum())
    if invalid:
        keep &= ~absurd
        notes.append(
            f"ticker {ticker}: dropped {invalid} row(s) with an absurd price or volume "
            f"(above {MAX_PRICE:g} / {MAX_VOLUME:g}: {_span(dates, absurd)})"
        )
    return keep, no_close, invalid


def _bad_print_note(
    frame: pd.DataFrame,
    ticker: str,
    dates: pd.Series,
    bad: dict[str, np.ndarray],
    prior: Sequence[float],
    on_quirk: str,
) -> str:
    prev = float(prior[-1]) if len(prior) else None
    kinds = "; ".join(
        f"{k} {int(m.sum())} ({_span(dates, m)}: {describe(frame, m, prev)})"
        for k, m in bad.items()
    )
    held = "; a last day is kept once a later day confirms it" if "close_last_jump" in bad else ""
    return (
        f"ticker {ticker}: dropped {sum(int(m.sum()) for m in bad.values())} bad close "
        f"print(s) (on_quirk={on_quirk}): {kinds}{held}"
    )


def _mark_quirks(
    values: dict[str, np.ndarray], keep: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mark each quirky value of the kept rows missing (module doc); returns kind -> rows
    and the flat bars whose missing open can only be their close."""
    found: dict[str, np.ndarray] = {}

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
        o, h, lo, c = values["open"], values["high"], values["low"], values["close"]
        mark("high_below_low", h * _SLACK < lo, "high", "low")
        mark("close_above_high", c > h * _SLACK, "high")
        mark("close_below_low", c * _SLACK < lo, "low")
        mark("open_above_high", o > h * _SLACK, "open", "high")
        mark("open_below_low", o * _SLACK < lo, "open", "low")
        flat = keep & np.isnan(o) & np.isfinite(h) & np.isfinite(lo) & (h <= lo * _SLACK)
    return found, flat


def day_values(days: pd.Series) -> np.ndarray:
    return pd.Series(days).to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")


def _absurd(values: dict[str, np.ndarray], volume: np.ndarray) -> np.ndarray:
    """Rows with a finite price above MAX_PRICE or a volume above MAX_VOLUME."""
    with np.errstate(invalid="ignore"):
        mask = np.abs(volume) > MAX_VOLUME
        for name in MISSING_OK:
            v = values[name]
            mask |= np.isfinite(v) & (v > MAX_PRICE)
    return mask


def _split_mask(frame: pd.DataFrame, split_days: Iterable[dt.date]) -> np.ndarray | None:
    days = set(split_days)
    if not days or "date" not in frame.columns:
        return None
    return np.array([pd.Timestamp(d).date() in days for d in frame["date"]], dtype=bool)


def _refuse_outliers(
    frame: pd.DataFrame,
    ticker: str,
    threshold: float,
    prior: Sequence[float],
    skip: np.ndarray | None,
) -> None:
    """on_quirk=fail: refuse a batch holding a bad close print, naming its day."""
    bad = find_outliers(
        _numeric(frame, "close", ticker),
        _numeric(frame, "high", ticker),
        _numeric(frame, "low", ticker),
        threshold,
        prior,
        skip,
    )
    for kind, mask in bad.items():
        day = pd.Timestamp(frame["date"].iloc[int(np.flatnonzero(mask)[0])]).date()
        prev = float(prior[-1]) if len(prior) else None
        raise InvalidPricesError(
            f"ticker {ticker}, {day}: {kind}, a likely bad print "
            f"({describe(frame, mask, prev)}; on_quirk=fail)",
            day,
        )


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
    slack for rounding); volume a whole number >= 0. With `missing_ok` (what
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
            fail(values[column] > MAX_PRICE, f"{column} above {MAX_PRICE:g} (absurd)")
    # fmax/fmin: a missing open leaves the close as the body (no NaN comparison passes).
    body_high = np.fmax(values["open"], values["close"])
    body_low = np.fmin(values["open"], values["close"])
    with np.errstate(invalid="ignore"):
        fail(values["high"] * _SLACK < body_high, "high below max(open, close)")
        fail(values["low"] > body_low * _SLACK, "low above min(open, close)")
    volume = _numeric(frame, "volume", ticker)
    fail(~np.isfinite(volume), "volume is missing or not finite")
    fail(volume < 0, "volume < 0")
    fail(volume > MAX_VOLUME, f"volume above {MAX_VOLUME:g} (absurd)")
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
            f"ticker {ticker}, {day}: close moved {ratio_text(closes[i] / closes[i - 1])} "
            f"in one day ({closes[i - 1]:.6g} to {closes[i]:.6g}) with no split recorded"
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
