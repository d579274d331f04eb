"""The retrain evaluation's point baselines: per test window vs all test windows at once.

A retrain evaluation forecasts every closes-only baseline at each test window from all
closes up to it (an expanding training window). Side by side in one run, on one
synthetic 10-year ticker (a random walk, 2,520 days) at the default preset's test windows
(the last 15% of rows, horizon 5):

- baseline: each baseline's per-window form (`PointBaseline.window`, the specification)
  refit on closes 0..a in a Python loop, one fit per test window (what
  `forecast_windows` did before: the ridge refit its regression on the whole history at
  each window);
- project: `forecast_windows`, the rolling form at origins starting at row 0 (prefix
  sums, one batched solve for ridge).

Both must give the same forecasts (checked). Run: python bench/evaluation_baselines.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAYS, TEST_FRACTION, HORIZON, ROUNDS = 2_520, 0.15, 5, 5


def per_window(name: str, close: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """The specification: the per-window form on closes 0..a, one fit per anchor."""
    from tickercast.evaluation.baseline_registry import point

    entry = point(name)
    return np.stack([entry.window(close[: a + 1], HORIZON, **entry.settings()) for a in anchors])


def best_of(fn, rounds: int = ROUNDS) -> tuple[float, np.ndarray]:
    """The fastest of `rounds` calls (seconds) and its result."""
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    from bench.results import publish
    from tickercast.evaluation.baseline_registry import PointBaseline, forecast_windows, of_kind

    rng = np.random.default_rng(0)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, DAYS)))
    n_test = int(DAYS * TEST_FRACTION)
    anchors = np.arange(DAYS - n_test - HORIZON, DAYS - HORIZON)
    names = [e.name for e in of_kind("point") if isinstance(e, PointBaseline)]
    loop = {n: best_of(lambda n=n: per_window(n, close, anchors)) for n in names}
    fast = {n: best_of(lambda n=n: forecast_windows(n, close, anchors, HORIZON)) for n in names}
    worst = max(float(np.max(np.abs(fast[n][1] - loop[n][1]) / np.abs(loop[n][1]))) for n in names)
    assert worst < 1e-9, f"the two forms' forecasts differ (relative {worst:.1e})"
    loop_s, fast_s = sum(t for t, _ in loop.values()), sum(t for t, _ in fast.values())
    ridge_s = loop["ridge"][0]
    publish(
        "evaluation_baselines",
        f"| retrain evaluation's point baselines ({', '.join(names)}) at the {n_test} test "
        f"windows of one 10-year ticker (expanding, horizon {HORIZON}; each baseline's "
        f"fastest of {ROUNDS}) | "
        f"per-window loop, one refit per test window {loop_s:.3f} s (ridge {ridge_s:.3f} s "
        f"of it) | `forecast_windows` (the rolling form from row 0) {fast_s:.4f} s; same "
        f"forecasts (rel. diff {worst:.0e}) | {loop_s / fast_s:,.0f}x faster |",
        keep="--no-record" not in sys.argv,
    )


if __name__ == "__main__":
    main()
