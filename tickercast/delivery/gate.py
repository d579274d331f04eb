"""The champion gate: a challenger replaces the champion only when a test says it is better.

On the latest common window (the challenger's test windows on which the champion is out of
sample too: anchor day on or after the champion's last validation day) both models are
re-run from the lake with their own scalers, next to the naive last-close forecast. Then:

- with a champion, the challenger must be **significantly** better: a one-sided
  Diebold-Mariano test (HLN correction, overlapping h-step errors) of its loss against the
  champion's at `level` (default 5%); a lower metric by noise is not enough;
- a challenger significantly **worse than naive** (two-sided DM at `level`) is never
  promoted automatically, champion or not (it stays exported; the history says why);
- `require_beat_naive` further asks for a significant win over naive.

The DM loss follows the promotion metric: squared errors for rmse, absolute errors for
mae, mase, mape and smape (the scale-free metrics rank like absolute errors on one window).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tickercast.delivery.bundle import Bundle, BundleError, bundle_path, load_bundle
from tickercast.delivery.registry import RegistryError, decide, known, lock, read_registry
from tickercast.evaluation.baseline_registry import naive_targets
from tickercast.evaluation.jsonsafe import clean
from tickercast.evaluation.metrics import LOWER_IS_BETTER, metrics
from tickercast.significance import dm_test, format_p, verdict_of, verdict_text

DEFAULT_LEVEL = 0.05


def dm_loss(metric: str) -> str:
    return "squared" if metric == "rmse" else "absolute"


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


def window_forecasts(
    data_dir: str | Path, table: pd.DataFrame, bundles: dict[str, Bundle]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(actual, last close, forecasts per name incl. "naive") on the windows of `table`,
    each bundle re-run from the lake with its own scalers."""
    from tickercast.delivery.predict import predict_at
    from tickercast.market import lake

    first = next(iter(bundles.values()))
    prices = lake.read_partition(data_dir, first.metadata["ticker"])
    n_out = 1 + sum(1 for c in table.columns if c.startswith("actual_"))
    actual = _outputs(table, "actual", n_out)
    last = table["last_close"].to_numpy(dtype=np.float64)
    forecasts = {name: predict_at(b, prices, table["anchor_date"]) for name, b in bundles.items()}
    forecasts["naive"] = naive_targets(last, n_out)
    return actual, last, forecasts


def score(data_dir: str | Path, challenger: Bundle, champion: Bundle | None, metric: str) -> dict:
    """Metric of challenger, champion and naive on the same windows, from the lake, with
    the DM tests of the challenger against each (`tests`: JSON-ready results)."""
    if champion is not None:
        table = common_window(challenger, champion)
    else:
        table = pd.read_parquet(challenger.path / "predictions.parquet")
    window = {"windows": int(len(table))}
    if table.empty:
        return {"window": window, "scores": {}, "tests": {}}
    window["first_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[0]).date())
    window["last_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[-1]).date())
    bundles = {"challenger": challenger, **({"champion": champion} if champion else {})}
    actual, last, forecasts = window_forecasts(data_dir, table, bundles)
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
    return {"window": window, "scores": clean(scores), "tests": tests}


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
        if before == version:
            return decide(data_dir, name, registry, event, False, "already the champion", {})
        try:
            challenger = load_bundle(known(data_dir, name, version))
        except BundleError as exc:
            return decide(data_dir, name, registry, event, False, f"refused: {exc}", {})
        champion, damaged = None, None
        if before is not None:
            try:
                champion = load_bundle(bundle_path(data_dir, name, before))
            except (BundleError, FileNotFoundError) as exc:
                damaged = f"champion v{before} fails verification ({exc})"
        if champion is not None and (why := comparable(challenger, champion)):
            return decide(data_dir, name, registry, event, False, why, {})
        result = score(data_dir, challenger, champion, metric)
        event["window"], event["tests"] = result["window"], result["tests"]
        s = result["scores"]
        if not s:
            reason = (
                f"no common out-of-sample window: the champion v{before} validated up to "
                f"{champion.spec.val_end}, after every test window of v{version}"
            )
            return decide(data_dir, name, registry, event, False, reason, s)
        ok, reasons = True, [damaged] if damaged else []
        if champion is not None:
            vs = result["tests"]["vs_champion"]
            better = vs.get("p_value") is not None and vs["p_value"] < level
            ok &= better
            reasons.append(
                f"{metric} {s['challenger']:.6g} vs champion v{before} {s['champion']:.6g}: "
                + ("significantly better" if better else "not significantly better")
                + f" (one-sided DM p {_p(vs)}, level {level:g})"
            )
        elif not damaged:
            reasons.append("no champion yet")
        vs_naive = result["tests"]["vs_naive"]
        state = verdict_of(vs_naive.get("p_value"), vs_naive.get("mean_diff"), level)
        worse, beats = state == "worse", state == "better"
        if worse:
            ok = False
            reasons.append(
                f"significantly worse than naive ({s['naive']:.6g}, DM p {_p(vs_naive)}): "
                "never promoted automatically"
            )
        else:
            phrase = "beats naive" if beats else "indistinguishable from naive"
            reasons.append(f"{phrase} ({s['naive']:.6g}, DM p {_p(vs_naive)})")
        if require_beat_naive and not beats:
            ok = False
            reasons.append("beating naive is required")
        return decide(
            data_dir,
            name,
            registry,
            event,
            ok,
            f"{result['window']['windows']} windows: " + "; ".join(reasons),
            s,
        )


def compare_versions(data_dir: str | Path, name: str, level: float = DEFAULT_LEVEL) -> dict:
    """Every intact version's numbers on one common window, so they can be compared: the
    newest version's test windows on which every version is out of sample (anchor day on
    or after the latest validation end among them), each re-run from the lake."""
    from tickercast.delivery.bundle import list_versions

    bundles, skipped = {}, {}
    for version in list_versions(data_dir, name):
        try:
            bundles[version] = load_bundle(bundle_path(data_dir, name, version))
        except (BundleError, FileNotFoundError, OSError) as exc:
            skipped[version] = str(exc)
    if not bundles:
        return {"window": {"windows": 0}, "rows": [], "skipped": skipped}
    newest = bundles[max(bundles)]
    usable = {v: b for v, b in bundles.items() if comparable(b, newest) is None}
    skipped.update({v: comparable(b, newest) for v, b in bundles.items() if v not in usable})
    table = pd.read_parquet(newest.path / "predictions.parquet")
    start = max(pd.Timestamp(b.spec.val_end) for b in usable.values())
    table = table.loc[pd.to_datetime(table["anchor_date"]) >= start].reset_index(drop=True)
    window = {"windows": int(len(table))}
    if table.empty:
        return {"window": window, "rows": [], "skipped": skipped}
    window["first_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[0]).date())
    window["last_anchor"] = str(pd.Timestamp(table["anchor_date"].iloc[-1]).date())
    actual, last, forecasts = window_forecasts(
        data_dir, table, {f"v{v}": b for v, b in usable.items()}
    )
    scale = (newest.metadata.get("evaluation") or {}).get("mase_scale")
    naive = forecasts.pop("naive")
    naive_rmse = metrics(actual, naive, last_close=last, scale=scale)["rmse"]
    rows = []
    for label, pred in forecasts.items():
        m = metrics(actual, pred, last_close=last, scale=scale)
        test = dm_test(actual, pred, naive, int(newest.spec.horizon)).to_dict()
        rows.append(
            {
                "version": int(label[1:]),
                "rmse": m["rmse"],
                "mae": m["mae"],
                "naive_rmse": naive_rmse,
                "skill": 1.0 - m["rmse"] / naive_rmse if naive_rmse else None,
                "dm_p_vs_naive": test["p_value"],
                "verdict": verdict_text("naive", test, level),
            }
        )
    return {"window": window, "rows": clean(rows), "skipped": skipped}
