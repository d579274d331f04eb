"""The forecast ledger: every forecast a champion issued, kept, and scored once the days it
was about have arrived (issue 23).

Layout: `<data_dir>/lake/ledger/<TICKER>/<origin>_v<version>.parquet`, one immutable file
per (ticker, origin, version) holding that forecast's rows (one per output). The file name
is the key, so:

- issuing the same forecast again adds nothing (the file exists: a no-op);
- a crash mid-write loses nothing already written: a file is written under a hidden
  temporary name and *linked* to its final name, which either appears whole or not at all
  (pyarrow, pandas and DuckDB skip names starting with '.');
- two writers (the service and a nightly run, separate processes) never corrupt or
  duplicate it: `os.link` fails for the second, which then finds the same forecast there.

Scoring (`score`) reads the ledger against the lake's closes: the realized target, the
error, the in-band hits at 80/95%, CRPS from the quantile grid when the forecast has one,
and naive's forecast (the last close at issue). Splits: the lake's closes are
split-adjusted and re-adjusted when a split happens, so a split between issue and truth
rescales the stored history; every realized value is brought back to the issue-time basis
by the ratio of the close the forecast was made from (`last_close`) to the lake's close on
that day today. A split is therefore never a forecast error. `live_record` turns scored
rows into live skill vs naive (Diebold-Mariano, HLN) and live coverage (Kupiec), and flags
a champion whose coverage is significantly below nominal or whose skill is significantly
worse than naive.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tickercast import layout
from tickercast.hashing import file_sha256
from tickercast.significance import LEVEL, dm_test, kupiec_test
from tickercast.tickers import validate_ticker

BANDS = {"80": ("lo_80", "hi_80"), "95": ("lo_95", "hi_95")}
KEY = ("ticker", "as_of", "version")


def ticker_dir(data_dir: str | Path, ticker: str) -> Path:
    return layout.lake_ledger(data_dir) / validate_ticker(ticker)


def entry_path(data_dir: str | Path, ticker: str, origin: str, version: int) -> Path:
    return ticker_dir(data_dir, ticker) / f"{origin}_v{int(version)}.parquet"


def scored_path(data_dir: str | Path, ticker: str) -> Path:
    """Where the ingest flow keeps a ticker's scored rows (recomputable from the ledger;
    named with '_' so a reader of the ledger folder skips it)."""
    return layout.lake_ledger(data_dir) / f"_scored_{validate_ticker(ticker)}.parquet"


def _write_once(path: Path, frame: pd.DataFrame) -> bool:
    """Write `frame` at `path` unless it exists; True when this call wrote it."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic, and refuses to replace: the first writer wins
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def append(
    data_dir: str | Path,
    rows: Iterable[Mapping],
    *,
    bundle_sha: Mapping[str, str] | None = None,
    data_sha: Mapping[str, str] | None = None,
    issued_at: dt.datetime | None = None,
) -> int:
    """Keep each forecast (rows grouped by ticker, origin `as_of` and version) once;
    returns how many forecasts were new. `bundle_sha`/`data_sha` (per ticker): the
    champion's manifest hash and the lake partition's hash the forecast was made from
    (looked up when not given)."""
    frame = pd.DataFrame([dict(r) for r in rows])
    if frame.empty:
        return 0
    issued = pd.Timestamp(issued_at or dt.datetime.now(dt.UTC))
    written = 0
    for (ticker, origin, version), group in frame.groupby(list(KEY), sort=False):
        path = entry_path(data_dir, ticker, origin, version)
        if path.exists():
            continue
        entry = group.copy()
        entry["bundle_sha"] = (bundle_sha or {}).get(ticker) or _bundle_sha(
            data_dir, ticker, int(version)
        )
        entry["data_sha"] = (data_sha or {}).get(ticker) or _data_sha(data_dir, ticker)
        entry["issued_at"] = issued
        written += _write_once(path, entry.reset_index(drop=True))
    return written


def _bundle_sha(data_dir: str | Path, ticker: str, version: int) -> str | None:
    from tickercast.delivery.bundle import MANIFEST, bundle_path

    path = bundle_path(data_dir, ticker, version) / MANIFEST
    return file_sha256(path) if path.is_file() else None


def _data_sha(data_dir: str | Path, ticker: str) -> str | None:
    from tickercast.market import lake

    path = lake.partition_path(data_dir, ticker)
    return file_sha256(path) if path.is_file() else None


def read(data_dir: str | Path, ticker: str) -> pd.DataFrame:
    """Every forecast kept for `ticker` (empty when none), oldest origin first."""
    folder = ticker_dir(data_dir, ticker)
    parts = sorted(p for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if not parts:
        return pd.DataFrame()
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.sort_values(["as_of", "version", "output"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- scoring


def _target_weights(target: str, horizon: int, output: int) -> np.ndarray:
    """Weights of the `horizon` closes after the origin that make one output's target."""
    w = np.zeros(horizon)
    if target.startswith("mean_close"):
        w[:] = 1.0 / horizon
    elif target.startswith("closes"):
        w[output - 1] = 1.0
    else:  # close at t+horizon
        w[-1] = 1.0
    return w


def score(data_dir: str | Path, ticker: str, prices: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ledger's rows whose horizon has passed, scored against the lake (module doc):
    realized, error, naive_error, hit_80, hit_95, crps (when quantiles were kept)."""
    from tickercast.market import lake

    kept = read(data_dir, ticker)
    if kept.empty:
        return kept
    prices = lake.read_partition(data_dir, ticker) if prices is None else prices
    days = pd.to_datetime(prices["date"]).dt.strftime("%Y-%m-%d").to_numpy()
    close = prices["close"].to_numpy(dtype=np.float64)
    out = []
    for row in kept.to_dict("records"):
        at = np.searchsorted(days, str(row["as_of"]))
        h = int(row["horizon"])
        if at >= len(days) or days[at] != str(row["as_of"]) or at + h >= len(days):
            continue  # the origin is not stored, or its days have not all arrived
        basis = float(row["last_close"]) / close[at]  # the issue-time price basis
        future = close[at + 1 : at + 1 + h] * basis
        realized = float(_target_weights(str(row["target"]), h, int(row["output"])) @ future)
        scored = {**row, "realized": realized, "truth_day": days[at + h]}
        scored["error"] = float(row["forecast"]) - realized
        scored["naive_error"] = float(row["last_close"]) - realized
        for level, (lo, hi) in BANDS.items():
            if row.get(lo) is not None and row.get(hi) is not None and np.isfinite(row[lo]):
                scored[f"hit_{level}"] = bool(row[lo] <= realized <= row[hi])
        scored["crps"] = _crps(row, realized)
        out.append(scored)
    return pd.DataFrame(out)


def _crps(row: Mapping, realized: float) -> float | None:
    quantiles = row.get("quantiles")
    if quantiles is None or (isinstance(quantiles, float) and np.isnan(quantiles)):
        return None
    from tickercast.evaluation.distribution import crps_grid

    q = np.asarray(quantiles, dtype=np.float64).reshape(1, 1, -1)
    return float(crps_grid(np.asarray([[realized]]), q).ravel()[0])


def live_record(scored: pd.DataFrame, level: float = LEVEL) -> dict:
    """Live skill vs naive (DM, HLN, squared errors, first output) and live coverage
    (Kupiec) of scored rows; `flag` names what is significantly wrong, or is None."""
    if scored.empty:
        return {"n": 0, "flag": None}
    first = scored[scored["output"] == 1]
    n, horizon = len(first), int(first["horizon"].iloc[0])
    mae = float(first["error"].abs().mean())
    naive_mae = float(first["naive_error"].abs().mean())
    record: dict = {
        "n": n,
        "mae": mae,
        "naive_mae": naive_mae,
        "skill": 1 - mae / naive_mae if naive_mae > 0 else None,
        "first_origin": str(first["as_of"].iloc[0]),
        "last_origin": str(first["as_of"].iloc[-1]),
    }
    flags = []
    if n >= 3:
        zero = np.zeros(n)
        test = dm_test(zero, first["error"].to_numpy(), first["naive_error"].to_numpy(), horizon)
        record["dm_p_worse"] = _p(
            dm_test(
                zero,
                first["error"].to_numpy(),
                first["naive_error"].to_numpy(),
                horizon,
                alternative="greater",
            ).p_value
        )
        record["dm_p"] = _p(test.p_value)
        if record["dm_p_worse"] is not None and record["dm_p_worse"] < level:
            flags.append(
                f"live skill significantly worse than naive (DM p {record['dm_p_worse']:.2g})"
            )
    for band in BANDS:
        hits = first.get(f"hit_{band}")
        if hits is None or hits.isna().all():
            continue
        k = kupiec_test(hits.dropna().astype(bool).to_numpy(), int(band) / 100)
        record[f"coverage_{band}"] = k.coverage
        record[f"kupiec_p_below_{band}"] = _p(k.p_below)
        if k.p_below is not None and k.p_below < level:
            flags.append(
                f"live {band}% coverage {k.coverage:.0%} significantly below nominal "
                f"(Kupiec p {k.p_below:.2g}, n {k.n})"
            )
    if "crps" in first and first["crps"].notna().any():
        record["crps"] = float(first["crps"].dropna().mean())
    record["flag"] = "; ".join(flags) or None
    return record


def _p(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


# --------------------------------------------------------------------------- per champion


def promised(metadata: Mapping) -> dict:
    """What a version's test split promised, in the live record's terms: skill vs naive
    by MAE, the verdict against naive, and each band's test coverage."""
    metrics = metadata.get("metrics") or {}
    model, naive = metrics.get("model") or {}, metrics.get("naive") or {}
    out: dict = {"skill": None, "naive_verdict": naive.get("dm_verdict")}
    if model.get("mae") is not None and naive.get("mae"):
        out["skill"] = 1 - float(model["mae"]) / float(naive["mae"])
    for band, cal in (metadata.get("intervals") or {}).items():
        out[f"coverage_{band}"] = cal.get("coverage_test")
    summary = (metadata.get("walk_forward") or {}).get("summary") or {}
    if isinstance(summary, Mapping) and summary.get("skill") is not None:
        out["walk_forward_skill"] = summary.get("skill")
    return out


def version_record(
    data_dir: str | Path, ticker: str, version: int, scored: pd.DataFrame | None = None
) -> dict:
    """The live record of one version's published forecasts (`live_record` on its scored
    rows only), with what its test split promised beside it (`promised`)."""
    import json

    from tickercast.delivery.bundle import bundle_path

    scored = score(data_dir, ticker) if scored is None else scored
    mine = scored[scored["version"] == int(version)] if not scored.empty else scored
    record = {"version": int(version), **live_record(mine)}
    meta = bundle_path(data_dir, ticker, int(version)) / "metadata.json"
    record["promised"] = promised(json.loads(meta.read_text())) if meta.is_file() else {}
    return record


def live_flag(data_dir: str | Path, ticker: str, version: int | None) -> str | None:
    """Why `version`'s live record is flagged, or None (no version, no ledger, not
    flagged, or the record cannot be computed: live evidence only ever adds a reason).

    The gate's rule (tickercast.delivery.gate.challenge): a champion flagged live need not
    be beaten significantly; a challenger not significantly worse than naive, nor than
    the champion, replaces it."""
    if version is None:
        return None
    try:
        return version_record(data_dir, ticker, version)["flag"]
    except (OSError, ValueError, KeyError):
        return None


def describe(record: Mapping) -> str:
    """One line of a live record for reports: figures, the promise, the flag."""
    if not record.get("n"):
        return "no published forecast scored yet"
    promise = record.get("promised") or {}

    def pct(value) -> str:
        return "–" if value is None else f"{value:.1%}"

    parts = [f"{record['n']} published forecast(s) scored"]
    parts.append(
        f"skill vs naive {pct(record.get('skill'))} (test split {pct(promise.get('skill'))})"
    )
    for band in BANDS:
        if record.get(f"coverage_{band}") is not None:
            parts.append(
                f"{band}% coverage {pct(record[f'coverage_{band}'])} "
                f"(test split {pct(promise.get(f'coverage_{band}'))})"
            )
    parts.append(f"FLAGGED: {record['flag']}" if record.get("flag") else "not flagged")
    return "; ".join(parts)


def champion_record(data_dir: str | Path, ticker: str, champion: int | None) -> dict:
    """The champion's `version_record`; without a champion, the record of every version
    published (`version` None). Empty (n 0) when nothing is due yet."""
    scored = score(data_dir, ticker)
    if champion is None:
        return {"version": None, **live_record(scored), "promised": {}}
    return version_record(data_dir, ticker, champion, scored)
