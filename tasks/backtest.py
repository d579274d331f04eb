"""The backtest steps: retrain's walk-forward folds and `tickercast backtest`'s rolling origins."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tickercast.tasks.caching import content_cache_key
from tickercast.tasks.runners import training_lock
from tickercast.tasks.workfiles import ingested_prices, outputs, work_dir

# The library code each step runs (its imports' closure is hashed: tasks/caching.py); the
# report formatters (tickercast.backtest.tables) are left out: they only write the log.
WALK_FORWARD_MODULES = ("tickercast.backtest.walkforward",)
ROLLING_BACKTEST_MODULES = ("tickercast.backtest.rolling", "tickercast.backtest.files")


@task(name="backtest", cache_key_fn=content_cache_key("backtest", WALK_FORWARD_MODULES))
def backtest_step(ingested: dict, cfg: dict, data_dir: str) -> dict:
    """Walk-forward: refit preprocessing and the network on K expanding folds."""
    from tickercast.backtest.tables import summary_lines
    from tickercast.backtest.walkforward import walk_forward, write_backtest
    from tickercast.config import PREPROCESS_FIELDS, TRAIN_FIELDS

    params = {"ingested": ingested, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "backtest", WALK_FORWARD_MODULES, params)
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
        "outputs": outputs(*paths.values()),
    }


@task(
    name="rolling-backtest",
    cache_key_fn=content_cache_key("rolling_backtest", ROLLING_BACKTEST_MODULES),
)
def rolling_backtest_step(ingested: dict, cfg: dict, data_dir: str) -> dict:
    """`tickercast backtest` for one ticker: every model on the same rolling origins."""
    from tickercast.backtest.files import write_rolling
    from tickercast.backtest.rolling import rolling_backtest
    from tickercast.backtest.tables import format_table

    params = {"ingested": ingested, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "rolling_backtest", ROLLING_BACKTEST_MODULES, params)
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
        "outputs": outputs(*paths.values()),
    }


@task(name="mlflow-backtest", persist_result=False, cache_policy=NO_CACHE)
def track_backtest_step(
    mlflow_uri: str, folder: str, config: dict, metrics: dict[str, list[dict]]
) -> dict:
    """Log a finished `tickercast backtest` run to MLflow (tickercast.tracking.log_backtest).
    A failure is a warning and {"error": ...}: the run's files are already written."""
    from tickercast.tracking import TrackingError, log_backtest

    try:
        logged = log_backtest(mlflow_uri, folder, config, metrics)
    except TrackingError as exc:
        get_run_logger().warning("backtest not logged to MLflow: %s", exc)
        return {"uri": mlflow_uri, "error": str(exc)}
    get_run_logger().info("backtest logged to MLflow: run %s", logged["run_id"])
    return logged
