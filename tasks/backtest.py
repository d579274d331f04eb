"""The backtest steps: retrain's walk-forward folds and `tickercast backtest`'s rolling origins."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tickercast.records import Backtested, Ingested, WalkedForward
from tickercast.sections import Evaluation, FitSpec, PreprocessSettings, RollingSpec, WalkForward
from tickercast.tasks.runners import training_lock
from tickercast.tasks.steps import step
from tickercast.tasks.workfiles import outputs


# The report formatters (tickercast.backtest.tables) are no part of the key: they only
# write the log.
@step("backtest", ("tickercast.backtest.walkforward",))
def backtest_step(
    ingested: Ingested,
    section: PreprocessSettings,
    spec: FitSpec,
    walk: WalkForward,
    evaluation: Evaluation,
    data_dir: str,
    *,
    work: Path,
) -> WalkedForward:
    """Walk-forward: refit preprocessing and the network on K expanding folds, each fold's
    model judged with the band it would ship (`evaluation.band`)."""
    from tickercast.backtest.tables import summary_lines
    from tickercast.backtest.walkforward import walk_forward, write_backtest

    ticker = ingested.ticker
    with training_lock():
        result = walk_forward(
            ingested.prices(),
            section,
            spec,
            walk,
            work,
            get_run_logger(),
            who=f"ticker {ticker}",
            band=evaluation.band,
        )
    paths = write_backtest(work, result, ticker)
    get_run_logger().info("%s\n%s", ticker, "\n".join(summary_lines(result)))
    return WalkedForward(
        ticker=ticker,
        n_folds=result["n_folds"],
        epochs_per_fold=result["epochs_per_fold"],
        summary=result["summary"],
        folds=[{k: v for k, v in f.items() if k != "training"} for f in result["folds"]],
        **{name: str(path) for name, path in paths.items()},
        outputs=outputs(*paths.values()),
    )


@step("rolling-backtest", ("tickercast.backtest.rolling", "tickercast.backtest.files"))
def rolling_backtest_step(
    ingested: Ingested, spec: RollingSpec, data_dir: str, *, work
) -> Backtested:
    """`tickercast backtest` for one ticker: every model on the same rolling origins."""
    from tickercast.backtest.files import without_table, write_rolling
    from tickercast.backtest.rolling import rolling_backtest
    from tickercast.backtest.tables import format_table

    ticker = ingested.ticker
    with training_lock():
        result = rolling_backtest(
            ingested.prices(), spec, work, get_run_logger(), who=f"ticker {ticker}"
        )
    paths = write_rolling(work, result, ticker)
    get_run_logger().info("%s backtest\n%s", ticker, format_table(result["metrics"]))
    return Backtested(
        ticker=ticker,
        **without_table(result),
        **{name: str(path) for name, path in paths.items()},
        outputs=outputs(*paths.values()),
    )


@task(name="mlflow-backtest", persist_result=False, cache_policy=NO_CACHE)
def track_backtest_step(
    mlflow_uri: str,
    folder: str,
    config: dict,
    metrics: dict[str, list[dict]],
    distribution: dict[str, list[dict]] | None = None,
) -> dict:
    """Log a finished `tickercast backtest` run to MLflow (tickercast.tracking.log_backtest).
    A failure is a warning and {"error": ...}: the run's files are already written."""
    from tickercast.tracking import TrackingError, log_backtest

    try:
        logged = log_backtest(mlflow_uri, folder, config, metrics, distribution)
    except TrackingError as exc:
        get_run_logger().warning("backtest not logged to MLflow: %s", exc)
        return {"uri": mlflow_uri, "error": str(exc)}
    get_run_logger().info("backtest logged to MLflow: run %s", logged["run_id"])
    return logged
