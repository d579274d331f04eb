"""Cache keys: what invalidates a step, and what must not."""

from __future__ import annotations

import importlib
import sys
import types

from tasks import caching
from tasks.caching import cache_info, clear_cache, code_version, content_cache_key, step_key


class FakeStore:
    """The two calls the key function makes on Prefect's ResultStore, recorded."""

    def __init__(self, records=None, basepath="/nonexistent"):
        self.records = records or {}
        self.cache = {}
        self.result_storage = types.SimpleNamespace(basepath=basepath)

    def exists(self, key):
        return key in self.records

    def read(self, key):
        return types.SimpleNamespace(result=self.records[key])

    def _resolved_key_path(self, key):
        return key


def test_key_changes_with_inputs_and_config_but_not_dict_order():
    base = step_key("train", ("tasks.train",), {"pre": {"sha": "a"}, "cfg": {"epochs": 5}})
    same = step_key("train", ("tasks.train",), {"cfg": {"epochs": 5}, "pre": {"sha": "a"}})
    other_input = step_key("train", ("tasks.train",), {"pre": {"sha": "b"}, "cfg": {"epochs": 5}})
    other_cfg = step_key("train", ("tasks.train",), {"pre": {"sha": "a"}, "cfg": {"epochs": 6}})
    assert base == same
    assert len({base, other_input, other_cfg}) == 3


def test_code_version_follows_the_whole_module_source(tmp_path, monkeypatch):
    module = tmp_path / "tc_probe_mod.py"
    module.write_text("def f():\n    return 1\n\nHELPER = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_version(["tc_probe_mod"])
    module.write_text("def f():\n    return 1\n\nHELPER = 2\n")  # f itself unchanged
    sys.modules.pop("tc_probe_mod", None)
    importlib.invalidate_caches()
    caching._module_hash.cache_clear()
    after = code_version(["tc_probe_mod"])
    assert before != after
    caching._module_hash.cache_clear()


def test_stale_record_is_dropped_when_its_files_changed(tmp_path):
    out = tmp_path / "model.keras"
    out.write_bytes(b"weights")
    from tasks.hashing import file_sha256

    params = {"x": 1}
    key = step_key("train", ("tasks.train",), params)
    record_file = tmp_path / "results" / key
    record_file.parent.mkdir()
    record_file.write_text("{}")
    store = FakeStore({key: {"outputs": {str(out): file_sha256(out)}}}, tmp_path / "results")
    key_fn = content_cache_key("train", ("tasks.train",))
    ctx = types.SimpleNamespace(result_store=store)
    assert key_fn(ctx, params) == key and record_file.exists()  # valid: kept
    out.write_bytes(b"tampered")
    assert key_fn(ctx, params) == key
    assert not record_file.exists()  # stale: dropped, so the step runs again


def test_live_sources_are_not_cached():
    key_fn = content_cache_key("ingest", ("tasks.ingest",), cacheable=lambda p: p["fp"] is not None)
    assert key_fn(types.SimpleNamespace(result_store=None), {"fp": None}) is None
    assert key_fn(types.SimpleNamespace(result_store=None), {"fp": "abc"}).startswith("ingest-")


def test_cache_show_and_clear_leave_lake_and_models(tmp_path):
    for rel in ("results/k1", "work/train/k/model.keras", "lake/prices/x", "models/A/versions/1/m"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"12345")
    info = cache_info(tmp_path)
    assert info == {"results": {"files": 1, "bytes": 5}, "work": {"files": 1, "bytes": 5}}
    clear_cache(tmp_path)
    assert cache_info(tmp_path)["work"]["files"] == 0
    assert (tmp_path / "lake/prices/x").exists() and (tmp_path / "models/A/versions/1/m").exists()
