"""Where a version's distribution goes (issue 21): metadata.json's evaluation.distribution,
the retrain report, `models show` and the MLflow metrics."""

from __future__ import annotations

import json

import pytest

from tests.tiny_models import TICKER, copy_store


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return copy_store(tmp_path_factory.mktemp("wiring"))


def _metadata(data, version: int = 3) -> dict:
    path = data / f"models/{TICKER}/versions/{version}/metadata.json"
    return json.loads(path.read_text())


def test_metadata_records_the_distribution(data):
    record = _metadata(data)["evaluation"]["distribution"]
    assert record["levels"] == [0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975]
    assert record["model"]["form"] == "volatility_conformal"
    assert len(record["model"]["calibration"]["q"][0]) == 4
    assert {"model", "garch_t", "gjr_garch_t", "ewma", "unconditional"} <= set(record["metrics"])
    assert any("GARCH(1,1)-t (DM p" in line for line in record["verdicts"])


def test_the_retrain_report_has_the_distribution_table(data):
    from tickercast.delivery.report import retrain_report

    text = retrain_report(TICKER, "bundle", _metadata(data))
    assert "Distribution (quantile grid" in text
    assert "| garch_t |" in text
    assert "The model's band: the 20-day-volatility conformal band." in text


def test_models_show_prints_each_versions_bands(data, capsys):
    from tickercast.app.cli import main

    assert main(["models", "show", TICKER, "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "bands (the 20-day-volatility conformal band): CRPS" in out and "coverage 80%" in out
    assert "GJR-GARCH(1,1)-t (DM p" in out


def test_mlflow_metrics_carry_the_distribution(data):
    from tickercast.tracking import version_metrics

    metrics = version_metrics(_metadata(data))
    assert metrics["distribution.model.crps"] > 0
    assert 0 <= metrics["distribution.garch_t.dm_p"] <= 1
    assert "distribution.unconditional.coverage_95" in metrics


def test_mlflow_metrics_carry_the_walk_forward_distribution():
    from tickercast.tracking import version_metrics

    pooled = {"garch_t": {"crps_model": 1.0, "crps": 0.9, "p": 0.01, "verdict": "worse"}}
    metrics = version_metrics({"walk_forward": {"summary": {"distribution": pooled}}})
    assert metrics["walk_forward.distribution.garch_t.crps"] == 0.9
    assert metrics["walk_forward.distribution.garch_t.dm_p"] == 0.01
