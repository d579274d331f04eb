"""One trial: train a proposed configuration on the search data and score it.

The network, seed, callbacks and batches are those of retrain's train step; the score is
the validation MSE of the restored best weights. A finished trial's `result.json` makes a
rerun return it as it is; an interrupted one resumes from its checkpoints.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from tickercast.atomic import write_json
from tickercast.hashing import json_sha256
from tickercast.tuning.config import OBJECTIVE
from tickercast.tuning.data import load_search_data, search_anchors

Logger = logging.Logger | logging.LoggerAdapter


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def _copy_checkpoint(source: Path, out: Path, logger: Logger) -> None:
    """Hyperband's next round continues a trial: start from its last checkpoint. Training
    from scratch would end identically (per-epoch seeded shuffles, resumable callbacks),
    only slower, so a missing checkpoint is not an error."""
    from tickercast.modeling.callbacks import CHECKPOINTS, latest_checkpoint

    if latest_checkpoint(out) is not None:
        return  # this trial's own, newer checkpoint (it was interrupted)
    last = latest_checkpoint(source)
    if last is None:
        logger.warning("no checkpoint in %s: training from the first epoch", source)
        return
    target = out / CHECKPOINTS / last.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(last, target)


def _val_mse(model, data, lookback: int, batch_size: int) -> float:
    """Validation MSE of the restored best weights, in scaled target units. Keras'
    val_loss adds the L2 penalty, which would favour small l2 whatever the fit."""
    from tickercast.modeling.windows import make_dataset

    ds = make_dataset(
        data.x, data.y, data.val, lookback, batch_size, ticker_offsets=data.ticker_offsets
    )
    # eager calls: model.predict would trace a new function for every trial's model
    predicted = np.concatenate([np.asarray(model(inputs, training=False)) for inputs, _ in ds])
    predicted = predicted.astype(np.float64)
    actual = np.asarray(data.y[data.val], dtype=np.float64)
    return float(np.mean((predicted.reshape(actual.shape) - actual) ** 2))


def _fit_part(
    data,
    lookback: int,
    cfg: dict,
    out: Path,
    resume_from: Path | None,
    keep_checkpoints: bool,
    logger: Logger,
    label: str,
    callbacks,
) -> dict:
    from tickercast.modeling.callbacks import CHECKPOINTS
    from tickercast.modeling.train import fit

    if resume_from is not None:
        _copy_checkpoint(resume_from, out, logger)
    summary, model = fit(data, lookback, cfg, out, logger, callbacks, label)
    part = {
        "val_mse": _val_mse(model, data, lookback, int(cfg["batch_size"])),
        "val_loss": summary["best_val_loss"],
        **{
            k: summary[k]
            for k in (
                "epochs_run",
                "best_epoch",
                "stopped_early",
                "resumed_from_epoch",
                "train_seconds",
                "train_windows",
                "val_windows",
                "parameters",
                "history",
            )
        },
    }
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    write_json(out / "part.json", part)
    return part


def run_trial(
    spec: dict,
    data: list[dict],
    cfg: dict,
    trial_dir: str | Path,
    logger: Logger | None = None,
    callbacks=(),
) -> dict:
    """Train one trial's configuration on the search data; returns its validation MSE.

    `spec` = {trial_id, settings (searched RetrainConfig fields), epochs, resume_from}.
    The network, seed, callbacks and batches are those retrain's train step uses for the
    same config, on the same training and validation windows. Per ticker (or one global
    model) in `trial_dir/train/<part>/`; with several tickers the objective is the mean of
    their validation MSEs. An interrupted trial resumes from its checkpoints; a finished
    one (`result.json` for the same inputs) is returned as it is.
    """
    logger = logger or logging.getLogger(__name__)
    trial_dir = Path(trial_dir)
    key = json_sha256({"spec": spec, "data": [d["content"] for d in data], "cfg": cfg})
    done = trial_dir / "result.json"
    if done.is_file():
        stored = json.loads(done.read_text())
        if stored.get("key") == key:
            logger.info("trial %s had already finished: %s", spec["trial_id"], done)
            return {**stored, "reused": True}
    started, started_at = time.perf_counter(), _now()
    settings = spec["settings"]
    lookback = int(settings["lookback"])
    train_cfg = {
        **cfg,
        **{k: v for k, v in settings.items() if k != "lookback"},
        "epochs": int(spec["epochs"]),
    }
    keep = bool(cfg.get("keep_checkpoints", False))
    past = Path(spec["resume_from"]) / "train" if spec.get("resume_from") else None
    parts: dict[str, dict] = {}
    if cfg.get("mode") == "global":
        from tickercast.modeling.train import global_data

        loaded = [load_search_data(d["search"]) for d in data]

        def load(i: int):
            x, y, meta = loaded[i]
            return x, y, search_anchors(meta, lookback, y)

        stacked = global_data(
            [m["rows"] for *_, m in loaded],
            load,
            with_ticker_ids=int(cfg.get("ticker_embedding", 0)) > 0,
        )
        parts["global"] = _fit_part(
            stacked,
            lookback,
            train_cfg,
            trial_dir / "train" / "global",
            past / "global" if past else None,
            keep,
            logger,
            f"trial {spec['trial_id']} global",
            callbacks,
        )
    else:
        from tickercast.modeling.train import TrainData

        for d in data:
            name = _slug(d["ticker"])
            x, y, meta = load_search_data(d["search"])
            anchors = search_anchors(meta, lookback, y)
            parts[d["ticker"]] = _fit_part(
                TrainData(x, y, anchors["train"], anchors["val"]),
                lookback,
                train_cfg,
                trial_dir / "train" / name,
                past / name if past else None,
                keep,
                logger,
                f"trial {spec['trial_id']} {d['ticker']}",
                callbacks,
            )
    values = [p["val_mse"] for p in parts.values()]
    losses = [p["val_loss"] for p in parts.values() if p["val_loss"] is not None]
    result = {
        "key": key,
        "trial_id": spec["trial_id"],
        "settings": settings,
        "epochs": int(spec["epochs"]),
        "resume_from": spec.get("resume_from"),
        OBJECTIVE: float(np.mean(values)),
        "val_loss": float(np.mean(losses)) if losses else None,
        "epochs_run": max(p["epochs_run"] for p in parts.values()),
        "best_epoch": max(p["best_epoch"] for p in parts.values()),
        "seconds": round(time.perf_counter() - started, 3),
        "started": started_at,
        "finished": _now(),
        "parts": {k: {n: v for n, v in p.items() if n != "history"} for k, p in parts.items()},
        "history": {k: p["history"] for k, p in parts.items()},
    }
    write_json(done, result)
    logger.info(
        "trial %s: %s units %s lookback %d: val_mse %.6g after %d epoch(s), %.1f s",
        spec["trial_id"],
        settings["model"],
        settings["units"],
        lookback,
        result[OBJECTIVE],
        result["epochs_run"],
        result["seconds"],
    )
    return {**result, "reused": False}
