"""`tickercast backtest`'s distribution table (issue 21): around each network's median and
naive's, the median's own band and every distribution baseline on the same origins, each
refit group calibrated on its fold's validation windows; the tables and pooled report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.synthetic import price_frame as frame
from tests.test_backtest import cfg
from tests.test_distribution import _closes, _garch_returns
from tickercast.backtest.bands import validation_rows
from tickercast.backtest.files import write_rolling
from tickercast.backtest.rolling import rolling_backtest
from tickercast.backtest.tables import format_distribution, markdown_lines, run_report
from tickercast.choices import DISTRIBUTION_BASELINES
from tickercast.folds import Fold
from tickercast.records import Backtested


class Naive:
    """A network stand-in forecasting the last close (no Keras)."""

    def __call__(self, seen, anchors, spec, train_cfg, out_dir, logger):
        def forecast(arrays, a):
            return np.asarray(arrays["close"], dtype=np.float64)[a][:, None]

        return forecast, {"epochs_run": 0}


def _backtest(tmp_path, seed: int, band: str = "volatility_conformal"):
    close = _closes(_garch_returns(1100, seed))
    spec = cfg(
        model=["lstm", "naive"], target="mean_close", horizon=3, initial=600, step=1,
        refit_every=250, val_fraction=0.3, band=band,
    )  # fmt: skip
    return rolling_backtest(frame(close), spec, tmp_path, fit=Naive())


def test_validation_rows_are_the_folds_validation_anchors():
    fold = Fold(1, test_start=100, test_end=120, val_rows=20, train_start=0)
    rows = validation_rows(fold, horizon=3)
    assert rows[0] == 79 and rows[-1] == 96  # first target day 80, last target day 99


def test_the_backtest_judges_bands_around_each_median(tmp_path):
    result = _backtest(tmp_path, seed=31)
    dist = result["distribution"]
    assert set(dist["medians"]) == {"lstm", "naive"}
    for median in ("lstm", "naive"):
        table = dist["medians"][median]["metrics"]
        assert set(table) == {"band", *DISTRIBUTION_BASELINES}
        # no quantile head: the median's band is the volatility-scaled one, the same
        assert table["volatility_conformal"]["verdict"] == "indistinguishable"
        assert abs(table["garch_t"]["coverage_95"] - 0.95) < 0.05
    # the network forecasts naive here: both medians give the same bands
    lstm, naive = dist["medians"]["lstm"]["metrics"], dist["medians"]["naive"]["metrics"]
    assert lstm["garch_t"]["crps"] == naive["garch_t"]["crps"]
    text = format_distribution(dist["rows"])
    assert "GARCH" not in text and "garch_t" in text and "CRPS" in text
    scores = result["distribution_scores"]
    assert {"median", "date", "band_crps", "garch_t_crps"} <= set(scores.columns)
    assert len(scores) == 2 * result["origins"]["origins"]


def test_the_median_ships_the_configured_band_fit_on_its_folds_training_rows(tmp_path):
    """The default band (GJR-GARCH(1,1)-t, fit on each fold's training rows, run over the
    origins' last lookback + 20 returns) is the median's own; it covers as calibrated."""
    result = _backtest(tmp_path, seed=31, band="gjr_garch_t")
    table = result["distribution"]["medians"]["naive"]["metrics"]
    assert set(table) == {"band", *DISTRIBUTION_BASELINES}
    assert table["band"]["crps"] != table["volatility_conformal"]["crps"]
    assert table["band"]["crps"] != table["gjr_garch_t"]["crps"]  # not the full-history fit
    assert abs(table["band"]["coverage_95"] - 0.95) < 0.05


def test_reports_print_the_table_and_pool_across_tickers(tmp_path):
    results = {}
    for seed, ticker in ((31, "AAA"), (32, "BBB")):
        result = _backtest(tmp_path / ticker, seed)
        paths = write_rolling(tmp_path / f"out-{ticker}", result, ticker)
        json_part = {k: v for k, v in result.items() if not isinstance(v, pd.DataFrame)}
        results[ticker] = Backtested(
            ticker=ticker, **json_part, **{k: str(v) for k, v in paths.items()}
        )
    lines = markdown_lines("AAA", results["AAA"])
    assert any(line.startswith("| lstm | garch_t |") for line in lines)
    assert any("around naive's median, its band:" in line for line in lines)
    report = run_report(results)
    assert "## Distribution pooled across tickers" in report
    assert "around lstm's median (2 tickers), its band:" in report
    assert "GJR-GARCH(1,1)-t (DM p" in report


def test_the_benchmark_tables_per_ticker_and_pooled(tmp_path):
    from bench.forecast_quality import distribution_rows

    results = [_backtest(tmp_path / str(seed), seed) for seed in (31, 32)]
    lines, rel, verdicts = distribution_rows(["AAA", "BBB"], results, "lstm")
    assert lines[4].startswith("| AAA | ") and lines[5].startswith("| BBB | ")
    assert lines[6].startswith("| pooled | - | CRPS +0.0% vs band, p 1")
    assert lines[-1].startswith("Pooled, lstm's band: ") and "GARCH(1,1)-t (DM p" in lines[-1]
    assert lines[-1] == f"Pooled, lstm's band: {verdicts}"  # what RESULTS.md's rows quote
    assert rel["volatility_conformal"] == 0.0 and set(rel) == set(DISTRIBUTION_BASELINES)
