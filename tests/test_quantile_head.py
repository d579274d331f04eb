"""The network's quantile head: never crossing, pinball-trained, conformalized (CQR), and
the same calibrated grid in evaluation, `predict` and the SavedModel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tickercast.choices import QUANTILES
from tickercast.modeling.models import (
    CALIBRATION,
    MEDIAN,
    QUANTILE_OUTPUT,
    build_model,
    pinball_loss,
    split_heads,
)
from tickercast.modeling.quantiles import (
    apply_calibration,
    apply_factors,
    band_coverage,
    band_levels,
    calibrate_model,
    cqr_factors,
    cqr_shifts,
    predict_quantile_prices,
    quantiles_to_prices,
    reset_calibration,
)


def _ordered(q: np.ndarray) -> bool:
    return bool((np.diff(np.asarray(q), axis=-1) >= 0).all())


@pytest.mark.parametrize("name", ["lstm", "stacked_lstm", "cnn_lstm", "lstm_attention"])
def test_quantiles_never_cross_on_any_input(name):
    """Random weights (and random calibration shifts, narrowing ones included) on
    ordinary, huge, tiny and constant inputs: every grid is non-decreasing, its median the
    point forecast."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(name, 6, 3, [5, 4], outputs=3, head="quantile", compile=False)
    rng = np.random.default_rng(0)
    inputs = np.concatenate(
        [
            rng.normal(size=(8, 6, 3)),
            rng.normal(size=(4, 6, 3)) * 1e6,
            np.full((2, 6, 3), -1e9),
            np.zeros((2, 6, 3)),
            rng.normal(size=(4, 6, 3)) * 1e-9,
        ]
    ).astype("float32")
    for weights in range(3):
        for layer in model.layers:
            if layer.trainable and layer.weights:
                layer.set_weights([rng.normal(0, 3, w.shape) for w in layer.get_weights()])
        shifts = rng.normal(0, 2.0, (3, MEDIAN))  # a negative shift narrows a band
        apply_calibration(model, shifts if weights else np.zeros((3, MEDIAN)))
        q = model.predict(inputs, verbose=0)
        assert q.shape == (len(inputs), 3, len(QUANTILES))
        assert np.isfinite(q).all() and _ordered(q)
        apply_factors(model, rng.uniform(0, 3, (3, MEDIAN)))  # unordered, shrinking ones too
        assert _ordered(model.predict(inputs, verbose=0))
        reset_calibration(model)
        point, head = split_heads(model)
        assert head is model
        np.testing.assert_array_equal(point.predict(inputs, verbose=0), q[:, :, MEDIAN])


def test_point_head_is_unchanged_and_has_no_quantiles():
    model = build_model("lstm", 4, 2, [3], compile=False)
    assert model.output.shape[-1] == 1
    assert split_heads(model) == (model, None)
    assert all(layer.name != QUANTILE_OUTPUT for layer in model.layers)


def test_pinball_loss_is_the_mean_over_the_grid():
    y = np.array([[0.3], [-1.0]], dtype="float32")
    q = np.random.default_rng(1).normal(size=(2, 1, len(QUANTILES))).astype("float32")
    tau = np.asarray(QUANTILES)
    e = y[:, :, None] - q
    expected = np.mean(np.maximum(tau * e, (tau - 1) * e))
    assert float(pinball_loss()(y, q)) == pytest.approx(expected, rel=1e-5)


def test_cqr_shifts_restore_coverage_and_fold_into_the_network():
    """Too narrow quantiles are widened until each band covers its level on the
    calibration windows (conformal rank), exactly as the network then answers."""
    import keras

    keras.utils.set_random_seed(2)
    model = build_model("lstm", 5, 2, [4], outputs=2, head="quantile", compile=False)
    x = np.random.default_rng(3).normal(size=(400, 5, 2)).astype("float32")
    before = model.predict(x, verbose=0)
    y = before[:, :, MEDIAN] + np.random.default_rng(4).standard_t(4, size=(400, 2))
    shifts, notes = cqr_shifts(before, y)
    assert not notes and (shifts > 0).all()
    apply_calibration(model, shifts)
    after = model.predict(x, verbose=0)
    assert _ordered(after)
    np.testing.assert_allclose(after[:, :, MEDIAN], before[:, :, MEDIAN])
    for r in range(1, len(band_levels()) + 1):  # shifts grow outward: no step clipped
        moved = after[:, :, MEDIAN + r] - before[:, :, MEDIAN + r]
        np.testing.assert_allclose(moved, np.broadcast_to(shifts[:, r - 1], moved.shape), atol=1e-5)
    for key, covered in band_coverage(after, y).items():
        assert covered >= int(key) / 100 - 1e-9, key
    assert model.get_layer(CALIBRATION).trainable is False


def test_too_few_windows_leave_a_band_uncalibrated_and_say_so():
    q = np.zeros((10, 1, len(QUANTILES)))
    shifts, notes = cqr_shifts(q, np.ones((10, 1)))
    assert shifts[0, -1] == 0 and any("95%" in n for n in notes)


def test_quantiles_in_prices_keep_their_order():
    from tickercast.modeling.preprocess import MinMax

    class Spec:
        target = "mean_close_log_return"
        target_scaler = MinMax([0.0], [0.2])

    scaled = np.sort(np.random.default_rng(5).normal(size=(4, 1, len(QUANTILES))), axis=-1)
    prices = quantiles_to_prices(Spec(), scaled, np.array([10.0, 20.0, 30.0, 40.0]))
    assert _ordered(prices)
    np.testing.assert_allclose(prices[1, 0, MEDIAN], 20.0 * np.exp(0.2 * scaled[1, 0, MEDIAN]))


# --------------------------------------------------------------------- GARCH(1,1) returns


def _garch(n: int, seed: int, omega=1e-5, alpha=0.15, beta=0.8):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n + 500)
    var, r, s = omega / (1 - alpha - beta), np.empty(n + 500), np.empty(n + 500)
    for t in range(n + 500):
        s[t] = np.sqrt(var)
        r[t] = s[t] * z[t]
        var = omega + alpha * r[t] ** 2 + beta * var
    return r[500:], s[500:]


def _grid_crps(y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """CRPS from the grid: twice the mean pinball loss over its levels, per window."""
    tau = np.asarray(QUANTILES)
    e = y[:, None] - q
    return 2 * np.mean(np.maximum(tau * e, (tau - 1) * e), axis=1)


def test_pinball_training_on_garch_returns_gets_the_true_conditional_crps(tmp_path):
    """A tiny LSTM trained on the pinball loss and conformalized on validation, fed the
    last 10 returns and |returns| of a simulated GARCH(1,1): on the test windows its
    grid CRPS is within 3% of the true conditional normal's on the same grid, it beats
    the unconditional band significantly (one-sided DM), and its 80%/95% bands cover."""
    from tickercast.modeling.shrink import NoChange
    from tickercast.modeling.train import train_model
    from tickercast.modeling.windows import split_anchors
    from tickercast.sections import FitSpec
    from tickercast.significance import dm_test_differential

    n, lookback = 3000, 10
    r, sigma = _garch(n, seed=7)
    scale = r.std()
    x = np.stack([r / scale, np.abs(r) / scale], axis=1).astype("float32")
    y = np.r_[r[1:], 0.0][:, None].astype("float32") / scale  # the next day's return
    anchors = split_anchors(n, int(n * 0.6), int(n * 0.2), lookback, 1)
    spec = FitSpec(
        model="lstm",
        units=[8],
        head="quantile",
        learning_rate=1e-2,
        epochs=30,
        batch_size=64,
        patience=5,
        seed=1,
    )
    naive = NoChange(np.zeros(1), 1)
    summary = train_model({"x": x, "y": y}, anchors, lookback, spec, tmp_path, naive=naive)
    assert summary["calibration"]["val_coverage_after"]["95"] >= 0.95
    import keras

    model = keras.models.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    test = anchors["test"]
    q = split_heads(model)[1].predict(x[test[:, None] + np.arange(1 - lookback, 1)], verbose=0)
    q, actual = q[:, 0, :], y[test, 0]
    true = stats.norm.ppf(QUANTILES)[None, :] * (sigma[test + 1] / scale)[:, None]
    unconditional = np.quantile(y[anchors["train"], 0], QUANTILES)[None, :]
    crps = {
        "network": _grid_crps(actual, q),
        "true": _grid_crps(actual, true),
        "unconditional": _grid_crps(actual, np.repeat(unconditional, len(test), 0)),
    }
    assert crps["network"].mean() <= 1.03 * crps["true"].mean()
    differential = crps["network"] - crps["unconditional"]
    assert dm_test_differential(differential, 1, "less").p_value < 0.05
    assert 0.75 <= np.mean((actual >= q[:, 2]) & (actual <= q[:, 6])) <= 0.88
    assert 0.92 <= np.mean((actual >= q[:, 0]) & (actual <= q[:, -1])) <= 0.99


# ------------------------------------------------------------- bundle, predict, SavedModel


@pytest.fixture(scope="module")
def quantile_bundle(tmp_path_factory):
    """A tiny quantile-head version of the MSFT sample on range features, trained,
    evaluated and exported the way the retrain steps do (export checks the SavedModel)."""
    import keras

    from tests.tiny_models import TICKER, _prepared, tiny_config
    from tickercast.delivery.metadata import bundle_metadata
    from tickercast.delivery.servable import build_bundle
    from tickercast.evaluation.evaluate import evaluate
    from tickercast.evaluation.report import evaluation_summary, write_evaluation
    from tickercast.market.ingest import ingest_ticker
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model

    data_dir = tmp_path_factory.mktemp("quantile") / "data"
    features = ["log_return", "abs_log_return", "parkinson", "garman_klass"]
    config = tiny_config(data_dir, preset="recommended", head="quantile", features=features)
    ingested = ingest_ticker(TICKER, "sample", data_dir)
    spec, arrays, anchors, pre = _prepared(data_dir, config)
    out = data_dir / "work" / "quantile"
    fit = config.fit_spec()
    summary = train_model(arrays, anchors, spec.lookback, fit, out, naive=naive_output(spec))
    model = keras.models.load_model(out / "model.keras", safe_mode=True, compile=False)
    point, head = split_heads(model)

    def grid(a):  # as the evaluate step: the head's grid is the distribution it ships
        return predict_quantile_prices(head, spec, arrays["x"], a, arrays["close"])

    ev = evaluate(point, spec, arrays, anchors, predict_quantiles=grid)
    paths = write_evaluation(out / "eval", ev, summary["history"], TICKER)
    evaluated = {**evaluation_summary(ev), **{k: str(v) for k, v in paths.items()}}
    trained = {"model": str(out / "model.keras"), "history": str(out / "history.json")}
    metadata = bundle_metadata(ingested, pre, trained, evaluated, config.recorded())
    files = {
        "model.keras": out / "model.keras",
        "preprocessing.json": pre["spec"],
        "history.json": out / "history.json",
    }
    bundle = build_bundle(data_dir, TICKER, files, metadata, out / "model.keras", spec)
    return data_dir, bundle


def test_savedmodel_quantiles_equal_predicts(quantile_bundle):
    """`predict`'s rows carry the calibrated grid in prices (ordered, median = forecast);
    the SavedModel's serving_default answers the same grid from a raw window;
    metadata.json and serving.json describe it."""
    import tensorflow as tf

    from tests.tiny_models import TICKER
    from tickercast.delivery.bundle import SAVED_MODEL, SIGNATURE, load_bundle
    from tickercast.delivery.predict import forecast_next
    from tickercast.delivery.servable import raw_window
    from tickercast.market import lake

    data_dir, path = quantile_bundle
    bundle = load_bundle(path)
    assert bundle.quantiles is not None
    prices = lake.read_partition(data_dir, TICKER)
    rows = forecast_next(bundle, prices, TICKER)
    grid = np.array([row["quantiles"] for row in rows])
    assert rows[0]["quantile_levels"] == list(QUANTILES)
    assert _ordered(grid)
    assert grid[0, MEDIAN] == pytest.approx(rows[0]["forecast"], rel=1e-9)
    serving = json.loads((path / "serving.json").read_text())
    assert serving["outputs"]["quantiles"]["shape"] == [None, 1, len(QUANTILES)]
    window = raw_window(prices, serving["fields"], serving["rows"])[None]
    served = tf.saved_model.load(str(path / SAVED_MODEL)).signatures[SIGNATURE](
        window=tf.constant(window)
    )
    np.testing.assert_allclose(np.asarray(served["quantiles"])[0], grid, rtol=1e-5)
    metadata = json.loads((path / "metadata.json").read_text())
    head = metadata["quantile_head"]
    assert head["quantile_levels"] == list(QUANTILES)
    assert set(head["calibration"]["val_coverage_after"]) == {"50", "80", "90", "95"}


def test_posted_window_gets_the_grid_too(quantile_bundle):
    from tests.tiny_models import TICKER
    from tickercast.delivery.bundle import load_bundle
    from tickercast.delivery.predict import forecast_window
    from tickercast.market import lake
    from tickercast.modeling.features import build_features

    data_dir, path = quantile_bundle
    bundle = load_bundle(path)
    prices = lake.read_partition(data_dir, TICKER)
    frame = build_features(prices, bundle.spec.features)
    raw = frame[bundle.spec.features].to_numpy()[-bundle.spec.lookback :]
    last = float(frame["_close"].iloc[-1])
    rows = forecast_window(bundle, raw.tolist(), TICKER, last_close=last)
    assert _ordered(np.array(rows[0]["quantiles"]))
    assert rows[0]["quantiles"][MEDIAN] == pytest.approx(rows[0]["forecast"], rel=1e-9)


@pytest.mark.parametrize("embedding", [0, 2])
def test_global_mode_calibrates_each_tickers_own_model(tmp_path, embedding):
    """One quantile network over three tickers: each ticker gets its own file, shrunk and
    conformalized on its own validation windows (metadata reads its calibration)."""
    import keras

    from tests.test_global import CFG, three_tickers
    from tickercast.delivery.metadata import quantile_head
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import GlobalData, train_global
    from tickercast.modeling.windows import gather_windows
    from tickercast.sections import FitSpec

    data = three_tickers()
    tickers = ["AAA", "BBB", "CCC"]
    source = GlobalData(
        tickers,
        [len(a["x"]) for _, a, _ in data],
        lambda i: (data[i][1]["x"], data[i][1]["y"], data[i][2]),
        [naive_output(s) for s, _, _ in data],
    )
    spec = FitSpec(**{**CFG, "head": "quantile"})
    summary = train_global(source, 8, spec, embedding, tmp_path)
    assert len(set(summary["models"].values())) == 3
    for i, ticker in enumerate(tickers):
        calibration = summary["calibration"][ticker]
        assert calibration["windows"] == len(data[i][2]["val"])
        assert quantile_head(summary, ticker)["calibration"] == calibration
        own = keras.models.load_model(summary["models"][ticker], safe_mode=True, compile=False)
        windows = gather_windows(data[i][1]["x"], data[i][2]["test"], 8)
        assert _ordered(split_heads(own)[1].predict(windows, verbose=0))


QUANTILE_RUN = """
import os, sys, json
sys.path.insert(0, {root!r})
import keras
from pathlib import Path
from tests.test_train import sine_data, tiny_fit
from tickercast.modeling.train import train_model

class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == {kill_after}:
            os._exit(3)

spec, arrays, anchors = sine_data()
kill = [Kill()] if {kill_after} else []
out = train_model(arrays, anchors, 10, tiny_fit(head="quantile", epochs=3), Path({out!r}),
                  callbacks=kill)
print(json.dumps({{"resumed": out["resumed_from_epoch"], "epochs": out["epochs_run"]}}))
"""


@pytest.mark.slow  # two fresh TensorFlow processes: ~20-35 s
def test_a_killed_quantile_run_resumes_in_a_fresh_process(tmp_path):
    """The checkpoint's compiled pinball loss reloads (safe mode) in a process that never
    built a quantile head, and training goes on after the last finished epoch."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    def run(kill_after: int) -> subprocess.CompletedProcess:
        code = QUANTILE_RUN.format(root=str(ROOT), kill_after=kill_after, out=str(tmp_path))
        return subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            cwd=ROOT,
        )

    assert run(1).returncode == 3
    resumed = run(0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == {"resumed": 1, "epochs": 3}


def test_relative_cqr_scales_each_band_and_restores_coverage():
    """Relative CQR multiplies both half-widths of each band by its factor, folded into the
    network, and each band then covers its level on the calibration windows."""
    import keras

    keras.utils.set_random_seed(6)
    model = build_model("lstm", 5, 2, [4], outputs=2, head="quantile", compile=False)
    x = np.random.default_rng(7).normal(size=(400, 5, 2)).astype("float32")
    before = model.predict(x, verbose=0)
    y = before[:, :, MEDIAN] + np.random.default_rng(8).standard_t(4, size=(400, 2))

    result = calibrate_model(model, lambda: model.predict(x, verbose=0), y, form="relative")
    assert result["form"] == "relative" and np.asarray(result["factors"]).shape == (2, MEDIAN)
    after = model.predict(x, verbose=0)
    assert _ordered(after)
    np.testing.assert_allclose(after[:, :, MEDIAN], before[:, :, MEDIAN])
    for key, covered in band_coverage(after, y).items():
        assert covered >= int(key) / 100 - 1e-9, key

    factors = np.array([[1.5, 2.0, 2.5, 3.0], [0.5, 0.8, 1.2, 1.3]])  # growing outward
    apply_factors(model, factors)
    after = model.predict(x, verbose=0)
    m = before[:, :, MEDIAN]
    for r in range(1, MEDIAN + 1):
        for side in (-1, 1):
            want = m + (before[:, :, MEDIAN + side * r] - m) * factors[:, r - 1]
            np.testing.assert_allclose(after[:, :, MEDIAN + side * r], want, rtol=1e-4, atol=1e-5)
    assert cqr_factors(before[:5], y[:5])[1]  # too few windows: said, factor 1


@pytest.mark.slow  # a Prefect retrain run with a walk-forward: ~70 s
def test_retrain_flow_with_a_quantile_head(prefect_server, tmp_path):
    """The retrain flow end to end: the evaluate step judges the head's own grid (form
    "network"), export writes and checks the SavedModel's `quantiles`, metadata records
    the calibration."""
    from tickercast.config import RetrainConfig
    from tickercast.flows.retrain import retrain

    config = RetrainConfig(
        tickers=["MSFT"],
        start="2019-01-01",
        lookback=15,
        epochs=2,
        units=[8, 4],
        batch_size=64,
        head="quantile",
        features=["log_return", "volatility", "parkinson", "garman_klass"],
        walk_forward_folds=2,
        walk_forward_epochs=1,
        data_dir=str(tmp_path),
    )
    state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    bundle = Path(state.result()["MSFT"]["bundle"])
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["quantile_head"]["calibration"]["form"] == "relative"
    assert meta["evaluation"]["distribution"]["model"]["form"] == "network"
    assert "quantiles" in json.loads((bundle / "serving.json").read_text())["outputs"]
    for fold in meta["walk_forward"]["folds"]:  # each fold's own head judged on its grid
        assert fold["distribution"]["model"]["form"] == "network"
