"""One line per failure, as a user sees it in a real process: every ticker that fails
ends in one line naming it and its cause, the command exits 1, and neither a traceback
nor a dump of the run's state reaches the terminal (`--debug` keeps the traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import TICKER, copy_store

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    """`tickercast ...` in its own process, reporting to this session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "tickercast.app.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def assert_no_dump(proc: subprocess.CompletedProcess) -> None:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, proc.stderr[-3000:]
    assert "Unexpected result" not in text, proc.stderr[-3000:]


def lines_of(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize(
    "option",
    [["--start", "2030-01-01"], ["--horizon", "250", "--start", "2019-01-01"]],
    ids=["start-after-the-data", "horizon-longer-than-the-history"],
)
def test_every_failed_retrain_ticker_is_one_line_and_the_exit_status_1(
    prefect_server, tmp_path, option
):
    proc = cli("retrain", "--tickers", "MSFT", "NVDA", *option, "--data-dir", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert_no_dump(proc)
    for ticker in ("MSFT", "NVDA"):
        (line,) = lines_of(proc.stdout, f"{ticker}:")
        assert line.startswith(f"{ticker}: failed: InsufficientHistoryError: ticker {ticker}")
    (error,) = lines_of(proc.stderr, "tickercast retrain: error:")
    assert "2 of 2 ticker(s) failed: MSFT: InsufficientHistoryError" in error
    assert not list(tmp_path.glob("models/*/versions"))  # nothing exported


def test_debug_keeps_the_traceback(prefect_server, tmp_path):
    proc = cli("retrain", "--start", "2030-01-01", "--debug", "--data-dir", str(tmp_path))
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "InsufficientHistoryError" in proc.stderr


def forecast_rows(stdout: str) -> list[str]:
    """The predict table's row of the champion (ticker, version, as of, forecast)."""
    return [line for line in lines_of(stdout, TICKER) if line.split()[1:2] == ["v3"]]


def test_predict_says_in_one_line_per_ticker_why_it_could_not_forecast(prefect_server, tmp_path):
    """No champion, a damaged champion: expected per-ticker failures, never a traceback;
    the ticker that can forecast still does."""
    from tickercast.delivery.registry import champion_path, promote

    data = copy_store(tmp_path)
    promote(data, TICKER, 3)
    good = cli("predict", "--tickers", TICKER, "--data-dir", str(data))
    assert good.returncode == 0, good.stderr[-3000:]
    assert forecast_rows(good.stdout)

    proc = cli("predict", "--tickers", "AAPL", TICKER, "--data-dir", str(data))
    assert proc.returncode == 1
    assert_no_dump(proc)
    (missing,) = lines_of(proc.stdout, "AAPL:")
    assert missing.startswith("AAPL: failed: ") and "no champion" in missing
    assert forecast_rows(proc.stdout) and "written to" in proc.stdout

    model = champion_path(data, TICKER) / "model.keras"
    model.write_bytes(model.read_bytes()[:100])  # a damaged champion
    proc = cli("predict", "--tickers", TICKER, "--data-dir", str(data))
    assert proc.returncode == 1
    assert_no_dump(proc)
    (damaged,) = lines_of(proc.stdout, f"{TICKER}:")
    assert damaged.startswith(f"{TICKER}: failed: BundleError: ") and "model.keras" in damaged
    (error,) = lines_of(proc.stderr, "tickercast predict: error:")
    assert f"1 of 1 ticker(s) failed: {TICKER}: BundleError" in error
