"""Gaps left by dropped rows are known to windowing (issue 25): split, bridge or refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.sources import load_sample
from tickercast.modeling.preprocess import GapError, preprocess
from tickercast.modeling.windows import anchors_for, gap_windows
from tickercast.sections import PreprocessSettings

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"


def real_rows(n: int, ticker: str = "AAPL") -> pd.DataFrame:
    """The last `n` rows of a real Yahoo export (shared data), or of the bundled sample."""
    path = SHARED / "prices" / f"{ticker}.csv"
    frame = (
        pd.read_csv(path).rename(columns=str.lower).rename(columns={"adj close": "adj_close"})
        if path.is_file()
        else load_sample(ticker).prices
    )
    return frame.dropna().tail(n).reset_index(drop=True)


def write_csv(folder: Path, frame: pd.DataFrame, name: str = "AAPL.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    lines = [
        f"{pd.Timestamp(r.date).date()},{r.open!r},{r.high!r},{r.low!r},{r.close!r},"
        f"{r.adj_close!r},{int(r.volume)}\n"
        for r in frame.itertuples()
    ]
    path.write_text(HEADER + "".join(lines))
    return path


def ingest_csv(tmp_path: Path, frame: pd.DataFrame, **options) -> dict:
    folder = tmp_path / "csv"
    write_csv(folder, frame)
    return ingest_ticker(
        "AAPL", "csv", tmp_path / "data", csv_dir=str(folder), options=options or None
    )


# -- gaps ------------------------------------------------------------------------------------


def gapped_history(tmp_path: Path) -> pd.DataFrame:
    """A real history whose 100 consecutive zero closes were dropped at ingest."""
    frame = real_rows(700)
    frame.loc[300:399, "close"] = 0.0
    result = ingest_csv(tmp_path, frame)
    assert result["dropped_null_rows"] == 100
    return lake.read_partition(tmp_path / "data", "AAPL")


def settings(**changes) -> PreprocessSettings:
    base = dict(start=None, features=["close"], target="close", lookback=20, horizon=5)
    return PreprocessSettings(**{**base, **changes})


def test_windows_never_span_a_gap_unannounced(tmp_path: Path) -> None:
    prices = gapped_history(tmp_path)

    spec, _ = preprocess(prices, settings(), who="ticker AAPL")  # default: split
    assert spec.on_gap == "split" and len(spec.gaps) == 1
    row, before, after, missing = spec.gaps[0]
    assert missing >= 100 and pd.Timestamp(prices["date"].iloc[row + 1]) == pd.Timestamp(after)
    skipped = gap_windows(spec)
    assert sum(skipped.values()) == 20 + 5, "lookback + horizon windows hold the gap"
    built = anchors_for(spec)
    for anchors in built.values():
        assert not np.any((anchors - 20 <= row) & (row <= anchors + 5 - 1))
    total = spec.n_rows - 20 - 5 + 1  # every window that fits, before splitting
    assert sum(len(a) for a in built.values()) < total - 20

    bridged, _ = preprocess(prices, settings(on_gap="bridge"), who="ticker AAPL")
    assert gap_windows(bridged) == skipped
    assert sum(len(a) for a in anchors_for(bridged).values()) > sum(len(a) for a in built.values())

    with pytest.raises(GapError, match=r"ticker AAPL: 1 gap\(s\): .*on_gap=refuse"):
        preprocess(prices, settings(on_gap="refuse"), who="ticker AAPL")


def test_short_holiday_gaps_are_no_gaps(tmp_path: Path) -> None:
    prices = real_rows(2000)  # 2013-2020: weekends, holidays, Hurricane Sandy (2 days)
    spec, _ = preprocess(prices, settings(), who="ticker AAPL")
    assert spec.gaps == []


def test_a_split_left_without_windows_is_refused(tmp_path: Path) -> None:
    prices = gapped_history(tmp_path).iloc[:353]  # the test rows begin at the gap
    with pytest.raises(GapError, match="no test window left"):
        preprocess(prices, settings(lookback=50), who="ticker AAPL")
