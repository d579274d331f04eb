"""Ingest: fetch a ticker from its source, validate it, and merge it into its lake partition.

Two kinds of source:

- Whole-history sources (`sample`, `csv`, `sine`) hand over everything they hold. Their
  rows replace the ticker's partition, so the partition depends on the file alone and
  retrain can cache the step by the file's hash (dates are applied later, in preprocess).
- Windowed sources (`yfinance`, or any `Fetcher` passed in by a test or benchmark) are
  asked for a date window. The first run fetches `start`..`end` (or `period`); a rerun
  asks only for the days after the last stored one, re-reading the last `overlap_days`
  stored days to pick up revisions, merges (fetched rows win), de-duplicates by date and
  rewrites the partition atomically. When the overlap shows that history was re-adjusted
  since the last run (a split or dividend not stored yet, or every overlapping close /
  adj_close changed beyond `tolerance`), the ticker's full stored span is fetched again
  and replaces the partition, so old and new rows never mix two adjustment bases.

Fetches are retried here, per ticker, when the failure is transient (connection errors,
timeouts, HTTP 5xx, Yahoo's rate limit: `TransientSourceError`) with exponential backoff
and jitter; permanent failures (unknown ticker, no rows) raise at once. The whole
read-fetch-merge-write cycle holds the ticker's lock, so two concurrent ingests of one
ticker serialise and the second one merges on top of the first.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd

from tasks import lake
from tasks.errors import PermanentSourceError, TransientSourceError
from tasks.hashing import file_sha256
from tasks.schema import EVENT_COLUMNS, PRICE_COLUMNS, empty_events
from tasks.sources import (
    Loaded,
    MalformedFileError,
    csv_path,
    load_csv,
    load_sample,
    sample_path,
    sine_prices,
)
from tasks.tickers import validate_ticker
from tasks.validate import InvalidPricesError, check_prices, move_warnings

T = TypeVar("T")
FailOn = Literal["any", "all", "never"]
WHOLE_SOURCES = ("sample", "csv", "sine")
WINDOWED_SOURCES = ("yfinance",)
SOURCES = tuple(sorted(WHOLE_SOURCES + WINDOWED_SOURCES))
# Failures worth another try: ours (tasks.errors) and the standard library's own.
TRANSIENT = (TransientSourceError, ConnectionError, TimeoutError)
# What to do with a stored lake file that cannot be read back (see IngestOptions.on_corrupt).
ON_CORRUPT = ("reingest", "skip", "fail")


class CorruptSkippedError(lake.CorruptPartitionError):
    """on_corrupt='skip': the ticker was left as it was; the message names the file."""


@dataclass(frozen=True)
class IngestOptions:
    """How a windowed fetch is planned, checked and retried (JSON-ready via `to_dict`)."""

    overlap_days: int = 5  # stored days re-fetched on a rerun (>= 1: an empty answer is an error)
    move_threshold: float = 0.5  # |close_t / close_t-1 - 1| above this, without a split: warn
    tolerance: float = 1e-4  # relative change of an overlapping price that counts as changed
    retries: int = 3  # further attempts after a transient failure
    retry_delay: float = 2.0  # seconds before the first retry; doubles with each one
    max_retry_delay: float = 60.0
    jitter: float = 0.5  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
    # An unreadable stored partition or events file: "reingest" reports it and fetches the
    # ticker again (replacing it), "skip" reports it and leaves the ticker untouched (the
    # run goes on with the others), "fail" fails the ticker and changes nothing.
    on_corrupt: str = "reingest"

    def __post_init__(self) -> None:
        if self.on_corrupt not in ON_CORRUPT:
            raise ValueError(
                f"on_corrupt must be one of {list(ON_CORRUPT)}, got {self.on_corrupt!r}"
            )
        if self.overlap_days < 1:
            raise ValueError(f"overlap_days must be >= 1, got {self.overlap_days}")
        if self.retries < 0 or self.retry_delay < 0 or self.max_retry_delay < 0:
            raise ValueError("retries and retry delays must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within 0..1, got {self.jitter}")
        if self.move_threshold <= 0 or self.tolerance < 0:
            raise ValueError("move_threshold must be > 0 and tolerance >= 0")

    @classmethod
    def of(cls, value: IngestOptions | Mapping[str, Any] | None) -> IngestOptions:
        """Options from None (defaults), a mapping of some fields, or options themselves."""
        if value is None:
            return cls()
        if isinstance(value, IngestOptions):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown ingest options {unknown}; valid: {sorted(known)}")
        return cls(**dict(value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `retry` (1-based): base * 2**(retry-1), jittered."""
        base = min(self.max_retry_delay, self.retry_delay * 2 ** (retry - 1))
        return base * (1 - self.jitter + 2 * self.jitter * rng())


@dataclass
class Fetched:
    """What a windowed source returned for one request."""

    prices: pd.DataFrame
    events: pd.DataFrame | None = None  # None: the source knows nothing about events
    dropped_null_rows: int = 0


# fetch(ticker, start, end, period) -> Fetched; start/end inclusive, all optional.
Fetcher = Callable[[str, "dt.date | None", "dt.date | None", "str | None"], Fetched]


@dataclass
class _Attempts:
    """Counts source calls across the fetches of one ingest (for the report)."""

    count: int = 0
    log: list[str] = field(default_factory=list)


def call_with_retries(
    fn: Callable[[], T],
    ticker: str,
    options: IngestOptions,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    log: Callable[[str], None] | None = None,
    attempts: _Attempts | None = None,
) -> T:
    """`fn()`, retried on transient failures with exponential backoff and jitter.

    A permanent failure (anything not in `TRANSIENT`) is raised at once. After the last
    retry the transient error is raised as `TransientSourceError` naming the ticker and
    the number of attempts.
    """
    tries = options.retries + 1
    for attempt in range(1, tries + 1):
        if attempts is not None:
            attempts.count += 1
        try:
            return fn()
        except TRANSIENT as exc:
            if attempt == tries:
                raise TransientSourceError(
                    f"ticker {ticker}: gave up after {tries} attempt(s): {exc}"
                ) from exc
            wait = options.delay(attempt, rng)
            message = (
                f"ticker {ticker}: attempt {attempt}/{tries} failed ({exc}); "
                f"retrying in {wait:.2f} s"
            )
            if attempts is not None:
                attempts.log.append(message)
            if log is not None:
                log(message)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def yahoo_fetcher(session: Any = None) -> Fetcher:
    """The yfinance source as a `Fetcher`; `session` is passed on (tests replay Yahoo)."""

    def fetch(
        ticker: str, start: dt.date | None, end: dt.date | None, period: str | None
    ) -> Fetched:
        from tasks.yahoo import fetch_history

        history = fetch_history(ticker, start=start, end=end, period=period, session=session)
        return Fetched(history.prices, history.events, history.dropped_null_rows)

    return fetch


def source_fingerprint(source: str, ticker: str, csv_dir: str | None) -> str | None:
    """Content hash of what an offline source would read; None for live sources."""
    if source == "sample":
        return file_sha256(sample_path(ticker))
    if source == "csv":
        return file_sha256(csv_path(csv_dir or ".", ticker))
    if source == "sine":
        return "sine-v1"
    return None


def fetch_window(
    source: str, start: dt.date | None, end: dt.date | None
) -> tuple[str | None, str | None]:
    """The (start, end) a flow hands the ingest task, as ISO days (JSON-ready: they are part
    of its cache key). Only a windowed source (yfinance) is asked for a date range; whole
    sources are ingested whole, so their partition and cache key depend on the file alone
    (a run's own dates are applied later, in preprocess)."""
    if source not in WINDOWED_SOURCES:
        return None, None
    return (start.isoformat() if start else None, end.isoformat() if end else None)


def load_source(source: str, ticker: str, csv_dir: str | None = None) -> Loaded:
    """A whole-history source's prices (everything it holds for the ticker)."""
    if source == "sample":
        return load_sample(ticker)
    if source == "csv":
        if not csv_dir:
            raise ValueError("source 'csv' needs csv_dir")
        return load_csv(csv_path(csv_dir, ticker))
    if source == "sine":
        return sine_prices()
    raise ValueError(f"unknown source {source!r}; valid: {list(SOURCES)}")


def ingest_ticker(
    ticker: str,
    source: str,
    data_dir: str | Path,
    csv_dir: str | None = None,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    session: Any = None,
    *,
    period: str | None = None,
    options: IngestOptions | Mapping[str, Any] | None = None,
    fetch: Fetcher | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Bring one ticker's partition up to date; returns JSON-ready paths, hashes and counts.

    `fetch` replaces the named source with any windowed `Fetcher` (benchmarks, tests);
    `session` is the yfinance session (tests replay Yahoo with it). Raises, naming the
    ticker, when nothing could be stored; the partition is then unchanged.
    """
    ticker = validate_ticker(ticker)
    opts = IngestOptions.of(options)
    start_day, end_day = _as_day(start, "start"), _as_day(end, "end")
    if start_day and end_day and start_day > end_day:
        raise ValueError(f"ticker {ticker}: start {start_day} is after end {end_day}")
    if fetch is None and source == "yfinance":
        fetch = yahoo_fetcher(session)
    if fetch is None:
        if source not in WHOLE_SOURCES:
            raise ValueError(f"unknown source {source!r}; valid: {list(SOURCES)}")
        return _ingest_whole(ticker, source, Path(data_dir), csv_dir, opts)
    return _ingest_window(
        ticker, source, Path(data_dir), fetch, start_day, end_day, period, opts, sleep, log
    )


# -- whole-history sources -------------------------------------------------------------


def _ingest_whole(
    ticker: str, source: str, data_dir: Path, csv_dir: str | None, opts: IngestOptions
) -> dict:
    loaded = load_source(source, ticker, csv_dir)
    prices = _canonical(loaded.prices)
    try:
        check_prices(prices, ticker)
    except InvalidPricesError as exc:
        if loaded.origin is not None:
            raise MalformedFileError(f"{loaded.where(exc.day)}: {exc}") from exc
        raise
    notes: list[str] = []
    with lake.partition_lock(data_dir, ticker):
        old, events, corrupt = _read_stored(data_dir, ticker, opts.on_corrupt, notes)
        old_days = None if old is None else _day_array(old["date"])
        if corrupt and events is None:
            # A whole source carries no events: an unreadable events file cannot be rebuilt.
            lake.events_path(data_dir, ticker).unlink(missing_ok=True)
        path = lake.write_partition(data_dir, ticker, prices)
        digest = file_sha256(path)
    warnings = notes + move_warnings(
        prices, ticker, move_threshold=opts.move_threshold, split_days=_split_days(events)
    )
    return _result(
        ticker,
        source,
        path,
        digest,
        prices,
        old_days,
        dropped=loaded.dropped_null_rows,
        warnings=warnings,
        mode="replace",
        fetches=[],
        attempts=0,
    )


# -- windowed sources ------------------------------------------------------------------


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
    days = None if stored is None else _day_array(stored)
    if days is None or len(days) == 0:
        return Window(start, end, period, "first")
    first, last = _date(days[0]), _date(days[-1])
    if covered_from is _FIRST_STORED:
        covered_from = first
    if start is not None and covered_from is not None and start < covered_from:
        return Window(start, _full_end(end, last), None, "backfill")
    if end is not None and end <= last:
        return None
    tail = _date(days[max(0, len(days) - overlap_days)])
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
        known = set(zip(_dates(old_events["date"]), old_events["kind"], strict=True))
    if fetched.events is not None:
        for day, kind, value in zip(
            _dates(fetched.events["date"]),
            fetched.events["kind"],
            fetched.events["value"],
            strict=True,
        ):
            if (day, kind) not in known:
                return f"new {kind} on {day} ({value:g}) not in the lake", []
    shared, i_old, i_new = np.intersect1d(
        _day_array(old["date"]), _day_array(fetched.prices["date"]), return_indices=True
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


def _ingest_window(
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
    attempts = _Attempts()
    fetches: list[dict] = []

    def get(window: Window) -> Fetched:
        fetches.append(window.describe())
        got = call_with_retries(
            lambda: fetch(ticker, window.start, window.end, window.period),
            ticker,
            opts,
            sleep=sleep,
            log=log,
            attempts=attempts,
        )
        got.prices = _canonical(got.prices)
        check_prices(got.prices, ticker)
        return got

    notes: list[str] = []
    with lake.partition_lock(data_dir, ticker):
        old, old_events, _ = _read_stored(data_dir, ticker, opts.on_corrupt, notes)
        if old is None:
            old_events = None
        stored = None if old is None else _day_array(old["date"])
        covered = _covered_from(data_dir, ticker, stored)
        window = plan_window(stored, start, end, period, opts.overlap_days, covered)
        if window is None:
            path = lake.partition_path(data_dir, ticker)
            return _result(
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
        fetched = get(window)
        mode = "full"
        if window.why == "incremental":
            why, revisions = readjustment(old, old_events, fetched, opts.tolerance)
            notes += revisions
            mode = "incremental"
            if why is not None:
                notes.append(f"ticker {ticker}: history re-adjusted ({why}); fetched it again")
                since = None if covered is None else min(covered, start or covered)
                full_end = _full_end(end, _date(stored[-1]))
                window = Window(since, full_end, None, "re-adjusted")
                fetched = get(window)
                mode = "refetch"
        if mode == "incremental":
            prices = _merge(old, fetched.prices)
            events = _merge_events(old_events, fetched.events)
        else:
            prices = fetched.prices
            events = fetched.events if fetched.events is not None else old_events
        if mode == "incremental":
            note = "max" if covered is None else covered.isoformat()
        elif window.start is not None:
            note = window.start.isoformat()
        else:  # the whole history, or a look-back `period` (then: what it returned)
            note = "max" if window.period is None else str(_day_array(prices["date"])[0])
        path = lake.write_partition(data_dir, ticker, prices, covered_from=note)
        digest = file_sha256(path)
        if events is not None:
            lake.write_events(data_dir, ticker, events)
    after = _date(stored[-1]) if mode == "incremental" else None
    warnings = notes + move_warnings(
        prices,
        ticker,
        move_threshold=opts.move_threshold,
        split_days=_split_days(events),
        after=after,
    )
    return _result(
        ticker,
        source,
        path,
        digest,
        prices,
        stored,
        dropped=fetched.dropped_null_rows,
        warnings=warnings,
        mode=mode,
        fetches=fetches,
        attempts=attempts.count,
        retries=attempts.log,
    )


# -- helpers ---------------------------------------------------------------------------


def _as_day(value: str | dt.date | None, name: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a YYYY-MM-DD date") from None


# Days are handled as numpy datetime64[D] arrays: converting thousands of rows to and from
# `datetime.date` objects would cost more than the rest of an incremental ingest.
def _day_array(values: Iterable) -> np.ndarray:
    """Days as a datetime64[D] array, whatever they were stored as."""
    if isinstance(values, np.ndarray) and values.dtype == "datetime64[D]":
        return values
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    return pd.to_datetime(series).to_numpy().astype("datetime64[D]")


def _date(value: np.datetime64) -> dt.date:
    return value.astype("datetime64[D]").astype(object)


def _dates(values: Iterable) -> list[dt.date]:
    """Days as `datetime.date` objects (for the few events, not for price columns)."""
    return [_date(v) for v in _day_array(values)]


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """The price columns in order, `date` as datetime64 (for merges and checks)."""
    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidPricesError(f"source answer lacks column(s) {missing}")
    out = frame[PRICE_COLUMNS].reset_index(drop=True)
    out["date"] = _day_array(out["date"])
    return out


def _merge(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """New rows win on shared days; old days outside the fetched ones are kept."""
    merged = pd.concat([old, new], ignore_index=True)
    merged = merged.drop_duplicates("date", keep="last")
    return merged.sort_values("date", kind="stable").reset_index(drop=True)


def _merge_events(old: pd.DataFrame | None, new: pd.DataFrame | None) -> pd.DataFrame | None:
    if new is None:
        return old
    frames = [f[EVENT_COLUMNS] for f in (old, new) if f is not None and len(f)]
    if not frames:
        return empty_events()
    merged = pd.concat(frames, ignore_index=True)
    merged["date"] = _dates(merged["date"])
    merged = merged.drop_duplicates(["date", "kind"], keep="last")
    return merged.sort_values(["date", "kind"], kind="stable").reset_index(drop=True)


def _split_days(events: pd.DataFrame | None) -> set[dt.date]:
    if events is None or events.empty:
        return set()
    return set(_dates(events.loc[events["kind"] == "split", "date"]))


def _read_stored(
    data_dir: Path, ticker: str, on_corrupt: str, notes: list[str]
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, bool]:
    """(stored prices, stored events, whether a stored file was unreadable).

    Both files are read in full, so any file pyarrow cannot read back is found here,
    before anything is written. An unreadable file is handled by `on_corrupt`: "fail"
    raises `CorruptPartitionError`, "skip" raises `CorruptSkippedError` (the ticker's
    files stay as they are), "reingest" notes it and treats the file as absent, so the
    ticker is fetched again and the file replaced. Leftover temporary files of an
    interrupted write (hidden from every reader) are removed here, under the lock.
    """
    removed = lake.remove_leftovers(data_dir, ticker)
    if removed:
        notes.append(
            f"ticker {ticker}: removed {removed} leftover temporary file(s) of an "
            "interrupted write"
        )
    problems: list[str] = []
    prices = None
    path = lake.partition_path(data_dir, ticker)
    if path.is_file():
        try:
            prices = _canonical(lake.read_price_file(path).to_pandas(date_as_object=False))
        except lake.CorruptPartitionError as exc:
            problems.append(str(exc))
    try:
        events = lake.read_events(data_dir, ticker)
    except lake.CorruptPartitionError as exc:
        events = None
        problems.append(str(exc))
    if not problems:
        return prices, events, False
    found = "; ".join(problems)
    if on_corrupt == "fail":
        raise lake.CorruptPartitionError(
            f"ticker {ticker}: {found} (on_corrupt=fail: nothing was changed; remove or "
            "repair the file, or rerun with on_corrupt=reingest)"
        )
    if on_corrupt == "skip":
        raise CorruptSkippedError(
            f"ticker {ticker}: skipped (on_corrupt=skip), its files were left as they are: "
            f"{found}"
        )
    notes.append(f"ticker {ticker}: {found}; re-ingested it (on_corrupt=reingest)")
    return prices, events, True


def _covered_from(data_dir: Path, ticker: str, stored: np.ndarray | None) -> dt.date | None:
    """From which day on earlier fetches covered the ticker (None: its whole history)."""
    if stored is None or len(stored) == 0:
        return None
    try:
        note = lake.read_covered_from(data_dir, ticker)
    except lake.CorruptPartitionError:
        note = None
    if note == "max":
        return None
    if note:
        return dt.date.fromisoformat(note)
    return _date(stored[0])  # written before the note existed: what is stored


def _result(
    ticker: str,
    source: str,
    path: Path,
    digest: str,
    prices: pd.DataFrame,
    old_days: Iterable | None,
    *,
    dropped: int,
    warnings: list[str],
    mode: str,
    fetches: list[dict],
    attempts: int,
    retries: list[str] | None = None,
) -> dict:
    days = _day_array(prices["date"])
    before = _day_array(old_days) if old_days is not None else days[:0]
    return {
        "ticker": ticker,
        "source": source,
        "path": str(path),
        "sha256": digest,
        "rows": int(len(prices)),
        "rows_added": int(np.isin(days, before, invert=True).sum()),
        "first_day": str(days.min()),
        "last_day": str(days.max()),
        "dropped_null_rows": int(dropped),
        "warnings": list(warnings),
        "mode": mode,
        "fetches": fetches,
        "attempts": attempts,
        "retries": list(retries or []),
        "outputs": {str(path): digest},
    }


# -- many tickers: per-ticker report and the run's verdict ---------------------------


def report_row(
    ticker: str,
    result: dict | None = None,
    error: BaseException | str | None = None,
    cached: bool = False,
) -> dict:
    """One line of the run report (the Prefect table artifact's columns)."""
    if result is None:
        message = error if isinstance(error, str) else _describe(error)
        return {
            "ticker": ticker,
            # skipped by choice (on_corrupt=skip) is reported, not counted as a failure
            "status": "skipped" if isinstance(error, CorruptSkippedError) else "failed",
            "rows_added": 0,
            "rows": None,
            "first_day": None,
            "last_day": None,
            "rows_dropped": 0,
            "warnings": [],
            "mode": None,
            "error": message,
        }
    return {
        "ticker": result["ticker"],
        "status": "cached" if cached else "ok",
        "rows_added": 0 if cached else result.get("rows_added", result["rows"]),
        "rows": result["rows"],
        "first_day": result["first_day"],
        "last_day": result["last_day"],
        "rows_dropped": 0 if cached else result["dropped_null_rows"],
        "warnings": [] if cached else list(result["warnings"]),
        "mode": "cached" if cached else result.get("mode"),
        "error": None,
    }


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "failed"
    if isinstance(error, CorruptSkippedError):
        return str(error).splitlines()[0]
    kind = "permanent" if isinstance(error, PermanentSourceError) else type(error).__name__
    if isinstance(error, TransientSourceError):
        kind = "transient"
    return f"{kind}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"


def verdict(rows: list[dict], fail_on: FailOn) -> str | None:
    """Why the run should end Failed under `fail_on`, or None when it should complete.

    `all`: only when every ticker failed; `any`: when at least one did; `never`: the
    report alone tells (the run completes).
    """
    failed = [r["ticker"] for r in rows if r["status"] == "failed"]
    if fail_on not in ("any", "all", "never"):
        raise ValueError(f"fail_on must be one of any, all, never; got {fail_on!r}")
    if not failed or fail_on == "never":
        return None
    if fail_on == "all" and len(failed) < len(rows):
        return None
    listed = ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else "")
    return f"{len(failed)} of {len(rows)} ticker(s) failed: {listed}"


def ingest_many(
    tickers: Iterable[str],
    source: str,
    data_dir: str | Path,
    **kwargs: Any,
) -> tuple[list[dict], dict[str, dict]]:
    """`ingest_ticker` for each ticker; one failure never stops the others.

    Returns the report rows and the successful results by ticker (the flow does the same
    with one Prefect task per ticker).
    """
    rows, results = [], {}
    for ticker in tickers:
        try:
            result = ingest_ticker(ticker, source, data_dir, **kwargs)
        except Exception as exc:  # reported per ticker; the next one still runs
            rows.append(report_row(str(ticker), error=exc))
            continue
        results[result["ticker"]] = result
        rows.append(report_row(result["ticker"], result))
    return rows, results
