"""The gate reads the challenger's recorded forecasts (its bundle's window table) instead
of re-running it: the same verdict and statistics as re-running, a changed table refused,
and bundles whose table lacks what is recorded now re-run as before."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.tiny_models import TICKER, copy_store, export_model, tiny_config
from tickercast import layout
from tickercast.delivery.bundle import MANIFEST, bundle_path
from tickercast.delivery.gate import challenge, compare_versions
from tickercast.delivery.registry import promote
from tickercast.hashing import file_sha256


def _relist(bundle: Path, name: str) -> None:
    """Record `name`'s new content in the bundle's manifest (an export of another era)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"][name] = file_sha256(bundle / name)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def _unrecorded(table: pd.DataFrame) -> pd.DataFrame:
    """The table as written before forecasts were recorded for the gate: no model
    forecast, no quantile grid."""
    gone = [c for c in table.columns if c.startswith(("model", "q_"))]
    return table.drop(columns=gone)


def _rewrite(bundle: Path, change, relist: bool = True) -> None:
    path = bundle / layout.PREDICTIONS_FILE
    change(pd.read_parquet(path)).to_parquet(path, index=False)
    if relist:
        _relist(bundle, layout.PREDICTIONS_FILE)


def _assert_same(a, b, where: str = "event") -> None:
    """Equal events: numbers to float precision (recorded and re-run forecasts are the
    same network on the same closes), everything else exactly."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.fixture
def runs(monkeypatch):
    """Which versions the gate re-ran from the lake (predict_at calls)."""
    from tickercast.delivery import predict

    calls: list[int] = []
    real = predict.predict_at

    def counted(bundle, prices, anchor_dates):
        calls.append(bundle.version)
        return real(bundle, prices, anchor_dates)

    monkeypatch.setattr(predict, "predict_at", counted)
    return calls


def _event(data: Path, champion: int, challenger: int) -> dict:
    from tickercast.delivery.registry import read_registry

    if read_registry(data, TICKER)["champion"] != champion:
        promote(data, TICKER, champion, reason="by hand")
    event = challenge(data, TICKER, challenger)
    return {k: event[k] for k in ("action", "reason", "window", "scores", "tests")}


def test_recorded_forecasts_give_the_verdict_and_statistics_of_rerunning(tmp_path, runs):
    recorded = copy_store(tmp_path / "recorded")
    rerun = copy_store(tmp_path / "rerun")
    for version in (1, 2, 3):  # old bundles: nothing recorded, everything re-run
        _rewrite(bundle_path(rerun, TICKER, version), _unrecorded)
    for champion, chal in ((2, 3), (3, 1)):
        runs.clear()
        a = _event(recorded, champion, chal)
        assert runs == []  # same lake file: both read from their recorded tables
        b = _event(rerun, champion, chal)
        assert sorted(runs) == sorted([champion, chal])
        assert "crps_vs_champion" in a["tests"]  # the recorded grid was compared too
        _assert_same(a, b)
    assert a["action"] == "reject" and "not significantly better" in a["reason"]


def test_a_champion_evaluated_on_other_closes_is_rerun_alone(tmp_path, runs):
    data = copy_store(tmp_path)
    champion = bundle_path(data, TICKER, 2)
    meta = json.loads((champion / layout.METADATA_FILE).read_text())
    meta["data"]["sha256"] = "0" * 64  # as if the lake had changed since it was exported
    (champion / layout.METADATA_FILE).write_text(json.dumps(meta))
    _relist(champion, layout.METADATA_FILE)
    event = _event(data, 2, 3)
    assert runs == [2]  # the challenger's forecasts are the recorded ones
    assert event["action"] == "promote", event["reason"]


def test_a_changed_predictions_file_is_refused_naming_it(tmp_path, monkeypatch):
    """Changed after the bundle was verified: the gate's read through the manifest's
    sha256 refuses it, and says which file."""
    from tickercast.delivery import gate

    data = copy_store(tmp_path)
    real = gate.load_bundle

    def load_then_tamper(path):
        bundle = real(path)
        if bundle.version == 3:
            _rewrite(bundle.path, lambda t: t.assign(model=t["model"] * 0.99), relist=False)
        return bundle

    monkeypatch.setattr(gate, "load_bundle", load_then_tamper)
    event = challenge(data, TICKER, 3)
    assert event["action"] == "reject"
    assert f"{layout.PREDICTIONS_FILE} does not match its checksum" in event["reason"]
    assert event["reason"].startswith("refused: bundle ")


def test_a_bundle_without_a_predictions_file_is_refused_not_crashed(tmp_path):
    data = copy_store(tmp_path)
    bundle = bundle_path(data, TICKER, 3)
    (bundle / layout.PREDICTIONS_FILE).unlink()
    manifest = json.loads((bundle / MANIFEST).read_text())
    del manifest["files"][layout.PREDICTIONS_FILE]
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    event = challenge(data, TICKER, 3)
    assert event["action"] == "reject"
    assert f"has no {layout.PREDICTIONS_FILE}" in event["reason"]


def test_models_show_reads_recorded_forecasts_and_agrees_with_rerunning(tmp_path, runs):
    recorded, rerun = copy_store(tmp_path / "a"), copy_store(tmp_path / "b")
    for version in (1, 2, 3):
        _rewrite(bundle_path(rerun, TICKER, version), _unrecorded)
    a = compare_versions(recorded, TICKER)
    assert runs == []
    b = compare_versions(rerun, TICKER)
    assert sorted(runs) == [1, 2, 3]
    _assert_same(a, b, "compare_versions")


def _vector_version(data: Path, scale: float, label: str) -> int:
    """A Flatten -> Dense(3) network on the `closes` target: each output `scale` times
    the window's last scaled close."""
    import keras

    from tickercast.atomic import write_json
    from tickercast.market import lake
    from tickercast.market.ingest import ingest_ticker
    from tickercast.modeling.preprocess import preprocess

    config = tiny_config(data, target="closes", horizon=3)
    ingested = ingest_ticker(TICKER, "sample", data)
    spec, _ = preprocess(lake.read_partition(data, TICKER), config.preprocessing, who=TICKER)
    n_features = len(spec.features)
    inputs = keras.Input(shape=(spec.lookback, n_features), name="window")
    out = keras.layers.Dense(3, name="forecast")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, out, name=f"vector_{label}")
    kernel = np.zeros((spec.lookback * n_features, 3), dtype="float32")
    kernel[(spec.lookback - 1) * n_features + spec.features.index("close"), :] = scale
    model.get_layer("forecast").set_weights([kernel, np.zeros(3, dtype="float32")])
    folder = data / "work" / label
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    write_json(folder / "history.json", {"history": {"loss": [1.0]}, "epochs_run": 0})
    bundle = export_model(data, ingested, config, folder / "model.keras", folder / "history.json")
    return int(bundle.name)


@pytest.mark.slow
def test_vector_targets_record_every_output_and_agree_with_the_rebuilt_band(tmp_path, runs):
    """A `closes` target: every output's forecast and grid recorded; a table of another
    era (first output's grid only) has its grid rebuilt from the lake, with the same
    CRPS test."""
    from tickercast.evaluation import window_table

    data = copy_store(tmp_path)
    weak, strong = _vector_version(data, 0.5, "half"), _vector_version(data, 1.0, "copy")
    table = pd.read_parquet(bundle_path(data, TICKER, strong) / layout.PREDICTIONS_FILE)
    assert window_table.n_outputs(table) == 3
    assert window_table.grid(table, 3).shape == (len(table), 3, len(window_table.GRID))
    assert {"naive_3", "drift_3", "model_3"} <= set(table.columns)
    a = _event(data, weak, strong)
    assert runs == [] and "crps_vs_champion" in a["tests"]

    def first_output_grid_only(t: pd.DataFrame) -> pd.DataFrame:
        return t.drop(columns=[c for c in t.columns if c.startswith("q_") and c.count("_") == 2])

    for version in (weak, strong):
        _rewrite(bundle_path(data, TICKER, version), first_output_grid_only)
    b = _event(data, weak, strong)
    assert runs == []  # points recorded; only the grids were rebuilt, from the lake
    _assert_same(a, b)
