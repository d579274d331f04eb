"""The HTTP service, for real: `tickercast serve` in its own process on a free loopback
port, called with httpx. Endpoints, bad payloads, reload after a promotion, and a
tampered champion that is refused while the previous one keeps serving."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.serve_load import serve_process
from tests.tiny_models import TICKER, copy_store
from tickercast.delivery.registry import promote
from tickercast.market import lake

START_TIMEOUT_S = 180


@contextlib.contextmanager
def started_service(folder: Path) -> Iterator[tuple[httpx.Client, Path]]:
    """A private copy of the tiny models (champion v3) served by its own process."""
    data = copy_store(folder)
    promote(data, TICKER, 3)
    with (
        serve_process(data, folder / "server.log", start_timeout=START_TIMEOUT_S) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client, data


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """Shared by the tests that only read: none of them changes the store or the service."""
    with started_service(tmp_path_factory.mktemp("serve")) as running:
        yield running


@pytest.fixture
def own_service(tmp_path):
    """For a test that moves the champion or tampers with files: nobody else sees it."""
    with started_service(tmp_path) as running:
        yield running


def test_health_and_models(service):
    client, data = service
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models_loaded"] == 1
    (model,) = client.get("/models").json()
    assert model["name"] == TICKER and model["champion"] == 3 and model["serving"] == 3
    assert model["features"] == ["close", "volume"] and model["lookback"] == 20
    assert model["intervals"] == ["80", "95"] and model["error"] is None


def last_window(data) -> list[list[float]]:
    prices = lake.read_partition(data, TICKER)
    return prices[["close", "volume"]].tail(20).astype(float).to_numpy().tolist()


def test_forecast_and_predict_agree(service):
    client, data = service
    response = client.get(f"/forecast/{TICKER}")
    assert response.status_code == 200, response.text
    body = response.json()
    (row,) = body["forecasts"]
    assert body["version"] == 3 and row["as_of"] == "2020-12-11" and row["horizon"] == 5
    assert row["lo_95"] < row["lo_80"] < row["forecast"] < row["hi_80"] < row["hi_95"]
    posted = client.post("/predict", json={"ticker": "msft", "window": last_window(data)})
    assert posted.status_code == 200, posted.text
    (same,) = posted.json()["forecasts"]
    assert same["forecast"] == pytest.approx(row["forecast"], rel=1e-5)


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ({"ticker": TICKER, "window": [[1.0, 2.0]] * 19}, 422, "expected [20, 2]"),
        ({"ticker": TICKER, "window": [[1.0, 2.0, 3.0]] * 20}, 422, "expected [20, 2]"),
        ({"ticker": TICKER, "window": [[1.0, "x"]] * 20}, 422, "window"),
        ({"ticker": TICKER, "window": []}, 422, "window"),
        ({"ticker": TICKER}, 422, "window"),
        ({"ticker": TICKER, "window": [[1.0, 2.0]] * 20, "extra": 1}, 422, "extra"),
        ({"ticker": "AAPL", "window": [[1.0, 2.0]] * 20}, 404, "unknown ticker 'AAPL'"),
        ({"ticker": "../etc", "window": [[1.0, 2.0]] * 20}, 422, "invalid ticker"),
    ],
)
def test_bad_payloads_get_4xx_with_a_message(service, payload, status, message):
    client, _ = service
    response = client.post("/predict", json=payload)
    assert response.status_code == status, response.text
    assert message in response.text


def test_nan_malformed_and_huge_bodies(service):
    client, _ = service
    headers = {"content-type": "application/json"}
    nan = '{"ticker": "MSFT", "window": [' + ",".join(["[NaN, 1.0]"] * 20) + "]}"
    response = client.post("/predict", content=nan, headers=headers)
    assert response.status_code == 422 and "NaN" in response.text
    response = client.post("/predict", content='{"ticker": "MSFT", "window": [[1', headers=headers)
    assert response.status_code == 422 and "JSON" in response.text
    huge = '{"ticker": "MSFT", "window": [' + ",".join(["[1.0, 2.0]"] * 200_000) + "]}"
    response = client.post("/predict", content=huge, headers=headers)
    assert response.status_code == 413 and "larger than" in response.text

    def chunked():  # no Content-Length: the limit still holds
        yield b'{"ticker": "MSFT", "window": ['
        for _ in range(300):
            yield b"[1.0, 2.0]," * 500
        yield b"[1.0, 2.0]]}"

    response = client.post("/predict", content=chunked(), headers=headers)
    assert response.status_code == 413 and "larger than" in response.text
    assert client.get("/forecast/AAPL").status_code == 404
    assert client.get("/forecast/..%2Fx").status_code in (404, 422)
    assert client.get("/health").status_code == 200  # still serving


def test_reload_after_promotion_and_refusal_of_a_tampered_champion(own_service):
    client, data = own_service
    assert client.get(f"/forecast/{TICKER}").json()["version"] == 3
    promote(data, TICKER, 1)  # another process moves the champion
    assert client.get(f"/forecast/{TICKER}").json()["version"] == 1
    promote(data, TICKER, 2)
    with (data / f"models/{TICKER}/versions/2/model.keras").open("ab") as handle:
        handle.write(b"tampered")
    response = client.get(f"/forecast/{TICKER}")
    assert response.status_code == 200 and response.json()["version"] == 1
    (model,) = client.get("/models").json()
    assert model["champion"] == 2 and model["serving"] == 1
    assert "champion v2 refused" in model["error"]
    assert "model.keras does not match" in model["error"]
    assert client.post("/reload").status_code == 200
    assert client.get(f"/forecast/{TICKER}").json()["version"] == 1


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_forecasts_are_reused_until_the_lake_or_the_champion_changes(tmp_path, monkeypatch):
    """In-process (FastAPI's TestClient), counting the model work behind GET /forecast."""
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app
    from tickercast.delivery import predict

    data = copy_store(tmp_path)
    promote(data, TICKER, 3)
    calls = []
    real = predict.forecast_next

    def counted(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "forecast_next", counted)
    with TestClient(create_app(data)) as client:
        first = client.get(f"/forecast/{TICKER}").json()
        assert client.get(f"/forecast/{TICKER}").json() == first
        assert len(calls) == 1  # the second answer came from the first computation

        prices = lake.read_partition(data, TICKER)
        lake.write_partition(data, TICKER, prices.iloc[:-1])  # the lake changes
        changed = client.get(f"/forecast/{TICKER}").json()
        assert len(calls) == 2
        assert changed["forecasts"][0]["as_of"] < first["forecasts"][0]["as_of"]

        promote(data, TICKER, 1)  # the champion changes
        assert client.get(f"/forecast/{TICKER}").json()["version"] == 1
        assert len(calls) == 3
