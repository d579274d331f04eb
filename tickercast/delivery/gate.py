"""The champion gate: a challenger replaces the champion only when a test says it is better.

On the latest common window (the challenger's test windows on which the champion is out of
sample too: anchor day on or after the champion's last validation day) both models are
scored next to the naive last-close forecast. The challenger's forecasts (point and
quantile grid) are the ones its evaluation recorded in its bundle's window table
(`layout.PREDICTIONS_FILE`, read through the manifest's sha256: a changed file is refused);
the champion is re-run from the lake with its own scalers, unless it was evaluated on the
very same lake file and recorded these windows too. A table written before every output
was recorded (vector targets) has the missing part re-run from the lake. Then:

- with a champion, the challenger must be **significantly** better: a one-sided
  Diebold-Mariano test (HLN correction, overlapping h-step errors) of its loss against the
  champion's at `level` (default 5%); a lower metric by noise is not enough;
- a challenger significantly **worse than naive** (two-sided DM at `level`) is never
  promoted automatically, champion or not (it stays exported; the history says why);
- `require_beat_naive` further asks for a significant win over naive.
- live evidence (issue 23): a champion whose published forecasts are flagged
  (`tickercast.delivery.ledger.live_flag`: live coverage significantly below nominal, or
  live skill significantly worse than naive) need not be beaten significantly; a challenger
  not significantly worse than it, nor than naive, replaces it.

The DM loss follows the promotion metric: squared errors for rmse, absolute errors for
mae, mase, mape and smape (the scale-free metrics rank like absolute errors on one window).

The distribution is guarded too (issue 21), when both versions' quantile grids can be
re-run (a recorded calibrated band, or a quantile head `predict` can run): on the same
windows, one-sided DM tests of the per-origin CRPS of challenger against champion. A
challenger whose CRPS is significantly worse is never promoted; one significantly better on
the point forecast or on CRPS, and not significantly worse on the other, is
(`distribution_rule`). Without both grids the point rule above decides alone, and the
event says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tickercast import layout
from tickercast.delivery.bundle import Bundle, BundleError, bundle_path, checked_file, load_bundle
from tickercast.delivery.registry import RegistryError, decide, known, lock, read_registry
from tickercast.evaluation import distribution as dist
from tickercast.evaluation import window_table
from tickercast.evaluation.baseline_registry import naive_targets
from tickercast.evaluation.jsonsafe import clean
from tickercast.evaluation.metrics import LOWER_IS_BETTER, metrics
from tickercast.evaluation.names import MODEL
from tickercast.significance import (
    dm_test,
    dm_test_differential,
    format_p,
    verdict_of,
    verdict_text,
)

DEFAULT_LEVEL = 0.05


def dm_loss(metric: str) -> str:
    return "squared" if metric == "rmse" else "absolute"


def predictions_table(bundle: Bundle) -> pd.DataFrame:
    """A version's recorded window table (`layout.PREDICTIONS_FILE`), read through its
    manifest's sha256: BundleError naming the file when it changed since export,
    FileNotFoundError when the version has none."""
    data, _ = checked_file(bundle.path, layout.PREDICTIONS_FILE)
    return window_table.from_bytes(data)


def since(table: pd.DataFrame, day: str | pd.Timestamp) -> pd.DataFrame:
    """The windows of `table` anchored on or after `day`."""
    anchors = pd.to_datetime(table[window_table.ANCHOR])
    return table.loc[anchors >= pd.Timestamp(day)].reset_index(drop=True)


def recorded_tables(
    reference: str, table: pd.DataFrame, bundles: dict[str, Bundle]
) -> dict[str, pd.DataFrame]:
    """The recorded tables that may stand for re-running a version on the windows of
    `bundles[reference]` (whose own table is `table`): its own, and those of versions
    evaluated on the very same lake file; a version evaluated on other closes is re-run
    (its recorded windows may differ), as is one whose table cannot be read."""
    lake_file = bundles[reference].metadata.get("data", {}).get("sha256")
    tables = {reference: table}
    for name, bundle in bundles.items():
        if name == reference or not lake_file:
            continue
        if bundle.metadata.get("data", {}).get("sha256") == lake_file:
            try:
                tables[name] = predictions_table(bundle)
            except (FileNotFoundError, BundleError):
                continue
    return tables


def recorded_at(tables: dict[str, pd.DataFrame], table: pd.DataFrame) -> dict[str, tuple]:
    """Per version, (point (n, outputs), quantile grid or None) it recorded at the windows
    of `table`; versions whose table lacks any of them (or the point forecast) are left out
    and re-run."""
    n_out, out = window_table.n_outputs(table), {}
    for name, own in tables.items():
        rows = window_table.rows_at(own, table)
        point = None if rows is None else window_table.outputs(rows, MODEL, n_out)
        if point is not None:
            out[name] = (point, window_table.grid(rows, n_out))
    return out


def window_forecasts(
    data_dir: str | Path,
    table: pd.DataFrame,
    bundles: dict[str, Bundle],
    recorded: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(actual, last close, forecasts per name incl. "naive") on the windows of `table`:
    a version's `recorded` forecasts where given, else re-run from the lake with its own
    scalers."""
    recorded = recorded or {}
    n_out = window_table.n_outputs(table)
    actual = window_table.outputs(table, window_table.ACTUAL, n_out)
    last = table[window_table.LAST_CLOSE].to_numpy(dtype=np.float64)
    rerun = [name for name in bundles if name not in recorded]
    prices = _lake_prices(data_dir, bundles) if rerun else None
    forecasts = {
        name: recorded[name]
        if name in recorded
        else predict_at(bundle, prices, table[window_table.ANCHOR])
        for name, bundle in bundles.items()
    }
    forecasts["naive"] = naive_targets(last, n_out)
    return actual, last, forecasts


def _lake_prices(data_dir: str | Path, bundles: dict[str, Bundle]) -> pd.DataFrame:
    from tickercast.market import lake

    return lake.read_partition(data_dir, next(iter(bundles.values())).metadata["ticker"])


def predict_at(bundle: Bundle, prices: pd.DataFrame, anchor_dates) -> np.ndarray:
    """A version re-run from the lake (`tickercast.delivery.predict.predict_at`)."""
    from tickercast.delivery import predict

    return predict.predict_at(bundle, prices, anchor_dates)


def quantiles_at(bundle: Bundle, prices: pd.DataFrame, table: pd.DataFrame, point: np.ndarray):
    """A version's quantile grid (n, outputs, len(QUANTILES)) in prices at the windows of
    `table`, around its point forecast `point`: its recorded calibrated band rebuilt from
    the lake's closes, or its quantile head's (`delivery.predict.predict_quantiles_at`, where
    a version has one); None when neither exists (versions evaluated before issue 21)."""
    record = ((bundle.metadata.get("evaluation") or {}).get("distribution") or {}).get("model")
    record = record or {}
    if record.get("form") == "network":
        from tickercast.delivery import predict

        head = getattr(predict, "predict_quantiles_at", None)
        return None if head is None else head(bundle, prices, table["anchor_date"])
    if not record.get("calibration"):
        return None
    dates = pd.to_datetime(prices["date"]).to_numpy(dtype="datetime64[D]")
    rows = np.searchsorted(dates, pd.to_datetime(table["anchor_date"]).to_numpy("datetime64[D]"))
    close = prices["close"].to_numpy(dtype=np.float64)
    weights = dist.target_weights(bundle.spec.target, bundle.spec.horizon, point.shape[1])
    return dist.rebuild_band(record["calibration"], close, rows, point, weights)


def crps_tests(actual: np.ndarray, grids: dict, horizon: int) -> dict | None:
    """Mean CRPS of challenger and champion and the one-sided DM tests of their per-origin
    difference (`better`: H1 challenger lower; `worse`: higher); None without both grids."""
    if grids.get("challenger") is None or grids.get("champion") is None:
        return None
    crps = {k: dist.per_origin_scores(actual, grids[k])["crps"] for k in ("challenger", "champion")}
    d = crps["challenger"] - crps["champion"]
    return {
        "crps": {k: float(np.mean(v)) for k, v in crps.items()},
        "better": dm_test_differential(d, horizon, "less", "crps").to_dict(),
        "worse": dm_test_differential(d, horizon, "greater", "crps").to_dict(),
    }


def _significant(test: dict | None, level: float) -> bool:
    return bool(test) and test.get("p_value") is not None and test["p_value"] < level


def distribution_rule(
    point_better: bool, point_worse: bool, crps_better: bool | None, crps_worse: bool | None
) -> tuple[bool, str]:
    """The promotion rule on the point forecast and the distribution (None: no CRPS test):
    never a challenger significantly worse by CRPS; a challenger significantly better on
    one and not significantly worse on the other; else the champion stays."""
    if crps_better is None:
        return point_better, "point forecast only (no comparable quantile grids)"
    if crps_worse:
        return False, "CRPS significantly worse than the champion's: never promoted"
    if point_better:
        return True, "point forecast significantly better, CRPS not significantly worse"
    if crps_better and not point_worse:
        return True, "CRPS significantly better, point forecast not significantly worse"
    if crps_better:
        return False, "CRPS significantly better but the point forecast significantly worse"
    return False, "neither the point forecast nor the CRPS significantly better"


def score(data_dir: str | Path, challenger: Bundle, champion: Bundle | None, metric: str) -> dict:
    """Metric of challenger, champion and naive on the same windows, with the DM tests of
    the challenger against each (`tests`: JSON-ready results). The challenger's forecasts
    are the ones its evaluation recorded; the champion is re-run from the lake unless it
    was evaluated on the same lake file."""
    own = predictions_table(challenger)
    table = own if champion is None else since(own, champion.spec.val_end)
    window = {"windows": int(len(table))}
    if table.empty:
        return {"window": window, "scores": {}, "tests": {}}
    window["first_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[0]).date())
    window["last_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[-1]).date())
    bundles = {"challenger": challenger, **({"champion": champion} if champion else {})}
    recorded = recorded_at(recorded_tables("challenger", own, bundles), table)
    points = {name: point for name, (point, _) in recorded.items()}
    actual, last, forecasts = window_forecasts(data_dir, table, bundles, points)
    scale = (challenger.metadata.get("evaluation") or {}).get("mase_scale")
    scores = {
        name: metrics(actual, pred, last_close=last, scale=scale)[metric]
        for name, pred in forecasts.items()
    }
    horizon, loss = int(challenger.spec.horizon), dm_loss(metric)
    chal = forecasts["challenger"]
    tests = {
        "vs_naive": dm_test(actual, chal, forecasts["naive"], horizon, loss).to_dict(),
    }
    if champion is not None:
        tests["vs_champion"] = dm_test(
            actual, chal, forecasts["champion"], horizon, loss, alternative="less"
        ).to_dict()
        tests["vs_champion_worse"] = dm_test(
            actual, chal, forecasts["champion"], horizon, loss, alternative="greater"
        ).to_dict()
        grids = _grids(data_dir, table, bundles, forecasts, recorded)
        crps = crps_tests(actual.reshape(len(table), -1), grids, horizon)
        if crps is not None:
            tests["crps_vs_champion"] = crps
    return {"window": window, "scores": clean(scores), "tests": tests}


def _grids(data_dir, table, bundles, forecasts, recorded) -> dict:
    """Each version's quantile grid at the windows of `table`: recorded, else rebuilt."""
    grids = {name: grid for name, (_, grid) in recorded.items() if grid is not None}
    rebuild = [name for name in bundles if name not in grids]
    prices = _lake_prices(data_dir, bundles) if rebuild else None
    for name in rebuild:
        point = forecasts[name].reshape(len(table), -1)
        grids[name] = quantiles_at(bundles[name], prices, table, point)
    return grids


def comparable(a: Bundle, b: Bundle) -> str | None:
    """Why two versions' forecasts cannot be compared, or None. Targets compare by the
    price they forecast: `mean_close` and `mean_close_log_return` both forecast the mean
    close of the next `horizon` days, so a recommended model can challenge a tutorial one."""
    if a.spec.horizon != b.spec.horizon:
        return (
            f"horizon differs ({a.spec.horizon!r} vs champion {b.spec.horizon!r}): "
            "the metrics are not comparable"
        )
    if a.spec.target.removesuffix("_log_return") != b.spec.target.removesuffix("_log_return"):
        return (
            f"target differs ({a.spec.target!r} vs champion {b.spec.target!r}): the metrics "
            "are not comparable"
        )
    return None


def _p(test: dict) -> str:
    return format_p(test.get("p_value"))


def challenge(
    data_dir: str | Path,
    name: str,
    version: int,
    metric: str = "rmse",
    require_beat_naive: bool = False,
    level: float = DEFAULT_LEVEL,
) -> dict:
    """Promote `version` if it is significantly better than the champion (and not
    significantly worse than naive); record the decision either way.

    Returns the recorded event: action "promote" or "reject", scores, tests and the reason.
    """
    if metric not in LOWER_IS_BETTER:
        raise RegistryError(f"promotion metric {metric!r}; valid: {list(LOWER_IS_BETTER)}")
    if not 0 < level < 1:
        raise RegistryError(f"promotion level must be in (0, 1), got {level}")
    version = int(version)
    with lock(data_dir, name):
        registry = read_registry(data_dir, name)
        before = registry["champion"]
        event = {
            "version": version,
            "champion_before": before,
            "metric": metric,
            "level": level,
            "require_beat_naive": require_beat_naive,
        }

        def reject(reason: str, scores: dict | None = None) -> dict:
            return decide(data_dir, name, registry, event, False, reason, scores or {})

        if before == version:
            return reject("already the champion")
        try:
            challenger = load_bundle(known(data_dir, name, version))
        except BundleError as exc:
            return reject(f"refused: {exc}")
        champion, damaged = _champion(data_dir, name, before)
        if champion is not None and (why := comparable(challenger, champion)):
            return reject(why)
        try:
            result = score(data_dir, challenger, champion, metric)
        except (BundleError, FileNotFoundError) as exc:  # its recorded forecasts are not
            return reject(f"refused: {exc}")  # the exported ones (or are gone)
        event["window"], event["tests"] = result["window"], result["tests"]
        if not result["scores"]:
            return reject(
                f"no common out-of-sample window: the champion v{before} validated up to "
                f"{champion.spec.val_end}, after every test window of v{version}"
            )
        gate = (metric, level, require_beat_naive)
        ok, reasons = _judge(data_dir, name, before, result, gate, damaged)
        reason = f"{result['window']['windows']} windows: " + "; ".join(reasons)
        return decide(data_dir, name, registry, event, ok, reason, result["scores"])


def _champion(data_dir, name: str, before: int | None) -> tuple[Bundle | None, str | None]:
    """(the champion's bundle, None), or (None, why it fails verification); (None, None)
    without a champion."""
    if before is None:
        return None, None
    try:
        return load_bundle(bundle_path(data_dir, name, before)), None
    except (BundleError, FileNotFoundError) as exc:
        return None, f"champion v{before} fails verification ({exc})"


def _judge(data_dir, name, before, result, gate: tuple, damaged) -> tuple[bool, list[str]]:
    """The decision and its reasons: against the champion (`_vs_champion`), then naive.
    `gate`: (metric, level, require_beat_naive)."""
    metric, level, require_beat_naive = gate
    ok, reasons = True, [damaged] if damaged else []
    if before is not None and not damaged:
        passed, why = _vs_champion(data_dir, name, before, result, metric, level)
        ok &= passed
        reasons += why
    elif not damaged:
        reasons.append("no champion yet")
    s, vs_naive = result["scores"], result["tests"]["vs_naive"]
    state = verdict_of(vs_naive.get("p_value"), vs_naive.get("mean_diff"), level)
    if state == "worse":
        ok = False
        reasons.append(
            f"significantly worse than naive ({s['naive']:.6g}, DM p {_p(vs_naive)}): "
            "never promoted automatically"
        )
    else:
        phrase = "beats naive" if state == "better" else "indistinguishable from naive"
        reasons.append(f"{phrase} ({s['naive']:.6g}, DM p {_p(vs_naive)})")
    if require_beat_naive and state != "better":
        ok = False
        reasons.append("beating naive is required")
    return ok, reasons


def _vs_champion(data_dir, name, before, result, metric, level) -> tuple[bool, list[str]]:
    """The point test against the champion, then the distribution rule (and live flag)."""
    s, vs = result["scores"], result["tests"]["vs_champion"]
    better = _significant(vs, level)
    reasons = [
        f"{metric} {s['challenger']:.6g} vs champion v{before} {s['champion']:.6g}: "
        + ("significantly better" if better else "not significantly better")
        + f" (one-sided DM p {_p(vs)}, level {level:g})"
    ]
    passed, why = _judge_both(result["tests"], better, level)
    if not passed and (flag := _live_flag(data_dir, name, before, result, level)):
        passed, why = True, f"{why}; but champion v{before} is flagged live ({flag})"
    return passed, [*reasons, why]


def _live_flag(data_dir, name: str, champion: int, result: dict, level: float) -> str | None:
    """The champion's live flag when live evidence lets this challenger replace it: it is
    not significantly worse than the champion (the naive rule is applied after)."""
    if _significant(result["tests"].get("vs_champion_worse"), level):
        return None
    from tickercast.delivery.ledger import live_flag

    return live_flag(data_dir, name, champion)


def _judge_both(tests: dict, point_better: bool, level: float) -> tuple[bool, str]:
    """`distribution_rule` on the gate's tests, with the CRPS numbers in the reason."""
    crps = tests.get("crps_vs_champion")
    point_worse = _significant(tests.get("vs_champion_worse"), level)
    if crps is None:
        return distribution_rule(point_better, point_worse, None, None)
    better, worse = _significant(crps["better"], level), _significant(crps["worse"], level)
    ok, why = distribution_rule(point_better, point_worse, better, worse)
    c = crps["crps"]
    p = crps["worse" if c["challenger"] > c["champion"] else "better"]
    return ok, (
        f"CRPS {c['challenger']:.6g} vs champion {c['champion']:.6g} (one-sided DM p "
        f"{_p(p)}): {why}"
    )


def compare_versions(data_dir: str | Path, name: str, level: float = DEFAULT_LEVEL) -> dict:
    """Every intact version's numbers on one common window, so they can be compared: the
    newest version's test windows on which every version is out of sample (anchor day on
    or after the latest validation end among them). Each version's forecasts are the ones
    it recorded where it recorded that window on the same lake file, else re-run."""
    bundles, skipped = _intact_versions(data_dir, name)
    if not bundles:
        return {"window": {"windows": 0}, "rows": [], "skipped": skipped}
    newest = bundles[max(bundles)]
    usable = {v: b for v, b in bundles.items() if comparable(b, newest) is None}
    skipped.update({v: comparable(b, newest) for v, b in bundles.items() if v not in usable})
    own = predictions_table(newest)
    table = since(own, max(pd.Timestamp(b.spec.val_end) for b in usable.values()))
    window = {"windows": int(len(table))}
    if table.empty:
        return {"window": window, "rows": [], "skipped": skipped}
    window["first_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[0]).date())
    window["last_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[-1]).date())
    labelled = {f"v{v}": b for v, b in usable.items()}
    recorded = recorded_at(recorded_tables(f"v{newest.version}", own, labelled), table)
    points = {label: point for label, (point, _) in recorded.items()}
    actual, last, forecasts = window_forecasts(data_dir, table, labelled, points)
    scale = (newest.metadata.get("evaluation") or {}).get("mase_scale")
    naive = forecasts.pop("naive")
    rows = [
        _version_row(label, actual, pred, naive, last, scale, newest.spec.horizon, level)
        for label, pred in forecasts.items()
    ]
    return {"window": window, "rows": clean(rows), "skipped": skipped}


def _intact_versions(data_dir, name: str) -> tuple[dict[int, Bundle], dict[int, str]]:
    """Every version that loads, and why each other one does not."""
    from tickercast.delivery.bundle import list_versions

    bundles, skipped = {}, {}
    for version in list_versions(data_dir, name):
        try:
            bundles[version] = load_bundle(bundle_path(data_dir, name, version))
        except (BundleError, FileNotFoundError, OSError) as exc:
            skipped[version] = str(exc)
    return bundles, skipped


def _version_row(label, actual, pred, naive, last, scale, horizon, level) -> dict:
    """One version's row of `compare_versions`: its errors and its test against naive."""
    m = metrics(actual, pred, last_close=last, scale=scale)
    naive_rmse = metrics(actual, naive, last_close=last, scale=scale)["rmse"]
    test = dm_test(actual, pred, naive, int(horizon)).to_dict()
    return {
        "version": int(label[1:]),
        "rmse": m["rmse"],
        "mae": m["mae"],
        "naive_rmse": naive_rmse,
        "skill": 1.0 - m["rmse"] / naive_rmse if naive_rmse else None,
        "dm_p_vs_naive": test["p_value"],
        "verdict": verdict_text("naive", test, level),
    }
