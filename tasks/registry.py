"""The model registry: one champion per model name, a gated promotion, a full history.

    <data_dir>/models/<name>/versions/<n>/   bundles (tasks.export)
    <data_dir>/models/<name>/registry.json   {"champion", "lineage", "history", ...}

A new version becomes champion only if it beats the current champion on the latest
common test window: the new version's test windows on which the champion is also out of
sample (anchor day on or after the champion's last validation day). Both models are
re-run on those windows from the lake with their own scalers; lower is better for the
configured metric, and a tie keeps the champion. Optionally the new version must also
beat the naive last-close forecast there.

Every change happens under an exclusive lock (`tasks.atomic.file_lock`) and is written
with an atomic rename (`tasks.atomic.write_json`), so concurrent runs serialise and a
reader sees the old registry or the new one. `lineage` is the stack of champions:
promotion pushes, rollback pops.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.atomic import file_lock, write_json
from tasks.evaluate import LOWER_IS_BETTER, clean, metrics
from tasks.export import (
    Bundle,
    BundleError,
    bundle_path,
    list_versions,
    load_bundle,
    verify_bundle,
)
from tasks.tickers import validate_ticker

REGISTRY = "registry.json"
LOCK = ".registry.lock"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version, nothing to roll back)."""


def model_root(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / "models" / validate_ticker(name)


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


def _lock(data_dir: str | Path, name: str):
    return file_lock(model_root(data_dir, name) / LOCK)


def _known(data_dir: str | Path, name: str, version: int) -> Path:
    if int(version) not in list_versions(data_dir, name):
        raise RegistryError(
            f"model {name} has no version {version}; versions: {list_versions(data_dir, name)}"
        )
    return bundle_path(data_dir, name, version)


def _record(registry: dict, event: dict) -> dict:
    registry["history"].append({"at": _now(), **event})
    return registry


# --------------------------------------------------------------------------- the gate


def _outputs(table: pd.DataFrame, prefix: str, n_outputs: int) -> np.ndarray:
    columns = [prefix] + [f"{prefix}_{j}" for j in range(2, n_outputs + 1)]
    return table[columns].to_numpy(dtype=np.float64)


def common_window(challenger: Bundle, champion: Bundle) -> pd.DataFrame:
    """The challenger's test windows on which the champion is out of sample too."""
    table = pd.read_parquet(challenger.path / "predictions.parquet")
    champion_val_end = pd.Timestamp(champion.spec.val_end)
    return table.loc[pd.to_datetime(table["anchor_date"]) >= champion_val_end].reset_index(
        drop=True
    )


def score(data_dir: str | Path, challenger: Bundle, champion: Bundle | None, metric: str) -> dict:
    """Metric of challenger, champion and naive on the same windows, from the lake."""
    from tasks import lake
    from tasks.predict import predict_at

    if champion is not None:
        table = common_window(challenger, champion)
    else:
        table = pd.read_parquet(challenger.path / "predictions.parquet")
    window = {"windows": int(len(table))}
    if table.empty:
        return {"window": window, "scores": {}}
    window["first_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[0]).date())
    window["last_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[-1]).date())
    prices = lake.read_partition(data_dir, challenger.metadata["ticker"])
    n_out = 1 + sum(1 for c in table.columns if c.startswith("actual_"))
    actual = _outputs(table, "actual", n_out)
    last = table["last_close"].to_numpy(dtype=np.float64)
    scale = (challenger.metadata.get("evaluation") or {}).get("mase_scale")

    def value(pred: np.ndarray) -> float:
        return metrics(actual, pred, last_close=last, scale=scale)[metric]

    scores = {
        "challenger": value(predict_at(challenger, prices, table["anchor_date"])),
        "naive": value(np.repeat(last[:, None], n_out, axis=1)),
    }
    if champion is not None:
        scores["champion"] = value(predict_at(champion, prices, table["anchor_date"]))
    return {"window": window, "scores": clean(scores)}


def _comparable(a: Bundle, b: Bundle) -> str | None:
    for field in ("horizon", "target"):
        if getattr(a.spec, field) != getattr(b.spec, field):
            return (
                f"{field} differs ({getattr(a.spec, field)!r} vs champion "
                f"{getattr(b.spec, field)!r}): the metrics are not comparable"
            )
    return None


def challenge(
    data_dir: str | Path,
    name: str,
    version: int,
    metric: str = "rmse",
    require_beat_naive: bool = False,
) -> dict:
    """Promote `version` if it beats the champion (and naive, if required); record either way.

    Returns the recorded event: action "promote" or "reject", scores and the reason.
    """
    if metric not in LOWER_IS_BETTER:
        raise RegistryError(f"promotion metric {metric!r}; valid: {list(LOWER_IS_BETTER)}")
    version = int(version)
    with _lock(data_dir, name):
        registry = read_registry(data_dir, name)
        before = registry["champion"]
        event = {
            "version": version,
            "champion_before": before,
            "metric": metric,
            "require_beat_naive": require_beat_naive,
        }
        if before == version:
            return _decide(data_dir, name, registry, event, False, "already the champion", {})
        try:
            challenger = load_bundle(_known(data_dir, name, version))
        except BundleError as exc:
            return _decide(data_dir, name, registry, event, False, f"refused: {exc}", {})
        champion, damaged = None, None
        if before is not None:
            try:
                champion = load_bundle(bundle_path(data_dir, name, before))
            except (BundleError, FileNotFoundError) as exc:
                damaged = f"champion v{before} fails verification ({exc})"
        if champion is not None and (why := _comparable(challenger, champion)):
            return _decide(data_dir, name, registry, event, False, why, {})
        result = score(data_dir, challenger, champion, metric)
        event["window"] = result["window"]
        s = result["scores"]
        if not s:
            reason = (
                f"no common out-of-sample window: the champion v{before} validated up to "
                f"{champion.spec.val_end}, after every test window of v{version}"
            )
            return _decide(data_dir, name, registry, event, False, reason, s)
        reasons, ok = [damaged] if damaged else [], True
        if champion is not None:
            beats = s["challenger"] < s["champion"]
            ok &= beats
            reasons.append(
                f"{metric} {s['challenger']:.6g} {'<' if beats else '>='} champion "
                f"v{before} {s['champion']:.6g}"
            )
        elif not damaged:
            reasons.append("no champion yet")
        beats_naive = s["challenger"] < s["naive"]
        if require_beat_naive:
            ok &= beats_naive
        reasons.append(
            f"{'beats' if beats_naive else 'does not beat'} naive ({s['naive']:.6g})"
            + (" (required)" if require_beat_naive else "")
        )
        return _decide(
            data_dir,
            name,
            registry,
            event,
            ok,
            f"{result['window']['windows']} windows: " + "; ".join(reasons),
            s,
        )


def _decide(
    data_dir, name, registry: dict, event: dict, promote: bool, reason: str, scores: dict
) -> dict:
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
    with _lock(data_dir, name):
        registry = read_registry(data_dir, name)
        path = _known(data_dir, name, version)
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
    with _lock(data_dir, name):
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
        verify_bundle(_known(data_dir, name, target))
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
    root = Path(data_dir) / "models"
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if (p / "versions").is_dir() or (p / REGISTRY).is_file()
    )


def _version_summary(path: Path, champion: int | None) -> dict:
    row: dict = {"version": int(path.name), "champion": int(path.name) == champion}
    try:
        verify_bundle(path)
        row["intact"] = True
    except BundleError as exc:
        row["intact"], row["problem"] = False, str(exc)
    try:
        meta = json.loads((path / "metadata.json").read_text())
    except (OSError, ValueError):
        return row
    m = meta.get("metrics", {})
    row.update(
        created_at=meta.get("created_at"),
        last_day=meta.get("data", {}).get("last_day"),
        rmse=m.get("model", {}).get("rmse"),
        naive_rmse=m.get("naive", {}).get("rmse"),
        skill=m.get("model", {}).get("skill"),
    )
    return row


def show(data_dir: str | Path, name: str) -> dict:
    registry = read_registry(data_dir, name)
    versions = [
        _version_summary(bundle_path(data_dir, name, v), registry["champion"])
        for v in list_versions(data_dir, name)
    ]
    return {**registry, "versions": versions}


def list_models(data_dir: str | Path) -> list[dict]:
    rows = []
    for name in model_names(data_dir):
        try:
            registry = read_registry(data_dir, name)
            champion, problem = registry["champion"], None
        except RegistryError as exc:
            champion, problem = None, str(exc)
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
