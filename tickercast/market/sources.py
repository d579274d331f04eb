"""Offline price sources: the bundled sample, Yahoo-export CSVs, and the tutorial's sine wave.

Each returns a canonical frame (`tickercast.market.schema.PRICE_COLUMNS`) plus how many rows it
dropped, so ingest can report what it let in and what it refused.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tickercast.market.locate import sample_path
from tickercast.market.schema import PRICE_COLUMNS, PRICE_SCHEMA
from tickercast.market.validate import MAX_VOLUME

_CSV_FIELDS = {
    "date": "date",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "adj close": "adj_close",
    "adj_close": "adj_close",
    "adjclose": "adj_close",
    "volume": "volume",
}
_REQUIRED = ("date", "open", "high", "low", "close", "volume")
# A day, optionally with the time and UTC offset of yfinance's exports (00:00:00-04:00).
_DATE = re.compile(
    r"(?P<day>\d{4}-\d{2}-\d{2})(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)


class MalformedFileError(ValueError):
    """A source file that cannot be trusted; the message names file, line and field."""


@dataclass
class Loaded:
    """A source's prices, how many all-null rows it dropped, and where each row came from."""

    prices: pd.DataFrame
    dropped_null_rows: int = 0
    origin: Path | None = None
    lines: dict[dt.date, int] = field(default_factory=dict)

    def where(self, day: dt.date | None) -> str:
        """'<file>, line <n>' for a day's row when the rows came from a file, else ''."""
        if self.origin is None:
            return ""
        line = self.lines.get(day) if day is not None else None
        return f"{self.origin}, line {line}" if line else str(self.origin)


# Cells a vendor writes for a value it does not have (Yahoo: `null`).
_NO_VALUE = frozenset({"", "null", "nan"})


def load_csv(path: str | Path, missing_ok: bool = False) -> Loaded:
    """Parse one Yahoo-export CSV strictly; Yahoo's all-`null` rows are dropped and counted.

    With `missing_ok` a price cell (open, high, low, close, adj close) may be empty,
    `null` or `nan`: it is read as NaN and left to `screen_prices` (which drops a row
    without a close and counts the others' quirks); without, such a cell is malformed.
    Text that is no number is malformed either way.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise MalformedFileError(f"{path}, line 1: empty file, expected a header") from None
        index = _header_index(header, path)
        rows: dict[str, list] = {c: [] for c in PRICE_COLUMNS}
        lines: dict[dt.date, int] = {}
        dropped = 0
        for line_no, record in enumerate(reader, start=2):
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                raise MalformedFileError(
                    f"{path}, line {line_no}: {len(record)} fields, header has {len(header)}"
                )
            values = {name: record[i].strip() for name, i in index.items()}
            if all(values[f].lower() == "null" for f in values if f != "date"):
                dropped += 1
                continue
            day = _parse_date(values["date"], path, line_no)
            _check_day_order(day, rows["date"], lines, path, line_no)
            lines[day] = line_no
            rows["date"].append(day)
            _append_values(rows, values, path, line_no, missing_ok)
    if not rows["date"]:
        what = f"all {dropped} data rows are null" if dropped else "no data rows"
        raise MalformedFileError(f"{path}, line 2: {what}, expected at least one trading day")
    return Loaded(pd.DataFrame(rows), dropped, origin=path, lines=lines)


def _header_index(header: list[str], path: Path) -> dict[str, int]:
    """Column of each known field, refusing a header with duplicate or missing fields."""
    # Case-insensitive; the web table's "Close*" / "Adj Close**" footnote marks too.
    names = [_CSV_FIELDS.get(h.strip().rstrip("*").strip().lower()) for h in header]
    duplicate = sorted({n for n in names if n and names.count(n) > 1})
    if duplicate:
        raise MalformedFileError(f"{path}, line 1: duplicate column(s) {duplicate}")
    missing = [f for f in _REQUIRED if f not in names]
    if missing:
        raise MalformedFileError(
            f"{path}, line 1: missing column(s) {missing}; header was {header}"
        )
    return {name: i for i, name in enumerate(names) if name}


def _check_day_order(
    day: dt.date, days: list[dt.date], lines: dict[dt.date, int], path: Path, line_no: int
) -> None:
    """Refuse a repeated or out-of-order day, naming the line it clashes with."""
    if day in lines:
        raise MalformedFileError(
            f"{path}, line {line_no}, field date: {day} repeats line {lines[day]}"
        )
    if days and day < days[-1]:
        raise MalformedFileError(
            f"{path}, line {line_no}, field date: {day} comes after "
            f"{days[-1]} (line {lines[days[-1]]}); rows must be sorted"
        )


def _append_values(
    rows: dict[str, list], values: dict[str, str], path: Path, line_no: int, missing_ok: bool
) -> None:
    """Parse one row's prices and volume into `rows` (adj_close defaults to close)."""
    for name in ("open", "high", "low", "close"):
        rows[name].append(_parse_price(values[name], path, line_no, name, missing_ok))
    adj = values.get("adj_close")
    rows["adj_close"].append(
        _parse_price(adj, path, line_no, "adj_close", missing_ok) if adj else rows["close"][-1]
    )
    volume = _parse_number(values["volume"], path, line_no, "volume")
    if volume >= MAX_VOLUME:  # int64 and every share count end far below
        raise MalformedFileError(
            f"{path}, line {line_no}, field volume: {values['volume']!r} is not a "
            f"volume (>= {MAX_VOLUME:g})"
        )
    if volume != int(volume):
        raise MalformedFileError(
            f"{path}, line {line_no}, field volume: {values['volume']!r} is not whole"
        )
    rows["volume"].append(int(volume))


def _parse_date(text: str, path: Path, line_no: int) -> dt.date:
    """YYYY-MM-DD, or the exchange-local timestamp yfinance's `to_csv()` writes."""
    match = _DATE.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        return dt.date.fromisoformat(match["day"])
    except ValueError:
        raise MalformedFileError(
            f"{path}, line {line_no}, field date: {text!r} is not a YYYY-MM-DD date"
        ) from None


def _parse_price(text: str, path: Path, line_no: int, field: str, missing_ok: bool) -> float:
    """A price cell; a vendor's empty or `null` cell is NaN when `missing_ok`."""
    if missing_ok and text.lower() in _NO_VALUE:
        return math.nan
    return _parse_number(text, path, line_no, field)


def _parse_number(text: str, path: Path, line_no: int, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MalformedFileError(
            f"{path}, line {line_no}, field {field}: {text!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise MalformedFileError(f"{path}, line {line_no}, field {field}: {text!r} is not finite")
    return value


def load_sample(ticker: str) -> Loaded:
    """The bundled offline sample (real Yahoo exports, see data/sample/README.md)."""
    table = pq.read_table(sample_path(ticker), schema=PRICE_SCHEMA)
    return Loaded(table.to_pandas())


def sine_prices(step: float = 0.1, cycles: float = 10.0) -> Loaded:
    """The tutorial's sine wave sin(arange(0, 20*pi, 0.1)) as a price series.

    The wave is shifted by +2 so prices stay positive (the lake refuses prices <= 0);
    scaling makes the shift invisible to the model, and dates are consecutive business days.
    """
    wave = np.sin(np.arange(0, 2 * cycles * math.pi, step)) + 2.0
    dates = pd.bdate_range("2000-01-03", periods=len(wave)).date
    frame = pd.DataFrame(
        {
            "date": dates,
            "open": wave,
            "high": wave,
            "low": wave,
            "close": wave,
            "adj_close": wave,
            "volume": np.zeros(len(wave), dtype=np.int64),
        }
    )
    return Loaded(frame)
