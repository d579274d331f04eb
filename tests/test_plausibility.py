"""The plausibility gate on served forecasts (issue 25): a bad print, an absurd window or
a model gone wrong is refused with a named reason (503 over HTTP, one line in the CLI),
never served; bodies with NaN/inf get a 422 that renders; a damaged champion is a 503
naming the damage; `serve` on a folder without a registry says so."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.tiny_models import TICKER, copy_store
from tickercast.delivery import plausibility
from tickercast.delivery.plausibility import Refused
from tickercast.delivery.predict import forecast_next, forecast_window
from tickercast.delivery.registry import list_models, load_champion, promote
from tickercast.market import lake

META = {"plausibility": {"close_min": 100.0, "close_max": 150.0, "daily_volatility": 0.02}}


# ------------------------------------------------------------------------ the library


def test_the_threshold_is_sigmas_over_the_horizon_never_under_a_factor_two():
    assert plausibility.max_log_move(0.02, 1) == pytest.approx(math.log(2))  # floor
    assert plausibility.max_log_move(0.05, 4) == pytest.approx(10 * 0.05 * 2)
    assert plausibility.max_log_move(0.05, 0) == plausibility.max_log_move(0.05, 1)


@pytest.mark.parametrize(
    "forecast, reason",
    [
        ([[math.nan]], plausibility.NON_FINITE),
        ([[math.inf]], plausibility.NON_FINITE),
        ([[-0.53]], plausibility.NON_POSITIVE),
        ([[0.0]], plausibility.NON_POSITIVE),
        ([[122_410.0]], plausibility.FAR_FROM_CLOSE),  # 1,000x the last close
        ([[50.0]], plausibility.FAR_FROM_CLOSE),
    ],
)
def test_a_forecast_that_is_not_a_plausible_price_is_refused_naming_why(forecast, reason):
    with pytest.raises(Refused) as info:
        plausibility.check_forecast("AAPL", forecast, 122.41, META, horizon=1)
    assert info.value.reason == reason and not info.value.of_input
    assert str(info.value).startswith(f"ticker AAPL: forecast refused ({reason})")
    ok = plausibility.check_forecast("AAPL", [[130.0]], 122.41, META, horizon=1)
    assert ok[0, 0] == 130.0


def test_closes_with_a_bad_print_or_far_from_training_are_refused():
    closes = np.full(40, 122.41)
    plausibility.check_closes("AAPL", closes, META)  # fine
    bad = closes.copy()
    bad[-1] *= 1000
    with pytest.raises(Refused, match=r"implausible jump.*close 122410 at row 40 after 122.41"):
        plausibility.check_closes("AAPL", bad, META)
    reverting = closes.copy()
    reverting[20] *= 1000  # a print that reverts, inside the window
    with pytest.raises(Refused, match="implausible jump"):
        plausibility.check_closes("AAPL", reverting, META)
    with pytest.raises(Refused, match="far outside the training range"):
        plausibility.check_closes("AAPL", np.full(40, 1.0), META)  # 60 closes of 1.0
    with pytest.raises(Refused, match="absurd price"):
        plausibility.check_closes("AAPL", np.full(40, 1e300), META)
    with pytest.raises(Refused, match="non-finite"):
        plausibility.check_closes("AAPL", [122.0, math.inf], META)


@pytest.mark.parametrize("scale", [0.05, 50.0])  # MSFT 2019-20 ($97-232) as $5-12, $5-12k
def test_the_exports_probe_windows_lie_in_the_tickers_own_training_closes(scale):
    """The export checks its SavedModel against predict on probe windows. With the default
    features (no close among them) the probes sat at ~$100 whatever the ticker's price, so
    predict refused them as far outside a $9-16 ticker's training closes while the graph
    answered, and that ticker could never be exported (measured in a 500-ticker night)."""
    from tickercast.config import RetrainConfig
    from tickercast.delivery.servable import probe_prices
    from tickercast.market.sources import load_sample
    from tickercast.modeling.preprocess import preprocess

    prices = load_sample(TICKER).prices
    prices = prices[prices["date"].astype(str) >= "2019-01-01"].reset_index(drop=True)
    for name in ("open", "high", "low", "close"):
        prices[name] = prices[name] * scale
    config = RetrainConfig()
    assert "close" not in config.preprocessing.features
    spec, arrays = preprocess(prices, config.preprocessing, who=TICKER)
    train = prices[prices["date"].astype(str) <= str(spec.train_end)]
    metadata = {"plausibility": plausibility.training_range(train["close"], str(spec.train_end))}
    for seed in (0, 1):
        probe = probe_prices(spec, 100, seed, metadata)
        lo, hi = metadata["plausibility"]["close_min"], metadata["plausibility"]["close_max"]
        assert lo / 1.5 < probe["close"].min() and probe["close"].max() < hi * 1.5
        plausibility.check_closes("probe", probe["close"], metadata)  # not Refused


# --------------------------------------------------------------- served from a champion


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data_dir = copy_store(tmp_path_factory.mktemp("plausible"))
    promote(data_dir, TICKER, 3)
    return data_dir


def test_the_bundle_records_its_training_range(data):
    recorded = load_champion(data, TICKER).metadata["plausibility"]
    assert 0 < recorded["close_min"] < recorded["close_max"]
    assert 0 < recorded["daily_volatility"] < 0.1
    assert recorded["train_end"] and "sqrt(days)" in recorded["threshold"]


def test_a_bad_last_print_in_the_lake_is_never_a_forecast(data):
    bundle = load_champion(data, TICKER)
    prices = lake.read_partition(data, TICKER)
    (good,) = forecast_next(bundle, prices, TICKER)
    assert good["lo_95"] > 0
    bad = prices.copy()
    bad.loc[bad.index[-1], "close"] *= 1000
    with pytest.raises(Refused, match=rf"ticker {TICKER}: forecast refused \(implausible jump"):
        forecast_next(bundle, bad, TICKER)


@pytest.mark.parametrize(
    "output, reason",
    [(math.nan, "non-finite"), (-50.0, "non-positive"), (40.0, "implausibly far")],
)
def test_a_model_gone_wrong_is_refused(data, monkeypatch, output, reason):
    """Whatever the network answers (scaled), the price served must be plausible."""
    import dataclasses

    def gone_wrong(window, training=False):  # the network's answer, scaled
        return np.array([[output]])

    bundle = dataclasses.replace(load_champion(data, TICKER), model=gone_wrong)
    with pytest.raises(Refused, match=reason):
        forecast_next(bundle, lake.read_partition(data, TICKER), TICKER)


def test_a_window_a_thousand_times_the_training_range_is_refused(data):
    """The old guard (1,000 training ranges) let 1,000x through; a window of 1.0 closes
    answered -0.53."""
    bundle = load_champion(data, TICKER)
    prices = lake.read_partition(data, TICKER).tail(20)
    window = prices[["close", "volume"]].to_numpy(dtype=float)
    for factor in (1000.0, 1e-3):
        scaled = window.copy()
        scaled[:, 0] *= factor
        with pytest.raises(Refused, match="far outside the training range") as info:
            forecast_window(bundle, scaled.tolist(), TICKER)
        assert info.value.of_input
    flat = window.copy()
    flat[:, 0] = 1.0
    with pytest.raises(Refused, match="far outside the training range"):
        forecast_window(bundle, flat.tolist(), TICKER)


# ------------------------------------------------------------------------------ HTTP


@pytest.fixture
def client(tmp_path):
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app

    data_dir = copy_store(tmp_path)
    promote(data_dir, TICKER, 3)
    with TestClient(create_app(data_dir)) as test_client:
        yield test_client, data_dir


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_http_refuses_a_bad_print_with_503_and_the_page_says_why(client):
    http, data_dir = client
    prices = lake.read_partition(data_dir, TICKER)
    prices.loc[prices.index[-1], "close"] *= 1000
    lake.write_partition(data_dir, TICKER, prices)
    response = http.get(f"/forecast/{TICKER}")
    assert response.status_code == 503
    assert "forecast refused (implausible jump" in response.json()["detail"]
    page = http.get("/")
    assert page.status_code == 200 and "implausible jump" in page.text
    assert "122410" not in page.text


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_http_answers_nan_infinity_and_overflow_with_a_422_that_renders(client):
    http, data_dir = client
    window = lake.read_partition(data_dir, TICKER)[["close", "volume"]].tail(20)
    rows = ",".join(f"[{c}, {v}]" for c, v in window.to_numpy(dtype=float))
    headers = {"content-type": "application/json"}
    for last_close in ("NaN", "Infinity", "-Infinity", "1e999999"):
        body = f'{{"ticker": "{TICKER}", "window": [{rows}], "last_close": {last_close}}}'
        response = http.post("/predict", content=body, headers=headers)
        assert response.status_code == 422, response.text
        assert "last_close" in response.text
    for body in ("1e999999", "NaN", '{"ticker": "MSFT", "window": [[1e999999, 1.0]]}'):
        response = http.post("/predict", content=body, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["detail"]
    thousandfold = [[c * 1000, v] for c, v in window.to_numpy(dtype=float)]
    response = http.post("/predict", json={"ticker": TICKER, "window": thousandfold})
    assert response.status_code == 422 and "far outside the training range" in response.text
    assert http.get("/health").status_code == 200


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_damaged_champion_is_a_503_naming_the_damage_and_models_list_flags_it(tmp_path):
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app

    data_dir = copy_store(tmp_path)
    promote(data_dir, TICKER, 3)
    with (data_dir / f"models/{TICKER}/versions/3/model.keras").open("ab") as handle:
        handle.write(b"tampered")
    with TestClient(create_app(data_dir)) as http:  # nothing loaded before: nothing kept
        response = http.get(f"/forecast/{TICKER}")
        assert response.status_code == 503, response.text
        assert "champion v3 refused" in response.text and "model.keras" in response.text
        assert http.get("/forecast/AAPL").status_code == 404  # unknown stays unknown
    (row,) = list_models(data_dir)
    assert row["champion"] == 3 and "champion v3 is damaged" in row["problem"]


def test_serve_refuses_a_folder_without_a_registry(tmp_path, capsys):
    from tickercast.app.cli import main

    assert main(["serve", "--data-dir", str(tmp_path / "typo")]) == 1
    err = capsys.readouterr().err
    assert "no model registry under" in err and "typo" in err


def test_predict_refuses_a_bad_print_in_one_line(prefect_server, tmp_path):
    """The predict flow (what `tickercast predict` prints as `T: failed: <line>`)."""
    from tickercast.config import PredictConfig
    from tickercast.flows.predict import predict
    from tickercast.layout import forecasts_dir

    data_dir = copy_store(tmp_path)
    promote(data_dir, TICKER, 3)
    prices = lake.read_partition(data_dir, TICKER)
    prices.loc[prices.index[-1], "close"] *= 1000
    lake.write_partition(data_dir, TICKER, prices)
    config = PredictConfig(tickers=[TICKER], data_dir=str(data_dir))
    state = predict(config, return_state=True)
    assert state.is_failed()
    line = state.result(raise_on_failure=False)["failed"][TICKER]
    assert "forecast refused (implausible jump in the closes)" in line
    assert "\n" not in line
    assert not list(forecasts_dir(data_dir).glob("*.parquet"))  # nothing written
