import json
import threading

import pytest

from tasks.export import BundleError, list_versions, verify_bundle, write_bundle


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
