"""The ledger's watch: after new days arrived (the ingest flow, and the retrain flow's
promote step), score what the champions published (tickercast.delivery.ledger), raise a
flag as an event, and put the champion's live figures on its MLflow run."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from tickercast.tasks.events import emit


def watch(ticker: str, data_dir: str, mlflow_uri: str | None = None) -> dict:
    """`judge`, except that a ledger or lake that cannot be read is a warning and a record
    saying why (`error`), never the failure of the ingest or promote step it runs in."""
    from tickercast.errors import CorruptPartitionError

    try:
        return judge(ticker, data_dir, mlflow_uri)
    except (OSError, ValueError, KeyError, CorruptPartitionError) as exc:
        message = f"live record not computed: {type(exc).__name__}: {exc}"
        get_run_logger().warning("%s: %s", ticker, message)
        return {"version": None, "n": 0, "flag": None, "error": message}


def judge(ticker: str, data_dir: str, mlflow_uri: str | None = None) -> dict:
    """The champion's live record (`ledger.version_record`: its own published forecasts,
    beside what its test split promised), scored against the lake now; writes every
    scored row beside the ledger (for readers such as DuckDB), emits
    `tickercast.live.flagged` when the record is significantly wrong, and logs it to
    MLflow when a URI is given (a failure there is a warning, never the step's)."""
    from tickercast.atomic import atomic_path
    from tickercast.delivery import ledger
    from tickercast.delivery.registry import RegistryError, read_registry

    scored = ledger.score(data_dir, ticker)
    if not scored.empty:
        with atomic_path(ledger.scored_path(data_dir, ticker)) as tmp:
            scored.to_parquet(tmp, index=False)
    try:
        champion = read_registry(data_dir, ticker)["champion"]
    except RegistryError:
        champion = None
    if champion is None:  # no champion (any more): the record of every version published
        record = {"version": None, **ledger.live_record(scored), "promised": {}}
    else:
        record = ledger.version_record(data_dir, ticker, champion, scored)
    logger = get_run_logger()
    if record["flag"]:
        logger.warning("%s v%s: %s", ticker, record["version"], record["flag"])
        emit("live.flagged", ticker, record["version"], **_payload(record))
    if mlflow_uri and champion is not None and record.get("n"):
        from tickercast.tracking import TrackingError, log_live

        try:
            log_live(mlflow_uri, data_dir, ticker, record)
        except TrackingError as exc:
            logger.warning("%s: live record not mirrored: %s", ticker, exc)
    return record


def _payload(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "version"}


@task(name="watch-ledger")
def watch_ledger(ticker: str, data_dir: str, mlflow_uri: str | None = None) -> dict:
    """`watch` as the ingest flow's task."""
    return watch(ticker, data_dir, mlflow_uri)
