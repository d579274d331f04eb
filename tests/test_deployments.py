"""The served deployment's schedule and the parameter form the Prefect UI renders."""

from tickercast.config import IngestConfig, RetrainConfig
from tickercast.deployments.nightly import nightly_settings
from tickercast.deployments.serve import INGEST_CRON, RETRAIN_CRON, TIMEZONE, build_deployments


def test_retrain_served_on_weekday_evenings_new_york():
    deployment, ingest = build_deployments()
    (ingest_schedule,) = ingest.schedules
    assert ingest.name == "nightly-ingest" and ingest_schedule.schedule.timezone == TIMEZONE
    assert ingest_schedule.schedule.cron == INGEST_CRON
    assert deployment.name == "nightly-retrain"
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == RETRAIN_CRON and schedule.schedule.timezone == TIMEZONE
    assert deployment.concurrency_limit == 1
    nightly = RetrainConfig(**deployment.parameters["config"])
    assert nightly.data.source == "yfinance" and nightly.tickers == nightly_settings()["tickers"]
    assert IngestConfig(**ingest.parameters["config"]).tickers == nightly.tickers
    # the flows' own defaults are the same settings: prefect.yaml's deployments get them too
    from tickercast.deployments.nightly import nightly_ingest, nightly_retrain

    assert RetrainConfig(**_default_config(nightly_retrain)) == nightly
    assert IngestConfig(**_default_config(nightly_ingest)).data.source == "yfinance"


def _default_config(flow) -> dict:
    import inspect

    default = inspect.signature(flow.fn).parameters["config"].default
    return default.model_dump(mode="json")


def test_make_run_and_the_tests_stay_offline_on_the_sample():
    assert RetrainConfig().data.source == "sample"


def test_parameter_schema_is_a_usable_form():
    from prefect.utilities.callables import parameter_schema

    from tickercast.flows.retrain import retrain

    schema = parameter_schema(retrain).model_dump()
    assert list(schema["properties"]) == ["config"]
    definitions = schema["definitions"]
    groups = definitions["RetrainConfig"]["properties"]
    assert set(groups) == set(RetrainConfig.model_fields)  # one group per section
    fields = {}
    for name, group in groups.items():  # a section's settings, with their descriptions
        ref = group.get("$ref", "").rsplit("/", 1)[-1]
        assert (definitions[ref] if ref else group).get("description"), name
        fields.update(definitions[ref]["properties"] if ref else {name: group})
    assert set(fields) == set(RetrainConfig.leaves())
    assert all(f.get("description") for f in fields.values())
    assert fields["lookback"]["minimum"] == 1 and fields["lookback"]["maximum"] == 1000
    assert fields["source"]["enum"] == ["sample", "csv", "yfinance", "sine"]
    assert fields["model"]["enum"] == [
        "stacked_lstm",
        "lstm",
        "bilstm",
        "cnn_lstm",
        "lstm_attention",
    ]
    assert fields["mode"]["enum"] == ["per_ticker", "global"]
    assert fields["device"]["enum"] == ["auto", "cpu", "gpu"]
    assert fields["dropout"]["maximum"] == 0.9
    assert fields["reduce_lr_factor"]["exclusiveMaximum"] == 1


def test_flat_deployment_parameters_of_before_the_sections_still_run():
    """A deployment registered with flat parameters (before settings were grouped into
    sections) validates as before: each setting is lifted into its section."""
    from prefect.flows import Flow

    from tickercast.flows.retrain import retrain

    flat = {"tickers": ["MSFT"], "source": "yfinance", "start": "2015-01-01", "epochs": 7}
    assert isinstance(retrain, Flow)
    config = retrain.validate_parameters({"config": flat})["config"]
    assert config.training.epochs == 7 and config.data.source == "yfinance"


def test_scheduled_flow_retries_as_a_whole():
    from tickercast.deployments.nightly import nightly_retrain
    from tickercast.flows.retrain import retrain

    assert nightly_retrain.name == retrain.name == "retrain"
    assert nightly_retrain.retries == 2 and retrain.retries in (None, 0)


def test_prefect_yaml_matches_the_served_deployments():
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    from tickercast.deployments.serve import ROOT

    recipe = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in recipe["deployments"]}
    retrain = by_name["nightly-retrain"]
    assert retrain["schedules"] == [{"cron": RETRAIN_CRON, "timezone": TIMEZONE}]
    assert retrain["work_pool"]["name"] == "tickercast-process"
    assert retrain["concurrency_limit"] == 1
    assert by_name["nightly-ingest"]["schedules"] == [{"cron": INGEST_CRON, "timezone": TIMEZONE}]
    for deployment in recipe["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
        assert flow.name == deployment["entrypoint"].split(":")[1].replace("nightly_", "")


def test_nightly_trains_on_a_local_dask_cluster_of_one_worker_per_core():
    import os

    from tickercast.tasks.runners import local_workers

    deployment, _ = build_deployments()
    run = RetrainConfig(**deployment.parameters["config"]).execution
    assert run.task_runner == "dask" and run.dask_address is None  # a cluster it starts
    cores = len(os.sched_getaffinity(0))
    assert local_workers(run.max_workers) == min(run.max_workers, cores)
    assert local_workers(1) == 1 and local_workers(256) == cores  # never more than cores
