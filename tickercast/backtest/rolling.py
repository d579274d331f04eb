"""The rolling-origin backtest (`tickercast backtest`): every model on the same origins and
targets, networks refit every `refit_every` origins, baselines at every origin; scored per
output with skill against naive, conformal coverage and the lag diagnostic (vocabulary in
`tickercast.backtest`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from tickercast.backtest.prepare import FitFn, Logger, featurised, fit_fold, keras_fit
from tickercast.choices import BASELINES, NETWORKS
from tickercast.config import TRAIN_FIELDS
from tickercast.evaluation.baseline_registry import descriptions, forecast_rolling
from tickercast.evaluation.baseline_registry import settings as baseline_settings
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
    check_initial,
    refit_folds,
    rolling_origins,
)
from tickercast.modeling.preprocess import output_width, target_prices
from tickercast.progress import track
from tickercast.significance import dm_test, verdict_of

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
    with track(f"{who} backtest {name} refits", total=len(plan)) as bar:
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
            fold_close = np.asarray(fitted.arrays["close"], dtype=np.float64)
            if len(val):
                val_pred = np.asarray(fitted.forecaster(fitted.arrays, val), dtype=np.float64)
                val_actual = np.asarray(fitted.arrays["y_price"], dtype=np.float64)[val]
                cal = calibrate(
                    val_actual.reshape(len(val), -1),
                    val_pred.reshape(len(val), -1),
                    scale=recent_volatility(fold_close, val),
                )
            vol = recent_volatility(fold_close, np.asarray(group) - fold.train_start)
            for key, c in cal.items():
                q = np.asarray(c["q"], dtype=np.float64)
                if np.isfinite(q).all():  # too few calibration windows: no band
                    bands[key][0][part], bands[key][1][part] = interval(pred[part], q, vol)
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
            bar.advance(1, f"{who} backtest {name} refits · {at}/{k} origins")
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
            if name == NAIVE:
                row["p"], row["dm"] = None, None
            else:
                test = dm_test(a, p, forecasts[NAIVE][:, cols], overlap)
                row["p"] = test.p_value if math.isfinite(test.p_value) else None
                row["dm"] = verdict_of(test.p_value, test.mean_diff)
            for lv in LEVELS:
                key = level_key(lv)
                lo_hi = bands.get(key)
                ok = lo_hi is not None and np.isfinite(lo_hi[0][:, cols]).all()
                row[f"coverage_{key}"] = (
                    coverage(a, lo_hi[0][:, cols], lo_hi[1][:, cols]) if ok else None
                )
            lag, corr = best_lag(p[:, 0], target[:, cols[0]], rows, max_lag)
            row["lag"], row["lag_corr"] = lag, corr
            row["lagging"] = bool(lag is not None and lag >= 1 and row["dm"] != "better")
            out.append(row)
    return clean(out)


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

    `cfg` holds BacktestConfig's fields (tickercast.config); network fits write their files
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
    params = baseline_settings(cfg)  # the baselines' parameters: the config's or defaults
    settings = {
        "horizon": horizon,
        "lookback": pre_cfg["lookback"],
        "val_fraction": pre_cfg["val_fraction"],
        **params,
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
    scale = mase_scale(close, origins, cfg.get("mase_scale", "series"))
    forecasts: dict[str, np.ndarray] = {}
    intervals: dict[str, dict] = {}
    fold_of: dict[str, np.ndarray] = {}
    folds: dict[str, list] = {}
    # the training options the config has; "model" is the list of models here, each
    # network's fit names its own
    train_cfg = {k: cfg[k] for k in TRAIN_FIELDS if k in cfg and k != "model"}
    for name in models:
        if name in BASELINES:
            forecasts[name] = forecast_rolling(name, close, origins, params) @ weights.T
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
        overlap=max(1, math.ceil(horizon / origins.step)),
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
        "mase_scale": MASE_SCALES[cfg.get("mase_scale", "series")],
        "baselines": descriptions(params, [m for m in models if m in BASELINES], horizon),
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
