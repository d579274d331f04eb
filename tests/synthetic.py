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
