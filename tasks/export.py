"""The export step: the next bundle version, and the run's report artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from tickercast.config import RetrainConfig
from tickercast.records import (
    Evaluated,
    Exported,
    GlobalTrained,
    Ingested,
    Preprocessed,
    Record,
    Trained,
    WalkedForward,
)
from tickercast.tickers import slug as ticker_slug
from tickercast.tracking import TrackingError, close_opened_run, open_version_run, resolve_uri


@task(name="export")
def export_step(
    ingested: Ingested,
    pre: Preprocessed,
    trained: Trained | GlobalTrained,
    evaluated: Evaluated,
    backtested: WalkedForward | None,
    config: RetrainConfig,
    data_dir: str,
) -> Exported:
    """Write the next bundle version (Keras model, TF SavedModel, plots, manifest) and
    publish the run's artifacts; when nothing upstream changed since the latest version
    (same lake contents, upstream files and export code), write nothing and say so (a
    fit that kept the champion never comes here: tasks/promote.keep_step). `config` is
    recorded in the bundle's metadata (but where runs are mirrored)."""

    from tickercast.delivery.bundle import latest_with_inputs

    ticker = ingested.ticker
    model = trained.for_ticker(ticker)
    upstream = [pre, model, evaluated, *([backtested] if backtested else [])]
    key = inputs_key(ingested, upstream)
    same = latest_with_inputs(data_dir, ticker, key)
    if same is not None:
        version = int(same["version"])
        get_run_logger().info("%s: unchanged since v%d: no new version exported", ticker, version)
        return _exported(evaluated, same["path"], version, unchanged=True)
    # imported only now: an unchanged rerun never needs pandas or TensorFlow
    from tickercast.delivery.metadata import bundle_metadata
    from tickercast.delivery.servable import build_bundle

    evaluated.predictions.check()  # the bundle carries the forecasts evaluation recorded
    files = {name: path for record in upstream for name, path in record.bundle_files().items()}
    metadata = bundle_metadata(
        ingested.report,
        pre.model_dump(),
        model.model_dump(),
        evaluated.model_dump(),
        config.recorded(),
        backtested.model_dump() if backtested else None,
    )
    metadata["inputs_key"] = key
    mlflow_uri = resolve_uri(config.mirror.mlflow_uri)
    metadata["runs"] = {**_runs(), **_mlflow_run(mlflow_uri, ticker, metadata)}
    try:
        bundle = build_bundle(
            data_dir, ticker, files, metadata, Path(model.model), pre.preprocessing
        )
    except BaseException:
        if mlflow_uri:
            close_opened_run(mlflow_uri, metadata["runs"])
        raise
    _publish(ticker, bundle, evaluated, metadata)
    return _exported(evaluated, str(bundle), int(bundle.name))


def _runs() -> dict:
    """Where this version was made: the Prefect flow run's page (the ticker page links it;
    None outside a run or without a UI URL)."""
    from prefect.runtime import flow_run

    try:
        return {"prefect": flow_run.ui_url, "prefect_flow_run": flow_run.id}
    except Exception:  # noqa: BLE001 - a missing link never fails an export
        return {}


def _mlflow_run(uri: str | None, ticker: str, metadata: dict) -> dict:
    """With MLflow tracking: the version's retrain run, opened now so metadata.json names
    it (the promote step's mirror fills it). A server that is down costs only the link:
    warned, and the mirror logs a run later."""
    if not uri:
        return {}
    try:
        return open_version_run(uri, ticker, metadata)
    except TrackingError as exc:
        get_run_logger().warning("%s: no MLflow run linked to this version: %s", ticker, exc)
        return {}


def _exported(evaluated: Evaluated, bundle: str, version: int, unchanged: bool = False):
    return Exported(
        ticker=evaluated.ticker,
        bundle=bundle,
        version=version,
        metrics=evaluated.metrics,
        verdict=evaluated.verdict,
        unchanged=unchanged,
    )


# What a version depends on besides its inputs: the export code.
EXPORT_MODULES = ("tickercast.delivery.servable", "tickercast.delivery.metadata")


def inputs_key(ingested: Ingested, upstream: list[Record]) -> str:
    """The identity of a version's inputs: the lake file's content and every upstream
    step's output files (content-addressed: their folders are named by the steps' keys,
    which hold every setting the steps read), and the export code. Equal keys mean an
    identical bundle."""
    from tickercast.hashing import json_sha256
    from tickercast.tasks.caching import code_version

    return json_sha256(
        {
            "lake": [ingested.ticker, ingested.sha256],
            "steps": [record.outputs for record in upstream],
            "code": code_version(EXPORT_MODULES),
        }
    )


def _publish(ticker: str, bundle: Path, evaluated: Evaluated, metadata: dict) -> None:
    """Metrics table, markdown report and a link to the bundle, keyed per ticker."""
    from prefect.artifacts import create_link_artifact

    from tickercast.delivery.report import retrain_report
    from tickercast.evaluation.report import report_rows

    slug = ticker_slug(ticker)
    create_table_artifact(
        report_rows(evaluated.metrics),
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
