"""The export step: the next bundle version, and the run's report artifacts."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger


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
    publish the run's artifacts; when nothing upstream changed since the latest version
    (same lake contents, config and code), write nothing and say so."""

    from tickercast.delivery.bundle import latest_with_inputs

    ticker = ingested["ticker"]
    key = inputs_key(ingested, pre, trained, evaluated, config, backtested)
    same = latest_with_inputs(data_dir, ticker, key)
    if same is not None:
        version = int(same["version"])
        get_run_logger().info("%s: unchanged since v%d: no new version exported", ticker, version)
        return {
            "ticker": ticker,
            "bundle": same["path"],
            "version": version,
            "metrics": evaluated["metrics"],
            "verdict": evaluated["verdict"],
            "unchanged": True,
        }
    # imported only now: an unchanged rerun never needs pandas or TensorFlow
    from tickercast.delivery.metadata import bundle_metadata
    from tickercast.delivery.servable import build_bundle
    from tickercast.modeling.preprocess import Preprocessing

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
    metadata["inputs_key"] = key
    bundle = build_bundle(data_dir, ticker, files, metadata, Path(trained["model"]), spec)
    _publish(ticker, bundle, evaluated, metadata)
    return {
        "ticker": ticker,
        "bundle": str(bundle),
        "version": int(bundle.name),
        "metrics": evaluated["metrics"],
        "verdict": evaluated["verdict"],
    }


# What a version depends on: the lake file's content, every upstream step's output files
# (content-addressed), the fields of the config those steps read, and the export code.
EXPORT_MODULES = ("tickercast.delivery.servable", "tickercast.delivery.metadata")


def inputs_key(
    ingested: dict,
    pre: dict,
    trained: dict,
    evaluated: dict,
    config: dict,
    backtested: dict | None,
) -> str:
    """The identity of a version's inputs: equal keys mean an identical bundle."""
    from tickercast.config import BACKTEST_FIELDS, PREPROCESS_FIELDS, TRAIN_FIELDS
    from tickercast.hashing import json_sha256
    from tickercast.tasks.caching import code_version

    fields = ("preset", *PREPROCESS_FIELDS, *TRAIN_FIELDS, *BACKTEST_FIELDS)
    return json_sha256(
        {
            "lake": [ingested["ticker"], ingested["sha256"]],
            "steps": [step["outputs"] for step in (pre, trained, evaluated, backtested) if step],
            "config": {k: config.get(k) for k in fields},
            "code": code_version(EXPORT_MODULES),
        }
    )


def _publish(ticker: str, bundle: Path, evaluated: dict, metadata: dict) -> None:
    """Metrics table, markdown report and a link to the bundle, keyed per ticker."""
    from prefect.artifacts import create_link_artifact

    from tickercast.delivery.report import retrain_report
    from tickercast.evaluation.report import report_rows

    slug = "".join(c if c.isalnum() else "-" for c in ticker.lower())
    create_table_artifact(
        report_rows(evaluated["metrics"]),
        key=f"metrics-{slug}",
        description=f"{ticker}: test-split metrics in price units, model and baselines",
    )
    # the same report MLflow's run of this version gets (tickercast.tracking)
    create_markdown_artifact(
        retrain_report(ticker, bundle, metadata),
        key=f"report-{slug}",
        description=f"{ticker}: retrain report",
    )
    create_link_artifact(
        bundle.resolve().as_uri(),
        link_text=f"{ticker} bundle v{bundle.name}",
        key=f"bundle-{slug}",
        description=f"{ticker}: model bundle folder",
    )
