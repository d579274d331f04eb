"""The train steps: one network per ticker, or one global network."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from tickercast.tasks.caching import content_cache_key
from tickercast.tasks.runners import training_lock
from tickercast.tasks.workfiles import load_anchors, outputs, work_dir

# The library code this step runs (its imports' closure is hashed: tasks/caching.py).
TRAIN_MODULES = ("tickercast.modeling.train",)


@task(name="train", cache_key_fn=content_cache_key("train", TRAIN_MODULES))
def train_step(pre: dict, win: dict, cfg: dict, data_dir: str) -> dict:
    """Fit the network on training windows, early-stopped on validation windows."""
    from tickercast.modeling.preprocess import load_preprocessed
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model

    params = {"pre": pre, "win": win, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "train", TRAIN_MODULES, params)
    spec, arrays = load_preprocessed(pre["arrays"], pre["spec"])
    with training_lock():
        summary = train_model(
            arrays,
            load_anchors(win),
            spec.lookback,
            cfg,
            out,
            get_run_logger(),
            label=pre["ticker"],
            naive=naive_output(spec),
        )
    model_path, history_path = out / "model.keras", out / "history.json"
    return {
        "ticker": pre["ticker"],
        "model": str(model_path),
        "history": str(history_path),
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "shrinkage": summary["shrinkage"],
        "outputs": outputs(model_path, history_path),
    }


@task(name="train-global", cache_key_fn=content_cache_key("train_global", TRAIN_MODULES))
def train_global_step(pres: list[dict], wins: list[dict], cfg: dict, data_dir: str) -> dict:
    """One network over every ticker's windows (mode=global); per ticker, the model file
    its evaluation and bundle use, in the same shape `train_step` returns."""

    from tickercast.modeling.preprocess import Preprocessing, load_preprocessed
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_global

    params = {"pres": pres, "wins": wins, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "train_global", TRAIN_MODULES, params)
    specs = [Preprocessing.from_json(json.loads(Path(p["spec"]).read_text())) for p in pres]
    tickers = [p["ticker"] for p in pres]

    def load(i: int):
        _, arrays = load_preprocessed(pres[i]["arrays"], pres[i]["spec"])
        return arrays["x"], arrays["y"], load_anchors(wins[i])

    summary = train_global(
        tickers,
        [s.n_train + s.n_val + s.n_test for s in specs],
        load,
        specs[0].lookback,
        cfg,
        out,
        get_run_logger(),
        naive=[naive_output(s) for s in specs],
    )
    history_path = out / "history.json"
    per_ticker = {
        ticker: {
            "ticker": ticker,
            "model": path,
            "history": str(history_path),
            "best_epoch": summary["best_epoch"],
            "epochs_run": summary["epochs_run"],
            "shrinkage": summary["shrinkage"][ticker],
            "outputs": outputs(Path(path), history_path),
        }
        for ticker, path in summary["models"].items()
    }
    files = {Path(t["model"]) for t in per_ticker.values()} | {history_path}
    return {"tickers": per_ticker, "outputs": outputs(*sorted(files))}
