"""The tuning steps: a ticker's search data, and one trial."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tickercast.tasks.caching import content_cache_key
from tickercast.tasks.runners import training_lock
from tickercast.tasks.workfiles import ingested_prices, outputs, work_dir

# The library code this step runs (its imports' closure is hashed: tasks/caching.py).
TUNE_DATA_MODULES = ("tickercast.tuning.data",)


@task(name="tune-data", cache_key_fn=content_cache_key("tune_data", TUNE_DATA_MODULES))
def tune_data_step(ingested: dict, cfg: dict, data_dir: str) -> dict:
    """A ticker's search data: preprocessed as retrain does, train + validation rows only,
    targets reaching a test day blanked (tickercast.tuning.data.search_data). Trials read
    only this."""
    from tickercast.tuning.data import content_hash, save_search_data, search_data

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
        "outputs": outputs(path),
    }


@task(name="tune-trial", task_run_name="tune-trial-{trial_id}", persist_result=False)
def tune_trial_step(trial_id: str, spec: dict, data: list[dict], cfg: dict, trial_dir: str) -> dict:
    """Train one trial's configuration on the search data (tickercast.tuning.trial.run_trial);
    never cached: the search's own folder records what is done."""
    from tickercast.tuning.trial import run_trial

    with training_lock():
        return run_trial(spec, data, cfg, trial_dir, get_run_logger())


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
