"""The retrain flow end to end under one Prefect test server, with a tiny network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.prefect_runs import task_runs
from tickercast.config import RetrainConfig

STEPS = ("prepare", "train", "evaluate", "export")


def task_states(flow_state) -> dict[str, str]:
    """Each task's state by its name without the run suffix (the last run of a repeat)."""
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in task_runs(flow_state)}


def run(config: RetrainConfig):
    from tickercast.flows.retrain import retrain

    state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    return state, state.result()


@pytest.fixture(scope="module")
def tiny(prefect_server, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("retrain")
    config = RetrainConfig(
        tickers=["MSFT"],
        start="2018-06-01",
        lookback=20,
        epochs=3,
        units=[8, 4],
        batch_size=64,
        data_dir=str(data_dir),
    )
    state, result = run(config)
    return config, state, result


def test_bundle_contents(tiny):
    config, _, result = tiny
    bundle = Path(result["MSFT"]["bundle"])
    assert bundle == Path(config.execution.data_dir).resolve() / "models/MSFT/versions/1"
    for name in (
        "model.keras",
        "preprocessing.json",
        "metadata.json",
        "loss.png",
        "forecast.png",
        "manifest.json",
        "predictions.parquet",
    ):
        assert (bundle / name).is_file(), name
    meta = json.loads((bundle / "metadata.json").read_text())
    assert {"model", "naive", "moving_average"} <= set(meta["metrics"])
    for values in meta["metrics"].values():
        assert {"rmse", "mae", "mape"} <= set(values) and values["rmse"] > 0
    assert meta["config"]["lookback"] == 20 and meta["data"]["first_day"] >= "2018-06-01"
    assert len(meta["data"]["sha256"]) == 64 and meta["versions"]["tensorflow"]
    pre = json.loads((bundle / "preprocessing.json").read_text())
    # the recommended default: scale-free inputs, a target relative to the last close
    assert pre["features"] == ["log_return", "volatility"] and pre["horizon"] == 5
    assert pre["target"] == "mean_close_log_return"
    assert meta["shrinkage"]["alpha"] is not None and 0.0 <= meta["shrinkage"]["alpha"] <= 1.0
    assert {"min", "max"} <= set(pre["feature_scaler"])
    lake = Path(config.execution.data_dir) / "lake/prices/ticker=MSFT/part-0.parquet"
    assert lake.is_file()


def test_fresh_process_reproduces_the_evaluation(tiny):
    config, _, result = tiny
    bundle = result["MSFT"]["bundle"]
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from tests import netguard; netguard.install()\n"
        "from tickercast.market import lake\n"
        "from tickercast.delivery.bundle import load_bundle\n"
        "from tickercast.delivery.predict import predict_at\n"
        f"b = load_bundle({bundle!r})\n"
        "table = pd.read_parquet(b.path / 'predictions.parquet')\n"
        f"prices = lake.read_partition({config.execution.data_dir!r}, 'MSFT')\n"
        "got = predict_at(b, prices, table['anchor_date'])[:, 0]\n"
        "np.testing.assert_allclose(got, table['model'], rtol=1e-5, atol=1e-4)\n"
        "print('reproduced', len(got))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "reproduced" in out.stdout
    table = pd.read_parquet(Path(bundle) / "predictions.parquet")
    assert len(table) > 50


def test_the_run_graph_links_each_fit_to_the_prepare_step_that_made_its_windows(tiny):
    """The UI draws an edge per task input or `wait_for`: a fit handed its ticker's records
    (values, not the batch's future) still hangs off the prepare run that made them."""
    _, state, _ = tiny
    runs = task_runs(state)
    by_id = {run.id: run for run in runs}
    (fit,) = [run for run in runs if run.name.startswith("train-")]
    upstream = {
        by_id[link.id].name.rsplit("-", 1)[0]
        for links in fit.task_inputs.values()
        for link in links
        if getattr(link, "input_type", None) == "task_run" and link.id in by_id
    }
    assert upstream == {"prepare"}


def exported_versions(config: RetrainConfig) -> list[int]:
    folder = Path(config.execution.data_dir) / "models/MSFT/versions"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def test_identical_rerun_is_cached_and_exports_nothing_new(tiny):
    from tickercast.delivery.registry import read_registry

    config, first_state, _ = tiny
    assert set(task_states(first_state).values()) == {"Completed"}
    # Other tests of this module may have exported other configs since: this run makes
    # the latest version this config's again (a new one or, if it was, none).
    run(config)
    versions, registry = exported_versions(config), read_registry(config.execution.data_dir, "MSFT")

    state, result = run(config)
    states = task_states(state)
    assert {s: states[s] for s in STEPS[:-1]} == {s: "Cached" for s in STEPS[:-1]}
    assert Path(result["MSFT"]["bundle"]).name == str(versions[-1])
    assert result["MSFT"]["promotion"]["action"] == "unchanged"
    assert exported_versions(config) == versions
    assert read_registry(config.execution.data_dir, "MSFT") == registry


def test_changing_a_training_field_reruns_only_train_and_evaluate(tiny):
    config, _, _ = tiny
    state, _ = run(config.model_copy(update={"epochs": 2}))
    states = task_states(state)
    assert [states[s] for s in STEPS] == [
        "Cached",
        "Completed",
        "Completed",
        "Completed",
    ]


def test_a_gate_setting_reruns_no_step_only_the_gate(tiny):
    """Each step is keyed on its own sections: the gate's level is read by the gate alone,
    so every step is cached and no new version is exported (the run changed no input of
    the model)."""
    config, _, _ = tiny
    run(config)  # this config's version is the latest again
    state, result = run(config.model_copy(update={"promotion_level": 0.01, "max_workers": 2}))
    states = task_states(state)
    assert {s: states[s] for s in STEPS[:-1]} == {s: "Cached" for s in STEPS[:-1]}
    assert result["MSFT"]["promotion"]["action"] == "unchanged"


def test_deleted_work_file_is_recomputed_not_trusted(tiny):
    config, _, _ = tiny
    for model in (Path(config.execution.data_dir) / "work/train").glob("*/model.keras"):
        model.unlink()
    state, _ = run(config)
    states = task_states(state)
    assert states["prepare"] == "Cached" and states["train"] == "Completed"


def test_refresh_recomputes_everything(tiny):
    config, _, _ = tiny
    state, _ = run(config.model_copy(update={"refresh": True}))
    assert set(task_states(state).values()) == {"Completed"}


def test_sine_source_smoke(prefect_server, tmp_path):
    config = RetrainConfig(
        tickers=["SINE"],
        source="sine",
        features=["close"],
        target="close",
        horizon=1,
        lookback=20,
        epochs=2,
        units=[8, 4],
        start=None,
        data_dir=str(tmp_path),
    )
    _, result = run(config)
    assert result["SINE"]["metrics"]["model"]["rmse"] < 1.0


def test_prepare_batches_fill_every_worker_then_hold_sixteen_tickers():
    """A prepare step runs ingest and preprocess for several tickers: a small universe is
    split so each worker prepares a batch at once (as the separate steps ran), a large one
    16 to a task run (a task run's overhead is then ~10 ms a ticker)."""
    from tickercast.flows.retrain import PREPARE_BATCH, prepare_batch

    assert PREPARE_BATCH == 16
    assert [prepare_batch(n, 2) for n in (1, 2, 5, 32, 33, 500)] == [1, 1, 3, 16, 16, 16]
    assert [prepare_batch(n, 4) for n in (1, 5, 64, 65)] == [1, 2, 16, 16]
    assert prepare_batch(20, 1) == 16 and prepare_batch(3, 0) == 3
