import json
import threading

import pytest

from tickercast.delivery.bundle import BundleError, list_versions, verify_bundle, write_bundle
from tickercast.evaluation.names import FORECASTERS


def make_files(tmp_path):
    files = {}
    for name in ("model.keras", "preprocessing.json", "loss.png"):
        path = tmp_path / "src" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode() * 10)
        files[name] = path
    return files


def test_versions_are_numbered_and_manifested(tmp_path):
    files = make_files(tmp_path)
    first = write_bundle(tmp_path, "AAPL", files, {"n": 1})
    second = write_bundle(tmp_path, "AAPL", files, {"n": 2})
    assert (first.name, second.name) == ("1", "2")
    assert list_versions(tmp_path, "AAPL") == [1, 2]
    manifest = json.loads((second / "manifest.json").read_text())["files"]
    assert set(manifest) == {"model.keras", "preprocessing.json", "loss.png", "metadata.json"}
    assert verify_bundle(second) == manifest
    assert not [p for p in (tmp_path / "models/AAPL/versions").iterdir() if p.name.startswith(".")]


def test_concurrent_exports_get_distinct_versions(tmp_path):
    files = make_files(tmp_path)
    out = []
    threads = [
        threading.Thread(
            target=lambda i=i: out.append(write_bundle(tmp_path, "AAPL", files, {"i": i}))
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(p.name) for p in out) == list(range(1, 9))


@pytest.mark.parametrize("damage", ["tamper", "delete", "manifest"])
def test_damaged_bundle_refused_naming_the_file(tmp_path, damage):
    bundle = write_bundle(tmp_path, "AAPL", make_files(tmp_path), {})
    if damage == "tamper":
        (bundle / "model.keras").write_bytes(b"evil")
        match = "model.keras does not match its checksum"
    elif damage == "delete":
        (bundle / "preprocessing.json").unlink()
        match = "preprocessing.json is missing"
    else:
        (bundle / "manifest.json").unlink()
        match = "manifest.json is missing"
    with pytest.raises(BundleError, match=match):
        verify_bundle(bundle)


def test_manifest_covers_folders_and_refuses_unsafe_or_unlisted_paths(tmp_path):
    files = make_files(tmp_path)
    folder = tmp_path / "src" / "saved_model" / "variables"
    folder.mkdir(parents=True)
    (folder / "variables.index").write_bytes(b"index")
    (tmp_path / "src" / "saved_model" / "saved_model.pb").write_bytes(b"pb")
    bundle = write_bundle(tmp_path, "AAPL", {**files, "saved_model": folder.parent}, {})
    manifest = verify_bundle(bundle)
    assert {"saved_model/saved_model.pb", "saved_model/variables/variables.index"} <= set(manifest)
    (bundle / "saved_model/variables/variables.index").write_bytes(b"evil")
    with pytest.raises(BundleError, match="variables.index does not match its checksum"):
        verify_bundle(bundle)
    (bundle / "saved_model/variables/variables.index").write_bytes(b"index")
    (bundle / "saved_model/variables/extra.data").write_bytes(b"smuggled")
    with pytest.raises(BundleError, match="extra.data is not in the manifest"):
        verify_bundle(bundle)
    (bundle / "saved_model/variables/extra.data").unlink()
    verify_bundle(bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    data["files"]["../../outside"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="unsafe path"):
        verify_bundle(bundle)


@pytest.fixture(scope="module")
def real_bundle():
    from tests.tiny_models import store

    return store() / "models/MSFT/versions/1"


def test_real_bundle_contents(real_bundle):
    names = set(verify_bundle(real_bundle))
    assert {
        "model.keras",
        "preprocessing.json",
        "metadata.json",
        "history.json",
        "predictions.parquet",
        "loss.png",
        "forecast.png",
        "residuals.png",
        "serving.json",
        "saved_model/saved_model.pb",
    } <= names
    assert any(n.startswith("saved_model/variables/") for n in names)
    meta = json.loads((real_bundle / "metadata.json").read_text())
    assert set(FORECASTERS) == set(meta["metrics"])
    assert set(meta["intervals"]) == {"80", "95"}
    assert meta["serving"]["signature"] == "serving_default"


def test_saved_model_serving_signature_as_documented(real_bundle):
    """TF Serving's view: feed serving.json's raw window (the lake's fields, oldest first)
    and get the bundle's own evaluation forecasts and bands back in prices; its `scaled`
    signature, fed scaled features, gives the scaled target as documented. v3 (a ridge
    fit, plausible forecasts); v1, a 2-epoch tiny LSTM whose forecasts sit near half the
    last close, is refused by the signature (issue 25) instead of answered."""
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from tickercast.market import lake
    from tickercast.modeling.features import build_features

    garbage, real_bundle = real_bundle, real_bundle.parent / "3"

    serving = json.loads((real_bundle / "serving.json").read_text())
    pre = json.loads((real_bundle / "preprocessing.json").read_text())
    assert (serving["tag"], serving["signature"]) == ("serve", "serving_default")
    assert serving["fields"] == ["close", "volume"] and serving["rows"] == pre["lookback"] + 1
    assert serving["inputs"] == {
        "window": {"dtype": "float64", "shape": [None, serving["rows"], 2]}
    }
    assert set(serving["outputs"]) == {"forecast", "lower_80", "upper_80", "lower_95", "upper_95"}

    loaded = tf.saved_model.load(str(real_bundle / serving["path"]))
    table = pd.read_parquet(real_bundle / "predictions.parquet").head(5)
    prices = lake.read_partition(real_bundle.parents[3], "MSFT")
    days = pd.to_datetime(prices["date"])
    windows = []
    for day in table["anchor_date"]:
        end = int(np.flatnonzero(days == pd.Timestamp(day))[0])
        rows = prices.iloc[end - serving["rows"] + 1 : end + 1]
        windows.append(rows[serving["fields"]].to_numpy(dtype=np.float64))
    out = loaded.signatures["serving_default"](window=tf.constant(np.array(windows)))
    np.testing.assert_allclose(out["forecast"].numpy()[:, 0], table["model"], rtol=1e-5)
    np.testing.assert_allclose(out["lower_80"].numpy()[:, 0], table["lo_80"], rtol=1e-5)
    np.testing.assert_allclose(out["upper_95"].numpy()[:, 0], table["hi_95"], rtol=1e-5)
    refusing = tf.saved_model.load(str(garbage / serving["path"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="implausibly far"):
        refusing.signatures["serving_default"](window=tf.constant(np.array(windows)))

    scaled_signature = serving["signatures"]["scaled"]
    assert scaled_signature["inputs"]["window"] == {
        "dtype": "float32",
        "shape": [None, pre["lookback"], len(pre["features"])],
    }
    frame = build_features(prices, pre["features"])
    raw = frame[pre["features"]].to_numpy(dtype=np.float64)
    lo, hi = np.array(pre["feature_scaler"]["min"]), np.array(pre["feature_scaler"]["max"])
    dates = pd.to_datetime(frame["date"])
    windows = []
    for day in table["anchor_date"]:
        end = int(np.flatnonzero(dates == pd.Timestamp(day))[0])
        windows.append((raw[end - pre["lookback"] + 1 : end + 1] - lo) / (hi - lo))
    out = loaded.signatures["scaled"](window=tf.constant(np.array(windows, dtype=np.float32)))
    scaled = out["scaled_target"].numpy()[:, 0]
    t_lo, t_hi = pre["target_scaler"]["min"][0], pre["target_scaler"]["max"][0]
    np.testing.assert_allclose(scaled * (t_hi - t_lo) + t_lo, table["model"], rtol=1e-4)


def test_saved_model_holds_the_network_once(real_bundle):
    """The SavedModel tracks the network's variables, not the Keras objects, and both
    signatures call one traced network: each LSTM's time loop is stored once."""
    import keras
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    model = keras.models.load_model(real_bundle / "model.keras", compile=False)
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert lstms
    loaded = tf.saved_model.load(str(real_bundle / "saved_model"))
    assert len(loaded.network_variables) == len(model.weights)
    assert not hasattr(loaded, "model")
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((real_bundle / "saved_model" / "saved_model.pb").read_bytes())
    library = proto.meta_graphs[0].graph_def.library.function
    loops = [f.signature.name for f in library if "while_body" in f.signature.name]
    assert len(loops) == len(lstms), loops


@pytest.mark.parametrize("damage", ["model", "saved_model", "delete"])
def test_damaged_real_bundle_refused_on_load(real_bundle, tmp_path, damage):
    import shutil

    from tickercast.delivery.bundle import load_bundle

    bundle = tmp_path / "7"
    shutil.copytree(real_bundle, bundle)
    assert load_bundle(bundle).spec.lookback == 20
    if damage == "model":
        with (bundle / "model.keras").open("ab") as handle:
            handle.write(b"\0")
        match = "model.keras does not match"
    elif damage == "saved_model":
        (bundle / "saved_model/saved_model.pb").write_bytes(b"")
        match = "saved_model.pb does not match"
    else:
        (bundle / "serving.json").unlink()
        match = "serving.json is missing"
    with pytest.raises(BundleError, match=match):
        load_bundle(bundle)


def test_staging_left_by_a_killed_export_is_swept_by_the_next(tmp_path):
    import os
    import time

    from tickercast.delivery.bundle import STALE_STAGING_SECONDS

    root = tmp_path / "models/AAPL/versions"
    killed, live = root / ".tmp-killed", root / ".tmp-live"
    for folder in (killed, live):
        (folder / "saved_model").mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"half")
    old = time.time() - STALE_STAGING_SECONDS - 60
    os.utime(killed, (old, old))
    bundle = write_bundle(tmp_path, "AAPL", make_files(tmp_path), {})
    assert bundle.name == "1"
    assert not killed.exists()  # a killed export's leftovers are gone
    assert live.exists()  # one that may still be running is left alone


def _hash_counter(monkeypatch) -> list[str]:
    """The files bundle verification really reads (each call of file_sha256)."""
    from tickercast.delivery import bundle as module

    read: list[str] = []
    original = module.file_sha256

    def counting(path):
        read.append(str(path))
        return original(path)

    monkeypatch.setattr(module, "file_sha256", counting)
    module._sha256_of.cache_clear()
    return read


def test_an_unchanged_bundle_is_hashed_once_per_process(tmp_path, monkeypatch):
    """Verification at universe size: a second check of unchanged files reads none."""
    from tickercast.delivery import bundle as module

    monkeypatch.setattr(module, "RACY_NS", 0)  # these files are seconds old, not racy
    bundle = write_bundle(tmp_path, "AAPL", make_files(tmp_path), {})
    read = _hash_counter(monkeypatch)
    manifest = verify_bundle(bundle)
    assert len(read) == len(manifest)
    assert verify_bundle(bundle) == manifest and len(read) == len(manifest)


@pytest.mark.parametrize("change", ["rewrite", "replace"])
def test_a_changed_file_is_still_caught_after_a_cached_check(tmp_path, monkeypatch, change):
    """Same size, mtime put back: a rewrite moves ctime, a replacement the inode."""
    import os
    import time

    from tickercast.delivery import bundle as module

    monkeypatch.setattr(module, "RACY_NS", 0)
    bundle = write_bundle(tmp_path, "AAPL", make_files(tmp_path), {})
    read = _hash_counter(monkeypatch)
    verify_bundle(bundle)
    target = bundle / "model.keras"
    before = target.stat()
    time.sleep(0.05)  # past the file clock's tick
    evil = b"X" * before.st_size
    if change == "rewrite":
        target.write_bytes(evil)
    else:
        (bundle / "swap").write_bytes(evil)
        os.replace(bundle / "swap", target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(BundleError, match="model.keras does not match its checksum"):
        verify_bundle(bundle)
    assert read.count(str(target)) == 2


def test_a_file_changed_within_the_clock_tick_of_its_check_is_hashed_again(tmp_path, monkeypatch):
    """Racy files (changed in the last seconds) skip the cache: a same-size rewrite in
    the same tick as the check keeps (size, mtime, ctime) yet is caught."""
    import os

    bundle = write_bundle(tmp_path, "AAPL", make_files(tmp_path), {})
    read = _hash_counter(monkeypatch)
    verify_bundle(bundle)
    target = bundle / "model.keras"
    before = target.stat()
    with target.open("r+b") as handle:
        handle.write(b"X")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(BundleError, match="model.keras does not match its checksum"):
        verify_bundle(bundle)
    assert read.count(str(target)) == 2
