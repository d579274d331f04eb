"""Versioned model bundles: `<data_dir>/models/<ticker>/versions/<n>/`.

A bundle is assembled in a hidden temporary folder and renamed into the first free
version number, so a reader never sees half a bundle and two concurrent exports get
distinct numbers. `manifest.json` holds every file's sha256; loading checks it first.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from tasks.atomic import fsync_dir, write_json
from tasks.hashing import file_sha256
from tasks.preprocess import Preprocessing
from tasks.tickers import validate_ticker

MANIFEST = "manifest.json"
REQUIRED_FILES = ("model.keras", "preprocessing.json", "metadata.json")


class BundleError(RuntimeError):
    """A bundle that is incomplete or does not match its manifest."""


def versions_dir(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / "models" / validate_ticker(name) / "versions"


def list_versions(data_dir: str | Path, name: str) -> list[int]:
    folder = versions_dir(data_dir, name)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def latest_bundle(data_dir: str | Path, name: str) -> Path:
    versions = list_versions(data_dir, name)
    if not versions:
        raise FileNotFoundError(f"no model bundle for {name} under {versions_dir(data_dir, name)}")
    return versions_dir(data_dir, name) / str(versions[-1])


def write_bundle(data_dir: str | Path, name: str, files: dict[str, Path], metadata: dict) -> Path:
    """Copy `files` (bundle name -> source path) plus metadata into the next version."""
    root = versions_dir(data_dir, name)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        for target, source in files.items():
            shutil.copyfile(source, staging / target)
        write_json(staging / "metadata.json", metadata)
        manifest = {
            p.name: file_sha256(p) for p in sorted(staging.iterdir()) if not p.name.startswith(".")
        }
        write_json(staging / MANIFEST, {"files": manifest})
        for path in staging.iterdir():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(staging)
        return _claim_version(root, staging)
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


def verify_bundle(bundle: str | Path) -> dict[str, str]:
    """Refuse a bundle with a missing file or a checksum mismatch, naming the file."""
    bundle = Path(bundle)
    manifest_path = bundle / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"bundle {bundle}: {MANIFEST} is missing")
    files = json.loads(manifest_path.read_text())["files"]
    for required in REQUIRED_FILES:
        if required not in files:
            raise BundleError(f"bundle {bundle}: manifest does not list {required}")
    for name, digest in files.items():
        path = bundle / name
        if not path.is_file():
            raise BundleError(f"bundle {bundle}: {name} is missing")
        if file_sha256(path) != digest:
            raise BundleError(f"bundle {bundle}: {name} does not match its checksum")
    return files


@dataclass
class Bundle:
    path: Path
    model: object
    spec: Preprocessing
    metadata: dict


def load_bundle(bundle: str | Path) -> Bundle:
    """Verify checksums, then load the model in Keras safe mode (no pickle is read)."""
    import keras

    bundle = Path(bundle)
    verify_bundle(bundle)
    model = keras.models.load_model(bundle / "model.keras", safe_mode=True, compile=False)
    spec = Preprocessing.from_json(json.loads((bundle / "preprocessing.json").read_text()))
    metadata = json.loads((bundle / "metadata.json").read_text())
    return Bundle(bundle, model, spec, metadata)
