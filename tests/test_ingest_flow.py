"""The `ingest` flow and `tickercast ingest` under the session's Prefect test server."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.prefect_runs import flow_run_artifacts
from tests.yahoo_replay import CHART_DIR, replay_session, reset_yfinance
from tickercast.config import IngestConfig
from tickercast.market import lake

ROOT = Path(__file__).resolve().parents[1]
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"
ROWS = (
    "2020-01-02,10,11,9,10.5,10.4,100\n"
    "2020-01-03,10.5,11.5,10,11,10.9,200\n"
    "2020-01-06,11,12,10.5,11.5,11.4,300\n"
)


def csv_folder(path: Path, bad: tuple[str, ...] = ("BBB",), good: tuple[str, ...] = ("AAA",)):
    path.mkdir(parents=True, exist_ok=True)
    for name in good:
        (path / f"{name}.csv").write_text(HEADER + ROWS)
    for name in bad:
        (path / f"{name}.csv").write_text(HEADER + "2020-01-02,1,2,0.5,abc,1,10\n")
    return path


def run(config: IngestConfig):
    from tickercast.flows.ingest import ingest

    state = ingest(config, return_state=True)
    return state, state.result(raise_on_failure=False)


def report_artifact(state) -> list[dict]:
    (table,) = [a for a in flow_run_artifacts(state) if a.key == "ingest-report"]
    assert table.type == "table"
    data = table.data
    return json.loads(data) if isinstance(data, str) else data


def test_one_bad_file_is_reported_and_the_run_completes(prefect_server, tmp_path: Path) -> None:
    folder = csv_folder(tmp_path / "csv", bad=("BBB",), good=("AAA", "CCC"))
    config = IngestConfig(source="csv", csv_dir=str(folder), data_dir=str(tmp_path / "data"))

    state, summary = run(config)

    assert state.is_completed(), state.message
    statuses = {r["ticker"]: r["status"] for r in summary["tickers"]}
    assert statuses == {"AAA": "ok", "BBB": "failed", "CCC": "ok"}
    rows = {r["ticker"]: r for r in report_artifact(state)}
    assert set(rows) == {"AAA", "BBB", "CCC"}
    assert rows["AAA"]["rows_added"] == 3 and rows["AAA"]["first_day"] == "2020-01-02"
    assert rows["AAA"]["last_day"] == "2020-01-06" and rows["AAA"]["rows_dropped"] == 0
    assert rows["BBB"]["status"] == "failed" and "BBB.csv, line 2" in rows["BBB"]["error"]
    assert {"warnings", "status"} <= set(rows["AAA"])
    assert lake.read_dataset(config.execution.data_dir).num_rows == 6

    # unchanged files: the rerun is served from the cache and says so
    state, summary = run(config)
    assert [r["status"] for r in summary["tickers"]] == ["cached", "failed", "cached"]
    assert [r["rows_added"] for r in summary["tickers"]] == [0, 0, 0]


def test_fail_on_decides_the_final_state(prefect_server, tmp_path: Path) -> None:
    folder = csv_folder(tmp_path / "csv", bad=("BBB",), good=("AAA",))
    base = {"source": "csv", "csv_dir": str(folder), "data_dir": str(tmp_path / "data")}

    state, summary = run(IngestConfig(**base, fail_on="any"))
    assert state.is_failed()
    assert "1 of 2 ticker(s) failed: BBB" in state.message
    assert summary["tickers"][0]["status"] in ("ok", "cached"), "the good ticker still ran"

    state, _ = run(IngestConfig(**base, fail_on="never", tickers=["BBB"]))
    assert state.is_completed()


def test_every_ticker_failing_fails_the_run(prefect_server, tmp_path: Path) -> None:
    folder = csv_folder(tmp_path / "csv", bad=("BBB", "CCC"), good=())
    state, summary = run(
        IngestConfig(source="csv", csv_dir=str(folder), data_dir=str(tmp_path / "data"))
    )
    assert state.is_failed() and "2 of 2 ticker(s) failed" in state.message
    assert len(report_artifact(state)) == 2
    assert not lake.prices_root(tmp_path / "data").exists()


@pytest.mark.skipif(not CHART_DIR.is_dir(), reason=f"no recordings at {CHART_DIR}")
def test_yfinance_incremental_through_the_flow(
    prefect_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_yfinance(tmp_path / "yf")
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning, r"yfinance\.")
    session = replay_session()
    monkeypatch.setattr("tickercast.market.yahoo.default_session", lambda: session)
    data = str(tmp_path / "data")

    state, summary = run(
        IngestConfig(source="yfinance", tickers=["AAPL", "ZZZZQ"], end="2020-10-15", data_dir=data)
    )
    assert state.is_completed(), state.message
    aapl, bad = summary["tickers"]
    assert (aapl["status"], aapl["mode"], aapl["rows_added"]) == ("ok", "full", 33)
    assert bad["status"] == "failed" and "ZZZZQ" in bad["error"]

    state, summary = run(IngestConfig(source="yfinance", tickers=["AAPL"], data_dir=data))
    (aapl,) = summary["tickers"]
    # the new 2020-11-06 dividend re-based history: fetched again, all 49 days stored
    assert (aapl["status"], aapl["mode"], aapl["rows"]) == ("ok", "refetch", 49)
    assert aapl["rows_added"] == 16


def test_cli_ingest_prints_a_line_per_ticker(prefect_server, tmp_path: Path, capsys) -> None:
    from tickercast.app.cli import main

    folder = csv_folder(tmp_path / "csv", bad=("BBB",), good=("AAA",))
    argv = ["ingest", "--source", "csv", "--csv-dir", str(folder)]
    assert main([*argv, "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "AAA: ok (replace), 3 rows added" in out
    assert "BBB: failed: MalformedFileError" in out

    code = main([*argv, "--data-dir", str(tmp_path / "d2"), "--fail-on", "any"])
    captured = capsys.readouterr()
    assert code == 1
    assert "tickercast ingest: error: 1 of 2 ticker(s) failed: BBB" in captured.err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--tickers", "../x", "--source", "yfinance"], "invalid ticker '../x'"),
        (["--source", "yfinance"], "needs tickers"),
        (["--source", "csv", "--csv-dir", "x", "--start", "2020-01-01"], "ingested whole"),
        (["--source", "yfinance", "--tickers", "A", "--period", "3 months"], "period"),
        (["--fail-on", "sometimes"], "fail_on: got 'sometimes'"),
    ],
)
def test_bad_ingest_config_is_one_clear_line(capsys, argv: list[str], fragment: str) -> None:
    from tickercast.app.cli import main

    assert main(["ingest", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err


def test_ingest_help_lists_every_config_field() -> None:
    text = subprocess.run(
        [sys.executable, "-m", "tickercast.app.cli", "ingest", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    for name in IngestConfig.leaves():
        assert "--" + name.replace("_", "-") in text, name


def test_ingest_parameter_schema_is_a_usable_form() -> None:
    from prefect.utilities.callables import parameter_schema

    from tickercast.flows.ingest import ingest

    schema = parameter_schema(ingest).model_dump()
    definitions = schema["definitions"]
    groups = definitions["IngestConfig"]["properties"]
    fields = {}
    for name, group in groups.items():  # each section's settings
        ref = group.get("$ref", "").rsplit("/", 1)[-1]
        assert (definitions[ref] if ref else group).get("description"), name
        fields.update(definitions[ref]["properties"] if ref else {name: group})
    assert set(fields) == set(IngestConfig.leaves())
    assert all(f.get("description") for f in fields.values())
    assert fields["fail_on"]["enum"] == ["any", "all", "never"]
    assert fields["overlap_days"]["minimum"] == 1


def test_tickers_are_ingested_concurrently_up_to_max_workers(
    prefect_server, tmp_path: Path, monkeypatch
) -> None:
    """Three tickers, max_workers=3: all three are inside the ingest at once (a barrier
    that only opens for three concurrent callers), yet the report keeps the asked order."""
    import threading

    from tickercast.market import ingest as ingest_logic

    barrier = threading.Barrier(3, timeout=30)
    real = ingest_logic.ingest_ticker

    def meeting(*args, **kwargs):
        barrier.wait()  # raises BrokenBarrierError after 30 s if they ran one by one
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_logic, "ingest_ticker", meeting)
    folder = csv_folder(tmp_path / "csv", bad=(), good=("CCC", "AAA", "BBB"))
    config = IngestConfig(
        source="csv",
        csv_dir=str(folder),
        tickers=["CCC", "AAA", "BBB"],
        data_dir=str(tmp_path / "data"),
        max_workers=3,
    )
    state, summary = run(config)
    assert state.is_completed(), state.message
    assert [r["ticker"] for r in summary["tickers"]] == ["CCC", "AAA", "BBB"]
    assert [r["status"] for r in summary["tickers"]] == ["ok", "ok", "ok"]
