"""The pipeline's Prefect tasks: thin wrappers that read and write files by path.

Each task receives JSON-ready inputs (upstream results carrying file paths and their
sha256, plus its slice of the config) and returns the same kind of dict, so Prefect's
cache keys never pickle arrays or models (`tasks.caching`). Work files live under
`<data_dir>/work/<step>/<cache key>/`, so a cached result and its files always agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from tasks.caching import content_cache_key, step_key
from tasks.hashing import file_sha256
from tasks.runners import training_lock

INGEST_MODULES = (
    "tasks.ingest",
    "tasks.sources",
    "tasks.yahoo",
    "tasks.lake",
    "tasks.schema",
    "tasks.validate",
    "tasks.tickers",
    "tasks.errors",
)
PREPROCESS_MODULES = ("tasks.preprocess", "tasks.features")
WINDOWS_MODULES = ("tasks.windows",)
TRAIN_MODULES = ("tasks.train", "tasks.models", "tasks.windows", "tasks.device")
EVALUATE_MODULES = ("tasks.evaluate", "tasks.windows", "tasks.preprocess")
BACKTEST_MODULES = (
    "tasks.backtest",
    "tasks.evaluate",
    "tasks.preprocess",
    "tasks.features",
    "tasks.windows",
    *TRAIN_MODULES,
)


def work_dir(data_dir: str, step: str, modules: tuple[str, ...], params: dict) -> Path:
    """The content-addressed folder a step writes into (same key as its cache entry)."""
    return Path(data_dir) / "work" / step / step_key(step, modules, params)


def ingested_prices(ingested: dict):
    """The prices the ingest step stored for this run (its exact lake file)."""
    from tasks import lake

    return lake.read_price_file(Path(ingested["path"])).to_pandas()


def _outputs(*paths: Path) -> dict[str, str]:
    return {str(p): file_sha256(p) for p in paths}


# No Prefect-level retries: tasks.ingest retries transient fetch failures itself (backoff
# and jitter from `options`, each retry logged here), per request rather than per ticker,
# and the same way when its functions are called without Prefect. Permanent failures
# (unknown ticker, malformed file) fail the task at once.
@task(
    name="ingest",
    cache_key_fn=content_cache_key(
        "ingest", INGEST_MODULES, cacheable=lambda p: p.get("fingerprint") is not None
    ),
)
def ingest_step(
    ticker: str,
    source: str,
    data_dir: str,
    csv_dir: str | None,
    start: str | None,
    end: str | None,
    fingerprint: str | None,
    options: dict[str, Any] | None = None,
    period: str | None = None,
) -> dict:
    """Bring the ticker's lake partition up to date; `fingerprint` keys the cache.

    `options` are `tasks.ingest.IngestOptions` fields (overlap, move threshold, retries).
    """
    from tasks.ingest import ingest_ticker

    logger = get_run_logger()
    result = ingest_ticker(
        ticker,
        source,
        data_dir,
        csv_dir=csv_dir,
        start=start,
        end=end,
        period=period,
        options=options,
        log=logger.warning,
    )
    logger.info(
        "ingested %s from %s (%s): %d rows %s..%s, %d added, %d null rows dropped",
        ticker,
        source,
        result["mode"],
        result["rows"],
        result["first_day"],
        result["last_day"],
        result["rows_added"],
        result["dropped_null_rows"],
    )
    for warning in result["warnings"]:
        logger.warning(warning)
    return result


@task(name="preprocess", cache_key_fn=content_cache_key("preprocess", PREPROCESS_MODULES))
def preprocess_step(ingested: dict, cfg: dict, data_dir: str) -> dict:
    """Features, chronological split and train-only scalers, saved as arrays + JSON."""
    from tasks.preprocess import preprocess, save_preprocessed

    params = {"ingested": ingested, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "preprocess", PREPROCESS_MODULES, params)
    prices = ingested_prices(ingested)
    spec, arrays = preprocess(prices, cfg, who=f"ticker {ingested['ticker']}")
    npz, spec_path = save_preprocessed(out, spec, arrays)
    get_run_logger().info(
        "%s: %d rows %s..%s -> train %d / val %d / test %d (train ends %s)",
        ingested["ticker"],
        spec.n_train + spec.n_val + spec.n_test,
        spec.first_day,
        spec.last_day,
        spec.n_train,
        spec.n_val,
        spec.n_test,
        spec.train_end,
    )
    return {
        "ticker": ingested["ticker"],
        "arrays": str(npz),
        "spec": str(spec_path),
        "outputs": _outputs(npz, spec_path),
    }


@task(name="windows", cache_key_fn=content_cache_key("windows", WINDOWS_MODULES))
def windows_step(pre: dict, data_dir: str) -> dict:
    """Window anchors per split (indices only; the data is never copied per window)."""
    import json

    from tasks.preprocess import Preprocessing
    from tasks.windows import split_anchors

    params = {"pre": pre, "data_dir": data_dir}
    out = work_dir(data_dir, "windows", WINDOWS_MODULES, params)
    spec = Preprocessing.from_json(json.loads(Path(pre["spec"]).read_text()))
    n_rows = spec.n_train + spec.n_val + spec.n_test
    anchors = split_anchors(n_rows, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "anchors.npz"
    from tasks.atomic import atomic_path

    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **anchors)
    counts = {k: int(len(v)) for k, v in anchors.items()}
    get_run_logger().info("%s windows: %s", pre["ticker"], counts)
    return {
        "ticker": pre["ticker"],
        "anchors": str(path),
        "counts": counts,
        "outputs": _outputs(path),
    }


def load_anchors(win: dict) -> dict[str, np.ndarray]:
    with np.load(win["anchors"], allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@task(name="train", cache_key_fn=content_cache_key("train", TRAIN_MODULES))
def train_step(pre: dict, win: dict, cfg: dict, data_dir: str) -> dict:
    """Fit the network on training windows, early-stopped on validation windows."""
    from tasks.preprocess import load_preprocessed
    from tasks.train import train_model

    params = {"pre": pre, "win": win, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "train", TRAIN_MODULES, params)
    spec, arrays = load_preprocessed(pre["arrays"], pre["spec"])
    with training_lock():
        summary = train_model(
            arrays,
            load_anchors(win),
            spec.lookback,
            cfg,
            out,
            get_run_logger(),
            label=pre["ticker"],
        )
    model_path, history_path = out / "model.keras", out / "history.json"
    return {
        "ticker": pre["ticker"],
        "model": str(model_path),
        "history": str(history_path),
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "outputs": _outputs(model_path, history_path),
    }


@task(name="train-global", cache_key_fn=content_cache_key("train_global", TRAIN_MODULES))
def train_global_step(pres: list[dict], wins: list[dict], cfg: dict, data_dir: str) -> dict:
    """One network over every ticker's windows (mode=global); per ticker, the model file
    its evaluation and bundle use, in the same shape `train_step` returns."""
    import json

    from tasks.preprocess import Preprocessing, load_preprocessed
    from tasks.train import train_global

    params = {"pres": pres, "wins": wins, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "train_global", TRAIN_MODULES, params)
    specs = [Preprocessing.from_json(json.loads(Path(p["spec"]).read_text())) for p in pres]
    tickers = [p["ticker"] for p in pres]

    def load(i: int):
        _, arrays = load_preprocessed(pres[i]["arrays"], pres[i]["spec"])
        return arrays["x"], arrays["y"], load_anchors(wins[i])

    summary = train_global(
        tickers,
        [s.n_train + s.n_val + s.n_test for s in specs],
        load,
        specs[0].lookback,
        cfg,
        out,
        get_run_logger(),
    )
    history_path = out / "history.json"
    per_ticker = {
        ticker: {
            "ticker": ticker,
            "model": path,
            "history": str(history_path),
            "best_epoch": summary["best_epoch"],
            "epochs_run": summary["epochs_run"],
            "outputs": _outputs(Path(path), history_path),
        }
        for ticker, path in summary["models"].items()
    }
    files = {Path(t["model"]) for t in per_ticker.values()} | {history_path}
    return {"tickers": per_ticker, "outputs": _outputs(*sorted(files))}


@task(name="evaluate", cache_key_fn=content_cache_key("evaluate", EVALUATE_MODULES))
def evaluate_step(pre: dict, win: dict, trained: dict, data_dir: str) -> dict:
    """Price-unit metrics of the model and every baseline on the test windows, conformal
    intervals from the validation windows, and the plots."""
    import keras

    from tasks.evaluate import evaluate, evaluation_summary, write_evaluation
    from tasks.preprocess import load_preprocessed
    from tasks.train import load_history

    params = {"pre": pre, "win": win, "trained": trained, "data_dir": data_dir}
    out = work_dir(data_dir, "evaluate", EVALUATE_MODULES, params)
    spec, arrays = load_preprocessed(pre["arrays"], pre["spec"])
    model = keras.models.load_model(trained["model"], safe_mode=True, compile=False)
    ev = evaluate(model, spec, arrays, load_anchors(win))
    ticker = pre["ticker"]
    paths = write_evaluation(out, ev, load_history(trained["history"])["history"], ticker)
    summary = evaluation_summary(ev)
    coverage = ", ".join(
        f"{k}% -> {v['coverage_test']:.0%}"
        for k, v in summary["intervals"].items()
        if v.get("coverage_test") is not None
    )
    get_run_logger().info(
        "%s test RMSE model %.4f, naive %.4f; interval coverage %s. %s",
        ticker,
        summary["metrics"]["model"]["rmse"],
        summary["metrics"]["naive"]["rmse"],
        coverage or "n/a",
        summary["verdict"],
    )
    return {
        "ticker": ticker,
        **summary,
        **{name: str(path) for name, path in paths.items()},
        "outputs": _outputs(*paths.values()),
    }


@task(name="backtest", cache_key_fn=content_cache_key("backtest", BACKTEST_MODULES))
def backtest_step(ingested: dict, cfg: dict, data_dir: str) -> dict:
    """Walk-forward: refit preprocessing and the network on K expanding folds."""
    from tasks.backtest import summary_lines, walk_forward, write_backtest
    from tasks.config import PREPROCESS_FIELDS, TRAIN_FIELDS

    params = {"ingested": ingested, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "backtest", BACKTEST_MODULES, params)
    prices = ingested_prices(ingested)
    ticker = ingested["ticker"]
    with training_lock():
        result = walk_forward(
            prices,
            {k: cfg[k] for k in PREPROCESS_FIELDS},
            {k: cfg[k] for k in TRAIN_FIELDS if k in cfg},
            int(cfg["walk_forward_folds"]),
            int(cfg["walk_forward_epochs"]),
            out,
            get_run_logger(),
            who=f"ticker {ticker}",
        )
    paths = write_backtest(out, result, ticker)
    get_run_logger().info("%s\n%s", ticker, "\n".join(summary_lines(result)))
    return {
        "ticker": ticker,
        "n_folds": result["n_folds"],
        "epochs_per_fold": result["epochs_per_fold"],
        "summary": result["summary"],
        "folds": [{k: v for k, v in f.items() if k != "training"} for f in result["folds"]],
        **{name: str(path) for name, path in paths.items()},
        "outputs": _outputs(*paths.values()),
    }


@task(
    name="rolling-backtest",
    cache_key_fn=content_cache_key("rolling_backtest", BACKTEST_MODULES),
)
def rolling_backtest_step(ingested: dict, cfg: dict, data_dir: str) -> dict:
    """`tickercast backtest` for one ticker: every model on the same rolling origins."""
    from tasks.backtest import format_table, rolling_backtest, write_rolling

    params = {"ingested": ingested, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "rolling_backtest", BACKTEST_MODULES, params)
    prices = ingested_prices(ingested)
    ticker = ingested["ticker"]
    with training_lock():
        result = rolling_backtest(prices, cfg, out, get_run_logger(), who=f"ticker {ticker}")
    paths = write_rolling(out, result, ticker)
    get_run_logger().info("%s backtest\n%s", ticker, format_table(result["metrics"]))
    return {
        "ticker": ticker,
        **{k: v for k, v in result.items() if k != "table"},
        **{name: str(path) for name, path in paths.items()},
        "outputs": _outputs(*paths.values()),
    }


@task(name="export")
def export_step(
    ingested: dict,
    pre: dict,
    trained: dict,
    evaluated: dict,
    config: dict,
    data_dir: str,
    backtested: dict | None = None,
) -> dict:
    """Write the next bundle version (Keras model, TF SavedModel, plots, manifest) and
    publish the run's artifacts (never cached)."""
    import json

    from tasks.export import build_bundle
    from tasks.metadata import bundle_metadata
    from tasks.preprocess import Preprocessing

    ticker = ingested["ticker"]
    spec = Preprocessing.from_json(json.loads(Path(pre["spec"]).read_text()))
    files = {
        "model.keras": Path(trained["model"]),
        "preprocessing.json": Path(pre["spec"]),
        "history.json": Path(trained["history"]),
        "predictions.parquet": Path(evaluated["predictions"]),
        "loss.png": Path(evaluated["loss_png"]),
        "forecast.png": Path(evaluated["forecast_png"]),
        "residuals.png": Path(evaluated["residuals_png"]),
    }
    if backtested:
        files["backtest.json"] = Path(backtested["backtest_json"])
        files["backtest_predictions.parquet"] = Path(backtested["predictions"])
        files["folds.png"] = Path(backtested["folds_png"])
    metadata = bundle_metadata(ingested, pre, trained, evaluated, config, backtested)
    bundle = build_bundle(data_dir, ticker, files, metadata, Path(trained["model"]), spec)
    _publish(ticker, bundle, evaluated, metadata, backtested)
    return {
        "ticker": ticker,
        "bundle": str(bundle),
        "version": int(bundle.name),
        "metrics": evaluated["metrics"],
        "verdict": evaluated["verdict"],
    }


@task(name="promote")
def promote_step(exported: dict, cfg: dict, data_dir: str) -> dict:
    """The champion gate: promote the new version only if it beats the champion."""
    from tasks.registry import challenge

    ticker = exported["ticker"]
    event = challenge(
        data_dir,
        ticker,
        exported["version"],
        metric=cfg["promotion_metric"],
        require_beat_naive=cfg["require_beat_naive"],
    )
    verb = "promoted to champion" if event["action"] == "promote" else "not promoted"
    get_run_logger().info("%s v%s %s: %s", ticker, event["version"], verb, event["reason"])
    slug = "".join(c if c.isalnum() else "-" for c in ticker.lower())
    create_markdown_artifact(
        "\n".join(
            [
                f"# Champion gate {ticker}",
                "",
                f"- version v{event['version']}: **{verb}**",
                f"- champion before: {event['champion_before']}, after: "
                f"{event['champion_after']}",
                f"- metric: {event['metric']} (lower wins), require beat naive: "
                f"{event['require_beat_naive']}",
                f"- reason: {event['reason']}",
            ]
        ),
        key=f"promotion-{slug}",
        description=f"{ticker}: registry decision",
    )
    return event


@task(name="forecast")
def forecast_step(ticker: str, data_dir: str) -> list[dict]:
    """The champion's next-horizon forecast from the latest lake rows, with intervals."""
    from tasks import lake
    from tasks.predict import forecast_next
    from tasks.registry import load_champion

    bundle = load_champion(data_dir, ticker)
    rows = forecast_next(bundle, lake.read_partition(data_dir, ticker), ticker)
    for row in rows:
        get_run_logger().info(
            "%s v%s as of %s: %s over %d days = %.4f (80%%: %s..%s)",
            ticker,
            row["version"],
            row["as_of"],
            row["target"],
            row["horizon"],
            row["forecast"],
            row.get("lo_80"),
            row.get("hi_80"),
        )
    return rows


def _publish(
    ticker: str, bundle: Path, evaluated: dict, metadata: dict, backtested: dict | None
) -> None:
    """Metrics table, markdown report and a link to the bundle, keyed per ticker."""
    from prefect.artifacts import create_link_artifact

    from tasks.evaluate import markdown_table, report_rows

    slug = "".join(c if c.isalnum() else "-" for c in ticker.lower())
    create_table_artifact(
        report_rows(evaluated["metrics"]),
        key=f"metrics-{slug}",
        description=f"{ticker}: test-split metrics in price units, model and baselines",
    )
    window = evaluated["evaluation"]["window"]
    intervals = [
        f"| {k}% | {v['coverage_test']:.1%} |"
        if v.get("coverage_test") is not None
        else f"| {k}% | n/a (too few validation windows) |"
        for k, v in evaluated["intervals"].items()
    ]
    lines = [
        f"# Retrain {ticker}",
        "",
        f"- bundle: `{bundle}`",
        f"- data: {metadata['data']['first_day']} .. {metadata['data']['last_day']} "
        f"({metadata['data']['rows']} rows, sha256 `{metadata['data']['sha256'][:12]}`)",
        f"- best epoch {metadata['training'].get('best_epoch')} of "
        f"{metadata['training'].get('epochs_run')}",
        f"- test: {window['windows']} windows, targets {window['first_target']} .. "
        f"{window['last_target']}; actual moved up in "
        f"{evaluated['evaluation']['up_share']:.0f}% of them",
        "",
        f"**{evaluated['verdict']}**",
        "",
        *markdown_table(evaluated["metrics"]),
        "",
        "Split-conformal intervals (calibrated on validation residuals):",
        "",
        "| nominal | test coverage |",
        "|---|---|",
        *intervals,
    ]
    if backtested:
        from tasks.backtest import summary_lines

        lines += ["", *summary_lines(backtested)]
    create_markdown_artifact(
        "\n".join(lines), key=f"report-{slug}", description=f"{ticker}: retrain report"
    )
    create_link_artifact(
        bundle.resolve().as_uri(),
        link_text=f"{ticker} bundle v{bundle.name}",
        key=f"bundle-{slug}",
        description=f"{ticker}: model bundle folder",
    )


TUNE_DATA_MODULES = ("tasks.tune", *PREPROCESS_MODULES)


@task(name="tune-data", cache_key_fn=content_cache_key("tune_data", TUNE_DATA_MODULES))
def tune_data_step(ingested: dict, cfg: dict, data_dir: str) -> dict:
    """A ticker's search data: preprocessed as retrain does, train + validation rows only,
    targets reaching a test day blanked (tasks.tune.search_data). Trials read only this."""
    from tasks.tune import content_hash, save_search_data, search_data

    params = {"ingested": ingested, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "tune_data", TUNE_DATA_MODULES, params)
    prices = ingested_prices(ingested)
    arrays, meta = search_data(prices, cfg, who=f"ticker {ingested['ticker']}")
    path = save_search_data(out, arrays, meta)
    get_run_logger().info(
        "%s search data: %d rows %s..%s (train %d, validation %d); the test split is left out",
        ingested["ticker"],
        meta["rows"],
        meta["first_day"],
        meta["val_end"],
        meta["n_train"],
        meta["n_val"],
    )
    return {
        "ticker": ingested["ticker"],
        "search": str(path),
        "meta": meta,
        "content": content_hash(arrays, meta),
        "outputs": _outputs(path),
    }


@task(name="tune-trial", task_run_name="tune-trial-{trial_id}", persist_result=False)
def tune_trial_step(trial_id: str, spec: dict, data: list[dict], cfg: dict, trial_dir: str) -> dict:
    """Train one trial's configuration on the search data (tasks.tune.run_trial); never
    cached: the search's own folder records what is done."""
    from tasks.tune import run_trial

    with training_lock():
        return run_trial(spec, data, cfg, trial_dir, get_run_logger())
