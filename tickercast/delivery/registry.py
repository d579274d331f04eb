"""The model registry: one champion per model name, a gated promotion, a full history.

    <data_dir>/models/<name>/versions/<n>/   bundles (tickercast.delivery.bundle)
    <data_dir>/models/<name>/registry.json   {"champion", "lineage", "history", ...}

The champion gate that decides promotions lives in `tickercast.delivery.gate`; this module
stores the decisions, moves the champion by hand (promote, rollback) and reads it back.

Every change happens under an exclusive lock (`tickercast.atomic.file_lock`) and is written
with an atomic rename (`tickercast.atomic.write_json`), so concurrent runs serialise and a
reader sees the old registry or the new one. `lineage` is the stack of champions:
promotion pushes, rollback pops.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tickercast import layout
from tickercast.atomic import file_lock, write_json
from tickercast.delivery.bundle import (
    Bundle,
    BundleError,
    bundle_path,
    list_versions,
    load_bundle,
    read_metadata,
    verify_bundle,
)
from tickercast.tickers import validate_ticker

REGISTRY = layout.REGISTRY_FILE
LOCK = ".registry.lock"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version, nothing to roll back)."""


def model_root(data_dir: str | Path, name: str) -> Path:
    return layout.model_dir(data_dir, validate_ticker(name))


def registry_path(data_dir: str | Path, name: str) -> Path:
    return model_root(data_dir, name) / REGISTRY


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_registry(data_dir: str | Path, name: str) -> dict:
    """The registry of `name` (an empty one when nothing was ever promoted)."""
    path = registry_path(data_dir, name)
    if not path.is_file():
        return {"name": validate_ticker(name), "champion": None, "lineage": [], "history": []}
    try:
        registry = json.loads(path.read_text())
    except ValueError as exc:
        raise RegistryError(f"registry {path} is not valid JSON: {exc}") from exc
    for key in ("champion", "lineage", "history"):
        if key not in registry:
            raise RegistryError(f"registry {path} has no {key!r}")
    return registry


def _write(data_dir: str | Path, name: str, registry: dict) -> None:
    registry["updated_at"] = _now()
    write_json(registry_path(data_dir, name), registry)


def lock(data_dir: str | Path, name: str):
    return file_lock(model_root(data_dir, name) / LOCK)


def known(data_dir: str | Path, name: str, version: int) -> Path:
    if int(version) not in list_versions(data_dir, name):
        raise RegistryError(
            f"model {name} has no version {version}; versions: {list_versions(data_dir, name)}"
        )
    return bundle_path(data_dir, name, version)


def _record(registry: dict, event: dict) -> dict:
    registry["history"].append({"at": _now(), **event})
    return registry


def decide(
    data_dir, name, registry: dict, event: dict, promote: bool, reason: str, scores: dict
) -> dict:
    """Record the gate's decision (promote or reject, and why) and write the registry."""
    event = {
        **event,
        "action": "promote" if promote else "reject",
        "reason": reason,
        "scores": scores,
    }
    if promote:
        registry["champion"] = event["version"]
        registry["lineage"].append(event["version"])
    event["champion_after"] = registry["champion"]
    _record(registry, event)
    _write(data_dir, name, registry)
    return registry["history"][-1]


# --------------------------------------------------------------------------- by hand


def promote(data_dir: str | Path, name: str, version: int, reason: str = "manual") -> dict:
    """Make `version` the champion without the gate (its checksums must verify)."""
    version = int(version)
    with lock(data_dir, name):
        registry = read_registry(data_dir, name)
        path = known(data_dir, name, version)
        if registry["champion"] == version:
            raise RegistryError(f"model {name}: version {version} is already the champion")
        verify_bundle(path)
        before = registry["champion"]
        registry["champion"] = version
        registry["lineage"].append(version)
        _record(
            registry,
            {
                "action": "manual_promote",
                "version": version,
                "champion_before": before,
                "champion_after": version,
                "reason": reason,
            },
        )
        _write(data_dir, name, registry)
        return registry


def rollback(data_dir: str | Path, name: str, to: int | None = None) -> dict:
    """Back to the previous champion (or to `to`, an earlier champion); verified first."""
    with lock(data_dir, name):
        registry = read_registry(data_dir, name)
        lineage = registry["lineage"]
        if len(lineage) < 2:
            raise RegistryError(f"model {name}: no earlier champion to roll back to")
        if to is None:
            keep = len(lineage) - 1
        else:
            earlier = [i for i, v in enumerate(lineage[:-1]) if v == int(to)]
            if not earlier:
                raise RegistryError(
                    f"model {name}: version {to} was not an earlier champion "
                    f"(lineage {lineage}); use `models promote` instead"
                )
            keep = earlier[-1] + 1
        target = lineage[keep - 1]
        verify_bundle(known(data_dir, name, target))
        before = registry["champion"]
        registry["lineage"] = lineage[:keep]
        registry["champion"] = target
        _record(
            registry,
            {
                "action": "rollback",
                "version": target,
                "champion_before": before,
                "champion_after": target,
                "reason": f"rolled back from v{before}",
            },
        )
        _write(data_dir, name, registry)
        return registry


# --------------------------------------------------------------------------- reading


def champion_path(data_dir: str | Path, name: str) -> Path:
    champion = read_registry(data_dir, name)["champion"]
    if champion is None:
        raise RegistryError(
            f"model {name} has no champion under {model_root(data_dir, name)}; "
            "retrain it or `tickercast models promote`"
        )
    return bundle_path(data_dir, name, champion)


def load_champion(data_dir: str | Path, name: str) -> Bundle:
    """The champion bundle, verified and loaded in safe mode (BundleError if damaged)."""
    return load_bundle(champion_path(data_dir, name))


def model_names(data_dir: str | Path) -> list[str]:
    root = layout.models_root(data_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if (p / "versions").is_dir() or (p / REGISTRY).is_file()
    )


def champions(data_dir: str | Path) -> list[str]:
    """The models that have a champion (what `predict` forecasts when given no tickers)."""
    return [n for n in model_names(data_dir) if read_registry(data_dir, n)["champion"] is not None]


def _version_summary(path: Path, champion: int | None) -> dict:
    from tickercast.evaluation.report import distribution_summary

    row: dict = {"version": int(path.name), "champion": int(path.name) == champion}
    try:
        verify_bundle(path)
        row["intact"] = True
    except BundleError as exc:
        row["intact"], row["problem"] = False, str(exc)
    try:
        meta = read_metadata(path)
    except (OSError, ValueError):
        return row
    m = meta.get("metrics", {})
    row.update(
        created_at=meta.get("created_at"),
        last_day=meta.get("data", {}).get("last_day"),
        rmse=m.get("model", {}).get("rmse"),
        naive_rmse=m.get("naive", {}).get("rmse"),
        skill=m.get("model", {}).get("skill"),
        distribution=distribution_summary(meta),
    )
    return row


def show(data_dir: str | Path, name: str) -> dict:
    registry = read_registry(data_dir, name)
    versions = [
        _version_summary(bundle_path(data_dir, name, v), registry["champion"])
        for v in list_versions(data_dir, name)
    ]
    return {**registry, "versions": versions}


def champion_damage(data_dir: str | Path, name: str, champion: int) -> str | None:
    """Why the champion bundle cannot be served (missing, changed or unlisted file), or
    None when it verifies: `models list` flags it, the service answers 503 with it."""
    try:
        verify_bundle(bundle_path(data_dir, name, champion))
    except (BundleError, OSError) as exc:
        return f"champion v{champion} is damaged: {exc}"
    return None


def list_models(data_dir: str | Path) -> list[dict]:
    rows = []
    for name in model_names(data_dir):
        try:
            registry = read_registry(data_dir, name)
            champion, problem = registry["champion"], None
        except RegistryError as exc:
            champion, problem = None, str(exc)
        if champion is not None:
            problem = champion_damage(data_dir, name, champion)
        versions = list_versions(data_dir, name)
        rows.append(
            {
                "name": name,
                "champion": champion,
                "versions": len(versions),
                "latest": versions[-1] if versions else None,
                **({"problem": problem} if problem else {}),
            }
        )
    return rows
