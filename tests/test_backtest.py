"""Rolling-origin backtest: baselines and MASE against hand-computed numbers, the
vectorised baselines against the per-origin loop, no look-ahead (proved two ways), and
the lag diagnostic."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import price_frame as frame
from tickercast.backtest.initial import check_initial
from tickercast.backtest.rolling import best_lag, rolling_backtest, score_forecasts
from tickercast.choices import BASELINES
from tickercast.evaluation.baseline_registry import forecast_rolling
from tickercast.evaluation.baselines import training_scale
from tickercast.folds import BacktestError, refit_folds, rolling_origins
from tickercast.modeling.preprocess import target_prices, to_prices
from tickercast.sections import RollingSpec

SHORT = np.array([10.0, 11.0, 13.0, 12.0, 14.0, 15.0, 13.0, 16.0])


def random_walk(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 * np.exp(np.cumsum(rng.normal(0, 0.015, n)))


def cfg(**overrides) -> RollingSpec:
    base = {
        "start": None,
        "end": None,
        "features": ["close"],
        "lookback": 10,
        "val_fraction": 0.15,
        "model": ["naive"],
        "target": "close",
        "horizon": 1,
        "initial": 4,
        "step": 1,
        "window": "expanding",
        "refit_every": 1000,
        "ma_window": 2,
        "ridge_lags": 1,
        "ridge_alpha": 1.0,
        "max_lag": None,
        "seed": 1,
    }
    return RollingSpec(**{**base, **overrides})


# --------------------------------------------------------------------------- origins


def test_origins_expanding_and_sliding():
    o = rolling_origins(20, initial=5, step=3, horizon=2)
    assert o.rows.tolist() == [4, 7, 10, 13, 16]  # the target row o + 2 must exist (<= 19)
    assert o.starts.tolist() == [0] * 5
    s = rolling_origins(20, initial=5, step=3, horizon=2, window="sliding")
    assert s.starts.tolist() == [0, 3, 6, 9, 12]  # always the last 5 rows up to the origin
    with pytest.raises(BacktestError, match="needs at least 22 rows"):
        rolling_origins(20, initial=20, step=1, horizon=2)


def test_a_network_is_refit_every_k_origins_seeing_only_rows_up_to_its_first():
    o = rolling_origins(100, initial=40, step=5, horizon=3, window="sliding")
    plan = refit_folds(o, refit_every=3, val_fraction=0.25)
    assert [g.tolist() for _, g in plan] == [[39, 44, 49], [54, 59, 64], [69, 74, 79], [84, 89, 94]]
    first, group = plan[1]
    assert (first.train_start, first.test_start, first.test_end) == (15, 55, 68)
    assert first.seen_rows == 40 and first.val_rows == 10 and first.train_rows == 30


def test_too_short_a_first_window_is_refused_naming_the_model():
    settings = dict(horizon=5, lookback=60, val_fraction=0.15, ridge_lags=5, ma_window=20)
    with pytest.raises(BacktestError, match=r"model 'lstm': it needs at least \d+ rows"):
        check_initial(70, ["naive", "lstm"], **settings)
    with pytest.raises(BacktestError, match="model 'ridge'.*ridge_lags 5"):
        check_initial(15, ["ridge"], **settings)
    with pytest.raises(BacktestError, match="moving_average'.*ma_window 20"):
        check_initial(19, ["moving_average"], **settings)
    with pytest.raises(BacktestError, match="moving_average_horizon'.*horizon 5"):
        check_initial(4, ["moving_average_horizon"], **settings)
    check_initial(100, ["naive", "lstm", "ridge", "moving_average"], **settings)
    # a parameter not given is the registry's default (ma_window 20)
    with pytest.raises(BacktestError, match="at least 20 rows"):
        check_initial(19, ["moving_average"], horizon=5, lookback=60, val_fraction=0.15)


# --------------------------------------------------------------------------- baselines by hand


def test_each_baseline_against_hand_computed_forecasts():
    o = rolling_origins(len(SHORT), initial=4, step=1, horizon=1)  # origins rows 3, 4, 5, 6
    assert o.rows.tolist() == [3, 4, 5, 6]

    def one(name, origins=o, **kw):
        return forecast_rolling(name, SHORT, origins, kw)[:, 0].tolist()

    assert one("naive") == [12, 14, 15, 13]
    # last + (last - first) / (days - 1), over the expanding window from day 0
    assert one("drift") == pytest.approx([12 + 2 / 3, 14 + 4 / 4, 15 + 5 / 5, 13 + 3 / 6])
    assert one("mean") == pytest.approx([46 / 4, 60 / 5, 75 / 6, 88 / 7])
    assert one("moving_average", ma_window=2) == pytest.approx([12.5, 13.0, 14.5, 14.0])
    assert one("moving_average_horizon") == [12, 14, 15, 13]  # horizon 1: the last close
    # sliding window of 4 days: the window's own first close and mean
    s = rolling_origins(len(SHORT), initial=4, step=1, horizon=1, window="sliding")
    assert one("drift", s) == pytest.approx([12 + 2 / 3, 14 + 3 / 3, 15 + 2 / 3, 13 + 1 / 3])
    assert one("mean", s) == pytest.approx([46 / 4, 50 / 4, 54 / 4, 54 / 4])
    # two steps ahead: drift walks on, the flat ones stay flat
    o2 = rolling_origins(len(SHORT), initial=4, step=2, horizon=2)  # origins rows 3, 5
    np.testing.assert_allclose(
        forecast_rolling("drift", SHORT, o2), [[12 + 2 / 3, 12 + 4 / 3], [16, 17]], rtol=1e-12
    )
    assert forecast_rolling("naive", SHORT, o2).tolist() == [[12, 12], [15, 15]]
    assert forecast_rolling("moving_average_horizon", SHORT, o2).tolist() == [
        [12.5, 12.5],
        [14.5, 14.5],
    ]


def test_ridge_against_a_hand_computed_regression():
    """One lag, one step: at origin o regress r_(t+1) on r_t over t in [1, o-1] (r_t the
    log return into day t), standardised, intercept free, penalty alpha."""
    alpha, o = 0.5, 6
    r = [math.log(SHORT[t] / SHORT[t - 1]) for t in range(1, len(SHORT))]  # r[t-1] = r_t
    xs = [r[t - 1] for t in range(1, o)]  # x_t = r_t
    ys = [r[t] for t in range(1, o)]  # y_t = r_(t+1)
    m = len(xs)
    mx, my = sum(xs) / m, sum(ys) / m
    sd = math.sqrt(sum((x - mx) ** 2 for x in xs) / m)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / m
    beta = m * cov / sd / (m + alpha)  # (Z'Z + alpha)^-1 Z'y with Z'Z = m
    expected = SHORT[o] * math.exp(my + (r[o - 1] - mx) / sd * beta)
    origins = rolling_origins(len(SHORT), initial=4, step=1, horizon=1)
    got = forecast_rolling("ridge", SHORT, origins, {"ridge_lags": 1, "ridge_alpha": alpha})
    assert got[origins.rows.tolist().index(o), 0] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- MASE


def test_mase_against_a_hand_computed_value():
    """`--mase-scale origin`, Hyndman & Koehler with a rolling origin: each forecast error
    is divided by the in-sample MAE of the one-step naive forecast on that origin's own
    training window; the default `series` divides by the whole series' one-step MAE."""
    o = rolling_origins(len(SHORT), initial=4, step=1, horizon=1)
    # |diffs| 1 2 1 2 1 2 3: windows [0..3], [0..4], [0..5], [0..6]
    assert training_scale(SHORT, o).tolist() == pytest.approx([4 / 3, 6 / 4, 7 / 5, 9 / 6])
    result = rolling_backtest(
        frame(SHORT), cfg(model=["naive", "drift"], mase_scale="origin"), out_dir=None
    )
    rows = {r["model"]: r for r in result["metrics"]}
    # actual 14 15 13 16; naive 12 14 15 13 -> |errors| 2 1 2 3
    naive = (2 / (4 / 3) + 1 / 1.5 + 2 / 1.4 + 3 / 1.5) / 4
    # drift 12.667 15 16 13.5 -> |errors| 4/3 0 3 2.5
    drift = ((4 / 3) / (4 / 3) + 0 + 3 / 1.4 + 2.5 / 1.5) / 4
    assert rows["naive"]["mase"] == pytest.approx(naive)
    assert rows["drift"]["mase"] == pytest.approx(drift)
    assert rows["naive"]["mae"] == pytest.approx(2.0) and rows["naive"]["skill"] == 0.0
    series = rolling_backtest(frame(SHORT), cfg(model=["naive", "drift"]), out_dir=None)
    scale = np.mean(np.abs(np.diff(SHORT)))  # |diffs| 1 2 1 2 1 2 3 over the whole series
    by = {r["model"]: r for r in series["metrics"]}
    assert by["naive"]["mase"] == pytest.approx(2.0 / scale)
    assert by["drift"]["mase"] == pytest.approx(((4 / 3) + 0 + 3 + 2.5) / 4 / scale)


# --------------------------------------------------------------------------- no look-ahead


class ScalerEcho:
    """A network stand-in (no Keras) that records what each fit sees and forecasts from
    the fit's scalers and training targets: a leak into either changes its forecasts."""

    def __init__(self):
        self.seen = []

    def __call__(self, seen, anchors, spec, train_cfg, out_dir, logger):
        self.seen.append({"arrays": seen, "anchors": anchors, "spec": spec})
        col = spec.features.index("close")
        level = float(np.mean(seen["y"][anchors["train"]]))
        width = seen["y"].shape[1]

        def forecast(arrays, a):
            scaled = 0.5 * arrays["x"][a, col] + 0.5 * level
            return to_prices(spec, np.repeat(scaled[:, None], width, axis=1))

        return forecast, {"epochs_run": 0}


def backtest_with_echo(prices, out_dir, **overrides):
    echo = ScalerEcho()
    settings = dict(
        features=["close", "volume", "volatility"],
        model=["lstm", *BASELINES],
        target="closes",
        horizon=2,
        initial=150,
        step=7,
        refit_every=4,
        ma_window=10,
        ridge_lags=3,
    )
    result = rolling_backtest(prices, cfg(**{**settings, **overrides}), out_dir, fit=echo)
    return result, echo


@pytest.mark.parametrize("window", ["expanding", "sliding"])
def test_no_fit_sees_data_dated_at_or_after_its_first_forecast_day(window, tmp_path):
    prices = frame(random_walk(420), np.random.default_rng(1).integers(1_000, 5_000, 420))
    result, echo = backtest_with_echo(prices, tmp_path, window=window)
    table = result["table"]
    lstm = table[(table["model"] == "lstm") & (table["output"] == 1)]
    folds = result["folds"]["lstm"]
    assert len(echo.seen) == len(folds) >= 3
    for fold, seen in zip(folds, echo.seen, strict=True):
        arrays, anchors, spec = seen["arrays"], seen["anchors"], seen["spec"]
        origins = lstm.loc[lstm["fold"] == fold["fold"], "origin"].to_numpy("datetime64[D]")
        first_forecast_day = np.busday_offset(origins.min(), 1)  # bdate_range data
        assert np.datetime64(fold["refit_origin"]) == origins.min()
        assert arrays["dates"].max() < first_forecast_day
        assert arrays["dates"].max() == origins.min()  # ...and everything up to the origin
        finite = np.flatnonzero(np.isfinite(arrays["y"][:, 0]))
        assert (arrays["dates"][finite + spec.horizon] < first_forecast_day).all()
        assert len(anchors["test"]) == 0
        # scalers fitted on the window's own training rows (sliding: the last `initial` days)
        assert str(arrays["dates"][0]) == fold["train_first"]
        if window == "sliding":
            assert len(arrays["dates"]) == 150
        train_close = arrays["close"][: spec.n_train]
        assert spec.target_scaler.max == [train_close.max()]
        assert spec.target_scaler.min == [train_close.min()]


def test_changing_the_future_changes_no_forecast_made_before_it(tmp_path):
    """Poison every price dated on or after an origin's first forecast day: every model's
    forecasts from that origin and all earlier ones stay bit-identical (networks, their
    scalers and validation included), while the later ones change."""
    close = random_walk(420)
    volume = np.random.default_rng(1).integers(1_000, 5_000, 420)
    prices = frame(close, volume)
    for window in ("expanding", "sliding"):
        clean, _ = backtest_with_echo(prices, tmp_path, window=window)
        table = clean["table"]
        origins = np.sort(table["origin"].unique())
        for origin in (origins[0], origins[5], origins[len(origins) // 2], origins[-2]):
            future = pd.to_datetime(prices["date"]) > origin
            dirty_prices = prices.copy()
            for col in ("open", "high", "low", "close", "adj_close"):
                dirty_prices.loc[future, col] *= 3.0
            dirty_prices.loc[future, "volume"] *= 7
            dirty, _ = backtest_with_echo(dirty_prices, tmp_path, window=window)
            before = table["origin"] <= origin
            d = dirty["table"]
            assert d["origin"].equals(table["origin"]) and d["model"].equals(table["model"])
            for col in ("forecast", "lo_80", "hi_80", "lo_95", "hi_95", "last_close"):
                np.testing.assert_array_equal(
                    d.loc[before, col].to_numpy(), table.loc[before, col].to_numpy(), err_msg=col
                )
            assert not np.allclose(d.loc[~before, "forecast"], table.loc[~before, "forecast"])
            assert not np.allclose(d.loc[before, "actual"], table.loc[before, "actual"])


# --------------------------------------------------------------------------- lag diagnostic


def test_lag_diagnostic_flags_the_shifted_last_value_not_the_true_future():
    close = random_walk(600, seed=7)
    o = rolling_origins(len(close), initial=100, step=1, horizon=1)
    y = target_prices(close, 1, "close")
    rows = o.rows
    forecasts = {
        "naive": close[rows][:, None],
        "shifted": close[rows - 2][:, None],  # the last observed value, two more days late
        "oracle": y[rows],  # the true future
    }
    scored = score_forecasts(
        y[rows],
        forecasts,
        close[rows],
        training_scale(close, o),
        ["t+1"],
        rows=rows,
        target=y,
        max_lag=6,
    )
    by = {r["model"]: r for r in scored}
    assert by["shifted"]["lag"] == 3 and by["shifted"]["lagging"] is True
    assert by["shifted"]["lag_corr"] == pytest.approx(1.0)
    assert by["naive"]["lag"] == 1 and by["naive"]["lagging"] is True
    assert by["oracle"]["lag"] == 0 and by["oracle"]["lagging"] is False
    assert by["oracle"]["skill"] == 1.0 and by["oracle"]["rmse"] == 0.0


def test_lag_per_horizon_step_and_skill_keeps_a_lag_unflagged():
    close = random_walk(600, seed=8)
    h = 4
    o = rolling_origins(len(close), initial=100, step=2, horizon=h)
    y = target_prices(close, h, "closes")
    rows = o.rows
    naive = np.repeat(close[rows][:, None], h, axis=1)
    for j in range(h):  # the last close is the close j + 1 days before step j's target
        assert best_lag(naive[:, j], y[:, j], rows, 10)[0] == j + 1
    # mostly the last close, partly the truth: it tracks the series a day late, but with a
    # smaller error than naive (positive skill), so it is not flagged
    better = 0.6 * close[rows] + 0.4 * y[rows, 0]
    scored = score_forecasts(
        y[rows][:, :1],
        {"naive": naive[:, :1], "better": better[:, None]},
        close[rows],
        training_scale(close, o),
        ["t+1"],
        rows=rows,
        target=y[:, :1],
        max_lag=10,
    )
    by = {r["model"]: r for r in scored}
    assert by["better"]["lag"] == 1 and by["better"]["skill"] > 0
    assert by["better"]["lagging"] is False


def test_vector_targets_get_a_pooled_row_and_one_per_step():
    close = random_walk(300, seed=2)
    result = rolling_backtest(
        frame(close),
        cfg(model=["drift", "mean"], target="closes", horizon=3, initial=50, step=5),
        None,
    )
    steps = [(r["model"], r["step"]) for r in result["metrics"]]
    assert steps[:4] == [("drift", "all"), ("drift", "t+1"), ("drift", "t+2"), ("drift", "t+3")]
    assert {m for m, _ in steps} == {"drift", "mean", "naive"}  # naive: the skill reference
    by = {(r["model"], r["step"]): r for r in result["metrics"]}
    assert (
        by[("drift", "all")]["n"]
        == 3 * by[("drift", "t+1")]["n"]
        == 3 * result["origins"]["origins"]
    )
    table = result["table"]
    assert (table["target_date"] > table["origin"]).all()
    assert table.groupby("model")["origin"].apply(tuple).nunique() == 1  # same origins


# --------------------------------------------------------------------------- reports


def test_the_report_says_worse_when_worse_and_na_when_no_direction():
    """A baseline far worse than naive is "significantly worse", not "not significantly
    better (p = 1.3e-57)"; naive's direction is n/a, not 0%; a zero skill is never "-0.0%";
    and the report says what each baseline is, with the parameters used."""
    from tickercast.backtest.tables import format_table, markdown_lines

    close = random_walk(1200, seed=4)
    result = rolling_backtest(
        frame(close),
        cfg(model=["naive", "mean", "moving_average"], initial=300, step=1, ma_window=7),
        None,
    )
    by = {r["model"]: r for r in result["metrics"]}
    assert by["mean"]["dm"] == "worse" and by["mean"]["p"] < 1e-6 and by["mean"]["lagging"]
    assert by["naive"]["directional_accuracy"] is None
    # markdown_lines reads a Backtested record's fields; the engine's dict has the same names
    report = "\n".join(markdown_lines("RW", SimpleNamespace(**result)))
    note = next(line for line in report.splitlines() if "**mean is lagging**" in line)
    assert "it is significantly worse than naive (at 5%, DM p < 0.001)" in note
    assert "not significantly better" not in note
    assert "| naive | t+1 | 900 |" in report and "| n/a |" in report
    assert "- `moving_average`: the mean of the last 7 closes" in report
    assert "- `mean`: the mean close of the training window" in report
    for text in (report, format_table(result["metrics"])):
        assert "-0.0%" not in text and "+0.0%" in text  # naive's own skill
    tie = [{**by["naive"], "model": "tie", "skill": -1e-17}]
    assert "+0.0%" in format_table(tie) and "-0.0" not in format_table(tie)


def test_walk_forward_summary_prints_no_negative_zero():
    from tickercast.backtest.tables import summary_lines

    cell = {"mean": -1e-17, "std": 0.0, "folds": 2}
    na = {"mean": None, "std": 0.0, "folds": 0}
    backtest = {
        "n_folds": 2,
        "epochs_per_fold": 1,
        "summary": {
            "metrics": {
                "naive": {"rmse": cell, "skill": cell, "directional_accuracy": na},
            },
            "significance": {},
        },
    }
    text = "\n".join(summary_lines(backtest))
    assert "-0.0" not in text and "+0.0% ± 0.0%" in text and "n/a" in text
