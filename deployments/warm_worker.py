"""A Dask worker that does its first fit before the first night asks for one.

Start the nightly's workers with `--preload tickercast.deployments.warm_worker` (the
README's commands). As the worker starts, before it joins the scheduler, it sizes
TensorFlow's pools to its `--nthreads` and runs one small ticker through the nightly's
fit, evaluation and plots on a made-up history, in a temporary folder: TensorFlow is
imported, the nightly's network is built and traced into this process's pool
(`tickercast.modeling.pool`), and the evaluation's first predictions and plots are drawn.
A fresh worker otherwise pays all of that inside its first night's first tasks (~10-20 s
here, on each worker at once, while the others wait for the cores).

What it costs: the worker starts that much later, and holds TensorFlow and one pooled
network (~600 MB) while idle. It imports the project's code at its start: restart the
workers after updating the code (as for any long-lived worker). It writes nothing outside
its temporary folder, and changes no fit: a pooled network is reset, bit for bit, to a
fresh build before each fit (tests/test_pool.py). Nothing here runs under Prefect. The
local cluster serve.py keeps does not preload it: its workers restart after every night
and import the project's code at the night's first task, so a code update between nights
is what the next night runs.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

WARM_TICKER = "WARMUP"
"""The made-up ticker's name (in the worker's log only)."""

WARM_EPOCHS = 2
"""Epochs of the warm-up fit: the first traces the training and validation steps, the
second runs them as every later epoch does."""

WARM_YEARS = 10
"""Years of made-up daily history: about the nightly's tickers' length (the traced steps
depend on the batch size and window shape, not on the number of windows)."""


def dask_setup(worker: Any) -> None:
    """Dask's preload hook (`dask worker ... --preload tickercast.deployments.warm_worker`).
    A warm-up that fails is reported and the worker starts cold: it only saves time, and
    the night reports whatever is wrong with its settings itself."""
    from tickercast.modeling.threads import size_pools

    size_pools(int(worker.state.nthreads))  # before TensorFlow starts its pools
    try:
        from tickercast.config import RetrainConfig
        from tickercast.deployments.nightly import nightly_config

        seconds = warm_up(nightly_config(RetrainConfig))
    except Exception as exc:  # noqa: BLE001 - never keeps a worker from starting
        print(f"tickercast: worker warm-up failed, starting cold: {type(exc).__name__}: {exc}")
        return
    print(f"tickercast: worker warmed up in {seconds:.1f} s (the nightly's network traced)")


def made_up_history(years: int = WARM_YEARS, seed: int = 0):
    """Daily OHLCV rows as the lake holds them, from a seeded random walk."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    # ending at a fixed recent day: after any `start` the nightly's history begins at
    days = pd.bdate_range(end="2025-12-31", periods=years * 252)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.015, len(days))))
    open_ = close * np.exp(rng.normal(0, 0.005, len(days)))
    return pd.DataFrame(
        {
            "date": days.date,
            "open": open_,
            "high": np.maximum(open_, close) * 1.01,
            "low": np.minimum(open_, close) * 0.99,
            "close": close,
            "adj_close": close,
            "volume": rng.integers(1_000_000, 5_000_000, len(days)).astype("int64"),
        }
    )


def warm_up(config: Any) -> float:
    """The nightly's fit (`config.fit_spec()`, `WARM_EPOCHS` epochs), its evaluation and
    plots on `made_up_history`, in a temporary folder; the seconds it took."""
    from tickercast.evaluation.evaluate import evaluate
    from tickercast.evaluation.report import write_evaluation
    from tickercast.layout import HISTORY_FILE, MODEL_FILE
    from tickercast.modeling.models import split_heads
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model
    from tickercast.modeling.windows import split_anchors
    from tickercast.quiet import quiet_tensorflow

    started = time.perf_counter()
    quiet_tensorflow()
    import keras

    spec, arrays = preprocess(made_up_history(), config.preprocessing, WARM_TICKER)
    anchors = split_anchors(len(arrays["x"]), spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    nightly = config.fit_spec()
    training = nightly.training.model_copy(update={"epochs": WARM_EPOCHS})
    fit_spec = nightly.model_copy(update={"training": training})
    with tempfile.TemporaryDirectory(prefix="tickercast-warm-") as tmp:
        fitted = Path(tmp) / "fit"
        train_model(
            arrays,
            anchors,
            spec.lookback,
            fit_spec,
            fitted,
            label=WARM_TICKER,
            naive=naive_output(spec),
        )
        model = keras.models.load_model(fitted / MODEL_FILE, safe_mode=True, compile=False)
        point, _ = split_heads(model)
        ev = evaluate(point, spec, arrays, anchors, band=config.evaluation.band)
        history = json.loads((fitted / HISTORY_FILE).read_text())["history"]
        write_evaluation(Path(tmp) / "evaluate", ev, history, WARM_TICKER)
    return time.perf_counter() - started
