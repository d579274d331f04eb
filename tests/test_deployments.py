"""The served deployment's schedule and the parameter form the Prefect UI renders."""

from deployments.serve import RETRAIN_CRON, TIMEZONE, build_deployments
from tasks.config import RetrainConfig


def test_retrain_served_on_weekday_evenings_new_york():
    (deployment,) = build_deployments()
    assert deployment.name == "nightly-retrain"
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == RETRAIN_CRON and schedule.schedule.timezone == TIMEZONE
    assert deployment.concurrency_limit == 1
    assert RetrainConfig(**deployment.parameters["config"]) == RetrainConfig()


def test_parameter_schema_is_a_usable_form():
    from prefect.utilities.callables import parameter_schema

    from flows.retrain import retrain

    schema = parameter_schema(retrain).model_dump()
    assert list(schema["properties"]) == ["config"]
    fields = schema["definitions"]["RetrainConfig"]["properties"]
    assert set(fields) == set(RetrainConfig.model_fields)
    assert all(f.get("description") for f in fields.values())
    assert fields["lookback"]["minimum"] == 1 and fields["lookback"]["maximum"] == 1000
    assert fields["source"]["enum"] == ["sample", "csv", "yfinance", "sine"]
    assert fields["model"]["enum"] == ["stacked_lstm", "lstm"]
