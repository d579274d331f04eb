import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import random_walk
from tickercast.modeling.features import build_features
from tickercast.modeling.preprocess import (
    TARGETS,
    InsufficientHistoryError,
    make_targets,
    output_width,
    preprocess,
    target_prices,
    to_prices,
)
from tickercast.modeling.windows import split_anchors
from tickercast.sections import PreprocessSettings

CFG = {
    "start": None,
    "end": None,
    "features": ["close", "volume"],
    "lookback": 10,
    "horizon": 5,
    "target": "mean_close",
    "val_fraction": 0.15,
    "test_fraction": 0.15,
}
PRE = PreprocessSettings(**CFG)


def prices(n=300, seed=0):
    return random_walk(n, seed, sigma=0.01, start="2018-01-01")


def test_split_is_chronological_70_15_15():
    spec, arrays = preprocess(prices(), PRE, "ticker T")
    assert (spec.n_train, spec.n_val, spec.n_test) == (210, 45, 45)
    days = arrays["dates"]
    assert (np.diff(days.astype(int)) > 0).all()
    assert spec.train_end < spec.val_end < spec.last_day


def test_scaler_sees_training_rows_only():
    base = prices()
    spec, _ = preprocess(base, PRE, "T")
    changed = base.copy()
    later = changed.index >= spec.n_train
    changed.loc[later, ["open", "high", "low", "close", "adj_close"]] *= 10
    changed.loc[later, "volume"] *= 10
    spec2, arrays2 = preprocess(changed, PRE, "T")
    assert spec2.feature_scaler == spec.feature_scaler
    assert spec2.target_scaler == spec.target_scaler
    # and the scaler is exactly the min/max of the training rows
    train = base.iloc[: spec.n_train]
    assert spec.feature_scaler.min == [train["close"].min(), float(train["volume"].min())]
    assert spec.feature_scaler.max == [train["close"].max(), float(train["volume"].max())]
    assert arrays2["x"][spec.n_train :].max() > 1.5  # test rows scaled with train's range


def test_no_training_target_reaches_validation_or_test():
    spec, arrays = preprocess(prices(), PRE, "T")
    n = spec.n_train + spec.n_val + spec.n_test
    anchors = split_anchors(n, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    h = spec.horizon
    assert anchors["train"].max() + h <= spec.n_train - 1
    assert anchors["val"].min() + 1 >= spec.n_train
    assert anchors["val"].max() + h <= spec.n_train + spec.n_val - 1
    assert anchors["test"].min() + 1 >= spec.n_train + spec.n_val
    assert anchors["test"].max() + h == n - 1
    assert anchors["train"].min() == spec.lookback - 1
    # the train target of the last train window is made of train closes only
    t = anchors["train"].max()
    np.testing.assert_allclose(arrays["y_price"][t, 0], arrays["close"][t + 1 : t + h + 1].mean())


def test_targets_mean_close_and_close():
    close = np.arange(1.0, 11.0)
    mean = make_targets(close, 3, "mean_close")[:, 0]
    np.testing.assert_allclose(mean[:7], [3, 4, 5, 6, 7, 8, 9])
    assert np.isnan(mean[7:]).all()
    np.testing.assert_allclose(make_targets(close, 3, "close")[:7, 0], close[3:])


def test_features_only_use_the_past():
    p = prices(80)
    full = build_features(p, ["close", "return", "log_return", "volatility", "log_volume"])
    cut = build_features(p.iloc[:60], ["close", "return", "log_return", "volatility", "log_volume"])
    pd.testing.assert_frame_equal(full.iloc[: len(cut)], cut)


def test_unknown_feature_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: .*'log_volume'"):
        build_features(prices(30), ["close", "sentiment"])


def test_short_history_says_how_many_rows_are_needed():
    cfg = PreprocessSettings(**dict(CFG, lookback=60))
    with pytest.raises(InsufficientHistoryError) as err:
        preprocess(prices(70), cfg, "ticker T")
    message = str(err.value)
    assert "ticker T" in message and "there are 70" in message
    needed = int(message.split("at least ")[1].split()[0])
    preprocess(prices(needed), cfg, "ticker T")  # exactly enough works
    with pytest.raises(InsufficientHistoryError):
        preprocess(prices(needed - 1), cfg, "ticker T")


def test_date_filter_is_inclusive():
    cfg = PreprocessSettings(**dict(CFG, start="2018-02-01", end="2018-12-31"))
    spec, arrays = preprocess(prices(400), cfg, "T")
    assert str(arrays["dates"][0]) == "2018-02-01" and spec.last_day == "2018-12-31"
    assert dt.date.fromisoformat(spec.first_day) >= dt.date(2018, 2, 1)


def test_multi_step_and_log_return_targets_by_hand():
    close = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    np.testing.assert_allclose(target_prices(close, 2, "closes")[:3], [[2, 4], [4, 8], [8, 16]])
    assert np.isnan(target_prices(close, 2, "closes")[3:]).all()
    np.testing.assert_allclose(make_targets(close, 2, "close_log_return")[:3, 0], np.log(4.0))
    np.testing.assert_allclose(make_targets(close, 2, "mean_close_log_return")[:3, 0], np.log(3.0))
    np.testing.assert_allclose(
        make_targets(close, 2, "closes_log_return")[:3], np.log([[2.0, 4.0]] * 3)
    )
    assert output_width("closes", 7) == 7 and output_width("close_log_return", 7) == 1


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_maps_back_to_prices(target):
    """The model-space target of every test window, mapped back, is the price target."""
    cfg = PreprocessSettings(**dict(CFG, target=target))
    spec, arrays = preprocess(prices(), cfg, "T")
    n = spec.n_train + spec.n_val + spec.n_test
    test = split_anchors(n, spec.n_train, spec.n_val, spec.lookback, spec.horizon)["test"]
    assert arrays["y"].shape == (n, output_width(target, spec.horizon))
    got = to_prices(spec, arrays["y"][test], arrays["close"][test])
    np.testing.assert_allclose(got, arrays["y_price"][test], rtol=1e-5)
    # and the price target is what its name says
    close, h = arrays["close"], spec.horizon
    t = test[0]
    expected = {
        "mean_close": [close[t + 1 : t + h + 1].mean()],
        "close": [close[t + h]],
        "closes": close[t + 1 : t + h + 1],
    }[target.removesuffix("_log_return")]
    np.testing.assert_allclose(arrays["y_price"][t], expected)


def test_log_return_targets_need_the_last_close_and_scale_on_train_only():
    spec, arrays = preprocess(
        prices(), PreprocessSettings(**dict(CFG, target="close_log_return")), "T"
    )
    with pytest.raises(ValueError, match="last_close"):
        to_prices(spec, arrays["y"][:3])
    train_targets = make_targets(arrays["close"], 5, "close_log_return")[: spec.n_train - 5]
    # scaled by the largest training move, never shifted: no change is exactly 0
    assert spec.target_scaler.min == [0.0]
    assert spec.target_scaler.max == [abs(train_targets).max()]
    assert spec.target_scaler.transform(np.zeros((1, 1)))[0, 0] == 0.0


def test_config_feature_names_match_the_builders():
    from tickercast.choices import FEATURES
    from tickercast.modeling.features import _BUILDERS

    assert set(FEATURES) == set(_BUILDERS)
    frame = build_features(prices(60), list(FEATURES))
    assert list(frame.columns[1:-1]) == list(FEATURES) and not frame.isna().any().any()
