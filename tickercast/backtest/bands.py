"""The rolling backtest's distribution table (issue 21): around one median (a network's
point forecast, or naive's), the median's own band and every distribution baseline's on the
same origins, each refit group calibrated on its fold's validation windows, the GARCH fits
reading the rows the fold's network saw (up to its refit origin, from the series' start);
scored and judged by `tickercast.evaluation.distribution`."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from tickercast.evaluation import distribution as dist
from tickercast.evaluation.baseline_registry import distribution_quantiles, of_kind
from tickercast.folds import Fold, Origins, refit_folds
from tickercast.modeling.preprocess import target_prices

MODEL_BAND = "band"  # the median's own band in the tables: its quantile head, else the
# band a model ships around it (the config's `band`, fit on the fold's training rows)


@dataclass(frozen=True)
class Piece:
    """One refit group: its fold's validation rows (of the whole series), their actual
    targets and the median's forecasts there, the group's origin rows and forecasts, and
    the median's own grid when it has a quantile head, and the fold's training rows (first,
    last: what the shipped band's fit reads)."""

    val_rows: np.ndarray
    val_actual: np.ndarray
    val_median: np.ndarray
    rows: np.ndarray
    median: np.ndarray
    fit_end: int
    grid: np.ndarray | None = None
    train: tuple[int, int] | None = None


def training_rows(fold: Fold) -> tuple[int, int]:
    """The first and last training row of `fold` (before its validation block)."""
    return fold.train_start, fold.test_start - fold.val_rows - 1


def validation_rows(fold: Fold, horizon: int) -> np.ndarray:
    """The rows of the whole series whose targets lie in `fold`'s validation block (as
    `tickercast.modeling.windows.split_anchors` picks a fit's validation anchors)."""
    lo = fold.test_start - fold.val_rows - 1
    return np.arange(max(lo, fold.train_start), fold.test_start - horizon, dtype=np.int64)


def naive_pieces(
    close: np.ndarray, origins: Origins, target: str, refit_every: int, val_fraction: float
) -> list[Piece]:
    """Naive's median (every output the last close) on the networks' refit plan."""
    y = target_prices(close, origins.horizon, target)
    n_out = y.shape[1]
    pieces = []
    for fold, group in refit_folds(origins, refit_every, val_fraction):
        val = validation_rows(fold, origins.horizon)
        flat = np.repeat(close[val][:, None], n_out, axis=1)
        median = np.repeat(close[group][:, None], n_out, axis=1)
        piece = Piece(val, y[val], flat, np.asarray(group), median, int(group[0]))
        pieces.append(replace(piece, train=training_rows(fold)))
    return pieces


def _grids(
    close: np.ndarray, piece: Piece, weights: np.ndarray, band: str, lookback: int
) -> dict[str, np.ndarray]:
    """Every band of one refit group, the median's own first (its quantile head's, else
    the band a model ships: `band` fit on the fold's training rows); a baseline that
    cannot be fit there (too short a history for a GARCH) is NaN, so it is left out of
    the tests, not of the table."""
    calibration = (piece.val_rows, piece.val_actual, piece.val_median)
    grids = {}
    for entry in of_kind("distribution"):
        try:
            grids |= distribution_quantiles(
                [entry.name], close, weights, calibration, (piece.rows, piece.median),
                piece.fit_end,
            )  # fmt: skip
        except (ValueError, np.linalg.LinAlgError, RuntimeError):
            grids[entry.name] = np.full((*piece.median.shape, len(dist.GRID)), np.nan)
    own = piece.grid
    if own is None:
        train = piece.train or (0, int(piece.val_rows[0]) - 1)
        forecast = (piece.rows, piece.median)
        own = dist.model_band(band, close, weights, calibration, forecast, train, lookback)[0]
    return {MODEL_BAND: own, **grids}


def band_table(
    close: np.ndarray,
    origins: Origins,
    target: str,
    pieces: list[Piece],
    dates: np.ndarray,
    band: tuple[str, int],
) -> tuple[dict, pd.DataFrame]:
    """The distribution table around one median (`band`: the band a model ships and the
    lookback its recursion reads from): per forecaster its scores, coverage
    (Kupiec) and the DM test of the median's own band against it (per-origin CRPS, MA
    order from the origins' overlap), verdicts in words; and the per-origin scores relative
    to the last close (`date` + `<name>_<score>`), which pool across tickers."""
    horizon = origins.horizon
    y = target_prices(close, horizon, target)
    weights = dist.target_weights(target, horizon, y.shape[1])
    parts = [_grids(close, p, weights, *band) for p in pieces if len(p.val_rows) > 0]
    kept = [p for p in pieces if len(p.val_rows) > 0]
    if not parts:
        return {"note": "no validation windows: no bands"}, pd.DataFrame()
    rows = np.concatenate([p.rows for p in kept])
    grids = {name: np.concatenate([g[name] for g in parts]) for name in parts[0]}
    overlap = max(1, math.ceil(horizon / origins.step))
    judged = dist.judge(y[rows], grids[MODEL_BAND], _others(grids), overlap, MODEL_BAND)
    judged.pop("crps")
    scores = dist.relative_scores(y[rows], close[rows], grids)
    scores.insert(0, "date", pd.to_datetime(dates[rows]))
    return judged, scores


def _others(grids: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in grids.items() if k != MODEL_BAND}


def table_rows(median: str, judged: dict) -> list[dict]:
    """Flat rows for the CLI and report: one per forecaster around `median`."""
    out = []
    for name, v in (judged.get("metrics") or {}).items():
        dm = (v.get("dm") or {}).get("crps") or {}
        out.append(
            {
                "median": median,
                "band": name,
                **{k: v.get(k) for k in (*dist.SCORES, "coverage_80", "coverage_95")},
                "kupiec_p_80": v.get("kupiec_p_80"),
                "kupiec_p_95": v.get("kupiec_p_95"),
                "p": dm.get("p"),
                "verdict": v.get("verdict"),
            }
        )
    return out
