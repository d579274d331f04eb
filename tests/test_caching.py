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


def test_a_batch_in_which_a_ticker_failed_is_never_reused(tmp_path):
    """A batched step's record with a ticker's error runs again (the error may have come
    from the machine); its rerun's record, with none, is found by later runs; tickers
    skipped by choice are no failure."""
    from tickercast.hashing import file_sha256

    out = tmp_path / "lake.parquet"
    out.write_bytes(b"rows")
    outputs = {str(out): file_sha256(out)}
    params = {"tickers": ["AAA", "BBB"]}
    key = step_key("prepare", ("tickercast.market.ingest",), params)
    failed = {"values": {"AAA": 1}, "errors": {"BBB": "OSError: no space left"}, "outputs": outputs}
    store = FakeStore({key: failed})
    key_fn = content_cache_key("prepare", ("tickercast.market.ingest",))
    ctx = types.SimpleNamespace(result_store=store)
    rerun = key_fn(ctx, params)
    assert rerun != key and not store.exists(rerun)  # no record there: the batch runs again
    store.records[rerun] = {**failed, "values": {"AAA": 1, "BBB": 2}, "errors": {}}
    assert key_fn(ctx, params) == rerun
    skipped = {"values": {"AAA": 1}, "errors": {}, "skipped": {"BBB": "by choice"}}
    assert caching.trusted({**skipped, "outputs": outputs})
    assert not caching.trusted(failed)


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


def _records(work: str = "/w"):
    from tickercast.records import Evaluated, ForecastFile, Preprocessed, Trained

    pre = Preprocessed(
        ticker="AAPL",
        arrays=f"{work}/pre/x.npz",
        spec="/s.json",
        anchors=f"{work}/pre/anchors.npz",
        counts={"train": 1, "val": 1, "test": 1},
        outputs={f"{work}/pre/x.npz": "1", f"{work}/pre/anchors.npz": "4"},
    )
    trained = Trained(
        ticker="AAPL",
        model=f"{work}/train/m.keras",
        history="/h.json",
        best_epoch=1,
        epochs_run=1,
        outputs={f"{work}/train/m.keras": "2"},
    )
    files = dict.fromkeys(("metrics_json", "loss_png", "forecast_png", "residuals_png"), "/f")
    evaluated = Evaluated(
        ticker="AAPL",
        metrics={},
        verdict="",
        intervals={},
        evaluation={},
        predictions=ForecastFile(path="/f", sha256="3"),
        **files,
        outputs={f"{work}/eval/p.parquet": "3"},
    )
    return pre, trained, evaluated


def _ingested(**changes):
    from tickercast.records import Ingested

    fields = {
        "ticker": "AAPL",
        "source": "csv",
        "path": "/d/lake/prices/ticker=AAPL/part-0.parquet",
    }
    report = {"rows_added": 10, "mode": "incremental", "warnings": ["x"]}
    return Ingested(**{**fields, "sha256": "a" * 64, "report": report, **changes})


def test_a_versions_inputs_key_follows_the_lake_and_the_upstream_files():
    from tickercast.tasks.export import inputs_key

    pre, trained, evaluated = _records()
    base = inputs_key(_ingested(), [pre, trained, evaluated])
    # a rerun that fetched nothing new differs only in the ingest report: same version
    quiet = _ingested(report={"rows_added": 0, "mode": "noop", "warnings": []})
    assert inputs_key(quiet, [pre, trained, evaluated]) == base
    # new rows in the lake, or any upstream step's files (a setting it reads names its
    # folder, its output bytes are hashed): a new version
    assert inputs_key(_ingested(sha256="b" * 64), [pre, trained, evaluated]) != base
    retrained = trained.model_copy(update={"outputs": {"/w/train2/m.keras": "2"}})
    assert inputs_key(_ingested(), [pre, retrained, evaluated]) != base
    changed = evaluated.model_copy(update={"outputs": {"/w/eval/p.parquet": "4"}})
    assert inputs_key(_ingested(), [pre, trained, changed]) != base


def test_an_ingest_result_enters_step_keys_by_its_lake_file_only():
    from tickercast.sections import PreprocessSettings

    section = PreprocessSettings(lookback=60)
    modules = ("tickercast.modeling.preprocess",)
    first = _ingested(report={"mode": "replace", "rows_added": 1500, "warnings": ["x"]})
    again = _ingested(report={"mode": "incremental", "rows_added": 0, "warnings": []})
    key = step_key("preprocess", modules, {"ingested": first, "section": section})
    assert step_key("preprocess", modules, {"ingested": again, "section": section}) == key
    changed = _ingested(sha256="b")  # new rows: another file content
    assert step_key("preprocess", modules, {"ingested": changed, "section": section}) != key
    other = PreprocessSettings(lookback=61)  # a setting of the step's own section
    assert step_key("preprocess", modules, {"ingested": first, "section": other}) != key


def test_a_step_is_keyed_on_its_own_sections_only():
    """Changing the gate's level (or any setting no step reads) keys no step anew: each
    step takes its own sections, so only a promotion would differ."""
    from tickercast.config import RetrainConfig

    base, gated = RetrainConfig(), RetrainConfig(promotion_level=0.01, max_workers=8)
    for take in (lambda c: c.preprocessing, lambda c: c.fit_spec(), lambda c: c.walk_forward):
        assert step_key("s", (), {"x": take(base)}) == step_key("s", (), {"x": take(gated)})
    assert step_key("s", (), {"x": base.gate}) != step_key("s", (), {"x": gated.gate})


def test_records_outputs_are_checked_and_survive_prefect_json_and_pickle(tmp_path):
    import pickle

    from prefect.serializers import JSONSerializer

    from tickercast.hashing import file_sha256
    from tickercast.records import GlobalTrained, Trained
    from tickercast.tasks.caching import outputs_valid

    model = tmp_path / "m.keras"
    model.write_bytes(b"weights")
    one = Trained(
        ticker="AAA",
        model=str(model),
        history=str(model),
        best_epoch=1,
        epochs_run=2,
        shrinkage={"alpha": 0.5},
        outputs={str(model): file_sha256(model)},
    )
    record = GlobalTrained(models={"AAA": one}, outputs=one.outputs)
    serializer = JSONSerializer()
    for copy in (serializer.loads(serializer.dumps(record)), pickle.loads(pickle.dumps(record))):
        assert copy == record and isinstance(copy.for_ticker("AAA"), Trained)
        assert outputs_valid(copy)
    model.write_bytes(b"tampered")
    assert not outputs_valid(record)


def test_the_type_checking_imports_of_a_module_are_not_its_code():
    """Settings arrive as values: the sections' code (descriptions, validators) is no part
    of a fit's key, though the training module names their types."""
    assert "tickercast.sections" not in caching.module_closure(["tickercast.modeling.train"])
    assert "tickercast.modeling.models" in caching.module_closure(["tickercast.modeling.train"])


def test_one_declaration_gives_a_step_its_name_key_and_work_folder(tmp_path):
    """@step: the cache key and the work folder come from the same declaration and the
    same arguments, so they cannot drift apart; `work` is no parameter of the task."""
    import inspect

    from tickercast import layout
    from tickercast.sections import Gate
    from tickercast.tasks.steps import step

    seen = {}

    @step("probe-step", ("tickercast.hashing",))
    def probe(x: int, gate: Gate, data_dir: str, *, work) -> int:
        seen["work"] = work
        return x

    assert probe.name == "probe-step"
    assert list(inspect.signature(probe.fn).parameters) == ["x", "gate", "data_dir"]
    params = {"x": 1, "gate": Gate(), "data_dir": str(tmp_path)}
    assert probe.fn(1, Gate(), str(tmp_path)) == 1
    key = probe.cache_key_fn(types.SimpleNamespace(result_store=None), params)
    assert key == step_key("probe_step", ("tickercast.hashing",), params)
    assert seen["work"] == layout.work_dir(tmp_path, "probe_step") / key
    other = probe.cache_key_fn(
        types.SimpleNamespace(result_store=None), {**params, "gate": Gate(promotion_level=0.1)}
    )
    assert other != key  # a setting of a section it takes is part of both


def test_finding_a_steps_modules_runs_none_of_their_packages(tmp_path, monkeypatch):
    """Keys are computed on task threads while other tasks import: finding where a
    module lives must not import its parent package (whose `__init__` could fail the key,
    or be half-initialised on another thread); only the files are read."""
    package = tmp_path / "tc_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('a cache key ran this')\n")
    (package / "mod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        assert caching._is_module("tc_probe_pkg.mod")
        assert not caching._is_module("tc_probe_pkg.mod.VALUE")  # an attribute
        assert not caching._is_module("tc_probe_pkg.missing")
        version = code_version(["tc_probe_pkg.mod"])
        (package / "mod.py").write_text("VALUE = 2\n")
        caching._module_hash.cache_clear()
        assert code_version(["tc_probe_pkg.mod"]) != version
        assert "tc_probe_pkg" not in sys.modules
    finally:
        caching._spec.cache_clear()
        caching._module_hash.cache_clear()
