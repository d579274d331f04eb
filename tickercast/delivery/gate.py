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

from tickercast.delivery.bundle import Bundle, BundleError, bundle_path, load_bundle
from tickercast.delivery.registry import RegistryError, decide, known, lock, read_registry
from tickercast.evaluation import distribution as dist
from tickercast.evaluation.baseline_registry import naive_targets
from tickercast.evaluation.jsonsafe import clean
from tickercast.evaluation.metrics import LOWER_IS_BETTER, metrics
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
        tests["vs_champion_worse"] = dm_test(
            actual, chal, forecasts["champion"], horizon, loss, alternative="greater"
        ).to_dict()
        crps = _crps_vs_champion(data_dir, table, bundles, forecasts, actual, horizon)
        if crps is not None:
            tests["crps_vs_champion"] = crps
    return {"window": window, "scores": clean(scores), "tests": tests}


def _crps_vs_champion(data_dir, table, bundles, forecasts, actual, horizon) -> dict | None:
    from tickercast.market import lake

    prices = lake.read_partition(data_dir, bundles["challenger"].metadata["ticker"])
    grids = {
        k: quantiles_at(b, prices, table, forecasts[k].reshape(len(table), -1))
        for k, b in bundles.items()
    }
    return crps_tests(actual.reshape(len(table), -1), grids, horizon)


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
            better = _significant(vs, level)
            reasons.append(
                f"{metric} {s['challenger']:.6g} vs champion v{before} {s['champion']:.6g}: "
                + ("significantly better" if better else "not significantly better")
                + f" (one-sided DM p {_p(vs)}, level {level:g})"
            )
            passed, why = _judge_both(result["tests"], better, level)
            if not passed and (flag := _live_flag(data_dir, name, before, result, level)):
                passed, why = True, f"{why}; but champion v{before} is flagged live ({flag})"
            ok &= passed
            reasons.append(why)
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
