"""Walk-forward: fold construction, no look-ahead (proved two ways), and a real tiny run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import random_walk
from tickercast.backtest.walkforward import summarize, walk_forward, write_backtest
from tickercast.evaluation.baselines import flat_paths, naive_forecast
from tickercast.evaluation.evaluate import target_weights
from tickercast.folds import WalkForwardError, expanding_folds
from tickercast.sections import FitSpec, PreprocessSettings, WalkForward

PRE_CFG = {
    "start": None,
    "end": None,
    "features": ["close", "volume"],
    "lookback": 20,
    "horizon": 5,
    "target": "mean_close",
    "val_fraction": 0.15,
    "test_fraction": 0.15,
}


def test_folds_are_consecutive_blocks_ending_at_the_last_row():
    folds = expanding_folds(1000, 3, 150, 0.15, lookback=20, horizon=5)
    assert [(f.test_start, f.test_end) for f in folds] == [(550, 700), (700, 850), (850, 1000)]
    for f in folds:
        assert f.val_rows == round(f.test_end * 0.15)
        assert f.train_rows == f.test_start - f.val_rows > 0


def test_too_many_folds_refused_saying_how_many_fit():
    with pytest.raises(WalkForwardError, match=r"fits at most 5 fold\(s\)"):
        expanding_folds(1000, 6, 150, 0.15, lookback=60, horizon=5)
    with pytest.raises(WalkForwardError, match="at least 1 fold"):
        expanding_folds(1000, 0, 150, 0.15, lookback=60, horizon=5)


class Recorder:
    """A `fit` that records what each fold trains on and forecasts naive (no Keras)."""

    def __init__(self):
        self.seen = []

    def __call__(self, seen, anchors, spec, cfg, out_dir, logger):
        self.seen.append({"arrays": seen, "anchors": anchors, "spec": spec, "cfg": cfg})
        weights = target_weights(spec.target, spec.horizon, 1)

        def forecast(arrays, a):
            return flat_paths(naive_forecast(arrays["close"], a), spec.horizon) @ weights.T

        return forecast, {"epochs_run": 0}


def run(prices, tmp_path, folds=3, band="volatility_conformal"):
    recorder = Recorder()
    result = walk_forward(
        prices,
        PreprocessSettings(**PRE_CFG),
        FitSpec(seed=1),
        WalkForward(walk_forward_folds=folds, walk_forward_epochs=2),
        tmp_path,
        fit=recorder,
        band=band,
    )
    return result, recorder


@pytest.mark.parametrize(
    ("epochs", "fold_epochs", "expected"), [(3, None, 3), (50, None, 10), (3, 7, 7)]
)
def test_epochs_caps_the_folds_unless_they_have_their_own(tmp_path, epochs, fold_epochs, expected):
    """One maximum-epochs concept: --epochs caps the folds too (at most 10 by default);
    --walk-forward-epochs, when given, is the folds' own."""
    recorder = Recorder()
    result = walk_forward(
        random_walk(),
        PreprocessSettings(**PRE_CFG),
        FitSpec(seed=1, epochs=epochs),
        WalkForward(walk_forward_folds=2, walk_forward_epochs=fold_epochs),
        tmp_path,
        fit=recorder,
    )
    assert result["epochs_per_fold"] == expected
    assert {seen["cfg"].training.epochs for seen in recorder.seen} == {expected}


def test_no_fold_trains_on_data_dated_at_or_after_its_test_window(tmp_path):
    prices = random_walk()
    result, recorder = run(prices, tmp_path)
    assert len(recorder.seen) == result["n_folds"] == 3
    for fold, seen in zip(result["folds"], recorder.seen, strict=True):
        test_start = np.datetime64(fold["test_first_target"])
        arrays, anchors, h = seen["arrays"], seen["anchors"], seen["spec"].horizon
        # every row handed to training is dated before the test window...
        assert arrays["dates"].max() < test_start
        assert len(arrays["x"]) == len(arrays["dates"]) == fold["test_start"]
        # ...every target it can read ends before it, and no test window is handed over
        finite = np.flatnonzero(np.isfinite(arrays["y"][:, 0]))
        assert (arrays["dates"][finite + h] < test_start).all()
        assert len(anchors["test"]) == 0
        used = np.concatenate([anchors["train"], anchors["val"]])
        assert np.isfinite(arrays["y"][used]).all()
        assert arrays["dates"][used.max() + h] < test_start
        # the fold's scalers were fitted on its own training rows only
        train_close = arrays["close"][: seen["spec"].n_train]
        assert seen["spec"].target_scaler.max == [train_close.max()]
        assert seen["cfg"].training.epochs == 2


def test_changing_the_future_changes_nothing_a_fold_trains_on(tmp_path):
    """Poison every price dated on or after fold k's test window: what fold k trains on,
    scalers included, stays bit-identical, while its test scores do change."""
    prices = random_walk()
    clean, clean_rec = run(prices, tmp_path / "clean")
    for k, fold in enumerate(clean["folds"]):
        poisoned = prices.copy()
        future = pd.to_datetime(poisoned["date"]) >= pd.Timestamp(fold["test_first_target"])
        for col in ("open", "high", "low", "close", "adj_close"):
            poisoned.loc[future, col] *= 3.0
        poisoned.loc[future, "volume"] *= 7
        dirty, dirty_rec = run(poisoned, tmp_path / f"dirty-{k}")
        a, b = clean_rec.seen[k], dirty_rec.seen[k]
        assert a["arrays"].keys() == b["arrays"].keys()
        for key in a["arrays"]:
            np.testing.assert_array_equal(a["arrays"][key], b["arrays"][key], err_msg=key)
        for key in ("train", "val"):
            np.testing.assert_array_equal(a["anchors"][key], b["anchors"][key])
        assert a["spec"].feature_scaler == b["spec"].feature_scaler
        assert a["spec"].target_scaler == b["spec"].target_scaler
        assert dirty["folds"][k]["metrics"]["naive"] != fold["metrics"]["naive"]


def test_summary_is_mean_and_std_over_folds():
    folds = [
        {"metrics": {"model": {"rmse": 1.0, "skill": None}}, "intervals": {}},
        {"metrics": {"model": {"rmse": 3.0, "skill": 0.5}}, "intervals": {}},
    ]
    s = summarize(folds)["metrics"]["model"]
    assert s["rmse"] == {"mean": 2.0, "std": pytest.approx(np.sqrt(2.0)), "folds": 2}
    assert s["skill"] == {"mean": 0.5, "std": 0.0, "folds": 1}


def test_real_walk_forward_on_the_sample(tmp_path):
    """Two folds of a tiny LSTM on MSFT: every metric of every forecaster gets mean ± std,
    and the last fold's test window is the retrain's own test split."""
    from tickercast.config import RetrainConfig
    from tickercast.evaluation.names import FORECASTERS
    from tickercast.market.sources import load_sample
    from tickercast.modeling.preprocess import preprocess

    prices = load_sample("MSFT").prices
    config = RetrainConfig(
        tickers=["MSFT"], start="2019-01-01", lookback=20, units=[8, 4], batch_size=64
    )
    pre_cfg = config.preprocessing
    walk = WalkForward(walk_forward_folds=2, walk_forward_epochs=1)
    result = walk_forward(prices, pre_cfg, config.fit_spec(), walk, tmp_path, who="MSFT")
    assert [f["fold"] for f in result["folds"]] == [1, 2]
    first, last = result["folds"]
    assert first["test_last_target"] < last["test_first_target"]
    spec, _ = preprocess(prices, pre_cfg, who="MSFT")
    assert last["val_end"] == spec.val_end and last["test_last_target"] == spec.last_day
    assert first["train_end"] < last["train_end"]
    summary = result["summary"]["metrics"]
    assert set(summary) == set(FORECASTERS)
    for name in FORECASTERS:
        for metric in ("rmse", "mae", "mape", "smape", "mase", "directional_accuracy", "skill"):
            cell = summary[name][metric]
            if metric == "directional_accuracy" and (name == "naive" or cell["folds"] < 2):
                # no direction called: naive never, a network shrunk to the last close
                # (alpha 0) in that fold neither; n/a, not 0%
                assert name in ("naive", "model") and cell["folds"] < 2
                assert name != "naive" or cell == {"mean": None, "std": 0.0, "folds": 0}
                continue
            assert cell["folds"] == 2 and cell["mean"] is not None and cell["std"] >= 0
    assert set(result["summary"]["coverage"]) == {"80", "95"}
    assert all(f["training"]["epochs_run"] == 1 for f in result["folds"])
    paths = write_backtest(tmp_path / "out", result, "MSFT")
    saved = json.loads(paths["backtest_json"].read_text())
    assert saved["n_folds"] == 2 and "table" not in saved
    assert set(pd.read_parquet(paths["predictions"])["fold"]) == {1, 2}
    assert paths["folds_png"].read_bytes()[:4] == b"\x89PNG"


def test_the_walk_forward_pools_the_distribution_over_folds(tmp_path):
    """Every fold judges the model's band against the distribution baselines; the summary
    tests the per-origin CRPS differences of all folds pooled."""
    result, _ = run(random_walk(), tmp_path)
    for fold in result["folds"]:
        assert "garch_t" in fold["distribution"]["metrics"]
    pooled = result["summary"]["distribution"]
    assert set(pooled) == {
        "volatility_conformal",
        "ewma",
        "garch_t",
        "gjr_garch_t",
        "unconditional",
    }
    # without a quantile head the model's band is the volatility-scaled one: the same
    assert pooled["volatility_conformal"]["verdict"] == "indistinguishable"
    assert pooled["garch_t"]["verdict_text"].split(" (")[0] in (
        "indistinguishable from GARCH(1,1)-t",
        "worse than GARCH(1,1)-t",
        "better than GARCH(1,1)-t by CRPS",
    )


def test_each_fold_ships_the_configured_band(tmp_path):
    """With the default band each fold's model band is GJR-GARCH(1,1)-t fit on that fold's
    training rows, and its 80%/95% intervals are that band's."""
    result, _ = run(random_walk(), tmp_path, folds=2, band="gjr_garch_t")
    for fold in result["folds"]:
        model = fold["distribution"]["model"]
        assert model["form"] == "gjr_garch_t" and "params" in model["calibration"]
        assert fold["intervals"]["80"]["scale"] == "gjr_garch_t"


def test_a_quantile_head_is_judged_in_every_fold(tmp_path):
    """A fold's forecaster with a `quantiles` attribute is the model's band there."""
    from tickercast.choices import QUANTILES

    class Head(Recorder):
        def __call__(self, *args):
            forecast, info = super().__call__(*args)

            def quantiles(arrays, a):
                m = forecast(arrays, a)[..., None]
                return m * np.exp(0.01 * (np.asarray(QUANTILES) - 0.5))

            forecast.quantiles = quantiles
            return forecast, info

    result = walk_forward(
        random_walk(),
        PreprocessSettings(**PRE_CFG),
        FitSpec(seed=1),
        WalkForward(walk_forward_folds=2, walk_forward_epochs=1),
        tmp_path,
        fit=Head(),
    )
    for fold in result["folds"]:
        assert fold["distribution"]["model"] == {"form": "network"}
