"""Metrics against hand-computed values, baselines on series whose answer is known,
split-conformal coverage on synthetic data, and the plain verdict."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickercast.choices import BASELINES, INPUTS_BASELINES
from tickercast.evaluation.baselines import (
    RIDGE_ALPHAS,
    moving_average_forecast,
    naive_forecast,
    rolling_drift,
)
from tickercast.evaluation.conformal import (
    calibrate,
    conformal_quantile,
    conformal_scores,
    coverage,
    interval,
)
from tickercast.evaluation.evaluate import check_targets, evaluate_forecasts, target_weights
from tickercast.evaluation.metrics import (
    directional_accuracy,
    mae,
    mape,
    mase,
    metrics,
    naive_scale,
    rmse,
    score_all,
    skill,
    smape,
)
from tickercast.evaluation.report import verdict
from tickercast.modeling.preprocess import preprocess
from tickercast.modeling.windows import split_anchors
from tickercast.sections import PreprocessSettings


def test_metrics_by_hand():
    actual = np.array([100.0, 200.0, 50.0])
    predicted = np.array([110.0, 190.0, 50.0])
    last = np.array([105.0, 195.0, 55.0])
    assert rmse(actual, predicted) == pytest.approx(math.sqrt(200 / 3))
    assert mae(actual, predicted) == pytest.approx(20 / 3)
    assert mape(actual, predicted) == pytest.approx((10 + 5 + 0) / 3)
    assert smape(actual, predicted) == pytest.approx((20 / 210 + 20 / 390 + 0) / 3 * 100)
    # in-sample one-step naive MAE of [1, 3, 2, 6]: (2 + 1 + 4) / 3
    assert naive_scale([1.0, 3.0, 2.0, 6.0]) == pytest.approx(7 / 3)
    assert mase(actual, predicted, 7 / 3) == pytest.approx((20 / 3) / (7 / 3))
    # predicted changes +5 -5 -5, actual changes -5 +5 -5: only the last agrees
    assert directional_accuracy(actual, predicted, last) == pytest.approx(100 / 3)
    assert skill(1.0, 4.0) == pytest.approx(0.75) and skill(4.0, 4.0) == 0.0
    assert skill(6.0, 4.0) == pytest.approx(-0.5)
    m = metrics(actual, predicted, last_close=last, scale=7 / 3)
    assert set(m) == {"rmse", "mae", "mape", "smape", "mase", "directional_accuracy"}
    assert metrics(actual, actual) == {"rmse": 0.0, "mae": 0.0, "mape": 0.0, "smape": 0.0}


def test_smape_zero_over_zero_counts_as_zero_and_shapes_must_match():
    assert smape([0.0, 100.0], [0.0, 100.0]) == 0.0
    assert smape([100.0], [300.0]) == pytest.approx(100.0)  # 2*200 / 400
    with pytest.raises(ValueError, match="actual has 2 values, predicted 3"):
        rmse([1.0, 2.0], [1.0, 2.0, 3.0])


def test_skill_is_reported_against_naive_for_every_forecaster():
    actual = np.array([[10.0], [12.0]])
    forecasts = {"naive": np.array([[8.0], [10.0]]), "model": np.array([[9.0], [11.0]])}
    out = score_all(actual, forecasts, last_close=np.array([8.0, 10.0]), scale=2.0)
    assert out["naive"]["skill"] == 0.0
    assert out["model"]["skill"] == pytest.approx(0.5)  # RMSE 1 vs 2
    assert out["model"]["mase"] == pytest.approx(0.5) and out["naive"]["mase"] == 1.0
    assert out["model"]["directional_accuracy"] == 100.0
    assert out["naive"]["directional_accuracy"] is None  # "no change" calls no direction


def test_a_forecast_equal_to_the_last_close_calls_no_direction():
    """Not a wrong call: left out of the share, and n/a when no window calls one."""
    last = np.array([10.0, 10.0, 10.0, 10.0])
    actual = np.array([11.0, 9.0, 12.0, 8.0])
    assert directional_accuracy(actual, last, last) is None
    # calls on windows 0 (up, right) and 3 (up, wrong); windows 1-2 equal the last close
    assert directional_accuracy(actual, [11.0, 10.0, 10.0, 10.5], last) == 50.0
    # equal up to rounding (a zero move mapped back to prices) is no call either
    assert directional_accuracy(actual, last * (1 + 1e-15), last) is None
    # a call against an actual that did not move is wrong
    assert directional_accuracy(last, last + 1.0, last) == 0.0


def test_baselines_on_a_known_series():
    close = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    anchors = np.array([2, 3, 5])
    np.testing.assert_array_equal(naive_forecast(close, anchors), [3.0, 4.0, 6.0])
    np.testing.assert_allclose(moving_average_forecast(close, anchors, 3), [2.0, 3.0, 5.0])
    # a window longer than the history averages what there is
    np.testing.assert_allclose(moving_average_forecast(close, np.array([1]), 5), [1.5])
    # textbook drift: last + step * (last - first) / (t - 0)
    np.testing.assert_allclose(rolling_drift(close, np.array([2]), np.array([0]), 2), [[4.0, 5.0]])
    series = np.array([10.0, 10.0, 13.0, 16.0])
    three = np.array([3])
    np.testing.assert_allclose(rolling_drift(series, three, np.array([0]), 1), [[18.0]])
    np.testing.assert_allclose(rolling_drift(series, three, np.array([2]), 1), [[19.0]])


def test_target_weights_cover_every_price_target():
    np.testing.assert_allclose(target_weights("mean_close", 4, 1), [[0.25] * 4])
    np.testing.assert_allclose(target_weights("close", 3, 1), [[0, 0, 1]])
    np.testing.assert_allclose(target_weights("closes", 3, 3), np.eye(3))
    np.testing.assert_allclose(target_weights("mean_close_log_return", 2, 1), [[0.5, 0.5]])
    close = np.arange(10.0)
    arrays = {"close": close, "y_price": np.full((10, 1), 99.0)}
    with pytest.raises(ValueError, match="target_weights"):
        check_targets(arrays, np.arange(3), target_weights("close", 2, 1))


def linear_prices(n: int, slope: float = 2.0, start: float = 10.0) -> pd.DataFrame:
    dates = pd.bdate_range("2010-01-04", periods=n)
    close = start + slope * np.arange(n)
    return pd.DataFrame(
        {
            "date": dates.date,
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "adj_close": close,
            "volume": np.full(n, 1000, dtype=np.int64),
        }
    )


def prepared(prices: pd.DataFrame, target: str = "mean_close", horizon: int = 5):
    cfg = {
        "start": None,
        "end": None,
        "features": ["close", "volume"],
        "lookback": 20,
        "horizon": horizon,
        "target": target,
        "val_fraction": 0.15,
        "test_fraction": 0.15,
    }
    spec, arrays = preprocess(prices, PreprocessSettings(**cfg), who="synthetic")
    n = spec.n_rows
    return spec, arrays, split_anchors(n, spec.n_train, spec.n_val, spec.lookback, spec.horizon)


def test_every_baseline_on_a_straight_line():
    """close = 10 + 2t, target = mean of the next 5 closes = close_t + 6. Known answers:
    drift and ridge_inputs are exact, naive is 6 low, the mean of the last 5 closes
    (moving_average_horizon) 10 low, of the last 20 (moving_average) 25 low, the mean of
    all closes up to t (mean) t + 6 low; the ridge autoregression on log returns nearly
    right (its intercept is the window's mean return, the line's slope, penalised a little)."""
    spec, arrays, anchors = prepared(linear_prices(400))
    ev = evaluate_forecasts(spec, arrays, anchors, lambda a: arrays["y_price"][a])
    m = ev["metrics"]
    assert set(m) == {"model", *BASELINES, *INPUTS_BASELINES}
    assert m["model"]["rmse"] == pytest.approx(0, abs=1e-9) and m["model"]["skill"] == 1.0
    assert m["drift"]["rmse"] == pytest.approx(0, abs=1e-9)
    assert m["naive"]["rmse"] == pytest.approx(6) and m["naive"]["mae"] == pytest.approx(6)
    assert m["moving_average_horizon"]["mae"] == pytest.approx(10)
    assert m["moving_average"]["mae"] == pytest.approx(25)
    # the mean of closes 0..t is 10 + t, the target 10 + 2t + 6
    assert m["mean"]["mae"] == pytest.approx(np.mean(anchors["test"] + 6.0), rel=1e-9)
    assert m["ridge_inputs"]["rmse"] < 0.05 * m["naive"]["rmse"]
    assert m["ridge"]["rmse"] < 0.15 * m["naive"]["rmse"]
    assert m["naive"]["mase"] == pytest.approx(3.0)  # 6 / in-sample naive MAE of 2
    assert m["drift"]["directional_accuracy"] == 100.0
    assert m["naive"]["directional_accuracy"] is None
    assert m["moving_average_horizon"]["skill"] == pytest.approx(1 - 10 / 6)
    described = ev["baselines"]
    assert described["moving_average"] == {
        "description": "the mean of the last 20 closes",
        "params": {"ma_window": 20},
    }
    assert described["moving_average_horizon"]["description"].startswith("the mean of the last 5")
    assert described["ridge_inputs"]["params"]["alpha"] in RIDGE_ALPHAS
    table = ev["table"]
    assert len(table) == len(anchors["test"]) == ev["window"]["windows"]
    np.testing.assert_allclose(table["naive"], table["last_close"])
    assert (pd.to_datetime(table["target_date"]) > pd.to_datetime(table["anchor_date"])).all()
    assert ev["window"]["first_target"] > ev["window"]["first_anchor"]
    assert ev["up_share"] == 100.0


def test_vector_target_scores_every_step():
    spec, arrays, anchors = prepared(linear_prices(300), target="closes", horizon=3)
    ev = evaluate_forecasts(spec, arrays, anchors, lambda a: arrays["y_price"][a])
    assert ev["metrics"]["drift"]["rmse"] == pytest.approx(0, abs=1e-9)
    # naive misses by 2, 4, 6 over the three steps
    assert ev["metrics"]["naive"]["mae"] == pytest.approx(4.0)
    assert {"model_2", "model_3", "actual_3"} <= set(ev["table"].columns)
    assert len(ev["intervals"]["80"]["q"]) == 3


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1.0, 10.0)  # 9 scores
    assert conformal_quantile(scores, 0.8) == 8.0  # ceil(10 * 0.8) = 8th smallest
    assert conformal_quantile(scores, 0.5) == 5.0
    assert conformal_quantile(scores, 0.95) == math.inf  # needs 10 > 9 scores
    # log-space residuals: a band of prices, symmetric in log
    np.testing.assert_allclose(
        conformal_scores([110.0, 100.0 / 1.1], [100.0, 100.0]), [math.log(1.1)] * 2
    )
    lo, hi = interval(np.array([100.0]), math.log(1.1))
    assert (lo[0], hi[0]) == pytest.approx((100.0 / 1.1, 110.0))


def test_bands_stay_prices_however_volatile():
    """A wide band (q * vol of 3) stays above zero; the linear one went to -200."""
    lo, hi = interval(np.array([[120.0]]), 3.0, scale=np.array([1.0]))
    assert lo[0, 0] == pytest.approx(120.0 * math.exp(-3)) and lo[0, 0] > 0
    assert hi[0, 0] == pytest.approx(120.0 * math.exp(3))
    # a non-positive forecast has no band of prices; an actual is never inside it
    lo, hi = interval(np.array([-1.0]), 0.1)
    assert np.isnan(lo).all() and np.isnan(hi).all()
    assert conformal_scores([100.0], [-1.0])[0] == math.inf
    # a legacy (linear) bundle's band: cut at zero
    lo, hi = interval(np.array([120.0]), 3.0, space="linear")
    assert (lo[0], hi[0]) == (0.0, 480.0)


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_conformal_coverage_on_synthetic_data(level):
    rng = np.random.default_rng(7)
    n_cal, n_test = 2000, 20000
    forecast = rng.uniform(50, 150, n_cal + n_test)
    actual = forecast * (1 + rng.standard_t(4, n_cal + n_test) * 0.02)  # heavy tails
    cal = calibrate(actual[:n_cal, None], forecast[:n_cal, None], levels=(level,))
    q = cal[str(int(level * 100))]["q"][0]
    lo, hi = interval(forecast[n_cal:], q)
    assert coverage(actual[n_cal:], lo, hi) == pytest.approx(level, abs=0.015)


def test_conformal_coverage_through_evaluate():
    """A noisy forecaster on a noisy series: test coverage lands near nominal."""
    rng = np.random.default_rng(3)
    n = 8000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    prices = linear_prices(n)
    for col in ("open", "high", "low", "close", "adj_close"):
        prices[col] = close
    spec, arrays, anchors = prepared(prices)
    noise = np.exp(rng.normal(0, 0.02, len(close)))
    ev = evaluate_forecasts(spec, arrays, anchors, lambda a: arrays["y_price"][a] * noise[a, None])
    for key, level in (("80", 0.8), ("95", 0.95)):
        got = ev["intervals"][key]
        assert got["nominal"] == level and got["n_calibration"] == len(anchors["val"])
        assert got["coverage_test"] == pytest.approx(level, abs=0.05)
    assert (ev["table"]["lo_95"] <= ev["table"]["lo_80"]).all()
    assert (ev["table"]["hi_80"] <= ev["table"]["hi_95"]).all()


def test_verdict_follows_the_test_not_the_sign():
    def row(rmse, p=None, state=None):
        return {"rmse": rmse, "dm_p": p, "dm_verdict": state}

    win = {"model": row(1.0), "naive": row(2.0, 0.01, "better"), "ridge": row(0.5, 0.02, "worse")}
    noise = {"model": row(1.9), "naive": row(2.0, 0.41, "indistinguishable")}
    lose = {"model": row(3.0), "naive": row(2.0, 0.003, "worse"), "drift": row(4.0, 0.2, "better")}
    assert "beats the naive" in verdict(win) and "+50.0%" in verdict(win)
    assert "DM p = 0.01" in verdict(win)
    assert "significantly better than the model: ridge (p = 0.02)" in verdict(win)
    # a skill that rounds to zero is never printed as a loss
    tie = {"model": row(2.0 - 1e-15), "naive": row(2.0, 1.0, "indistinguishable")}
    assert "+0.0%" in verdict(tie) and "-0.0%" not in verdict(tie)
    # a lower RMSE without a test behind it is not a win
    assert "indistinguishable from the naive" in verdict(noise) and "p = 0.41" in verdict(noise)
    assert "beats" not in verdict(noise)
    assert "worse than the naive" in verdict(lose) and "do not trade on it" in verdict(lose)
    assert "drift" not in verdict(lose)


def test_evaluation_tests_the_model_against_every_baseline():
    spec, arrays, anchors = prepared(linear_prices(300))
    ev = evaluate_forecasts(spec, arrays, anchors, lambda a: arrays["y_price"][a] * 1.0)
    m = ev["metrics"]
    for name, values in m.items():
        if name == "model":
            assert "dm_p" not in values
        else:
            assert values["dm_verdict"] in ("better", "worse", "indistinguishable")
    # the perfect forecast is significantly better than naive on a trending series
    assert m["naive"]["dm_verdict"] == "better" and m["naive"]["dm_p"] < 0.05


def test_plots_are_headless_pngs(tmp_path):
    from tickercast.evaluation.plots import plot_folds
    from tickercast.evaluation.report import write_evaluation

    spec, arrays, anchors = prepared(linear_prices(300))
    ev = evaluate_forecasts(spec, arrays, anchors, lambda a: arrays["y_price"][a] * 1.01)
    paths = write_evaluation(tmp_path, ev, {"loss": [1.0, 0.5], "val_loss": [1.2, 0.7]}, "SYN")
    folds = [
        {"fold": i, "test_first_target": "2020-01-01", "metrics": ev["metrics"]} for i in (1, 2)
    ]
    plot_folds(folds, tmp_path / "folds.png", "folds")
    for path in [*paths.values(), tmp_path / "folds.png"]:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


HEADLESS_PLOT = """
import sys
from pathlib import Path
import matplotlib
from tickercast.evaluation.plots import plot_folds
metrics = {"model": {"rmse": 1.0}, "naive": {"rmse": 1.5}}
folds = [{"fold": i, "test_first_target": "2020-01-01", "metrics": metrics} for i in (1, 2)]
plot_folds(folds, Path(sys.argv[1]), "folds")
print(matplotlib.get_backend())
"""


def test_plots_are_drawn_with_agg_whatever_backend_the_user_configured(tmp_path):
    """Evaluate steps draw in worker threads, where a GUI backend must never be used. The
    pytest process runs with MPLBACKEND=Agg and matplotlib itself falls back to Agg when
    no display works, so neither proves the plotting code's own choice: a fresh process
    whose matplotlibrc asks for TkAgg without fallback fails unless that code picks Agg."""
    (tmp_path / "matplotlibrc").write_text("backend: TkAgg\nbackend_fallback: False\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["MATPLOTLIBRC"] = str(tmp_path)
    out = tmp_path / "folds.png"
    proc = subprocess.run(
        [sys.executable, "-c", HEADLESS_PLOT, str(out)],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1].lower() == "agg"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
