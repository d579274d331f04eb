"""The live record at work: per champion beside its promise, in the gate, on the page and
in MLflow (issue 23)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.tiny_models import TICKER, copy_store
from tickercast.delivery import ledger
from tickercast.market import lake


def publish(data_dir: Path, version: int, n: int = 30, band: float = 1e-4) -> None:
    """`n` published mean-close forecasts of `version` (naive's value, bands `band` wide:
    far too narrow, so the live 80% and 95% coverage collapse)."""
    prices = lake.read_partition(data_dir, TICKER)
    days = pd.to_datetime(prices["date"]).dt.strftime("%Y-%m-%d").tolist()
    close = prices["close"].tolist()
    rows = []
    for at in range(len(days) - 5 - n, len(days) - 5):
        c = float(close[at])
        bands = {
            f"{s}_{lv}": c * (1 + sign * band)
            for lv in ("80", "95")
            for s, sign in (("lo", -1), ("hi", 1))
        }
        rows.append(
            {
                "ticker": TICKER,
                "version": version,
                "as_of": days[at],
                "horizon": 5,
                "target": "mean_close",
                "output": 1,
                "last_close": c,
                "forecast": c,
                **bands,
            }
        )
    assert ledger.append(data_dir, rows) == n


def test_a_version_record_sits_beside_its_promise(tmp_path: Path):
    data = copy_store(tmp_path)
    publish(data, 3)
    record = ledger.version_record(data, TICKER, 3)
    assert record["version"] == 3 and record["n"] == 30
    assert record["coverage_80"] < 0.5 and "coverage" in record["flag"]
    assert record["promised"]["coverage_80"] is not None
    assert record["promised"]["skill"] is not None
    assert ledger.version_record(data, TICKER, 1)["n"] == 0  # nothing published by v1
    assert ledger.live_flag(data, TICKER, 1) is None
    assert "coverage" in ledger.live_flag(data, TICKER, 3)


def test_the_gate_replaces_a_champion_flagged_live(tmp_path: Path):
    from tests.tiny_models import linear_version, tiny_config
    from tickercast.delivery.gate import challenge
    from tickercast.delivery.registry import promote
    from tickercast.market.ingest import ingest_ticker

    data = copy_store(tmp_path)
    promote(data, TICKER, 3, reason="by hand")
    ingested = ingest_ticker(TICKER, "sample", data)
    twin = linear_version(data, ingested, tiny_config(data), "twin", "ridge")  # = v3
    refused = challenge(data, TICKER, int(twin.name))
    assert refused["action"] == "reject", refused["reason"]  # not significantly better
    publish(data, 3)  # the champion's published bands stop covering
    event = challenge(data, TICKER, int(twin.name))
    assert event["action"] == "promote", event["reason"]
    assert "champion v3 is flagged live" in event["reason"]
    # live evidence never lets a challenger significantly worse than naive in
    promote(data, TICKER, 3, reason="by hand")
    assert challenge(data, TICKER, 1)["action"] == "reject"


def test_the_page_shows_the_live_record_beside_the_promise(tmp_path: Path):
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app
    from tickercast.delivery.registry import promote

    data = copy_store(tmp_path)
    promote(data, TICKER, 3, reason="by hand")
    publish(data, 3)
    with TestClient(create_app(data)) as client:
        page = client.get("/").text
        ledger_json = client.get(f"/ledger/{TICKER}").json()
    assert "Live record" in page and "test split promised" in page
    assert "flagged: live 80% coverage" in page
    assert ledger_json["live"]["flag"]
    # the page's own GET /forecast published one more (today's origin: not scored yet)
    assert "not yet" in page


def test_a_champion_without_published_forecasts_says_so():
    from tickercast.delivery.live_page import summary

    html = summary({"n": 0, "promised": {"skill": 0.05, "coverage_80": 0.8}}, 1)
    assert "1 forecast(s) published, 0 scored" in html and "+5.0%" in html


def test_the_live_record_reaches_the_champions_mlflow_run(tmp_path: Path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # a sqlite store puts its artifacts under ./mlruns
    from mlflow import MlflowClient

    from tickercast.tracking import log_live

    data = copy_store(tmp_path)
    publish(data, 3)
    record = ledger.version_record(data, TICKER, 3)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_live(uri, data, TICKER, record)
    again = log_live(uri, data, TICKER, record)  # the same run, one more point
    assert again == run_id
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.metrics["live.coverage_80"] == pytest.approx(record["coverage_80"])
    assert run.data.tags["tickercast.live.flag"] == record["flag"]
    history = MlflowClient(uri).get_metric_history(run_id, "live.coverage_80")
    assert [m.step for m in history] == [30, 30]


def test_models_show_gives_the_champions_live_record_and_promise(tmp_path: Path, capsys):
    from tickercast.app.cli import main
    from tickercast.delivery.registry import promote

    data = copy_store(tmp_path)
    promote(data, TICKER, 3, reason="by hand")
    publish(data, 3)
    assert main(["models", "show", TICKER, "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "live record (30 forecasts" in out
    assert "v3 promised on its test split: skill" in out and "80% band covered" in out
    assert "FLAGGED: live 80% coverage" in out


def test_a_forecast_with_a_quantile_grid_is_scored_by_crps(tmp_path: Path):
    import numpy as np

    from tickercast.choices import QUANTILES
    from tickercast.evaluation.distribution import CELL_WEIGHTS

    days = pd.bdate_range("2024-01-01", periods=12).date
    close = np.linspace(100, 111, 12)
    frame = pd.DataFrame(
        {
            "date": days,
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "adj_close": close,
            "volume": 1,
        }
    )
    lake.write_partition(tmp_path, "QQQ", frame)
    grid = [100 + 4 * q for q in QUANTILES]  # increasing, in prices
    base = {"ticker": "QQQ", "horizon": 1, "target": "close", "output": 1, "forecast": 102.0}
    with_grid = {
        **base,
        "version": 1,
        "as_of": str(days[0]),
        "last_close": 100.0,
        "quantiles": grid,
    }
    without = {**base, "version": 1, "as_of": str(days[1]), "last_close": close[1]}
    assert ledger.append(tmp_path, [with_grid]) == 1 and ledger.append(tmp_path, [without]) == 1
    scored = ledger.score(tmp_path, "QQQ").set_index("as_of")
    realized = close[1]
    scores = [
        ((realized < q) - tau) * (q - realized) for tau, q in zip(QUANTILES, grid, strict=True)
    ]
    by_hand = 2 * float(np.dot(scores, CELL_WEIGHTS))  # the grid's CRPS (distribution.py)
    assert scored.loc[str(days[0]), "crps"] == pytest.approx(by_hand)
    assert pd.isna(scored.loc[str(days[1]), "crps"])


def test_duckdb_reads_the_ledger_of_every_ticker(tmp_path: Path):
    duckdb = pytest.importorskip("duckdb")
    base = {"horizon": 1, "target": "close", "output": 1, "forecast": 1.0, "last_close": 1.0}
    for ticker in ("AAA", "BBB"):
        for day in ("2024-01-02", "2024-01-03"):
            row = {**base, "ticker": ticker, "version": 1, "as_of": day}
            ledger.append(tmp_path, [row], bundle_sha={ticker: "b"}, data_sha={ticker: "d"})
    (ledger.ticker_dir(tmp_path, "AAA") / ".half-written.parquet.tmp").write_bytes(b"PAR1")
    pattern = str(tmp_path / "lake" / "ledger" / "*" / "*.parquet")
    counts = duckdb.sql(
        f"SELECT ticker, count(*) FROM read_parquet('{pattern}', union_by_name=true) "
        "GROUP BY ticker ORDER BY ticker"
    ).fetchall()
    assert counts == [("AAA", 2), ("BBB", 2)]


def test_an_unreadable_ledger_is_a_warning_not_a_failed_step(tmp_path: Path, prefect_server):
    from prefect import flow

    from tickercast.tasks.ledger import watch

    base = {"horizon": 1, "target": "close", "output": 1, "forecast": 1.0, "last_close": 1.0}
    ledger.append(tmp_path, [{**base, "ticker": "BAD", "version": 1, "as_of": "2024-01-02"}])
    (ledger.ticker_dir(tmp_path, "BAD") / "2024-01-03_v1.parquet").write_bytes(b"not parquet")

    @flow
    def night():
        return watch("BAD", str(tmp_path))

    record = night()
    assert record["n"] == 0 and "live record not computed" in record["error"]
