"""Exactly the affected steps rerun: one input byte, one config field, one module's code."""

from __future__ import annotations

import shutil

import pytest

from tests.prefect_runs import task_runs
from tests.test_flow import STEPS, run, task_states
from tickercast.config import RetrainConfig
from tickercast.tasks import caching


@pytest.fixture(scope="module")
def csv_config(prefect_server, tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("csv")
    shutil.copy(shared_data / "prices" / "NVDA.csv", folder / "NVDA.csv")
    config = RetrainConfig(
        tickers=["NVDA"],
        source="csv",
        csv_dir=str(folder),
        start="2019-06-01",
        lookback=15,
        horizon=3,
        epochs=2,
        units=[4, 4],
        data_dir=str(tmp_path_factory.mktemp("data")),
    )
    run(config)
    return config, folder / "NVDA.csv"


def states(config):
    state, _ = run(config)
    found = task_states(state)
    return [found[s] for s in STEPS]


def test_unchanged_inputs_are_cached(csv_config):
    config, _ = csv_config
    assert states(config)[:-1] == ["Cached"] * (len(STEPS) - 1)  # all but export


def test_one_changed_csv_byte_reruns_from_ingest(csv_config):
    config, path = csv_config
    text = path.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    fields = last.split(",")
    fields[-1] = str(int(fields[-1]) + 1)  # one more share traded on the last day
    path.write_text(text.replace(last, ",".join(fields)))
    assert states(config) == ["Completed"] * len(STEPS)


def test_one_preprocess_field_reruns_from_prepare(csv_config):
    """Ingest and preprocess are one prepare step: it reruns, and all after it."""
    config, _ = csv_config
    changed = config.model_copy(update={"lookback": 16})
    assert states(changed) == ["Completed"] * len(STEPS)


def test_a_ticker_joining_the_batch_leaves_the_others_fits_cached(csv_config, shared_data):
    """A prepare step ingests and preprocesses 16 tickers, so a new ticker in NVDA's batch
    reruns it; NVDA's lake file and preprocessed arrays come out byte for byte the same,
    and its fit is keyed on its own records, so its fit and bundle stay cached: no new
    version."""
    config, path = csv_config
    run(config)  # this config's version is the latest again
    _, before = run(config)
    shutil.copy(shared_data / "prices" / "MSFT.csv", path.parent / "MSFT.csv")
    # one worker: the two tickers share one prepare step (`prepare_batch`)
    state, result = run(config.model_copy(update={"tickers": ["NVDA", "MSFT"], "max_workers": 1}))
    assert [r.state.name for r in task_runs(state) if r.name.startswith("prepare-")] == [
        "Completed"
    ]
    nvda = result["NVDA"]
    assert nvda["promotion"]["action"] == "unchanged"
    assert (nvda["bundle"], nvda["version"]) == (
        before["NVDA"]["bundle"],
        before["NVDA"]["version"],
    )
    assert result["MSFT"]["version"] == 1


def test_changed_module_code_reruns_only_its_step_and_after(csv_config, monkeypatch):
    config, _ = csv_config
    real = caching._module_hash

    def edited(name: str) -> str:
        return real(name) + ("-edited" if name == "tickercast.modeling.models" else "")

    monkeypatch.setattr(caching, "_module_hash", edited)
    found = states(config)
    train = STEPS.index("train")  # the network is built there: it and what follows rerun
    assert found[:train] == ["Cached"] * train and found[train] == "Completed"


def test_a_ticker_failed_in_a_batch_is_tried_again(csv_config, shared_data, monkeypatch):
    """One ticker of a prepare batch fails for a cause outside the inputs (here its ingest
    raises as a full disk would); once the cause is gone, the same inputs run the batch
    again and the ticker trains, instead of the cache repeating the failure."""
    from tickercast.flows.retrain import retrain
    from tickercast.tasks import ingest

    config, path = csv_config
    shutil.copy(shared_data / "prices" / "MSFT.csv", path.parent / "MSFT.csv")
    # a lookback of its own: a batch no earlier test cached
    both = config.model_copy(update={"tickers": ["NVDA", "MSFT"], "max_workers": 1, "lookback": 17})
    real = ingest.ingest_step.fn

    def disk_full(ticker, *args, **kwargs):
        if ticker == "MSFT":
            raise OSError(28, "No space left on device")
        return real(ticker, *args, **kwargs)

    monkeypatch.setattr(ingest.ingest_step, "fn", disk_full)
    failed = retrain(both, return_state=True)
    assert failed.is_failed() and "No space left on device" in failed.message
    monkeypatch.setattr(ingest.ingest_step, "fn", real)  # the disk has room again
    state, result = run(both)
    assert [r.state.name for r in task_runs(state) if r.name.startswith("prepare-")] == [
        "Completed"
    ]
    assert result["MSFT"]["version"] >= 1
    state, _ = run(both)  # a batch with no failure is cached as before
    assert [r.state.name for r in task_runs(state) if r.name.startswith("prepare-")] == ["Cached"]
