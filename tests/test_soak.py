"""Soak: 50 nightly cycles of incremental ingest + retrain under random network faults.

A small universe (AAPL and MSFT, replayed through yfinance's own code from recorded Yahoo
answers) grows by a few days each cycle, as a nightly run's lake would. Every chart
request may fail at random (seeded): connection reset, read timeout, an answer cut off
halfway, HTTP 500/503/429. Each cycle ingests both tickers incrementally (retried with
backoff; a ticker whose retries run out fails for that night and catches up the next),
then retrains one of them with the smallest network the pipeline builds (one LSTM of 4
units, 1 epoch, lookback 5; a stacked [4, 4] doubles the soak's time for nothing it
tests) and puts the new version through the registry's champion gate, as the retrain
flow's steps do (plain functions, no Prefect: the soak is about the data and the registry).

At the end the lake must equal one clean ingest of the final window, and each ticker's
registry must hold one decision per exported version, in order, with a consistent
champion lineage. Marked slow; `make test` runs it (a few minutes on 2 cores).
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from tests.test_reliability import FaultyAdapter, assert_same_lake, clean_lake
from tests.yahoo_replay import CHART_DIR, ReplaySession, reset_yfinance
from tickercast.config import RetrainConfig
from tickercast.delivery.bundle import list_versions, verify_bundle, write_bundle
from tickercast.delivery.gate import challenge
from tickercast.delivery.registry import read_registry
from tickercast.errors import TransientSourceError
from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHART_DIR.is_dir(), reason=f"no recordings at {CHART_DIR}"),
]

CYCLES = 50
FAULT_RATE = 0.3  # share of chart requests that fail
SEED = 2024
# Recordings: AAPL 2020-08-31..2020-11-06, MSFT 2021-02-01..2022-01-31. Each cycle's
# window ends a little later; the last one covers both recordings whole.
FIRST_END = {"AAPL": dt.date(2020, 9, 25), "MSFT": dt.date(2021, 4, 1)}
LAST_END = {"AAPL": dt.date(2020, 11, 13), "MSFT": dt.date(2022, 2, 1)}


def cycle_end(ticker: str, cycle: int) -> dt.date:
    span = (LAST_END[ticker] - FIRST_END[ticker]).days
    return FIRST_END[ticker] + dt.timedelta(days=round(span * cycle / (CYCLES - 1)))


def retrain(data: Path, ticker: str, ingested: dict, config: RetrainConfig, work: Path) -> dict:
    """preprocess -> windows -> train -> evaluate -> export -> promote, as the steps do.

    The bundle is written without the TF SavedModel (its export is tested elsewhere and
    would triple a cycle's time); everything the registry's gate reads is there.
    """
    import keras

    from tickercast.delivery.metadata import bundle_metadata
    from tickercast.evaluation.evaluate import evaluate
    from tickercast.evaluation.report import evaluation_summary
    from tickercast.modeling.preprocess import preprocess, save_preprocessed
    from tickercast.modeling.train import train_model
    from tickercast.modeling.windows import split_anchors

    prices = lake.read_price_file(Path(ingested["path"])).to_pandas()
    spec, arrays = preprocess(prices, config.preprocessing, who=f"ticker {ticker}")
    npz, spec_path = save_preprocessed(work / "pre", spec, arrays)
    n_rows = spec.n_train + spec.n_val + spec.n_test
    anchors = split_anchors(n_rows, spec.n_train, spec.n_val, spec.lookback, spec.horizon)
    summary = train_model(arrays, anchors, spec.lookback, config.fit_spec(), work)
    model = keras.models.load_model(work / "model.keras", safe_mode=True, compile=False)
    ev = evaluate(model, spec, arrays, anchors)
    ev["table"].to_parquet(work / "predictions.parquet", index=False)
    trained = {"model": str(work / "model.keras"), "history": str(work / "history.json")}
    pre = {"spec": str(spec_path), "arrays": str(npz)}
    metadata = bundle_metadata(ingested, pre, trained, evaluation_summary(ev), config.recorded())
    files = {
        "model.keras": work / "model.keras",
        "preprocessing.json": spec_path,
        "history.json": work / "history.json",
        "predictions.parquet": work / "predictions.parquet",
    }
    bundle = write_bundle(data, ticker, files, metadata)
    keras.backend.clear_session()  # 50 models in one process: keep the graph state small
    assert summary["epochs_run"] == 1
    return challenge(data, ticker, int(bundle.name))


def assert_registry_complete(data: Path, ticker: str, exported: list[int]) -> None:
    registry = read_registry(data, ticker)
    assert list_versions(data, ticker) == exported == list(range(1, len(exported) + 1))
    assert [e["version"] for e in registry["history"]] == exported, "one decision per version"
    before, lineage = None, []
    for event in registry["history"]:
        assert event["action"] in ("promote", "reject"), event
        assert event["champion_before"] == before, registry["history"]
        if event["action"] == "promote":
            lineage.append(event["version"])
        before = event["champion_after"]
    assert lineage, "at least one version was promoted"
    assert registry["champion"] == before == lineage[-1] and registry["lineage"] == lineage
    for version in exported:
        verify_bundle(data / "models" / ticker / "versions" / str(version))


def test_fifty_faulty_nightly_cycles_end_with_a_clean_lake_and_a_complete_registry(
    tmp_path: Path,
) -> None:
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning, r"yfinance\.")
    reset_yfinance(tmp_path / "yf")
    data = tmp_path / "data"
    config = RetrainConfig(
        tickers=list(FIRST_END),
        source="yfinance",
        start=None,
        # scale-free and shrunk toward naive: a version is never significantly worse
        # than naive, so the gate has champions to keep and challengers to judge
        features=["log_return"],
        target="close_log_return",
        lookback=5,
        horizon=1,
        model="lstm",
        units=[4],
        epochs=1,
        batch_size=64,
        data_dir=str(data),
    )
    adapter = FaultyAdapter(CHART_DIR, rate=FAULT_RATE, seed=SEED)
    session = ReplaySession(adapter)
    # one retry: some nights a ticker's retries run out and the next night catches up
    options = {"retries": 1, "retry_delay": 0.0, "max_retry_delay": 0.0}
    exported: dict[str, list[int]] = {t: [] for t in FIRST_END}
    gave_up, retried, modes = [], 0, set()
    started = time.monotonic()

    for cycle in range(CYCLES):
        ingested = {}
        for ticker in FIRST_END:
            try:
                result = ingest_ticker(
                    ticker,
                    "yfinance",
                    data,
                    end=cycle_end(ticker, cycle),
                    session=session,
                    options=options,
                    sleep=lambda _: None,
                )
            except TransientSourceError as exc:  # retries ran out: this night only
                gave_up.append((cycle, ticker, str(exc)))
                continue
            ingested[ticker] = result
            retried += len(result["retries"])
            modes.add(result["mode"])
            stored = lake.read_partition(data, ticker)
            assert not stored["date"].duplicated().any(), f"cycle {cycle}: duplicate days"
        ticker = list(FIRST_END)[cycle % 2]
        if ticker in ingested:  # a failed ingest fails that ticker's retrain, as in the flow
            event = retrain(data, ticker, ingested[ticker], config, tmp_path / f"work/{cycle}")
            exported[ticker].append(event["version"])

    elapsed = time.monotonic() - started
    print(
        f"soak: {CYCLES} cycles in {elapsed:.0f} s; {len(adapter.injected)} faults injected, "
        f"{retried} retries, {len(gave_up)} ticker-nights given up, modes {sorted(modes)}, "
        f"versions { ({t: len(v) for t, v in exported.items()}) }"
    )
    assert len(adapter.injected) >= CYCLES // 2 and retried > 0, "faults were injected"
    assert {"full", "incremental", "refetch"} <= modes
    # only transient failures, never one misread as "unknown ticker"
    assert all("gave up after 2 attempt(s)" in why for _, _, why in gave_up), gave_up

    final = {t: {"end": cycle_end(t, CYCLES - 1)} for t in FIRST_END}
    assert_same_lake(data, clean_lake(tmp_path, final), list(FIRST_END))
    leftovers = [p for p in (data / "lake").rglob(".*.tmp")]
    assert leftovers == []
    for ticker, versions in exported.items():
        assert len(versions) >= CYCLES // 2 - len(gave_up)
        assert_registry_complete(data, ticker, versions)
    full = pd.concat(lake.read_partition(data, t) for t in FIRST_END)
    assert len(full) == 49 + 252, "both recordings, every trading day once"
