"""Content-keyed task caching that is never silently wrong.

A step's cache key hashes (a) its JSON-ready inputs, which carry upstream file paths
*with their content hashes* plus the step's slice of the config, and (b) the source of
every module the step's logic lives in, so editing that code invalidates the step.

Every step result is a dict whose "outputs" maps file paths to sha256. Before Prefect
looks a key up, the stored result for it is checked: if any output file was deleted or
changed since, the stale record is dropped and the step runs again.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tasks.hashing import file_sha256, json_sha256


@functools.cache
def _module_hash(name: str) -> str:
    source = inspect.getsource(importlib.import_module(name))
    return json_sha256([name, source])


def code_version(modules: Iterable[str]) -> str:
    """Hash of the named modules' source files (not only the decorated function)."""
    return json_sha256(sorted(_module_hash(m) for m in modules))


def outputs_valid(result: Any) -> bool:
    """True when every file the result names still holds the content it was hashed with."""
    if not isinstance(result, dict):
        return False
    for path, digest in result.get("outputs", {}).items():
        target = Path(path)
        if not target.is_file() or file_sha256(target) != digest:
            return False
    return True


def step_key(step: str, modules: Iterable[str], params: dict[str, Any]) -> str:
    return f"{step}-{json_sha256({'code': code_version(modules), 'params': params})}"


def _drop_stale(store: Any, key: str) -> None:
    """Remove a stored record whose output files are gone or changed, so the step reruns."""
    try:
        if not store.exists(key):
            return
        record = store.read(key)
    except Exception:  # unreadable record: treat as stale
        record = None
    if record is not None and outputs_valid(record.result):
        return
    resolved = store._resolved_key_path(key)
    store.cache.pop(resolved, None)
    basepath = getattr(store.result_storage, "basepath", None)
    if basepath:
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(basepath))
        path = f"{root.rstrip('/')}/{key}"
        if fs.exists(path):
            fs.rm(path)


def content_cache_key(
    step: str, modules: Iterable[str], cacheable: Callable[[dict[str, Any]], bool] | None = None
) -> Callable[[Any, dict[str, Any]], str | None]:
    """A Prefect `cache_key_fn` for a step whose logic lives in `modules`.

    `cacheable(params)` may veto caching (live network sources must be fetched each run).
    """
    modules = tuple(modules)

    def key_fn(context: Any, params: dict[str, Any]) -> str | None:
        if cacheable is not None and not cacheable(params):
            return None
        key = step_key(step, modules, params)
        store = getattr(context, "result_store", None)
        if store is not None:
            _drop_stale(store, key)
        return key

    return key_fn


CACHE_DIRS = ("results", "work")


def cache_info(data_dir: str | Path) -> dict[str, dict[str, int]]:
    """Files and bytes held by Prefect's cached results and the steps' work folders."""
    info = {}
    for name in CACHE_DIRS:
        root = Path(data_dir) / name
        files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
        info[name] = {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    return info


def clear_cache(data_dir: str | Path) -> dict[str, dict[str, int]]:
    """Delete cached results and work files (never the lake or the model bundles)."""
    import shutil

    before = cache_info(data_dir)
    for name in CACHE_DIRS:
        shutil.rmtree(Path(data_dir) / name, ignore_errors=True)
    return before
