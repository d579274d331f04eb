"""What the schedules run: `retrain` and `ingest` on live data, configured in one place.

`deployments/nightly.json` holds the settings the nightly runs use (tickers, source,
start, ...), by their flat names (the CLI options' names); any RetrainConfig /
IngestConfig setting may appear there. They become the default of
each nightly flow's `config` parameter, so `deployments/serve.py`, `prefect deploy
--prefect-file deployments/prefect.yaml` and the Prefect UI's form all start from them,
and a custom run can still override any field. `make run` and the tests stay offline:
they use `RetrainConfig()`, whose source is the bundled sample.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow
from prefect.states import State

from tickercast.config import IngestConfig, RetrainConfig
from tickercast.errors import transient
from tickercast.fanout import failures_in, one_line
from tickercast.flows.ingest import ingest
from tickercast.flows.retrain import retrain

SETTINGS = Path(__file__).resolve().with_name("nightly.json")


def nightly_settings() -> dict:
    """The fields of deployments/nightly.json (the one place the nightly tickers live)."""
    return json.loads(SETTINGS.read_text())


def nightly_config(model: type[RetrainConfig] | type[IngestConfig]):
    """`model` built from the nightly settings (those it has: `start` is retrain's first
    day and ingest's first day fetched alike)."""
    settings = nightly_settings()
    return model(**{k: v for k, v in settings.items() if k in model.leaves()})


# The scheduled retrain retries as a whole (a Yahoo outage at 17:30 is usually over by
# 17:45), unless every failure would recur (`no_more_tries`); manual runs of `retrain`
# fail fast instead.
@flow(name="retrain", log_prints=True, persist_result=False, retries=2, retry_delay_seconds=900)
def nightly_retrain(config: RetrainConfig = nightly_config(RetrainConfig)) -> dict:
    """The retrain flow on the nightly settings (deployments/nightly.json)."""
    try:
        result = retrain.fn(config)
    except Exception as error:
        if not transient(error):
            no_more_tries(f"the run failed with {one_line(error)}")
        raise
    if isinstance(result, State) and result.is_failed():
        failed = failures_in(result.data or {})
        if not any(transient(line) for line in failed.values()):
            no_more_tries(f"{len(failed)} ticker(s) failed, none of them transiently")
    return result


def no_more_tries(why: str) -> None:
    """End this flow run's retries: each would wait 15 minutes to fail the same way (a
    universe of 500 tickers holds a bad print or a delisted ticker most nights, and every
    such night waited 30 minutes to end Failed). Only a transient failure (a source
    outage, a lost Dask worker: tickercast.errors.transient) keeps them. The run's retry
    count is set to the tries it has made, so Prefect's retry rule lets it end Failed."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(context.flow_run.id)
        if (
            run.empirical_policy.retries is not None
            and run.run_count > run.empirical_policy.retries
        ):
            return  # the last try already: nothing to end
        policy = run.empirical_policy.model_copy(update={"retries": max(0, run.run_count - 1)})
        client.update_flow_run(run.id, empirical_policy=policy)
    print(f"not retried: {why}; a later try would fail the same way")


@flow(name="ingest", log_prints=True, persist_result=False)
def nightly_ingest(config: IngestConfig = nightly_config(IngestConfig)) -> dict:
    """The ingest flow on the nightly settings (deployments/nightly.json)."""
    return ingest.fn(config)
