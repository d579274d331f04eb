import numpy as np
import pytest

from tasks.evaluate import (
    mae,
    mape,
    metrics,
    moving_average_forecast,
    naive_forecast,
    rmse,
    verdict,
)


def test_metrics_by_hand():
    actual = np.array([100.0, 200.0, 50.0])
    predicted = np.array([110.0, 190.0, 50.0])
    assert rmse(actual, predicted) == pytest.approx(np.sqrt(200 / 3))
    assert mae(actual, predicted) == pytest.approx(20 / 3)
    assert mape(actual, predicted) == pytest.approx((10 + 5 + 0) / 3)
    assert metrics(actual, actual) == {"rmse": 0.0, "mae": 0.0, "mape": 0.0}


def test_baselines_on_a_known_series():
    close = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    anchors = np.array([2, 3, 5])
    np.testing.assert_array_equal(naive_forecast(close, anchors), [3.0, 4.0, 6.0])
    np.testing.assert_allclose(moving_average_forecast(close, anchors, 3), [2.0, 3.0, 5.0])
    # a window longer than the history averages what there is
    np.testing.assert_allclose(moving_average_forecast(close, np.array([1]), 5), [1.5])


def test_verdict_is_plain_about_losing_to_naive():
    win = {"model": {"rmse": 1.0}, "naive": {"rmse": 2.0}}
    lose = {"model": {"rmse": 3.0}, "naive": {"rmse": 2.0}}
    assert "beats the naive" in verdict(win) and "+50.0%" in verdict(win)
    assert "does NOT beat the naive" in verdict(lose)
