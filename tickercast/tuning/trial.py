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
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tickercast.atomic import write_json
from tickercast.hashing import json_sha256
from tickercast.tickers import slug
from tickercast.tuning.config import OBJECTIVE, Choice, TrialSettings
from tickercast.tuning.data import SearchData, search_anchors

Logger = logging.Logger | logging.LoggerAdapter


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _copy_checkpoint(source: Path, out: Path, logger: Logger) -> None:
    """Hyperband's next round continues a trial: start from its last checkpoint. Training
    from scratch would end identically (per-epoch seeded shuffles, resumable callbacks),
    only slower, so a missing checkpoint is not an error."""
    from tickercast.modeling.checkpoints import CHECKPOINTS, latest_checkpoint

    if latest_checkpoint(out) is not None:
        return  # this trial's own, newer checkpoint (it was interrupted)
    last = latest_checkpoint(source)
    if last is None:
        logger.warning("no checkpoint in %s: training from the first epoch", source)
        return
    target = out / CHECKPOINTS / last.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(last, target)


def _val_mse(model, data, lookback: int) -> float:
    """Validation MSE of the restored best weights, in scaled target units. Keras'
    val_loss adds the L2 penalty, which would favour small l2 whatever the fit."""
    from tickercast.modeling.windows import predict_windows

    predicted = predict_windows(model, data.x, data.val, lookback, data.ticker_offsets)
    predicted = predicted.astype(np.float64)
    actual = np.asarray(data.y[data.val], dtype=np.float64)
    return float(np.mean((predicted.reshape(actual.shape) - actual) ** 2))


@dataclass(frozen=True)
class Part:
    """One fit of a trial: a ticker's (or the global model's) data and its folders."""

    name: str  # the ticker, or "global"
    label: str  # in the log
    data: object  # tickercast.modeling.train.TrainData
    out: Path
    resume_from: Path | None


def _fit_part(part: Part, lookback: int, spec, keep_checkpoints: bool, logger, callbacks) -> dict:
    from tickercast.modeling.checkpoints import CHECKPOINTS
    from tickercast.modeling.train import fit

    if part.resume_from is not None:
        _copy_checkpoint(part.resume_from, part.out, logger)
    with ExitStack() as lease:  # the pooled network goes back once it is scored
        summary, model = fit(  # seeded by ticker, not trial: trials start alike, as they did
            part.data,
            lookback,
            spec,
            part.out,
            logger,
            callbacks,
            part.label,
            seed_key=part.name,
            lease=lease,
        )
        val_mse = _val_mse(model, part.data, lookback)
    result = {
        "val_mse": val_mse,
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
        shutil.rmtree(part.out / CHECKPOINTS, ignore_errors=True)
    write_json(part.out / "part.json", result)
    return result


def _parts(
    spec: dict, data: Sequence[SearchData], settings: TrialSettings, lookback: int, trial_dir: Path
) -> list[Part]:
    """The fits of a trial: one per ticker, or one global model over all of them."""
    from tickercast.modeling.train import TrainData, global_data

    past = Path(spec["resume_from"]) / "train" if spec.get("resume_from") else None
    label = f"trial {spec['trial_id']}"

    def part(name: str, folder: str, stacked) -> Part:
        resume_from = past / folder if past else None
        return Part(name, f"{label} {name}", stacked, trial_dir / "train" / folder, resume_from)

    if settings.scope.mode == "global":
        loaded = [d.load() for d in data]

        def load(i: int):
            x, y, meta = loaded[i]
            return x, y, search_anchors(meta, lookback, y)

        rows = [meta["rows"] for *_, meta in loaded]
        stacked = global_data(rows, load, settings.scope.ticker_embedding)
        return [part("global", "global", stacked)]
    parts = []
    for d in data:
        x, y, meta = d.load()
        anchors = search_anchors(meta, lookback, y)
        stacked = TrainData(x, y, anchors["train"], anchors["val"])
        parts.append(part(d.ticker, slug(d.ticker, lower=False), stacked))
    return parts


def run_trial(
    spec: dict,
    data: Sequence[SearchData],
    settings: TrialSettings,
    trial_dir: str | Path,
    logger: Logger | None = None,
    callbacks=(),
    keep_checkpoints: bool = False,
) -> dict:
    """Train one trial's configuration on the search data; returns its validation MSE.

    `spec` = {trial_id, settings (a `Choice`'s fields), epochs, resume_from}. The network,
    seed, callbacks and batches are those retrain's train step uses for the same config,
    on the same training and validation windows. Per ticker (or one global model) in
    `trial_dir/train/<part>/`; with several tickers the objective is the mean of their
    validation MSEs. An interrupted trial resumes from its checkpoints; a finished one
    (`result.json` for the same inputs) is returned as it is. Hyperband keeps each part's
    checkpoints (`keep_checkpoints`) for the rounds that continue it.
    """
    logger = logger or logging.getLogger(__name__)
    trial_dir = Path(trial_dir)
    key = json_sha256(
        {
            "spec": spec,
            "data": [d.content for d in data],
            "settings": settings.model_dump(mode="json"),
            "keep_checkpoints": keep_checkpoints,
        }
    )
    done = _finished(trial_dir / "result.json", key)
    if done is not None:
        logger.info("trial %s had already finished: %s", spec["trial_id"], trial_dir)
        return {**done, "reused": True}
    started, started_at = time.perf_counter(), _now()
    choice = Choice(**spec["settings"])
    fit_spec = settings.fit(choice, int(spec["epochs"]))
    parts = {
        p.name: _fit_part(p, choice.lookback, fit_spec, keep_checkpoints, logger, callbacks)
        for p in _parts(spec, data, settings, choice.lookback, trial_dir)
    }
    result = _result(key, spec, choice, parts, started, started_at)
    write_json(trial_dir / "result.json", result)
    logger.info(
        "trial %s: %s units %s lookback %d: val_mse %.6g after %d epoch(s), %.1f s",
        spec["trial_id"],
        choice.model,
        choice.units,
        choice.lookback,
        result[OBJECTIVE],
        result["epochs_run"],
        result["seconds"],
    )
    return {**result, "reused": False}


def _finished(path: Path, key: str) -> dict | None:
    """A finished trial's result for the same inputs, or None."""
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored
    return None


def _result(key, spec, choice: Choice, parts: dict, started: float, started_at: str) -> dict:
    """result.json: the objective (mean over parts), epochs, time and each part."""
    values = [p["val_mse"] for p in parts.values()]
    losses = [p["val_loss"] for p in parts.values() if p["val_loss"] is not None]
    return {
        "key": key,
        "trial_id": spec["trial_id"],
        "settings": choice.model_dump(),
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
