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
from prefect.tasks import exponential_backoff

from tasks.caching import content_cache_key, step_key
from tasks.errors import TransientSourceError
from tasks.hashing import file_sha256

INGEST_MODULES = (
    "tasks.ingest",
    "tasks.sources",
    "tasks.yahoo",
    "tasks.lake",
    "tasks.schema",
    "tasks.validate",
)
PREPROCESS_MODULES = ("tasks.preprocess", "tasks.features")
WINDOWS_MODULES = ("tasks.windows",)
TRAIN_MODULES = ("tasks.train", "tasks.models", "tasks.windows")
EVALUATE_MODULES = ("tasks.evaluate", "tasks.windows")


def work_dir(data_dir: str, step: str, modules: tuple[str, ...], params: dict) -> Path:
    """The content-addressed folder a step writes into (same key as its cache entry)."""
    return Path(data_dir) / "work" / step / step_key(step, modules, params)


def _outputs(*paths: Path) -> dict[str, str]:
    return {str(p): file_sha256(p) for p in paths}


def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network hiccups only; an unknown ticker will not appear by asking again."""
    try:
        state.result()
    except TransientSourceError:
        return True
    except Exception:
        return False
    return False


@task(
    name="ingest",
    cache_key_fn=content_cache_key(
        "ingest", INGEST_MODULES, cacheable=lambda p: p.get("fingerprint") is not None
    ),
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_is_transient,
)
def ingest_step(
    ticker: str,
    source: str,
    data_dir: str,
    csv_dir: str | None,
    start: str | None,
    end: str | None,
    fingerprint: str | None,
) -> dict:
    """Load the ticker from its source into the lake; `fingerprint` keys the cache."""
    from tasks.ingest import ingest_ticker

    result = ingest_ticker(ticker, source, data_dir, csv_dir=csv_dir, start=start, end=end)
    logger = get_run_logger()
    logger.info(
        "ingested %s from %s: %d rows %s..%s, %d null rows dropped",
        ticker,
        source,
        result["rows"],
        result["first_day"],
        result["last_day"],
        result["dropped_null_rows"],
    )
    for warning in result["warnings"]:
        logger.warning(warning)
    return result


@task(name="preprocess", cache_key_fn=content_cache_key("preprocess", PREPROCESS_MODULES))
def preprocess_step(ingested: dict, cfg: dict, data_dir: str) -> dict:
    """Features, chronological split and train-only scalers, saved as arrays + JSON."""
    from tasks import lake
    from tasks.preprocess import preprocess, save_preprocessed

    params = {"ingested": ingested, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "preprocess", PREPROCESS_MODULES, params)
    prices = lake.read_price_file(Path(ingested["path"])).to_pandas()
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
    summary = train_model(arrays, load_anchors(win), spec.lookback, cfg, out, get_run_logger())
    model_path, history_path = out / "model.keras", out / "history.json"
    return {
        "ticker": pre["ticker"],
        "model": str(model_path),
        "history": str(history_path),
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "outputs": _outputs(model_path, history_path),
    }


@task(name="evaluate", cache_key_fn=content_cache_key("evaluate", EVALUATE_MODULES))
def evaluate_step(pre: dict, win: dict, trained: dict, data_dir: str) -> dict:
    """Price-unit metrics of model and baselines on the test windows, plus the plots."""
    import keras

    from tasks.atomic import atomic_path, write_json
    from tasks.evaluate import evaluate, plot_forecast, plot_loss, verdict
    from tasks.preprocess import load_preprocessed
    from tasks.train import load_history

    params = {"pre": pre, "win": win, "trained": trained, "data_dir": data_dir}
    out = work_dir(data_dir, "evaluate", EVALUATE_MODULES, params)
    out.mkdir(parents=True, exist_ok=True)
    spec, arrays = load_preprocessed(pre["arrays"], pre["spec"])
    model = keras.models.load_model(trained["model"], safe_mode=True, compile=False)
    results, table = evaluate(model, spec, arrays, load_anchors(win)["test"])
    ticker = pre["ticker"]
    predictions = out / "predictions.parquet"
    with atomic_path(predictions) as tmp:
        table.to_parquet(tmp, index=False)
    metrics_path = out / "metrics.json"
    write_json(metrics_path, {"metrics": results, "verdict": verdict(results)})
    loss_png, forecast_png = out / "loss.png", out / "forecast.png"
    plot_loss(load_history(trained["history"])["history"], loss_png, f"{ticker}: training loss")
    plot_forecast(table, forecast_png, f"{ticker}: test-split forecast vs actual")
    get_run_logger().info(
        "%s test RMSE model %.4f, naive %.4f. %s",
        ticker,
        results["model"]["rmse"],
        results["naive"]["rmse"],
        verdict(results),
    )
    return {
        "ticker": ticker,
        "metrics": results,
        "verdict": verdict(results),
        "predictions": str(predictions),
        "loss_png": str(loss_png),
        "forecast_png": str(forecast_png),
        "outputs": _outputs(predictions, metrics_path, loss_png, forecast_png),
    }


@task(name="export")
def export_step(
    ingested: dict, pre: dict, trained: dict, evaluated: dict, config: dict, data_dir: str
) -> dict:
    """Write the next bundle version and publish the run's artifacts (never cached)."""
    from tasks.export import write_bundle
    from tasks.metadata import bundle_metadata

    ticker = ingested["ticker"]
    metadata = bundle_metadata(ingested, pre, trained, evaluated, config)
    bundle = write_bundle(
        data_dir,
        ticker,
        {
            "model.keras": Path(trained["model"]),
            "preprocessing.json": Path(pre["spec"]),
            "history.json": Path(trained["history"]),
            "predictions.parquet": Path(evaluated["predictions"]),
            "loss.png": Path(evaluated["loss_png"]),
            "forecast.png": Path(evaluated["forecast_png"]),
        },
        metadata,
    )
    _publish(ticker, bundle, evaluated, metadata)
    return {"ticker": ticker, "bundle": str(bundle), "metrics": evaluated["metrics"]}


def _publish(ticker: str, bundle: Path, evaluated: dict, metadata: dict) -> None:
    slug = "".join(c if c.isalnum() else "-" for c in ticker.lower())
    rows = [
        {"forecaster": name, **{k: round(v, 6) for k, v in values.items()}}
        for name, values in evaluated["metrics"].items()
    ]
    create_table_artifact(
        rows, key=f"metrics-{slug}", description=f"{ticker}: test-split metrics in price units"
    )
    m = evaluated["metrics"]
    create_markdown_artifact(
        "\n".join(
            [
                f"# Retrain {ticker}",
                "",
                f"- bundle: `{bundle}`",
                f"- data: {metadata['data']['first_day']} .. {metadata['data']['last_day']} "
                f"({metadata['data']['rows']} rows, sha256 `{metadata['data']['sha256'][:12]}`)",
                f"- best epoch {metadata['training']['best_epoch']} of "
                f"{metadata['training']['epochs_run']}",
                "",
                "| forecaster | RMSE | MAE | MAPE % |",
                "|---|---|---|---|",
                *(
                    f"| {name} | {v['rmse']:.4f} | {v['mae']:.4f} | {v['mape']:.2f} |"
                    for name, v in m.items()
                ),
                "",
                f"**{evaluated['verdict']}**",
            ]
        ),
        key=f"report-{slug}",
        description=f"{ticker}: retrain report",
    )
