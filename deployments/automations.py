"""Ready automations for the nightly runs: Prefect notifies a webhook when a night has
failed tickers, a champion's live record is flagged, or a challenger is refused.

Apply them with Prefect's own machinery, against the server your deployments use:

    python -m tickercast.deployments.automations --webhook-url https://hooks.example/x

creates (or updates) a `Webhook` block named `tickercast-alerts` holding the URL, then one
automation per rule below (replacing automations of the same name). `--write-yaml FILE`
writes the same definitions, with the block's id filled in, for
`prefect automation create --from-file FILE`. The events are emitted by the flows
(`tickercast.tasks.events`); each automation posts a JSON body naming the event, the
ticker and the event's payload.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

BLOCK = "tickercast-alerts"
# The webhook's JSON body, rendered by Prefect (Jinja) per event: every value through
# `tojson`, so a quote or newline in a cause or reason never breaks the JSON.
BODY = (
    '{"event": {{ event.event | tojson }}, '
    '"ticker": {{ event.resource.get("prefect.resource.name", "") | tojson }}, '
    '"occurred": {{ event.occurred | string | tojson }}, '
    '"payload": {{ event.payload | tojson }}}'
)
# name -> (the event that fires it, what it means)
RULES: dict[str, tuple[str, str]] = {
    "tickercast: a ticker failed": (
        "tickercast.ticker.failed",
        "A ticker failed in a nightly ingest, retrain or predict run.",
    ),
    "tickercast: live record flagged": (
        "tickercast.live.flagged",
        "A champion's published forecasts cover significantly less than promised, or "
        "do significantly worse than naive.",
    ),
    "tickercast: challenger refused": (
        "tickercast.challenger.refused",
        "A retrained version was not promoted (the gate's reason is in the payload).",
    ),
}


def definitions(block_id: str) -> list[dict[str, Any]]:
    """The automations as Prefect's automation files spell them (one dict each)."""
    return [
        {
            "name": name,
            "description": description,
            "enabled": True,
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": [event],
                "match": {"prefect.resource.id": "tickercast.ticker.*"},
                "threshold": 1,
                "within": 0,
            },
            "actions": [{"type": "call-webhook", "block_document_id": block_id, "payload": BODY}],
        }
        for name, (event, description) in RULES.items()
    ]


def apply(webhook_url: str) -> tuple[str, list[str]]:
    """Save the webhook block and create every automation on the current Prefect API
    (an automation of the same name is replaced); returns the block's and automations' ids."""
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook

    block = Webhook(method="POST", url=webhook_url, allow_private_urls=True)
    block_id = str(block.save(BLOCK, overwrite=True))
    ids = []
    for spec in definitions(block_id):
        try:
            Automation.read(name=spec["name"]).delete()
        except ValueError:  # none of that name yet
            pass
        ids.append(str(Automation.model_validate(spec).create().id))
    return block_id, ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhook-url", required=True, help="where the alerts are POSTed")
    parser.add_argument("--write-yaml", type=Path, help="also write the definitions here")
    args = parser.parse_args(argv)
    _, ids = apply(args.webhook_url)
    print(f"{len(ids)} automation(s) applied: {', '.join(RULES)}")
    if args.write_yaml:
        import yaml
        from prefect.blocks.webhook import Webhook

        block_id = str(Webhook.load(BLOCK)._block_document_id)
        args.write_yaml.write_text(yaml.safe_dump({"automations": definitions(block_id)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
