"""The band a version ships (issue 21 item 4), GJR-GARCH(1,1)-t around the network's
forecast: the same band wherever a forecast goes (metadata, the window table the gate
reads, the gate's rebuild from the lake, predict and serve JSON, the fan chart, the
retrain report, `models show`, MLflow). The SavedModel's grid is checked against predict
in tests/test_saved_model_serving.py."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from tests.tiny_models import TICKER, copy_store, export_model, tiny_config
from tickercast.choices import QUANTILES


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """(data dir, bundle): store v3's ridge network exported again shipping GJR-GARCH."""
    from tickercast.delivery.bundle import bundle_path, load_bundle
    from tickercast.market.ingest import ingest_ticker

    data = copy_store(tmp_path_factory.mktemp("shipped"))
    work = data / "work" / "gjr"
    work.mkdir(parents=True)
    for name in ("model.keras", "history.json"):
        shutil.copy(bundle_path(data, TICKER, 3) / name, work / name)
    ingested = ingest_ticker(TICKER, "sample", data)
    config = tiny_config(data, band="gjr_garch_t")
    path = export_model(data, ingested, config, work / "model.keras", work / "history.json")
    return data, load_bundle(path)


def _written_grid(bundle) -> tuple[pd.DataFrame, np.ndarray]:
    table = pd.read_parquet(bundle.path / "predictions.parquet")
    return table, table[[f"q_{level:g}" for level in QUANTILES]].to_numpy()


def test_metadata_records_the_fitted_band_and_its_intervals(shipped):
    _, bundle = shipped
    record = bundle.metadata["evaluation"]["distribution"]["model"]
    params = record["calibration"]["params"]
    assert record["form"] == params["band"] == "gjr_garch_t"  # a real fit, not EWMA's
    assert params["returns"] == bundle.spec.lookback + 20 and params["fit_returns"] >= 250
    assert 0 < params["alpha"] + params["gamma"] / 2 + params["beta"] < 1
    intervals = bundle.metadata["intervals"]
    assert {cal["scale"] for cal in intervals.values()} == {"gjr_garch_t"}
    assert bundle.metadata["config"]["band"] == "gjr_garch_t"  # MLflow params carry it


def test_the_gate_rebuilds_the_recorded_band_and_predict_serves_it(shipped):
    """The grid the evaluation recorded (what the gate compares by CRPS) equals the gate's
    rebuild from the lake for a re-run champion, and predict's grid (closes up to the last
    window's origin); the intervals are the grid's 80%/95% levels."""
    from app.service import ForecastRow
    from tickercast.delivery.fanchart import fan_chart
    from tickercast.delivery.gate import quantiles_at
    from tickercast.delivery.predict import forecast_next
    from tickercast.market import lake

    data, bundle = shipped
    table, written = _written_grid(bundle)
    prices = lake.read_partition(data, TICKER)
    grid = quantiles_at(bundle, prices, table, table[["model"]].to_numpy())
    np.testing.assert_allclose(grid[:, 0, :], written, rtol=1e-9)
    np.testing.assert_allclose(table["lo_95"], written[:, QUANTILES.index(0.025)], rtol=1e-12)
    upto = prices[pd.to_datetime(prices["date"]) <= pd.Timestamp(table["anchor_date"].iloc[-1])]
    (row,) = forecast_next(bundle, upto, TICKER)
    assert row["forecast"] == pytest.approx(table["model"].iloc[-1], rel=1e-6)
    np.testing.assert_allclose(row["quantiles"], written[-1], rtol=1e-6)
    assert row["lo_80"] == row["quantiles"][QUANTILES.index(0.1)]
    assert row["quantile_levels"] == list(QUANTILES)
    assert ForecastRow(**row).quantiles == row["quantiles"]  # serve's JSON schema
    svg = fan_chart(list(upto["date"].astype(str)), list(upto["close"]), [row], TICKER)
    assert svg.count('class="quantile"') == len(QUANTILES)


def test_a_posted_window_gets_the_band_from_the_returns_it_holds(shipped):
    """POST /predict sends `lookback` rows: the recursion reads the returns they hold and
    counts the missing ones at their expectation; with this fit's short memory (beta
    about 0.74) the band stays within a few percent of the lake's (which reads
    lookback + 20 returns; a beta near 1 moves it more: tickercast.delivery.predict's
    docstring), the forecast is the same."""
    from tickercast.delivery.predict import forecast_next, forecast_window
    from tickercast.market import lake

    data, bundle = shipped
    prices = lake.read_partition(data, TICKER)
    (lake_row,) = forecast_next(bundle, prices, TICKER)
    window = prices[bundle.spec.features].tail(bundle.spec.lookback).to_numpy().tolist()
    (posted,) = forecast_window(bundle, window, TICKER)
    assert posted["forecast"] == pytest.approx(lake_row["forecast"], rel=1e-9)
    width = np.subtract(posted["quantiles"][-1], posted["quantiles"][0])
    lake_width = lake_row["quantiles"][-1] - lake_row["quantiles"][0]
    assert (
        bundle.metadata["evaluation"]["distribution"]["model"]["calibration"]["params"]["beta"]
        < 0.9
    )
    assert width == pytest.approx(lake_width, rel=0.03)
    assert np.all(np.diff(posted["quantiles"]) >= 0)


def test_a_window_with_the_recursions_rows_gets_the_lakes_band(shipped):
    """Sent with the rows the recursion reads before the lookback (window_rows: lookback +
    20 returns, from closes: one row more), the posted band is the lake's, not close to it."""
    from tickercast.delivery.predict import forecast_next, forecast_window, window_rows
    from tickercast.market import lake

    data, bundle = shipped
    lookback = bundle.spec.lookback
    assert window_rows(bundle) == (lookback, lookback + 21)
    prices = lake.read_partition(data, TICKER)
    (lake_row,) = forecast_next(bundle, prices, TICKER)
    window = prices[bundle.spec.features].tail(lookback + 21).to_numpy().tolist()
    (posted,) = forecast_window(bundle, window, TICKER)
    assert posted["forecast"] == pytest.approx(lake_row["forecast"], rel=1e-9)
    np.testing.assert_allclose(posted["quantiles"], lake_row["quantiles"], rtol=1e-9)


def test_the_report_models_show_and_mlflow_name_the_shipped_band(shipped, capsys):
    from tickercast.app.cli import main
    from tickercast.delivery.report import retrain_report
    from tickercast.tracking import version_metrics

    data, bundle = shipped
    text = retrain_report(TICKER, "bundle", bundle.metadata)
    assert "The model's band: GJR-GARCH(1,1)-t around the model's forecast, fit on" in text
    assert main(["models", "show", TICKER, "--data-dir", str(data)]) == 0
    assert "bands (GJR-GARCH(1,1)-t): CRPS" in capsys.readouterr().out
    metrics = version_metrics(bundle.metadata)
    _, written = _written_grid(bundle)
    record = bundle.metadata["evaluation"]["distribution"]["metrics"]["model"]
    assert metrics["distribution.model.crps"] == pytest.approx(record["crps"])
    assert 0 <= metrics["distribution.volatility_conformal.dm_p"] <= 1
