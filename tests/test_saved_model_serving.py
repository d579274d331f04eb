"""The bundle's SavedModel serves itself: raw prices in, forecasts in prices with bands out.

A TF Serving user's view: a process that imports only TensorFlow and NumPy loads
`saved_model/` with `tf.saved_model.load`, feeds `serving_default` the raw window that
serving.json describes (lake prices and volumes, oldest first) and must get what
`tickercast predict` answers for the same days, to 1e-5 relative: forecast and 80%/95%
bands, for both presets and for a model that reads every feature.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.tiny_models import TICKER, export_model, store, tiny_config, train_version
from tickercast.choices import FEATURES
from tickercast.delivery.bundle import BundleError, load_bundle
from tickercast.delivery.predict import forecast_next
from tickercast.market import lake

RTOL = 1e-5
# Windows ending this many lake rows before the last day (0: what `tickercast predict` answers).
ENDS = (0, 1, 37)

# What a TF Serving client runs: TensorFlow and NumPy, nothing of this project.
CLIENT = r"""
import json, sys
import numpy as np
import tensorflow as tf

answers = []
for job in json.load(open(sys.argv[1])):
    signature = tf.saved_model.load(job["path"]).signatures["serving_default"]
    out = signature(window=tf.constant(np.asarray(job["window"], dtype=np.float64)))
    answers.append({k: v.numpy().tolist() for k, v in out.items()})
ours = sorted(m for m in sys.modules if m == "tickercast" or m.startswith("tickercast."))
print(json.dumps({"project_modules": ours, "answers": answers}))
"""


def client_window(prices: pd.DataFrame, serving: dict) -> list[list[float]]:
    """serving.json's window from lake rows, built as its text says (not with our code)."""
    rows = prices.tail(serving["rows"])
    columns = []
    for field in serving["fields"]:
        if field == "epoch_day":
            days = pd.to_datetime(rows["date"]) - pd.Timestamp("1970-01-01")
            columns.append(days.dt.days.to_numpy(dtype=float))
        else:
            columns.append(rows[field].to_numpy(dtype=float))
    return np.stack(columns, axis=1).tolist()


def every_feature_version(data_dir: Path, ingested: dict) -> Path:
    """A linear network with fixed random weights over every feature, forecasting the next
    closes as log returns (a vector target): each feature moves the forecast."""
    import keras

    from tickercast.atomic import write_json

    config = tiny_config(
        data_dir,
        features=list(FEATURES),
        target="closes_log_return",
        shrink=False,
        band="gjr_garch_t",  # the shipped band on a vector target: one variance per step
    )
    lookback, width = config.preprocessing.lookback, config.preprocessing.horizon
    inputs = keras.Input(shape=(lookback, len(FEATURES)), name="window")
    out = keras.layers.Dense(width, name="forecast")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(7)
    kernel = rng.normal(0.0, 0.05, (lookback * len(FEATURES), width)).astype("float32")
    model.get_layer("forecast").set_weights([kernel, np.zeros(width, dtype="float32")])
    folder = data_dir / "work" / "every-feature"
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    write_json(folder / "history.json", {"history": {"loss": [1.0]}, "epochs_run": 0})
    return export_model(data_dir, ingested, config, folder / "model.keras", folder / "history.json")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """tutorial: the shared tiny LSTM; recommended: a tiny LSTM of the default preset
    (log-return and volatility features, log-return target, shrinkage); every_feature."""
    from tickercast.market.ingest import ingest_ticker

    data_dir = tmp_path_factory.mktemp("serving") / "data"
    ingested = ingest_ticker(TICKER, "sample", data_dir)
    recommended = train_version(
        data_dir, ingested, tiny_config(data_dir, preset="recommended"), "recommended"
    )
    return {
        "tutorial": store() / f"models/{TICKER}/versions/1",
        "recommended": recommended,
        "every_feature": every_feature_version(data_dir, ingested),
    }


@pytest.fixture(scope="module")
def served(bundles, tmp_path_factory) -> dict[str, dict]:
    """Per bundle: the windows sent, the client's answers and predict's rows for them."""
    jobs, cases = [], {}
    for name, path in bundles.items():
        serving = json.loads((path / "serving.json").read_text())
        prices = lake.read_partition(path.parents[3], TICKER)
        cuts = [prices.iloc[: len(prices) - end] for end in ENDS]
        bundle = load_bundle(path)
        cases[name] = {
            "serving": serving,
            "bundle": bundle,
            "expected": [forecast_next(bundle, cut, TICKER) for cut in cuts],
        }
        window = [client_window(cut, serving) for cut in cuts]
        jobs.append({"path": str(path / serving["path"]), "window": window})
    folder = tmp_path_factory.mktemp("client")
    (folder / "client.py").write_text(CLIENT)
    (folder / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run(
        [sys.executable, "client.py", "jobs.json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    assert reply["project_modules"] == []
    for name, answer in zip(cases, reply["answers"], strict=True):
        cases[name]["answer"] = answer
    return cases


@pytest.mark.parametrize("name", ["tutorial", "recommended", "every_feature"])
def test_plain_tensorflow_gets_what_tickercast_predict_answers(served, bundles, name):
    case = served[name]
    serving, answer, bundle = case["serving"], case["answer"], case["bundle"]
    assert serving["inputs"]["window"] == {
        "dtype": "float64",
        "shape": [None, serving["rows"], len(serving["fields"])],
    }
    bands = {"forecast", "lower_80", "upper_80", "lower_95", "upper_95"}
    # the recommended preset (and every_feature) ship the GJR-GARCH(1,1)-t band: its whole
    # grid is served too
    shipped = name != "tutorial"
    assert set(answer) == bands | ({"quantiles"} if shipped else set())
    width = 5 if name == "every_feature" else 1
    for i, rows in enumerate(case["expected"]):
        assert len(rows) == width
        for j, row in enumerate(rows):
            got = {key: answer[key][i][j] for key in answer}
            assert got["forecast"] == pytest.approx(row["forecast"], rel=RTOL)
            for key in ("80", "95"):
                assert got[f"lower_{key}"] == pytest.approx(row[f"lo_{key}"], rel=RTOL)
                assert got[f"upper_{key}"] == pytest.approx(row[f"hi_{key}"], rel=RTOL)
            assert got["lower_95"] < got["lower_80"] < got["forecast"] < got["upper_80"]
            if shipped:
                assert got["quantiles"] == pytest.approx(row["quantiles"], rel=RTOL)
                assert got["quantiles"][2] == got["lower_80"] and np.all(
                    np.diff(got["quantiles"]) >= 0
                )
    if name == "tutorial":
        assert serving["fields"] == ["close", "volume"] and serving["rows"] == 21
        assert (
            bundle.metadata["evaluation"]["distribution"]["model"]["form"] == "volatility_conformal"
        )
    elif name == "recommended":
        assert bundle.spec.features == ["log_return", "volatility"]
        assert bundle.spec.target == "mean_close_log_return"
        history = json.loads((bundles["recommended"] / "history.json").read_text())
        assert history["shrinkage"]["alpha"] is not None  # fitted, folded into the network
        # the band's recursion reads lookback + 20 returns: one close more than the features
        assert serving["fields"] == ["close"] and serving["rows"] == 20 + 21
    else:
        assert serving["fields"] == ["open", "high", "low", "close", "volume", "epoch_day"]
        assert serving["rows"] == 20 + 21
        # the network moves the forecast away from the last close (not a no-change model)
        last = case["expected"][0][0]["last_close"]
        assert np.abs(np.array(answer["forecast"][0]) / last - 1).min() > 1e-4


@pytest.mark.slow
def test_the_cli_forecast_equals_the_savedmodel_answer(prefect_server, served, bundles):
    """`tickercast predict` itself, on the recommended bundle as champion."""
    from tickercast import layout
    from tickercast.app.cli import main
    from tickercast.delivery.registry import promote

    data_dir = bundles["recommended"].parents[3]
    promote(data_dir, TICKER, int(bundles["recommended"].name))
    assert main(["predict", "--tickers", TICKER, "--data-dir", str(data_dir)]) == 0
    (written,) = sorted(layout.forecasts_dir(data_dir).glob("*.parquet"))
    row = pd.read_parquet(written).iloc[0]
    answer = served["recommended"]["answer"]
    assert row["forecast"] == pytest.approx(answer["forecast"][0][0], rel=RTOL)
    assert row["lo_80"] == pytest.approx(answer["lower_80"][0][0], rel=RTOL)
    assert row["hi_95"] == pytest.approx(answer["upper_95"][0][0], rel=RTOL)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda w: w.__setitem__((0, -1, 0), 0.0), "field close must be > 0"),
        (lambda w: w.__setitem__((0, 3, 0), -5.0), "field close must be > 0"),
        (lambda w: w.__setitem__((0, 5, 1), -1.0), "field volume must be >= 0"),
        (lambda w: w.__setitem__((0, 2, 1), np.nan), "NaN or infinite"),
        (lambda w: w.__setitem__((0, 2, 0), np.inf), "NaN or infinite"),
    ],
)
def test_a_window_it_cannot_answer_is_refused_never_nan(served, bundles, change, message):
    import tensorflow as tf

    serving = served["tutorial"]["serving"]
    signature = tf.saved_model.load(str(bundles["tutorial"] / "saved_model")).signatures[
        "serving_default"
    ]
    prices = lake.read_partition(bundles["tutorial"].parents[3], TICKER)
    window = np.array([client_window(prices, serving)])
    change(window)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        signature(window=tf.constant(window))


def test_every_feature_is_computed_in_the_graph_with_its_warm_up():
    """Each feature the configs may select has an in-graph builder whose warm-up (rows
    needed before its first value) is the number of rows build_features drops."""
    from tickercast.delivery.servable import GRAPH_FEATURES
    from tickercast.modeling.features import build_features

    assert set(GRAPH_FEATURES) == set(FEATURES)
    prices = lake.read_partition(store(), TICKER).tail(60)
    for name in FEATURES:
        dropped = len(prices) - len(build_features(prices, [name]))
        assert GRAPH_FEATURES[name][0] == dropped, name


def test_export_refuses_an_unsupported_choice_naming_it(bundles, monkeypatch, tmp_path):
    from tickercast.delivery import servable

    bundle = load_bundle(bundles["recommended"])
    monkeypatch.delitem(servable.GRAPH_FEATURES, "volatility")
    with pytest.raises(BundleError, match=r"cannot compute feature\(s\) \['volatility'\]"):
        servable.export_saved_model(bundle.model, bundle.spec, bundle.metadata, tmp_path / "sm")
    assert not (tmp_path / "sm").exists()


def test_export_refuses_a_savedmodel_that_disagrees_with_predict(bundles, monkeypatch, tmp_path):
    """A graph whose `return` feature looked back two days instead of one would forecast
    differently from `tickercast predict`: export checks it on probe windows and refuses.
    (A log return instead of the simple one differs by r^2 / 2, about 5e-5 on the probes'
    1% moves: below the check's 1e-5 relative on some probe draws, so not this test.)"""
    import tensorflow as tf

    from tickercast.delivery import servable

    bundle = load_bundle(bundles["every_feature"])
    warmup, _ = servable.GRAPH_FEATURES["return"]

    def two_day_return(c):
        close = c["close"]
        return tf.concat([close[:, :1] * 0.0, close[:, 2:] / close[:, :-2] - 1.0], axis=1)

    monkeypatch.setitem(servable.GRAPH_FEATURES, "return", (warmup, two_day_return))
    with pytest.raises(BundleError, match="'forecast' differs from tickercast predict"):
        servable.export_saved_model(bundle.model, bundle.spec, bundle.metadata, tmp_path / "sm")


def test_export_refuses_a_band_that_disagrees_with_predict(bundles, monkeypatch, tmp_path):
    """A graph whose GJR recursion dropped the asymmetric term (gamma) would serve another
    band than `tickercast predict`'s: export refuses, naming the quantiles."""
    from tickercast.delivery import servable

    bundle = load_bundle(bundles["every_feature"])
    band = bundle.metadata["evaluation"]["distribution"]["model"]["calibration"]["params"]
    assert band["band"] == "gjr_garch_t" and band["gamma"] > 0
    real = servable._band_variance
    monkeypatch.setattr(servable, "_band_variance", lambda p, r, h: real({**p, "gamma": 0.0}, r, h))
    with pytest.raises(BundleError, match="'quantiles' differs from tickercast predict"):
        servable.export_saved_model(bundle.model, bundle.spec, bundle.metadata, tmp_path / "sm")


def test_export_refuses_a_model_whose_forecast_is_not_finite(bundles, tmp_path):
    """A network that overflows gives no NaN or inf to serve: export says so and stops."""
    from tickercast.delivery import servable

    bundle = load_bundle(bundles["every_feature"])
    layer = bundle.model.get_layer("forecast")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.full_like(kernel, 1e30), bias])
    with pytest.raises(
        BundleError, match="(?s)refused a probe window.*forecast is not a finite number"
    ):
        servable.export_saved_model(bundle.model, bundle.spec, bundle.metadata, tmp_path / "sm")


# ------------------------------------------------------- strict inputs (issue 25)


@pytest.fixture(scope="module")
def tutorial_signature():
    """The shared tiny LSTM's serving_default, its serving.json and a good lake window."""
    import tensorflow as tf

    path = store() / f"models/{TICKER}/versions/1"
    serving = json.loads((path / "serving.json").read_text())
    signature = tf.saved_model.load(str(path / "saved_model")).signatures["serving_default"]
    window = np.array([client_window(lake.read_partition(store(), TICKER), serving)])
    return signature, serving, window


@pytest.mark.parametrize(
    "shape_of",
    [
        lambda w: np.concatenate([w, w[:, -1:]], axis=1),  # an extra row (was dropped)
        lambda w: w[:, 1:],  # a short window (was an unclear shape error)
        lambda w: w[:, :, ::-1],  # [volume, close] is the declared width: allowed shape
        lambda w: np.concatenate([w, w[:, :, :1]], axis=2),  # an extra field (was ignored)
    ],
)
def test_a_window_of_another_shape_is_refused_naming_the_declared_one(tutorial_signature, shape_of):
    import tensorflow as tf

    signature, serving, window = tutorial_signature
    changed = shape_of(window)
    if changed.shape == window.shape:  # swapped fields: the absurd volume-as-close
        with pytest.raises(tf.errors.InvalidArgumentError, match="absurd price|implausibly"):
            signature(window=tf.constant(changed))
        return
    rows, width = serving["rows"], len(serving["fields"])
    # the signature's own input check (TF's wording), then the graph's (ours), which holds
    # wherever the signature wrapper does not run (a TF Serving session feeding the graph)
    expected = rf"expected shape \[\?,{rows},{width}\]|shape \[batch, {rows}, {width}\]"
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=expected):
        signature(window=tf.constant(changed))
    from tickercast.delivery.servable import Servable

    bundle = load_bundle(store() / f"models/{TICKER}/versions/1")
    servable = Servable(bundle.model, bundle.spec, bundle.metadata["intervals"])
    ours = rf"window must have shape \[batch, {rows}, {width}\]: {rows} days"
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=ours):
        tf.function(servable.serve)(tf.constant(changed))


@pytest.mark.parametrize("close", [1e308, 1e300, 1e12])
def test_an_absurd_close_is_refused_not_turned_into_infinite_bands(tutorial_signature, close):
    import tensorflow as tf

    signature, _, window = tutorial_signature
    changed = window.copy()
    changed[0, -1, 0] = close
    with pytest.raises(tf.errors.InvalidArgumentError, match="absurd price"):
        signature(window=tf.constant(changed))


def test_savedmodel_bands_stay_prices_and_far_forecasts_are_refused(tutorial_signature):
    import tensorflow as tf

    signature, _, window = tutorial_signature
    out = {k: v.numpy() for k, v in signature(window=tf.constant(window)).items()}
    assert 0 < out["lower_95"][0, 0] < out["lower_80"][0, 0] < out["forecast"][0, 0]
    # flat closes far below anything the model saw: its forecast is not near the last close
    flat = window.copy()
    flat[0, :, 0] = 1.0
    with pytest.raises(tf.errors.InvalidArgumentError, match="implausibly far|positive price"):
        signature(window=tf.constant(flat))


def test_a_bad_print_in_the_window_is_refused_in_the_graph(tutorial_signature):
    import tensorflow as tf

    signature, _, window = tutorial_signature
    changed = window.copy()
    changed[0, -1, 0] *= 1000  # within MAX_PRICE: only the jump gives it away
    with pytest.raises(tf.errors.InvalidArgumentError, match="implausible jump in the closes"):
        signature(window=tf.constant(changed))
