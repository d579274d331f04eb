"""The tuning steps: a ticker's search data, and one trial."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tickercast.records import Ingested
from tickercast.sections import PreprocessSettings
from tickercast.tasks.runners import training_lock
from tickercast.tasks.steps import step
from tickercast.tasks.workfiles import outputs
from tickercast.tuning.config import TrialSettings
from tickercast.tuning.data import SearchData


@step("tune-data", ("tickercast.tuning.data",))
def tune_data_step(
    ingested: Ingested, section: PreprocessSettings, data_dir: str, *, work: Path
) -> SearchData:
    """A ticker's search data: preprocessed as retrain does, train + validation rows only,
    targets reaching a test day blanked (tickercast.tuning.data.search_data). Trials read
    only this."""
    from tickercast.tuning.data import content_hash, save_search_data, search_data

    arrays, meta = search_data(ingested.prices(), section, who=f"ticker {ingested.ticker}")
    path = save_search_data(work, arrays, meta)
    get_run_logger().info(
        "%s search data: %d rows %s..%s (train %d, validation %d); the test split is left out",
        ingested.ticker,
        meta["rows"],
        meta["first_day"],
        meta["val_end"],
        meta["n_train"],
        meta["n_val"],
    )
    return SearchData(
        ticker=ingested.ticker,
        search=str(path),
        meta=meta,
        content=content_hash(arrays, meta),
        outputs=outputs(path),
    )


@task(name="tune-trial", task_run_name="tune-trial-{trial_id}", persist_result=False)
def tune_trial_step(
    trial_id: str,
    spec: dict,
    data: list[SearchData],
    settings: TrialSettings,
    keep_checkpoints: bool,
    trial_dir: str,
) -> dict:
    """Train one trial's configuration on the search data (tickercast.tuning.trial.run_trial);
    never cached: the search's own folder records what is done."""
    from tickercast.tuning.trial import run_trial

    with training_lock():
        return run_trial(
            spec,
            data,
            settings,
            trial_dir,
            get_run_logger(),
            keep_checkpoints=keep_checkpoints,
        )


@task(name="mlflow-tune", persist_result=False, cache_policy=NO_CACHE)
def track_tune_step(
    mlflow_uri: str, run_dir: str, config: dict, rows: list[dict], report: str
) -> dict:
    """Log a search's trial table and best configuration to MLflow
    (tickercast.tracking.log_tune). A failure is a warning and {"error": ...}: the
    search's own files are already written."""
    from tickercast.tracking import TrackingError, log_tune

    try:
        logged = log_tune(mlflow_uri, run_dir, config, rows, report)
    except TrackingError as exc:
        get_run_logger().warning("search not logged to MLflow: %s", exc)
        return {"uri": mlflow_uri, "error": str(exc)}
    get_run_logger().info("search logged to MLflow: run %s", logged["run_id"])
    return logged
