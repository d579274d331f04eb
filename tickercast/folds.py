"""Fold and origin construction: which rows each fit may see and which origins it
forecasts (vocabulary in `tickercast.backtest`). Pure index arithmetic, no data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tickercast.choices import NETWORKS, WINDOWS


class BacktestError(ValueError):
    """Origins or folds that cannot be built from the data or the settings."""


WalkForwardError = BacktestError  # retrain's walk-forward raises it under this name


# --------------------------------------------------------------------------- folds


@dataclass(frozen=True)
class Fold:
    """Row ranges of one fit, in the featurised rows of the whole series."""

    fold: int  # 1-based, oldest first
    test_start: int  # first row after what the fit sees (its first forecast day)
    test_end: (
        int  # one past the last row it forecasts; it preprocesses rows [train_start, test_end)
    )
    val_rows: int
    train_start: int = 0  # first row of its training window (> 0: sliding window)

    @property
    def test_rows(self) -> int:
        return self.test_end - self.test_start

    @property
    def seen_rows(self) -> int:
        """Rows handed to the fitting function (train + validation)."""
        return self.test_start - self.train_start

    @property
    def train_rows(self) -> int:
        return self.seen_rows - self.val_rows


def _fold(n_rows: int, n_folds: int, k: int, test_rows: int, val_fraction: float) -> Fold:
    test_end = n_rows - (n_folds - 1 - k) * test_rows
    return Fold(k + 1, test_end - test_rows, test_end, int(round(test_end * val_fraction)))


def _fits(fold: Fold, lookback: int, horizon: int) -> bool:
    return (
        fold.train_rows >= lookback + horizon
        and fold.val_rows >= horizon
        and fold.test_rows >= horizon
    )


def expanding_folds(
    n_rows: int,
    n_folds: int,
    test_rows: int,
    val_fraction: float,
    lookback: int,
    horizon: int,
) -> list[Fold]:
    """K consecutive test blocks ending at the last row; each fold trains on all before."""
    if n_folds < 1:
        raise WalkForwardError(f"walk-forward needs at least 1 fold, got {n_folds}")
    folds = [_fold(n_rows, n_folds, k, test_rows, val_fraction) for k in range(n_folds)]
    if not _fits(folds[0], lookback, horizon):
        fits = max(
            (
                m
                for m in range(1, n_folds)
                if _fits(_fold(n_rows, m, 0, test_rows, val_fraction), lookback, horizon)
            ),
            default=0,
        )
        raise WalkForwardError(
            f"walk-forward: fold 1 of {n_folds} would train on {folds[0].train_rows} rows "
            f"and validate on {folds[0].val_rows} (lookback {lookback}, horizon {horizon}); "
            f"this history of {n_rows} rows fits at most {fits} fold(s) of {test_rows} test rows"
        )
    return folds


@dataclass(frozen=True)
class Origins:
    """Rolling origins: each origin's row (its last known day) and training-window start."""

    rows: np.ndarray  # ascending origin rows
    starts: np.ndarray  # first training row of each origin
    horizon: int
    initial: int
    step: int
    window: str

    def __len__(self) -> int:
        return len(self.rows)


def rolling_origins(
    n_rows: int, initial: int, step: int, horizon: int, window: str = "expanding"
) -> Origins:
    """Origins initial-1, initial-1+step, ... while the target (row o+horizon) exists."""
    if window not in WINDOWS:
        raise BacktestError(f"unknown window {window!r}; valid: {list(WINDOWS)}")
    if initial < 2 or step < 1 or horizon < 1:
        raise BacktestError(
            f"need initial >= 2, step >= 1, horizon >= 1; got {initial}, {step}, {horizon}"
        )
    first, last = initial - 1, n_rows - 1 - horizon
    if last < first:
        raise BacktestError(
            f"{n_rows} rows leave no origin: a first training window of {initial} rows plus "
            f"a horizon of {horizon} needs at least {initial + horizon} rows"
        )
    rows = np.arange(first, last + 1, step, dtype=np.int64)
    starts = np.zeros_like(rows) if window == "expanding" else rows - initial + 1
    return Origins(rows, starts, int(horizon), int(initial), int(step), window)


def refit_folds(
    origins: Origins, refit_every: int, val_fraction: float
) -> list[tuple[Fold, np.ndarray]]:
    """One fold per refit: fitted at the group's first origin (seeing rows up to it, the
    last `val_fraction` of its window for validation), forecasting the group's origins."""
    if refit_every < 1:
        raise BacktestError(f"refit_every must be >= 1, got {refit_every}")
    out = []
    for g, i in enumerate(range(0, len(origins.rows), refit_every)):
        group = origins.rows[i : i + refit_every]
        start = int(origins.starts[i])
        seen = int(group[0]) + 1 - start
        fold = Fold(
            g + 1,
            test_start=int(group[0]) + 1,
            test_end=int(group[-1]) + origins.horizon + 1,
            val_rows=int(round(seen * val_fraction)),
            train_start=start,
        )
        out.append((fold, group))
    return out


def _network_fits(rows: int, lookback: int, horizon: int, val_fraction: float) -> bool:
    val = int(round(rows * val_fraction))
    return rows - val >= lookback + horizon and val >= horizon


def minimum_initial(
    models: Sequence[str],
    *,
    horizon: int,
    lookback: int,
    val_fraction: float,
    baseline_needs: Mapping[str, tuple[int, str]],
) -> dict[str, tuple[int, str]]:
    """The smallest first training window (rows) each model needs, and why: a network's
    from its lookback, horizon and validation share, a baseline's as given
    (`baseline_needs`, from `tickercast.backtest.initial`)."""
    need: dict[str, tuple[int, str]] = {}
    for name in models:
        if name not in NETWORKS:
            need[name] = baseline_needs[name]
            continue
        rows = lookback + 2 * horizon
        while not _network_fits(rows, lookback, horizon, val_fraction):
            rows += 1
        need[name] = (
            rows,
            f"lookback {lookback} + horizon {horizon} training rows and {horizon} validation "
            f"rows at val_fraction {val_fraction}",
        )
    return need


def check_initial(initial: int, models: Sequence[str], **settings) -> None:
    """Refuse, naming the model and the setting, a first window too short for a model
    (`settings`: those of `minimum_initial`)."""
    for name, (rows, why) in minimum_initial(models, **settings).items():
        if initial < rows:
            raise BacktestError(
                f"initial {initial} is too short for model {name!r}: it needs at least "
                f"{rows} rows ({why})"
            )
