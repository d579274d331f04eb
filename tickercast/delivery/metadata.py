"""What a bundle records about how it was made: enough to reproduce and to audit it."""

from __future__ import annotations

import datetime as dt
import json
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path

LIBRARIES = (
    "tickercast",
    "tensorflow",
    "keras",
    "prefect",
    "numpy",
    "pandas",
    "pyarrow",
    "yfinance",
)


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description() -> dict[str, str]:
    """What TensorFlow sees here (the device training used is in `training.device`)."""
    from tickercast.modeling.device import describe_visible

    return describe_visible()


def _training_range(pre: dict, spec: dict) -> dict | None:
    """`plausibility.training_range` of the training rows' closes (None without them)."""
    import numpy as np

    from tickercast.delivery.plausibility import training_range

    arrays = pre.get("arrays")
    if not arrays or not Path(arrays).is_file():
        return None
    with np.load(arrays) as data:
        if "close" not in data:
            return None
        close = np.asarray(data["close"], dtype=np.float64)[: spec["n_train"]]
    return training_range(close, spec["train_end"]) if len(close) > 2 else None


def bundle_metadata(
    ingested: dict,
    pre: dict,
    trained: dict,
    evaluated: dict,
    config: dict,
    backtest: dict | None = None,
    serving: dict | None = None,
) -> dict:
    """Everything `models show`, the promotion gate and `predict` read about a version."""
    spec = json.loads(Path(pre["spec"]).read_text())
    history = json.loads(Path(trained["history"]).read_text())
    return {
        "ticker": ingested["ticker"],
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": config,
        "data": {
            "source": ingested["source"],
            "lake_file": ingested["path"],
            "sha256": ingested["sha256"],
            "rows": spec["n_train"] + spec["n_val"] + spec["n_test"],
            "first_day": spec["first_day"],
            "last_day": spec["last_day"],
            "train_end": spec["train_end"],
            "val_end": spec["val_end"],
            "dropped_null_rows": ingested["dropped_null_rows"],
        },
        "training": {
            k: v for k, v in history.items() if k not in ("history", "shrinkage", "calibration")
        },
        # the factor toward the last close folded into the exported network (all paths)
        "shrinkage": trained.get("shrinkage"),
        # a quantile head's grid and its CQR calibration on the validation split (None:
        # a point head); its quantiles in prices are in predict's rows and the SavedModel
        "quantile_head": quantile_head(history, ingested["ticker"]),
        "metrics": evaluated["metrics"],
        "verdict": evaluated["verdict"],
        # test window, MASE scale, ridge alpha, share of up moves (directional reference)
        "evaluation": evaluated.get("evaluation", {}),
        # split-conformal: per level the nominal coverage, q per output, test coverage
        "intervals": evaluated.get("intervals", {}),
        "walk_forward": (
            {k: backtest[k] for k in ("n_folds", "epochs_per_fold", "summary", "folds")}
            if backtest
            else None
        ),
        "serving": serving,
        # the training closes' range and daily volatility: what served forecasts are
        # checked against (tickercast.delivery.plausibility)
        "plausibility": _training_range(pre, spec),
        "device": device_description(),
        "versions": library_versions(),
    }


def quantile_head(history: dict, ticker: str) -> dict | None:
    """What metadata records of a quantile head: the grid (`quantile_levels`) and the
    ticker's calibration (global mode keeps one per ticker); None for a point head."""
    calibration = history.get("calibration")
    if history.get("mode") == "global" and isinstance(calibration, dict):
        calibration = calibration.get(ticker)
    if not calibration:
        return None
    from tickercast.choices import QUANTILES

    return {"quantile_levels": list(QUANTILES), "calibration": calibration}
