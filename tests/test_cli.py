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
    for name in RetrainConfig.leaves():
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
    assert config.tickers == ["MSFT", "AAPL"] and config.training.epochs == 5
    assert config.preprocessing.features == ["close", "volume"] and config.network.units == [16, 8]
    assert config.execution.refresh is False and config.preprocessing.lookback == 60


@pytest.mark.parametrize(
    "text",
    [
        '{"lookback": 30, "epochs": 7}',  # flat names, as every older file has them
        '{"preprocessing": {"lookback": 30}, "training": {"epochs": 7}}',  # by section
    ],
)
def test_config_file_then_options(tmp_path, text):
    from tickercast.app.options import _collect

    path = tmp_path / "best.json"
    path.write_text(text)
    args = build_parser().parse_args(["retrain", "--config", str(path), "--epochs", "9"])
    config = RetrainConfig(**_collect(args, RetrainConfig))
    assert (config.preprocessing.lookback, config.training.epochs) == (30, 9)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"lookback": 30,\n  "epochs": }', "invalid JSON at line 2, column 13"),
        (
            '["lookback", 30]',
            "expected a JSON object of RetrainConfig settings (name: value), got list",
        ),
        ("null", "got null"),
        ('{"lookback": 0}', "lookback: Input should be greater than or equal to 1"),
        ('{"nonsense": 1}', "nonsense: Extra inputs are not permitted"),
        ('{"epochs": 3, "training": {"epochs": 4}}', "epochs is given twice"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file(tmp_path, capsys, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert main(["retrain", "--config", str(path), "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert fragment in err and str(path) in err, err


def test_a_missing_config_file_is_named(tmp_path, capsys):
    assert main(["retrain", "--config", str(tmp_path / "nope.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tickercast retrain: error: config file ") and "nope.json" in err


@pytest.mark.parametrize("command", ["retrain", "ingest", "predict", "backtest", "tune"])
@pytest.mark.parametrize("tickers", [[""], ["AAPL,"], ["AAPL", ""]])
def test_an_empty_ticker_is_refused_like_any_invalid_one(tmp_path, capsys, command, tickers):
    """`--tickers ''` (an unset shell variable in a nightly script) never means "every
    ticker": the empty symbol is refused by name, and nothing is written."""
    argv = [command, "--tickers", *tickers, "--data-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid ticker ''" in err, err
    assert not any(tmp_path.iterdir())


def test_omitting_the_tickers_keeps_its_meaning():
    from tickercast.app.options import _collect
    from tickercast.config import IngestConfig

    args = build_parser().parse_args(["ingest", "--source", "sample"])
    assert IngestConfig(**_collect(args, IngestConfig)).tickers == []  # every sample ticker


def test_serve_help_lists_every_route_of_the_service(tmp_path):
    from tickercast.app.commands import ROUTES
    from tickercast.app.service import create_app

    app = create_app(tmp_path)
    served = {route.path for route in app.routes}
    listed = {path for _, path, _ in ROUTES}
    assert served - {"/docs/oauth2-redirect", "/redoc"} == listed
    text = help_text(["-m", "tickercast.app.cli", "serve"])
    for verb, path, _ in ROUTES:
        assert f"{verb} {path}" in " ".join(text.split()), path


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


def test_a_kept_champion_prints_why_and_names_no_new_bundle(capsys):
    """A night whose fine-tune kept the champion says so first, and labels the test RMSE
    as the champion's (recorded when it was made), not tonight's."""
    from tickercast.app.options import print_retrain_result

    reason = "the fine-tune never beat champion v3's weights ...: champion v3 kept, no new version"
    metrics = {"model": {"rmse": 1.5}, "naive": {"rmse": 1.25}, "moving_average": {"rmse": 2.0}}
    result = {
        "bundle": "data/models/AAA/versions/3",
        "version": 3,
        "metrics": metrics,
        "verdict": "no evidence of skill",
        "unchanged": True,
        "kept_reason": reason,
        "promotion": {"action": "unchanged", "version": 3, "kept": True, "reason": reason},
    }
    print_retrain_result("AAA", result)
    assert capsys.readouterr().out.splitlines() == [
        f"AAA: {reason}",
        "AAA: champion v3's test RMSE (when it was made) model 1.5000 | naive 1.2500 "
        "(data/models/AAA/versions/3)",
    ]
