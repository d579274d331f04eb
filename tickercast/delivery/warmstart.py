"""Where a warm start comes from: the ticker's champion bundle and its fitted weights.

`find_source` runs when a retrain submits its fits (the champion as the night starts, or,
while the gate has promoted none, the latest version: tickercast.modeling.warm) and
names that version and the sha256 of its `fitted-weights.npz` (from the bundle's
manifest): the train step's cache key and work folder hold that hash, so a new
champion (a promotion, a rollback) is a new fit. `read_champion` reads what the plan
(tickercast.modeling.warm) compares, at train time.
"""

from __future__ import annotations

import json
from pathlib import Path

from tickercast import layout
from tickercast.delivery.bundle import (
    BundleError,
    bundle_path,
    list_versions,
    read_manifest,
    read_metadata,
)
from tickercast.delivery.registry import RegistryError, read_registry
from tickercast.modeling.warm import Champion
from tickercast.records import Record


class WarmSource(Record):
    """The version a fit may start from: its bundle, version and fitted weights' hash
    (None when the bundle carries none), and whether it is the champion (False: the
    latest version of a ticker whose versions the gate never promoted)."""

    ticker: str
    bundle: str
    version: int
    weights_sha256: str | None = None
    champion: bool = True


def find_source(data_dir: str | Path, ticker: str) -> WarmSource | None:
    """The ticker's champion as a warm-start source; without one, its latest version;
    None when there is no version (or the registry or that bundle's manifest is
    unreadable: a cold fit)."""
    try:
        champion = read_registry(data_dir, ticker)["champion"]
        if champion is not None:
            return _source(data_dir, ticker, champion, True)
        versions = list_versions(data_dir, ticker)
        return _source(data_dir, ticker, versions[-1], False) if versions else None
    except (RegistryError, BundleError):
        return None


def _source(data_dir: str | Path, ticker: str, version: int, champion: bool) -> WarmSource:
    bundle = bundle_path(data_dir, ticker, version)
    digest = read_manifest(bundle).get(layout.FITTED_WEIGHTS_FILE)
    return WarmSource(
        ticker=ticker,
        bundle=str(bundle),
        version=version,
        weights_sha256=digest,
        champion=champion,
    )


def read_champion(source: WarmSource) -> Champion:
    """What the warm-start plan compares: the champion's recorded settings, data window,
    preprocessing and fitted weights (checked against the hash it was found with when
    loaded: tickercast.modeling.warm.load_weights)."""
    bundle = Path(source.bundle)
    metadata = read_metadata(bundle)
    spec = json.loads((bundle / layout.SPEC_FILE).read_text())
    weights = bundle / layout.FITTED_WEIGHTS_FILE if source.weights_sha256 else None
    return Champion(
        version=source.version,
        config=metadata.get("config", {}),
        last_day=metadata.get("data", {}).get("last_day") or spec["last_day"],
        spec=spec,
        weights=weights,
        weights_sha256=source.weights_sha256,
        warm_start=metadata.get("training", {}).get("warm_start"),
        val_loss=metadata.get("training", {}).get("best_val_loss"),
        is_champion=source.champion,
        ticker=source.ticker,
    )
