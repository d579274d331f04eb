"""The served deployment's schedule, its retries and the parameter form the Prefect UI renders."""

import warnings

import pytest

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


NIGHT = {  # the nightly's yfinance path on the recorded MSFT chart, a tiny model, threads
    "source": "yfinance",
    "tickers": ["MSFT"],
    "start": "2021-02-01",
    "end": "2022-01-31",
    "lookback": 15,
    "horizon": 3,
    "epochs": 1,
    "units": [4, 4],
    "task_runner": "threads",
}


def _night(tmp_path, monkeypatch, session, **fields):
    """The scheduled retrain (its retries, 0 s apart) on replayed Yahoo; its final state
    and its flow run as the server recorded it."""
    from prefect.client.orchestration import get_client

    from tests.yahoo_replay import reset_yfinance
    from tickercast.deployments.nightly import nightly_retrain

    reset_yfinance(tmp_path / "yf")
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning, r"yfinance\.")
    monkeypatch.setattr("tickercast.market.yahoo.default_session", lambda: session)
    config = RetrainConfig(**{**NIGHT, "data_dir": str(tmp_path / "data"), **fields})
    state = nightly_retrain.with_options(retry_delay_seconds=0)(config, return_state=True)
    with get_client(sync_client=True) as client:
        return state, client.read_flow_run(state.state_details.flow_run_id)


@pytest.mark.slow  # two tries, the first after ingest's own backoff (~14 s), one tiny fit
def test_a_night_failed_by_a_source_outage_is_tried_again(prefect_server, tmp_path, monkeypatch):
    """Yahoo refuses the first try's requests (4: ingest's attempt and its 3 retries): the
    night fails transiently, the deployment's retry runs it again, and it completes."""
    from tests.yahoo_replay import replay_session

    state, run = _night(tmp_path, monkeypatch, replay_session(fail_first=4))
    assert state.is_completed(), state.message
    assert run.run_count == 2


@pytest.mark.slow  # a flow run on the test server, no fit
def test_a_night_whose_failures_would_recur_ends_without_retries(
    prefect_server, tmp_path, monkeypatch
):
    """A ticker Yahoo does not know fails the same way on every try: the night ends Failed
    on its first try, naming it, instead of waiting twice 15 minutes to fail again."""
    from tests.yahoo_replay import replay_session

    state, run = _night(tmp_path, monkeypatch, replay_session(), tickers=["ZZZZQ"])
    assert state.is_failed() and "ZZZZQ" in state.message
    assert run.run_count == 1  # the deployment's retries=2 would have made it 3


def test_a_failure_is_transient_when_a_later_try_may_not_meet_it():
    """What keeps the nightly's retries: a source outage or a lost Dask worker, raised or
    as a ticker's one line in the run's results; anything else would fail again."""
    from tickercast.errors import PermanentSourceError, TransientSourceError, transient
    from tickercast.fanout import failures_in

    for error in (TransientSourceError("x"), ConnectionResetError(), TimeoutError()):
        assert transient(error)
    try:
        raise RuntimeError("while fetching") from ConnectionRefusedError()
    except RuntimeError as error:
        assert transient(error)
    assert not transient(PermanentSourceError("ticker ZZZZQ: not found"))
    assert not transient(ValueError("bad data"))
    results = {
        "MSFT": {"ticker": "MSFT", "error": "TransientSourceError: ticker MSFT: gave up"},
        "NVDA": {"ticker": "NVDA", "error": "KilledWorker: worker died"},
        "ZZZZQ": {"ticker": "ZZZZQ", "error": "PermanentSourceError: ticker ZZZZQ: no data"},
        "GOOG": {"ticker": "GOOG", "error": "BundleError: SavedModel answered"},
        "AAPL": {"bundle": "models/AAPL/versions/1", "promotion": {}},
        "AMZN": {"ticker": "AMZN", "skipped": "corrupt partition"},
    }
    lines = failures_in(results)
    assert sorted(lines) == ["GOOG", "MSFT", "NVDA", "ZZZZQ"]
    assert {t for t, line in lines.items() if transient(line)} == {"MSFT", "NVDA"}


def test_the_nightly_flow_travels_to_a_scheduler_that_cannot_import_its_file(tmp_path):
    """Prefect loads a deployment's file under its bare name ('nightly'), and the flow
    travels with every task it submits (its run's context): a Dask scheduler elsewhere
    must unpickle it without that file. What the flow's function calls lives in the
    package (a helper beside it in the file failed every ticker of a served night on a
    `dask scheduler`: ModuleNotFoundError: No module named 'nightly')."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import cloudpickle
    from prefect.flows import load_flow_from_entrypoint

    root = Path(__file__).resolve().parents[1]
    flow = load_flow_from_entrypoint(f"{root}/deployments/nightly.py:nightly_retrain")
    code = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).name)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=cloudpickle.dumps(flow),
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().strip() == "retrain"
