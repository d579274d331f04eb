"""The retrain flow end to end with walk-forward and the champion gate: what the bundle
holds, what the registry records, and the run's artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.prefect_runs import artifacts_of
from tests.tiny_models import TICKER, tiny_config
from tickercast.evaluation.names import FORECASTERS


@pytest.fixture(scope="module")
def first_run(prefect_server, tmp_path_factory):
    from tickercast.flows.retrain import retrain

    config = tiny_config(
        tmp_path_factory.mktemp("gate-flow"),
        preset="recommended",  # shrunk toward naive: never significantly worse than it
        walk_forward_folds=2,
        walk_forward_epochs=1,
    )
    state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    return config, state, state.result()


def test_bundle_has_the_full_evaluation(first_run):
    _, _, result = first_run
    bundle = Path(result[TICKER]["bundle"])
    for name in (
        "residuals.png",
        "folds.png",
        "backtest.json",
        "backtest_predictions.parquet",
        "serving.json",
        "saved_model/saved_model.pb",
    ):
        assert (bundle / name).is_file(), name
    manifest = json.loads((bundle / "manifest.json").read_text())["files"]
    assert "saved_model/saved_model.pb" in manifest and "folds.png" in manifest
    meta = json.loads((bundle / "metadata.json").read_text())
    assert set(meta["metrics"]) == set(FORECASTERS)
    assert set(meta["evaluation"]["baselines"]) == set(FORECASTERS) - {"model"}
    for values in meta["metrics"].values():
        assert {"rmse", "mae", "mape", "smape", "mase", "directional_accuracy", "skill"} <= set(
            values
        )
    assert meta["walk_forward"]["n_folds"] == 2
    assert meta["walk_forward"]["summary"]["metrics"]["model"]["rmse"]["folds"] == 2
    assert {k: v["nominal"] for k, v in meta["intervals"].items()} == {"80": 0.8, "95": 0.95}
    assert 0 <= meta["intervals"]["80"]["coverage_test"] <= 1
    # the raw window: the closes of the lookback + 20 daily returns the shipped GJR band's
    # recursion reads (one more than lookback 20 plus the volatility feature's warm-up), of
    # the one field the recommended features read (close)
    assert meta["serving"]["inputs"]["window"]["shape"] == [None, 41, 1]
    assert meta["serving"]["fields"] == ["close"]


def test_first_version_becomes_champion_and_artifacts_are_published(first_run):
    from tickercast.delivery.registry import read_registry

    config, state, result = first_run
    promotion = result[TICKER]["promotion"]
    assert promotion["action"] == "promote" and promotion["version"] == 1
    registry = read_registry(config.execution.data_dir, TICKER)
    assert registry["champion"] == 1 and registry["lineage"] == [1]
    slug = TICKER.lower()
    found = artifacts_of(state)
    assert {f"metrics-{slug}", f"report-{slug}", f"bundle-{slug}", f"promotion-{slug}"} <= set(
        found
    )
    assert "(file:///" in found[f"bundle-{slug}"].data
    report = found[f"report-{slug}"].data
    assert "sMAPE" in report and "ridge" in report and "Walk-forward: 2" in report
    assert "- `moving_average`: the mean of the last 20 closes" in report  # what each one is
    assert "test coverage" in report and "the naive last-close forecast (RMSE skill" in report
    assert "DM p" in report and "DM p, model vs it (pooled)" in report
    meta = json.loads((Path(result[TICKER]["bundle"]) / "metadata.json").read_text())
    assert 0.0 <= meta["shrinkage"]["alpha"] <= 1.0


def test_an_unchanged_rerun_exports_nothing_and_a_changed_config_does(first_run, capsys):
    from tickercast.app.cli import main
    from tickercast.delivery.registry import read_registry

    config, _, _ = first_run
    argv = ["retrain", "--tickers", TICKER, "--start", "2019-01-01", "--lookback", "20"]
    argv += ["--units", "8", "4", "--epochs", "2", "--batch-size", "64"]
    argv += ["--walk-forward-folds", "2", "--walk-forward-epochs", "1"]
    argv += ["--data-dir", config.execution.data_dir]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{TICKER}: unchanged since v1: no new version, registry untouched" in out
    versions = Path(config.execution.data_dir) / "models" / TICKER / "versions"
    assert sorted(p.name for p in versions.iterdir()) == ["1"]
    registry = read_registry(config.execution.data_dir, TICKER)
    assert registry["champion"] == 1 and [e["action"] for e in registry["history"]] == ["promote"]

    assert main([*argv, "--epochs", "3"]) == 0  # a changed config field: a new version
    out = capsys.readouterr().out
    assert f"{TICKER}: bundle " in out and "versions/2" in out
    history = read_registry(config.execution.data_dir, TICKER)["history"]
    assert [e["version"] for e in history] == [1, 2]
    assert "DM p" in history[-1]["reason"]


def test_a_scale_free_champion_forecasts_from_a_raw_window_and_its_last_close(first_run):
    from tickercast.delivery.predict import forecast_next, forecast_window
    from tickercast.delivery.registry import load_champion
    from tickercast.market import lake
    from tickercast.modeling.features import build_features

    config, _, _ = first_run
    bundle = load_champion(config.execution.data_dir, TICKER)
    assert bundle.spec.features == ["log_return", "volatility"]
    prices = lake.read_partition(config.execution.data_dir, TICKER)
    (expected,) = forecast_next(bundle, prices, TICKER)
    frame = build_features(prices, bundle.spec.features)
    window = frame[bundle.spec.features].tail(bundle.spec.lookback).to_numpy(dtype=float)
    last = float(prices["close"].iloc[-1])
    (row,) = forecast_window(bundle, window.tolist(), TICKER, last_close=last)
    assert row["forecast"] == pytest.approx(expected["forecast"], rel=1e-5)
    # the shipped GJR band reads the window's `lookback` returns, the lake's lookback + 20:
    # the 20 missing count at their expectation, close to the lake's band on this short fit
    assert row["quantiles"] is not None and row["lo_80"] == row["quantiles"][2]
    assert row["lo_80"] == pytest.approx(expected["lo_80"], rel=1e-3)
    with pytest.raises(ValueError, match="send last_close"):
        forecast_window(bundle, window.tolist(), TICKER)
