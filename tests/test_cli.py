import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickercast.app.cli import build_parser, main
from tickercast.config import RetrainConfig

ROOT = Path(__file__).resolve().parents[1]


def help_text(argv):
    return subprocess.run(
        [sys.executable, *argv, "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "flows.retrain"],
        ["-m", "tickercast.flows.retrain"],
        ["-m", "tickercast.app.cli", "retrain"],
    ],
)
def test_help_lists_every_config_field(argv):
    text = help_text(argv)
    for name in RetrainConfig.model_fields:
        assert "--" + name.replace("_", "-") in text, name
    assert "--debug" in text


def test_options_map_onto_the_config():
    from tickercast.app.options import _collect

    args = build_parser().parse_args(
        [
            "retrain",
            "--tickers",
            "MSFT",
            "AAPL",
            "--source",
            "csv",
            "--csv-dir",
            "x",
            "--epochs",
            "5",
            "--features",
            "close,volume",
            "--units",
            "16",
            "8",
            "--no-refresh",
        ]
    )
    config = RetrainConfig(**_collect(args, RetrainConfig))
    assert config.tickers == ["MSFT", "AAPL"] and config.epochs == 5
    assert config.features == ["close", "volume"] and config.units == [16, 8]
    assert config.refresh is False and config.lookback == 60


def test_config_file_then_options(tmp_path):
    from tickercast.app.options import _collect

    path = tmp_path / "best.json"
    path.write_text('{"lookback": 30, "epochs": 7}')
    args = build_parser().parse_args(["retrain", "--config", str(path), "--epochs", "9"])
    config = RetrainConfig(**_collect(args, RetrainConfig))
    assert (config.lookback, config.epochs) == (30, 9)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--lookback", "0"], "lookback: Input should be greater than or equal to 1"),
        (["--model", "transformer"], "model: got 'transformer'"),
        (["--tickers", "../x"], "invalid ticker '../x'"),
        (["--features", "close", "mood"], "'log_volume'"),
    ],
)
def test_bad_config_is_one_clear_line(capsys, argv, fragment):
    assert main(["retrain", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err


def test_failure_in_a_real_process_exits_nonzero_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tickercast.app.cli",
            "retrain",
            "--source",
            "csv",
            "--csv-dir",
            str(tmp_path),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"tickercast retrain: error: FileNotFoundError: ticker AAPL: no AAPL.csv in {tmp_path}"
    ]


def test_cache_show_and_clear(tmp_path, capsys):
    (tmp_path / "work/train/k").mkdir(parents=True)
    (tmp_path / "work/train/k/model.keras").write_bytes(b"x" * 2_000_000)
    assert main(["cache", "show", "--data-dir", str(tmp_path)]) == 0
    assert "work: holds 1 files, 2.0 MB" in capsys.readouterr().out
    assert main(["cache", "clear", "--data-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "work").exists()
