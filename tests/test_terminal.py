"""The terminal as people see it: a one-ticker retrain in a pseudo-terminal prints no
TensorFlow start-up banner, no CUDA error line on a machine without a GPU, no retracing
warning, and ends (after Prefect's own shutdown lines) with the forecast; the plain-text
tables and the verdict words on their own (tests/test_quiet.py: the import alone)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def run_in_pty(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run `argv` with stdout and stderr on one pseudo-terminal, 160 columns; (exit
    status, everything it printed, colours and cursor moves stripped)."""
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "50", "TERM": "xterm-256color"}
    env.pop("CI", None)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # conftest's "2"; a user's terminal has none
    proc = subprocess.Popen(argv, stdout=child, stderr=child, stdin=child, cwd=ROOT, env=env)
    os.close(child)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
    os.close(main)
    status = proc.wait(timeout=60)
    text = ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r", "\n")
    return status, text


@pytest.mark.slow
def test_a_one_ticker_run_is_quiet_and_ends_with_the_forecast(tmp_path):
    status, text = run_in_pty(
        [
            sys.executable,
            "-m",
            "tickercast.app.cli",
            "retrain",
            "--tickers",
            "AAPL",
            "--start",
            "2018-06-01",
            "--epochs",
            "1",
            "--units",
            "4",
            "2",
            "--walk-forward-folds",
            "2",
            "--walk-forward-epochs",
            "1",
            "--data-dir",
            str(tmp_path),
        ],  # fmt: skip
        timeout=840,
    )
    assert status == 0, text[-3000:]
    noises = ("oneDNN", "cuda drivers", "cuInit", "E0000", "I0000", "absl::InitializeLog")
    noises += ("retracing", "Error encountered when computing cache key", "Traceback")
    for noise in noises:  # on failure, the text around it (a traceback follows a log line)
        at = text.find(noise)
        assert at < 0, (noise, text[max(0, at - 500) : at + 4000])
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    stopping = max(i for i, line in enumerate(lines) if "Stopping temporary server" in line)
    tail = "\n".join(lines[stopping + 1 :])
    assert "average close of the next 5 trading days" in tail and "80%:" in tail, tail
    assert "AAPL" in tail and ("no skill found" in tail or "last close" in tail), tail
    assert lines[-1].startswith("done in ") and "tickercast serve" in lines[-1], lines[-1]
    assert "Over all folds the model is " in text and "DM p = " in text
    assert not re.search(r"DM p \d\.\d{4,}", text), "an unrounded p-value"
    assert "AAPL fold 1 epochs" in text  # the fold's bar names the ticker


def test_plain_tables_and_forecast_words():
    from tickercast.delivery.words import NO_SKILL, forecast_words, verdict_words
    from tickercast.evaluation.formats import aligned

    text = aligned(["forecaster", "RMSE"], [["model", "1.2345"], ["naive", "10.5"]])
    assert text.splitlines() == [
        "forecaster    RMSE",
        "----------  ------",
        "model       1.2345",
        "naive         10.5",
    ]
    row = {"target": "mean_close_log_return", "horizon": 5, "forecast": 122.41,
           "lo_80": 118.9, "hi_80": 125.92, "lo_95": 116.0, "hi_95": 128.0}  # fmt: skip
    assert forecast_words(row) == (
        "average close of the next 5 trading days 122.41 (80%: 118.90–125.92; 95%: 116.00–128.00)"
    )
    shrunk = {"shrinkage": {"alpha": 0.0}, "metrics": {"naive": {"dm_p": 0.5}}}
    assert verdict_words(shrunk)[1].startswith(NO_SKILL)
    better = {"metrics": {"naive": {"dm_p": 0.01, "dm_verdict": "better"}}}
    assert verdict_words(better) == (
        "better",
        "beats the last close (naive): DM p = 0.01 on the test split",
    )
