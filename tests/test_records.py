"""Step records: numpy numbers in their free-form fields become Python numbers (so cache
keys and JSON results work), and a recorded forecast table is read only as recorded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tickercast.records import Evaluated, Exported, ForecastFile, Trained


def _exported(metrics: dict) -> Exported:
    return Exported(ticker="AAPL", bundle="/b/1", version=1, metrics=metrics, verdict="ok")


def test_numpy_scalars_become_python_numbers_and_the_record_keys_and_round_trips():
    from tickercast.tasks.caching import step_key

    metrics = {
        "model": {"rmse": np.float64(1.5), "n": np.int64(3), "up": np.bool_(True)},
        "folds": [np.float32(0.25), [np.int32(2), 4.0]],
    }
    record = _exported(metrics)
    model = record.metrics["model"]
    assert type(model["rmse"]) is float and type(model["n"]) is int
    assert type(model["up"]) is bool and type(record.metrics["folds"][0]) is float
    assert record.metrics["folds"][1] == [2, 4.0]
    plain = _exported({"model": {"rmse": 1.5, "n": 3, "up": True}, "folds": [0.25, [2, 4.0]]})
    # what Prefect's cache key and its JSON result storage do with it
    assert step_key("s", ["tickercast.records"], {"x": record}) == step_key(
        "s", ["tickercast.records"], {"x": plain}
    )
    text = record.model_dump_json()
    assert json.loads(text)["metrics"]["model"] == {"rmse": 1.5, "n": 3, "up": True}
    assert Exported.model_validate_json(text) == record


def test_a_numpy_array_in_a_record_is_refused_with_a_reason():
    with pytest.raises(TypeError, match="numpy ndarray"):
        _exported({"model": np.arange(3.0)})


def test_a_forecast_file_loads_only_as_recorded(tmp_path):
    from tickercast.evaluation import window_table

    path = window_table.write(tmp_path / "p.parquet", pd.DataFrame({"model": [1.0, 2.0]}))
    recorded = ForecastFile.of(path)
    assert recorded.load()["model"].tolist() == [1.0, 2.0]
    recorded.check()
    window_table.write(path, pd.DataFrame({"model": [1.0, 2.5]}))
    with pytest.raises(window_table.TableChanged, match=f"{path} does not match"):
        recorded.load()
    with pytest.raises(window_table.TableChanged, match="p.parquet"):
        recorded.check()


def test_evaluated_names_its_forecast_table_in_the_bundle(tmp_path):
    from tickercast import layout

    files = dict.fromkeys(("metrics_json", "loss_png", "forecast_png", "residuals_png"), "/f")
    predictions = ForecastFile(path=str(tmp_path / "p.parquet"), sha256="0" * 64)
    record = Evaluated(
        ticker="AAPL",
        metrics={"model": {"rmse": np.float64(2.0)}},
        verdict="",
        intervals={},
        evaluation={},
        predictions=predictions,
        **files,
    )
    assert record.bundle_files()[layout.PREDICTIONS_FILE] == tmp_path / "p.parquet"
    assert Evaluated.model_validate_json(record.model_dump_json()) == record


def test_a_trained_record_names_a_model_or_the_champion_it_kept(tmp_path):
    """A fine-tune that never beat the champion ships nothing: its record names the
    champion kept (and why, from its history), never a model file as well or neither."""
    history = tmp_path / "history.json"
    summary = {"start_val_loss": 0.0123, "history": {"val_loss": [0.0130, 0.0127]}}
    history.write_text(json.dumps(summary))
    fields = dict(ticker="AAA", history=str(history), best_epoch=0, epochs_run=2)
    kept = Trained(**fields, model=None, kept_champion=3).kept()
    assert (kept.ticker, kept.version) == ("AAA", 3)
    assert kept.reason == (
        "the fine-tune never beat champion v3's weights on tonight's validation windows "
        "(their loss 0.0123, best of 2 epochs 0.0127): champion v3 kept, no new version"
    )
    # within warm_start_drift no epoch ran: the reason says the champion still fits
    still = {"start_val_loss": 0.0123, "history": {}, "warm_start": {"keep_at": 0.0126}}
    history.write_text(json.dumps(still))
    kept = Trained(**{**fields, "epochs_run": 0}, model=None, kept_champion=3).kept()
    assert kept.reason == (
        "champion v3's weights still fit tonight's validation windows (their loss 0.0123, "
        "at most 0.0126 by warm_start_drift), so no fine-tune ran: champion v3 kept, no new version"
    )
    assert Trained(**fields, model="model.keras").kept() is None
    for model, champion in ((None, None), ("model.keras", 3)):
        with pytest.raises(ValueError, match="names a model file or the champion it kept"):
            Trained(**fields, model=model, kept_champion=champion)
