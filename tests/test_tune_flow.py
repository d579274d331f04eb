"""The tune flow end to end under the Prefect test server: a tiny search with its files,
table artifact and test report; the CLI; resume after a killed run and after a bigger
budget; and the proof that the search never reads the test split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.prefect_runs import artifacts_of, task_runs
from tests.test_tune import TINY_SPACE
from tickercast.config import RetrainConfig
from tickercast.tuning.config import SEARCHED, TuneConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(tickers=["MSFT"], start="2019-06-01", final_epochs=1, **TINY_SPACE)
TINY_ARGS = [
    "--tickers",
    "MSFT",
    "--start",
    "2019-06-01",
    "--models",
    "lstm",
    "stacked_lstm",
    "--units-choices",
    "4",
    "8",
    "--layers-range",
    "1",
    "2",
    "--lookbacks",
    "10",
    "20",
    "--batch-sizes",
    "64",
    "--epochs",
    "1",
    "--final-epochs",
    "1",
    "--max-trials",
    "3",
]


@pytest.fixture(scope="module", autouse=True)
def _prefect_logging_outside_capsys():
    """Importing Prefect's flow API configures its console log handlers on the sys.stderr
    of that moment; done inside a capsys test they would write to a closed file later."""
    import prefect.main  # noqa: F401


def run(config: TuneConfig):
    from tickercast.flows.tune import tune

    state = tune(config, return_state=True)
    assert state.is_completed(), state.message
    return state, state.result()


def task_run_states(state) -> dict[str, str]:
    return {r.name: r.state.name for r in task_runs(state)}


def results_of(run_dir: Path) -> dict[str, dict]:
    return {
        p.parent.name.removeprefix("trial_"): json.loads(p.read_text())
        for p in sorted(run_dir.glob("trial_*/result.json"))
    }


@pytest.fixture(scope="module")
def searched(prefect_server, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tune")
    config = TuneConfig(**TINY, parallel_trials=2, data_dir=str(data_dir))
    state, result = run(config)
    return config, state, result


def test_a_tiny_search_end_to_end(searched):
    config, state, result = searched
    run_dir = Path(result["run_dir"])
    assert run_dir.parent == Path(config.execution.data_dir).resolve() / "tuning"
    assert (result["trials"], result["completed"]) == (3, 3)
    assert sorted(result["ran"]) == ["0000", "0001", "0002"]
    states = task_run_states(state)
    assert {states[f"tune-trial-{i}"] for i in ("0000", "0001", "0002")} == {"Completed"}

    rows = json.loads((run_dir / "trials.json").read_text())
    assert [r["trial"] for r in rows] == ["0000", "0001", "0002"]
    best = min(rows, key=lambda r: r["val_mse"])
    assert best["best"] and best["trial"] == result["best"]["trial"]
    assert sum(r["best"] for r in rows) == 1
    for row in rows:
        assert row["status"] == "completed" and row["seconds"] > 0 and row["epochs_run"] == 1
        assert row["lookback"] in (10, 20) and row["model"] in ("lstm", "stacked_lstm")
    csv = pd.read_csv(run_dir / "trials.csv", dtype={"trial": str})
    assert list(csv["trial"]) == ["0000", "0001", "0002"]
    np.testing.assert_allclose(csv["val_mse"], [r["val_mse"] for r in rows])

    # best.json: a RetrainConfig with the best trial's choices and the final epochs
    stored = json.loads(Path(result["best_json"]).read_text())
    retrain = RetrainConfig(**stored).flat()
    assert {k: retrain[k] for k in SEARCHED} == {k: best[k] for k in SEARCHED}
    assert retrain["epochs"] == config.budget.final_epochs and retrain["tickers"] == ["MSFT"]

    # the trial table artifact lists every trial with its hyperparameters, loss and time
    artifacts = artifacts_of(state)
    table = artifacts["tune-trials"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert [r["trial"] for r in table] == ["0000", "0001", "0002"]
    for column in (
        "model",
        "units",
        "learning_rate",
        "dropout",
        "l2",
        "batch_size",
        "lookback",
        "val_mse",
        "val_loss",
        "epochs_run",
        "seconds",
        "status",
    ):
        assert column in table[0], column
    assert "best.json" in artifacts["tune-report"].data


def test_the_chosen_configuration_is_evaluated_once_on_the_test_split(searched):
    _, _, result = searched
    test = result["test"]["MSFT"]
    bundle = Path(test["bundle"])
    assert (bundle / "model.keras").is_file()
    metrics = test["metrics"]
    assert {"model", "naive", "moving_average"} <= set(metrics)
    assert metrics["model"]["rmse"] > 0 and "naive" in test["verdict"]
    assert test["promotion"]["version"] == 1
    meta = json.loads((bundle / "metadata.json").read_text())
    best = result["best"]
    assert meta["config"]["lookback"] == best["lookback"]
    assert meta["config"]["units"] == best["units"]
    # retrain trained the very network the trial trained: same first epoch
    trial = results_of(Path(result["run_dir"]))[best["trial"]]
    history = json.loads((bundle / "history.json").read_text())["history"]
    np.testing.assert_allclose(
        history["val_loss"][:1], trial["history"]["MSFT"]["val_loss"][:1], rtol=1e-6
    )


def test_the_cli_reruns_a_finished_search_without_training_and_prints_the_report(searched, capsys):
    from tickercast.app.cli import main

    config, _, result = searched
    before = {k: v["seconds"] for k, v in results_of(Path(result["run_dir"])).items()}
    code = main(["tune", *TINY_ARGS, "--data-dir", config.execution.data_dir])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"tune {result['run']}: 3 trial(s), 3 completed, 0 run now" in out
    assert f"best: trial {result['best']['trial']}, val MSE" in out
    assert f"best.json: {result['best_json']}" in out
    assert "MSFT: test RMSE model" in out and "| naive" in out
    # the retrain of best.json found nothing changed since the first search's: no new version
    assert "MSFT: unchanged since v1" in out
    after = {k: v["seconds"] for k, v in results_of(Path(result["run_dir"])).items()}
    assert after == before


def test_python_m_flows_tune_help_lists_every_field():
    text = subprocess.run(
        [sys.executable, "-m", "tickercast.flows.tune", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    for name in TuneConfig.leaves():
        assert "--" + name.replace("_", "-") in text, name


KILLED = """
import sys, time
from tests import netguard
netguard.install()
import keras
import tickercast.tuning.trial as tune

class Hang(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):  # after the epoch's checkpoint is written
        time.sleep(600)

original = tune.run_trial

def run_trial(spec, data, settings, trial_dir, logger=None, callbacks=(), **kw):
    if spec["trial_id"] == "0001":
        callbacks = [Hang()]
    return original(spec, data, settings, trial_dir, logger, callbacks, **kw)

tune.run_trial = run_trial
from tickercast.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_killed_search_resumes_and_a_bigger_budget_runs_only_new_trials(
    prefect_server, tmp_path, monkeypatch
):
    from prefect.settings import PREFECT_API_URL

    import tickercast.tuning.trial

    args = [*TINY_ARGS, "--epochs", "3", "--max-trials", "2", "--no-final-retrain"]
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, "tune", *args, "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pattern = "tuning/*/trial_0001/train/MSFT/checkpoints/epoch-0001/state.json"
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(pattern)):
        assert child.poll() is None, child.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "trial 0001 never finished an epoch"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)  # mid-trial: no handler, no clean-up
    child.wait()
    child.stderr.close()
    (run_dir,) = tmp_path.glob("tuning/*")
    first = results_of(run_dir)
    assert list(first) == ["0000"]  # trial 0001 never finished
    stamp = (run_dir / "trial_0000/result.json").stat().st_mtime_ns

    calls: list[str] = []
    original = tickercast.tuning.trial.run_trial

    def counting(spec, *rest, **kw):
        calls.append(spec["trial_id"])
        if spec["trial_id"] == "0002" and calls.count("0002") == 1:
            raise OSError("simulated crash of trial 0002")  # retried once, in this run
        return original(spec, *rest, **kw)

    monkeypatch.setattr(tickercast.tuning.trial, "run_trial", counting)
    config = TuneConfig(
        **{**TINY, "epochs": 3, "max_trials": 2}, final_retrain=False, data_dir=str(tmp_path)
    )
    _, resumed = run(config)
    assert resumed["run"] == run_dir.name and resumed["ran"] == ["0001"]
    assert calls == ["0001"]
    part = results_of(run_dir)["0001"]["parts"]["MSFT"]
    assert part["resumed_from_epoch"] == 1  # from the checkpoint the killed run wrote
    assert (run_dir / "trial_0000/result.json").stat().st_mtime_ns == stamp

    calls.clear()
    _, extended = run(config.model_copy(update={"max_trials": 4}))
    assert calls == ["0002", "0002", "0003"]  # 0000 and 0001 are not trained again
    assert sorted(set(extended["ran"])) == ["0002", "0003"]
    assert (extended["trials"], extended["completed"]) == (4, 4)
    assert (run_dir / "trial_0000/result.json").stat().st_mtime_ns == stamp
    rows = json.loads((run_dir / "trials.json").read_text())
    assert [r["status"] for r in rows] == ["completed"] * 4


def write_csv(folder: Path, frame: pd.DataFrame) -> None:
    folder.mkdir(parents=True)
    out = frame.rename(
        columns={
            "date": "Date",
            "open": "Open",
            "high": "High",
            "low": "Low",
            "close": "Close",
            "adj_close": "Adj Close",
            "volume": "Volume",
        }
    )
    out.to_csv(folder / "MSFT.csv", index=False)


def test_the_search_never_reads_the_test_split(prefect_server, tmp_path, monkeypatch):
    """Every price and volume of the test split is changed (x3, x7): if anything of the
    search depended on them, something below would differ. Only the final evaluation, which
    must read them, does."""
    import tickercast.tuning.data
    from tickercast.modeling.preprocess import split_sizes

    prices = pd.read_parquet(ROOT / "data/sample/MSFT.parquet")
    prices = prices[pd.to_datetime(prices["date"]) >= "2019-06-01"].reset_index(drop=True)
    split = split_sizes(len(prices), 0.15, 0.15)  # features close, volume: no warm-up rows
    first_test = split.n_train + split.n_val
    poisoned = prices.copy()
    for column in ("open", "high", "low", "close", "adj_close"):
        poisoned.loc[first_test:, column] *= 3.0
    poisoned.loc[first_test:, "volume"] *= 7
    write_csv(tmp_path / "clean/csv", prices)
    write_csv(tmp_path / "poisoned/csv", poisoned)

    loads: list[tuple[str, int]] = []
    original = tickercast.tuning.data.SearchData.load

    def watched(self):
        x, y, meta = original(self)
        loads.append((self.search, len(x)))
        return x, y, meta

    monkeypatch.setattr(tickercast.tuning.data.SearchData, "load", watched)
    results = {}
    for name in ("clean", "poisoned"):
        config = TuneConfig(
            **{**TINY, "max_trials": 2, "start": None},
            preset="tutorial",  # features close, volume: no warm-up rows
            source="csv",
            csv_dir=str(tmp_path / name / "csv"),
            data_dir=str(tmp_path / name),
        )
        results[name] = run(config)[1]
    clean, dirty = results["clean"], results["poisoned"]

    # trials read only their search files, train + validation rows, never more
    assert len(loads) == 4
    for path, rows in loads:
        assert "/work/tune_data/" in path and rows == first_test
    # the search saw the same data, made the same choices and scored them the same
    assert clean["run"] == dirty["run"]  # the run name hashes the search data
    same = ("search.json", "trials.json")
    for file in same:
        a = json.loads((Path(clean["run_dir"]) / file).read_text())
        b = json.loads((Path(dirty["run_dir"]) / file).read_text())
        if file == "trials.json":
            for row in a + b:
                row.pop("seconds")
        assert a == b, file
    best = [json.loads(Path(r["best_json"]).read_text()) for r in (clean, dirty)]
    for b in best:
        del b["data_dir"], b["csv_dir"]
    assert best[0] == best[1]
    # ... while the one evaluation on the test split reads those rows
    naive = [r["test"]["MSFT"]["metrics"]["naive"]["rmse"] for r in (clean, dirty)]
    assert naive[1] > 2 * naive[0]


def test_hyperband_continues_the_best_first_round_trial_from_its_checkpoint(
    prefect_server, tmp_path
):
    """max_epochs 3, factor 3: three 1-epoch trials, then the best of them trains on to
    epoch 3 from its checkpoint (a trial of its own, continuing the other's folder)."""
    config = TuneConfig(
        **{**TINY, "epochs": 3, "max_trials": 4},
        algorithm="hyperband",
        final_retrain=False,
        data_dir=str(tmp_path),
    )
    _, result = run(config)
    rows = json.loads((Path(result["run_dir"]) / "trials.json").read_text())
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert [r["epochs"] for r in rows] == [1, 1, 1, 3]
    first_round, last = rows[:3], rows[3]
    assert last["continues"] == min(first_round, key=lambda r: r["val_mse"])["trial"]
    assert {k: last[k] for k in SEARCHED} == {k: rows[int(last["continues"])][k] for k in SEARCHED}
    continued = results_of(Path(result["run_dir"]))["0003"]
    assert continued["parts"]["MSFT"]["resumed_from_epoch"] == 1
    assert continued["epochs_run"] == 3


@pytest.mark.slow
def test_trials_run_in_parallel_on_dask_workers(prefect_server, tmp_path):
    """Two trials in flight on a local Dask cluster of two worker processes: they train at
    the same time (in threads they would take turns). Each trial trains long enough
    (60 epochs, no early stop: ~8 s each here) that the workers' start-up skew (a TensorFlow
    import each, ~2 s here) cannot make two parallel trials look sequential."""
    long_trials = {"epochs": 60, "patience": 60, "reduce_lr_patience": 60}
    config = TuneConfig(
        **{**TINY, "max_trials": 2, **long_trials},
        task_runner="dask",
        max_workers=2,
        parallel_trials=2,
        final_retrain=False,
        data_dir=str(tmp_path),
    )
    state, result = run(config)
    assert (result["trials"], result["completed"]) == (2, 2)
    trials = results_of(Path(result["run_dir"]))
    (a, b) = (trials["0000"], trials["0001"])
    assert a["started"] < b["finished"] and b["started"] < a["finished"]  # overlapping
    states = task_run_states(state)
    assert states["tune-trial-0000"] == states["tune-trial-0001"] == "Completed"
