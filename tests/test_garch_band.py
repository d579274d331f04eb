"""The shipped band (issue 21): the GJR-GARCH(1,1)-t recursion over a window's returns
against `arch`'s own forecast, its band against the unconditional one on simulated GARCH
returns (DM) and its coverage, never-crossing and finite quantiles on messy returns, and
the parameters a record keeps rebuilding the very same band."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tickercast.evaluation import distribution as d
from tickercast.evaluation import garch_band as g


def _gjr_returns(n: int, seed: int, omega=2e-6, alpha=0.03, gamma=0.1, beta=0.9, df=6.0):
    """Daily log returns from a GJR-GARCH(1,1) with standardized Student-t(df) errors."""
    rng = np.random.default_rng(seed)
    r, s2 = np.empty(n), omega / (1 - alpha - gamma / 2 - beta)
    for t in range(n):
        r[t] = np.sqrt(s2) * rng.standard_t(df) / np.sqrt(df / (df - 2))
        s2 = omega + (alpha + gamma * (r[t] < 0)) * r[t] ** 2 + beta * s2
    return r


def _closes(r: np.ndarray) -> np.ndarray:
    return 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))


PARAMS = {
    "band": "gjr_garch_t",
    "mu": 3e-4,
    "omega": 2e-6,
    "alpha": 0.03,
    "gamma": 0.1,
    "beta": 0.9,
    "nu": 6.0,
    "start_variance": 2e-6 / (1 - 0.03 - 0.05 - 0.9),
    "returns": 300,
}


def test_the_recursion_matches_arch_on_the_same_parameters_and_data():
    """arch's analytic multi-step forecast (its recursion over the whole series) and ours
    over each origin's last 300 returns agree once the start is forgotten (0.9^300)."""
    from arch import arch_model

    close = _closes(_gjr_returns(1500, seed=1))
    r = np.diff(np.log(close))
    model = arch_model(100 * r, mean="Constant", vol="GARCH", p=1, o=1, q=1, dist="t")
    theta = np.array(
        [100 * PARAMS["mu"], 1e4 * PARAMS["omega"], PARAMS["alpha"], PARAMS["gamma"]]
        + [PARAMS["beta"], PARAMS["nu"]]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = model.forecast(theta, horizon=5, start=1000, reindex=False)
    expected = np.asarray(fc.variance) / 1e4  # row i: the forecast after return 1000 + i
    rows = np.arange(1000, len(r)) + 1  # close row t holds the return r[t - 1]
    ours = g.daily_variance(PARAMS, close, rows, 5)
    np.testing.assert_allclose(ours, expected, rtol=1e-7)
    # a short window starts from the long-run variance: still close, not equal
    short = g.daily_variance({**PARAMS, "returns": 20}, close, rows, 5)
    assert 0.0 < np.max(np.abs(short / expected - 1)) < 0.5


def test_the_mean_close_scale_matches_simulated_gjr_paths():
    """From one origin's state, 200,000 GJR-GARCH(1,1)-t paths of the next 5 days: the sd
    of log(mean close / last close) equals the recursion's k-step variances mapped onto
    the target ((6 - k)^2 / 25): the asymmetric shock enters the k-step forecasts as its
    expectation gamma / 2, and the mapping needs only uncorrelated returns."""
    rng = np.random.default_rng(11)
    close = _closes(_gjr_returns(400, seed=5))
    close[-1] = close[-2] * np.exp(-0.04)  # a fall on the last day: gamma's shock is live
    daily = g.daily_variance(PARAMS, close, np.array([len(close) - 1]), 5)
    mapped = d.target_scale(daily, d.target_weights("mean_close_log_return", 5, 1))[0, 0]
    n, nu = 200_000, PARAMS["nu"]
    s2, logs, total = np.full(n, daily[0, 0]), np.zeros(n), np.zeros(n)
    for _ in range(5):
        eps = np.sqrt(s2) * rng.standard_t(nu, n) * np.sqrt((nu - 2) / nu)
        logs += PARAMS["mu"] + eps
        total += np.exp(logs)
        shock = (PARAMS["alpha"] + PARAMS["gamma"] * (eps < 0)) * eps**2
        s2 = PARAMS["omega"] + shock + PARAMS["beta"] * s2
    simulated = np.log(total / 5).std()
    assert simulated == pytest.approx(mapped, rel=0.01)
    # the whole gamma in the k-step forecasts (not its expectation) would be seen
    wrong = daily[:, :1] * np.cumprod([1.0] + [1.03] * 4)  # persistence alpha+gamma+beta
    wrong += PARAMS["omega"] * np.array([0, 1, 2.03, 3.09, 4.18])  # its omega terms
    off = d.target_scale(wrong, d.target_weights("mean_close_log_return", 5, 1))[0, 0]
    assert abs(off / simulated - 1) > 0.02


def test_the_fit_reads_only_its_rows_and_is_json_ready():
    close = _closes(_gjr_returns(2000, seed=2))
    params = g.fit_params(close, 0, 1200, "gjr_garch_t", 80)
    assert json.loads(json.dumps(params)) == params
    assert params["band"] == "gjr_garch_t" and "note" not in params
    assert 0 < params["alpha"] + params["gamma"] / 2 + params["beta"] < 1
    assert params["returns"] == 80 and params["fit_returns"] == 1200
    later = close.copy()
    later[1300:] *= np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.05, 701)))
    assert g.fit_params(later, 0, 1200, "gjr_garch_t", 80) == params  # rows > 1200 unread
    assert g.fit_params(close, 0, 1200, "garch_t", 80)["gamma"] == 0.0
    ewma = g.fit_params(close, 0, 1200, "ewma", 80)
    assert (ewma["omega"], ewma["beta"]) == (0.0, g.EWMA_LAMBDA)


def test_a_fit_that_cannot_be_made_falls_back_to_ewma_saying_why():
    short = _closes(_gjr_returns(100, seed=3))
    params = g.fit_params(short, 0, 100, "gjr_garch_t", 80)
    assert params["band"] == "ewma" and "too few" in params["note"]
    flat = np.full(600, 50.0)
    assert "flat" in g.fit_params(flat, 0, 599, "garch_t", 80)["note"]


def test_returns_with_zeros_gaps_and_bad_closes_give_finite_bands():
    close = _closes(_gjr_returns(600, seed=4))
    close[100:140] = close[100]  # a flat stretch: zero returns
    close[200] = np.nan  # a missing close
    close[300] = 0.0  # a zero close (a vendor's bad row)
    close[301] = -1.0
    rows = np.arange(0, 600)  # the first origins have (almost) no history at all
    v = g.daily_variance(PARAMS, close, rows, 5)
    assert np.isfinite(v).all() and (v >= g.VARIANCE_FLOOR).all()
    flat = g.daily_variance({**PARAMS, "omega": 0.0, "start_variance": 0.0}, close, rows, 5)
    assert (flat >= g.VARIANCE_FLOOR).all()


def _shipped(close, band: str, train_end: int, val: np.ndarray, test: np.ndarray):
    """The band around naive's median, fit on rows <= train_end, calibrated on `val`."""
    w = d.target_weights("mean_close_log_return", 5, 1)
    y = (close[np.arange(len(close) - 5)[:, None] + np.arange(1, 6)] @ w.T).reshape(-1, 1)
    cal = (val, y[val], close[val][:, None])
    grid, record = d.model_band(
        band, close, w, cal, (test, close[test][:, None]), (0, train_end), lookback=60
    )
    return grid, record, y[test], w


def test_on_gjr_returns_the_band_beats_the_unconditional_one_and_covers():
    close = _closes(_gjr_returns(6000, seed=5))
    val, test = np.arange(2000, 2600), np.arange(2600, 5990)
    grid, record, actual, _ = _shipped(close, "gjr_garch_t", 1999, val, test)
    assert record["scale"] == "gjr_garch_t" and record["params"]["returns"] == 80
    flat, _, _, _ = _shipped(close, "volatility_conformal", 1999, val, test)
    w = d.target_weights("mean_close_log_return", 5, 1)
    forecast = (test, close[test][:, None])
    uncond = d.calibrated_band(
        d.daily_variance_unconditional, close, w, _cal(close, val), forecast, 1999
    )[0]
    judged = d.judge(actual, grid, {"unconditional": uncond, "volatility_conformal": flat}, 5)
    assert judged["metrics"]["unconditional"]["verdict"] == "better"
    assert judged["metrics"]["unconditional"]["dm"]["crps"]["p"] < 0.01
    model = judged["metrics"]["model"]
    assert abs(model["coverage_80"] - 0.80) < 0.04 and abs(model["coverage_95"] - 0.95) < 0.03
    assert (np.diff(grid, axis=-1) >= 0).all()


def _cal(close, val):
    w = d.target_weights("mean_close_log_return", 5, 1)
    y = (close[val[:, None] + np.arange(1, 6)] @ w.T).reshape(-1, 1)
    return (val, y, close[val][:, None])


def test_the_record_rebuilds_the_band_without_refitting():
    close = _closes(_gjr_returns(3000, seed=6))
    val, test = np.arange(1500, 1800), np.arange(1800, 2990)
    grid, record, _, w = _shipped(close, "gjr_garch_t", 1499, val, test)
    record = json.loads(json.dumps(record))  # as metadata.json keeps it
    rebuilt = d.rebuild_band(record, close[: test[-1] + 1], test, close[test][:, None], w)
    np.testing.assert_allclose(rebuilt, grid, rtol=1e-12)
    shipped = d.band_intervals({"calibration": record}, grid, _cal(close, test)[1])
    assert set(shipped) == {"80", "95"} and shipped["95"]["scale"] == "gjr_garch_t"
    actual = _cal(close, test)[1]
    summary = d.summary(actual, grid)
    for key in ("80", "95"):
        assert shipped[key]["coverage_test"] == pytest.approx(summary[f"coverage_{key}"])
        pair = [lo for lo, _ in d.PAIRS].index(d.grid_index(0.1 if key == "80" else 0.025))
        assert shipped[key]["q"] == pytest.approx([d.nested(np.array(record["q"]))[0, pair]])


@pytest.mark.parametrize("band", ["ewma", "garch_t", "gjr_garch_t", "volatility_conformal"])
def test_every_band_choice_gives_a_nested_grid_around_the_median(band):
    close = _closes(_gjr_returns(1500, seed=7))
    val, test = np.arange(700, 900), np.arange(900, 1490)
    grid, record, _, _ = _shipped(close, band, 699, val, test)
    assert np.isfinite(grid).all() and (np.diff(grid, axis=-1) >= 0).all()
    np.testing.assert_array_equal(grid[..., d.MEDIAN], close[test][:, None])
    assert record["scale"] == band and ("params" in record) == (band in g.RECURSIVE)
