"""The gate guards the distribution (issue 21): the rule on point and CRPS tests, and a
version's band rebuilt from the lake as its evaluation drew it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickercast.choices import QUANTILES
from tickercast.delivery.gate import _judge_both, crps_tests, distribution_rule


@pytest.mark.parametrize(
    ("point_better", "point_worse", "crps_better", "crps_worse", "promoted"),
    [
        (True, False, False, True, False),  # CRPS significantly worse: never
        (True, False, False, False, True),  # better point, CRPS not worse
        (False, False, True, False, True),  # better CRPS, point not worse
        (False, True, True, False, False),  # better CRPS but worse point
        (False, False, False, False, False),  # nothing significant: the champion stays
        (True, False, True, False, True),
        (True, False, None, None, True),  # no grids: the point rule alone
        (False, False, None, None, False),
    ],
)
def test_the_promotion_rule(point_better, point_worse, crps_better, crps_worse, promoted):
    ok, why = distribution_rule(point_better, point_worse, crps_better, crps_worse)
    assert ok is promoted and why


def _grid(center: np.ndarray, width: float) -> np.ndarray:
    from scipy import stats

    z = stats.norm.ppf(QUANTILES)
    return center[:, None, None] + width * z[None, None, :]


def test_crps_tests_see_a_much_worse_band_and_the_reason_says_so():
    rng = np.random.default_rng(0)
    actual = rng.normal(size=(400, 1))
    good, bad = _grid(np.zeros(400), 1.0), _grid(np.zeros(400), 5.0)
    tests = crps_tests(actual, {"challenger": bad, "champion": good}, horizon=1)
    assert tests["worse"]["p_value"] < 1e-6 and tests["better"]["p_value"] > 0.99
    ok, why = _judge_both({"crps_vs_champion": tests}, True, 0.05)
    assert not ok and "CRPS significantly worse" in why and "one-sided DM p < 0.001" in why
    tests = crps_tests(actual, {"challenger": good, "champion": bad}, horizon=1)
    assert _judge_both({"crps_vs_champion": tests}, False, 0.05)[0]
    assert crps_tests(actual, {"challenger": good, "champion": None}, 1) is None


def test_a_versions_band_is_rebuilt_from_the_lake_as_evaluated(tmp_path):
    """The gate's grid of a version (its recorded calibration, the lake's closes) equals
    the grid its evaluation wrote beside its test forecasts."""
    from tests.tiny_models import TICKER, copy_store
    from tickercast.delivery.bundle import bundle_path, load_bundle
    from tickercast.delivery.gate import quantiles_at
    from tickercast.market import lake

    data = copy_store(tmp_path)
    bundle = load_bundle(bundle_path(data, TICKER, 3))
    table = pd.read_parquet(bundle.path / "predictions.parquet")
    assert bundle.metadata["evaluation"]["distribution"]["model"]["form"] == "volatility_conformal"
    prices = lake.read_partition(data, TICKER)
    grid = quantiles_at(bundle, prices, table, table[["model"]].to_numpy())
    written = table[[f"q_{level:g}" for level in QUANTILES]].to_numpy()
    np.testing.assert_allclose(grid[:, 0, :], written, rtol=1e-9)
