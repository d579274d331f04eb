"""Real bundles, built once per test session with tiny settings, for the registry, predict
and serve tests. Built through the same functions the retrain flow's steps call
(preprocess, train_model, evaluate, bundle_metadata, build_bundle), without Prefect.

`store()` holds the MSFT sample from 2019 in a lake and three versions of model MSFT:
  v1  a tiny trained LSTM (units [8, 4], 2 epochs)
  v2  a deliberately bad linear model: half of the last scaled close (far worse than naive)
  v3  ridge regression on the window, written as Flatten -> Dense (beats naive on this
      test window: closed form, so deterministic)
Tests copy it (`copy_store`) before changing anything; `assert_consistent` checks the
registry they leave.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

TICKER = "MSFT"


def tiny_config(data_dir: Path | str = "data", **overrides):
    from tickercast.config import RetrainConfig

    fields = dict(
        preset="tutorial",  # the linear versions below read the close feature
        tickers=[TICKER],
        start="2019-01-01",
        lookback=20,
        units=[8, 4],
        epochs=2,
        batch_size=64,
        data_dir=str(data_dir),
    )
    return RetrainConfig(**{**fields, **overrides})


def _prepared(data_dir: Path, config):
    from tickercast.market import lake
    from tickercast.modeling.preprocess import preprocess, save_preprocessed
    from tickercast.modeling.windows import anchors_for

    prices = lake.read_partition(data_dir, TICKER)
    spec, arrays = preprocess(prices, config.preprocessing, who=TICKER)
    npz, spec_path = save_preprocessed(data_dir / "work" / "tiny-pre", spec, arrays)
    return spec, arrays, anchors_for(spec), {"spec": str(spec_path), "arrays": str(npz)}


def export_model(data_dir: Path, ingested: dict, config, model_path: Path, history_path: Path):
    """Evaluate a saved Keras model and write it as the next bundle version."""
    import keras

    from tickercast.delivery.metadata import bundle_metadata
    from tickercast.delivery.servable import build_bundle
    from tickercast.evaluation.evaluate import evaluate
    from tickercast.evaluation.report import evaluation_summary, write_evaluation

    spec, arrays, anchors, pre = _prepared(data_dir, config)
    model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    ev = evaluate(model, spec, arrays, anchors, band=config.evaluation.band)
    history = json.loads(history_path.read_text())
    paths = write_evaluation(model_path.parent / "eval", ev, history["history"], TICKER)
    evaluated = {**evaluation_summary(ev), **{k: str(v) for k, v in paths.items()}}
    trained = {"model": str(model_path), "history": str(history_path)}
    metadata = bundle_metadata(ingested, pre, trained, evaluated, config.recorded())
    files = {
        "model.keras": model_path,
        "preprocessing.json": Path(pre["spec"]),
        "history.json": history_path,
        "predictions.parquet": paths["predictions"],
        "loss.png": paths["loss_png"],
        "forecast.png": paths["forecast_png"],
        "residuals.png": paths["residuals_png"],
    }
    return build_bundle(data_dir, TICKER, files, metadata, model_path, spec)


def train_version(data_dir: Path, ingested: dict, config, label: str) -> Path:
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model

    spec, arrays, anchors, _ = _prepared(data_dir, config)
    out = data_dir / "work" / label
    # shrinks as the train step does when the config says so
    train_model(arrays, anchors, spec.lookback, config.fit_spec(), out, naive=naive_output(spec))
    return export_model(data_dir, ingested, config, out / "model.keras", out / "history.json")


def linear_version(data_dir: Path, ingested: dict, config, label: str, kind: str) -> Path:
    """A Flatten -> Dense model with chosen weights: 'bad' or 'ridge' (see module doc)."""
    import keras

    from tickercast.atomic import write_json
    from tickercast.evaluation.baselines import fit_ridge
    from tickercast.evaluation.evaluate import scaled_to_prices

    spec, arrays, anchors, _ = _prepared(data_dir, config)
    n_features = len(spec.features)
    d = spec.lookback * n_features
    inputs = keras.Input(shape=(spec.lookback, n_features), name="window")
    out = keras.layers.Dense(1, name="forecast")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, out, name=f"linear_{kind}")
    kernel, bias = np.zeros((d, 1)), np.zeros(1)
    if kind == "bad":
        kernel[(spec.lookback - 1) * n_features + spec.features.index("close"), 0] = 0.5
    else:
        ridge, _ = fit_ridge(
            arrays,
            anchors,
            spec.lookback,
            lambda s, a: scaled_to_prices(spec, s, arrays["close"][a]),
        )
        kernel = ridge.coef
        bias = np.asarray(ridge.y_mean - ridge.x_mean @ ridge.coef).reshape(1)
    model.get_layer("forecast").set_weights([kernel.astype("float32"), bias.astype("float32")])
    folder = data_dir / "work" / label
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    write_json(folder / "history.json", {"history": {"loss": [1.0]}, "epochs_run": 0})
    return export_model(data_dir, ingested, config, folder / "model.keras", folder / "history.json")


@functools.cache
def store() -> Path:
    """Build the shared data dir once per session (see module doc)."""
    from tickercast.market.ingest import ingest_ticker

    root = Path(tempfile.mkdtemp(prefix="tickercast-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    data_dir = root / "data"
    config = tiny_config(data_dir)
    ingested = ingest_ticker(TICKER, "sample", data_dir)
    assert train_version(data_dir, ingested, config, "lstm").name == "1"
    assert linear_version(data_dir, ingested, config, "bad", "bad").name == "2"
    assert linear_version(data_dir, ingested, config, "ridge", "ridge").name == "3"
    return data_dir


def copy_store(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(store(), target)
    return target


def assert_consistent(registry: dict) -> None:
    """Every event starts from the champion the previous one left, the lineage replays from
    the events, and the champion is the lineage's last version (None before any)."""
    before, lineage = None, []
    for event in registry["history"]:
        assert event["champion_before"] == before, registry["history"]
        if event["action"] in ("promote", "manual_promote"):
            lineage.append(event["version"])
        elif event["action"] == "rollback":
            while lineage[-1] != event["version"]:
                lineage.pop()
        before = event["champion_after"]
    assert registry["champion"] == before
    assert registry["lineage"] == lineage
    assert registry["champion"] == (lineage[-1] if lineage else None)
