"""Prefect events a user's automations react to (deployments/automations.yaml): the
ticker, and the model version where there is one, are the events' resources.

Event names (all `tickercast.*`):

- `tickercast.champion.promoted` / `tickercast.challenger.refused` (with the gate's reason)
- `tickercast.ticker.failed` (which stage: ingest, retrain, predict; the one-line cause)
- `tickercast.live.flagged` (a champion's live coverage or skill is significantly wrong)
- `tickercast.run.finished` (a flow's counts: tickers ok / failed / flagged)

Emitting never fails a step: without a Prefect API (a bare `python` call of a task's
function) there is nothing to send to, and an event is a notification, not the record.
"""

from __future__ import annotations

import logging
from typing import Any

PREFIX = "tickercast"


def emit(name: str, ticker: str | None = None, version: int | None = None, **payload: Any):
    """Emit `tickercast.<name>` about `ticker` (and its `version`); returns the event or
    None when it could not be sent."""
    from prefect.events import emit_event

    resource = {"prefect.resource.id": f"{PREFIX}.ticker.{ticker or 'all'}"}
    if ticker:
        resource["prefect.resource.name"] = ticker
    related = []
    if ticker and version is not None:
        related.append(
            {
                "prefect.resource.id": f"{PREFIX}.model.{ticker}.v{int(version)}",
                "prefect.resource.role": "model-version",
            }
        )
    try:
        return emit_event(
            event=f"{PREFIX}.{name}", resource=resource, related=related, payload=payload
        )
    except Exception:  # noqa: BLE001 - a notification must never fail the work
        logging.getLogger(__name__).warning("could not emit event %s.%s", PREFIX, name)
        return None


def announce_run(flow: str, outcomes: Any, flagged: int = 0) -> None:
    """A finished run's events: one `ticker.failed` per failed ticker (with its one-line
    cause), then `run.finished` with the counts (`outcomes`: tickercast.fanout.Outcomes)."""
    errors = outcomes.errors()
    for ticker, cause in errors.items():
        emit("ticker.failed", ticker, stage=flow, cause=cause)
    emit(
        "run.finished",
        flow=flow,
        ok=len(outcomes.values()),
        failed=len(errors),
        failed_tickers=sorted(errors),
        flagged=flagged,
    )
