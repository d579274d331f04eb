"""The promote step: the champion gate."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from tickercast.delivery.ledger import describe
from tickercast.fanout import batch_result, each_ticker
from tickercast.records import Exported, Kept, Trained
from tickercast.sections import Gate
from tickercast.tasks.events import emit
from tickercast.tasks.ledger import watch
from tickercast.tickers import slug as ticker_slug


@task(name="promote")
def promote_step(
    exported: list[Exported], gate: Gate, data_dir: str, mlflow_uri: str | None = None
) -> dict:
    """The champion gate for several tickers' new bundles in one task (`promote` each,
    one ticker's failure its own; why batched and how many: flows/retrain.PROMOTE_BATCH).
    Returns `fanout.batch_result` (`fanout.Share` hands each ticker its event)."""
    by_ticker = {e.ticker: e for e in exported}
    outcomes = each_ticker(
        list(by_ticker), lambda t: promote(by_ticker[t], gate, data_dir, mlflow_uri)
    )
    for failed in outcomes.failed():
        get_run_logger().error("%s: champion gate failed: %s", failed.ticker, failed.error)
    return batch_result(outcomes)


def promote(exported: Exported, gate: Gate, data_dir: str, mlflow_uri: str | None = None) -> dict:
    """The champion gate: promote the new version only if it is significantly better;
    returns the registry's event. With an MLflow URI, the registry is then mirrored
    there (`mirror_to_mlflow`)."""
    ticker = exported.ticker
    if exported.unchanged:  # nothing new to judge: the registry is left alone
        reason = f"unchanged since v{exported.version}: no new version, registry untouched"
        get_run_logger().info("%s: %s", ticker, reason)
        event = {"action": "unchanged", "version": exported.version, "reason": reason}
        return _mirrored(event, mlflow_uri, data_dir, ticker)
    from tickercast.delivery.gate import challenge  # here: an unchanged rerun needs no gate

    event = challenge(
        data_dir,
        ticker,
        exported.version,
        metric=gate.promotion_metric,
        require_beat_naive=gate.require_beat_naive,
        level=gate.promotion_level,
    )
    verb = "promoted to champion" if event["action"] == "promote" else "not promoted"
    emit(
        "champion.promoted" if event["action"] == "promote" else "challenger.refused",
        ticker,
        event["version"],
        reason=event["reason"],
        champion_before=event["champion_before"],
        champion_after=event["champion_after"],
    )
    get_run_logger().info("%s v%s %s: %s", ticker, event["version"], verb, event["reason"])
    live = watch(ticker, data_dir, mlflow_uri)  # the champion's published record, scored
    slug = ticker_slug(ticker)
    create_markdown_artifact(
        "\n".join(
            [
                f"# Champion gate {ticker}",
                "",
                f"- version v{event['version']}: **{verb}**",
                f"- champion before: {event['champion_before']}, after: {event['champion_after']}",
                f"- metric: {event['metric']} (lower wins), DM level {event.get('level')}, "
                f"require beat naive: "
                f"{event['require_beat_naive']}",
                f"- reason: {event['reason']}",
                f"- live record of the champion: {describe(live)}",
            ]
        ),
        key=f"promotion-{slug}",
        description=f"{ticker}: registry decision",
    )
    return _mirrored({**event, "live": live}, mlflow_uri, data_dir, ticker)


@task(name="keep")
def keep_step(trained: list[Trained], data_dir: str, mlflow_uri: str | None = None) -> dict:
    """Tonight's fits that kept their champion (no epoch beat its weights, or they still
    fit), several tickers in one task: nothing to evaluate, bundle or judge. Each ticker's
    outcome is the champion's bundle and recorded metrics with why, as the export and gate
    would report an unchanged night; the registry is untouched and the champion's live
    record still takes the new day. Returns `fanout.batch_result` (one ticker's failure is
    its own; `fanout.Share` hands each its part): a Prefect task run costs a worker
    ~0.15 s beside the work, as much as keeping a champion itself, so one run keeps many."""
    by_ticker = {t.ticker: t for t in trained}
    outcomes = each_ticker(list(by_ticker), lambda t: _keep(by_ticker[t], data_dir, mlflow_uri))
    for failed in outcomes.failed():
        get_run_logger().error("%s: champion not kept: %s", failed.ticker, failed.error)
    return batch_result(outcomes)


def _keep(trained: Trained, data_dir: str, mlflow_uri: str | None) -> dict:
    """One ticker of `keep_step`: the champion's bundle and the unchanged event."""
    kept = trained.kept()
    if kept is None:
        raise ValueError(f"{trained.ticker}: tonight's fit made a new network: nothing kept")
    get_run_logger().info("%s: %s", kept.ticker, kept.reason)
    exported = _kept_bundle(data_dir, kept)
    event = {"action": "unchanged", "version": kept.version, "kept": True, "reason": kept.reason}
    event["live"] = watch(kept.ticker, data_dir, mlflow_uri)
    promotion = _mirrored(event, mlflow_uri, data_dir, kept.ticker)
    return {**exported.model_dump(mode="json"), "promotion": promotion}


def _kept_bundle(data_dir: str, kept: Kept) -> Exported:
    """The champion tonight's fit kept, as the night's outcome: its bundle, version and
    recorded test metrics (from when it was made)."""
    from tickercast.delivery.bundle import bundle_path, read_metadata

    bundle = bundle_path(data_dir, kept.ticker, kept.version)
    metadata = read_metadata(bundle)
    return Exported(
        ticker=kept.ticker,
        bundle=str(bundle),
        version=kept.version,
        metrics=metadata["metrics"],
        verdict=metadata["verdict"],
        unchanged=True,
        kept_reason=kept.reason,
    )


def _mirrored(event: dict, mlflow_uri: str | None, data_dir: str, ticker: str) -> dict:
    """The gate's event, with what the MLflow mirror did under "mlflow" when there is one."""
    if mlflow_uri is None:
        return event
    return {**event, "mlflow": mirror_to_mlflow(mlflow_uri, data_dir, ticker)}


def mirror_to_mlflow(uri: str, data_dir: str, ticker: str) -> dict:
    """After the registry was written: mirror it to MLflow (tickercast.tracking.sync_model).
    A failure is logged as a warning naming the repair command, and returned as
    {"error": ...}; it never fails the step, since the bundle and registry are already
    safely written and the next sync repairs MLflow."""
    from tickercast.tracking import TrackingError, describe_sync, retry_hint, sync_model

    logger = get_run_logger()
    try:
        synced = sync_model(uri, data_dir, ticker)
    except TrackingError as exc:
        message = f"{exc}; the file registry is up to date; retry: {retry_hint(ticker, data_dir)}"
        logger.warning("%s: %s", ticker, message)
        return {"uri": uri, "error": message}
    logger.info("%s", describe_sync(ticker, synced))
    return synced
