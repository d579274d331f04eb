"""The MLflow mirror end to end, against a real `mlflow server` (SQLite backend, artifacts
served by it, loopback) started here from its own venv (`make mlflow-server`): retrains,
promotions and rollbacks, a server that is down and the resync, backtest and tune runs,
all read back through MLflow's client. And without a URI, MLflow is never imported."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny_models import TICKER, copy_store
from tickercast.deployments.serve import free_port
from tickercast.evaluation.names import FORECASTERS

ROOT = Path(__file__).resolve().parents[1]
SERVER = Path(os.environ.get("TICKERCAST_MLFLOW_SERVER", ROOT / ".venv-mlflow" / "bin" / "mlflow"))
OTHER = "AAPL"
# MLflow's usage telemetry would leave the machine: off for the server and the client here.
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
TINY = ["--start", "2019-01-01", "--lookback", "20", "--units", "8", "4"]
TINY += ["--epochs", "2", "--batch-size", "64"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real tracking server on a free loopback port; its URI."""
    import requests

    if not SERVER.is_file():
        pytest.skip(f"no MLflow server at {SERVER}: `make mlflow-server` builds it")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    saved = {k: os.environ.get(k) for k in QUIET}
    os.environ.update(QUIET)
    log = open(root / "server.log", "wb")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen(
        [str(SERVER), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db"]
        + ["--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **QUIET},
        start_new_session=True,  # its uvicorn workers go with it at teardown
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # not up yet, or still starting on a loaded machine: ask again
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up in 180 s: {(root / 'server.log').read_text()}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _runs(uri: str, experiment: str, ticker: str | None = None) -> list:
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    where = f"tags.`tickercast.ticker` = '{ticker}'" if ticker else ""
    return client.search_runs([found.experiment_id], where, order_by=["attributes.start_time"])


def _alias(uri: str, ticker: str) -> int | None:
    """The Tickercast version the `champion` alias of tickercast-<ticker> points at."""
    from mlflow.exceptions import MlflowException

    try:
        mv = _client(uri).get_model_version_by_alias(f"tickercast-{ticker}", "champion")
    except MlflowException:
        return None
    return int(mv.tags["tickercast.version"])


def _cli(argv: list[str]) -> str:
    """What a successful flow command printed. Not through capsys: Prefect's console log
    handler, created during the first flow run, would keep capsys' stream after it closed."""
    from tickercast.app.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, out.getvalue()
    return out.getvalue()


def _champion(data_dir: Path, ticker: str) -> int | None:
    from tickercast.delivery.registry import read_registry

    return read_registry(data_dir, ticker)["champion"]


@pytest.fixture(scope="module")
def mirrored(prefect_server, mlflow_server, tmp_path_factory):
    """Two retrains through the CLI with --mlflow-uri: MSFT and AAPL, then MSFT again with
    another seed (a new version the gate judges). Records the champion and the alias after
    each."""
    from tickercast.app.cli import main

    data_dir = tmp_path_factory.mktemp("mirrored") / "data"
    common = [*TINY, "--data-dir", str(data_dir), "--mlflow-uri", mlflow_server]
    after = []
    for argv in (
        ["retrain", "--tickers", TICKER, OTHER, *common],
        ["retrain", "--tickers", TICKER, "--seed", "7", *common],
    ):
        assert main(argv) == 0
        after.append(
            {t: (_champion(data_dir, t), _alias(mlflow_server, t)) for t in (TICKER, OTHER)}
        )
    # the second run again while MLflow is down: nothing new to export, and the mirror's
    # failure is reported without failing the run
    down = f"http://127.0.0.1:{free_port()}"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["retrain", "--tickers", TICKER, "--seed", "7", *common, "--mlflow-uri", down])
    return mlflow_server, data_dir, after, (down, code, out.getvalue(), err.getvalue())


@pytest.mark.slow
def test_each_retrain_logs_one_run_per_ticker_with_config_metrics_artifacts_and_data(mirrored):
    uri, data_dir, *_ = mirrored
    client = _client(uri)
    assert len(_runs(uri, "tickercast-retrain", OTHER)) == 1
    runs = _runs(uri, "tickercast-retrain", TICKER)
    assert [r.data.tags["tickercast.version"] for r in runs] == ["1", "2"]
    for version, run in enumerate(runs, start=1):
        bundle = data_dir / "models" / TICKER / "versions" / str(version)
        meta = json.loads((bundle / "metadata.json").read_text())
        assert run.info.status == "FINISHED"
        created = dt.datetime.fromisoformat(meta["created_at"])  # dated when it was made
        assert run.info.start_time == int(created.timestamp() * 1000)
        params = run.data.params
        assert params["lookback"] == "20" and params["units"] == "[8, 4]"
        assert params["seed"] == ("42" if version == 1 else "7")
        assert "mlflow_uri" not in params and "mlflow_uri" not in meta["config"]
        metrics = run.data.metrics
        for forecaster in FORECASTERS:
            assert metrics[f"{forecaster}.rmse"] == pytest.approx(
                meta["metrics"][forecaster]["rmse"]
            )
        assert metrics["naive.skill"] == pytest.approx(0.0)
        assert "naive.directional_accuracy" not in metrics  # calls no direction: n/a
        assert "coverage_80" in metrics and "training.epochs_run" in metrics
        tags = run.data.tags
        assert tags["data.sha256"] == meta["data"]["sha256"]
        assert (tags["data.first_day"], tags["data.last_day"]) == (
            meta["data"]["first_day"],
            meta["data"]["last_day"],
        )
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert top == {"bundle", "report.md"}
        files = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
        for name in ("model.keras", "metadata.json", "forecast.png", "loss.png", "saved_model"):
            assert f"bundle/{name}" in files
        report = Path(client.download_artifacts(run.info.run_id, "report.md", str(data_dir)))
        assert f"# Retrain {TICKER}" in report.read_text() and "naive" in report.read_text()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_each_version_links_its_mlflow_run_and_the_ticker_page_shows_it(mirrored):
    """metadata.json names the version's retrain run (opened before the bundle was written,
    filled by the mirror): the URL is that run's page in MLflow's UI, the REST API returns
    that run, finished and tagged with the version, and the ticker page links it."""
    import requests
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app

    uri, data_dir, *_ = mirrored
    experiment = _client(uri).get_experiment_by_name("tickercast-retrain").experiment_id
    urls = {}
    for run in _runs(uri, "tickercast-retrain", TICKER):
        version = run.data.tags["tickercast.version"]
        bundle = data_dir / "models" / TICKER / "versions" / version
        runs = json.loads((bundle / "metadata.json").read_text())["runs"]
        assert runs["mlflow_run_id"] == run.info.run_id, version  # the run that was filled
        assert runs["mlflow"] == f"{uri}/#/experiments/{experiment}/runs/{run.info.run_id}"
        got = requests.get(
            f"{uri}/api/2.0/mlflow/runs/get", params={"run_id": runs["mlflow_run_id"]}, timeout=30
        )
        assert got.status_code == 200, got.text
        info, tags = got.json()["run"]["info"], got.json()["run"]["data"]["tags"]
        assert info["experiment_id"] == experiment and info["status"] == "FINISHED"
        assert {"key": "tickercast.version", "value": version} in tags
        assert info["run_name"] == f"{TICKER} v{version}"
        urls[version] = runs["mlflow"]
    assert sorted(urls) == ["1", "2"]
    with TestClient(create_app(data_dir)) as client:
        page = client.get(f"/tickers/{TICKER}")
    assert page.status_code == 200, page.text
    for url in urls.values():
        assert f'<a href="{url}">MLflow run</a>' in page.text


@pytest.mark.slow
def test_a_retrain_while_mlflow_is_down_succeeds_and_says_how_to_repair(mirrored):
    uri, data_dir, after, (down, code, out, err) = mirrored
    assert code == 0
    assert f"{TICKER}: unchanged since v2" in out
    assert f"{TICKER}: MLflow not updated: MLflow at {down}: mirroring {TICKER} failed" in err
    assert f"retry: tickercast models sync-mlflow {TICKER} --data-dir {data_dir}" in err
    assert _alias(uri, TICKER) == after[-1][TICKER][1]  # the mirror as the last sync left it


@pytest.mark.slow
def test_versions_are_registered_and_the_alias_follows_promotion_and_rollback(
    mirrored, monkeypatch, capsys
):
    from tickercast.app.cli import main

    uri, data_dir, after, _ = mirrored
    client = _client(uri)
    # after each retrain MLflow's champion is Tickercast's, whatever the gate decided
    # (MSFT v1: nothing to beat; AAPL v1 was significantly worse than naive: no champion,
    # no alias), and MSFT's second version was judged against v1
    for champions in after:
        assert all(champion == alias for champion, alias in champions.values()), after
    assert after[0][TICKER] == (1, 1) and after[1][TICKER][0] in (1, 2)
    versions = client.search_model_versions(f"name = 'tickercast-{TICKER}'")
    assert sorted(int(v.tags["tickercast.version"]) for v in versions) == [1, 2]
    for mv in versions:
        run = client.get_run(mv.run_id)
        assert run.data.tags["tickercast.version"] == mv.tags["tickercast.version"]
        assert mv.source == f"{run.info.artifact_uri}/bundle"

    # by hand: v2 becomes the champion (unless the gate already made it), then rollback
    if _champion(data_dir, TICKER) != 2:
        argv = ["models", "promote", TICKER, "2", "--data-dir", str(data_dir)]
        assert main([*argv, "--mlflow-uri", uri]) == 0
        assert (_champion(data_dir, TICKER), _alias(uri, TICKER)) == (2, 2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the environment is honoured too
    assert main(["models", "rollback", TICKER, "--data-dir", str(data_dir)]) == 0
    assert (_champion(data_dir, TICKER), _alias(uri, TICKER)) == (1, 1)
    assert "'champion' -> version" in capsys.readouterr().out


@pytest.mark.slow
def test_a_server_that_is_down_leaves_the_registry_right_and_a_resync_repairs_it(
    mirrored, monkeypatch, capsys
):
    from tests.tiny_models import linear_version, tiny_config
    from tickercast.app.cli import main
    from tickercast.market.ingest import ingest_ticker

    uri, data_dir, *_ = mirrored
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    down = f"http://127.0.0.1:{free_port()}"
    # a new version promoted while the server is down: the registry changes, MLflow cannot
    # follow, and the command says so, naming the repair
    ingested = ingest_ticker(TICKER, "sample", data_dir)
    config = tiny_config(data_dir)
    version = int(linear_version(data_dir, ingested, config, "mlflow-down", "ridge").name)
    alias_before = _alias(uri, TICKER)
    runs_before = len(_runs(uri, "tickercast-retrain"))
    argv = ["models", "promote", TICKER, str(version), "--data-dir", str(data_dir)]
    assert main([*argv, "--mlflow-uri", down]) == 0
    err = capsys.readouterr().err
    assert f"{TICKER}: MLflow not updated: MLflow at {down}" in err
    assert f"retry: tickercast models sync-mlflow {TICKER} --data-dir {data_dir}" in err
    assert _champion(data_dir, TICKER) == version
    assert _alias(uri, TICKER) == alias_before != version
    # the resync logs the missing version and moves the alias; a second one changes nothing
    sync = ["models", "sync-mlflow", "--data-dir", str(data_dir), "--mlflow-uri"]
    assert main([*sync, uri]) == 0
    out = capsys.readouterr().out
    assert f"{TICKER}: MLflow tickercast-{TICKER}: logged v{version};" in out
    assert f"{OTHER}: MLflow tickercast-{OTHER}: logged nothing new;" in out
    assert _alias(uri, TICKER) == version
    assert len(_runs(uri, "tickercast-retrain")) == runs_before + 1
    assert main([*sync, uri]) == 0
    assert len(_runs(uri, "tickercast-retrain")) == runs_before + 1
    assert main([*sync, down]) == 1
    assert f"{TICKER}: MLflow not updated" in capsys.readouterr().err
    # a damaged bundle (no readable metadata.json) is skipped and named; the rest goes on
    (data_dir / "models" / OTHER / "versions" / "9").mkdir()
    assert main([*sync, uri]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"{OTHER}: "))
    assert "logged nothing new;" in line
    assert line.endswith("; v9 not mirrored (unreadable metadata)")


@pytest.mark.slow
def test_a_backtest_logs_its_tables_and_metrics(prefect_server, mlflow_server, tmp_path):

    argv = ["backtest", "--tickers", TICKER, "--start", "2019-01-01", "--data-dir", str(tmp_path)]
    argv += ["--model", "naive", "drift", "moving_average", "--initial", "300", "--step", "40"]
    assert "backtest logged to MLflow: run" in _cli([*argv, "--mlflow-uri", mlflow_server])
    (run,) = _runs(mlflow_server, "tickercast-backtest")
    folder = next((tmp_path / "backtests").iterdir())
    assert run.info.run_name == folder.name and run.info.status == "FINISHED"
    assert run.data.params["initial"] == "300" and run.data.params["tickers"] == '["MSFT"]'
    metrics = run.data.metrics
    assert {f"{TICKER}.{m}.t_1.rmse" for m in ("naive", "drift", "moving_average")} <= set(metrics)
    assert metrics[f"{TICKER}.naive.t_1.skill"] == pytest.approx(0.0)
    files = {a.path for a in _client(mlflow_server).list_artifacts(run.info.run_id, "backtest")}
    names = ("metrics.parquet", "forecasts.parquet", "distribution.parquet", "report.md")
    assert files == {f"backtest/{n}" for n in names}
    assert f"{TICKER}.distribution.naive.garch_t.crps" in metrics


@pytest.mark.slow
def test_a_search_logs_its_trial_table_and_best_configuration(
    prefect_server, mlflow_server, tmp_path
):
    argv = ["tune", "--tickers", TICKER, "--start", "2019-01-01", "--data-dir", str(tmp_path)]
    argv += ["--max-trials", "2", "--epochs", "1", "--models", "lstm", "--units-choices", "4"]
    argv += ["--layers-range", "1", "1", "--lookbacks", "10", "--batch-sizes", "64"]
    argv += ["--no-final-retrain", "--mlflow-uri", mlflow_server]
    assert "search logged to MLflow: run" in _cli(argv)
    (run,) = _runs(mlflow_server, "tickercast-tune")
    client = _client(mlflow_server)
    assert run.data.params["max_trials"] == "2" and "mlflow_uri" not in run.data.params
    history = client.get_metric_history(run.info.run_id, "val_mse")
    assert [m.step for m in history] == [0, 1]
    assert run.data.metrics["best.val_mse"] == pytest.approx(min(m.value for m in history))
    assert run.data.metrics["trials"] == 2
    files = {a.path for a in client.list_artifacts(run.info.run_id, "tune")}
    assert {f"tune/{n}" for n in ("trials.csv", "trials.json", "best.json", "report.md")} == files
    # where runs are mirrored (a URI may carry credentials) stays out of the shared best.json
    (best,) = (tmp_path / "tuning").rglob("best.json")
    assert mlflow_server not in best.read_text()  # in whichever section, the URI is not kept


def test_without_a_uri_mlflow_is_never_imported(tmp_path):
    """A rollback and a promotion through the CLI, and every flow, task and command module
    imported, with no --mlflow-uri and no MLFLOW_TRACKING_URI: mlflow stays unimported."""
    from tickercast.delivery.registry import promote

    data_dir = copy_store(tmp_path)
    promote(data_dir, TICKER, 1)
    promote(data_dir, TICKER, 3)
    code = """
import sys
from tickercast.app.cli import main
assert main(["models", "rollback", "MSFT", "--data-dir", sys.argv[1]]) == 0
assert main(["models", "promote", "MSFT", "3", "--data-dir", sys.argv[1]]) == 0
import tickercast.flows.backtest, tickercast.flows.retrain, tickercast.flows.tune
import tickercast.tasks.promote, tickercast.tracking
from tickercast.tasks.promote import _mirrored
event = {"action": "promote", "version": 3}
assert _mirrored(event, None, sys.argv[1], "MSFT") is event
assert tickercast.tracking.resolve_uri(None) is None
print("imported:", sorted(m for m in sys.modules if m.split(".")[0] == "mlflow"))
"""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported: []" in done.stdout
    assert "champion is now v3" in done.stdout and "MLflow" not in done.stdout + done.stderr


def test_a_uri_without_the_mlflow_client_is_refused_before_any_work(tmp_path):
    """In a process where mlflow cannot be imported, every flow command given a URI (here
    through MLFLOW_TRACKING_URI) refuses in one line and writes nothing."""
    code = """
import sys
sys.modules["mlflow"] = None  # importlib.util.find_spec("mlflow") is now None
from tickercast.app.cli import main
for command in ("retrain", "backtest", "tune"):
    assert main([command, "--data-dir", sys.argv[1]]) == 1
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    message = (
        "error: TrackingError: an MLflow URI was given (http://127.0.0.1:9) but MLflow is "
        "not installed: pip install 'tickercast[mlflow]'"
    )
    assert done.stderr.splitlines() == [
        f"tickercast {command}: {message}" for command in ("retrain", "backtest", "tune")
    ]
    assert not any(tmp_path.iterdir())
