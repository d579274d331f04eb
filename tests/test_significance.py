"""Diebold–Mariano/HLN test: hand-computed cases, the h=1 link to the one-sample t test,
known-answer simulations, size under overlapping (MA(h-1)) errors, NaN rows and 2-D inputs."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from tickercast.significance import (
    DMResult,
    compare,
    dm_test,
    loss_differential,
    verdict_text,
)

ACTUAL6 = np.array([10.0, 12.0, 11.0, 13.0, 12.0, 14.0])


def _preds(err_a, err_b, actual=ACTUAL6):
    """Forecasts with the given errors (sign flipped on some, squared loss ignores it)."""
    sign = np.array([1, -1, 1, -1, 1, -1], dtype=float)[: len(actual)]
    return actual + sign * np.asarray(err_a), actual - sign * np.asarray(err_b)


def test_hand_computed_h2():
    # |e_a| = [2, 1, 2, 1.5, 1, 1.5], |e_b| = [1, 0, 0, 0.5, 1, 0.5]
    # d = e_a^2 - e_b^2 = [3, 1, 4, 2, 0, 2]; mean 2; deviations [1, -1, 2, 0, -2, 0]
    pred_a, pred_b = _preds([2, 1, 2, 1.5, 1, 1.5], [1, 0, 0, 0.5, 1, 0.5])
    d = loss_differential(ACTUAL6, pred_a, pred_b)
    np.testing.assert_allclose(d, [3, 1, 4, 2, 0, 2])
    n, h = 6, 2
    gamma0 = (1 + 1 + 4 + 0 + 4 + 0) / 6  # 10/6
    gamma1 = (-1 * 1 + 2 * -1 + 0 * 2 + -2 * 0 + 0 * -2) / 6  # -3/6
    var = (gamma0 + 2 * gamma1) / n  # (4/6)/6 = 1/9
    assert var == pytest.approx(1 / 9)
    dm = 2 / math.sqrt(var)  # 6
    factor = (n + 1 - 2 * h + h * (h - 1) / n) / n  # (3 + 1/3)/6 = 5/9
    expected = dm * math.sqrt(factor)  # 2*sqrt(5)
    assert expected == pytest.approx(2 * math.sqrt(5))

    r = dm_test(ACTUAL6, pred_a, pred_b, horizon=h)
    assert r.n == 6 and r.horizon == 2 and r.mean_diff == pytest.approx(2.0)
    assert r.statistic == pytest.approx(expected, rel=1e-12)
    assert r.p_value == pytest.approx(2 * stats.t.sf(expected, n - 1), rel=1e-10)
    assert r.note is None
    # A is worse (mean_diff > 0): "greater" is small, "less" is its complement.
    g = dm_test(ACTUAL6, pred_a, pred_b, horizon=h, alternative="greater")
    s = dm_test(ACTUAL6, pred_a, pred_b, horizon=h, alternative="less")
    assert g.p_value == pytest.approx(stats.t.sf(expected, n - 1), rel=1e-10)
    assert s.p_value == pytest.approx(1 - g.p_value, rel=1e-10)
    # Absolute loss on the same windows: d = [1, 1, 2, 1, 0, 1].
    np.testing.assert_allclose(
        loss_differential(ACTUAL6, pred_a, pred_b, loss="absolute"), [1, 1, 2, 1, 0, 1]
    )


def test_hand_computed_bartlett_fallback():
    # d = [3, -1, 4, 1, 2, 3]; mean 2; deviations [1, -3, 2, -1, 0, 1]
    # gamma0 = 16/6, gamma1 = (-3 - 6 - 2 + 0 + 0)/6 = -11/6: truncated var (16-22)/36 < 0.
    # Bartlett weight at lag 1 for h=2 is 1/2: var = (16/6 - 11/6)/6 = 5/36.
    pred_a, pred_b = _preds([2, 0, 2, 1, 1.5, 2], [1, 1, 0, 0, 0.5, 1])
    np.testing.assert_allclose(loss_differential(ACTUAL6, pred_a, pred_b), [3, -1, 4, 1, 2, 3])
    expected = 2 / math.sqrt(5 / 36) * math.sqrt(5 / 9)  # = 4 exactly
    assert expected == pytest.approx(4.0)
    r = dm_test(ACTUAL6, pred_a, pred_b, horizon=2)
    assert r.statistic == pytest.approx(4.0, rel=1e-12)
    assert r.p_value == pytest.approx(2 * stats.t.sf(4.0, 5), rel=1e-10)
    assert "Bartlett" in r.note


def test_h1_is_one_sample_t_test():
    # h=1: var = gamma0/n = s^2 (n-1)/n^2, so DM = t * sqrt(n/(n-1)); the HLN factor is
    # (n-1)/n, hence the corrected statistic is exactly the one-sample t and its p-value too.
    rng = np.random.default_rng(3)
    n = 40
    actual = rng.normal(size=n)
    pred_a = actual + rng.normal(0, 1.0, n)
    pred_b = actual + rng.normal(0, 1.3, n)
    d = loss_differential(actual, pred_a, pred_b)
    t = stats.ttest_1samp(d, 0.0)
    r = dm_test(actual, pred_a, pred_b, horizon=1)
    assert r.statistic == pytest.approx(t.statistic, rel=1e-10)
    assert r.p_value == pytest.approx(t.pvalue, rel=1e-10)
    dm_uncorrected = d.mean() / math.sqrt(np.mean((d - d.mean()) ** 2) / n)
    assert r.statistic / math.sqrt((n - 1) / n) == pytest.approx(dm_uncorrected, rel=1e-10)
    assert dm_uncorrected == pytest.approx(t.statistic * math.sqrt(n / (n - 1)), rel=1e-10)


def test_identical_forecasts():
    rng = np.random.default_rng(0)
    actual = rng.normal(size=50)
    pred = actual + rng.normal(size=50)
    r = dm_test(actual, pred, pred.copy(), horizon=3)
    assert (r.statistic, r.p_value) == (0.0, 1.0)
    row = compare(actual, pred, {"twin": pred.copy()}, horizon=3)["twin"]
    assert row["verdict"] == "indistinguishable" and row["p_value"] == 1.0
    assert verdict_text("twin", row) == "indistinguishable from twin (DM p = 1)"


def test_constant_nonzero_difference():
    actual = np.zeros(10)
    r = dm_test(actual, np.ones(10), 2 * np.ones(10), horizon=2)  # d = 1 - 4 = -3 always
    assert r.statistic == -math.inf and r.p_value == 0.0
    assert dm_test(actual, np.ones(10), 2 * np.ones(10), 2, alternative="less").p_value == 0.0
    assert dm_test(actual, np.ones(10), 2 * np.ones(10), 2, alternative="greater").p_value == 1.0
    json.dumps(r.to_dict(), allow_nan=False)
    assert r.to_dict()["statistic"] is None and r.to_dict()["mean_diff"] == -3.0


def _simulated(seed, n=500):
    rng = np.random.default_rng(seed)
    actual = np.cumsum(rng.normal(size=n)) + 100
    good = actual + rng.normal(0, 1.0, n)
    bad = actual + rng.normal(0, 1.5, n)
    return actual, good, bad


def test_clearly_better_and_worse():
    actual, good, bad = _simulated(11)
    res = compare(actual, good, {"bad": bad}, horizon=5)["bad"]
    assert res["verdict"] == "better" and res["p_value"] < 0.01
    assert res["p_better"] < 0.01 and res["p_worse"] > 0.99 and res["n"] == 500
    assert verdict_text("bad", res).startswith("beats bad (DM p ")
    rev = compare(actual, bad, {"good": good}, horizon=5)["good"]
    assert rev["verdict"] == "worse" and rev["p_value"] < 0.01 and rev["p_worse"] < 0.01
    assert verdict_text("good", rev).startswith("worse than good (DM p ")
    json.dumps(res, allow_nan=False)


def _ma_errors(rng, reps, n, h):
    """h-step errors: MA(h-1) with equal weights (overlapping future shocks)."""
    eps = rng.normal(size=(reps, n + h - 1))
    return np.stack([eps[:, i : i + n] for i in range(h)]).sum(axis=0) / math.sqrt(h)


def test_size_under_null_with_overlapping_errors():
    reps, n, h = 300, 250, 5
    rng = np.random.default_rng(2024)
    e_a, e_b = _ma_errors(rng, reps, n, h), _ma_errors(rng, reps, n, h)
    actual = np.zeros(n)
    p = np.array([dm_test(actual, e_a[i], e_b[i], horizon=h).p_value for i in range(reps)])
    rate = float(np.mean(p < 0.05))
    assert 0.02 <= rate <= 0.10, rate
    # Teeth: ignoring the overlap (h=1) badly over-rejects on the same data.
    p1 = np.array([dm_test(actual, e_a[i], e_b[i], horizon=1).p_value for i in range(reps)])
    assert np.mean(p1 < 0.05) > 0.15


def test_nan_rows_dropped():
    actual, good, bad = _simulated(5, n=60)
    a, g, b = actual.copy(), good.copy(), bad.copy()
    a[3], g[10], b[20] = np.nan, np.nan, np.nan
    keep = np.ones(60, bool)
    keep[[3, 10, 20]] = False
    r = dm_test(a, g, b, horizon=3)
    ref = dm_test(actual[keep], good[keep], bad[keep], horizon=3)
    assert r.n == 57 and r == ref
    assert loss_differential(a, g, b).shape == (57,)


def test_2d_inputs_average_over_columns():
    rng = np.random.default_rng(8)
    n, k = 30, 3
    actual = rng.normal(size=(n, k))
    pa = actual + rng.normal(size=(n, k))
    pb = actual + rng.normal(size=(n, k))
    pa[4, 1] = np.nan  # one NaN cell drops the whole window
    d = loss_differential(actual, pa, pb)
    by_hand = np.array(
        [
            sum((actual[i, j] - pa[i, j]) ** 2 - (actual[i, j] - pb[i, j]) ** 2 for j in range(k))
            / k
            for i in range(n)
            if i != 4
        ]
    )
    np.testing.assert_allclose(d, by_hand, rtol=1e-12)
    assert dm_test(actual, pa, pb, horizon=2).n == n - 1
    # (n,) and (n, 1) are the same thing.
    np.testing.assert_allclose(
        loss_differential(actual[:, 0], pa[:, 0], pb[:, 0]),
        loss_differential(actual[:, :1], pa[:, :1], pb[:, :1]),
    )


def test_small_samples_do_not_raise():
    r = dm_test([1.0], [1.5], [2.0], horizon=1)
    assert math.isnan(r.statistic) and math.isnan(r.p_value) and "too few" in r.note
    r = dm_test([1.0, 2.0, 3.0], [1.5, 2.5, 3.0], [2.0, 2.0, 2.0], horizon=3)
    assert math.isnan(r.p_value) and r.n == 3
    assert r.to_dict()["p_value"] is None
    json.dumps(r.to_dict(), allow_nan=False)
    assert verdict_text("naive", r).startswith("not tested against naive (too few")
    row = compare([1.0], [1.5], {"naive": [2.0]}, horizon=1)["naive"]
    assert row["verdict"] == "indistinguishable" and row["p_value"] is None


def test_verdict_text_formats():
    def res(p, mean_diff):
        return DMResult(1.0, p, 100, 1, mean_diff, "two-sided", "squared")

    assert verdict_text("naive", res(0.01234, -1.0)) == "beats naive (DM p = 0.012)"
    assert verdict_text("naive", res(0.4134, -1.0)) == "indistinguishable from naive (DM p = 0.41)"
    assert verdict_text("naive", res(0.003, 1.0)) == "worse than naive (DM p = 0.003)"
    assert verdict_text("naive", res(0.0004, 1.0)) == "worse than naive (DM p < 0.001)"
    assert verdict_text("naive", res(0.03, -1.0), level=0.01).startswith("indistinguishable")


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        dm_test([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], horizon=0)
    with pytest.raises(ValueError):
        dm_test([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], horizon=1, alternative="both")
    with pytest.raises(ValueError):
        loss_differential([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], loss="huber")
    with pytest.raises(ValueError):
        loss_differential([1.0, 2.0], [1.0, 2.0, 3.0], [1.0, 2.0])


def test_rounding_level_differences_are_no_difference():
    rng = np.random.default_rng(5)
    actual = 100 + np.cumsum(rng.normal(0, 1, 300))
    naive = np.roll(actual, 1)[1:]
    same = naive * (1 + 1e-15)  # the same number computed another way
    res = dm_test(actual[1:], same, naive, 5)
    assert res.p_value == 1.0 and res.statistic == 0.0
    nearly = naive * (1 + 1e-6)  # a real (if tiny) difference is still tested
    assert dm_test(actual[1:], nearly, naive, 5).statistic != 0.0


# --------------------------------------------------------------------------- Kupiec, raw d


def test_dm_on_a_differential_equals_dm_on_the_errors() -> None:
    from tickercast.significance import dm_test, dm_test_differential, loss_differential

    rng = np.random.default_rng(3)
    y = rng.normal(size=300)
    a, b = y + rng.normal(0, 1.0, 300), y + rng.normal(0, 1.2, 300)
    direct = dm_test(y, a, b, horizon=5)
    via_d = dm_test_differential(loss_differential(y, a, b), horizon=5)
    assert via_d.statistic == pytest.approx(direct.statistic)
    assert via_d.p_value == pytest.approx(direct.p_value)
    # NaN windows (a score not yet known) are dropped, not propagated
    d = np.r_[loss_differential(y, a, b), [np.nan, np.nan]]
    assert dm_test_differential(d, horizon=5).n == 300


def test_kupiec_accepts_honest_coverage_and_flags_too_few_hits() -> None:
    from tickercast.significance import kupiec_test

    rng = np.random.default_rng(0)
    honest = kupiec_test(rng.random(2000) < 0.95, 0.95)
    assert honest.p_value > 0.01 and abs(honest.coverage - 0.95) < 0.02
    low = kupiec_test(rng.random(2000) < 0.90, 0.95)  # a 95% band covering 90%
    assert low.p_value < 1e-6 and low.p_below < 1e-6 and low.coverage < 0.92
    high = kupiec_test(rng.random(2000) < 0.995, 0.95)  # too wide: not "below nominal"
    assert high.p_value < 1e-6 and high.p_below > 0.99
    # by hand: 10 misses in 100 at 95%: -2[10 ln .05 + 90 ln .95 - 10 ln .1 - 90 ln .9] = 4.1308
    known = kupiec_test([True] * 90 + [False] * 10, 0.95)
    assert known.statistic == pytest.approx(4.1308, abs=1e-3)
    assert known.p_value == pytest.approx(stats.chi2.sf(4.1308, 1), abs=1e-4)
    empty = kupiec_test([np.nan, np.nan], 0.8)
    assert empty.n == 0 and np.isnan(empty.p_value)
    assert empty.to_dict()["p_value"] is None
