"""Global mode: one model over several tickers, each scaled on its own, evaluated per ticker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.test_preprocess import prices
from tickercast.config import RetrainConfig
from tickercast.modeling.preprocess import preprocess
from tickercast.modeling.train import GlobalData, train_global
from tickercast.modeling.windows import gather_windows, split_anchors
from tickercast.sections import FitSpec, PreprocessSettings

PRE = {
    "start": None,
    "end": None,
    "features": ["close", "log_return"],
    "lookback": 8,
    "horizon": 2,
    "target": "close_log_return",
    "val_fraction": 0.15,
    "test_fraction": 0.15,
}
CFG = {
    "model": "lstm",
    "units": [6],
    "learning_rate": 1e-2,
    "clipvalue": 1.0,
    "epochs": 2,
    "batch_size": 32,
    "patience": 5,
    "seed": 5,
}


def three_tickers():
    out = []
    for seed, (n, level) in enumerate([(200, 1.0), (260, 30.0), (230, 900.0)]):
        frame = prices(n, seed)
        for col in ("open", "high", "low", "close", "adj_close"):
            frame[col] = frame[col] * level  # very different price levels
        spec, arrays = preprocess(frame, PreprocessSettings(**PRE), f"T{seed}")
        n_rows = len(arrays["x"])
        anchors = split_anchors(n_rows, spec.n_train, spec.n_val, 8, 2)
        out.append((spec, arrays, anchors))
    return out


def test_one_model_over_three_tickers_with_an_embedding(tmp_path):
    import keras

    data = three_tickers()
    tickers = ["AAA", "BBB", "CCC"]
    summary = train_global(
        GlobalData(
            tickers,
            [len(a["x"]) for _, a, _ in data],
            lambda i: (data[i][1]["x"], data[i][1]["y"], data[i][2]),
        ),
        8,
        FitSpec(**CFG),
        3,
        tmp_path,
    )
    assert summary["train_windows"] == sum(len(a["train"]) for *_, a in data)
    assert summary["epochs_run"] == 2 and summary["mode"] == "global"
    paths = [summary["models"][t] for t in tickers]
    assert len(set(paths)) == 3 and all(Path(p).is_file() for p in paths)
    glob = keras.models.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert [i.name for i in glob.inputs] == ["window", "ticker"]
    for i, (_, arrays, anchors) in enumerate(data):
        windows = gather_windows(arrays["x"], anchors["test"], 8)
        ids = np.full(len(windows), i, dtype="int32")
        bound = keras.models.load_model(paths[i], safe_mode=True, compile=False)
        np.testing.assert_allclose(
            bound.predict(windows, verbose=0),
            glob.predict({"window": windows, "ticker": ids}, verbose=0),
            rtol=1e-5,
            atol=1e-6,
        )


def test_global_mode_end_to_end_on_three_tickers(prefect_server, tmp_path):
    from tests.test_flow import task_states
    from tickercast.flows.retrain import retrain

    config = RetrainConfig(
        tickers=["AAPL", "MSFT", "NVDA"],
        start="2019-01-01",
        lookback=15,
        epochs=2,
        units=[8, 4],
        batch_size=64,
        mode="global",
        data_dir=str(tmp_path),
    )
    state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert set(result) == {"AAPL", "MSFT", "NVDA"}
    states = task_states(state)
    assert states["train-global"] == "Completed" and "train" not in states
    for out in result.values():
        bundle = Path(out["bundle"])
        meta = json.loads((bundle / "metadata.json").read_text())
        assert meta["training"]["mode"] == "global"
        assert meta["training"]["tickers"] == ["AAPL", "MSFT", "NVDA"]
        assert meta["training"]["device"]["device"] == "cpu"
        assert meta["metrics"]["model"]["rmse"] > 0
        spec = json.loads((bundle / "preprocessing.json").read_text())
        assert spec["n_train"] > 0  # each ticker keeps its own scalers
    # each ticker's own target scale (its largest training move: log-return targets are
    # scaled, never shifted) and its own split dates, shared by all (one calendar)
    specs = {
        t: json.loads((Path(o["bundle"]) / "preprocessing.json").read_text())
        for t, o in result.items()
    }
    assert len({s["target_scaler"]["max"][0] for s in specs.values()}) == 3
    assert len({s["val_end"] for s in specs.values()}) == 1


def test_global_training_with_an_embedding_is_repeatable(tmp_path):
    """Same seed, same data: identical history and weights, embedding table included."""
    import keras

    data = three_tickers()
    spec = FitSpec(**CFG, dropout=0.1)

    def run(out):
        source = GlobalData(
            ["AAA", "BBB", "CCC"],
            [len(a["x"]) for _, a, _ in data],
            lambda i: (data[i][1]["x"], data[i][1]["y"], data[i][2]),
        )
        return train_global(source, 8, spec, 3, out)

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first["history"] == second["history"]
    weights = [
        keras.models.load_model(tmp_path / run_dir / "model.keras").get_weights()
        for run_dir in ("a", "b")
    ]
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_global_mode_refuses_a_history_ending_before_the_shared_validation_dates(
    prefect_server, tmp_path, shared_data, capsys
):
    """Two real histories, one cut short: the shared calendar leaves the short one only
    training rows. It is refused in one line naming it and why; the other is trained,
    exported and promoted; the command exits 1 without a dump of the run's state."""
    import shutil

    from tickercast.app.cli import main

    folder = tmp_path / "csv"
    folder.mkdir()
    shutil.copy(shared_data / "prices" / "MSFT.csv", folder / "MSFT.csv")
    lines = (shared_data / "prices" / "AAPL.csv").read_text().splitlines()
    kept = [line for line in lines[1:] if line[:10] <= "2019-06-28"]
    (folder / "AAPL.csv").write_text("\n".join([lines[0], *kept]) + "\n")
    argv = ["retrain", "--tickers", "MSFT", "AAPL", "--mode", "global", "--source", "csv"]
    argv += ["--csv-dir", str(folder), "--start", "2017-01-01", "--lookback", "15"]
    argv += ["--epochs", "1", "--units", "4", "4", "--batch-size", "64"]
    argv += ["--data-dir", str(tmp_path / "data")]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    refused = [line for line in out.splitlines() if line.startswith("AAPL:")]
    assert len(refused) == 1 and refused[0].startswith("AAPL: failed: InsufficientHistoryError")
    assert "0 validation and 0 test rows" in refused[0], refused
    assert "ends before the shared validation dates" in refused[0]
    assert "MSFT: bundle " in out and "MSFT: v1 promoted to champion" in out
    (error,) = [line for line in err.splitlines() if line.startswith("tickercast retrain: error")]
    assert "1 of 2 ticker(s) failed: AAPL: InsufficientHistoryError" in error
    assert "Unexpected result" not in out + err and "Traceback" not in out + err
    assert (tmp_path / "data/models/MSFT/versions/1/model.keras").is_file()
    assert not (tmp_path / "data/models/AAPL/versions").exists()
