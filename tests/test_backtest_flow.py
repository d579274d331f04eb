"""`tickercast backtest` and the `backtest` flow end to end (Prefect test server): files,
printed table and artifacts; a tiny network (1 epoch, one fit) next to the baselines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.prefect_runs import artifacts_of
from tests.tiny_models import TICKER
from tickercast.config import BacktestConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _prefect_logging_outside_capsys():
    """Importing Prefect's flow API configures its console log handlers on the sys.stderr
    of that moment; done inside a capsys test they would write to a closed file later."""
    import prefect.main  # noqa: F401


def test_help_lists_every_config_field():
    text = subprocess.run(
        [sys.executable, "-m", "tickercast.flows.backtest", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    for name in BacktestConfig.leaves():
        assert "--" + name.replace("_", "-") in text, name


def test_bad_settings_are_refused_in_one_line_before_any_work(tmp_path, capsys):
    from tickercast.app.cli import main

    assert main(["backtest", "--initial", "30", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "initial 30 is too short for model 'stacked_lstm'" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["backtest", "--model", "arima", "--data-dir", str(tmp_path)]) == 1
    assert "model.0: got 'arima'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cli_backtest_of_a_network_and_baselines(prefect_server, tmp_path, capsys):
    from tickercast.app.cli import main

    argv = ["backtest", "--tickers", TICKER, "--start", "2019-01-01", "--data-dir", str(tmp_path)]
    argv += ["--model", "lstm", "--model", "naive", "drift", "--units", "4", "--lookback", "10"]
    argv += ["--epochs", "1", "--batch-size", "64", "--initial", "300", "--step", "40"]
    argv += ["--refit-every", "100"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{TICKER}: 5 origins" in out and "RMSE" in out and "lagging" in out
    folder = Path(out.split("written to ")[1].strip())
    assert folder.parent == tmp_path / "backtests"
    metrics = pd.read_parquet(folder / "metrics.parquet")
    assert metrics["model"].tolist() == ["lstm", "naive", "drift"]
    assert (metrics["ticker"] == TICKER).all() and (metrics["n"] == 5).all()
    lstm = metrics.set_index("model").loc["lstm"]
    assert 0 <= lstm["coverage_80"] <= lstm["coverage_95"] <= 1  # the network has intervals
    assert metrics.set_index("model").loc[["naive", "drift"], "coverage_80"].isna().all()
    assert metrics.set_index("model").loc["naive", "skill"] == 0.0
    forecasts = pd.read_parquet(folder / "forecasts.parquet")
    origins = forecasts.groupby("model")["origin"].apply(tuple)
    assert origins.nunique() == 1 and len(origins.iloc[0]) == 5  # the very same origins
    assert (forecasts.loc[forecasts["model"] == "lstm", "fold"] == 1).all()  # one fit
    assert (forecasts["target_date"] > forecasts["origin"]).all()
    report = (folder / "report.md").read_text()
    assert f"## {TICKER}" in report and "| lstm | t+1 | 5 |" in report
    # the distribution table beside it: around lstm's median and naive's (issue 21)
    assert f"{TICKER}: distribution" in out and "garch_t" in out
    assert "| lstm | garch_t |" in report and "around naive's median, its band:" in report
    bands = pd.read_parquet(folder / "distribution.parquet")
    assert set(bands["median"]) == {"lstm", "naive"} and len(bands) == 10


def test_flow_publishes_the_table_and_report(prefect_server, tmp_path):
    from tickercast.flows.backtest import METRICS_KEY, REPORT_KEY, backtest

    config = BacktestConfig(
        tickers=[TICKER],
        start="2019-01-01",
        # the names saved configs and deployments used before the registry keep their
        # meaning in backtests; moving_average_horizon is new here
        model=["naive", "drift", "mean", "moving_average", "ridge", "moving_average_horizon"],
        target="closes",
        horizon=3,
        initial=250,
        step=10,
        data_dir=str(tmp_path),
    )
    state = backtest(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    rows = result["tickers"][TICKER]["metrics"]
    assert {(r["model"], r["step"]) for r in rows if r["model"] == "ridge"} == {
        ("ridge", "all"),
        ("ridge", "t+1"),
        ("ridge", "t+2"),
        ("ridge", "t+3"),
    }
    found = artifacts_of(state)
    assert {METRICS_KEY, REPORT_KEY} <= set(found)
    table = found[METRICS_KEY].data
    assert "moving_average" in table and "t+3" in table and TICKER in table
    report = found[REPORT_KEY].data
    assert "**naive is lagging**" in report and "MASE scale" in report
    assert "- `moving_average`: the mean of the last 20 closes" in report
    assert "- `moving_average_horizon`: the mean of the last 3 closes" in report
    assert "last 5 daily log returns" in report  # ridge, with its parameters
    assert Path(result["paths"]["metrics"]).is_file()


def test_one_bad_ticker_never_stops_the_others(prefect_server, tmp_path, shared_data, capsys):
    """A backtest over a good and a bad ticker (its CSV cut to 20 rows, too short for the
    first window) finishes the good one: its files and table are written, the bad one is
    one line naming why, and the command exits 1."""
    import shutil

    from tickercast.app.cli import main

    folder = tmp_path / "csv"
    folder.mkdir()
    shutil.copy(shared_data / "prices" / "GOOG.csv", folder / "GOOG.csv")
    lines = (shared_data / "prices" / "AMZN.csv").read_text().splitlines()
    (folder / "AMZN.csv").write_text("\n".join(lines[:1] + lines[-20:]) + "\n")
    argv = ["backtest", "--tickers", "AMZN", "GOOG", "--source", "csv", "--csv-dir", str(folder)]
    argv += ["--start", "2019-01-01", "--model", "naive", "drift", "--initial", "300"]
    argv += ["--data-dir", str(tmp_path / "data")]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "GOOG: " in out and "RMSE" in out
    (bad,) = [line for line in out.splitlines() if line.startswith("AMZN:")]
    assert bad.startswith("AMZN: failed: BacktestError") and "needs at least" in bad, bad
    (error,) = [line for line in err.splitlines() if line.startswith("tickercast backtest")]
    assert "1 of 2 ticker(s) failed: AMZN" in error
    folder = Path(out.split("written to ")[1].split()[0])
    metrics = pd.read_parquet(folder / "metrics.parquet")
    assert set(metrics["ticker"]) == {"GOOG"} and "AMZN" not in (folder / "report.md").read_text()
