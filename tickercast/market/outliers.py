"""Bad prints: closes a vendor got wrong for a day, found from the closes around them.

A close is the one value a row is kept for, so a wrong one cannot be marked missing like
a wrong open: the row goes (counted, named), or with `on_quirk=fail` the batch is refused.
Three kinds, with T = `move_threshold` (0.5 by default) and L = log(1 + T):

- `close_spike`: the close moves more than L (in log terms) from the previous close and
  the next close moves back more than L the other way, ending within half the first move
  of where it started (a one-day jump that reverts);
- `close_outside_bar`: the close lies beyond the day's own high x (1 + T) or below its
  low / (1 + T), and it also moved more than L from the previous close (so it is the close
  that disagrees with its bar and its neighbour, not the high or low);
- `close_last_jump`: the last day, which cannot be seen to revert yet, moved more than L
  and more than `LAST_DAY_SIGMAS` times the recent volatility (1.4826 x the median
  absolute log return of the `VOLATILITY_DAYS` days before it; with fewer than
  `MIN_VOLATILITY_DAYS` returns, the move beyond L alone). It is held back until a later
  day confirms the new level: the next ingest sees it with a following day, and keeps it
  unless it reverts.

Days with a recorded split are never flagged (the jump is the split). `MAX_PRICE` and
`MAX_VOLUME` bound what can be a price or a volume at all: a row with a larger value
(1e300) is invalid, never kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MAX_PRICE = 1e9  # above any listed share price (BRK-A ~ 7e5); 1e300 is a corrupt cell
MAX_VOLUME = 1e15
VOLATILITY_DAYS = 60
MIN_VOLATILITY_DAYS = 20
LAST_DAY_SIGMAS = 10.0
KINDS = ("close_spike", "close_outside_bar", "close_last_jump")


def find_outliers(
    close: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    threshold: float,
    prior: Sequence[float] = (),
    skip: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """kind -> mask over the rows of `close` that are bad prints (module doc).

    Rows whose close is not finite and > 0 are ignored (neither flagged nor used);
    `prior` are the valid closes stored before these rows (an incremental batch's context),
    `skip` marks rows never flagged (split days).
    """
    close = np.asarray(close, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(close) & (close > 0)
    idx = np.flatnonzero(valid)
    p = len(prior)
    full = np.concatenate([np.asarray(prior, dtype=np.float64), close[idx]])
    moves = np.full(len(full) + 1, np.nan)  # moves[j]: log(full[j] / full[j - 1])
    if len(full) > 1:
        moves[1 : len(full)] = np.diff(np.log(full))
    limit = np.log1p(threshold)
    before, after = moves[p : p + len(idx)], moves[p + 1 : p + 1 + len(idx)]
    with np.errstate(invalid="ignore"):
        spike = (
            (np.abs(before) > limit)
            & (np.abs(after) > limit)
            & (np.sign(before) != np.sign(after))
            & (np.abs(before + after) < np.abs(before) / 2)
        )
        h, lo, c = high[idx], low[idx], close[idx]
        outside = (c > h * (1 + threshold)) | (c * (1 + threshold) < lo)
        outside &= (np.abs(before) > limit) | np.isnan(before)
    last = np.zeros(len(idx), dtype=bool)
    if len(idx) and abs(before[-1]) > limit:
        sigma = recent_volatility(moves[1 : p + len(idx)])
        last[-1] = np.isnan(sigma) or abs(before[-1]) > LAST_DAY_SIGMAS * sigma
    found = {}
    for kind, mask in zip(KINDS, (spike, outside & ~spike, last & ~outside), strict=True):
        full_mask = np.zeros(len(close), dtype=bool)
        full_mask[idx[mask]] = True
        if skip is not None:
            full_mask &= ~skip
        if full_mask.any():
            found[kind] = full_mask
    return found


def recent_volatility(moves: np.ndarray) -> float:
    """Robust sd of the last `VOLATILITY_DAYS` log returns before the last one (NaN when
    there are fewer than `MIN_VOLATILITY_DAYS`): a bad print among them does not inflate it."""
    recent = moves[:-1][-VOLATILITY_DAYS:]
    recent = recent[np.isfinite(recent)]
    if len(recent) < MIN_VOLATILITY_DAYS:
        return float("nan")
    return float(1.4826 * np.median(np.abs(recent - np.median(recent))))


def describe(frame: pd.DataFrame, mask: np.ndarray, prior_close: float | None) -> str:
    """'close 122410 after 122.41, x1e+03' for the first row of `mask`, with sane numbers
    (3 significant digits for a big ratio, never a 300-digit percentage)."""
    i = int(np.flatnonzero(mask)[0])
    closes = frame["close"].to_numpy(dtype=np.float64)
    earlier = closes[:i][np.isfinite(closes[:i]) & (closes[:i] > 0)]
    prev = earlier[-1] if len(earlier) else prior_close
    if prev is None:
        return f"close {closes[i]:.6g}"
    return f"close {closes[i]:.6g} after {prev:.6g}, {ratio_text(closes[i] / prev)}"


def ratio_text(ratio: float) -> str:
    """A price ratio as a sane figure: '+12%' / '-40%' up to 10x, 'x1e+03' beyond."""
    if not np.isfinite(ratio):
        return "not finite"
    if 0.1 <= ratio <= 10:
        return f"{ratio - 1:+.0%}"
    return f"x{ratio:.3g}"
