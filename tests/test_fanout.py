"""Per-ticker branches: concurrent, independent, on threads or on a Dask cluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.test_flow import task_states
from tickercast.config import RetrainConfig

TINY = {"start": "2019-06-01", "lookback": 15, "horizon": 3, "epochs": 1, "units": [4, 4]}


def test_one_bad_ticker_never_stops_the_others(prefect_server, tmp_path, shared_data):
    from tickercast.flows.retrain import retrain

    folder = tmp_path / "csv"
    folder.mkdir()
    shutil.copy(shared_data / "prices" / "GOOG.csv", folder / "GOOG.csv")
    lines = (shared_data / "prices" / "AMZN.csv").read_text().splitlines()
    (folder / "AMZN.csv").write_text("\n".join(lines[:1] + lines[-20:]) + "\n")  # too short
    config = RetrainConfig(
        tickers=["AMZN", "GOOG"],
        source="csv",
        csv_dir=str(folder),
        data_dir=str(tmp_path),
        **TINY,
    )
    state = retrain(config, return_state=True)
    assert state.is_failed()
    assert "AMZN: InsufficientHistoryError" in state.message and "GOOG" not in state.message
    assert (tmp_path / "models/GOOG/versions/1/model.keras").is_file()
    assert not (tmp_path / "models/AMZN/versions").exists()
    states = task_states(state)
    assert "Completed" in states.values()


@pytest.mark.slow
def test_dask_local_cluster_with_two_workers(prefect_server, tmp_path):
    from tickercast.flows.retrain import retrain

    config = RetrainConfig(
        tickers=["MSFT", "NVDA"],
        task_runner="dask",
        max_workers=2,
        data_dir=str(tmp_path),
        **TINY,
    )
    state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    for ticker in ("MSFT", "NVDA"):
        assert Path(result[ticker]["bundle"]).joinpath("model.keras").is_file()
    assert set(task_states(state).values()) == {"Completed"}


def test_results_can_live_at_an_fsspec_url(prefect_server, tmp_path):
    """memory:// stands in for s3://: the same RemoteFileSystem path, no network."""
    import fsspec

    from tickercast.flows.retrain import retrain

    config = RetrainConfig(
        tickers=["MSFT"], data_dir=str(tmp_path), result_storage="memory://tc-results", **TINY
    )
    retrain(config)
    state = retrain(config, return_state=True)
    assert task_states(state)["train"] == "Cached"
    assert fsspec.filesystem("memory").ls("/tc-results")
    assert not (tmp_path / "results").exists()
