"""Synthetic daily prices for tests: a seeded geometric random walk in the lake's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd


def price_frame(
    close: np.ndarray, volume: np.ndarray | None = None, start: str = "2012-01-02"
) -> pd.DataFrame:
    """One row per business day from `start`: open = close, high and low 1% either side,
    adj_close = close (no splits or dividends), volume 1000 a day unless given."""
    n = len(close)
    return pd.DataFrame(
        {
            "date": pd.bdate_range(start, periods=n).date,
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "adj_close": close,
            "volume": np.full(n, 1000) if volume is None else volume,
        }
    )


def random_walk(
    n: int = 700, seed: int = 0, *, sigma: float = 0.015, start: str = "2012-01-02"
) -> pd.DataFrame:
    """`n` days of closes from 50 with daily log returns ~ N(0, sigma), and random volumes
    in 1000..4999; the same seed gives the same frame."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, sigma, n)))
    return price_frame(close, rng.integers(1_000, 5_000, n), start)


# --- Yahoo-like universes (bench/nightly_universe.py, tests) ---------------------------

YAHOO_HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
UNIVERSE_FIRST_DAY = "2015-01-02"
UNIVERSE_YEARS = 10


def _ticker_rng(ticker: str, stream: str) -> np.random.Generator:
    """A generator seeded by the ticker's name (stable across processes, unlike hash())."""
    import zlib

    return np.random.default_rng([zlib.crc32(ticker.encode()), zlib.crc32(stream.encode())])


def yahoo_history(
    ticker: str,
    days: int | None = None,
    *,
    start: str = UNIVERSE_FIRST_DAY,
    quirks: bool = True,
) -> pd.DataFrame:
    """A Yahoo-like daily history for `ticker` (seeded by its name): `days` business days
    from `start` (default 10 years), as Yahoo's export columns with NaN for `null` cells.

    Returns follow a GARCH(1,1) with Student-t shocks, each ticker with its own volatility
    level and persistence; bars are consistent (high >= max(open, close), low <= min,
    volume > 0, Adj Close below Close by a slowly accrued dividend factor). With `quirks`
    it carries what Yahoo's own exports carry and ingest counts: three rows with Open = 0,
    one row with High < Low, one all-null row. The first n days never depend on how
    many are asked for, so `days + 1` is the same history with one new trading day.
    """
    n = days or len(pd.bdate_range(start, periods=UNIVERSE_YEARS * 252))
    params = _ticker_rng(ticker, "params")
    annual_vol = params.uniform(0.18, 0.55)
    alpha, beta = params.uniform(0.04, 0.10), params.uniform(0.86, 0.93)
    alpha = min(alpha, 0.985 - beta)
    omega = (annual_vol**2 / 252) * (1 - alpha - beta)
    drift, price0 = params.uniform(-0.0001, 0.0006), params.uniform(8, 400)
    dof = params.uniform(4, 8)
    # one row of draws per day (row-major), so a longer history extends a shorter one
    draws = _ticker_rng(ticker, "days").standard_normal((n, 6))
    chi = _ticker_rng(ticker, "tails").chisquare(dof, n)
    shocks = draws[:, 0] / np.sqrt(chi / dof) * np.sqrt((dof - 2) / dof)
    returns = np.empty(n)
    var = annual_vol**2 / 252
    for t in range(n):
        returns[t] = drift + np.sqrt(var) * shocks[t]
        var = omega + alpha * (returns[t] - drift) ** 2 + beta * var
    close = price0 * np.exp(np.cumsum(returns))
    daily = np.sqrt(annual_vol**2 / 252)
    open_ = np.r_[price0, close[:-1]] * np.exp(0.3 * daily * draws[:, 1])
    high = np.maximum(open_, close) * np.exp(0.5 * daily * np.abs(draws[:, 2]))
    low = np.minimum(open_, close) * np.exp(-0.5 * daily * np.abs(draws[:, 3]))
    volume = np.round(params.uniform(2e5, 5e7) * np.exp(0.4 * draws[:, 4] + 4 * np.abs(returns)))
    # dividends accrued up to a fixed day 20 years on: an added day changes no older row
    dividend = np.exp(-params.uniform(0, 0.03) / 252 * (20 * 252 - np.arange(n)))
    frame = pd.DataFrame(
        {
            "Date": pd.bdate_range(start, periods=n).strftime("%Y-%m-%d"),
            "Open": open_,
            "High": high,
            "Low": low,
            "Close": close,
            "Adj Close": close * dividend,
            "Volume": volume,
        }
    )
    if quirks and n > 60:
        _add_quirks(frame, ticker)
    return frame


def _add_quirks(frame: pd.DataFrame, ticker: str) -> None:
    """Yahoo's quirks, in the first 40 rows so that a history grown by a day keeps them."""
    rows = _ticker_rng(ticker, "quirks").choice(np.arange(2, 40), size=5, replace=False)
    frame.loc[rows[:3], "Open"] = 0.0
    high, low = frame.loc[rows[3], "High"], frame.loc[rows[3], "Low"]
    frame.loc[rows[3], ["High", "Low"]] = [low, high]  # high < low
    frame.loc[rows[4], ["Open", "High", "Low", "Close", "Adj Close", "Volume"]] = np.nan


def yahoo_csv(frame: pd.DataFrame) -> str:
    """The text of a Yahoo export of `frame` (yahoo_history's columns); NaN is `null`."""

    def cell(value: float, digits: int) -> str:
        return "null" if pd.isna(value) else f"{value:.{digits}f}"

    lines = [YAHOO_HEADER]
    for row in frame.itertuples(index=False):
        prices = ",".join(cell(v, 6) for v in row[1:6])
        lines.append(f"{row[0]},{prices},{cell(row[6], 0)}")
    return "\n".join(lines) + "\n"


def write_yahoo_universe(
    folder, tickers: list[str], days: int | None = None, quirks: bool = True
) -> dict[str, int]:
    """`<folder>/<TICKER>.csv` for each ticker (yahoo_history); returns rows written each."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for ticker in tickers:
        frame = yahoo_history(ticker, days, quirks=quirks)
        (folder / f"{ticker}.csv").write_text(yahoo_csv(frame))
        written[ticker] = len(frame)
    return written
