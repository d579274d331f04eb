"""The Yahoo-like universe generator (tests/synthetic.py) that bench/nightly_universe.py
ingests: consistent bars, Yahoo's quirks counted by ingest, one more day = same history."""

from __future__ import annotations

import numpy as np

from tests.synthetic import write_yahoo_universe, yahoo_history
from tickercast.market import lake
from tickercast.market.locate import csv_tickers
from tickercast.market.report import ingest_many


def test_bars_are_consistent_and_returns_cluster():
    frame = yahoo_history("SYN1", quirks=False)
    assert len(frame) == 2520 and frame["Date"].is_monotonic_increasing
    o, h, lo, c = (frame[k].to_numpy() for k in ("Open", "High", "Low", "Close"))
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (lo > 0).all()
    assert (frame["Volume"] > 0).all() and (frame["Adj Close"] <= c).all()
    r = np.diff(np.log(c))
    kurtosis = ((r - r.mean()) ** 4).mean() / r.var() ** 2
    assert kurtosis > 4  # fat tails, as daily stock returns have
    big = np.abs(r) > np.quantile(np.abs(r), 0.9)
    assert big[1:][big[:-1]].mean() > 0.15  # large moves cluster (GARCH), not i.i.d. 10%
    assert not np.allclose(yahoo_history("SYN2", 300)["Close"], frame["Close"][:300])


def test_one_more_day_extends_the_same_history():
    frame, longer = yahoo_history("SYN1", 500), yahoo_history("SYN1", 501)
    assert longer.iloc[:-1].equals(frame)
    assert longer["Date"].iloc[-1] > frame["Date"].iloc[-1]


def test_ingest_counts_the_quirks_and_keeps_every_valid_close(tmp_path):
    written = write_yahoo_universe(tmp_path / "csv", ["SYN1", "SYN2"], days=300)
    assert csv_tickers(tmp_path / "csv") == ["SYN1", "SYN2"]
    rows, _ = ingest_many(["SYN1", "SYN2"], "csv", tmp_path / "data", csv_dir=str(tmp_path / "csv"))
    for row in rows:
        assert row["status"] == "ok", row
        assert row["quirks"] == {"open_zero": 3, "high_below_low": 1}, row["quirks"]
        assert row["rows_dropped"] == 1 and row["rows"] == written[row["ticker"]] - 1
    stored = lake.read_partition(tmp_path / "data", "SYN1")
    assert stored["close"].notna().all() and stored["open"].isna().sum() == 3
