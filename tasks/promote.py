"""The promote step: the champion gate."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger


@task(name="promote")
def promote_step(exported: dict, cfg: dict, data_dir: str) -> dict:
    """The champion gate: promote the new version only if it is significantly better."""
    from tickercast.delivery.gate import challenge

    ticker = exported["ticker"]
    if exported.get("unchanged"):  # nothing new to judge: the registry is left alone
        reason = f"unchanged since v{exported['version']}: no new version, registry untouched"
        get_run_logger().info("%s: %s", ticker, reason)
        return {"action": "unchanged", "version": exported["version"], "reason": reason}
    event = challenge(
        data_dir,
        ticker,
        exported["version"],
        metric=cfg["promotion_metric"],
        require_beat_naive=cfg["require_beat_naive"],
        level=cfg["promotion_level"],
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
                f"- champion before: {event['champion_before']}, after: {event['champion_after']}",
                f"- metric: {event['metric']} (lower wins), DM level {event.get('level')}, "
                f"require beat naive: "
                f"{event['require_beat_naive']}",
                f"- reason: {event['reason']}",
            ]
        ),
        key=f"promotion-{slug}",
        description=f"{ticker}: registry decision",
    )
    return event
