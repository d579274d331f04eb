"""Forecast quality: the recommended default vs the tutorial preset vs the baselines and a
peer (statsforecast's AutoETS), on the very same rolling origins of the five sample tickers.

Protocol (the one issue 13 measured the old default with): closes from 2015-01-01 to the
sample's end (2020-12-11), target = mean close of the next 5 trading days, expanding
window, first training window 1008 rows, an origin every 5 days, networks refit every 50
origins (20 epochs max, patience 5), baselines and AutoETS refit at every origin. Scored in
prices against naive on the same origins: RMSE skill, Diebold-Mariano p (HLN correction,
overlapping errors), and the split-conformal 80%/95% interval coverage of the networks.

Targets: the default's skill >= -1% on every ticker; its pooled 80%/95% coverage within 5
points of nominal. Run: python bench/forecast_quality.py [TICKER ...] (rows in RESULTS.md,
the per-ticker table in bench/FORECAST_QUALITY.md).

The distribution table (issue 21): on the same origins, around one median, the median's own
band (`band`: a quantile head's, else the band a model ships, the config's
`evaluation.band`: GJR-GARCH(1,1)-t fit once on each fold's training rows and run over the
last lookback + 20 returns before each origin) against every
distribution baseline (EWMA, GARCH(1,1)-t, GJR-GARCH(1,1)-t refit with the networks, the
unconditional band), all with the same split-conformal calibration: CRPS, 95% interval
score, coverage, DM p per ticker and pooled across tickers (relative scores, mean
difference per date). The full run adds it around the default network's median;
`python bench/forecast_quality.py --bands [--origins N] [TICKER ...]` runs it around naive's
median alone (no network, no peer: seconds on a CPU; table in bench/FORECAST_BANDS.md), on
the protocol the issue measured: closes from 2012, first window 1008 rows, an origin every
5 days, GARCH refit every 50.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICKERS = ("AAPL", "AMZN", "GOOG", "MSFT", "NVDA")
NETWORK = "stacked_lstm"  # the networks' name in both presets' backtests
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"  # `make peer-venv`
PROTOCOL = dict(
    start="2015-01-01",
    horizon=5,
    initial=1008,
    step=5,
    refit_every=50,
    epochs=20,
    patience=5,
    window="expanding",
)


def backtest(prices: pd.DataFrame, preset: str, models: list[str], out: Path) -> dict:
    """The rolling backtest of a preset. Origins are rows of the featurised series, and the
    recommended features drop their warm-up rows first: the tutorial's first window is
    longer by that many rows, so both presets forecast from the very same days."""
    from tickercast.backtest.prepare import featurised
    from tickercast.backtest.rolling import rolling_backtest
    from tickercast.config import BacktestConfig

    def config(name: str, **changes):
        target = "mean_close_log_return" if name == "recommended" else "mean_close"
        fields = {**PROTOCOL, **changes}
        return BacktestConfig(
            tickers=["X"], preset=name, model=models, target=target, **fields
        ).rolling_spec()

    def rows(spec) -> int:
        return len(featurised(prices, spec.preprocessing.model_copy(update={"end": None}))[0])

    cfg = config(preset)
    if preset != "recommended":
        extra = rows(cfg) - rows(config("recommended"))
        cfg = config(preset, initial=PROTOCOL["initial"] + extra)
    return rolling_backtest(prices, cfg, out)


def autoets_forecasts(prices: pd.DataFrame, result: dict, work: Path) -> np.ndarray:
    """AutoETS refit on the closes up to each origin (the same origins as the backtest);
    the mean of its 5 daily forecasts. Runs bench/peer_autoets.py in the peer's own venv."""
    from tickercast.backtest.prepare import featurised
    from tickercast.sections import Windowing

    dates, close = featurised(
        prices, Windowing(start=PROTOCOL["start"], end=None, features=["log_return"])
    )
    table = result["table"]
    origins = pd.to_datetime(table.loc[table["model"] == "naive", "origin"]).to_numpy()
    rows = np.searchsorted(dates.astype("datetime64[ns]"), origins)
    assert (dates[rows] == origins.astype("datetime64[D]")).all()
    series, out = work / "peer-in.npz", work / "peer-out.npy"
    np.savez(series, close=close, rows=rows)
    subprocess.run(
        [
            str(PEER_PYTHON),
            str(ROOT / "bench" / "peer_autoets.py"),
            str(series),
            str(PROTOCOL["horizon"]),
            str(out),
        ],
        check=True,
    )
    return np.load(out)


def score(actual: np.ndarray, pred: np.ndarray, naive: np.ndarray) -> dict:
    from tickercast.significance import dm_test

    rmse = float(np.sqrt(np.mean((actual - pred) ** 2)))
    naive_rmse = float(np.sqrt(np.mean((actual - naive) ** 2)))
    overlap = math.ceil(PROTOCOL["horizon"] / PROTOCOL["step"])
    test = dm_test(actual, pred, naive, overlap)
    return {"rmse": rmse, "skill": 1 - rmse / naive_rmse, "p": test.p_value}


def run_ticker(ticker: str, work: Path) -> dict:
    from tickercast.layout import sample_dir

    prices = pd.read_parquet(sample_dir() / f"{ticker}.parquet")
    t0 = time.monotonic()
    rec = backtest(
        prices,
        "recommended",
        [NETWORK, "drift", "mean", "moving_average", "ridge"],
        work / f"{ticker}-rec",
    )
    t1 = time.monotonic()
    tut = backtest(prices, "tutorial", [NETWORK], work / f"{ticker}-tut")
    t2 = time.monotonic()
    table = rec["table"]
    naive_rows = table[table["model"] == "naive"]
    actual = naive_rows["actual"].to_numpy()
    naive = naive_rows["forecast"].to_numpy()
    tut_table = tut["table"]
    tut_net = tut_table[tut_table["model"] == NETWORK]
    same = tut_table[tut_table["model"] == "naive"]
    assert (same["origin"].to_numpy() == naive_rows["origin"].to_numpy()).all()
    assert np.allclose(same["actual"].to_numpy(), actual)
    ets = autoets_forecasts(prices, rec, work)
    t3 = time.monotonic()
    rows = {}
    for name in (NETWORK, "drift", "mean", "moving_average", "ridge"):
        pred = table[table["model"] == name]["forecast"].to_numpy()
        rows["default" if name == NETWORK else name] = score(actual, pred, naive)
    rows["tutorial"] = score(actual, tut_net["forecast"].to_numpy(), naive)
    rows["AutoETS"] = score(actual, ets, naive)
    net = table[table["model"] == NETWORK]
    cover = {
        key: ((net["actual"] >= net[f"lo_{key}"]) & (net["actual"] <= net[f"hi_{key}"])).to_numpy()
        for key in ("80", "95")
    }
    tut_cover = {
        key: (
            (tut_net["actual"] >= tut_net[f"lo_{key}"])
            & (tut_net["actual"] <= tut_net[f"hi_{key}"])
        ).to_numpy()
        for key in ("80", "95")
    }
    alphas = [
        f.get("training", {}).get("shrinkage", {}).get("alpha")
        for f in rec["folds"].get(NETWORK, [])
    ]
    return {
        "ticker": ticker,
        "backtest": {k: rec[k] for k in ("distribution", "distribution_scores")},
        "origins": int(len(actual)),
        "rows": rows,
        "cover": cover,
        "tutorial_cover": tut_cover,
        "alphas": alphas,
        "seconds": {"default+baselines": t1 - t0, "tutorial": t2 - t1, "AutoETS": t3 - t2},
    }


BANDS = dict(PROTOCOL, start="2012-01-01")  # the issue's: 248 origins per ticker


def bands_backtest(prices: pd.DataFrame, origins: int | None, out: Path) -> dict:
    """Naive's median and the distribution table on the bands protocol (`origins`: keep
    only the last N origins, for a reduced run)."""
    from tickercast.backtest.prepare import featurised
    from tickercast.backtest.rolling import rolling_backtest
    from tickercast.config import BacktestConfig

    fields = {k: v for k, v in BANDS.items() if k not in ("epochs", "patience")}
    spec = BacktestConfig(
        tickers=["X"], model=["naive"], target="mean_close_log_return", **fields
    ).rolling_spec()
    if origins:
        rows = len(featurised(prices, spec.preprocessing.model_copy(update={"end": None}))[0])
        first = rows - BANDS["horizon"] - (origins - 1) * BANDS["step"]
        initial = max(BANDS["initial"], first)
        spec = spec.model_copy(
            update={"backtest": spec.backtest.model_copy(update={"initial": initial})}
        )
    return rolling_backtest(prices, spec, out)


def distribution_rows(
    tickers: list[str], results: list[dict], median: str
) -> tuple[list[str], dict[str, float], str]:
    """Markdown: per ticker and pooled, each band's CRPS, 95% interval score, coverage and
    the DM test of the median's own band against it (per-origin CRPS); each band's mean
    CRPS relative to the median's band, averaged over tickers; and the pooled verdicts
    in words (what RESULTS.md's rows quote)."""
    from tickercast.backtest.bands import MODEL_BAND
    from tickercast.evaluation.distribution import pooled

    bands = [MODEL_BAND, "volatility_conformal", "ewma", "garch_t", "gjr_garch_t", "unconditional"]
    lines = [
        f"Distribution around {median}'s median (`band`: its own; DM p: `band` vs each, "
        "per-origin CRPS; cells: CRPS / 95% interval score / coverage 80, 95 / p)",
        "",
        "| ticker | " + " | ".join(bands) + " |",
        "|---|" + "---|" * len(bands),
    ]
    frames = {}
    for ticker, r in zip(tickers, results, strict=True):
        table = r["distribution"]["medians"][median]["metrics"]
        cells = []
        for b in bands:
            v = table[b]
            p = ((v.get("dm") or {}).get("crps") or {}).get("p")
            cells.append(
                f"{v['crps']:.4g} / {v['interval_95']:.4g} / {v['coverage_80']:.0%}, "
                f"{v['coverage_95']:.0%}" + ("" if p is None else f" / p {p:.2g}")
            )
        lines.append(f"| {ticker} | " + " | ".join(cells) + " |")
        scores = r["distribution_scores"]
        frames[ticker] = scores[scores["median"] == median]
    overlap = math.ceil(PROTOCOL["horizon"] / PROTOCOL["step"])
    tests = pooled(frames, MODEL_BAND, bands[1:], overlap)
    rel = {
        b: np.mean(
            [f[f"{b}_crps"].mean() / f[f"{MODEL_BAND}_crps"].mean() - 1 for f in frames.values()]
        )
        for b in bands[1:]
    }
    lines.append(
        "| pooled | - | "
        + " | ".join(
            f"CRPS {rel[b]:+.1%} vs band, p {tests[b]['dm']['crps']['p']:.2g}, IS95 p "
            f"{tests[b]['dm']['interval_95']['p']:.2g}"
            for b in bands[1:]
        )
        + " |"
    )
    verdicts = "; ".join(t["verdict_text"] for t in tests.values())
    lines += ["", f"Pooled, {median}'s band: {verdicts}"]
    return lines, rel, verdicts


def crps_ratios(rel: dict[str, float]) -> str:
    """Each band's mean CRPS relative to the median's own band, for a RESULTS.md row."""
    return ", ".join(f"{b} {v:+.1%}" for b, v in rel.items())


def bands_main(tickers: list[str], origins: int | None) -> None:
    """The distribution table around naive's median alone, on the bands protocol."""
    from bench.results import record

    results = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for ticker in tickers:
            from tickercast.layout import sample_dir

            prices = pd.read_parquet(sample_dir() / f"{ticker}.parquet")
            results.append(bands_backtest(prices, origins, Path(tmp) / ticker))
            print(f"== {ticker}: {results[-1]['origins']['origins']} origins", flush=True)
    lines, rel, verdicts = distribution_rows(tickers, results, "naive")
    head = [
        "# Distribution bands (bench/forecast_quality.py --bands)",
        "",
        f"Protocol: {BANDS}. `band`: the shipped band, {shipped_band()} (the config's "
        "`evaluation.band`), fit once on each fold's training rows; the baselines' GARCH "
        "fits are refit every 50 origins on all closes before them.",
        "",
    ]
    (ROOT / "bench" / "FORECAST_BANDS.md").write_text("\n".join(head + lines) + "\n")
    print("\n".join(lines))
    n = results[0]["origins"]["origins"]
    seconds = time.monotonic() - t0
    record(
        "forecast_quality_bands",
        f"| distribution bands around naive's median: {', '.join(tickers)} from "
        f"{BANDS['start'][:4]}, {n} origins each (h=5 mean close log return, step 5, GARCH "
        f"baselines refit every 50), same median and split-conformal calibration, "
        f"{seconds:.0f} s | the shipped band ({shipped_band()}, fit on each fold's training "
        f"rows) | pooled DM on per-origin CRPS (relative to the last close, mean per date): "
        f"the shipped band is {verdicts} | mean CRPS vs the shipped band: {crps_ratios(rel)} |",
    )


def shipped_band() -> str:
    """The band the recommended preset ships (`evaluation.band`), named."""
    from tickercast.config import BacktestConfig
    from tickercast.evaluation.distribution import LABELS

    band = BacktestConfig(tickers=["X"]).evaluation.band
    return LABELS.get(band, band)


def run_all(tickers: list[str]) -> list[dict]:
    """`run_ticker` for each ticker, printing each one's skills as it finishes."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for ticker in tickers:
            print(f"== {ticker}", flush=True)
            results.append(run_ticker(ticker, Path(tmp)))
            r = results[-1]
            print(
                "  ".join(f"{k} {v['skill']:+.2%} (p {v['p']:.2g})" for k, v in r["rows"].items()),
                flush=True,
            )
    return results


def pooled_coverage(results: list[dict], key: str) -> dict[str, float]:
    """Coverage of the 80% and 95% bands over every ticker's origins (`key`: whose)."""
    return {k: np.concatenate([r[key][k] for r in results]).mean() for k in ("80", "95")}


def quality_table(results: list[dict]) -> list[str]:
    """FORECAST_QUALITY.md's skill table: one row per ticker, every forecaster."""
    names = list(results[0]["rows"])
    lines = [
        "# Forecast quality (bench/forecast_quality.py)",
        "",
        "RMSE skill vs naive (and Diebold-Mariano p vs naive) on the same rolling origins; "
        f"protocol: {PROTOCOL}.",
        "",
        "| ticker | origins | " + " | ".join(names) + " | default cov 80/95 | tutorial cov 80/95 "
        "| shrink alpha per fit |",
        "|---|---|" + "---|" * (len(names) + 3),
    ]
    for r in results:
        cells = [f"{r['rows'][n]['skill']:+.2%} (p {r['rows'][n]['p']:.2g})" for n in names]
        cov = "/".join(f"{r['cover'][k].mean():.0%}" for k in ("80", "95"))
        tcov = "/".join(f"{r['tutorial_cover'][k].mean():.0%}" for k in ("80", "95"))
        alphas = ", ".join("-" if a is None else f"{a:.2f}" for a in r["alphas"])
        lines.append(
            f"| {r['ticker']} | {r['origins']} | " + " | ".join(cells) + f" | {cov} | {tcov} "
            f"| {alphas} |"
        )
    return lines


def record_row(results: list[dict]) -> str:
    """bench/RESULTS.md's row: the tutorial preset and AutoETS against the default."""
    pooled, tpooled = pooled_coverage(results, "cover"), pooled_coverage(results, "tutorial_cover")
    worst = min(r["rows"]["default"]["skill"] for r in results)
    per = "; ".join(
        f"{r['ticker']} {r['rows']['default']['skill']:+.1%} (p {r['rows']['default']['p']:.2g})"
        for r in results
    )
    tut = "; ".join(f"{r['ticker']} {r['rows']['tutorial']['skill']:+.1%}" for r in results)
    best_peer = {r["ticker"]: r["rows"]["AutoETS"]["skill"] for r in results}
    ets = "; ".join(f"{t} {s:+.1%}" for t, s in best_peer.items())
    return (
        f"| forecast quality: rolling origins of {', '.join(r['ticker'] for r in results)} "
        f"2015-2020 (h=5 mean close, step 5, refit every 50, {results[0]['origins']} origins "
        f"each), RMSE skill vs naive | tutorial preset: {tut}; AutoETS (statsforecast, same "
        f"origins): {ets} | recommended default: {per}; pooled interval coverage 80% -> "
        f"{pooled['80']:.0%}, 95% -> {pooled['95']:.0%} (tutorial {tpooled['80']:.0%} / "
        f"{tpooled['95']:.0%}) | worst default skill {worst:+.1%} (target >= -1%) |"
    )


def main(tickers: list[str]) -> None:
    from bench.results import record

    if not PEER_PYTHON.exists():
        sys.exit(f"the peer's environment is missing: run `make peer-venv` ({PEER_PYTHON})")
    results = run_all(tickers)
    pooled, tpooled = pooled_coverage(results, "cover"), pooled_coverage(results, "tutorial_cover")
    worst = min(r["rows"]["default"]["skill"] for r in results)
    lines = quality_table(results) + [
        "",
        f"Pooled coverage, default: 80% -> {pooled['80']:.1%}, 95% -> {pooled['95']:.1%}; "
        f"tutorial: 80% -> {tpooled['80']:.1%}, 95% -> {tpooled['95']:.1%}.",
        f"Worst default skill {worst:+.2%} (target >= -1%).",
    ]
    tickers_run = [r["ticker"] for r in results]
    backtests = [r["backtest"] for r in results]
    bands, rel, verdicts = distribution_rows(tickers_run, backtests, NETWORK)
    lines += ["", *bands]
    (ROOT / "bench" / "FORECAST_QUALITY.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    record("forecast_quality", record_row(results))
    record("forecast_quality_network_bands", network_bands_row(results, verdicts, rel))


def network_bands_row(results: list[dict], verdicts: str, rel: dict[str, float]) -> str:
    """bench/RESULTS.md's row: the shipped band around the default network's own median
    (what a version serves) against every distribution baseline on the same origins."""
    own = [r["backtest"]["distribution"]["medians"][NETWORK]["metrics"]["band"] for r in results]
    cover = {k: np.mean([band[k] for band in own]) for k in ("coverage_80", "coverage_95")}
    return (
        f"| distribution around the default network's median: "
        f"{', '.join(r['ticker'] for r in results)} 2015-2020, {results[0]['origins']} origins "
        f"each (the forecast-quality protocol, networks refit every 50) | the shipped band "
        f"({shipped_band()}) around the recommended default's forecast | pooled DM on "
        f"per-origin CRPS: the shipped band is {verdicts}; mean coverage 80% -> "
        f"{cover['coverage_80']:.1%}, 95% -> {cover['coverage_95']:.1%} | mean CRPS vs the "
        f"shipped band: {crps_ratios(rel)} |"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--bands" in args:
        args.remove("--bands")
        n = None
        if "--origins" in args:
            i = args.index("--origins")
            n = int(args[i + 1])
            del args[i : i + 2]
        bands_main(args or list(TICKERS), n)
    else:
        main(args or list(TICKERS))
