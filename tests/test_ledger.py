"""The forecast ledger: kept once, crash- and concurrency-safe, scored when the truth
arrives (split-proof), and the live record equal to a hand computation."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickercast.delivery import ledger
from tickercast.market import lake
from tickercast.significance import dm_test, kupiec_test

DAYS = pd.bdate_range("2024-01-01", periods=80).date


def prices(close) -> pd.DataFrame:
    close = np.asarray(close, dtype=float)
    return pd.DataFrame(
        {
            "date": DAYS[: len(close)],
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "adj_close": close,
            "volume": 100.0,
        }
    )


def closes(seed: int = 0) -> np.ndarray:
    return 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, len(DAYS))))


def forecast_rows(ticker, origin_row, close, version=1, horizon=5, target="mean_close", shift=1.0):
    last = float(close[origin_row])
    f = last * shift
    return [
        {
            "ticker": ticker,
            "version": version,
            "as_of": str(DAYS[origin_row]),
            "horizon": horizon,
            "target": target,
            "output": 1,
            "last_close": last,
            "forecast": f,
            "lo_80": f * 0.98,
            "hi_80": f * 1.02,
            "lo_95": f * 0.97,
            "hi_95": f * 1.03,
        }
    ]


def test_a_forecast_is_kept_once(tmp_path: Path):
    close = closes()
    rows = forecast_rows("AAA", 10, close)
    assert ledger.append(tmp_path, rows, bundle_sha={"AAA": "b"}, data_sha={"AAA": "d"}) == 1
    assert ledger.append(tmp_path, rows, bundle_sha={"AAA": "b"}, data_sha={"AAA": "d"}) == 0
    assert ledger.append(tmp_path, forecast_rows("AAA", 10, close, version=2)) == 1
    kept = ledger.read(tmp_path, "AAA")
    assert len(kept) == 2 and kept["version"].tolist() == [1, 2]
    assert kept["bundle_sha"].iloc[0] == "b" and kept["data_sha"].iloc[0] == "d"
    # the folder reads as one Parquet dataset (pyarrow skips hidden temporary names)
    assert len(pd.read_parquet(ledger.ticker_dir(tmp_path, "AAA"))) == 2


def _writer(data_dir: str, start: int, stop: int) -> None:
    close = closes()
    for row in range(start, stop):
        ledger.append(data_dir, forecast_rows("CCC", row, close))


def test_two_processes_appending_at_once_lose_and_duplicate_nothing(tmp_path: Path):
    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), 0, 40)) for _ in range(2)]
    writers.append(ctx.Process(target=_writer, args=(str(tmp_path), 30, 60)))
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    kept = ledger.read(tmp_path, "CCC")
    assert sorted(kept["as_of"]) == sorted(str(d) for d in DAYS[:60])  # each once


def _endless(data_dir: str) -> None:
    close = closes()
    for n in range(10_000):
        ledger.append(data_dir, forecast_rows("KIL", n % 75, close, version=n // 75 + 1))


def test_a_run_killed_while_appending_leaves_a_readable_ledger(tmp_path: Path):
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_endless, args=(str(tmp_path),))
    proc.start()
    folder = ledger.ticker_dir(tmp_path, "KIL")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(folder.glob("*.parquet"))) < 30:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    kept = ledger.read(tmp_path, "KIL")  # every file whole: none half-written
    assert len(kept) >= 30
    assert not kept.duplicated(["as_of", "version"]).any()
    before = len(kept)
    _writer_rest = forecast_rows("KIL", 0, closes(), version=1)
    assert (
        ledger.append(tmp_path, _writer_rest) == 0 and len(ledger.read(tmp_path, "KIL")) == before
    )


def test_scored_rows_and_the_live_record_match_a_hand_computation(tmp_path: Path):
    close = closes(3)
    lake.write_partition(tmp_path, "SCO", prices(close))
    for origin in range(20, 70, 2):
        ledger.append(tmp_path, forecast_rows("SCO", origin, close, shift=1.001))
    # a forecast whose days have not all arrived is not scored yet
    ledger.append(tmp_path, forecast_rows("SCO", 77, close))
    scored = ledger.score(tmp_path, "SCO")
    assert len(scored) == 25 and "2024-04-22" not in set(scored["as_of"])
    origins = np.arange(20, 70, 2)
    realized = np.array([close[o + 1 : o + 6].mean() for o in origins])
    forecast = close[origins] * 1.001
    assert scored["realized"].to_numpy() == pytest.approx(realized)
    assert scored["error"].to_numpy() == pytest.approx(forecast - realized)
    hits = (forecast * 0.98 <= realized) & (realized <= forecast * 1.02)
    assert scored["hit_80"].tolist() == hits.tolist()
    live = ledger.live_record(scored)
    naive = close[origins] - realized
    mae, naive_mae = np.abs(forecast - realized).mean(), np.abs(naive).mean()
    assert live["n"] == 25 and live["skill"] == pytest.approx(1 - mae / naive_mae)
    expected = dm_test(np.zeros(25), forecast - realized, naive, 5).p_value
    assert live["dm_p"] == pytest.approx(expected)
    assert live["coverage_80"] == pytest.approx(kupiec_test(hits, 0.8).coverage)


def test_a_split_between_issue_and_truth_is_no_forecast_error(tmp_path: Path):
    close = closes(5)
    lake.write_partition(tmp_path, "SPL", prices(close))
    ledger.append(tmp_path, forecast_rows("SPL", 30, close))
    before = ledger.score(tmp_path, "SPL")
    # a 2:1 split later: the vendor re-adjusts the whole stored history by 1/2
    lake.write_partition(tmp_path, "SPL", prices(close / 2))
    after = ledger.score(tmp_path, "SPL")
    assert after["error"].to_numpy() == pytest.approx(before["error"].to_numpy())
    assert after["realized"].iloc[0] == pytest.approx(close[31:36].mean())


def test_a_bad_record_is_flagged():
    n = 40
    scored = pd.DataFrame(
        {
            "output": 1,
            "horizon": 1,
            "as_of": [str(d) for d in DAYS[:n]],
            "error": np.full(n, 3.0) + np.random.default_rng(0).normal(0, 0.1, n),
            "naive_error": np.random.default_rng(1).normal(0, 1.0, n),
            "hit_80": [i % 4 == 0 for i in range(n)],  # 25% coverage of an 80% band
        }
    )
    live = ledger.live_record(scored)
    assert "80% coverage 25% significantly below nominal" in live["flag"]
    assert "significantly worse than naive" in live["flag"]
