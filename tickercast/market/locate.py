"""Where a source's prices are and what identifies them, without reading them.

Flows call these before any work (preflight, cache keys of the ingest step), so this
module stays free of pandas and pyarrow: a fully cached rerun never imports either.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tickercast import layout
from tickercast.choices import WINDOWED_SOURCES
from tickercast.hashing import file_sha256
from tickercast.tickers import validate_ticker


def source_fingerprints(
    source: str, tickers: list[str], csv_dir: str | None, strict: bool = True
) -> dict[str, str | None]:
    """Content hash of what an offline source would read for each ticker (None for live
    sources), a CSV folder listed once for all of them.
    The first ticker (in order) whose input is not there raises, naming it; with
    `strict=False` it gets None instead (its own step then fails, naming what is missing)."""
    folder: CsvFolder | None = None
    if source == "csv":
        try:
            folder = CsvFolder(csv_dir or ".")
        except OSError:
            if strict:
                raise
            return dict.fromkeys(tickers)

    def one(ticker: str) -> str | None:
        if folder is not None:
            return file_sha256(folder.path(ticker))
        if source == "sample":
            return file_sha256(sample_path(ticker))
        return "sine-v1" if source == "sine" else None

    prints: dict[str, str | None] = {}
    for ticker in tickers:
        try:
            prints[ticker] = one(ticker)
        except (OSError, ValueError):
            if strict:
                raise
            prints[ticker] = None
    return prints


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


class AmbiguousFileError(ValueError):
    """Two files that name the same ticker (aapl.csv, AAPL.csv): neither is picked."""


def csv_path(csv_dir: str | Path, ticker: str) -> Path:
    """Where a ticker's CSV lives: <TICKER>.csv in the folder (any case), or `csv_dir`
    itself when it is one file (that file then holds the ticker, whatever its name)."""
    ticker = validate_ticker(ticker)
    return CsvFolder(csv_dir).path(ticker)


class CsvFolder:
    """A CSV import's folder (or one file), listed once: finding every ticker's file of a
    universe then costs one listing, not one each (500 tickers listed a 500-file folder
    500 times per pass, 0.9 s of a nightly's start before any step ran; measured)."""

    def __init__(self, csv_dir: str | Path) -> None:
        self.folder = Path(csv_dir)
        self.single = self.folder.is_file()
        self.by_ticker: dict[str, list[Path]] = {}
        if self.single:
            return
        if not self.folder.is_dir():
            raise FileNotFoundError(f"csv_dir {self.folder} is not a folder or a CSV file")
        for p in sorted(self.folder.iterdir()):
            if p.suffix.lower() == ".csv":
                self.by_ticker.setdefault(p.stem.upper(), []).append(p)

    def path(self, ticker: str) -> Path:
        """`csv_path` of `ticker` in this folder."""
        ticker = validate_ticker(ticker)
        if self.single:
            return self.folder
        found = self.by_ticker.get(ticker, [])
        if len(found) > 1:
            names = " and ".join(p.name for p in found)
            raise AmbiguousFileError(
                f"ticker {ticker}: {names} in {self.folder} differ only in case; keep one of them"
            )
        if found and found[0].is_file():
            return found[0]
        raise FileNotFoundError(f"ticker {ticker}: no {ticker}.csv in {self.folder}")


def csv_tickers(csv_dir: str | Path) -> list[str]:
    """The tickers a CSV import covers: the file's stem, or every `*.csv` stem in a folder.

    Stems are returned as found (upper-cased, not validated): a file whose name is not
    a ticker is reported as that ticker's failure instead of stopping the others.
    """
    path = Path(csv_dir)
    if path.is_file():
        return [path.stem.upper()]
    if not path.is_dir():
        raise FileNotFoundError(f"csv_dir {path} is not a folder or a CSV file")
    stems = sorted({p.stem.upper() for p in path.iterdir() if p.suffix.lower() == ".csv"})
    if not stems:
        raise FileNotFoundError(f"csv_dir {path} holds no .csv files")
    return stems


def sample_tickers() -> list[str]:
    """Tickers of the bundled offline sample."""
    return sorted(p.stem for p in layout.sample_dir().glob("*.parquet"))


def sample_path(ticker: str) -> Path:
    ticker = validate_ticker(ticker)
    path = layout.sample_dir() / f"{ticker}.parquet"
    if not path.is_file():
        available = sorted(p.stem for p in layout.sample_dir().glob("*.parquet"))
        raise FileNotFoundError(
            f"ticker {ticker} is not in the bundled sample; available: {available}"
        )
    return path
