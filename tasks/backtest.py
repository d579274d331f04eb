"""Backtests on one engine: retrain's walk-forward folds and the rolling-origin backtest.

Vocabulary. Rows are one ticker's featurised trading days (after `start`/`end` and the
features' warm-up). An *origin* o is the last day a forecaster may know: it is fitted on
its training window, rows [s, o] (s = 0 for an expanding window, o - initial + 1 for a
sliding one), and forecasts the target of row o (days o+1..o+horizon). A *fold* is one
fit of a network: it sees rows [train_start, test_start) (train | validation) and
forecasts every origin in [test_start - 1, test_end - horizon - 1]:

    fold k: rows [train_start, test_end) = train | validation | test block

- `walk_forward` (retrain's `--walk-forward-folds K`): K folds whose test blocks are
  consecutive and as long as the pipeline's own test split, so the last fold's block *is*
  the retrain's test split; every anchor of a block is an origin.
- `rolling_backtest` (`tickercast backtest`): origins initial-1, initial-1+step, ...; a
  network is refit every `refit_every` origins (one fold per refit, forecasting the
  origins up to the next refit); the baselines are refit at every origin, vectorised over
  all origins at once (no Python loop over origins; `reference_paths` is that loop, kept
  as the executable specification the vectorised code is tested and benchmarked against).

Both prepare a fold the same way (`prepare_fold`: the fold's prices are re-preprocessed,
so scalers and every fitted transform are refit on its training rows alone; `fit_fold`
hands the fitting function only rows dated before the fold's first forecast day, any
target reaching past it blanked) and both score with `tasks.evaluate`'s metric functions.
tests/test_walkforward.py and tests/test_backtest.py prove that nothing dated at or after
an origin's first forecast day reaches what is fitted for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from tasks.config import TRAIN_FIELDS
from tasks.evaluate import (
    LEVELS,
    NAIVE,
    Ridge,
    calibrate,
    clean,
    coverage,
    drift_paths,
    evaluate_forecasts,
    flat_paths,
    interval,
    level_key,
    metrics,
    moving_average_forecast,
    naive_forecast,
    predict_prices,
    skill,
    target_weights,
)
from tasks.features import build_features
from tasks.preprocess import (
    Preprocessing,
    filter_dates,
    output_width,
    preprocess,
    target_prices,
)
from tasks.windows import split_anchors

Logger = logging.Logger | logging.LoggerAdapter

NETWORKS = ("stacked_lstm", "lstm", "bilstm", "cnn_lstm", "lstm_attention")
BASELINES = ("naive", "drift", "mean", "moving_average", "ridge")
WINDOWS = ("expanding", "sliding")


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
    ridge_lags: int,
    ma_window: int,
) -> dict[str, int]:
    """The smallest first training window (rows) each model needs, with why."""
    need: dict[str, int] = {}
    for name in models:
        if name in NETWORKS:
            rows = lookback + 2 * horizon
            while not _network_fits(rows, lookback, horizon, val_fraction):
                rows += 1
            need[name] = rows
        elif name == "ridge":
            need[name] = 2 * ridge_lags + horizon + 1  # >= lags + 1 training windows
        elif name == "moving_average":
            need[name] = max(ma_window, 2)
        else:
            need[name] = 2
    return need


def check_initial(initial: int, models: Sequence[str], **settings) -> None:
    """Refuse, naming the model and the setting, a first window too short for a model."""
    for name, rows in minimum_initial(models, **settings).items():
        if initial >= rows:
            continue
        if name in NETWORKS:
            why = (
                f"lookback {settings['lookback']} + horizon {settings['horizon']} training "
                f"rows and {settings['horizon']} validation rows at val_fraction "
                f"{settings['val_fraction']}"
            )
        elif name == "ridge":
            why = f"ridge_lags {settings['ridge_lags']} and horizon {settings['horizon']}"
        elif name == "moving_average":
            why = f"its window, ma_window {settings['ma_window']}"
        else:
            why = "two training days"
        raise BacktestError(
            f"initial {initial} is too short for model {name!r}: it needs at least "
            f"{rows} rows ({why})"
        )


# --------------------------------------------------------------------------- fold preparation


def featurised(prices: pd.DataFrame, pre_cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Dates and closes of the rows preprocessing yields (same filter, features, warm-up)."""
    frame = build_features(
        filter_dates(prices, pre_cfg.get("start"), pre_cfg.get("end")), list(pre_cfg["features"])
    )
    dates = np.array(frame["date"].astype(str).tolist(), dtype="datetime64[D]")
    return dates, frame["_close"].to_numpy(dtype=np.float64)


def fold_prices(
    prices: pd.DataFrame, dates: np.ndarray, fold: Fold, pre_cfg: dict | None = None
) -> pd.DataFrame:
    """The price rows the fold's preprocessing reads: up to its last day and, for a sliding
    window, from its first training day back by the features' warm-up rows."""
    if pre_cfg is not None:
        prices = filter_dates(prices, pre_cfg.get("start"), pre_cfg.get("end"))
    days = pd.to_datetime(prices["date"]).to_numpy().astype("datetime64[D]")
    hi = int(np.searchsorted(days, dates[fold.test_end - 1], side="right"))
    lo = 0
    if fold.train_start:
        warmup = int(np.searchsorted(days, dates[0]))  # rows the features drop first
        lo = max(int(np.searchsorted(days, dates[fold.train_start])) - warmup, 0)
    return prices.iloc[lo:hi].reset_index(drop=True)


def prepare_fold(
    prices: pd.DataFrame, pre_cfg: dict, fold: Fold, dates: np.ndarray, who: str
) -> tuple[Preprocessing, dict, dict[str, np.ndarray]]:
    """Preprocess the fold's own rows (scalers refit on its training rows) and its anchors.

    The arrays' row i is row `fold.train_start + i` of the whole series.
    """
    n = fold.test_end - fold.train_start
    cfg = {**pre_cfg, "test_fraction": fold.test_rows / n, "val_fraction": fold.val_rows / n}
    spec, arrays = preprocess(
        fold_prices(prices, dates, fold, pre_cfg), cfg, who=f"{who} fold {fold.fold}"
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
    anchors = split_anchors(n, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    return spec, arrays, anchors


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
    [dict, dict, Preprocessing, dict, Path, Logger],
    tuple[Forecaster, dict],
]


def keras_fit(
    seen: dict,
    anchors: dict[str, np.ndarray],
    spec: Preprocessing,
    train_cfg: dict,
    out_dir: Path,
    logger: Logger,
) -> tuple[Forecaster, dict]:
    """Train the configured network on the fold's seen rows (tasks.train.train_model)."""
    import keras

    from tasks.train import train_model

    summary = train_model(seen, anchors, spec.lookback, train_cfg, out_dir, logger)
    model = keras.models.load_model(out_dir / "model.keras", safe_mode=True, compile=False)

    def forecast(arrays: dict, fold_anchors: np.ndarray) -> np.ndarray:
        return predict_prices(model, spec, arrays["x"], fold_anchors, arrays["close"])

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


def fit_fold(
    prices: pd.DataFrame,
    pre_cfg: dict,
    fold: Fold,
    dates: np.ndarray,
    fit: FitFn,
    train_cfg: dict,
    out_dir: Path,
    logger: Logger,
    who: str,
) -> FittedFold:
    """Prepare the fold and fit on what it may see: rows before its first forecast day,
    train and validation anchors only, targets reaching into the test block blanked."""
    spec, arrays, anchors = prepare_fold(prices, pre_cfg, fold, dates, who)
    seen = training_view(arrays, fold.seen_rows, spec.horizon)
    seen_anchors = {"train": anchors["train"], "val": anchors["val"], "test": np.empty(0, np.int64)}
    forecaster, info = fit(seen, seen_anchors, spec, train_cfg, out_dir, logger)
    return FittedFold(fold, spec, arrays, anchors, forecaster, info)


# --------------------------------------------------------------------------- walk-forward


def summarize(folds: list[dict]) -> dict:
    """Mean ± std (ddof=1; 0 for one fold) of every metric of every forecaster."""
    summary: dict[str, dict] = {}
    for name in folds[0]["metrics"] if folds else []:
        summary[name] = {}
        for metric in folds[0]["metrics"][name]:
            values = np.array(
                [
                    f["metrics"][name].get(metric)
                    for f in folds
                    if f["metrics"][name].get(metric) is not None
                ],
                dtype=np.float64,
            )
            summary[name][metric] = {
                "mean": float(values.mean()) if len(values) else None,
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "folds": int(len(values)),
            }
    cover: dict[str, dict] = {}
    for key in folds[0].get("intervals", {}) if folds else []:
        values = np.array(
            [
                f["intervals"][key]["coverage_test"]
                for f in folds
                if f["intervals"].get(key, {}).get("coverage_test") is not None
            ],
            dtype=np.float64,
        )
        cover[key] = {
            "nominal": folds[0]["intervals"][key]["nominal"],
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        }
    return {"metrics": clean(summary), "coverage": clean(cover)}


def walk_forward(
    prices: pd.DataFrame,
    pre_cfg: dict,
    train_cfg: dict,
    n_folds: int,
    epochs: int,
    out_dir: Path,
    logger: Logger | None = None,
    fit: FitFn = keras_fit,
    who: str = "series",
) -> dict:
    """Run every fold; returns per-fold results, the summary and the predictions table."""
    logger = logger or logging.getLogger(__name__)
    spec0, arrays0 = preprocess(prices, pre_cfg, who=who)
    dates = arrays0["dates"]
    folds = expanding_folds(
        len(dates),
        n_folds,
        spec0.n_test,
        float(pre_cfg["val_fraction"]),
        spec0.lookback,
        spec0.horizon,
    )
    cfg = {**train_cfg, "epochs": int(epochs)}
    results, tables = [], []
    for fold in folds:
        fitted = fit_fold(
            prices, pre_cfg, fold, dates, fit, cfg, out_dir / f"fold-{fold.fold}", logger, who
        )
        spec, arrays = fitted.spec, fitted.arrays
        ev = evaluate_forecasts(
            spec, arrays, fitted.anchors, lambda a, f=fitted: f.forecaster(f.arrays, a)
        )
        entry = {
            **asdict(fold),
            "train_rows": fold.train_rows,
            "test_rows": fold.test_rows,
            "train_first": str(dates[fold.train_start]),
            "train_end": spec.train_end,
            "val_end": spec.val_end,
            "test_first_target": ev["window"]["first_target"],
            "test_last_target": ev["window"]["last_target"],
            "test_windows": ev["window"]["windows"],
            "metrics": ev["metrics"],
            "intervals": ev["intervals"],
            "training": clean(fitted.info),
        }
        results.append(entry)
        table = ev["table"].copy()
        table.insert(0, "fold", fold.fold)
        tables.append(table)
        logger.info(
            "%s walk-forward fold %d/%d: train ..%s, test %s..%s, RMSE model %.4f naive %.4f",
            who,
            fold.fold,
            len(folds),
            spec.train_end,
            entry["test_first_target"],
            entry["test_last_target"],
            ev["metrics"]["model"]["rmse"],
            ev["metrics"]["naive"]["rmse"],
        )
    return {
        "n_folds": len(folds),
        "epochs_per_fold": int(epochs),
        "folds": results,
        "summary": summarize(results),
        "table": pd.concat(tables, ignore_index=True),
    }


def summary_lines(backtest: dict) -> list[str]:
    """Markdown: mean ± std per forecaster over the folds."""
    s = backtest["summary"]["metrics"]

    def pm(name, metric, spec):
        v = s[name].get(metric, {})
        if v.get("mean") is None:
            return "n/a"
        return f"{format(v['mean'], spec)} ± {format(v['std'], spec)}"

    lines = [
        f"Walk-forward: {backtest['n_folds']} expanding folds, "
        f"{backtest['epochs_per_fold']} epochs max per fold (mean ± std over folds).",
        "",
        "| forecaster | RMSE | MAE | MAPE % | MASE | direction % | skill vs naive |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in s:
        lines.append(
            f"| {name} | {pm(name, 'rmse', '.4f')} | {pm(name, 'mae', '.4f')} | "
            f"{pm(name, 'mape', '.2f')} | {pm(name, 'mase', '.3f')} | "
            f"{pm(name, 'directional_accuracy', '.1f')} | {pm(name, 'skill', '+.3f')} |"
        )
    return lines


def write_backtest(out_dir: Path, backtest: dict, ticker: str) -> dict[str, Path]:
    """backtest.json (folds + summary), the per-fold predictions and the per-fold plot."""
    from tasks.evaluate import plot_folds

    paths = _write_files(
        out_dir,
        {
            "backtest_json": ("backtest.json", _without_table(backtest)),
            "predictions": ("backtest_predictions.parquet", backtest["table"]),
        },
    )
    paths["folds_png"] = out_dir / "folds.png"
    plot_folds(backtest["folds"], paths["folds_png"], f"{ticker}: walk-forward RMSE per fold")
    return paths


def _write_files(
    out_dir: Path, files: dict[str, tuple[str, dict | pd.DataFrame]]
) -> dict[str, Path]:
    """Write each `key: (file name, content)` into out_dir, in order and atomically (a
    reader never sees half a file): a frame as Parquet, anything else as JSON.
    Returns {key: path}."""
    from tasks.atomic import atomic_path, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, (name, content) in files.items():
        path = paths[key] = out_dir / name
        if isinstance(content, pd.DataFrame):
            with atomic_path(path) as tmp:
                content.to_parquet(tmp, index=False)
        else:
            write_json(path, content)
    return paths


def _without_table(result: dict) -> dict:
    """A result's JSON-ready part: all but its predictions table (written as Parquet)."""
    return {k: v for k, v in result.items() if k != "table"}


# --------------------------------------------------------------------------- baselines


def training_scale(close: np.ndarray, origins: Origins) -> np.ndarray:
    """MASE's denominator per origin: the in-sample MAE of the one-step naive forecast on
    the origin's own training window, mean |c_t - c_(t-1)| for t in s+1..o (Hyndman &
    Koehler). Every model is scaled by the same number at a given origin."""
    close = np.asarray(close, dtype=np.float64)
    steps = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(close)))])  # steps[i]: t=1..i
    o, s = origins.rows, origins.starts
    return (steps[o] - steps[s]) / (o - s)


def _log_close_design(close: np.ndarray, lags: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row t: the last `lags` daily log returns (newest first) and the log returns
    t -> t+h for h = 1..horizon; NaN where a row lacks them."""
    lc = np.log(np.asarray(close, dtype=np.float64))
    n = len(lc)
    x = np.full((n, lags), np.nan)
    for j in range(lags):  # x[t, j] = log c[t-j] - log c[t-j-1]
        x[lags:, j] = lc[lags - j : n - j] - lc[lags - j - 1 : n - j - 1]
    y = np.full((n, horizon), np.nan)
    for h in range(1, horizon + 1):
        y[: n - h, h - 1] = lc[h:] - lc[: n - h]
    return x, y


def ridge_paths(close: np.ndarray, origins: Origins, lags: int, alpha: float) -> np.ndarray:
    """Ridge autoregression refit at every origin, all origins at once; (n, horizon) prices.

    At origin o with window [s, o]: the h-day log return from t is regressed on the last
    `lags` daily log returns at t, over the windows t in [s + lags, o - horizon] (inputs and
    targets inside the training window), features standardised with that window's own mean
    and std, intercept unpenalised, penalty `alpha`. The sums every fit needs come from
    prefix sums over t, so each origin costs one small (lags x lags) solve.
    """
    if alpha <= 0:
        raise BacktestError(f"ridge_alpha must be > 0, got {alpha}")
    close = np.asarray(close, dtype=np.float64)
    h_max = origins.horizon
    x, y = _log_close_design(close, lags, h_max)
    usable = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    xu, yu = np.where(usable[:, None], x, 0.0), np.where(usable[:, None], y, 0.0)

    def prefix(a: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0)])

    lo = origins.starts + lags  # first usable training window of each origin
    hi = origins.rows - h_max + 1  # one past the last
    m = (hi - lo).astype(np.float64)
    if (m < 2).any():
        raise BacktestError(
            f"ridge: an origin has {int(m.min())} training windows (ridge_lags {lags}, "
            f"horizon {h_max}); raise initial"
        )

    def window_sum(p: np.ndarray) -> np.ndarray:
        return p[hi] - p[lo]

    sx = window_sum(prefix(xu)) / m[:, None]
    sy = window_sum(prefix(yu)) / m[:, None]
    sxx = window_sum(prefix(xu[:, :, None] * xu[:, None, :])) / m[:, None, None]
    sxy = window_sum(prefix(xu[:, :, None] * yu[:, None, :])) / m[:, None, None]
    cxx = sxx - sx[:, :, None] * sx[:, None, :]
    cxy = sxy - sx[:, :, None] * sy[:, None, :]
    var = np.einsum("kii->ki", cxx)
    constant = var <= 1e-12 * np.maximum(np.einsum("kii->ki", sxx), 1e-300)
    sd = np.where(constant, np.inf, np.sqrt(np.maximum(var, 0.0)))  # inf: the column drops out
    corr = cxx / (sd[:, :, None] * sd[:, None, :])
    a = m[:, None, None] * corr + alpha * np.eye(lags)
    b = m[:, None, None] * cxy / sd[:, :, None]
    beta = np.linalg.solve(a, b)  # (n, lags, horizon), standardised coefficients
    z = (x[origins.rows] - sx) / sd
    pred = sy + np.einsum("kl,klh->kh", z, beta)
    return close[origins.rows][:, None] * np.exp(pred)


def baseline_paths(
    name: str,
    close: np.ndarray,
    origins: Origins,
    *,
    ma_window: int = 20,
    ridge_lags: int = 5,
    ridge_alpha: float = 1.0,
) -> np.ndarray:
    """A baseline's forecast of the next `horizon` closes at every origin; (n, horizon).

    Each one reads only its origin's training window, closes[s..o]:
    naive: c_o; drift: c_o + h (c_o - c_s) / (o - s), the textbook line through the
    window's first and last close; mean: the window's mean; moving_average: the mean of
    the last `ma_window` closes; ridge: `ridge_paths`.
    """
    close = np.asarray(close, dtype=np.float64)
    rows, h = origins.rows, origins.horizon
    if name == "naive":
        return flat_paths(naive_forecast(close, rows), h)
    if name == "drift":
        window = None if origins.window == "expanding" else origins.initial
        return drift_paths(close, rows, h, window)
    if name == "mean":
        return flat_paths(moving_average_forecast(close, rows, rows - origins.starts + 1), h)
    if name == "moving_average":
        if ma_window > origins.initial:
            raise BacktestError(
                f"moving_average window {ma_window} is longer than the first training "
                f"window (initial {origins.initial})"
            )
        return flat_paths(moving_average_forecast(close, rows, ma_window), h)
    if name == "ridge":
        return ridge_paths(close, origins, ridge_lags, ridge_alpha)
    raise BacktestError(f"unknown baseline {name!r}; valid: {list(BASELINES)}")


def reference_paths(
    name: str,
    close: np.ndarray,
    origins: Origins,
    *,
    ma_window: int = 20,
    ridge_lags: int = 5,
    ridge_alpha: float = 1.0,
) -> np.ndarray:
    """The same forecasts as `baseline_paths` by the obvious loop: per origin, slice the
    training window and fit the baseline on it alone (ridge: `tasks.evaluate.Ridge`).
    Slow; it is the specification the vectorised code is tested and benchmarked against."""
    close = np.asarray(close, dtype=np.float64)
    h = origins.horizon
    steps = np.arange(1, h + 1, dtype=np.float64)
    out = np.empty((len(origins), h))
    for i, (o, s) in enumerate(zip(origins.rows, origins.starts, strict=True)):
        train = close[s : o + 1]  # all this origin may know
        if name == "naive":
            out[i] = train[-1]
        elif name == "drift":
            slope = (train[-1] - train[0]) / (len(train) - 1) if len(train) > 1 else 0.0
            out[i] = train[-1] + slope * steps
        elif name == "mean":
            out[i] = train.mean()
        elif name == "moving_average":
            out[i] = train[-ma_window:].mean()
        elif name == "ridge":
            lt = np.log(train)
            lr = np.diff(lt)  # lr[k] = lt[k+1] - lt[k]
            ts = np.arange(ridge_lags, len(train) - h)  # windows inside the training rows
            xs = lr[ts[:, None] - 1 - np.arange(ridge_lags)]  # newest return first
            ys = lt[ts[:, None] + np.arange(1, h + 1)] - lt[ts][:, None]
            mu, sd = xs.mean(axis=0), xs.std(axis=0)
            keep = sd > 1e-6 * np.sqrt((xs**2).mean(axis=0)) + 1e-300
            safe = np.where(keep, sd, 1.0)
            zs = np.where(keep, (xs - mu) / safe, 0.0)
            model = Ridge(ridge_alpha).fit(zs, ys)
            z0 = np.where(keep, (lr[len(lr) - ridge_lags :][::-1] - mu) / safe, 0.0)
            out[i] = train[-1] * np.exp(model.predict(z0[None, :])[0])
        else:
            raise BacktestError(f"unknown baseline {name!r}; valid: {list(BASELINES)}")
    return out


# --------------------------------------------------------------------------- networks


def network_forecasts(
    name: str,
    prices: pd.DataFrame,
    pre_cfg: dict,
    train_cfg: dict,
    dates: np.ndarray,
    origins: Origins,
    refit_every: int,
    out_dir: Path,
    logger: Logger,
    fit: FitFn = keras_fit,
    who: str = "series",
) -> dict:
    """A network refit every `refit_every` origins; each fit forecasts its group's origins
    and calibrates split-conformal intervals on its own validation windows.

    Returns {"forecasts": (n, outputs), "intervals": {level: (lo, hi)}, "fold": (n,) fold
    number per origin, "folds": per-fit details}.
    """
    n_out = output_width(pre_cfg["target"], origins.horizon)
    k = len(origins)
    pred = np.full((k, n_out), np.nan)
    bands = {
        level_key(lv): (np.full((k, n_out), np.nan), np.full((k, n_out), np.nan)) for lv in LEVELS
    }
    fold_of = np.zeros(k, dtype=np.int64)
    folds, at = [], 0
    plan = refit_folds(origins, refit_every, float(pre_cfg["val_fraction"]))
    for fold, group in plan:
        fitted = fit_fold(
            prices,
            pre_cfg,
            fold,
            dates,
            fit,
            {**train_cfg, "model": name},
            out_dir / name / f"fold-{fold.fold}",
            logger,
            who,
        )
        part = slice(at, at + len(group))
        pred[part] = fitted.forecast(group)
        val = fitted.anchors["val"]
        cal = {}
        if len(val):
            val_pred = np.asarray(fitted.forecaster(fitted.arrays, val), dtype=np.float64)
            val_actual = np.asarray(fitted.arrays["y_price"], dtype=np.float64)[val]
            cal = calibrate(val_actual.reshape(len(val), -1), val_pred.reshape(len(val), -1))
        for key, c in cal.items():
            q = np.asarray(c["q"], dtype=np.float64)
            if np.isfinite(q).all():  # too few calibration windows: no band
                bands[key][0][part], bands[key][1][part] = interval(pred[part], q)
        fold_of[part] = fold.fold
        folds.append(
            {
                **asdict(fold),
                "refit_origin": str(dates[group[0]]),
                "origins": int(len(group)),
                "train_first": str(dates[fold.train_start]),
                "train_end": fitted.spec.train_end,
                "val_end": fitted.spec.val_end,
                "intervals": clean({k2: v["q"] for k2, v in cal.items()}),
                "training": clean(fitted.info),
            }
        )
        logger.info(
            "%s backtest %s fit %d/%d at %s (train %s..%s): %d origin(s)",
            who,
            name,
            fold.fold,
            len(plan),
            dates[group[0]],
            dates[fold.train_start],
            fitted.spec.train_end,
            len(group),
        )
        at += len(group)
    return {"forecasts": pred, "intervals": bands, "fold": fold_of, "folds": folds}


# --------------------------------------------------------------------------- scoring


def output_days(target: str, horizon: int) -> np.ndarray:
    """Days ahead of each model output's (last) target day."""
    n_out = output_width(target, horizon)
    return np.arange(1, horizon + 1) if n_out > 1 else np.array([horizon])


def output_labels(target: str, horizon: int) -> list[str]:
    """'t+1'.. per output; a mean target reads 'mean t+1..t+h'."""
    if output_width(target, horizon) > 1:
        return [f"t+{d}" for d in range(1, horizon + 1)]
    if target.startswith("mean_close") and horizon > 1:
        return [f"mean t+1..t+{horizon}"]
    return [f"t+{horizon}"]


def best_lag(
    forecast: np.ndarray, target: np.ndarray, rows: np.ndarray, max_lag: int
) -> tuple[int | None, float | None]:
    """The shift L (trading days, 0..max_lag) at which the forecast best correlates with
    the actual series L days earlier, i.e. with the target of origin o - L.

    Correlated are the changes from one origin to the next, not levels: the levels of a
    random walk correlate strongly at every lag. A forecast that repeats the last observed
    price peaks at L >= 1 (naive: L = horizon); one that tracks the future peaks at 0.
    Ties go to the smaller lag. (None, None) when there are too few origins or no variation.
    """
    df = np.diff(np.asarray(forecast, dtype=np.float64))
    if len(df) < 3 or not np.isfinite(df).all() or df.std() == 0:
        return None, None
    best: tuple[int | None, float | None] = (None, None)
    for lag in range(max_lag + 1):
        if rows[0] - lag < 0:
            break
        da = np.diff(np.asarray(target, dtype=np.float64)[rows - lag])
        if not np.isfinite(da).all() or da.std() == 0:
            continue
        c = float(np.corrcoef(df, da)[0, 1])
        if math.isfinite(c) and (best[1] is None or c > best[1] + 1e-12):
            best = (lag, c)
    return best


def score_forecasts(
    actual: np.ndarray,
    forecasts: dict[str, np.ndarray],
    last_close: np.ndarray,
    scale: np.ndarray,
    labels: Sequence[str],
    *,
    rows: np.ndarray,
    target: np.ndarray,
    max_lag: int,
    intervals: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] | None = None,
) -> list[dict]:
    """One metrics row per model and output (plus a pooled 'all' row for vector targets).

    `actual` and each forecast are (origins, outputs) prices; `scale` is MASE's per-origin
    denominator (`training_scale`); `target` the actual target per row of the series (for
    the lag diagnostic); `intervals[model][level] = (lo, hi)`. Skill is 1 - RMSE / RMSE of
    naive on the same cells; a model is `lagging` when its best lag is >= 1 day and its
    skill is not positive. The 'all' row carries the lag of the first output.
    """
    if NAIVE not in forecasts:
        raise BacktestError("score_forecasts needs the naive forecast (the skill reference)")
    actual = np.asarray(actual, dtype=np.float64)
    n_out = actual.shape[1]
    groups = ([("all", list(range(n_out)))] if n_out > 1 else []) + [
        (labels[j], [j]) for j in range(n_out)
    ]
    naive_rmse = {
        label: metrics(actual[:, cols], forecasts[NAIVE][:, cols])["rmse"] for label, cols in groups
    }
    out = []
    for name, pred in forecasts.items():
        pred = np.asarray(pred, dtype=np.float64).reshape(actual.shape)
        bands = (intervals or {}).get(name, {})
        for label, cols in groups:
            a, p = actual[:, cols], pred[:, cols]
            row = {"model": name, "step": label, "n": int(a.size)}
            row.update(metrics(a, p, last_close=last_close, scale=scale))
            row["skill"] = skill(row["rmse"], naive_rmse[label])
            for lv in LEVELS:
                key = level_key(lv)
                lo_hi = bands.get(key)
                ok = lo_hi is not None and np.isfinite(lo_hi[0][:, cols]).all()
                row[f"coverage_{key}"] = (
                    coverage(a, lo_hi[0][:, cols], lo_hi[1][:, cols]) if ok else None
                )
            lag, corr = best_lag(p[:, 0], target[:, cols[0]], rows, max_lag)
            row["lag"], row["lag_corr"] = lag, corr
            sk = row["skill"]
            row["lagging"] = bool(
                lag is not None
                and lag >= 1
                and not (sk is not None and math.isfinite(sk) and sk > 0)
            )
            out.append(row)
    return clean(out)


# --------------------------------------------------------------------------- rolling origin


def _pre_cfg(cfg: dict) -> dict:
    return {
        "start": cfg.get("start"),
        "end": cfg.get("end"),
        "features": list(cfg["features"]),
        "lookback": int(cfg["lookback"]),
        "horizon": int(cfg["horizon"]),
        "target": cfg["target"],
        "val_fraction": float(cfg["val_fraction"]),
        "test_fraction": 0.0,  # set per fold
    }


def rolling_backtest(
    prices: pd.DataFrame,
    cfg: dict,
    out_dir: Path | None,
    logger: Logger | None = None,
    fit: FitFn = keras_fit,
    who: str = "series",
) -> dict:
    """Every model of `cfg["model"]` on the same rolling origins and targets.

    `cfg` holds BacktestConfig's fields (tasks.config); network fits write their files
    under `out_dir` (needed only with a network). Naive is always scored: it is the
    skill reference. Returns {"origins", "models", "metrics" (rows), "folds" (per network),
    "table" (one row per model, origin and output)}.
    """
    logger = logger or logging.getLogger(__name__)
    pre_cfg = _pre_cfg(cfg)
    horizon, target = pre_cfg["horizon"], pre_cfg["target"]
    models = list(dict.fromkeys([*cfg["model"], NAIVE]))
    unknown = [m for m in models if m not in NETWORKS + BASELINES]
    if unknown:
        raise BacktestError(f"unknown model(s) {unknown}; valid: {list(NETWORKS + BASELINES)}")
    settings = {
        "horizon": horizon,
        "lookback": pre_cfg["lookback"],
        "val_fraction": pre_cfg["val_fraction"],
        "ridge_lags": int(cfg.get("ridge_lags", 5)),
        "ma_window": int(cfg.get("ma_window", 20)),
    }
    check_initial(int(cfg["initial"]), models, **settings)
    dates, close = featurised(prices, pre_cfg)
    origins = rolling_origins(
        len(close), int(cfg["initial"]), int(cfg["step"]), horizon, cfg.get("window", "expanding")
    )
    rows = origins.rows
    n_out = output_width(target, horizon)
    weights = target_weights(target, horizon, n_out)
    y_price = target_prices(close, horizon, target)
    actual = y_price[rows]
    last = close[rows]
    scale = training_scale(close, origins)
    forecasts: dict[str, np.ndarray] = {}
    intervals: dict[str, dict] = {}
    fold_of: dict[str, np.ndarray] = {}
    folds: dict[str, list] = {}
    # the training options the config has; "model" is the list of models here, each
    # network's fit names its own
    train_cfg = {k: cfg[k] for k in TRAIN_FIELDS if k in cfg and k != "model"}
    for name in models:
        if name in BASELINES:
            paths = baseline_paths(
                name,
                close,
                origins,
                ma_window=settings["ma_window"],
                ridge_lags=settings["ridge_lags"],
                ridge_alpha=float(cfg.get("ridge_alpha", 1.0)),
            )
            forecasts[name] = paths @ weights.T
            continue
        if out_dir is None:
            raise BacktestError(f"model {name!r} is a network: give an out_dir for its fits")
        net = network_forecasts(
            name,
            prices,
            pre_cfg,
            train_cfg,
            dates,
            origins,
            int(cfg["refit_every"]),
            Path(out_dir),
            logger,
            fit=fit,
            who=who,
        )
        forecasts[name], intervals[name] = net["forecasts"], net["intervals"]
        fold_of[name], folds[name] = net["fold"], net["folds"]
    max_lag = cfg.get("max_lag") or horizon + 5
    labels = output_labels(target, horizon)
    scored = score_forecasts(
        actual,
        forecasts,
        last,
        scale,
        labels,
        rows=rows,
        target=y_price,
        max_lag=int(max_lag),
        intervals=intervals,
    )
    for row in scored:
        row["kind"] = "network" if row["model"] in NETWORKS else "baseline"
    info = {
        "rows": int(len(close)),
        "first_day": str(dates[0]),
        "last_day": str(dates[-1]),
        "origins": int(len(rows)),
        "first_origin": str(dates[rows[0]]),
        "last_origin": str(dates[rows[-1]]),
        "initial": origins.initial,
        "step": origins.step,
        "window": origins.window,
        "horizon": horizon,
        "target": target,
        "refit_every": int(cfg["refit_every"]),
        "max_lag": int(max_lag),
        "mase_scale": "per origin: in-sample one-step naive MAE of the closes in its window",
    }
    table = _forecast_table(
        dates, rows, last, actual, forecasts, intervals, fold_of, target, horizon
    )
    logger.info(
        "%s backtest: %d origins %s..%s, %s",
        who,
        len(rows),
        info["first_origin"],
        info["last_origin"],
        ", ".join(
            f"{r['model']} RMSE {r['rmse']:.4f}"
            for r in scored
            if r["step"] == (labels[0] if n_out == 1 else "all") and r["rmse"] is not None
        ),
    )
    return {"origins": info, "models": models, "metrics": scored, "folds": folds, "table": table}


def _forecast_table(
    dates: np.ndarray,
    rows: np.ndarray,
    last: np.ndarray,
    actual: np.ndarray,
    forecasts: dict[str, np.ndarray],
    intervals: dict[str, dict],
    fold_of: dict[str, np.ndarray],
    target: str,
    horizon: int,
) -> pd.DataFrame:
    """Long format: one row per model, origin and output."""
    days = output_days(target, horizon)
    parts = []
    for name, pred in forecasts.items():
        for j, day in enumerate(days):
            part = {
                "model": name,
                "origin": pd.to_datetime(dates[rows]),
                "output": j + 1,
                "days_ahead": int(day),
                "target_date": pd.to_datetime(dates[rows + day]),
                "last_close": last,
                "actual": actual[:, j],
                "forecast": pred[:, j],
                "fold": fold_of[name] if name in fold_of else np.zeros(len(rows), np.int64),
            }
            for lv in LEVELS:
                key = level_key(lv)
                lo_hi = intervals.get(name, {}).get(key)
                nan = np.full(len(rows), np.nan)
                part[f"lo_{key}"] = lo_hi[0][:, j] if lo_hi is not None else nan
                part[f"hi_{key}"] = lo_hi[1][:, j] if lo_hi is not None else nan
            parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- reports and files

COLUMNS = (
    ("model", "model", "s"),
    ("step", "step", "s"),
    ("n", "n", "d"),
    ("rmse", "RMSE", ".4f"),
    ("mae", "MAE", ".4f"),
    ("mape", "MAPE %", ".2f"),
    ("mase", "MASE", ".3f"),
    ("directional_accuracy", "dir %", ".1f"),
    ("coverage_80", "cov 80", ".0%"),
    ("coverage_95", "cov 95", ".0%"),
    ("skill", "skill", "+.1%"),
    ("lag", "lag", "d"),
    ("lagging", "lagging", "s"),
)


def _cell(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    if key == "lagging":
        return "LAGGING" if value else ""
    if value is None:
        return "n/a" if key not in ("coverage_80", "coverage_95") else "-"
    return format(value, spec) if spec != "s" else str(value)


def format_table(rows: list[dict]) -> str:
    """The metrics rows as an aligned plain-text table (what the CLI prints)."""
    cells = [[title for _, title, _ in COLUMNS]]
    cells += [[_cell(r, key, spec) for key, _, spec in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_lines(ticker: str, result: dict) -> list[str]:
    """The markdown report of one ticker: what was run, the table, the lag verdicts."""
    o = result["origins"]
    lines = [
        f"## {ticker}",
        "",
        f"- {o['origins']} origins {o['first_origin']} .. {o['last_origin']} (every "
        f"{o['step']} day(s)) over {o['rows']} rows {o['first_day']} .. {o['last_day']}",
        f"- target `{o['target']}`, horizon {o['horizon']}; {o['window']} training window, "
        f"first {o['initial']} rows; networks refit every {o['refit_every']} origin(s), "
        "baselines at every origin",
        f"- MASE scale: {o['mase_scale']}; lag searched over 0..{o['max_lag']} days",
        "",
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in result["metrics"]:
        lines.append("| " + " | ".join(_cell(r, k, s) for k, _, s in COLUMNS) + " |")
    lines.append("")
    for name in result["models"]:
        lagging = [r for r in result["metrics"] if r["model"] == name and r["lagging"]]
        if lagging:
            r = lagging[0]
            lines.append(
                f"- **{name} is lagging** ({r['step']}): its forecast best matches the actual "
                f"series {r['lag']} day(s) late (correlation {r['lag_corr']:.2f}) and it has no "
                "skill over naive: it follows the price instead of anticipating it."
                + (" (By construction for naive, the reference.)" if name == NAIVE else "")
            )
    return lines


def metrics_frame(rows: list[dict], ticker: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.insert(0, "ticker", ticker)
    for col in ("lag",):
        frame[col] = frame[col].astype("Int64")
    return frame


def write_rolling(out_dir: Path, result: dict, ticker: str) -> dict[str, Path]:
    """metrics.parquet, forecasts.parquet and backtest.json of one ticker's backtest."""
    table = result["table"].copy()
    table.insert(0, "ticker", ticker)
    return _write_files(
        out_dir,
        {
            "metrics_parquet": ("metrics.parquet", metrics_frame(result["metrics"], ticker)),
            "forecasts_parquet": ("forecasts.parquet", table),
            "summary_json": ("backtest.json", {"ticker": ticker, **_without_table(result)}),
        },
    )


def write_run(data_dir: str | Path, per_ticker: list[dict], report: str) -> dict[str, Path]:
    """One folder per backtest run, <data_dir>/backtests/backtest-<UTC>-<id>/, holding every
    ticker's metrics.parquet and forecasts.parquet together (`per_ticker`: `write_rolling`'s
    paths of each ticker) and report.md. Assembled in a
    hidden folder and renamed into place, so a reader never sees half a run."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    root = Path(data_dir) / "backtests"
    final = root / f"backtest-{stamp}-{uuid.uuid4().hex[:6]}"
    staging = root / f".tmp-{final.name}"
    staging.mkdir(parents=True)
    try:
        for key in ("metrics", "forecasts"):
            frames = [pd.read_parquet(t[f"{key}_parquet"]) for t in per_ticker]
            pd.concat(frames, ignore_index=True).to_parquet(staging / f"{key}.parquet", index=False)
        (staging / "report.md").write_text(report)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "folder": final,
        "metrics": final / "metrics.parquet",
        "forecasts": final / "forecasts.parquet",
        "report": final / "report.md",
    }
