"""Cache keys: what invalidates a step, and what must not."""

from __future__ import annotations

import importlib
import sys
import types

from tickercast.tasks import caching
from tickercast.tasks.caching import (
    cache_info,
    clear_cache,
    code_version,
    content_cache_key,
    step_key,
)


class FakeStore:
    """The two public calls the key function makes on Prefect's ResultStore: exists, read
    (no private attribute: a fake without them proves none is used)."""

    def __init__(self, records=None, basepath="/nonexistent"):
        self.records = records or {}

    def exists(self, key):
        return key in self.records

    def read(self, key):
        return types.SimpleNamespace(result=self.records[key])


def test_key_changes_with_inputs_and_config_but_not_dict_order():
    base = step_key(
        "train", ("tickercast.modeling.train",), {"pre": {"sha": "a"}, "cfg": {"epochs": 5}}
    )
    same = step_key(
        "train", ("tickercast.modeling.train",), {"cfg": {"epochs": 5}, "pre": {"sha": "a"}}
    )
    other_input = step_key(
        "train", ("tickercast.modeling.train",), {"pre": {"sha": "b"}, "cfg": {"epochs": 5}}
    )
    other_cfg = step_key(
        "train", ("tickercast.modeling.train",), {"pre": {"sha": "a"}, "cfg": {"epochs": 6}}
    )
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


def test_a_stale_record_is_never_used_and_its_rerun_is_found(tmp_path):
    out = tmp_path / "model.keras"
    out.write_bytes(b"weights")
    from tickercast.hashing import file_sha256

    params = {"x": 1}
    key = step_key("train", ("tickercast.modeling.train",), params)
    store = FakeStore({key: {"outputs": {str(out): file_sha256(out)}}}, tmp_path / "results")
    key_fn = content_cache_key("train", ("tickercast.modeling.train",))
    ctx = types.SimpleNamespace(result_store=store)
    assert key_fn(ctx, params) == key  # valid: the stored record is used
    out.write_bytes(b"tampered")
    rerun = key_fn(ctx, params)
    assert rerun != key and not store.exists(rerun)  # stale: a key with no record, so it runs
    store.records[rerun] = {"outputs": {str(out): file_sha256(out)}}  # what the rerun stores
    assert key_fn(ctx, params) == rerun  # the next run finds the rerun's record
    out.unlink()
    gone = key_fn(ctx, params)
    assert gone not in (key, rerun) and not store.exists(gone)
    # the step reruns and writes bytes unlike any before (its key was chosen before them)
    out.write_bytes(b"weights, recomputed")
    store.records[gone] = {"outputs": {str(out): file_sha256(out)}}
    assert key_fn(ctx, params) == gone  # found again on every later run: cached
    assert key_fn(ctx, params) == gone


def test_live_sources_are_not_cached():
    key_fn = content_cache_key(
        "ingest", ("tickercast.market.ingest",), cacheable=lambda p: p["fp"] is not None
    )
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


def test_a_versions_inputs_key_follows_the_lake_the_config_and_the_upstream_files():
    from tickercast.config import RetrainConfig
    from tickercast.tasks.export import inputs_key

    ingested = {"ticker": "AAPL", "sha256": "a" * 64, "rows_added": 10, "mode": "incremental"}
    steps = [{"outputs": {"/w/pre/x.npz": "1"}}, {"outputs": {"/w/train/m.keras": "2"}}]
    evaluated = {"outputs": {"/w/eval/p.parquet": "3"}}
    config = RetrainConfig().model_dump(mode="json")

    def key(ing=ingested, cfg=config, ev=evaluated):
        return inputs_key(ing, steps[0], steps[1], ev, cfg, None)

    base = key()
    # a rerun that fetched nothing new differs only in the ingest report: same version
    assert key(ing={**ingested, "rows_added": 0, "mode": "noop"}) == base
    assert key(cfg={**config, "refresh": True, "data_dir": "/elsewhere"}) == base
    # new rows in the lake, a changed config field or a changed upstream file: a new one
    assert key(ing={**ingested, "sha256": "b" * 64}) != base
    assert key(cfg={**config, "epochs": config["epochs"] + 1}) != base
    assert key(ev={"outputs": {"/w/eval/p.parquet": "4"}}) != base


def test_an_ingest_result_enters_step_keys_by_its_lake_file_only():
    lake = {"ticker": "AAPL", "path": "/d/lake/prices/ticker=AAPL/part-0.parquet", "sha256": "a"}
    first = {**lake, "mode": "replace", "rows_added": 1500, "warnings": ["x"]}
    again = {**lake, "mode": "incremental", "rows_added": 0, "warnings": []}
    modules = ("tickercast.modeling.preprocess",)
    key = step_key("preprocess", modules, {"ingested": first, "cfg": {"lookback": 60}})
    assert step_key("preprocess", modules, {"ingested": again, "cfg": {"lookback": 60}}) == key
    changed = {**again, "sha256": "b"}  # new rows: another file content
    assert step_key("preprocess", modules, {"ingested": changed, "cfg": {"lookback": 60}}) != key
