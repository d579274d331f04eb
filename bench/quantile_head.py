"""The network's quantile head against the distribution baselines (issue 21), measured.

Protocol: the five sample tickers, the recommended preset (2015-01-01 to the sample's end,
mean_close_log_return over 5 days, lookback 60, 70/15/15 chronological split, 50 epochs
max) with `head="quantile"`, per ticker (or one global network with `--global`); each
ticker's test windows scored by the retrain evaluation (`evaluate(...,
predict_quantiles=...)`): the head's own calibrated grid against every distribution
baseline built around the head's median, CRPS per origin; pooled across tickers as the
mean relative CRPS (CRPS / last close) per date, Diebold-Mariano (HLN, h - 1 lags) on
the pooled differences. One split, not the rolling origins of bench/forecast_quality.py:
a first measurement, enough to choose the default head, not the issue's benchmark.

Run: python bench/quantile_head.py [--global] [--features a,b,...] [--epochs N]
(results in bench/QUANTILE_HEAD.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICKERS = ("AAPL", "AMZN", "GOOG", "MSFT", "NVDA")
RANGE_FEATURES = "log_return,volatility,abs_log_return,parkinson,garman_klass"


def _prepared(config, data_dir: Path, split=None) -> dict:
    from tickercast.market import lake
    from tickercast.market.ingest import ingest_ticker
    from tickercast.modeling.preprocess import preprocess, shared_split_dates
    from tickercast.modeling.windows import anchors_for

    prices = {}
    for ticker in TICKERS:
        ingest_ticker(ticker, "sample", data_dir)
        prices[ticker] = lake.read_partition(data_dir, ticker)
    if config.scope.mode == "global":
        split = shared_split_dates(list(prices.values()), config.preprocessing)
    out = {}
    for ticker, frame in prices.items():
        spec, arrays = preprocess(frame, config.preprocessing, who=ticker, split=split)
        out[ticker] = (spec, arrays, anchors_for(spec))
    return out


def _models(config, data: dict, work: Path) -> dict[str, tuple[Path, dict]]:
    """Per ticker: (model file, calibration), trained per ticker or as one network."""
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import GlobalData, train_global, train_model

    fit = config.fit_spec()
    if config.scope.mode != "global":
        out = {}
        for ticker, (spec, arrays, anchors) in data.items():
            folder = work / ticker
            summary = train_model(
                arrays, anchors, spec.lookback, fit, folder, naive=naive_output(spec)
            )
            out[ticker] = (folder / "model.keras", summary["calibration"])
        return out
    tickers = list(data)
    source = GlobalData(
        tickers,
        [data[t][0].n_rows for t in tickers],
        lambda i: (data[tickers[i]][1]["x"], data[tickers[i]][1]["y"], data[tickers[i]][2]),
        [naive_output(data[t][0]) for t in tickers],
    )
    lookback = data[tickers[0]][0].lookback
    summary = train_global(source, lookback, fit, 0, work / "global")
    return {t: (Path(summary["models"][t]), summary["calibration"][t]) for t in tickers}


def _scores(path: Path, spec, arrays, anchors) -> tuple[dict, pd.DataFrame]:
    import keras

    from tickercast.evaluation.evaluate import evaluate
    from tickercast.modeling.models import split_heads
    from tickercast.modeling.quantiles import predict_quantile_prices

    point, head = split_heads(keras.models.load_model(path, safe_mode=True, compile=False))
    ev = evaluate(
        point,
        spec,
        arrays,
        anchors,
        predict_quantiles=lambda a: predict_quantile_prices(
            head, spec, arrays["x"], a, arrays["close"]
        ),
    )
    table, metrics = ev["table"], ev["distribution"]["metrics"]
    last = table["last_close"].to_numpy()
    relative = pd.DataFrame({"date": table["anchor_date"]})
    for column in (c for c in table.columns if c.startswith("crps_")):
        relative[column[5:]] = table[column].to_numpy() / last
    return metrics, relative


def main() -> None:
    from tickercast.config import RetrainConfig
    from tickercast.significance import dm_test_differential

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--global", dest="pooled", action="store_true")
    parser.add_argument("--features", default=RANGE_FEATURES)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="tickercast-quantile-")) / "data"
    config = RetrainConfig(
        tickers=list(TICKERS),
        head="quantile",
        features=args.features.split(","),
        epochs=args.epochs,
        mode="global" if args.pooled else "per_ticker",
        data_dir=str(data_dir),
    )
    started = time.time()
    data = _prepared(config, data_dir)
    frames = {}
    for ticker, (path, calibration) in _models(config, data, data_dir / "work").items():
        metrics, frames[ticker] = _scores(path, *data[ticker])
        row = {
            name: {k: m.get(k) for k in ("crps", "coverage_80", "coverage_95")}
            | {"dm_crps": (m.get("dm") or {}).get("crps")}
            for name, m in metrics.items()
        }
        print(ticker, json.dumps({"val_coverage": calibration["val_coverage_after"], **row}))
    by_date = pd.concat(f.set_index("date") for f in frames.values()).groupby(level=0).mean()
    print("pooled mean relative CRPS:", by_date.mean().round(6).to_dict())
    for name in (c for c in by_date.columns if c != "model"):
        d = (by_date["model"] - by_date[name]).to_numpy()
        p = dm_test_differential(d, 5).p_value
        print(f"pooled model - {name}: {np.mean(d):+.3e} (DM p = {p:.2g})")
    print(f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
