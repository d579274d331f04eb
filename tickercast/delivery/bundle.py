"""Versioned model bundles: `<data_dir>/models/<ticker>/versions/<n>/`.

A bundle is assembled in a hidden temporary folder and renamed into the first free
version number, so a reader never sees half a bundle and two concurrent exports get
distinct numbers. `manifest.json` holds the sha256 of every file (SavedModel folder
included, by relative path); loading checks it first and refuses a missing, changed or
unlisted file. The Keras model loads in safe mode; nothing is unpickled.

Verification re-reads a file only when it may have changed: each file's sha256 is kept
per process under its (path, inode, size, mtime_ns, ctime_ns), so the page, the service
and `models show` over 500 champions or 200 versions hash each unchanged file once, while
any write to a file (which moves its mtime and ctime) or a replaced file (a new inode)
is hashed again and caught. A file changed in the last seconds is always hashed (the
"racy" case of git's index): file times tick coarsely, so a same-size rewrite within
one tick of the last check could otherwise keep its old signature.

Besides `model.keras` a bundle carries `saved_model/`, a TensorFlow SavedModel for TF
Serving that takes raw prices and returns forecasts with their bands, and `serving.json`,
which documents its signature; both are made and checked by
`tickercast.delivery.servable.build_bundle`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tickercast import layout
from tickercast.atomic import fsync_dir, storage_error, write_json
from tickercast.hashing import file_sha256
from tickercast.tickers import validate_ticker

if TYPE_CHECKING:  # loading one does import it; finding and checking versions (a
    # cached rerun's export step) must not pay for preprocessing's pandas
    from tickercast.modeling.preprocess import Preprocessing

MANIFEST = "manifest.json"
REQUIRED_FILES = (layout.MODEL_FILE, layout.SPEC_FILE, layout.METADATA_FILE)
SAVED_MODEL = "saved_model"
SERVING = "serving.json"
SIGNATURE = "serving_default"
# A staging folder this old belongs to an export that was killed (a live one takes
# seconds to minutes); the next export removes it.
STALE_STAGING_SECONDS = 3600
# Files whose hashes a process remembers (a bundle has ~10; 500 champions + 200 versions
# of one ticker are ~7,000); the least recently checked are forgotten first.
HASH_CACHE_FILES = 65536
# A file whose mtime or ctime is this recent is hashed without the cache (see above).
RACY_NS = 2_000_000_000


class BundleError(RuntimeError):
    """A bundle that is incomplete or does not match its manifest."""


def versions_dir(data_dir: str | Path, name: str) -> Path:
    return layout.versions_dir(data_dir, validate_ticker(name))


def list_versions(data_dir: str | Path, name: str) -> list[int]:
    folder = versions_dir(data_dir, name)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def bundle_path(data_dir: str | Path, name: str, version: int) -> Path:
    return versions_dir(data_dir, name) / str(int(version))


def latest_with_inputs(data_dir: str | Path, name: str, key: str) -> dict | None:
    """{"version", "path"} of the latest version when it was built from exactly the inputs
    `key` names (metadata.json's inputs_key) and is intact; else None: export anew."""
    versions = list_versions(data_dir, name)
    if not versions:
        return None
    path = bundle_path(data_dir, name, versions[-1])
    try:
        if read_metadata(path).get("inputs_key") != key:
            return None
        verify_bundle(path)
    except (OSError, ValueError, BundleError):
        return None
    return {"version": versions[-1], "path": str(path)}


def _bundle_files(root: Path) -> list[Path]:
    """Every regular file under `root`, hidden names (temporary files) excluded."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def sweep_stale_staging(folder: Path, prefix: str) -> list[Path]:
    """Remove hidden staging folders (`prefix`*) that killed exports left behind."""
    cutoff = time.time() - STALE_STAGING_SECONDS
    gone = []
    for path in folder.glob(f"{prefix}*") if folder.is_dir() else ():
        try:
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
                gone.append(path)
        except FileNotFoundError:  # another export swept it first
            continue
    return gone


def write_bundle(data_dir: str | Path, name: str, files: dict[str, Path], metadata: dict) -> Path:
    """Copy `files` (bundle name -> source file or folder) plus metadata into the next version."""
    root = versions_dir(data_dir, name)
    sweep_stale_staging(root, ".tmp-")
    staging = root / f".tmp-{uuid.uuid4().hex}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for target, source in files.items():
            if Path(source).is_dir():
                shutil.copytree(source, staging / target)
            else:
                shutil.copyfile(source, staging / target)
        write_json(staging / layout.METADATA_FILE, metadata)
        manifest = {
            p.relative_to(staging).as_posix(): file_sha256(p) for p in _bundle_files(staging)
        }
        write_json(staging / MANIFEST, {"files": manifest})
        for path in _bundle_files(staging):
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        for folder in sorted({p.parent for p in _bundle_files(staging)}, reverse=True):
            fsync_dir(folder)
        return _claim_version(root, staging)
    except OSError as exc:  # disk full mid-copy: say so; no version number was taken
        wrapped = storage_error(exc, root, f"a new bundle of {name} under {root}")
        if wrapped is exc:
            raise
        raise wrapped from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _claim_version(root: Path, staging: Path) -> Path:
    # rename() onto an existing non-empty folder fails, so the first writer to a number wins.
    number = (list_versions(root.parent.parent, root.parent.name) or [0])[-1] + 1
    while True:
        target = root / str(number)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.exists():
                raise
            number += 1
            continue
        fsync_dir(root)
        return target


def _safe_relative(bundle: Path, name: str) -> Path:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name:
        raise BundleError(f"bundle {bundle}: manifest names an unsafe path {name!r}")
    return bundle.joinpath(*rel.parts)


def read_metadata(bundle: str | Path) -> dict:
    """A bundle's metadata.json, parsed (OSError / ValueError when missing or unreadable:
    each caller says what that means for it)."""
    return json.loads((Path(bundle) / layout.METADATA_FILE).read_text())


def checked_file(bundle: Path, name: str) -> tuple[bytes, str]:
    """A file the bundle's manifest lists, read and checked against its sha256: (bytes,
    digest). FileNotFoundError when the manifest does not list it; BundleError when it is
    missing or was changed after export."""
    digest = read_manifest(bundle).get(name)
    if digest is None:
        raise FileNotFoundError(f"version {bundle.name} has no {name}")
    try:
        data = (bundle / name).read_bytes()
    except FileNotFoundError as exc:
        raise BundleError(f"bundle {bundle}: {name} is missing") from exc
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"bundle {bundle}: {name} does not match its checksum")
    return data, digest


def read_manifest(bundle: str | Path) -> dict[str, str]:
    """The bundle's manifest: file name -> sha256; BundleError when missing or unreadable."""
    bundle = Path(bundle)
    manifest_path = bundle / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"bundle {bundle}: {MANIFEST} is missing")
    try:
        files = json.loads(manifest_path.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {bundle}: {MANIFEST} is unreadable: {exc}") from exc
    return files


def checked_sha256(path: Path) -> str:
    """`path`'s sha256, hashed again only when its (inode, size, mtime_ns, ctime_ns)
    moved since this process last hashed it."""
    st = path.stat()
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS:
        return file_sha256(path)
    return _sha256_of(str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@lru_cache(maxsize=HASH_CACHE_FILES)
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    """The hash of `path` as it was with that stat (the key is the whole stat signature)."""
    return file_sha256(path)


def verify_bundle(bundle: str | Path) -> dict[str, str]:
    """Refuse a bundle with a missing, changed or unlisted file, naming the file."""
    bundle = Path(bundle)
    files = read_manifest(bundle)
    for required in REQUIRED_FILES:
        if required not in files:
            raise BundleError(f"bundle {bundle}: manifest does not list {required}")
    for name, digest in files.items():
        path = _safe_relative(bundle, name)
        if not path.is_file():
            raise BundleError(f"bundle {bundle}: {name} is missing")
        if checked_sha256(path) != digest:
            raise BundleError(f"bundle {bundle}: {name} does not match its checksum")
    for path in _bundle_files(bundle):
        name = path.relative_to(bundle).as_posix()
        if name != MANIFEST and name not in files:
            raise BundleError(f"bundle {bundle}: {name} is not in the manifest")
    return files


@dataclass
class Bundle:
    """A loaded version. `model` gives the point forecast; `quantiles`, for a network with
    a quantile head, gives its calibrated grid (tickercast.modeling.models.split_heads)."""

    path: Path
    model: object
    spec: Preprocessing
    metadata: dict
    quantiles: object | None = None

    @property
    def version(self) -> int:
        return int(self.path.name)


def load_bundle(bundle: str | Path) -> Bundle:
    """Verify checksums, then load the model in Keras safe mode (no pickle is read)."""
    import keras

    bundle = Path(bundle)
    verify_bundle(bundle)
    try:
        model = keras.models.load_model(bundle / layout.MODEL_FILE, safe_mode=True, compile=False)
        from tickercast.modeling.models import split_heads
        from tickercast.modeling.preprocess import Preprocessing

        model, quantiles = split_heads(model)
        spec = Preprocessing.from_json(json.loads((bundle / layout.SPEC_FILE).read_text()))
        metadata = read_metadata(bundle)
    except Exception as exc:  # checksums matched, yet unreadable: refuse, naming the bundle
        raise BundleError(f"bundle {bundle}: cannot be loaded: {exc}") from exc
    return Bundle(bundle, model, spec, metadata, quantiles)
