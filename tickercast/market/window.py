"""Incremental ingest of a windowed source (yfinance, or any `Fetcher`).

The first run fetches `start`..`end` (or `period`); a rerun asks only for the days after
the last stored one, re-reading the last `overlap_days` stored days to pick up revisions,
merges (fetched rows win), de-duplicates by date and rewrites the partition atomically.
A day the source answered with a close but the screen dropped (a bad print, an absurd
close, a quirk under on_quirk=drop) wins too: its stored row goes, counted
(`rows_removed`) and noted, so a bad print stored before the rules existed leaves the
lake with the next fetch.
When the overlap shows that history was re-adjusted since the last run (a split or
dividend not stored yet, or every overlapping close / adj_close changed beyond
`tolerance`), the ticker's full stored span is fetched again and replaces the partition,
so old and new rows never mix two adjustment bases.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tickercast.errors import CorruptPartitionError
from tickercast.hashing import file_sha256
from tickercast.market import lake
from tickercast.market.options import IngestOptions
from tickercast.market.partition import (
    as_date,
    canonical,
    dates,
    day_array,
    ingest_result,
    read_stored,
    removed_days,
    split_days,
)
from tickercast.market.retry import Attempts, Fetched, Fetcher, call_with_retries
from tickercast.market.schema import EVENT_COLUMNS, empty_events
from tickercast.market.validate import Screened, move_warnings, screen_prices


@dataclass(frozen=True)
class Window:
    """One request to a windowed source (start and end inclusive)."""

    start: dt.date | None
    end: dt.date | None
    period: str | None
    why: str

    def describe(self) -> dict[str, str | None]:
        return {
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "period": self.period,
            "why": self.why,
        }


_FIRST_STORED: Any = object()


def plan_window(
    stored: Iterable | None,
    start: dt.date | None,
    end: dt.date | None,
    period: str | None,
    overlap_days: int,
    covered_from: dt.date | None = _FIRST_STORED,
) -> Window | None:
    """What to ask the source for, given the stored days; None when nothing is missing.

    First run: the requested window. Rerun: from the `overlap_days`-th last stored day on.
    A `start` before what earlier fetches covered (`covered_from`: None = the whole
    history; by default the first stored day) needs the full span again, one adjustment
    basis for every row. `period` only shapes a first run.
    """
    days = None if stored is None else day_array(stored)
    if days is None or len(days) == 0:
        return Window(start, end, period, "first")
    first, last = as_date(days[0]), as_date(days[-1])
    if covered_from is _FIRST_STORED:
        covered_from = first
    if start is not None and covered_from is not None and start < covered_from:
        return Window(start, _full_end(end, last), None, "backfill")
    if end is not None and end <= last:
        return None
    tail = as_date(days[max(0, len(days) - overlap_days)])
    return Window(tail, end, None, "incremental")


def _full_end(end: dt.date | None, last: dt.date) -> dt.date | None:
    """A full refetch never ends before the last stored day (replacing would drop rows)."""
    return None if end is None else max(end, last)


def readjustment(
    old: pd.DataFrame,
    old_events: pd.DataFrame | None,
    fetched: Fetched,
    tolerance: float,
) -> tuple[str | None, list[str]]:
    """(why history must be fetched again or None, notes about revised overlap days).

    Re-adjusted: the answer carries a split or dividend the lake does not hold yet (Yahoo
    then rescales every earlier close or adj_close), or every overlapping day's close or
    adj_close changed. Only some overlap days changed: revisions, taken as they are.
    """
    known = set()
    if old_events is not None:
        known = set(zip(dates(old_events["date"]), old_events["kind"], strict=True))
    if fetched.events is not None:
        for day, kind, value in zip(
            dates(fetched.events["date"]),
            fetched.events["kind"],
            fetched.events["value"],
            strict=True,
        ):
            if (day, kind) not in known:
                return f"new {kind} on {day} ({value:g}) not in the lake", []
    shared, i_old, i_new = np.intersect1d(
        day_array(old["date"]), day_array(fetched.prices["date"]), return_indices=True
    )
    if len(shared) == 0:
        return None, []
    changed = np.zeros(len(shared), dtype=bool)
    for column in ("close", "adj_close"):
        before = old[column].to_numpy(dtype="float64")[i_old]
        after = fetched.prices[column].to_numpy(dtype="float64")[i_new]
        changed |= np.abs(after - before) > tolerance * np.abs(before)
    if not changed.any():
        return None, []
    days = [str(d) for d in shared[changed]]
    if changed.all():
        return f"all {len(shared)} overlapping day(s) changed price ({', '.join(days[:3])})", []
    return None, [f"revised {len(days)} overlapping day(s): {', '.join(days[:5])}"]


class _Getter:
    """Fetches a window with retries and screens it, keeping the log the result reports."""

    def __init__(
        self,
        ticker: str,
        fetch: Fetcher,
        opts: IngestOptions,
        sleep: Callable[[float], None],
        log: Callable[[str], None] | None,
    ) -> None:
        self.ticker, self.fetch, self.opts, self.sleep, self.log = ticker, fetch, opts, sleep, log
        self.attempts = Attempts()
        self.fetches: list[dict] = []
        self.screens: list[Screened] = []  # the last one screened the rows that are stored
        self.answered: list[np.ndarray] = []  # the days of each answer, before the screen

    def __call__(self, window: Window) -> Fetched:
        self.fetches.append(window.describe())
        got = call_with_retries(
            lambda: self.fetch(self.ticker, window.start, window.end, window.period),
            self.ticker,
            self.opts,
            sleep=self.sleep,
            log=self.log,
            attempts=self.attempts,
        )
        raw = canonical(got.prices)
        screened = screen_prices(raw, self.ticker, self.opts.on_quirk)
        self.screens.append(screened)
        close = raw["close"].to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):  # a day answered without a close proves nothing
            self.answered.append(day_array(raw["date"])[np.isfinite(close) & (close > 0)])
        return replace(  # a new answer: a fetcher may hand out the same object twice
            got, prices=screened.prices, dropped_null_rows=got.dropped_null_rows + screened.no_close
        )


def ingest_window(
    ticker: str,
    source: str,
    data_dir: Path,
    fetch: Fetcher,
    start: dt.date | None,
    end: dt.date | None,
    period: str | None,
    opts: IngestOptions,
    sleep: Callable[[float], None],
    log: Callable[[str], None] | None,
) -> dict:
    """Plan, fetch (retried), refetch in full if history was re-adjusted, merge and write,
    all under the ticker's lock."""
    get = _Getter(ticker, fetch, opts, sleep, log)
    notes: list[str] = []
    with lake.partition_lock(data_dir, ticker):
        old, old_events, _ = read_stored(data_dir, ticker, opts.on_corrupt, notes)
        if old is None:
            old_events = None
        stored = None if old is None else day_array(old["date"])
        covered = _covered_from(data_dir, ticker, stored)
        window = plan_window(stored, start, end, period, opts.overlap_days, covered)
        if window is None:
            return _up_to_date(ticker, source, data_dir, old, stored, notes)
        window, fetched, mode = _fetch_planned(
            get, window, old, old_events, stored, covered, start, end, opts.tolerance, notes
        )
        prices, events, removed = _combine(
            ticker, mode, old, old_events, stored, fetched, get.answered[-1], notes
        )
        note = _covered_note(mode, covered, window, prices)
        if mode != "incremental":
            removed = removed_days(ticker, source, stored, prices, opts.replace)
        path = lake.write_partition(data_dir, ticker, prices, covered_from=note)
        digest = file_sha256(path)
        if removed and mode != "incremental":
            notes.append(f"ticker {ticker}: replaced the stored history, {removed:,} days removed")
        if events is not None:
            lake.write_events(data_dir, ticker, events)
    after = as_date(stored[-1]) if mode == "incremental" else None
    warnings = notes + get.screens[-1].notes + _move_notes(prices, events, ticker, opts, after)
    return ingest_result(
        ticker,
        source,
        path,
        digest,
        prices,
        stored,
        dropped=fetched.dropped_null_rows,
        warnings=warnings,
        mode=mode,
        fetches=get.fetches,
        attempts=get.attempts.count,
        retries=get.attempts.log,
        screened=get.screens[-1],
        removed=removed,
    )


def _move_notes(
    prices: pd.DataFrame,
    events: pd.DataFrame | None,
    ticker: str,
    opts: IngestOptions,
    after: dt.date | None,
) -> list[str]:
    """Warnings about implausible day-to-day moves in the stored rows (split days excused)."""
    return move_warnings(
        prices,
        ticker,
        move_threshold=opts.move_threshold,
        split_days=split_days(events),
        after=after,
    )


def _up_to_date(
    ticker: str,
    source: str,
    data_dir: Path,
    old: pd.DataFrame | None,
    stored: np.ndarray | None,
    notes: list[str],
) -> dict:
    """The result when nothing is missing: the stored partition as it is, nothing fetched."""
    path = lake.partition_path(data_dir, ticker)
    return ingest_result(
        ticker,
        source,
        path,
        file_sha256(path),
        old,
        stored,
        dropped=0,
        warnings=notes,
        mode="up-to-date",
        fetches=[],
        attempts=0,
    )


def _fetch_planned(
    get: _Getter,
    window: Window,
    old: pd.DataFrame | None,
    old_events: pd.DataFrame | None,
    stored: np.ndarray | None,
    covered: dt.date | None,
    start: dt.date | None,
    end: dt.date | None,
    tolerance: float,
    notes: list[str],
) -> tuple[Window, Fetched, str]:
    """Fetch the planned window; an incremental one that shows re-adjusted history is
    replaced by a full refetch, so rows never mix two adjustment bases."""
    fetched = get(window)
    if window.why != "incremental":
        return window, fetched, "full"
    why, revisions = readjustment(old, old_events, fetched, tolerance)
    notes += revisions
    if why is None:
        return window, fetched, "incremental"
    notes.append(f"ticker {get.ticker}: history re-adjusted ({why}); fetched it again")
    since = None if covered is None else min(covered, start or covered)
    full_end = _full_end(end, as_date(stored[-1]))
    window = Window(since, full_end, None, "re-adjusted")
    return window, get(window), "refetch"


def _combine(
    ticker: str,
    mode: str,
    old: pd.DataFrame | None,
    old_events: pd.DataFrame | None,
    stored: np.ndarray | None,
    fetched: Fetched,
    answered: np.ndarray,
    notes: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame | None, int]:
    """(prices, events, stored days removed) to store: merged into the old ones when
    incremental (stored days the new answer's screen dropped go, noted), else the fetched
    ones (old events kept when the source returned none)."""
    if mode == "incremental":
        screened_out = np.setdiff1d(answered, day_array(fetched.prices["date"]))
        prices, removed = _merge(old, fetched.prices, screened_out)
        if removed:
            gone = np.intersect1d(stored, screened_out)
            notes.append(
                f"ticker {ticker}: removed {removed} stored day(s) the source's new "
                f"answer screened out ({', '.join(str(d) for d in gone[:5])})"
            )
        return prices, _merge_events(old_events, fetched.events), removed
    events = fetched.events if fetched.events is not None else old_events
    return fetched.prices, events, 0


def _covered_note(mode: str, covered: dt.date | None, window: Window, prices: pd.DataFrame) -> str:
    """The partition's note of from which day on fetches covered the ticker ("max": all)."""
    if mode == "incremental":
        return "max" if covered is None else covered.isoformat()
    if window.start is not None:
        return window.start.isoformat()
    # the whole history, or a look-back `period` (then: what it returned)
    return "max" if window.period is None else str(day_array(prices["date"])[0])


def _merge(
    old: pd.DataFrame, new: pd.DataFrame, screened_out: np.ndarray
) -> tuple[pd.DataFrame, int]:
    """(merged rows, stored rows removed). New rows win on shared days, and so does the
    new answer's verdict on the days its screen dropped (`screened_out`): their stored
    rows go. Old days the answer did not hold at all are kept."""
    drop = np.isin(day_array(old["date"]), screened_out)
    merged = pd.concat([old.loc[~drop], new], ignore_index=True)
    merged = merged.drop_duplicates("date", keep="last")
    return merged.sort_values("date", kind="stable").reset_index(drop=True), int(drop.sum())


def _merge_events(old: pd.DataFrame | None, new: pd.DataFrame | None) -> pd.DataFrame | None:
    if new is None:
        return old
    frames = [f[EVENT_COLUMNS] for f in (old, new) if f is not None and len(f)]
    if not frames:
        return empty_events()
    merged = pd.concat(frames, ignore_index=True)
    merged["date"] = dates(merged["date"])
    merged = merged.drop_duplicates(["date", "kind"], keep="last")
    return merged.sort_values(["date", "kind"], kind="stable").reset_index(drop=True)


def _covered_from(data_dir: Path, ticker: str, stored: np.ndarray | None) -> dt.date | None:
    """From which day on earlier fetches covered the ticker (None: its whole history)."""
    if stored is None or len(stored) == 0:
        return None
    try:
        note = lake.read_covered_from(data_dir, ticker)
    except CorruptPartitionError:
        note = None
    if note == "max":
        return None
    if note:
        return dt.date.fromisoformat(note)
    return as_date(stored[0])  # written before the note existed: what is stored
