"""Ingest at scale: 500 tickers x 20 years of synthetic daily bars, and 100 tickers beside it.

Both go through the same code path as a live Yahoo ingest (`tickercast.market.ingest.ingest_ticker`
with a windowed `Fetcher`: plan the window, fetch, validate, merge, atomic write under
the ticker's lock, events, report); only the fetch is a deterministic random walk
instead of an HTTP request. Each size runs in a fresh process so its peak memory
(ru_maxrss) is its own. Linear in rows means equal rows/s at 100 and at 500 tickers
(ratio ~1.0) and a peak memory that does not grow with the number of tickers.

The 500-ticker process then reruns every ticker a week later (incremental: only the new
days plus the 5-day overlap are fetched) to show what a nightly run costs per ticker.

Run: python bench/ingest_scale.py [--tickers 500] [--small 100] [--years 20]
(writes a RESULTS.md row; about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIRST_END = dt.date(2024, 12, 24)
RERUN_END = dt.date(2024, 12, 31)


def synthetic_fetcher(years: int):
    """A windowed source: each ticker's own seeded random walk, sliced to the request."""
    import numpy as np
    import pandas as pd

    from tickercast.market.retry import Fetched

    first_day = dt.date(RERUN_END.year - years, 1, 1)
    days = pd.bdate_range(first_day, RERUN_END).to_numpy().astype("datetime64[D]")

    def fetch(ticker: str, start, end, period) -> Fetched:
        rng = np.random.default_rng(zlib.crc32(ticker.encode()))
        n = len(days)
        close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
        open_ = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, 0.003, n))
        wick = np.abs(rng.normal(0, 0.006, n))
        frame = pd.DataFrame(
            {
                "date": days,
                "open": open_,
                "high": np.maximum(open_, close) * (1 + wick),
                "low": np.minimum(open_, close) * (1 - wick),
                "close": close,
                "adj_close": close * 0.98,
                "volume": rng.integers(1_000, 5_000_000, n),
            }
        )
        keep = np.ones(n, dtype=bool)
        if start is not None:
            keep &= days >= np.datetime64(start, "D")
        if end is not None:
            keep &= days <= np.datetime64(end, "D")
        return Fetched(frame[keep].reset_index(drop=True), events=None)

    return fetch


def child(n_tickers: int, years: int, data_dir: str, rerun: bool) -> dict:
    """One measured run in this process; prints and returns its figures."""
    from tickercast.market.ingest import ingest_ticker

    fetch = synthetic_fetcher(years)
    tickers = [f"T{i:04d}" for i in range(n_tickers)]
    ingest_ticker("WARMUP", "synthetic", data_dir, end=FIRST_END, fetch=fetch)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    rows = 0
    for ticker in tickers:
        rows += ingest_ticker(ticker, "synthetic", data_dir, end=FIRST_END, fetch=fetch)["rows"]
    seconds = time.perf_counter() - started
    out = {
        "tickers": n_tickers,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "base_rss_mb": base_rss / 1024,
    }
    if rerun:
        started = time.perf_counter()
        added = 0
        for ticker in tickers:
            result = ingest_ticker(ticker, "synthetic", data_dir, end=RERUN_END, fetch=fetch)
            assert result["mode"] == "incremental", result["mode"]
            added += result["rows_added"]
        out["rerun_seconds"] = time.perf_counter() - started
        out["rerun_rows_added"] = added
    return out


def measure(n_tickers: int, years: int, rerun: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as data_dir:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(n_tickers),
                "--years",
                str(years),
                "--data-dir",
                data_dir,
                *(["--rerun"] if rerun else []),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--rerun", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.years, args.data_dir, args.rerun)))
        return

    small = measure(args.small, args.years, rerun=False)
    large = measure(args.tickers, args.years, rerun=True)
    ratio = large["rows_per_s"] / small["rows_per_s"]
    per_rerun_ms = 1000 * large["rerun_seconds"] / args.tickers
    for name, run in (("small", small), ("large", large)):
        print(f"{name}: {json.dumps(run)}")
    print(
        f"rows/s {small['rows_per_s']:,.0f} ({args.small} tickers) vs "
        f"{large['rows_per_s']:,.0f} ({args.tickers} tickers): ratio {ratio:.2f}; "
        f"peak RSS {small['peak_rss_mb']:.0f} vs {large['peak_rss_mb']:.0f} MB; "
        f"incremental rerun {per_rerun_ms:.1f} ms/ticker"
    )

    from bench.results import record

    years = f"{args.years} y"
    record(
        "ingest_scale",
        f"| ingest scale: synthetic daily bars through `ingest_ticker` ({years} each) "
        f"| {args.small} tickers: {small['rows']:,} rows in {small['seconds']:.1f} s, "
        f"{small['rows_per_s']:,.0f} rows/s, peak RSS {small['peak_rss_mb']:.0f} MB "
        f"| {args.tickers} tickers: {large['rows']:,} rows in {large['seconds']:.1f} s, "
        f"{large['rows_per_s']:,.0f} rows/s, peak RSS {large['peak_rss_mb']:.0f} MB "
        f"({large['base_rss_mb']:.0f} MB after imports); "
        f"incremental rerun +{large['rerun_rows_added']:,} rows, {per_rerun_ms:.1f} ms/ticker "
        f"| rows/s ratio {ratio:.2f}x (1.0 = linear) |",
    )


if __name__ == "__main__":
    main()
