"""The windows step: anchor indices per split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from prefect import task
from prefect.logging import get_run_logger

from tickercast.tasks.caching import content_cache_key
from tickercast.tasks.workfiles import outputs, work_dir

# The library code this step runs (its imports' closure is hashed: tasks/caching.py).
WINDOWS_MODULES = ("tickercast.modeling.windows",)


@task(name="windows", cache_key_fn=content_cache_key("windows", WINDOWS_MODULES))
def windows_step(pre: dict, data_dir: str) -> dict:
    """Window anchors per split (indices only; the data is never copied per window)."""

    from tickercast.modeling.preprocess import Preprocessing
    from tickercast.modeling.windows import split_anchors

    params = {"pre": pre, "data_dir": data_dir}
    out = work_dir(data_dir, "windows", WINDOWS_MODULES, params)
    spec = Preprocessing.from_json(json.loads(Path(pre["spec"]).read_text()))
    n_rows = spec.n_train + spec.n_val + spec.n_test
    anchors = split_anchors(n_rows, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "anchors.npz"
    from tickercast.atomic import atomic_path

    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **anchors)
    counts = {k: int(len(v)) for k, v in anchors.items()}
    get_run_logger().info("%s windows: %s", pre["ticker"], counts)
    return {
        "ticker": pre["ticker"],
        "anchors": str(path),
        "counts": counts,
        "outputs": outputs(path),
    }
