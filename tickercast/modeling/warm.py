"""Warm start: the second night fine-tunes the champion's fitted weights (issue 22).

A nightly retrain with one new trading day per ticker refits almost the same network from
scratch. With `warm_start="auto"` a per-ticker fit instead starts from the champion's
*fitted* weights (`fitted-weights.npz`: saved before the shrinkage toward the last close
and the quantile calibration, which are fit again on the new validation split) and trains
at most `warm_start_epochs`. The scalers are refit on the new training rows as always (no
look-ahead); only the network's starting point changes.

Without a champion (the gate never promoted a version: each was significantly worse than
naive, say), the ticker's latest version starts the fit instead. It is fine-tuned like a
champion but never kept as it is: whatever the fine-tune ends with (its own weights
included) is shrunk, calibrated, exported and gated as a new version, as a refit from
scratch would be, for a fraction of a cold fit's epochs (a rejected ticker would otherwise
pay a cold fit every night). The monthly full refit below applies to it too.

A warm start is refused, and the fit starts from scratch saying why, when:
- there is no version to start from, or it carries no fitted weights (exported before
  warm starts);
- it was trained differently: network kind, units, head, dropout, recurrent dropout, L2,
  input features (and their order), lookback, horizon, target or scope (`MUST_MATCH`), or
  its weights' shapes differ from the network built now;
- its scalers are not per-column min-max over the same columns (the only kind written);
- its last full refit is too old: the last day of data that full refit saw is more than
  `full_refit_days` calendar days before today's last day of data (days of data, not of
  the wall clock, so a rerun over the same data plans the same), less the ticker's
  stagger: up to a third of `full_refit_days`, drawn from the ticker's name and the day
  of that last full refit (`refit_after_days`). A universe first fitted on one night
  would otherwise refit every ticker from scratch on one night a month later, a first
  night's cost; staggered, those refits spread over the last third of the cycle, and a
  new draw each cycle keeps them from meeting again (`bench/refit_stagger.py`).

A warm plan with `warm_start_drift` set also says at what loss the champion still fits
(`keep_at`: its recorded validation loss times 1 + drift): the fit scores the champion's
weights on tonight's validation windows first, and at or under that loss keeps them
without a single epoch (the champion stays; no new version). Only tickers whose champion
drifted pay for a fine-tune.

This module is pure: it reads the files it is given and never imports Prefect.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tickercast.modeling.preprocess import Preprocessing
    from tickercast.sections import FitSpec, WarmStart

# The recorded settings (metadata "config", flat names) a warm start needs unchanged.
MUST_MATCH = (
    "model",
    "units",
    "head",
    "dropout",
    "recurrent_dropout",
    "l2",
    "features",
    "lookback",
    "horizon",
    "target",
    "mode",
)


@dataclass(frozen=True)
class Champion:
    """What a warm start reads of the champion: its version, recorded settings, data
    window, preprocessing.json, fitted weights (path and sha256) and warm-start record."""

    version: int
    config: dict[str, Any]
    last_day: str
    spec: dict[str, Any]
    weights: Path | None
    weights_sha256: str | None
    warm_start: dict[str, Any] | None = None
    val_loss: float | None = None  # its fitted weights' validation loss when it was made
    # False: not a champion but the ticker's latest version, while the gate promoted none
    is_champion: bool = True
    ticker: str = ""  # its full refit's stagger (refit_after_days); "": none

    @property
    def name(self) -> str:
        """How the plan's reasons name it."""
        if self.is_champion:
            return f"the champion v{self.version}"
        return f"v{self.version} (the latest version; the gate promoted none)"

    @property
    def full_refit_last_day(self) -> str:
        """The last day of data the full refit behind these weights saw."""
        recorded = (self.warm_start or {}).get("full_refit_last_day")
        return recorded or self.last_day


@dataclass(frozen=True)
class Plan:
    """How tonight's fit starts: `mode` "warm" or "full", and why."""

    mode: str
    reason: str
    source_version: int | None = None
    epochs: int | None = None  # the warm fit's cap (None: the config's epochs)
    full_refit_last_day: str | None = None  # carried into the new version's metadata
    patience: int | None = None  # the warm fit's early-stopping patience (None: the config's)
    # keep the champion without an epoch when its loss on tonight's validation windows is at
    # most this (its recorded validation loss x (1 + warm_start_drift)); None: always fine-tune
    keep_at: float | None = None
    # whether the starting weights may be kept as they are (no new version) when no epoch
    # beats them: a champion's; not a version the gate never promoted (it is gated again)
    keeps_source: bool = True

    def record(self) -> dict[str, Any]:
        """What metadata records (training.warm_start)."""
        return asdict(self)


def _now_settings(spec: FitSpec, pre: Preprocessing, mode: str) -> dict[str, Any]:
    network = spec.network
    return {
        "model": network.model,
        "units": list(network.units),
        "head": network.head,
        "dropout": network.dropout,
        "recurrent_dropout": network.recurrent_dropout,
        "l2": network.l2,
        "features": list(pre.features),
        "lookback": pre.lookback,
        "horizon": pre.horizon,
        "target": pre.target,
        "mode": mode,
    }


def incompatibilities(champion: Champion, spec: FitSpec, pre: Preprocessing) -> list[str]:
    """Why the champion's weights cannot start tonight's fit (empty: they can)."""
    problems = []
    now = _now_settings(spec, pre, "per_ticker")
    recorded = {**champion.config, **_spec_settings(champion.spec)}
    for name in MUST_MATCH:
        was = recorded.get(name, "per_ticker" if name == "mode" else None)
        if was != now[name]:
            problems.append(f"{name} was {was!r}, now {now[name]!r}")
    for scaler in ("feature_scaler", "target_scaler"):
        kept = champion.spec.get(scaler) or {}
        ours = getattr(pre, scaler)
        if set(kept) != {"min", "max"} or len(kept["min"]) != len(ours.min):
            problems.append(f"{scaler} is not min-max over the same {len(ours.min)} columns")
    return problems


def _spec_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The champion's preprocessing.json says what its inputs were, whatever its config."""
    return {k: spec[k] for k in ("features", "lookback", "horizon", "target") if k in spec}


def data_age_days(since: str, last_day: str) -> int:
    """Calendar days from `since` to `last_day` (ISO days)."""
    return (dt.date.fromisoformat(last_day[:10]) - dt.date.fromisoformat(since[:10])).days


def refit_after_days(full_refit_days: int, ticker: str, since: str) -> int:
    """The data age past which `ticker`, last fully refit on data up to `since`, refits
    from scratch: `full_refit_days` less a stagger of up to a third of the cycle's
    business days, drawn from the sha256 of both (the same on every night and machine, a
    new draw each cycle: one drawn from the name alone gives each ticker a fixed period,
    and tickers whose periods share a multiple refit together again). Counted in
    business days, each stagger lands on its own weekday night; in calendar days a
    Monday would take three staggers at once."""
    if not ticker:
        return full_refit_days
    digest = hashlib.sha256(f"{ticker} {since[:10]}".encode()).hexdigest()
    share = int(digest[:8], 16) / 2**32
    start = dt.date.fromisoformat(since[:10])
    end = start + dt.timedelta(days=full_refit_days)
    stagger = int(share * (int(np.busday_count(start, end)) // 3 + 1))
    deadline = np.busday_offset(end, -stagger, roll="backward").astype(dt.date)
    return max(0, min(full_refit_days, (deadline - start).days))


def plan(settings: WarmStart, champion: Champion | None, spec: FitSpec, pre: Preprocessing) -> Plan:
    """Warm or full tonight, and why (the module's docstring lists the refusals)."""
    today = pre.last_day
    if settings.warm_start == "off":
        return Plan("full", "warm_start is off", full_refit_last_day=today)
    if champion is None:
        return Plan(
            "full", "no champion or earlier version to start from", full_refit_last_day=today
        )
    version, name = champion.version, champion.name
    if champion.weights is None:
        return Plan(
            "full",
            f"{name} has no fitted weights (exported before warm starts)",
            version,
            full_refit_last_day=today,
        )
    problems = incompatibilities(champion, spec, pre)
    if problems:
        why = f"{name} was trained differently: " + "; ".join(problems)
        return Plan("full", why, version, full_refit_last_day=today)
    age = data_age_days(champion.full_refit_last_day, today)
    due = refit_after_days(settings.full_refit_days, champion.ticker, champion.full_refit_last_day)
    if age > due:
        stagger = settings.full_refit_days - due
        why = (
            f"{name}'s last full refit saw data up to "
            f"{champion.full_refit_last_day}, {age} calendar days before today's "
            f"{today} (full_refit_days {settings.full_refit_days}"
            + (f", less this ticker's stagger of {stagger}" if stagger else "")
            + ")"
        )
        return Plan("full", why, version, full_refit_last_day=today)
    epochs = min(settings.warm_start_epochs, spec.training.epochs)
    patience = min(settings.warm_start_patience, spec.training.patience)
    keep_at = None
    drift = ""
    if not champion.is_champion:
        drift = "; gated as a new version whatever it ends with (never kept as it is)"
    elif settings.warm_start_drift is not None and champion.val_loss is not None:
        keep_at = champion.val_loss * (1 + settings.warm_start_drift)
        drift = (
            f"; kept without an epoch if their loss on tonight's validation windows is at "
            f"most {keep_at:.6g} (their {champion.val_loss:.6g} when made, warm_start_drift "
            f"{settings.warm_start_drift:g})"
        )
    why = (
        f"fine-tuning {name}'s fitted weights for at most {epochs} epochs, "
        f"stopping after {patience} without beating the best so far, its own weights "
        f"included (last full refit on data up to {champion.full_refit_last_day}, {age} "
        f"days ago){drift}"
    )
    return Plan(
        "warm",
        why,
        version,
        epochs,
        champion.full_refit_last_day,
        patience,
        keep_at,
        keeps_source=champion.is_champion,
    )


def load_weights(path: Path, sha256: str | None = None) -> list[np.ndarray]:
    """The fitted weights, in `model.get_weights()` order; refused when they no longer
    match the hash they were found with (the cache key holds that hash)."""
    data = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path} changed since it was chosen to warm-start from")
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def save_weights(model: Any, path: Path) -> None:
    """The network's weights as fitted (before shrinkage and calibration change the
    output layers), for the next night to start from."""
    from tickercast.atomic import atomic_path

    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, *model.get_weights())


def shape_problem(model: Any, weights: list[np.ndarray]) -> str | None:
    """Why `weights` do not fit `model` (None: they do, array for array)."""
    ours = [tuple(w.shape) for w in model.get_weights()]
    theirs = [tuple(w.shape) for w in weights]
    if ours != theirs:
        return f"the champion's weights have shapes {theirs}, the network built now {ours}"
    return None


def apply_weights(model: Any, weights: list[np.ndarray]) -> None:
    """Start `model` from `weights` (a freshly built network of the same shapes)."""
    problem = shape_problem(model, weights)
    if problem:
        raise ValueError(problem)
    model.set_weights(weights)
