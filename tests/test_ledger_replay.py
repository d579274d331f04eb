"""The replay (issue 23): a ticker's real history fed one day at a time through the nightly
path (the ingest flow, then the predict flow), with a tiny champion and a promotion midway
standing in for a scheduled retrain. The ledger holds exactly one row per (origin,
version), each is scored once its horizon has passed, and the live figures equal a hand
computation from the same rows and the real closes. Slow: about 25 flow runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.tiny_models import TICKER, copy_store
from tickercast.config import IngestConfig, PredictConfig
from tickercast.delivery import ledger
from tickercast.delivery.registry import promote
from tickercast.market import lake

pytestmark = pytest.mark.slow
DAYS, SWITCH = 12, 6  # days fed; the day the champion changes (v3 -> v1)


def write_csv(folder: Path, prices: pd.DataFrame) -> None:
    frame = prices.rename(columns={"adj_close": "Adj Close"})
    frame.columns = [c if c == "Adj Close" else c.capitalize() for c in frame.columns]
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{TICKER}.csv", index=False)


def hand_record(rows: pd.DataFrame, closes: pd.Series, days: list[str]) -> dict:
    """Skill vs naive (MAE) and the 80%/95% hit rates, computed here from scratch."""
    realized, hits = [], {"80": [], "95": []}
    for row in rows.to_dict("records"):
        at, h = days.index(row["as_of"]), int(row["horizon"])
        r = float(closes.iloc[at + 1 : at + 1 + h].mean())  # target mean_close
        realized.append(r)
        for band in hits:
            hits[band].append(row[f"lo_{band}"] <= r <= row[f"hi_{band}"])
    realized = np.array(realized)
    mae = np.abs(rows["forecast"].to_numpy() - realized).mean()
    naive_mae = np.abs(rows["last_close"].to_numpy() - realized).mean()
    return {
        "n": len(rows),
        "skill": 1 - mae / naive_mae,
        "coverage_80": float(np.mean(hits["80"])),
        "coverage_95": float(np.mean(hits["95"])),
    }


def test_a_replayed_history_keeps_scores_and_judges_each_forecast_once(
    prefect_server, tmp_path: Path
):
    from tickercast.flows.ingest import ingest
    from tickercast.flows.predict import predict

    data = copy_store(tmp_path)
    full = lake.read_partition(data, TICKER)
    start = len(full) - DAYS
    lake.write_partition(data, TICKER, full.iloc[:start])  # the lake as it was DAYS ago
    promote(data, TICKER, 3, reason="by hand")
    csv_dir = tmp_path / "csv"
    ingest_config = IngestConfig(
        tickers=[TICKER], source="csv", csv_dir=str(csv_dir), data_dir=str(data)
    )
    predict_config = PredictConfig(tickers=[TICKER], data_dir=str(data))
    for day in range(DAYS + 1):
        write_csv(csv_dir, full.iloc[: start + day])
        assert ingest(ingest_config, return_state=True).is_completed()
        if day == SWITCH:  # the scheduled retrain's promotion
            promote(data, TICKER, 1, reason="scheduled retrain")
        runs = 2 if day == 2 else 1  # the same forecast issued twice is kept once
        for _ in range(runs):
            assert predict(predict_config, return_state=True).is_completed()

    days = pd.to_datetime(full["date"]).dt.strftime("%Y-%m-%d").tolist()
    kept = ledger.read(data, TICKER)
    first = kept[kept["output"] == 1]
    assert not first.duplicated(["as_of", "version"]).any()
    fed = days[start - 1 : len(full)]
    assert first["as_of"].tolist() == fed  # one forecast per day fed, in order
    expected_versions = [3] * (SWITCH) + [1] * (DAYS + 1 - SWITCH)
    assert first["version"].tolist() == expected_versions

    # scored by the last ingest: exactly the forecasts whose horizon has passed, once each
    scored = pd.read_parquet(ledger.scored_path(data, TICKER))
    last = len(full) - 1
    due = [
        d
        for d, h in zip(first["as_of"], first["horizon"], strict=True)
        if days.index(d) + int(h) <= last
    ]
    assert sorted(scored["as_of"]) == sorted(due) and len(due) >= 6
    assert not scored.duplicated(["as_of", "version", "output"]).any()

    # the live figures of each champion equal the hand computation
    for version in (3, 1):
        rows = first[(first["version"] == version) & first["as_of"].isin(due)]
        record = ledger.version_record(data, TICKER, version)
        hand = hand_record(rows, full["close"], days)
        assert record["n"] == hand["n"]
        if hand["n"]:
            assert record["skill"] == pytest.approx(hand["skill"])
            assert record["coverage_80"] == pytest.approx(hand["coverage_80"])
            assert record["coverage_95"] == pytest.approx(hand["coverage_95"])
