"""Next-horizon forecasts from the champion: the functions, the predict flow and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.prefect_runs import artifacts_of
from tests.tiny_models import TICKER, copy_store
from tickercast.delivery.predict import check_window, forecast_next, forecast_window, predict_at
from tickercast.delivery.registry import load_champion, promote
from tickercast.market import lake


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data_dir = copy_store(tmp_path_factory.mktemp("predict"))
    promote(data_dir, TICKER, 3)
    return data_dir


def test_forecast_next_from_the_latest_lake_rows(data):
    bundle = load_champion(data, TICKER)
    prices = lake.read_partition(data, TICKER)
    (row,) = forecast_next(bundle, prices, TICKER)
    assert row["as_of"] == str(pd.Timestamp(prices["date"].iloc[-1]).date())
    assert (row["version"], row["horizon"], row["target"]) == (3, 5, "mean_close")
    assert row["last_close"] == pytest.approx(float(prices["close"].iloc[-1]))
    assert row["lo_95"] < row["lo_80"] < row["forecast"] < row["hi_80"] < row["hi_95"]
    q80 = bundle.metadata["intervals"]["80"]["q"][0]
    assert bundle.metadata["intervals"]["80"]["scale"] == "volatility"
    # the band is q per unit of the last 20 days' volatility of daily log returns
    returns = np.diff(np.log(prices["close"].to_numpy(dtype=float)))[-20:]
    vol = np.std(returns, ddof=1)
    assert bundle.metadata["intervals"]["80"]["space"] == "log"  # bands stay prices
    assert row["hi_80"] == pytest.approx(row["forecast"] * np.exp(q80 * vol))
    assert row["lo_80"] == pytest.approx(row["forecast"] * np.exp(-q80 * vol))
    # the evaluation's own code path gives the same number for that anchor day
    same = predict_at(bundle, prices, [row["as_of"]])[0, 0]
    assert same == pytest.approx(row["forecast"], rel=1e-5)


def test_a_raw_window_gives_the_same_forecast(data):
    bundle = load_champion(data, TICKER)
    prices = lake.read_partition(data, TICKER)
    window = prices[["close", "volume"]].tail(bundle.spec.lookback).to_numpy(dtype=float)
    (expected,) = forecast_next(bundle, prices, TICKER)
    (row,) = forecast_window(bundle, window.tolist(), TICKER)
    assert row["forecast"] == pytest.approx(expected["forecast"], rel=1e-5)
    assert row["last_close"] == pytest.approx(expected["last_close"])
    # the band's volatility comes from what the window holds: its 19 daily returns (the
    # lake's forecast reads 20)
    q80 = bundle.metadata["intervals"]["80"]["q"][0]
    vol = np.std(np.diff(np.log(window[:, 0])), ddof=1)
    assert row["lo_80"] == pytest.approx(row["forecast"] * np.exp(-q80 * vol))
    assert row["hi_80"] == pytest.approx(row["forecast"] * np.exp(q80 * vol))


def test_a_window_with_the_bands_rows_gets_the_lakes_band(data):
    """One row more (window_rows: 21 closes, the 20 returns the volatility band reads): the
    same forecast and the same band as the lake's."""
    from tickercast.delivery.predict import window_rows

    bundle = load_champion(data, TICKER)
    assert window_rows(bundle) == (20, 21)
    prices = lake.read_partition(data, TICKER)
    window = prices[["close", "volume"]].tail(21).to_numpy(dtype=float)
    (expected,) = forecast_next(bundle, prices, TICKER)
    (row,) = forecast_window(bundle, window.tolist(), TICKER)
    for key in ("forecast", "lo_80", "hi_80", "lo_95", "hi_95"):
        assert row[key] == pytest.approx(expected[key], rel=1e-6), key


@pytest.mark.parametrize(
    "window, message",
    [
        (np.ones((19, 2)).tolist(), r"shape \[19, 2\], expected 20 to 21 rows .* of 2 features"),
        (np.ones((22, 2)).tolist(), r"shape \[22, 2\], expected 20 to 21 rows"),
        (np.ones((20, 3)).tolist(), r"expected 20 to 21 rows"),
        ([[1.0, float("nan")]] * 20, "NaN"),
        ([[1.0, float("inf")]] * 20, "infinite"),
        ([["a", 1.0]] * 20, "list of rows of numbers"),
    ],
)
def test_bad_windows_refused_saying_why(data, window, message):
    with pytest.raises(ValueError, match=message):
        check_window(load_champion(data, TICKER), window)


def test_predict_flow_writes_parquet_and_a_table(prefect_server, data):
    from tickercast.config import PredictConfig
    from tickercast.flows.predict import predict

    state = predict(PredictConfig(tickers=[TICKER, "AAPL"], data_dir=str(data)), return_state=True)
    assert state.is_failed() and "AAPL" in state.message
    result = state.result(raise_on_failure=False)
    assert "has no champion" in result["failed"]["AAPL"]
    frame = pd.read_parquet(result["path"])
    assert list(frame["ticker"]) == [TICKER] and frame["version"].tolist() == [3]
    assert {"as_of", "forecast", "lo_80", "hi_80", "lo_95", "hi_95", "created_at"} <= set(frame)
    assert str(data) in result["path"] and "/forecasts/" in result["path"]
    # this run's table (other runs publish the same key): the forecast that was written
    table = json.loads(artifacts_of(state)["forecasts"].data)
    assert [(r["ticker"], r["version"]) for r in table] == [(TICKER, 3)]
    assert table[0]["forecast"] == pytest.approx(frame["forecast"].iloc[0], rel=1e-5)

    ok = predict(PredictConfig(tickers=[TICKER], data_dir=str(data)), return_state=True)
    assert ok.is_completed() and ok.result()["failed"] == {}


def test_cli_predict(prefect_server, data, capsys):
    from tickercast.app.cli import main

    assert main(["predict", "--tickers", TICKER, "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith(TICKER)]  # the table's row
    assert line.split()[:3] == [TICKER, "v3", "2020-12-11"]
    assert "average close of the next 5 trading days" in line and "(80%: " in line
    assert "written to" in out
    assert main(["predict", "--tickers", "NVDA", "--data-dir", str(data)]) == 1
    captured = capsys.readouterr()
    assert "NVDA: failed" in captured.out and "1 ticker(s) failed" in captured.err


def test_predict_without_tickers_forecasts_every_champion(prefect_server, data, tmp_path):
    from tickercast.app.cli import main
    from tickercast.config import PredictConfig
    from tickercast.delivery.registry import champions
    from tickercast.flows.predict import predict

    assert PredictConfig().tickers == [] and champions(data) == [TICKER]
    state = predict(PredictConfig(data_dir=str(data)), return_state=True)
    assert state.is_completed()
    assert [r["ticker"] for r in state.result()["forecasts"]] == [TICKER]
    # every run keeps what it issued in the ledger, once per origin and version
    from tickercast.delivery import ledger

    predict(PredictConfig(data_dir=str(data)), return_state=True)
    kept = ledger.read(data, TICKER)
    assert len(kept) == 1 and kept["version"].tolist() == [3]
    # an empty registry is one line saying so, not a run over nothing
    assert main(["predict", "--data-dir", str(tmp_path / "empty")]) == 1
