"""Forecasts worth serving: the scale-free recommended default, shrinkage toward naive,
verdicts decided by a Diebold-Mariano test, one calendar in global mode, textbook MASE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import price_frame, random_walk
from tickercast.config import BacktestConfig, RetrainConfig
from tickercast.modeling.preprocess import MinMax
from tickercast.modeling.shrink import apply_alpha, fit_alpha, naive_output


def test_recommended_is_the_default_and_the_tutorial_one_option_away():
    default = RetrainConfig().flat()
    assert default["preset"] == "recommended"
    assert default["features"] == ["log_return", "volatility"]
    assert default["target"] == "mean_close_log_return" and default["shrink"] is True
    tutorial = RetrainConfig(preset="tutorial").flat()
    assert tutorial["features"] == ["close", "volume"]
    assert tutorial["target"] == "mean_close" and tutorial["shrink"] is False
    # everything else is the tutorial's too: lookback 60, horizon 5, LSTM(64) -> LSTM(32)
    same = {"lookback": 60, "horizon": 5, "units": [64, 32], "model": "stacked_lstm"}
    assert {k: tutorial[k] for k in same} == same
    # an explicit option wins over the preset
    assert RetrainConfig(preset="tutorial", target="close").preprocessing.target == "close"
    assert BacktestConfig(preset="tutorial").preprocessing.features == ["close", "volume"]
    assert BacktestConfig().preprocessing.features == ["log_return", "volatility"]


def test_alpha_follows_the_validation_evidence():
    rng = np.random.default_rng(0)
    actual = rng.normal(0.5, 0.1, (400, 1))
    y0 = np.array([0.5])
    noise = rng.normal(0.5, 0.1, (400, 1))  # no information about `actual`
    blind = fit_alpha(actual, noise, y0)
    assert blind["alpha_least_squares"] < 0.2  # a little by chance, and no test behind it:
    assert blind["alpha"] == 0.0 and blind["dm_p_vs_naive"] > 0.05  # exactly naive
    assert fit_alpha(actual, actual, y0)["alpha"] == pytest.approx(1.0)
    assert fit_alpha(actual, 1.0 - actual, y0)["alpha"] == 0.0  # anti-correlated: naive
    half = fit_alpha(actual, y0 + 2 * (actual - y0), y0)  # right direction, twice too big
    assert half["alpha"] == pytest.approx(0.5)
    assert half["val_mse_shrunk"] <= min(half["val_mse_naive"], half["val_mse_network"])


def test_shrinkage_is_folded_into_the_saved_network(tmp_path):
    import keras

    inputs = keras.Input(shape=(3, 2))
    out = keras.layers.Dense(1, name="forecast")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, out)
    x = np.random.default_rng(1).normal(size=(16, 3, 2)).astype("float32")
    before = model.predict(x, verbose=0)
    y0 = np.array([0.3])
    apply_alpha(model, 0.25, y0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    expected = y0 + 0.25 * (before - y0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_naive_output_is_a_zero_log_return_in_scaled_units():
    scaler = MinMax([-0.1], [0.3])
    spec = type(
        "Spec", (), {"target": "mean_close_log_return", "target_scaler": scaler, "horizon": 5}
    )
    naive = naive_output(spec)
    assert naive.output == pytest.approx([0.25]) and naive.horizon == 5
    price = type("Spec", (), {"target": "mean_close", "target_scaler": scaler, "horizon": 5})
    assert naive_output(price) is None


def _fit_and_verdict(prices: pd.DataFrame, tmp_path, **overrides) -> tuple[str, dict]:
    """The default configuration end to end through the library (what a retrain runs)."""
    import keras

    from tickercast.evaluation.evaluate import evaluate
    from tickercast.evaluation.report import verdict
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.train import train_model
    from tickercast.modeling.windows import split_anchors

    config = RetrainConfig(start=None, epochs=8, patience=4, **overrides)
    spec, arrays = preprocess(prices, config.preprocessing, who="test")
    n = spec.n_rows
    anchors = split_anchors(n, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    summary = train_model(
        arrays,
        anchors,
        spec.lookback,
        config.fit_spec(),
        tmp_path,
        naive=naive_output(spec),
    )
    model = keras.models.load_model(tmp_path / "model.keras", compile=False)
    ev = evaluate(model, spec, arrays, anchors)
    return verdict(ev["metrics"]), {**ev["metrics"], "shrinkage": summary["shrinkage"]}


@pytest.mark.slow
def test_random_walk_comes_out_indistinguishable_from_naive(tmp_path):
    text, m = _fit_and_verdict(random_walk(1500, seed=3), tmp_path)
    assert "indistinguishable from the naive" in text, text
    assert m["model"]["rmse"] <= m["naive"]["rmse"] * 1.01  # never clearly worse
    assert m["shrinkage"]["alpha"] == 0.0  # no demonstrated skill: exactly the last close


@pytest.mark.slow
def test_a_series_with_signal_comes_out_beating_naive(tmp_path):
    t = np.arange(0, 20 * np.pi, 0.1)
    text, m = _fit_and_verdict(price_frame(np.sin(t) + 2, start="2000-01-03"), tmp_path)
    assert text.startswith("The model beats the naive"), text
    assert m["naive"]["dm_p"] < 0.05 and m["naive"]["dm_verdict"] == "better"
    assert m["shrinkage"]["alpha"] > 0.5


def test_global_mode_splits_every_ticker_at_the_same_dates():
    from tickercast.layout import sample_dir
    from tickercast.modeling.preprocess import preprocess, shared_split_dates

    frames = {t: pd.read_parquet(sample_dir() / f"{t}.parquet") for t in ("AAPL", "GOOG", "NVDA")}
    section = RetrainConfig(start=None).preprocessing
    dates = shared_split_dates(list(frames.values()), section)
    specs = {t: preprocess(f, section, who=t, split=dates)[0] for t, f in frames.items()}
    train_ends = {s.train_end for s in specs.values()}
    val_ends = {s.val_end for s in specs.values()}
    assert max(train_ends) <= dates.train_end and max(val_ends) <= dates.val_end
    # every ticker's test rows start after every ticker's validation rows end
    for ticker, spec in specs.items():
        rows = spec.n_rows
        first_test = pd.read_parquet(sample_dir() / f"{ticker}.parquet")["date"].astype(str)
        assert spec.n_test > 0 and rows > 0
        assert sorted(first_test)[-spec.n_test] > max(val_ends)


def test_rolling_mase_is_the_textbooks_by_default():
    """FPP3 5.10: one-step drift on Google's 2015 closes, stretching from 3 days: RMSE 11.3,
    MAE 7.26, MAPE 1.19, MASE 1.02 (fable's scale: the series' one-step naive MAE)."""
    from tickercast.backtest.rolling import rolling_backtest
    from tickercast.layout import sample_dir

    prices = pd.read_parquet(sample_dir() / "GOOG.parquet")
    cfg = BacktestConfig(
        tickers=["GOOG"],
        model=["drift"],
        start="2015-01-01",
        end="2015-12-31",
        features=["close"],
        lookback=2,
        horizon=1,
        target="close",
        initial=3,
        step=1,
        refit_every=1,
    ).rolling_spec()
    by = {r["model"]: r for r in rolling_backtest(prices, cfg, None)["metrics"]}
    drift = by["drift"]
    assert (round(drift["rmse"], 1), round(drift["mae"], 2), round(drift["mape"], 2)) == (
        11.3,
        7.27,
        1.2,
    )
    assert round(drift["mase"], 2) == 1.02
    origin = {
        r["model"]: r
        for r in rolling_backtest(prices, cfg.model_copy(update={"mase_scale": "origin"}), None)[
            "metrics"
        ]
    }
    assert origin["drift"]["mase"] == pytest.approx(1.166, abs=0.001)
    # one-step drift is no better than naive by a test: lagging, with its p-value
    assert drift["p"] is not None and drift["p"] > 0.05 and drift["lagging"] is True
