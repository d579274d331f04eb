"""Versioned model bundles: `<data_dir>/models/<ticker>/versions/<n>/`.

A bundle is assembled in a hidden temporary folder and renamed into the first free
version number, so a reader never sees half a bundle and two concurrent exports get
distinct numbers. `manifest.json` holds the sha256 of every file (SavedModel folder
included, by relative path); loading checks it first and refuses a missing, changed or
unlisted file. The Keras model loads in safe mode; nothing is unpickled.

Besides `model.keras` a bundle carries `saved_model/`, a TensorFlow SavedModel for TF
Serving, and `serving.json`, which documents its signature (see `export_saved_model`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from tickercast import layout
from tickercast.atomic import fsync_dir, storage_error, write_json
from tickercast.hashing import file_sha256
from tickercast.modeling.preprocess import Preprocessing
from tickercast.tickers import validate_ticker

MANIFEST = "manifest.json"
REQUIRED_FILES = ("model.keras", "preprocessing.json", "metadata.json")
SAVED_MODEL = "saved_model"
SERVING = "serving.json"
SIGNATURE = "serving_default"
# A staging folder this old belongs to an export that was killed (a live one takes
# seconds to minutes); the next export removes it.
STALE_STAGING_SECONDS = 3600


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
        if json.loads((path / "metadata.json").read_text()).get("inputs_key") != key:
            return None
        verify_bundle(path)
    except (OSError, ValueError, BundleError):
        return None
    return {"version": versions[-1], "path": str(path)}


def latest_bundle(data_dir: str | Path, name: str) -> Path:
    versions = list_versions(data_dir, name)
    if not versions:
        raise FileNotFoundError(f"no model bundle for {name} under {versions_dir(data_dir, name)}")
    return versions_dir(data_dir, name) / str(versions[-1])


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
        write_json(staging / "metadata.json", metadata)
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


def verify_bundle(bundle: str | Path) -> dict[str, str]:
    """Refuse a bundle with a missing, changed or unlisted file, naming the file."""
    bundle = Path(bundle)
    manifest_path = bundle / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"bundle {bundle}: {MANIFEST} is missing")
    try:
        files = json.loads(manifest_path.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {bundle}: {MANIFEST} is unreadable: {exc}") from exc
    for required in REQUIRED_FILES:
        if required not in files:
            raise BundleError(f"bundle {bundle}: manifest does not list {required}")
    for name, digest in files.items():
        path = _safe_relative(bundle, name)
        if not path.is_file():
            raise BundleError(f"bundle {bundle}: {name} is missing")
        if file_sha256(path) != digest:
            raise BundleError(f"bundle {bundle}: {name} does not match its checksum")
    for path in _bundle_files(bundle):
        name = path.relative_to(bundle).as_posix()
        if name != MANIFEST and name not in files:
            raise BundleError(f"bundle {bundle}: {name} is not in the manifest")
    return files


@dataclass
class Bundle:
    path: Path
    model: object
    spec: Preprocessing
    metadata: dict

    @property
    def version(self) -> int:
        return int(self.path.name)


def load_bundle(bundle: str | Path) -> Bundle:
    """Verify checksums, then load the model in Keras safe mode (no pickle is read)."""
    import keras

    bundle = Path(bundle)
    verify_bundle(bundle)
    try:
        model = keras.models.load_model(bundle / "model.keras", safe_mode=True, compile=False)
        spec = Preprocessing.from_json(json.loads((bundle / "preprocessing.json").read_text()))
        metadata = json.loads((bundle / "metadata.json").read_text())
    except Exception as exc:  # checksums matched, yet unreadable: refuse, naming the bundle
        raise BundleError(f"bundle {bundle}: cannot be loaded: {exc}") from exc
    return Bundle(bundle, model, spec, metadata)


def export_saved_model(model, spec: Preprocessing, dest: Path) -> dict:
    """Write a TF SavedModel (`model.export`) and return its serving signature, checked.

    The SavedModel is reloaded with `tf.saved_model.load` and its `serving_default`
    signature must reproduce the Keras model on a probe window, so what serving.json
    documents is what TF Serving will run.
    """
    import tensorflow as tf

    model.export(str(dest), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(dest))
    signature = loaded.signatures[SIGNATURE]
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1:
        raise BundleError(f"SavedModel signature has {len(inputs)} inputs, expected 1")
    ((input_name, input_spec),) = inputs.items()
    probe = np.random.default_rng(0).random((2, spec.lookback, len(spec.features)))
    probe = probe.astype(np.float32)
    served = signature(**{input_name: tf.constant(probe)})
    output_name = sorted(served)[0]
    expected = np.asarray(model.predict(probe, verbose=0))
    if not np.allclose(np.asarray(served[output_name]), expected, rtol=1e-4, atol=1e-5):
        raise BundleError("SavedModel does not reproduce the Keras model's predictions")

    def describe(tensor_spec) -> dict:
        return {"dtype": tensor_spec.dtype.name, "shape": tensor_spec.shape.as_list()}

    return {
        "format": "tf_saved_model",
        "path": SAVED_MODEL,
        "tag": "serve",
        "signature": SIGNATURE,
        "inputs": {input_name: describe(input_spec)},
        "outputs": {name: describe(s) for name, s in outputs.items()},
        "input_scaling": (
            "min-max per feature with preprocessing.json feature_scaler: "
            "(raw - min) / (max - min) (max - min taken as 1 where it is 0), features in "
            "preprocessing.json order, oldest day first, `lookback` days"
        ),
        "output_scaling": (
            "inverse min-max with preprocessing.json target_scaler: scaled * (max - min) + min"
            + (
                " is a log return: price = last close * exp(value)"
                if spec.target.endswith("_log_return")
                else " gives prices"
            )
        ),
        "features": list(spec.features),
        "lookback": spec.lookback,
        "horizon": spec.horizon,
        "target": spec.target,
    }


def build_bundle(
    data_dir: str | Path,
    name: str,
    files: dict[str, Path],
    metadata: dict,
    model_path: Path,
    spec: Preprocessing,
) -> Path:
    """`write_bundle` plus the TF SavedModel and serving.json made from `model_path`."""
    import tempfile

    import keras

    staging = layout.export_staging(data_dir)
    staging.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(staging, ".export-")
    with tempfile.TemporaryDirectory(dir=staging, prefix=".export-") as tmp:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
        serving = export_saved_model(model, spec, Path(tmp) / SAVED_MODEL)
        write_json(Path(tmp) / SERVING, serving)
        files = {**files, SAVED_MODEL: Path(tmp) / SAVED_MODEL, SERVING: Path(tmp) / SERVING}
        return write_bundle(data_dir, name, files, {**metadata, "serving": serving})
