"""No silent loss in the lake: a source that would remove stored days is refused with the
counts, the partition untouched, unless a replacement is asked for (then it is counted and
warned about). Every kind of source: sample, CSV, sine and a windowed fetcher (yfinance's
path: its full refetch replaces the partition)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickercast.errors import HistoryShrinkError
from tickercast.hashing import file_sha256
from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.retry import Fetched
from tickercast.market.sources import load_sample

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{r.date},{r.open},{r.high},{r.low},{r.close},{r.adj_close},{int(r.volume)}\n"
        for r in frame.itertuples()
    ]
    path.write_text(HEADER + "".join(lines))
    return path


def bars(days) -> pd.DataFrame:
    close = 100 + np.arange(len(days), dtype=float)
    return pd.DataFrame(
        {
            "date": list(days),
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "adj_close": close,
            "volume": 1000.0,
        }
    )


def unchanged(data: Path, ticker: str):
    path = lake.partition_path(data, ticker)
    digest = file_sha256(path)
    return lambda: file_sha256(path) == digest


def test_a_shorter_csv_over_the_sample_is_refused_then_replaced_when_asked(tmp_path: Path):
    data = tmp_path / "data"
    first = ingest_ticker("AAPL", "sample", data)
    same = unchanged(data, "AAPL")
    tail = load_sample("AAPL").prices.tail(100)
    write_csv(tmp_path / "csv" / "AAPL.csv", tail)
    csv_dir = str(tmp_path / "csv")
    removed = first["rows"] - 100
    with pytest.raises(HistoryShrinkError, match=rf"AAPL.*100 rows.*remove {removed:,} stored"):
        ingest_ticker("AAPL", "csv", data, csv_dir=csv_dir)
    assert same() and len(lake.read_partition(data, "AAPL")) == first["rows"]

    replaced = ingest_ticker("AAPL", "csv", data, csv_dir=csv_dir, options={"replace": True})
    assert replaced["rows"] == 100 and replaced["rows_removed"] == removed
    assert any(f"{removed:,} days removed" in w for w in replaced["warnings"])
    # the same file again removes nothing: no refusal, nothing to report
    again = ingest_ticker("AAPL", "csv", data, csv_dir=csv_dir)
    assert again["rows_removed"] == 0 and again["rows_added"] == 0


def test_a_longer_history_is_never_refused(tmp_path: Path):
    data, csv_dir = tmp_path / "data", tmp_path / "csv"
    days = pd.bdate_range("2020-01-01", periods=60).date
    write_csv(csv_dir / "XYZ.csv", bars(days[10:]))
    ingest_ticker("XYZ", "csv", data, csv_dir=str(csv_dir))
    write_csv(csv_dir / "XYZ.csv", bars(days))
    grown = ingest_ticker("XYZ", "csv", data, csv_dir=str(csv_dir))
    assert grown["rows"] == 60 and grown["rows_added"] == 10 and grown["rows_removed"] == 0


def test_the_sine_over_another_history_is_refused(tmp_path: Path):
    data, csv_dir = tmp_path / "data", tmp_path / "csv"
    write_csv(csv_dir / "WAVE.csv", bars(pd.bdate_range("1990-01-01", periods=30).date))
    ingest_ticker("WAVE", "csv", data, csv_dir=str(csv_dir))
    same = unchanged(data, "WAVE")
    with pytest.raises(HistoryShrinkError, match="WAVE: the sine source.*remove 30 stored"):
        ingest_ticker("WAVE", "sine", data)
    assert same()


def test_a_windowed_refetch_missing_stored_days_is_refused(tmp_path: Path):
    data = tmp_path / "data"
    days = pd.bdate_range("2021-03-01", periods=40).date
    answers = [bars(days[10:]), bars(days[:30])]  # the refetch lacks the last 10 days

    def fetch(ticker, start, end, period) -> Fetched:
        return Fetched(answers.pop(0) if len(answers) > 1 else answers[0])

    ingest_ticker("WIN", "yfinance", data, fetch=fetch, start=days[10], end=days[-1])
    same = unchanged(data, "WIN")
    with pytest.raises(HistoryShrinkError, match=r"WIN.*remove 10 stored days"):
        # a start before the stored span: the whole span is fetched again and replaces it
        ingest_ticker("WIN", "yfinance", data, fetch=fetch, start=days[0], end=days[-1])
    assert same()
    replaced = ingest_ticker(
        "WIN",
        "yfinance",
        data,
        fetch=fetch,
        start=days[0],
        end=days[-1],
        options={"replace": True},
    )
    assert replaced["rows_removed"] == 10
    assert lake.read_partition(data, "WIN")["date"].max() == dt.date(2021, 4, 9)


def test_replace_is_a_setting_of_every_ingesting_command():
    from tickercast.config import IngestConfig, RetrainConfig

    assert IngestConfig(replace=True).ingest.options().replace is True
    assert RetrainConfig().ingest.options().replace is False


def test_two_csv_files_differing_only_in_case_are_refused_naming_both(tmp_path: Path):
    import sys

    from tickercast.market.locate import AmbiguousFileError, csv_path

    folder = tmp_path / "csv"
    write_csv(folder / "AAPL.csv", bars(pd.bdate_range("2020-01-01", periods=5).date))
    write_csv(folder / "aapl.csv", bars(pd.bdate_range("2021-01-01", periods=5).date))
    if len(list(folder.iterdir())) < 2:  # a case-insensitive file system holds one
        pytest.skip(f"case-insensitive file system ({sys.platform})")
    with pytest.raises(AmbiguousFileError, match=r"AAPL\.csv and aapl\.csv .* differ only in case"):
        csv_path(folder, "AAPL")
    with pytest.raises(AmbiguousFileError):
        ingest_ticker("AAPL", "csv", tmp_path / "data", csv_dir=str(folder))
    assert not lake.partition_path(tmp_path / "data", "AAPL").exists()


def test_a_universes_csv_files_are_found_with_one_listing_of_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The flows' preflight fingerprints every ticker before any step: a folder listed per
    ticker made it quadratic (500 tickers: 0.9 s a pass). One listing, same answers."""
    from tickercast.market.locate import csv_path, source_fingerprints

    folder = tmp_path / "csv"
    days = pd.bdate_range("2020-01-01", periods=5).date
    tickers = [f"T{i}" for i in range(6)]
    for ticker in tickers:
        write_csv(folder / f"{ticker.lower()}.csv", bars(days))
    listings: list[Path] = []
    real = Path.iterdir

    def counted(self: Path):
        listings.append(self)
        return real(self)

    monkeypatch.setattr(Path, "iterdir", counted)
    prints = source_fingerprints("csv", tickers, str(folder))
    assert listings == [folder]
    assert list(prints) == tickers
    assert prints == {t: file_sha256(csv_path(folder, t)) for t in tickers}
    with pytest.raises(FileNotFoundError, match=r"ticker NOPE: no NOPE\.csv in"):
        source_fingerprints("csv", [*tickers, "NOPE"], str(folder))
    loose = source_fingerprints("csv", ["T1", "NOPE", "bad name"], str(folder), strict=False)
    assert loose == {"T1": prints["T1"], "NOPE": None, "bad name": None}
    assert source_fingerprints("csv", ["T1"], str(tmp_path / "gone"), strict=False) == {"T1": None}
