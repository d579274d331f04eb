"""Distribution forecasts (issue 21): the variance mapping against simulation, the grid's
CRPS against the closed form, GARCH against the unconditional band where it should and
should not win, quantiles that never cross, and the words of the verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickercast.choices import QUANTILES
from tickercast.evaluation import baseline_registry as registry
from tickercast.evaluation import distribution as d


def _garch_returns(n: int, seed: int, alpha=0.1, beta=0.88, df=6.0) -> np.ndarray:
    """Daily log returns (fractions) from a GARCH(1,1) with Student-t(df) errors."""
    rng = np.random.default_rng(seed)
    omega = 0.02 * (1 - alpha - beta)  # unconditional variance 0.02 (% squared units: 1.4%/day)
    r, s2 = np.empty(n), 0.02 / 1.0
    for t in range(n):
        r[t] = np.sqrt(s2) * rng.standard_t(df) / np.sqrt(df / (df - 2))
        s2 = omega + alpha * r[t] ** 2 + beta * s2
    return r / 10.0


def _closes(r: np.ndarray) -> np.ndarray:
    return 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))


@pytest.mark.parametrize(
    ("target", "outputs"), [("mean_close", 1), ("close", 1), ("closes", 5), ("close", 1)]
)
def test_the_variance_mapping_matches_simulation(target, outputs):
    """sd of log(target / last close) over simulated paths with day-varying variances equals
    the mapped scale (mean of h closes: (h+1-k)^2/h^2; close at t+h: the sum; per step)."""
    rng = np.random.default_rng(7)
    sd = np.array([0.010, 0.015, 0.020, 0.012, 0.018])
    paths = np.exp(np.cumsum(rng.standard_normal((200_000, 5)) * sd, axis=1))
    w = d.target_weights(target, 5, outputs)
    simulated = np.log(paths @ w.T).std(axis=0)
    mapped = d.target_scale((sd**2)[None, :], w)[0]
    np.testing.assert_allclose(simulated, mapped, rtol=0.02)
    if target == "mean_close":
        np.testing.assert_allclose(d.variance_weights(w)[0], (6 - np.arange(1, 6)) ** 2 / 25)


def test_the_grid_crps_is_close_to_the_closed_form_normal_crps():
    rng = np.random.default_rng(3)
    from scipy import stats

    y = rng.standard_normal(100_000) * 2.0 + 1.0
    q = np.broadcast_to(1.0 + 2.0 * stats.norm.ppf(QUANTILES), (len(y), len(QUANTILES)))
    grid = d.crps_grid(y[:, None], q[:, None, :])[:, 0]
    exact = d.crps_normal(y, 1.0, 2.0)
    assert abs(grid.mean() / exact.mean() - 1) < 0.04  # documented: about 3% low
    assert np.corrcoef(grid, exact)[0, 1] > 0.99  # and it ranks outcomes alike


def test_quantiles_never_cross():
    rng = np.random.default_rng(0)
    median = rng.uniform(1, 500, size=(400, 3))
    scale = rng.uniform(1e-4, 0.5, size=(400, 3))
    calibration = rng.uniform(0, 4, size=(3, len(d.PAIRS)))  # any order, even decreasing
    q = d.band_quantiles(median, scale, calibration)
    assert q.shape == (400, 3, len(QUANTILES))
    assert (np.diff(q, axis=-1) >= 0).all()
    np.testing.assert_array_equal(q[..., d.MEDIAN], median)
    assert (np.diff(d.sort_quantiles(rng.normal(size=(5, 1, 9))), axis=-1) >= 0).all()


def test_a_garch_fit_forecasts_only_from_what_it_may_read():
    """An origin's forecast from a fit ending at row e equals a fit on the series cut at
    the origin with parameters from rows <= e: the later rows change nothing."""
    close = _closes(_garch_returns(900, seed=5))
    rows = np.array([700, 720, 750])
    full = d.daily_variance_garch(close, rows, 3, 650)
    cut = d.daily_variance_garch(close[:751], rows, 3, 650)
    np.testing.assert_allclose(full, cut, rtol=1e-8)
    scrambled = close.copy()
    scrambled[751:] *= 1.5
    np.testing.assert_allclose(d.daily_variance_garch(scrambled, rows, 3, 650), full, rtol=1e-8)


def _judge(r: np.ndarray, names: list[str]) -> dict:
    """Naive median, close at t+1; calibrate on origins 1000..1499, score 1500..end."""
    close = _closes(r)
    w = d.target_weights("close", 1, 1)
    cal, test = np.arange(1000, 1500), np.arange(1500, len(close) - 1)
    actual = lambda rows: close[rows + 1][:, None]  # noqa: E731
    forecasts = registry.distribution_quantiles(
        names,
        close,
        w,
        (cal, actual(cal), close[cal][:, None]),
        (test, close[test][:, None]),
        fit_end=999,
    )
    return d.compare(actual(test), forecasts, names[0], horizon=1)


def test_garch_beats_the_unconditional_band_on_garch_returns():
    result = _judge(_garch_returns(3000, seed=11), ["garch_t", "unconditional"])
    row = result["unconditional"]
    assert row["verdict"] == "better" and row["dm"]["crps"]["p"] < 1e-3, row
    # the unconditional band covers 76% where GARCH covers 80%: not "the same coverage"
    assert row["verdict_text"].startswith("better than the unconditional band by CRPS (DM p <")
    assert abs(result["garch_t"]["coverage_80"] - 0.80) < 0.02
    assert abs(result["garch_t"]["coverage_95"] - 0.95) < 0.03


def test_on_iid_student_t_returns_garch_and_the_unconditional_band_are_indistinguishable():
    rng = np.random.default_rng(12)
    r = 0.014 * rng.standard_t(5, size=3000) / np.sqrt(5 / 3)
    row = _judge(r, ["garch_t", "unconditional"])["unconditional"]
    assert row["verdict"] == "indistinguishable", row
    assert row["verdict_text"].startswith("indistinguishable from the unconditional band")


def test_scores_and_coverage_of_a_known_band():
    y = np.array([[0.0], [10.0]])
    q = np.broadcast_to(np.linspace(-4, 4, len(QUANTILES)), (2, 1, len(QUANTILES)))
    s = d.per_origin_scores(y, q)
    assert s["hits_95"][:, 0].tolist() == [True, False]
    # 95% band (-4, 4): width 8, the miss of 6 costs 2 / 0.05 * 6
    np.testing.assert_allclose(s["interval_95"], [8.0, 8.0 + 40 * 6])
    assert s["crps"][0] < s["crps"][1]


def test_pooled_tests_the_mean_difference_per_date():
    rng = np.random.default_rng(4)
    dates = pd.date_range("2020-01-01", periods=300)
    frames = {}
    for t in ("A", "B"):
        base = rng.uniform(1, 2, 300)
        frames[t] = pd.DataFrame(
            {
                "date": dates,
                **{f"model_{k}": base * 0.9 for k in d.SCORES},
                **{f"ewma_{k}": base for k in d.SCORES},
            }
        )
    out = d.pooled(frames, "model", ["ewma"], horizon=5, same_coverage=True)
    assert out["ewma"]["verdict"] == "better" and out["ewma"]["dates"] == 300
    assert out["ewma"]["verdict_text"].startswith("bands sharper than EWMA (lambda 0.94)")
    assert (
        d.verdict_words("worse", "garch_t", 0.01, True) == "worse than GARCH(1,1)-t (DM p = 0.01)"
    )


def _garch_prices(n: int, seed: int) -> pd.DataFrame:
    close = _closes(_garch_returns(n - 1, seed))
    return pd.DataFrame(
        {
            "date": pd.bdate_range("2000-01-03", periods=n).date,
            **{c: close for c in ("open", "high", "low", "close", "adj_close")},
            "volume": np.full(n, 1000, dtype=np.int64),
        }
    )


def _prepared(prices: pd.DataFrame, target: str = "mean_close_log_return"):
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.windows import split_anchors
    from tickercast.sections import PreprocessSettings

    cfg = PreprocessSettings(
        features=["log_return"], lookback=10, horizon=5, target=target, val_fraction=0.25,
        test_fraction=0.25, start=None, end=None,
    )  # fmt: skip
    spec, arrays = preprocess(prices, cfg, who="garch")
    n = spec.n_rows
    return spec, arrays, split_anchors(n, spec.n_train, spec.n_val, spec.lookback, spec.horizon)


@pytest.mark.parametrize("target", ["mean_close_log_return", "closes"])
def test_the_retrain_evaluation_judges_the_distribution(target):
    """Around the model's median (naive here) every baseline's band on the same windows;
    without a quantile hook the model's band is today's volatility-scaled band, so it is
    indistinguishable from that baseline (the same forecast); the hook's grid is scored."""
    from tickercast.evaluation.evaluate import evaluate_forecasts

    spec, arrays, anchors = _prepared(_garch_prices(2000, seed=21), target)
    close = np.asarray(arrays["close"])
    outputs = 5 if target == "closes" else 1
    naive = lambda a: np.repeat(close[a][:, None], outputs, axis=1)  # noqa: E731
    ev = evaluate_forecasts(spec, arrays, anchors, naive, band="volatility_conformal")
    record = ev["distribution"]
    assert record["levels"] == list(QUANTILES) and not record["failed"]
    assert set(record["metrics"]) == {"model", *registry.DISTRIBUTIONS_NAMES}
    same = record["metrics"]["volatility_conformal"]
    assert same["verdict"] == "indistinguishable" and same["dm"]["crps"]["p"] == 1.0
    assert record["model"]["form"] == "volatility_conformal"
    assert "the same band as the 20-day-volatility conformal band" in record["verdicts"]
    assert len(record["verdicts"]) == len(registry.DISTRIBUTIONS_NAMES)
    table = ev["table"]
    q = table[[f"q_{level:g}" for level in QUANTILES]].to_numpy()
    assert (np.diff(q, axis=1) >= 0).all() and np.allclose(q[:, 4], table["model"])

    def hook(a):  # a deliberately too narrow band: worse than every calibrated one
        m = naive(a)[..., None]
        return m * np.exp(0.001 * (np.asarray(QUANTILES) - 0.5))

    ev = evaluate_forecasts(spec, arrays, anchors, naive, hook)
    assert ev["distribution"]["model"] == {"form": "network"}
    assert ev["distribution"]["metrics"]["garch_t"]["verdict"] == "worse"
    assert ev["distribution"]["metrics"]["model"]["coverage_95"] < 0.5


@pytest.mark.parametrize("target", ["mean_close_log_return", "closes"])
def test_the_default_band_is_the_gjr_garch_fit_on_the_training_rows(target):
    """Without a quantile head the model ships the GJR-GARCH(1,1)-t band: its parameters
    (fit on the training rows) are in the record, its 80%/95% intervals are the grid's."""
    from tickercast.evaluation.evaluate import evaluate_forecasts

    spec, arrays, anchors = _prepared(_garch_prices(2000, seed=21), target)
    close = np.asarray(arrays["close"])
    outputs = 5 if target == "closes" else 1
    naive = lambda a: np.repeat(close[a][:, None], outputs, axis=1)  # noqa: E731
    ev = evaluate_forecasts(spec, arrays, anchors, naive)
    model = ev["distribution"]["model"]
    assert model["form"] == "gjr_garch_t"
    params = model["calibration"]["params"]
    assert params["band"] == "gjr_garch_t" and params["fit_returns"] == spec.n_train - 1
    assert params["returns"] == spec.lookback + 20
    table = ev["table"]
    np.testing.assert_allclose(table["lo_80"], table["q_0.1"])
    np.testing.assert_allclose(table["hi_95"], table["q_0.975"])
    assert ev["intervals"]["95"]["scale"] == "gjr_garch_t"
    hits = (table["actual"] >= table["lo_95"]) & (table["actual"] <= table["hi_95"])
    if outputs == 1:
        assert ev["intervals"]["95"]["coverage_test"] == pytest.approx(hits.mean())
    assert len(ev["intervals"]["80"]["q"]) == outputs


def test_grid_fields_are_plain_json():
    grid = d.band_quantiles(np.array([[100.0]]), np.array([[0.02]]), np.ones((1, 4)))
    fields = d.grid_fields(grid[0])
    assert fields["quantile_levels"] == list(QUANTILES)
    assert len(fields["quantiles"]) == 1 and fields["quantiles"][0][4] == 100.0
