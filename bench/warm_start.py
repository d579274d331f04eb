"""The second night warm vs cold (issue 22), side by side in one run.

Per ticker (the five samples, plus `--synthetic N` 10-year Yahoo-like tickers): night 1
fits the nightly deployment's model from scratch (its config: deployments/nightly.json
over RetrainConfig; the real `train_model`: early stopping, ReduceLROnPlateau, per-epoch
checkpoints, shrinkage toward the last close). Night 2 has one new trading day; it is fit
twice from the same preprocessed rows (scalers refit on its own training rows):
- cold: from scratch, as every night did before warm starts;
- warm: `warm_start="auto"`: the plan (tickercast.modeling.warm) over night 1's champion,
  the fit started from night 1's fitted (pre-shrink) weights, capped at warm_start_epochs.
Measured: each fit's seconds (the whole train_model: fit, shrinkage, saving) and epochs;
forecast quality on night 2's test windows: RMSE of each in the scaled target (an affine
map of the log return, so ratios are the log return's) and a two-sided Diebold-Mariano
test (HLN, squared error, horizon lags) of warm against cold per ticker: how many warm
fits are significantly worse (p < 0.05 with a higher loss). With warm_start_drift a warm
fit whose start still fits runs no epoch; the champion's drift (its loss on the validation
windows of nights 1, 5, 10 and 21 trading days later over its loss when made) says how
often that bound lets a night fine-tune, and on the nights 10 and 21 days later the
champion's test forecasts are tested (DM) against a cold refit's: what a champion kept
without fine-tunes costs.

Run: nice python bench/warm_start.py [--synthetic 2] [--warm-start-epochs N] [--no-record]
(writes bench/WARM_START.md and the RESULTS.md row `warm_start`; a `--warm-start-epochs`
candidate only prints).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SAMPLES = ("AAPL", "AMZN", "GOOG", "MSFT", "NVDA")
LEVEL = 0.05
# trading days after night 1 at which the champion's drift is scored (21: about the
# 30 calendar days of full_refit_days, when a full refit replaces it anyway)
DRIFT_DAYS = (1, 5, 10, 21)
# nights on which the champion, kept without a fine-tune since night 1, is compared with
# a cold refit on that night's test windows (what skipping fine-tunes costs in forecasts)
STALE_DAYS = (10, 21)
REPORT = ROOT / "bench" / "WARM_START.md"


def nightly(warm_epochs: int | None = None):
    """The nightly deployment's RetrainConfig (warm_start is on there), with
    `warm_start_epochs` replaced when given."""
    from tickercast.config import RetrainConfig
    from tickercast.deployments.nightly import nightly_settings

    settings = {k: v for k, v in nightly_settings().items() if k in RetrainConfig.leaves()}
    if warm_epochs is not None:
        settings["warm_start_epochs"] = warm_epochs
    return RetrainConfig(**settings)


def fit(data: dict, cfg, out: Path, plan=None, start=None, champion: Path | None = None) -> dict:
    """train_model on one night's rows; seconds, epochs and the test windows' forecasts.
    A warm fit that kept the champion (`champion`: its folder) writes no model: the
    forecasts are then the champion's shipped network's on these windows (scaled with
    tonight's scalers, which moved by one training day)."""
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model

    spec = data["spec"]
    started = time.perf_counter()
    summary = train_model(
        data["arrays"],
        data["anchors"],
        spec.lookback,
        cfg.fit_spec(),
        out,
        naive=naive_output(spec),
        plan=plan,
        start_weights=start,
    )
    seconds = time.perf_counter() - started
    kept = summary.get("kept_champion") is not None
    pred = shipped_forecast((champion if kept else out) / "model.keras", data)
    return {
        "seconds": seconds,
        "epochs": summary["epochs_run"],
        "alpha": (
            json.loads((champion / "history.json").read_text())["shrinkage"]["alpha"]
            if kept
            else summary["shrinkage"]["alpha"]
        ),
        "val_loss": summary["best_val_loss"],
        "kept_start": kept,
        # the curve a warm fit competed on (its start's loss first): what a shorter
        # warm_start_patience would have stopped
        "val_curve": [summary.get("start_val_loss"), *summary["history"].get("val_loss", [])],
        "pred": pred,
        "warm_start": summary["warm_start"],
    }


def prepared(ticker: str, cfg, extra_days: int = 0) -> dict:
    """A ticker's scaled rows, window anchors and spec, as the flow's steps make them."""
    from bench.universe_levers import lake_frame
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.windows import anchors_for

    spec, arrays = preprocess(lake_frame(ticker, extra_days), cfg.preprocessing, who=ticker)
    return {
        "spec": spec,
        "arrays": arrays,
        "x": arrays["x"],
        "y": arrays["y"],
        "anchors": anchors_for(spec),
    }


def drift(ticker: str, cfg, champion, made: float, tmp: Path) -> dict:
    """The champion's loss on the validation windows of a night `k` trading days later
    (DRIFT_DAYS) over its loss when made: what warm_start_drift bounds. Scored by the real
    train_model with a bound it cannot exceed (no epoch runs). On STALE_DAYS nights, the
    champion's test forecasts (its shipped network, kept since night 1) against a cold
    refit's on that night: a DM test per ticker."""
    from math import inf

    from tickercast.modeling.train import train_model
    from tickercast.modeling.warm import Plan, load_weights
    from tickercast.significance import dm_test

    ratios, stale = {}, {}
    for k in DRIFT_DAYS:
        later = prepared(ticker, cfg, extra_days=k)
        summary = train_model(
            later["arrays"],
            later["anchors"],
            later["spec"].lookback,
            cfg.fit_spec(),
            tmp / ticker / f"drift{k}",
            # warm whatever the age (k=21 may pass full_refit_days), and no epoch
            plan=Plan("warm", "drift probe", champion.version, 1, patience=1, keep_at=inf),
            start_weights=load_weights(champion.weights),
        )
        ratios[k] = summary["start_val_loss"] / made
        if k in STALE_DAYS:
            cold = fit(later, cfg, tmp / ticker / f"cold{k}")
            kept = shipped_forecast(champion.weights.parent / "model.keras", later)
            actual = later["y"][later["anchors"]["test"]]
            test = dm_test(actual, kept, cold["pred"], later["spec"].horizon)
            stale[k] = {
                "dm_p": float(test.p_value),
                "worse": bool(test.p_value < LEVEL and test.mean_diff > 0),
                "better": bool(test.p_value < LEVEL and test.mean_diff < 0),
                "drifted": bool(ratios[k] > 1 + (cfg.warm.warm_start_drift or 0)),
            }
    return {"ratios": ratios, "stale": stale}


def shipped_forecast(model_path: Path, data: dict) -> np.ndarray:
    """A shipped network's forecasts of `data`'s test windows."""
    import keras

    from tickercast.modeling.windows import gather_windows

    model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    windows = gather_windows(data["x"], data["anchors"]["test"], data["spec"].lookback)
    return model.predict(windows, verbose=0)


def one_ticker(ticker: str, cfg, tmp: Path) -> dict:
    from tickercast.modeling.warm import Champion, load_weights, plan
    from tickercast.significance import dm_test

    first, second = prepared(ticker, cfg), prepared(ticker, cfg, extra_days=1)
    night1 = fit(
        first, cfg, tmp / ticker / "night1", plan(cfg.warm, None, cfg.fit_spec(), first["spec"])
    )
    weights = tmp / ticker / "night1" / "fitted-weights.npz"
    champion = Champion(
        version=1,
        config=cfg.recorded(),
        last_day=first["spec"].last_day,
        spec=first["spec"].to_json(),
        weights=weights,
        weights_sha256=None,
        warm_start=night1["warm_start"],
        val_loss=night1["val_loss"],  # as its metadata records it (warm_start_drift's base)
    )
    chosen = plan(cfg.warm, champion, cfg.fit_spec(), second["spec"])
    cold = fit(second, cfg, tmp / ticker / "cold")
    warm = fit(second, cfg, tmp / ticker / "warm", chosen, load_weights(weights), weights.parent)
    actual = second["y"][second["anchors"]["test"]]
    test = dm_test(actual, warm["pred"], cold["pred"], second["spec"].horizon)
    rmse = {
        k: float(np.sqrt(np.mean((actual - r["pred"]) ** 2)))
        for k, r in (("warm", warm), ("cold", cold))
    }
    row = {
        "night1": {k: night1[k] for k in ("seconds", "epochs", "alpha", "val_loss")},
        "cold": {k: cold[k] for k in ("seconds", "epochs", "alpha", "val_loss")},
        "warm": {
            k: warm[k]
            for k in ("seconds", "epochs", "alpha", "val_loss", "kept_start", "val_curve")
        },
        "plan": chosen.record(),
        # the champion's loss on later nights' validation windows over its loss when made
        # (day 1: this second night's, the start of the warm fit's curve)
        "drift_days": drift(ticker, cfg, champion, night1["val_loss"], tmp),
        "rmse": rmse,
        "dm_p": float(test.p_value),
        "dm_mean_diff": float(test.mean_diff),
        "test_windows": int(len(actual)),
        "warm_worse": bool(test.p_value < LEVEL and test.mean_diff > 0),
        "warm_better": bool(test.p_value < LEVEL and test.mean_diff < 0),
    }
    print(ticker, json.dumps(row), flush=True)
    return row


def late_improvement(curve: list[float]) -> bool:
    """Whether a warm fit's first epoch below its start's loss (curve[0]) came after an
    epoch that was not below it."""
    start, epochs = curve[0], curve[1:]
    first = next((i for i, v in enumerate(epochs) if v < start), None)
    return first is not None and first > 0


def report(rows: dict, cfg, started: str, elapsed: float) -> tuple[str, str]:
    cold_s = sum(r["cold"]["seconds"] for r in rows.values())
    warm_s = sum(r["warm"]["seconds"] for r in rows.values())
    worse = sum(r["warm_worse"] for r in rows.values())
    better = sum(r["warm_better"] for r in rows.values())
    naive = sum(1 for r in rows.values() if r["cold"]["alpha"] == 0 and r["warm"]["alpha"] == 0)
    # the network's own validation loss (before shrinkage): the signal that moves when the
    # forecasts, shrunk to the last close both ways, cannot
    val = float(
        np.exp(
            np.mean([np.log(r["warm"]["val_loss"] / r["cold"]["val_loss"]) for r in rows.values()])
        )
    )
    lines = [
        "# Warm start: the second night, warm vs cold",
        "",
        f"Measured {started} by `bench/warm_start.py` ({elapsed / 60:.1f} min, one process, "
        "`nice`; the machine is shared, so read the ratios). The nightly deployment's "
        f"config (model {cfg.network.model} {list(cfg.network.units)}, epochs "
        f"{cfg.training.epochs}, patience {cfg.training.patience}, warm_start_epochs "
        f"{cfg.warm.warm_start_epochs}, warm_start_patience {cfg.warm.warm_start_patience}). "
        "Night 2 = night 1 + one new trading day; cold = "
        "from scratch, warm = from night 1's fitted (pre-shrink) weights. RMSE in the scaled "
        "target on night 2's test windows; DM = two-sided Diebold-Mariano (HLN, squared "
        "error) of warm against cold.",
        "",
        "| ticker | night 1 s (epochs) | cold s (epochs) | warm s (epochs) | time warm/cold "
        "| val loss warm/cold | RMSE cold | RMSE warm | DM p | verdict | alpha cold / warm |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t, r in rows.items():
        verdict = "warm worse" if r["warm_worse"] else "warm better" if r["warm_better"] else "same"
        lines.append(
            f"| {t} | {r['night1']['seconds']:.1f} ({r['night1']['epochs']}) "
            f"| {r['cold']['seconds']:.1f} ({r['cold']['epochs']}) "
            f"| {r['warm']['seconds']:.1f} ({r['warm']['epochs']}) "
            f"| {r['warm']['seconds'] / r['cold']['seconds']:.2f} "
            f"| {r['warm']['val_loss'] / r['cold']['val_loss']:.3f} "
            f"| {r['rmse']['cold']:.5f} | {r['rmse']['warm']:.5f} | {r['dm_p']:.3g} | {verdict} "
            f"| {r['cold']['alpha']} / {r['warm']['alpha']} |"
        )
    drifts = sorted(r["drift_days"]["ratios"][1] for r in rows.values())
    still = sum(r["warm"]["epochs"] == 0 for r in rows.values())
    bound = 1 + (cfg.warm.warm_start_drift or 0)
    drift_lines = [
        "",
        "The champion's loss on later nights' validation windows over its loss when made "
        f"(k trading days after night 1; above {bound:g} a night fine-tunes):",
        "",
        "| k days | median | max | fine-tuned |",
        "|---|---|---|---|",
    ]
    for k in DRIFT_DAYS:
        ratios = [r["drift_days"]["ratios"][k] for r in rows.values()]
        over = sum(x > bound for x in ratios)
        drift_lines.append(
            f"| {k} | {np.median(ratios):.4f} | {max(ratios):.4f} | {over} of {len(ratios)} |"
        )
    drift_lines += [
        "",
        "The champion kept since night 1 without a fine-tune, against a cold refit on the "
        f"same later night's test windows (two-sided DM, p < {LEVEL}; the champion's network "
        "reads that night's scaled inputs; 'drifted': over the bound, so that night would "
        "have fine-tuned it):",
        "",
        "| k days | champion worse | champion better | worse among those not drifted "
        "| the same forecast (both the last close: DM p 1) |",
        "|---|---|---|---|---|",
    ]
    for k in STALE_DAYS:
        stale = [r["drift_days"]["stale"][k] for r in rows.values()]
        quiet = [x for x in stale if not x["drifted"]]
        drift_lines.append(
            f"| {k} | {sum(x['worse'] for x in stale)} of {len(stale)} "
            f"| {sum(x['better'] for x in stale)} of {len(stale)} "
            f"| {sum(x['worse'] for x in quiet)} of {len(quiet)} "
            f"| {sum(x['dm_p'] == 1 for x in stale)} of {len(stale)} |"
        )
    lines += [
        "",
        f"Total fit time: cold {cold_s:.0f} s, warm {warm_s:.0f} s: warm/cold "
        f"{warm_s / cold_s:.2f}. Warm fits significantly worse than cold (p < {LEVEL}): "
        f"{worse} of {len(rows)}; significantly better: {better}. Both fits shrunk all the "
        f"way to the last close (alpha 0 on the validation split, so the same forecast: "
        f"DM p 1): {naive} of {len(rows)}. The networks' best validation loss, warm over "
        f"cold (geometric mean): {val:.3f}. Warm fits that kept the champion's weights (no "
        f"epoch beat them on tonight's validation windows): "
        f"{sum(r['warm']['kept_start'] for r in rows.values())} of {len(rows)} (no version "
        f"made: the champion stays). Warm fits whose first epoch to beat the start came "
        f"after an epoch that did not (what warm_start_patience 1 would have missed): "
        f"{sum(late_improvement(r['warm']['val_curve']) for r in rows.values())} of {len(rows)}. "
        "The champion's loss on the new night's validation windows over its loss when "
        f"made (what warm_start_drift {cfg.warm.warm_start_drift} bounds): "
        f"{', '.join(f'{d:.4f}' for d in drifts)}; kept without an epoch: {still} of "
        f"{len(rows)}.",
        *drift_lines,
        "",
    ]
    stale_text = ", ".join(
        f"{k} days later: {sum(r['drift_days']['stale'][k]['worse'] for r in rows.values())} "
        f"of {len(rows)} significantly worse"
        for k in STALE_DAYS
    )
    row = (
        f"| second night warm vs cold fit: {', '.join(rows)} (nightly config, one new day, "
        f"warm_start_epochs {cfg.warm.warm_start_epochs}, warm_start_drift "
        f"{cfg.warm.warm_start_drift}; bench/WARM_START.md) "
        f"| cold fits from scratch {cold_s:.0f} s "
        f"| warm from the champion's fitted weights {warm_s:.0f} s; test-window DM warm vs "
        f"cold: {worse} of {len(rows)} significantly worse, {better} better ({naive} "
        f"shrunk to the last close both ways); validation loss warm/cold {val:.3f}; "
        f"{still} of {len(rows)} still fit (no epoch); the champion kept without a "
        f"fine-tune, against a cold refit {stale_text} | fit time {warm_s / cold_s:.2f}x |"
    )
    return "\n".join(lines), row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=0, help="synthetic tickers added")
    parser.add_argument("--tickers", default=",".join(SAMPLES))
    parser.add_argument(
        "--warm-start-epochs", type=int, help="replaces the nightly's (a candidate, not recorded)"
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    tickers = [t for t in args.tickers.split(",") if t]
    tickers += [f"U{i:03d}" for i in range(1, args.synthetic + 1)]
    cfg = nightly(args.warm_start_epochs)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="warm-") as tmp:
        rows = {t: one_ticker(t, cfg, Path(tmp)) for t in tickers}
    text, row = report(rows, cfg, started, time.perf_counter() - clock)
    print(text)
    print(row)
    if not args.no_record and args.warm_start_epochs is None:
        from bench.results import record

        REPORT.write_text(text)
        record("warm_start", row)
    return rows


if __name__ == "__main__":
    main()
