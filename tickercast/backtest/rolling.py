"""The rolling-origin backtest (`tickercast backtest`): every model on the same origins and
targets, networks refit every `refit_every` origins, baselines at every origin; scored per
output with skill against naive, conformal coverage and the lag diagnostic (vocabulary in
`tickercast.backtest`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tickercast.backtest.bands import (
    MODEL_BAND,
    Piece,
    band_table,
    naive_pieces,
    table_rows,
    training_rows,
)
from tickercast.backtest.initial import check_initial
from tickercast.backtest.prepare import (
    FitFn,
    FittedFold,
    Logger,
    Series,
    featurised,
    fit_fold,
    keras_fit,
)
from tickercast.choices import BASELINES, NETWORKS
from tickercast.evaluation.baseline_registry import descriptions, forecast_rolling
from tickercast.evaluation.baselines import training_scale
from tickercast.evaluation.conformal import (
    LEVELS,
    calibrate,
    coverage,
    interval,
    level_key,
    recent_volatility,
)
from tickercast.evaluation.evaluate import target_weights
from tickercast.evaluation.jsonsafe import clean
from tickercast.evaluation.metrics import metrics, skill
from tickercast.evaluation.names import NAIVE
from tickercast.folds import (
    BacktestError,
    Origins,
    refit_folds,
    rolling_origins,
)
from tickercast.modeling.preprocess import output_width, target_prices
from tickercast.progress import track
from tickercast.significance import dm_test, verdict_of

if TYPE_CHECKING:  # settings arrive as values: their classes' code is no part of a backtest
    from tickercast.sections import Rolling, RollingSpec, Windowing

# --------------------------------------------------------------------------- networks


@dataclass(frozen=True)
class RollingSeries(Series):
    """The backtested series with its closes and the rolling origins every model
    forecasts from."""

    close: np.ndarray
    origins: Origins


def network_forecasts(
    name: str,
    series: RollingSeries,
    spec: RollingSpec,
    out_dir: Path,
    logger: Logger,
    fit: FitFn = keras_fit,
    who: str = "series",
) -> dict:
    """The network `name` refit every `refit_every` origins; each fit forecasts its group's
    origins and calibrates split-conformal intervals on its own validation windows.

    Returns {"forecasts": (n, outputs), "intervals": {level: (lo, hi)}, "fold": (n,) fold
    number per origin, "folds": per-fit details, "pieces": per fit what its distribution
    table needs (`tickercast.backtest.bands.Piece`)}.
    """
    section, origins = spec.preprocessing, series.origins
    n_out = output_width(section.target, origins.horizon)
    k = len(origins)
    pred = np.full((k, n_out), np.nan)
    bands = {
        level_key(lv): (np.full((k, n_out), np.nan), np.full((k, n_out), np.nan)) for lv in LEVELS
    }
    fold_of = np.zeros(k, dtype=np.int64)
    folds, pieces, at = [], [], 0
    plan = refit_folds(origins, spec.backtest.refit_every, section.val_fraction)
    fit_spec = spec.fit_spec(name)
    with track(f"{who} backtest {name} refits", total=len(plan)) as bar:
        for fold, group in plan:
            folder = out_dir / name / f"fold-{fold.fold}"
            fitted = fit_fold(series, section, fold, fit, fit_spec, folder, logger, who)
            part = slice(at, at + len(group))
            pred[part] = fitted.forecast(group)
            cal, piece = _calibrated(fitted, pred[part], group, bands, part)
            pieces.append(piece)
            fold_of[part] = fold.fold
            folds.append(_fold_entry(fitted, series.dates, group, cal))
            logger.info(
                "%s backtest %s fit %d/%d at %s (train %s..%s): %d origin(s)",
                who,
                name,
                fold.fold,
                len(plan),
                series.dates[group[0]],
                series.dates[fold.train_start],
                fitted.spec.train_end,
                len(group),
            )
            at += len(group)
            bar.advance(1, f"{who} backtest {name} refits · {at}/{k} origins")
    return {
        "forecasts": pred,
        "intervals": bands,
        "fold": fold_of,
        "folds": folds,
        "pieces": pieces,
    }


def _calibrated(
    fitted: FittedFold, pred: np.ndarray, group, bands: dict, part: slice
) -> tuple[dict, Piece]:
    """Split-conformal quantiles from the fit's validation windows, and its group's bands
    (into `bands` at `part`); returns the quantiles per level and the fit's piece of the
    distribution table. A forecaster with a quantile head (a `quantiles` attribute:
    (arrays, anchors) -> (n, outputs, len(QUANTILES)) in prices) gives its own grid."""
    val = fitted.anchors["val"]
    cal = {}
    fold_close = np.asarray(fitted.arrays["close"], dtype=np.float64)
    n_out = pred.shape[1]
    val_pred, val_actual = np.zeros((0, n_out)), np.zeros((0, n_out))
    if len(val):
        val_pred = np.asarray(fitted.forecaster(fitted.arrays, val), dtype=np.float64)
        val_actual = np.asarray(fitted.arrays["y_price"], dtype=np.float64)[val]
        val_pred, val_actual = val_pred.reshape(len(val), -1), val_actual.reshape(len(val), -1)
        cal = calibrate(val_actual, val_pred, scale=recent_volatility(fold_close, val))
    vol = recent_volatility(fold_close, np.asarray(group) - fitted.fold.train_start)
    for key, c in cal.items():
        q = np.asarray(c["q"], dtype=np.float64)
        if np.isfinite(q).all():  # too few calibration windows: no band
            bands[key][0][part], bands[key][1][part] = interval(pred, q, vol)
    head = getattr(fitted.forecaster, "quantiles", None)
    local = np.asarray(group) - fitted.fold.train_start
    grid = None if head is None else np.asarray(head(fitted.arrays, local), dtype=np.float64)
    start = fitted.fold.train_start
    piece = Piece(
        val + start,
        val_actual,
        val_pred,
        np.asarray(group),
        pred,
        int(group[0]),
        grid,
        training_rows(fitted.fold),
    )
    return cal, piece


def _fold_entry(fitted: FittedFold, dates: np.ndarray, group, cal: dict) -> dict:
    fold = fitted.fold
    return {
        **asdict(fold),
        "refit_origin": str(dates[group[0]]),
        "origins": int(len(group)),
        "train_first": str(dates[fold.train_start]),
        "train_end": fitted.spec.train_end,
        "val_end": fitted.spec.val_end,
        "intervals": clean({k: v["q"] for k, v in cal.items()}),
        "training": clean(fitted.info),
    }


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
    overlap: int = 1,
) -> list[dict]:
    """One metrics row per model and output (plus a pooled 'all' row for vector targets).

    `actual` and each forecast are (origins, outputs) prices; `scale` is MASE's per-origin
    denominator (`training_scale`); `target` the actual target per row of the series (for
    the lag diagnostic); `intervals[model][level] = (lo, hi)`. Skill is 1 - RMSE / RMSE of
    naive on the same cells; `p` is the two-sided Diebold-Mariano p-value of the model
    against naive on those cells (squared errors; `overlap`: how many consecutive origins
    share a target day, the MA order + 1 of their errors) and `dm` its verdict at 5%. A
    model is `lagging` when its best lag is >= 1 day and it is not significantly better
    than naive. The 'all' row carries the lag of the first output.
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
            naive = None if name == NAIVE else forecasts[NAIVE][:, cols]
            row["p"], row["dm"] = _versus_naive(a, p, naive, overlap)
            row.update(_coverages(a, bands, cols))
            lag, corr = best_lag(p[:, 0], target[:, cols[0]], rows, max_lag)
            row["lag"], row["lag_corr"] = lag, corr
            row["lagging"] = bool(lag is not None and lag >= 1 and row["dm"] != "better")
            out.append(row)
    return clean(out)


def _versus_naive(
    actual: np.ndarray, pred: np.ndarray, naive: np.ndarray | None, overlap: int
) -> tuple[float | None, str | None]:
    """(Diebold-Mariano p-value, verdict) against naive; (None, None) for naive itself."""
    if naive is None:
        return None, None
    test = dm_test(actual, pred, naive, overlap)
    p_value = test.p_value if math.isfinite(test.p_value) else None
    return p_value, verdict_of(test.p_value, test.mean_diff)


def _coverages(
    actual: np.ndarray, bands: dict[str, tuple[np.ndarray, np.ndarray]], cols: list[int]
) -> dict[str, float | None]:
    """Coverage of each interval level on the cells `cols` (None: no band or not finite)."""
    out: dict[str, float | None] = {}
    for lv in LEVELS:
        key = level_key(lv)
        lo_hi = bands.get(key)
        ok = lo_hi is not None and np.isfinite(lo_hi[0][:, cols]).all()
        out[f"coverage_{key}"] = (
            coverage(actual, lo_hi[0][:, cols], lo_hi[1][:, cols]) if ok else None
        )
    return out


# --------------------------------------------------------------------------- rolling origin


MASE_SCALES = {
    "series": "the one-step naive MAE of the whole backtested series (FPP3 / fable)",
    "origin": "per origin: in-sample one-step naive MAE of the closes in its window",
}


def mase_scale(close: np.ndarray, origins: Origins, kind: str = "series") -> np.ndarray:
    """MASE's denominator per origin. "series" (the textbook's, Hyndman & Athanasopoulos,
    FPP3 5.10, and fable's): one number, the mean absolute one-step change of the series
    the user backtests; "origin": each origin's own in-sample naive MAE."""
    if kind == "origin":
        return training_scale(close, origins)
    if kind != "series":
        raise BacktestError(f"unknown mase_scale {kind!r}; valid: {list(MASE_SCALES)}")
    steps = np.abs(np.diff(np.asarray(close, dtype=np.float64)))
    value = float(steps.mean()) if len(steps) else float("nan")
    return np.full(len(origins.rows), value)


def rolling_backtest(
    prices: pd.DataFrame,
    spec: RollingSpec,
    out_dir: Path | None,
    logger: Logger | None = None,
    fit: FitFn = keras_fit,
    who: str = "series",
) -> dict:
    """Every model of `spec.backtest.model` on the same rolling origins and targets.

    Network fits write their files under `out_dir` (needed only with a network). Naive is
    always scored: it is the skill reference. Returns {"origins", "models", "metrics"
    (rows), "folds" (per network), "table" (one row per model, origin and output)}.
    """
    logger = logger or logging.getLogger(__name__)
    section, rolling = spec.preprocessing, spec.backtest
    models = list(dict.fromkeys([*rolling.model, NAIVE]))
    unknown = [m for m in models if m not in NETWORKS + BASELINES]
    if unknown:
        raise BacktestError(f"unknown model(s) {unknown}; valid: {list(NETWORKS + BASELINES)}")
    series = _series(prices, section, rolling, models)
    forecasts: dict[str, np.ndarray] = {}
    networks: dict[str, dict] = {}
    for name in models:
        if name in BASELINES:
            forecasts[name] = _baseline_forecasts(name, series, section, rolling)
            continue
        if out_dir is None:
            raise BacktestError(f"model {name!r} is a network: give an out_dir for its fits")
        networks[name] = network_forecasts(name, series, spec, Path(out_dir), logger, fit, who)
        forecasts[name] = networks[name]["forecasts"]
    scored = _scored(series, section, rolling, forecasts, networks)
    info = _origins_info(series, section, rolling, models)
    table = _forecast_table(series, forecasts, networks, section.target)
    _log_summary(logger, who, info, scored, output_labels(section.target, section.horizon))
    folds = {name: net["folds"] for name, net in networks.items()}
    band = (spec.evaluation.band, section.lookback)
    distribution, scores = _distribution(series, section, rolling, networks, band)
    return {
        "origins": info,
        "models": models,
        "metrics": scored,
        "folds": folds,
        "distribution": distribution,
        "table": table,
        "distribution_scores": scores,
    }


def _distribution(
    series: RollingSeries, section, rolling, networks: dict[str, dict], band: tuple[str, int]
) -> tuple[dict, pd.DataFrame]:
    """The distribution table around each network's median and naive's: {"medians":
    {median: judged}, "rows": flat rows}, and the per-origin relative scores (a `median`
    column) that pool across tickers."""
    pieces = {name: net["pieces"] for name, net in networks.items()}
    pieces[NAIVE] = naive_pieces(
        series.close, series.origins, section.target, rolling.refit_every, section.val_fraction
    )
    medians, rows, frames = {}, [], []
    for median, parts in pieces.items():
        judged, scores = band_table(
            series.close, series.origins, section.target, parts, series.dates, band
        )
        medians[median] = judged
        rows += table_rows(median, judged)
        if not scores.empty:
            scores.insert(0, "median", median)
            frames.append(scores)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return {"reference": MODEL_BAND, "medians": clean(medians), "rows": clean(rows)}, frame


def _series(prices: pd.DataFrame, section: Windowing, rolling: Rolling, models) -> RollingSeries:
    """The featurised series and its origins, once the first window is long enough."""
    check_initial(
        rolling.initial,
        models,
        horizon=section.horizon,
        lookback=section.lookback,
        val_fraction=section.val_fraction,
        ridge_lags=rolling.ridge_lags,
        ma_window=rolling.ma_window,
        ridge_alpha=rolling.ridge_alpha,
    )
    dates, close = featurised(prices, section)
    origins = rolling_origins(
        len(close), rolling.initial, rolling.step, section.horizon, rolling.window
    )
    return RollingSeries(prices, dates, close, origins)


def _baseline_forecasts(
    name: str, series: RollingSeries, section: Windowing, rolling: Rolling
) -> np.ndarray:
    """A baseline refit at every origin (vectorised), as forecasts of the target."""
    horizon, target = section.horizon, section.target
    weights = target_weights(target, horizon, output_width(target, horizon))
    paths = forecast_rolling(name, series.close, series.origins, rolling.model_dump())
    return paths @ weights.T


def _scored(series: RollingSeries, section, rolling, forecasts, networks) -> list[dict]:
    horizon, target, rows = section.horizon, section.target, series.origins.rows
    y_price = target_prices(series.close, horizon, target)
    scored = score_forecasts(
        y_price[rows],
        forecasts,
        series.close[rows],
        mase_scale(series.close, series.origins, rolling.mase_scale),
        output_labels(target, horizon),
        rows=rows,
        target=y_price,
        max_lag=rolling.max_lag or horizon + 5,
        intervals={name: net["intervals"] for name, net in networks.items()},
        overlap=max(1, math.ceil(horizon / series.origins.step)),
    )
    for row in scored:
        row["kind"] = "network" if row["model"] in NETWORKS else "baseline"
    return scored


def _origins_info(series: RollingSeries, section, rolling, models: list[str]) -> dict:
    dates, origins, rows = series.dates, series.origins, series.origins.rows
    return {
        "rows": int(len(series.close)),
        "first_day": str(dates[0]),
        "last_day": str(dates[-1]),
        "origins": int(len(rows)),
        "first_origin": str(dates[rows[0]]),
        "last_origin": str(dates[rows[-1]]),
        "initial": origins.initial,
        "step": origins.step,
        "window": origins.window,
        "horizon": section.horizon,
        "target": section.target,
        "refit_every": rolling.refit_every,
        "max_lag": rolling.max_lag or section.horizon + 5,
        "mase_scale": MASE_SCALES[rolling.mase_scale],
        "baselines": descriptions(
            rolling.model_dump(), [m for m in models if m in BASELINES], section.horizon
        ),
    }


def _log_summary(logger, who: str, info: dict, scored: list[dict], labels: list[str]) -> None:
    first = labels[0] if len(labels) == 1 else "all"
    logger.info(
        "%s backtest: %d origins %s..%s, %s",
        who,
        info["origins"],
        info["first_origin"],
        info["last_origin"],
        ", ".join(
            f"{r['model']} RMSE {r['rmse']:.4f}"
            for r in scored
            if r["step"] == first and r["rmse"] is not None
        ),
    )


def _forecast_table(
    series: RollingSeries, forecasts: dict[str, np.ndarray], networks: dict[str, dict], target: str
) -> pd.DataFrame:
    """Long format: one row per model, origin and output."""
    dates, rows, horizon = series.dates, series.origins.rows, series.origins.horizon
    last = series.close[rows]
    actual = target_prices(series.close, horizon, target)[rows]
    days = output_days(target, horizon)
    parts = []
    for name, pred in forecasts.items():
        net = networks.get(name, {})
        fold = net.get("fold", np.zeros(len(rows), np.int64))
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
                "fold": fold,
            }
            for lv in LEVELS:
                key = level_key(lv)
                lo_hi = net.get("intervals", {}).get(key)
                nan = np.full(len(rows), np.nan)
                part[f"lo_{key}"] = lo_hi[0][:, j] if lo_hi is not None else nan
                part[f"hi_{key}"] = lo_hi[1][:, j] if lo_hi is not None else nan
            parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)
