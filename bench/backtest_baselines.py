"""Backtest baselines: vectorised over all origins vs the obvious per-origin loop.

One synthetic ticker (a random walk) with 5,000 rolling origins (expanding window, first
window 252 days, step 1, horizon 5, every horizon step scored). Side by side in one run:

- baseline: each registered baseline's per-window form (`baseline_registry`'s
  `PointBaseline.window`, the one the retrain evaluation uses) in a Python loop that, per
  origin, slices the training window and refits the baseline on it;
- project: its rolling form (`forecast_rolling`), every origin at once (prefix sums, one
  batched solve for ridge), and the whole `rolling_backtest` (forecasts, metrics per step,
  lag diagnostic) for every baseline that reads closes.

Both must give the same forecasts (checked). Run: python bench/backtest_baselines.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ORIGINS, INITIAL, HORIZON = 5_000, 252, 5


def prices(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    return pd.DataFrame(
        {
            "date": pd.bdate_range("1990-01-02", periods=n).date,
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "adj_close": close,
            "volume": np.full(n, 1_000_000),
        }
    )


def per_window(name: str, close: np.ndarray, origins) -> np.ndarray:
    """The baseline's per-window form, refit on each origin's training window in a loop."""
    from tickercast.evaluation.baseline_registry import point

    entry = point(name)
    rows = zip(origins.rows, origins.starts, strict=True)
    return np.stack([entry.window(close[s : o + 1], HORIZON, **entry.settings()) for o, s in rows])


def loop_vs_vectorised(close: np.ndarray, origins) -> tuple[float, float, float]:
    """(loop seconds, vectorised seconds, worst relative difference) over every baseline;
    refused when the two forms' forecasts differ."""
    from tickercast.choices import BASELINES
    from tickercast.evaluation.baseline_registry import forecast_rolling

    t0 = time.perf_counter()
    loop = {name: per_window(name, close, origins) for name in BASELINES}
    loop_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = {name: forecast_rolling(name, close, origins) for name in BASELINES}
    fast_s = time.perf_counter() - t0
    worst = max(float(np.max(np.abs(fast[k] - loop[k]) / np.abs(loop[k]))) for k in BASELINES)
    assert worst < 1e-9, f"vectorised and loop forecasts differ (relative {worst:.1e})"
    return loop_s, fast_s, worst


def backtest_spec():
    """The whole backtest of every baseline: expanding origins, every horizon step."""
    from tickercast.choices import BASELINES
    from tickercast.evaluation.baseline_registry import DEFAULTS
    from tickercast.sections import RollingSpec

    return RollingSpec(
        start=None,
        end=None,
        features=["close"],
        lookback=60,
        val_fraction=0.15,
        model=list(BASELINES),
        target="closes",
        horizon=HORIZON,
        initial=INITIAL,
        step=1,
        window="expanding",
        refit_every=20,
        max_lag=None,
        **DEFAULTS,
    )


def whole_backtest(frame: pd.DataFrame) -> float:
    """Seconds of one whole `rolling_backtest` (after a small one that pays the imports)."""
    from tickercast.backtest.rolling import rolling_backtest

    spec = backtest_spec()
    with tempfile.TemporaryDirectory() as out:
        rolling_backtest(frame.iloc[: INITIAL + 50], spec, Path(out))  # imports (scipy) once
        t0 = time.perf_counter()
        result = rolling_backtest(frame, spec, Path(out))
        full_s = time.perf_counter() - t0
    assert result["origins"]["origins"] == ORIGINS
    return full_s


def main() -> None:
    from bench.results import record
    from tickercast.choices import BASELINES
    from tickercast.folds import rolling_origins

    n = INITIAL + ORIGINS - 1 + HORIZON
    frame = prices(n)
    close = frame["close"].to_numpy(dtype=np.float64)
    origins = rolling_origins(n, INITIAL, 1, HORIZON)
    assert len(origins) == ORIGINS
    loop_s, fast_s, worst = loop_vs_vectorised(close, origins)
    full_s = whole_backtest(frame)
    print(
        f"loop {loop_s:.2f} s, vectorised {fast_s:.3f} s, whole rolling_backtest "
        f"{full_s:.2f} s, max relative difference {worst:.1e}"
    )
    record(
        "backtest_baselines",
        f"| backtest baselines: {', '.join(BASELINES)} at {ORIGINS:,} origins of one ticker "
        f"(expanding, horizon {HORIZON}) | per-origin Python loop of refits {loop_s:.1f} s | "
        f"vectorised {fast_s:.3f} s; whole `rolling_backtest` with per-step metrics and lag "
        f"diagnostic {full_s:.2f} s; same forecasts (rel. diff {worst:.0e}) | "
        f"{loop_s / fast_s:,.0f}x faster |",
    )


if __name__ == "__main__":
    main()
