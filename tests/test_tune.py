"""The hyperparameter search's logic without Prefect: config, search space, best.json,
search data (no test-split value in it), the oracle's resume, and one trial's training
(the same network and batches retrain trains; Hyperband's continuation exact)."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from tickercast.config import RetrainConfig
from tickercast.sections import FitSpec, PreprocessSettings
from tickercast.tuning.config import SEARCHED, Choice, TrialSettings, TuneConfig
from tickercast.tuning.data import (
    SearchData,
    content_hash,
    save_search_data,
    search_anchors,
    search_data,
)
from tickercast.tuning.search import Search, open_run, run_name
from tickercast.tuning.space import best_config, search_space, settings_from_values
from tickercast.tuning.trial import run_trial

PRE = {
    "start": None,
    "end": None,
    "features": ["close", "volume"],
    "horizon": 3,
    "target": "mean_close",
    "val_fraction": 0.15,
    "test_fraction": 0.15,
}
TRAIN = {
    "clipvalue": 1.0,
    "patience": 10,
    "seed": 7,
    "recurrent_dropout": 0.0,
    "mode": "per_ticker",
    "ticker_embedding": 0,
    "reduce_lr_patience": 5,
    "reduce_lr_factor": 0.5,
    "device": "cpu",
    "mixed_precision": False,
    "tensorboard_dir": None,
}


def section(**changes) -> PreprocessSettings:
    return PreprocessSettings(**{**PRE, **changes})


def walk(n: int = 260, seed: int = 0) -> pd.DataFrame:
    """Seeded random-walk prices in the lake's columns, one row per business day."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame(
        {
            "date": pd.bdate_range("2018-01-01", periods=n).date,
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "adj_close": close,
            "volume": rng.integers(1_000, 5_000, n),
        }
    )


# A search small enough for tests (also used by tests/test_tune_flow.py).
TINY_SPACE = dict(
    models=["lstm", "stacked_lstm"],
    units_choices=[4, 8],
    layers_range=[1, 2],
    lookbacks=[10, 20],
    batch_sizes=[64],
    epochs=1,
    max_trials=3,
)


def tiny(**changes) -> TuneConfig:
    return TuneConfig(**{"tickers": ["AAA"], "source": "sine", **TINY_SPACE, **changes})


# --- the config -----------------------------------------------------------------------


def test_every_retrain_option_a_trial_does_not_choose_is_carried_with_its_definition():
    retrain, tune = RetrainConfig.leaves(), TuneConfig.leaves()
    carried = set(retrain) - set(SEARCHED) - {"epochs"}
    assert carried <= set(tune)
    for name in carried:
        ours, theirs = TuneConfig.leaf_field(name), RetrainConfig.leaf_field(name)
        assert ours.description == theirs.description, name
        assert ours.metadata == theirs.metadata, name
    assert not set(SEARCHED) & set(tune)  # the space has its own, differently named fields
    config = tiny(patience=4, promotion_level=0.01, walk_forward_folds=2)
    choice = Choice(**SETTINGS)
    made = config.retrain(choice).flat()
    assert {k: made[k] for k in carried if k != "refresh"} == {
        k: v for k, v in config.flat().items() if k in carried and k != "refresh"
    }
    assert {k: made[k] for k in SEARCHED} == choice.model_dump()
    final, epochs = TuneConfig.leaf_field("final_epochs"), RetrainConfig.leaf_field("epochs")
    assert (final.default, final.metadata) == (epochs.default, epochs.metadata)


def test_a_search_is_identified_by_what_its_trials_compute_only():
    """The gate, the walk-forward, the budget and how the run executes change best.json
    or the run, never a trial: a rerun changing them resumes the same search."""
    base = tiny()
    for changes in (
        {"promotion_level": 0.01, "promotion_metric": "mae", "require_beat_naive": True},
        {"walk_forward_folds": 3, "max_trials": 30, "parallel_trials": 2, "final_retrain": False},
        {"device": "cpu", "max_workers": 8, "refresh": True, "move_threshold": 0.9},
    ):
        assert base.model_copy(update=changes).identity() == base.identity(), changes
    for changes in ({"patience": 3}, {"horizon": 2}, {"lookbacks": [10]}, {"epochs": 2}):
        assert base.model_copy(update=changes).identity() != base.identity(), changes


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"models": ["lstm", "transformer"]}, "models.1: got 'transformer'"),
        ({"algorithm": "random"}, "algorithm: got 'random'"),
        ({"l2_range": [0, 1e-3]}, "l2_range: needs 0 < lowest"),
        ({"learning_rate_range": [1e-2, 1e-4]}, "learning_rate_range: needs 0 < lowest"),
        ({"dropout_range": [0.1]}, "dropout_range: List should have at least 2 items"),
        ({"layers_range": [0, 2]}, "layers_range: needs 1 <= lowest"),
        ({"models": ["cnn_lstm"], "layers_range": [1, 4]}, "layers_range: cnn_lstm puts"),
        ({"units_choices": [8, 8]}, "units_choices: duplicates"),
        ({"lookbacks": [0, 10]}, "lookbacks.0: Input should be greater than or equal to 1"),
        ({"batch_sizes": []}, "batch_sizes: List should have at least 1 item"),
        ({"max_trials": 0}, "max_trials: Input should be greater than or equal to 1"),
        ({"run": "../elsewhere"}, "run: String should match pattern"),
        ({"tickers": ["AAA", "AAA"]}, "tickers: duplicate tickers"),
        ({"features": ["close", "volum"]}, "features.1: got 'volum'"),
        ({"source": "csv"}, "source 'csv' needs csv_dir"),
        ({"ticker_embedding": 4}, "ticker_embedding needs mode 'global'"),
        ({"units": [8]}, "units: Extra inputs are not permitted"),
    ],
)
def test_unknown_or_invalid_values_are_refused_naming_the_field(changes, message):
    from pydantic import ValidationError

    from tickercast.app.options import format_validation as _format_validation

    with pytest.raises(ValidationError) as caught:
        tiny(**changes)
    assert message in _format_validation(caught.value)


def test_sine_starts_at_its_first_day_unless_told_otherwise():
    assert TuneConfig(source="sine").preprocessing.start is None
    start = TuneConfig(source="sine", start="2001-01-02").preprocessing.start
    assert str(start) == "2001-01-02"
    assert str(TuneConfig(source="sample").preprocessing.start) == "2015-01-01"  # retrain's


# --- the space and best.json ----------------------------------------------------------


def test_values_become_the_network_retrain_builds():
    base = {"dropout": 0.1, "l2": 1e-5, "learning_rate": 1e-3, "batch_size": 32, "lookback": 20}
    assert settings_from_values({**base, "model": "lstm", "units_0": 8}).units == [8]
    one = settings_from_values({**base, "model": "stacked_lstm", "layers": 1, "units_0": 8})
    assert (one.model, one.units) == ("lstm", [8])  # the same network, valid for retrain
    three = {"model": "bilstm", "layers": 3, "units_0": 8, "units_1": 4, "units_2": 16}
    assert settings_from_values({**base, **three}).units == [8, 4, 16]
    cnn = {"model": "cnn_lstm", "filters": 32, "layers": 1, "units_0": 8}
    assert settings_from_values({**base, **cnn}).units == [32, 8]
    assert set(one.model_dump()) == set(SEARCHED)


def test_every_point_of_the_space_is_a_valid_retrain_config(tmp_path):
    config = tiny(
        models=list(TuneConfig.leaf_field("models").default_factory()),
        layers_range=[1, 3],
        units_choices=[4, 8, 16],
        l2_range=[1e-6, 1e-2],
        max_trials=40,
        algorithm="hyperband",  # epochs 1: every trial a random draw, no GP fitting
        data_dir=str(tmp_path),
    )
    hp = search_space(config.search)
    names = {p.name for p in hp.space}
    assert {"model", "units_0", "units_1", "units_2", "layers", "filters"} <= names
    search = Search(config, tmp_path / "run")
    seen = set()
    for _ in range(40):
        proposal = search.propose("slot-0")
        settings = proposal.settings
        retrain = RetrainConfig(**best_config(config, settings)).flat()
        assert {k: retrain[k] for k in SEARCHED} == settings.model_dump()
        assert 1e-6 <= settings.l2 <= 1e-2 and 1e-4 <= settings.learning_rate <= 1e-2
        inactive = {"layers", "units_1", "units_2"} if proposal.values["model"] == "lstm" else set()
        assert not inactive & set(proposal.values)  # nothing drawn that the network ignores
        seen.add(settings.model)
        search.record(proposal.trial_id, {"val_mse": 1.0, "epochs_run": 1})
    assert seen == {"lstm", "stacked_lstm", "bilstm", "cnn_lstm", "lstm_attention"}


def test_best_json_is_a_retrain_config_the_cli_reads(tmp_path):
    from tickercast.app.cli import build_parser
    from tickercast.app.options import _collect

    config = tiny(
        source="sample",
        tickers=["MSFT"],
        start="2019-01-01",
        final_epochs=30,
        refresh=True,
        patience=4,
        data_dir=str(tmp_path),
    )
    settings = Choice(
        model="stacked_lstm",
        units=[8, 4],
        dropout=0.2,
        l2=1e-5,
        learning_rate=3e-3,
        batch_size=64,
        lookback=20,
    )
    path = tmp_path / "best.json"
    path.write_text(json.dumps(best_config(config, settings)))
    stored = json.loads(path.read_text())
    # every RetrainConfig setting by its flat name, but where runs are mirrored
    assert set(stored) == set(RetrainConfig.leaves()) - {"mlflow_uri"}
    retrain = RetrainConfig(**stored)
    assert (retrain.training.epochs, retrain.training.patience) == (30, 4)
    assert retrain.execution.refresh is False and retrain.network.units == [8, 4]
    assert str(retrain.preprocessing.start) == "2019-01-01"
    args = build_parser().parse_args(["retrain", "--config", str(path), "--epochs", "3"])
    parsed = RetrainConfig(**_collect(args, RetrainConfig))
    assert parsed == retrain.model_copy(update={"epochs": 3})


# --- where a search lives -------------------------------------------------------------


def test_a_rerun_with_a_larger_budget_is_the_same_search_a_new_space_is_not(tmp_path):
    data = [SearchData(ticker="AAA", search="/s", meta={}, content="c0ffee")]
    config = tiny(data_dir=str(tmp_path))
    first = open_run(config, tmp_path, data)
    bigger = config.model_copy(update={"max_trials": 30, "parallel_trials": 2})
    assert open_run(bigger, tmp_path, data) == first
    assert run_name(config.model_copy(update={"epochs": 2}), data) != first.name
    assert run_name(config, [data[0].model_copy(update={"content": "other"})]) != first.name
    named = config.model_copy(update={"run": first.name, "lookbacks": [5, 10]})
    with pytest.raises(ValueError, match="holds a different search: lookbacks differ"):
        open_run(named, tmp_path, data)
    same_name = config.model_copy(update={"run": first.name})
    with pytest.raises(ValueError, match="the search data"):
        open_run(same_name, tmp_path, [data[0].model_copy(update={"content": "x"})])


def test_a_trial_left_running_is_run_again_and_the_budget_counts_it(tmp_path):
    config = tiny(max_trials=3, data_dir=str(tmp_path))
    run_dir = tmp_path / "run"
    search = Search(config, run_dir)
    first = search.propose("slot-0")
    search.record(first.trial_id, {"val_mse": 0.5, "epochs_run": 1})
    killed = search.propose("slot-0")  # then the process dies: never recorded
    assert (killed.trial_id, killed.retry) == ("0001", False)

    again = Search(config, run_dir)
    resumed = again.propose("slot-0")
    assert (resumed.trial_id, resumed.retry) == ("0001", True)
    assert resumed.values == killed.values
    again.record(resumed.trial_id, {"val_mse": 0.25, "epochs_run": 1})
    third = again.propose("slot-0")
    assert third.trial_id == "0002"
    again.record(third.trial_id, {"val_mse": 0.75, "epochs_run": 1})
    assert again.propose("slot-0") == "budget"
    assert again.best().trial_id == "0001"
    rows = Search(config, run_dir).rows()
    assert [r["status"] for r in rows] == ["completed"] * 3
    assert [r["best"] for r in rows] == [False, True, False]


def test_a_failed_trial_is_retried_once_a_divergence_never(tmp_path):
    from tickercast.modeling.train import TrainingDivergedError

    search = Search(tiny(max_trials=5, data_dir=str(tmp_path)), tmp_path / "run")
    flaky = search.propose("slot-0")
    search.fail(flaky.trial_id, OSError("worker lost"))
    retried = search.propose("slot-0")
    assert (retried.trial_id, retried.retry) == (flaky.trial_id, True)
    search.record(retried.trial_id, {"val_mse": 0.5, "epochs_run": 1})
    bad = search.propose("slot-0")
    search.fail(bad.trial_id, TrainingDivergedError("loss became NaN"))
    assert search.propose("slot-0").trial_id == "0002"  # no retry of a divergence
    rows = {r["trial"]: r for r in search.rows()}
    assert rows["0001"]["status"] == "failed" and "NaN" in rows["0001"]["message"]


def test_no_trial_starts_after_the_time_budget(tmp_path):
    search = Search(tiny(max_trials=9, max_minutes=1e-6, data_dir=str(tmp_path)), tmp_path / "r")
    time.sleep(0.01)  # 60 microseconds
    assert search.propose("slot-0") == "budget"
    assert search.stop_reason == "time budget of 1e-06 minutes reached"
    assert not search.oracle.trials


def test_three_failures_in_a_row_stop_the_search_with_the_reason(tmp_path):
    from tickercast.modeling.train import TrainingDivergedError

    search = Search(tiny(max_trials=9, data_dir=str(tmp_path)), tmp_path / "run")
    with pytest.raises(RuntimeError, match="3 trials in a row failed; the last: Training"):
        for _ in range(3):
            proposal = search.propose("slot-0")
            search.fail(proposal.trial_id, TrainingDivergedError("diverged"))


# --- search data ----------------------------------------------------------------------


def test_search_data_holds_no_test_value_and_retrains_rows_up_to_it():
    from tickercast.modeling.preprocess import preprocess, split_sizes

    prices = walk()
    cfg = section(lookback=20)
    arrays, meta = search_data(prices, cfg, "AAA")
    spec, full = preprocess(prices, cfg, "AAA")
    rows, horizon = spec.n_train + spec.n_val, spec.horizon
    assert meta["rows"] == rows == len(arrays["x"]) == len(arrays["y"])
    np.testing.assert_array_equal(arrays["x"], full["x"][:rows])  # what retrain trains on
    np.testing.assert_array_equal(arrays["y"][: rows - horizon], full["y"][: rows - horizon])
    assert np.isnan(arrays["y"][rows - horizon :]).all()  # these targets need a test day

    poisoned = prices.copy()
    test_rows = split_sizes(len(prices), 0.15, 0.15)
    first_test = test_rows.n_train + test_rows.n_val
    for col in ("open", "high", "low", "close", "adj_close"):
        poisoned.loc[first_test:, col] *= 3.0
    poisoned.loc[first_test:, "volume"] = 10**9
    arrays2, meta2 = search_data(poisoned, cfg, "AAA")
    assert content_hash(arrays2, meta2) == content_hash(arrays, meta)
    _, full2 = preprocess(poisoned, cfg, "AAA")
    assert not np.array_equal(full2["y"][:rows], full["y"][:rows], equal_nan=True)


def test_search_anchors_are_retrains_and_a_window_past_validation_trips(tmp_path):
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.windows import split_anchors

    cfg = section(lookback=20)
    arrays, meta = search_data(walk(), cfg, "AAA")
    spec, full = preprocess(walk(), cfg, "AAA")
    n = spec.n_train + spec.n_val + spec.n_test
    expected = split_anchors(n, spec.n_train, spec.n_val, 10, spec.horizon)
    got = search_anchors(meta, 10, arrays["y"])
    for split in ("train", "val"):
        np.testing.assert_array_equal(got[split], expected[split])
    with pytest.raises(RuntimeError, match="val window reaches past the validation split"):
        search_anchors({**meta, "n_val": meta["n_val"] + 3}, 10, arrays["y"])


# --- one trial ------------------------------------------------------------------------


def searched(tmp_path, ticker: str, prices: pd.DataFrame) -> SearchData:
    arrays, meta = search_data(prices, section(lookback=20), ticker)
    path = save_search_data(tmp_path / ticker, arrays, meta)
    return SearchData(
        ticker=ticker, search=str(path), meta=meta, content=content_hash(arrays, meta)
    )


def prepared(tmp_path):
    return [searched(tmp_path, "AAA", walk())]


def trial_settings(**changes) -> TrialSettings:
    return TrialSettings(**{**TRAIN, **changes})


SETTINGS = {
    "model": "lstm",
    "units": [4],
    "dropout": 0.0,
    "l2": 1e-4,
    "learning_rate": 1e-2,
    "batch_size": 64,
    "lookback": 10,
}


def test_a_trial_trains_what_retrain_trains_and_is_not_trained_twice(tmp_path):
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.train import train_model
    from tickercast.modeling.windows import split_anchors

    data = prepared(tmp_path)
    spec = {"trial_id": "0000", "settings": SETTINGS, "epochs": 2, "resume_from": None}
    result = run_trial(spec, data, trial_settings(), tmp_path / "trial")
    assert not result["reused"] and result["epochs_run"] == 2
    assert result["val_mse"] > 0 and result["val_loss"] > result["val_mse"]  # + L2 penalty

    pre, full = preprocess(walk(), section(lookback=10), "AAA")
    n = pre.n_train + pre.n_val + pre.n_test
    anchors = split_anchors(n, pre.n_train, pre.n_val, 10, pre.horizon)
    cfg = {**TRAIN, **{k: v for k, v in SETTINGS.items() if k != "lookback"}, "epochs": 2}
    del cfg["mode"], cfg["ticker_embedding"]  # the scope: a per-ticker model
    # retrain seeds a fit by its ticker (the label), as the trial does
    retrain = train_model(full, anchors, 10, FitSpec(**cfg), tmp_path / "retrain", label="AAA")
    np.testing.assert_allclose(
        result["history"]["AAA"]["val_loss"], retrain["history"]["val_loss"], rtol=1e-6
    )
    again = run_trial(spec, data, trial_settings(), tmp_path / "trial")
    assert again["reused"] and again["val_mse"] == result["val_mse"]


def test_hyperband_continuation_ends_where_training_from_scratch_ends(tmp_path):
    data = prepared(tmp_path)

    def trial(trial_id: str, epochs: int, resume_from=None) -> dict:
        spec = {
            "trial_id": trial_id,
            "settings": SETTINGS,
            "epochs": epochs,
            "resume_from": resume_from,
        }
        return run_trial(spec, data, trial_settings(), tmp_path / trial_id, keep_checkpoints=True)

    trial("first", 1)
    continued = trial("next", 3, resume_from=str(tmp_path / "first"))
    scratch = trial("scratch", 3)
    assert continued["parts"]["AAA"]["resumed_from_epoch"] == 1
    assert scratch["parts"]["AAA"]["resumed_from_epoch"] is None
    np.testing.assert_allclose(
        continued["history"]["AAA"]["val_loss"], scratch["history"]["AAA"]["val_loss"], rtol=1e-6
    )
    assert continued["val_mse"] == pytest.approx(scratch["val_mse"], rel=1e-6)


@pytest.mark.parametrize("mode", ["per_ticker", "global"])
def test_several_tickers_score_the_mean_or_one_global_model(tmp_path, mode):
    data = [
        searched(tmp_path, ticker, walk(240 + 20 * seed, seed))
        for seed, ticker in enumerate(["AAA", "BBB"])
    ]
    settings = trial_settings(mode=mode, ticker_embedding=2 if mode == "global" else 0)
    spec = {"trial_id": "0000", "settings": SETTINGS, "epochs": 1, "resume_from": None}
    result = run_trial(spec, data, settings, tmp_path / "trial")
    parts = result["parts"]
    if mode == "global":
        assert list(parts) == ["global"]
        assert parts["global"]["train_windows"] > parts["global"]["val_windows"] > 0
    else:
        assert list(parts) == ["AAA", "BBB"]
        mean = np.mean([parts[t]["val_mse"] for t in ("AAA", "BBB")])
        assert result["val_mse"] == pytest.approx(mean)
    assert np.isfinite(result["val_mse"])
