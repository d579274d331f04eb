"""The flows' events and the shipped automations, against the session's Prefect server."""

from __future__ import annotations


def test_the_shipped_automations_are_valid_prefect_automations():
    from prefect.automations import Automation

    from tickercast.deployments.automations import RULES, definitions

    specs = definitions("00000000-0000-0000-0000-000000000000")
    built = [Automation.model_validate(s) for s in specs]
    assert [a.name for a in built] == list(RULES)
    assert {a.trigger.expect.pop() for a in built} == {e for e, _ in RULES.values()}


def test_applying_them_creates_the_block_and_the_automations(prefect_server):
    from prefect.automations import Automation

    from tickercast.deployments.automations import RULES, apply

    block_id, ids = apply("http://127.0.0.1:9/alerts")
    again_block, again = apply("http://127.0.0.1:9/alerts")  # replaced, not duplicated
    assert again_block == block_id and len(again) == len(RULES)
    for name, automation_id in zip(RULES, again, strict=True):
        read = Automation.read(name=name)
        assert str(read.id) == automation_id
        assert str(read.actions[0].block_document_id) == block_id


def test_events_name_the_ticker_and_version(prefect_server):
    from tickercast.tasks.events import emit

    event = emit("champion.promoted", "AAPL", 3, reason="significantly better")
    assert event is not None and event.event == "tickercast.champion.promoted"
    assert event.resource.id == "tickercast.ticker.AAPL"
    assert event.related[0].id == "tickercast.model.AAPL.v3"
    assert event.payload["reason"] == "significantly better"


def test_a_version_records_the_prefect_run_that_made_it(prefect_server):
    """The export step writes the flow run's id and page into metadata.json ("runs"),
    which the ticker page links."""
    from prefect import flow
    from prefect.runtime import flow_run

    from tickercast.tasks.export import _runs

    @flow
    def exporting() -> tuple[dict, str]:
        return _runs(), flow_run.id

    runs, run_id = exporting()
    assert runs["prefect_flow_run"] == run_id
