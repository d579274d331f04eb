"""Preparing and fitting one fold, shared by both engines: the fold's prices are
re-preprocessed (scalers refit on its training rows alone) and the fit sees only rows
dated before the fold's first forecast day (vocabulary in `tickercast.backtest`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from tickercast.evaluation.evaluate import predict_prices
from tickercast.folds import Fold, WalkForwardError
from tickercast.layout import MODEL_FILE
from tickercast.modeling.features import build_features
from tickercast.modeling.preprocess import Preprocessing, filter_dates, preprocess
from tickercast.modeling.windows import anchors_for
from tickercast.splits import Fractions

if TYPE_CHECKING:  # settings arrive as values: their classes' code is no part of a fit
    from tickercast.sections import FitSpec, Windowing

Logger = logging.Logger | logging.LoggerAdapter


def featurised(prices: pd.DataFrame, section: Windowing) -> tuple[np.ndarray, np.ndarray]:
    """Dates and closes of the rows preprocessing yields (same filter, features, warm-up)."""
    frame = build_features(filter_dates(prices, section.start, section.end), list(section.features))
    dates = np.array(frame["date"].astype(str).tolist(), dtype="datetime64[D]")
    return dates, frame["_close"].to_numpy(dtype=np.float64)


def fold_prices(
    prices: pd.DataFrame, dates: np.ndarray, fold: Fold, section: Windowing | None = None
) -> pd.DataFrame:
    """The price rows the fold's preprocessing reads: up to its last day and, for a sliding
    window, from its first training day back by the features' warm-up rows."""
    if section is not None:
        prices = filter_dates(prices, section.start, section.end)
    days = pd.to_datetime(prices["date"]).to_numpy().astype("datetime64[D]")
    hi = int(np.searchsorted(days, dates[fold.test_end - 1], side="right"))
    lo = 0
    if fold.train_start:
        warmup = int(np.searchsorted(days, dates[0]))  # rows the features drop first
        lo = max(int(np.searchsorted(days, dates[fold.train_start])) - warmup, 0)
    return prices.iloc[lo:hi].reset_index(drop=True)


def prepare_fold(
    prices: pd.DataFrame, section: Windowing, fold: Fold, dates: np.ndarray, who: str
) -> tuple[Preprocessing, dict, dict[str, np.ndarray]]:
    """Preprocess the fold's own rows (scalers refit on its training rows) and its anchors.

    The arrays' row i is row `fold.train_start + i` of the whole series.
    """
    n = fold.test_end - fold.train_start
    spec, arrays = preprocess(
        fold_prices(prices, dates, fold, section),
        section,
        who=f"{who} fold {fold.fold}",
        split=Fractions(val=fold.val_rows / n, test=fold.test_rows / n),
    )
    if (
        len(arrays["dates"]) != n
        or arrays["dates"][0] != dates[fold.train_start]
        or arrays["dates"][-1] != dates[fold.test_end - 1]
        or (spec.n_train, spec.n_val, spec.n_test)
        != (fold.train_rows, fold.val_rows, fold.test_rows)
    ):
        raise WalkForwardError(
            f"{who} fold {fold.fold}: preprocessing the fold's prices gave "
            f"{len(arrays['dates'])} rows split {spec.n_train}/{spec.n_val}/{spec.n_test}, "
            f"expected {n} rows {dates[fold.train_start]}..{dates[fold.test_end - 1]} split "
            f"{fold.train_rows}/{fold.val_rows}/{fold.test_rows}"
        )
    return spec, arrays, anchors_for(spec)


def training_view(arrays: dict, seen_rows: int, horizon: int) -> dict:
    """Rows before the test block only; targets that would read a test day blanked (NaN)."""
    n_total = len(arrays["dates"])
    out = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        out[key] = value[:seen_rows].copy() if value.ndim and len(value) == n_total else value
    first_leaky = max(seen_rows - horizon, 0)  # row t's target reads t+1..t+horizon
    for key in ("y", "y_price"):
        if key in out and np.issubdtype(out[key].dtype, np.floating):
            out[key][first_leaky:] = np.nan
    return out


class Forecaster(Protocol):
    def __call__(self, arrays: dict, anchors: np.ndarray) -> np.ndarray:
        """Forecasts in prices, shape (len(anchors), outputs), for windows of `arrays`."""


FitFn = Callable[
    [dict, dict, Preprocessing, "FitSpec", Path, Logger],
    tuple[Forecaster, dict],
]


def keras_fit(
    seen: dict,
    anchors: dict[str, np.ndarray],
    spec: Preprocessing,
    fit: FitSpec,
    out_dir: Path,
    logger: Logger,
    label: str = "model",
) -> tuple[Forecaster, dict]:
    """Train the configured network on the fold's seen rows, shrunk toward the last close
    on the fold's validation windows when `shrink` is on (tickercast.modeling.train);
    `label` names the fit in logs and on its epochs bar ("AAPL fold 2")."""
    import keras

    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model

    summary = train_model(
        seen, anchors, spec.lookback, fit, out_dir, logger, naive=naive_output(spec), label=label
    )
    from tickercast.modeling.models import split_heads
    from tickercast.modeling.quantiles import predict_quantile_prices

    loaded = keras.models.load_model(out_dir / MODEL_FILE, safe_mode=True, compile=False)
    model, head = split_heads(loaded)  # a quantile head's median is its point forecast

    def forecast(arrays: dict, fold_anchors: np.ndarray) -> np.ndarray:
        return predict_prices(model, spec, arrays["x"], fold_anchors, arrays["close"])

    if head is not None:  # the engines read a head's grid from `quantiles`

        def quantiles(arrays: dict, fold_anchors: np.ndarray) -> np.ndarray:
            return predict_quantile_prices(head, spec, arrays["x"], fold_anchors, arrays["close"])

        forecast.quantiles = quantiles  # type: ignore[attr-defined]

    return forecast, {k: v for k, v in summary.items() if k != "history"}


@dataclass
class FittedFold:
    """A fold after its fit: its preprocessing, arrays, anchors and forecaster."""

    fold: Fold
    spec: Preprocessing
    arrays: dict
    anchors: dict[str, np.ndarray]
    forecaster: Forecaster
    info: dict

    def forecast(self, rows: np.ndarray) -> np.ndarray:
        """Forecasts for origins given as rows of the whole series; (len(rows), outputs)."""
        local = np.asarray(rows, dtype=np.int64) - self.fold.train_start
        out = np.asarray(self.forecaster(self.arrays, local), dtype=np.float64)
        return out.reshape(len(local), -1)


@dataclass(frozen=True)
class Series:
    """The backtested series: its price rows, and the featurised rows' dates."""

    prices: pd.DataFrame
    dates: np.ndarray


def fit_fold(
    series: Series,
    section: Windowing,
    fold: Fold,
    fitter: FitFn,
    spec: FitSpec,
    out_dir: Path,
    logger: Logger,
    who: str,
) -> FittedFold:
    """Prepare the fold and fit on what it may see: rows before its first forecast day,
    train and validation anchors only, targets reaching into the test block blanked."""
    pre, arrays, anchors = prepare_fold(series.prices, section, fold, series.dates, who)
    seen = training_view(arrays, fold.seen_rows, pre.horizon)
    seen_anchors = {"train": anchors["train"], "val": anchors["val"], "test": np.empty(0, np.int64)}
    if fitter is keras_fit:  # its epochs bar and logs name the series and fold
        fitter = functools.partial(keras_fit, label=f"{who} fold {fold.fold}")
    forecaster, info = fitter(seen, seen_anchors, pre, spec, out_dir, logger)
    return FittedFold(fold, pre, arrays, anchors, forecaster, info)
