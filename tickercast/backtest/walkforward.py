"""Retrain's walk-forward backtest: K expanding folds, each refit and scored like the
retrain itself (`evaluate_forecasts`), summarised as mean ± std over the folds."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tickercast.backtest.files import without_table, write_files
from tickercast.backtest.prepare import FitFn, FittedFold, Logger, Series, fit_fold, keras_fit
from tickercast.choices import BAND
from tickercast.evaluation.distribution import dm_verdict, verdict_words
from tickercast.evaluation.evaluate import evaluate_forecasts
from tickercast.evaluation.jsonsafe import clean
from tickercast.evaluation.names import FORECASTERS, MODEL
from tickercast.folds import expanding_folds
from tickercast.modeling.preprocess import preprocess
from tickercast.progress import track
from tickercast.significance import LEVEL, compare

if TYPE_CHECKING:  # settings arrive as values: their classes' code is no part of a fit
    from tickercast.sections import FitSpec, PreprocessSettings, WalkForward


def summarize(folds: list[dict]) -> dict:
    """Mean ± std (ddof=1; 0 for one fold) of every metric of every forecaster."""
    summary: dict[str, dict] = {}
    for name in folds[0]["metrics"] if folds else []:
        summary[name] = {}
        for metric, first in folds[0]["metrics"][name].items():
            if isinstance(first, str):  # a per-fold verdict: the pooled test replaces it
                continue
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
    section: PreprocessSettings,
    spec: FitSpec,
    walk: WalkForward,
    out_dir: Path,
    logger: Logger | None = None,
    fit: FitFn = keras_fit,
    who: str = "series",
    band: str = BAND,
) -> dict:
    """Run `walk`'s folds, each network fitted as `spec` says with at most
    `walk.fold_epochs` epochs and judged with the band it ships (`band`); returns per-fold
    results, the summary and the predictions table."""
    logger = logger or logging.getLogger(__name__)
    spec0, arrays0 = preprocess(prices, section, who=who)
    dates = arrays0["dates"]
    folds = expanding_folds(
        len(dates),
        walk.walk_forward_folds,
        spec0.n_test,
        section.val_fraction,
        spec0.lookback,
        spec0.horizon,
    )
    epochs = walk.fold_epochs(spec.training.epochs)
    fold_spec = spec.model_copy(update={"epochs": epochs})
    series = Series(prices, dates)
    results, tables = [], []
    with track(f"{who} walk-forward folds", total=len(folds)) as bar:
        for fold in folds:
            folder = out_dir / f"fold-{fold.fold}"
            fitted = fit_fold(series, section, fold, fit, fold_spec, folder, logger, who)
            entry, table = _scored_fold(fitted, dates, band)
            results.append(entry)
            tables.append(table)
            logger.info(
                "%s walk-forward fold %d/%d: train ..%s, test %s..%s, RMSE model %.4f naive %.4f",
                who,
                fold.fold,
                len(folds),
                entry["train_end"],
                entry["test_first_target"],
                entry["test_last_target"],
                entry["metrics"]["model"]["rmse"],
                entry["metrics"]["naive"]["rmse"],
            )
            bar.advance()
    table = pd.concat(tables, ignore_index=True)
    summary = summarize(results)
    summary["significance"] = pooled_significance(table, spec0.horizon)
    summary["distribution"] = pooled_distribution(table, spec0.horizon)
    return {
        "n_folds": len(folds),
        "epochs_per_fold": int(epochs),
        "folds": results,
        "summary": summary,
        "table": table,
    }


def _scored_fold(
    fitted: FittedFold, dates: np.ndarray, band: str = BAND
) -> tuple[dict, pd.DataFrame]:
    """A fitted fold scored like the retrain itself: its entry and predictions table."""
    fold, spec = fitted.fold, fitted.spec
    head = getattr(fitted.forecaster, "quantiles", None)  # a quantile head, when it has one
    ev = evaluate_forecasts(
        spec,
        fitted.arrays,
        fitted.anchors,
        lambda a: fitted.forecaster(fitted.arrays, a),
        None if head is None else (lambda a: head(fitted.arrays, a)),
        band,
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
        "distribution": ev["distribution"],
        "training": clean(fitted.info),
    }
    table = ev["table"].copy()
    table.insert(0, "fold", fold.fold)
    return entry, table


def pooled_significance(table: pd.DataFrame, horizon: int) -> dict[str, dict]:
    """Diebold-Mariano tests of the model against each other forecaster over every fold's
    test windows pooled (first output), the walk-forward's verdict on skill."""
    others = {n: table[n] for n in FORECASTERS if n != MODEL and n in table.columns}
    return compare(table["actual"], table[MODEL], others, horizon, level=LEVEL)


def pooled_distribution(table: pd.DataFrame, horizon: int) -> dict[str, dict]:
    """The model's band against each distribution baseline over every fold's test windows
    pooled: mean CRPS and the DM test on per-origin CRPS differences, in words."""
    if "crps_model" not in table.columns:
        return {}
    out = {}
    for column in [c for c in table.columns if c.startswith("crps_") and c != "crps_model"]:
        name = column.removeprefix("crps_")
        d = (table["crps_model"] - table[column]).to_numpy(dtype=np.float64)
        test = dm_verdict(d, horizon)
        out[name] = {
            "crps_model": float(table["crps_model"].mean()),
            "crps": float(table[column].mean()),
            **test,
            "verdict_text": verdict_words(test["verdict"], name, test["p"], False),
        }
    return out


def write_backtest(out_dir: Path, backtest: dict, ticker: str) -> dict[str, Path]:
    """backtest.json (folds + summary), the per-fold predictions and the per-fold plot."""
    from tickercast.evaluation.plots import plot_folds

    paths = write_files(
        out_dir,
        {
            "backtest_json": ("backtest.json", without_table(backtest)),
            "predictions": ("backtest_predictions.parquet", backtest["table"]),
        },
    )
    paths["folds_png"] = out_dir / "folds.png"
    plot_folds(backtest["folds"], paths["folds_png"], f"{ticker}: walk-forward RMSE per fold")
    return paths
