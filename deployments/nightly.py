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

from tickercast.config import IngestConfig, RetrainConfig
from tickercast.flows.ingest import ingest
from tickercast.flows.retrain import retrain
from tickercast.flows.retries import retried_if_transient

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
# 17:45), unless every failure would recur (tickercast.flows.retries); manual runs of
# `retrain` fail fast instead.
@flow(name="retrain", log_prints=True, persist_result=False, retries=2, retry_delay_seconds=900)
def nightly_retrain(config: RetrainConfig = nightly_config(RetrainConfig)) -> dict:
    """The retrain flow on the nightly settings (deployments/nightly.json)."""
    return retried_if_transient(lambda: retrain.fn(config))


@flow(name="ingest", log_prints=True, persist_result=False)
def nightly_ingest(config: IngestConfig = nightly_config(IngestConfig)) -> dict:
    """The ingest flow on the nightly settings (deployments/nightly.json)."""
    return ingest.fn(config)
