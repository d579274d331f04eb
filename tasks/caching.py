"""Content-keyed task caching that is never silently wrong.

A step's cache key hashes (a) its inputs: upstream records (tickercast.records) by what
they say of their files (paths *with their content hashes*), and the step's own config
sections by their values; and (b) the source of every module the step's logic lives in,
so editing that code invalidates the step.

Every step result is a record whose `outputs` maps file paths to sha256. Before Prefect
looks a key up, the stored result for it is checked: if any output file was deleted or
changed since, or a ticker failed inside a step that ran several (a batch), the key moves
to one derived from the files' current state, so the step runs again (`fresh_key`,
through ResultStore's public methods only).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterable
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tickercast import layout
from tickercast.hashing import file_sha256, json_sha256
from tickercast.records import Record


def _source(name: str) -> str:
    """A module's source, read from its file: hashing code must not run it (importing a
    step's whole closure costs seconds on a cached rerun that runs none of it)."""
    spec = _spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return inspect.getsource(importlib.import_module(name))
    return Path(spec.origin).read_text()


@functools.cache
def _module_hash(name: str) -> str:
    return json_sha256([name, _source(name)])


PACKAGE = "tickercast"


def _type_checking(node: ast.AST) -> bool:
    """An `if TYPE_CHECKING:` block: imported for annotations only, never run."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk(tree: ast.AST):
    """Every node of `tree` but those under `if TYPE_CHECKING:`."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _type_checking(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


@functools.cache
def _imports(name: str) -> tuple[str, ...]:
    """The project modules `name` imports anywhere in its source (lazy imports included;
    imports for annotations only, under `if TYPE_CHECKING:`, are not code it runs)."""
    tree = ast.parse(_source(name))
    found: set[str] = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # `from tickercast.market import lake` imports the module tickercast.market.lake
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return tuple(sorted(m for m in found if m.startswith(PACKAGE + ".") and _is_module(m)))


@functools.cache
def _spec(name: str) -> ModuleSpec | None:
    """Where module `name` lives, found without importing it or its parent packages.

    `importlib.util.find_spec` imports a dotted name's parents. Keys are computed on task
    threads while other tasks import, so that would run a package's `__init__` on the
    key's thread: whatever it raised (an import-lock deadlock, a half-initialised
    package) would fail the key, and a wrong "not a module" would be cached for the
    process. The finders of `sys.meta_path` answer from the parent's search path alone
    (the meta path protocol, as the import system asks them), which is read, not run.
    """
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__spec__", None) is not None:
        return module.__spec__
    parent = name.rpartition(".")[0]
    path = None
    if parent:
        parent_spec = _spec(parent)
        if parent_spec is None or parent_spec.submodule_search_locations is None:
            return None  # no such package: `name` is an attribute, not a module
        path = list(parent_spec.submodule_search_locations)
    for finder in list(sys.meta_path):
        find = getattr(finder, "find_spec", None)
        spec = find(name, path) if find is not None else None
        if spec is not None:
            return spec
    return None


def _is_module(name: str) -> bool:
    """Whether `name` is a module (`from pkg.module import attribute` names both):
    `pkg.module.attribute` is refused from its parent's spec alone (`_spec`)."""
    return _spec(name) is not None


def module_closure(modules: Iterable[str]) -> tuple[str, ...]:
    """The named modules and every project module they import, transitively: a step's
    cache key follows all the code it can run, however that code is split into files."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_imports(name))
    return tuple(sorted(seen))


def code_version(modules: Iterable[str]) -> str:
    """Hash of the source of the named modules and of every project module they import."""
    return json_sha256(sorted(_module_hash(m) for m in module_closure(modules)))


def outputs_valid(result: Any) -> bool:
    """True when every file the result names still holds the content it was hashed with."""
    if isinstance(result, Record):
        outputs = result.outputs
    elif isinstance(result, dict):
        outputs = result.get("outputs", {})
    else:
        return False
    for path, digest in outputs.items():
        target = Path(path)
        if not target.is_file() or file_sha256(target) != digest:
            return False
    return True


def trusted(result: Any) -> bool:
    """Whether a later run may reuse a stored result: every file it names unchanged
    (`outputs_valid`) and, for a step that ran several tickers (`fanout.batch_result`), no
    ticker failed in it. A ticker's failure may come from the machine, not the inputs the
    key hashes (a full disk, a file another process held), and a cached failure would
    repeat it after the cause was fixed; the others' work reruns with it (a batch is
    cached whole)."""
    if isinstance(result, dict) and result.get("errors"):
        return False
    return outputs_valid(result)


def keyed(value: Any) -> Any:
    """An input as a cache key sees it: a record by its `key()` (an ingest by its lake
    file's content only), settings by their values, containers element by element."""
    if isinstance(value, Record):
        return value.key()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): keyed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [keyed(v) for v in value]
    return value


def step_key(step: str, modules: Iterable[str], params: dict[str, Any]) -> str:
    """The cache key and work-folder name of a step: its code and inputs."""
    inputs = {k: keyed(v) for k, v in params.items()}
    return f"{step}-{json_sha256({'code': code_version(modules), 'params': inputs})}"


def fresh_key(store: Any, key: str) -> str:
    """`key`, unless the record stored under it is not `trusted` (output files gone or
    changed since, a ticker of a batch failed): then the first of `key-r1`, `key-r2`, ...
    that holds a trusted record, or none yet (the step runs again and stores its record
    there, which later runs find). Only ResultStore's public `exists` and `read` are used;
    nothing is deleted."""
    candidate, n = key, 0
    while store.exists(candidate):
        try:
            if trusted(store.read(candidate).result):
                return candidate
        except Exception:  # an unreadable record is never trusted
            pass
        n += 1
        candidate = f"{key}-r{n}"
    return candidate


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
        return key if store is None else fresh_key(store, key)

    return key_fn


CACHE_DIRS = layout.CACHE_DIRS


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
