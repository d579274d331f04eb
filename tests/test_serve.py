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
from tests.tiny_models import TICKER, copy_store, tiny_config
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
    assert model["window_rows"] == 21  # the band's 20 returns need one close more
    assert model["intervals"] == ["80", "95"] and model["error"] is None
    # what the bundle's SavedModel takes: the raw fields, lookback plus warm-up rows
    assert model["savedmodel_fields"] == ["close", "volume"]
    assert model["savedmodel_rows"] == 21  # lookback 20, at least 21 so the bands see 20 returns


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
        ({"ticker": TICKER, "window": [[1.0, 2.0]] * 19}, 422, "expected 20 to 21 rows"),
        ({"ticker": TICKER, "window": [[1.0, 2.0, 3.0]] * 20}, 422, "expected 20 to 21 rows"),
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


# -- the pages, the plots, the API description, the body limit (in-process) ---------------

PNG = b"\x89PNG\r\n\x1a\n"


def walk_forward_version(data: Path) -> int:
    """A new MSFT version: v3's files plus a real walk-forward backtest (2 expanding folds
    of the real engine, each "fit" a 3-day moving average, so no Keras) in its metadata,
    with backtest.json, backtest_predictions.parquet and folds.png, as retrain exports."""
    import json

    from tickercast.backtest.walkforward import walk_forward, write_backtest
    from tickercast.delivery.bundle import MANIFEST, bundle_path, write_bundle
    from tickercast.evaluation.baselines import flat_paths, moving_average_forecast
    from tickercast.evaluation.evaluate import target_weights

    def moving_average_fit(seen, anchors, spec, cfg, out_dir, logger):
        weights = target_weights(spec.target, spec.horizon, 1)

        def forecast(arrays, a):
            level = moving_average_forecast(arrays["close"], a, 3)
            return flat_paths(level, spec.horizon) @ weights.T

        return forecast, {"epochs_run": 0}

    prices = lake.read_partition(data, TICKER)
    from tickercast.sections import FitSpec, WalkForward

    config = tiny_config(data)
    out = data / "work" / "walk-forward"
    walk = WalkForward(walk_forward_folds=2, walk_forward_epochs=1)
    backtest = walk_forward(
        prices, config.preprocessing, FitSpec(), walk, out, fit=moving_average_fit, who=TICKER
    )
    paths = write_backtest(out, backtest, TICKER)
    source = bundle_path(data, TICKER, 3)
    files = {p.name: p for p in source.iterdir() if p.name not in (MANIFEST, "metadata.json")}
    files |= {
        "backtest.json": paths["backtest_json"],
        "backtest_predictions.parquet": paths["predictions"],
        "folds.png": paths["folds_png"],
    }
    metadata = json.loads((source / "metadata.json").read_text())
    metadata["walk_forward"] = {
        k: backtest[k] for k in ("n_folds", "epochs_per_fold", "summary", "folds")
    }
    return int(write_bundle(data, TICKER, files, metadata).name)


def page_store(folder: Path) -> Path:
    """Three model names: MSFT (champion v4 with a walk-forward backtest; history with a
    gate rejection, manual promotions and a rollback), AAPL (a copy of MSFT's v3 and its
    prices under another name, champion v1) and GOOG (a version, never promoted)."""
    import shutil

    from tickercast.delivery.gate import challenge
    from tickercast.delivery.registry import rollback

    data = copy_store(folder)
    promote(data, TICKER, 3)
    assert challenge(data, TICKER, 2)["action"] == "reject"  # far worse than naive
    assert walk_forward_version(data) == 4
    promote(data, TICKER, 4)
    promote(data, TICKER, 1)
    rollback(data, TICKER)  # back to v4
    versions = data / "models" / TICKER / "versions"
    shutil.copytree(versions / "3", data / "models" / "AAPL" / "versions" / "1")
    shutil.copytree(versions / "2", data / "models" / "GOOG" / "versions" / "1")
    lake.write_partition(data, "AAPL", lake.read_partition(data, TICKER).assign(ticker="AAPL"))
    promote(data, "AAPL", 1)
    return data


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """In-process client (real app, lifespan run) over `page_store`; tests only read."""
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app

    data = page_store(tmp_path_factory.mktemp("pages"))
    with TestClient(create_app(data)) as client:
        yield client, data


def cards(page: str) -> dict[str, str]:
    """Each model's section of the index page, by name."""
    import re

    return dict(re.findall(r'<section class="card[^"]*" id="([^"]+)">(.*?)</section>', page))


def links(page: str) -> list[str]:
    import re

    return re.findall(r'(?:src|href)="([^"]*)"', page)


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_index_shows_every_champion_with_forecast_verdict_figures_and_plots(pages):
    import html
    import json

    from tickercast.delivery.page import naive_test, price
    from tickercast.significance import verdict_text

    client, data = pages
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<title>Tickercast champions</title>" in page
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert all(link.startswith(("/", "#")) and not link.startswith("//") for link in links(page))
    sections = cards(page)
    assert sorted(sections) == ["AAPL", "GOOG", TICKER]
    assert "model GOOG has no champion" in sections["GOOG"] and "<img" not in sections["GOOG"]

    msft = sections[TICKER]
    meta = json.loads((data / f"models/{TICKER}/versions/4/metadata.json").read_text())
    verdict = verdict_text("naive", naive_test(meta["metrics"]))
    assert verdict.startswith(("beats naive", "worse than", "indistinguishable"))
    assert html.escape(verdict) in msft and 'class="tag">v4<' in msft
    (row,) = client.get(f"/forecast/{TICKER}").json()["forecasts"]
    for value in ("2020-12-11", price(row["forecast"]), price(row["last_close"])):
        assert value in msft
    assert f"{price(row['lo_80'])} – {price(row['hi_80'])}" in msft
    assert f"{price(row['lo_95'])} – {price(row['hi_95'])}" in msft
    assert f"{meta['metrics']['model']['rmse']:.4g}" in msft  # test split
    assert "2 expanding folds" in msft and "fold 2" in msft  # walk-forward
    pooled = meta["walk_forward"]["summary"]["significance"]["naive"]
    assert html.escape(verdict_text("naive", pooled)) in msft
    wf_rmse = meta["walk_forward"]["summary"]["metrics"]["model"]["rmse"]
    assert f"{wf_rmse['mean']:.4g} ± {wf_rmse['std']:.4g}" in msft

    images = {  # each image links to itself at full size: every URL twice, in order
        name: list(dict.fromkeys(link for link in links(section) if ".png" in link))
        for name, section in sections.items()
    }
    assert images[TICKER] == [
        f"/models/{TICKER}/plots/{p}.png?version=4"
        for p in ("forecast", "loss", "residuals", "folds")
    ]
    assert [i.split("/")[-1] for i in images["AAPL"]] == [
        f"{p}.png?version=1" for p in ("forecast", "loss", "residuals")
    ]
    assert "No walk-forward backtest" in sections["AAPL"]
    for src in images[TICKER] + images["AAPL"]:
        image = client.get(html.unescape(src))
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(PNG)
    served = client.get(f"/models/{TICKER}/plots/folds.png")  # no version: the champion's
    assert served.content == (data / f"models/{TICKER}/versions/4/folds.png").read_bytes()

    summary = page.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert summary.count("<tr>") == 1 + 3  # header + a row per model name
    assert price(row["forecast"]) in summary and price(row["lo_95"]) in summary
    assert 'class="stale"' in summary  # the sample data ends in 2020
    assert "model GOOG has no champion" in summary
    fan = msft.split('<svg class="fan"', 1)[1].split("</svg>", 1)[0]
    assert 'class="band-80"' in fan and 'class="band-95"' in fan and 'class="forecast"' in fan
    assert "<details><summary>Statistics behind the verdict" in msft
    assert 'href="/downloads/forecasts.csv"' in page


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_downloads_and_offline_docs(pages):
    import csv
    import io

    client, data = pages
    rows = client.get("/downloads/forecasts.json").json()
    assert {r["ticker"] for r in rows} == {TICKER, "AAPL"}
    text = client.get("/downloads/forecasts.csv")
    assert text.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(text.text)))
    assert [r["ticker"] for r in parsed] == [r["ticker"] for r in rows]
    assert float(parsed[0]["forecast"]) == pytest.approx(rows[0]["forecast"])
    test = client.get(f"/downloads/{TICKER}/v4/test.json").json()
    assert test and {"target_date", "actual", "model", "naive"} <= test[0].keys()
    assert client.get(f"/downloads/{TICKER}/v4/test.csv").text.startswith("anchor_date,")
    assert client.get(f"/downloads/{TICKER}/v9/test.csv").status_code == 404
    assert client.get(f"/tickers/{TICKER}").text.count("/test.csv") == 4  # every version
    docs = client.get("/docs").text
    assert "<script" not in docs and "cdn" not in docs.lower()
    assert "GET /forecast/{ticker}" in docs and "ForecastRow" in docs


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_ticker_page_lists_every_version_and_what_happened_to_it(pages):
    import re

    client, _ = pages
    response = client.get(f"/tickers/{TICKER}")
    assert response.status_code == 200, response.text
    page = response.text
    assert f"<title>{TICKER}: versions</title>" in page
    rows = re.findall(r"<tr( class=\"champion\")?><td class=\"text\">v(\d+)(.*?)</tr>", page)
    assert [(int(v), bool(c)) for c, v, _ in rows] == [
        (4, True),
        (3, False),
        (2, False),
        (1, False),
    ]
    by_version = {int(v): rest for _, v, rest in rows}
    assert "champion</span>" in by_version[4] and "served</span>" in by_version[4]
    assert "rejected by the gate" in by_version[2] and "worse than naive" in by_version[2]
    assert "rolled back to v4" in by_version[1] and "champion again (rollback)" in by_version[4]
    assert "promoted by hand" in by_version[3]
    assert "lineage v3 → v4" in page
    history = page.split("Registry history", 1)[1]
    assert history.count("<tr>") == 1 + 5  # header + every event, newest first
    assert history.index("rollback") < history.index("rejected by the gate")
    assert all(link.startswith("/") for link in links(page))

    aapl = client.get("/tickers/aapl")
    assert aapl.status_code == 200 and "promoted by hand" in aapl.text
    goog = client.get("/tickers/GOOG")
    assert goog.status_code == 200 and "never promoted" in goog.text
    unknown = client.get("/tickers/NOPE")
    assert unknown.status_code == 404 and "unknown ticker" in unknown.text
    assert unknown.headers["content-type"].startswith("text/html")
    assert client.get("/tickers/a%3Cb%3E").status_code == 422  # '<' is no ticker


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
@pytest.mark.parametrize(
    "path, status, message",
    [
        (f"/models/{TICKER}/plots/...png", 404, "no plot named '..'"),
        (f"/models/{TICKER}/plots/..%2Fmetadata.png", 404, "Not Found"),
        (f"/models/{TICKER}/plots/..%2F..%2Fregistry.png", 404, "Not Found"),
        (f"/models/{TICKER}/plots/metadata.png", 404, "no plot named 'metadata'"),
        (f"/models/{TICKER}/plots/manifest.png", 404, "no plot named 'manifest'"),
        (f"/models/{TICKER}/plots/chart.png", 404, "no plot named 'chart'"),
        ("/models/AAPL/plots/folds.png", 404, "version 1 has no folds.png"),
        (f"/models/{TICKER}/plots/loss.png?version=9", 404, "has no version 9"),
        ("/models/NOPE/plots/loss.png", 404, "unknown ticker"),
        ("/models/GOOG/plots/loss.png", 404, "no champion"),
        ("/models/..%2Fx/plots/loss.png", 404, "Not Found"),
    ],
)
def test_plots_are_only_the_named_pngs_a_manifest_lists(pages, path, status, message):
    client, _ = pages
    response = client.get(path)
    assert response.status_code == status and message in response.text


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_changed_plot_is_refused_and_unchanged_ones_revalidate(tmp_path):
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app

    data = copy_store(tmp_path)
    promote(data, TICKER, 3)
    with TestClient(create_app(data)) as client:
        first = client.get(f"/models/{TICKER}/plots/loss.png")
        assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
        again = client.get(
            f"/models/{TICKER}/plots/loss.png", headers={"if-none-match": first.headers["etag"]}
        )
        assert again.status_code == 304 and not again.content
        with (data / f"models/{TICKER}/versions/3/loss.png").open("ab") as handle:
            handle.write(b"tampered")
        refused = client.get(f"/models/{TICKER}/plots/loss.png")
        assert refused.status_code == 503 and "loss.png does not match its checksum" in refused.text
        assert client.get(f"/models/{TICKER}/plots/forecast.png").status_code == 200


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_openapi_documents_every_response():
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app

    spec = TestClient(create_app("unused")).get("/openapi.json").json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]

    def body(path, method="get", status="200", media="application/json"):
        return paths[path][method]["responses"][status]["content"][media]["schema"]

    assert body("/health") == {"$ref": "#/components/schemas/Health"}
    for path, method in (("/models", "get"), ("/reload", "post")):
        assert body(path, method)["items"] == {"$ref": "#/components/schemas/ModelInfo"}
    for path, method in (("/forecast/{ticker}", "get"), ("/predict", "post")):
        assert body(path, method) == {"$ref": "#/components/schemas/Forecast"}
        assert body(path, method, "404") == {"$ref": "#/components/schemas/ErrorDetail"}
    assert body("/predict", "post", "413") == {"$ref": "#/components/schemas/ErrorDetail"}
    assert (
        "image/png"
        in paths["/models/{ticker}/plots/{plot}.png"]["get"]["responses"]["200"]["content"]
    )
    for page in ("/", "/tickers/{ticker}"):
        assert "text/html" in paths[page]["get"]["responses"]["200"]["content"]
    row = schemas["ForecastRow"]["properties"]
    assert {"forecast", "lo_80", "hi_80", "lo_95", "hi_95", "as_of"} <= row.keys()
    assert {"serving", "champion", "error", "features"} <= schemas["ModelInfo"]["properties"].keys()
    for path, operations in paths.items():  # every route answers with a documented schema
        for method, operation in operations.items():
            assert operation["responses"]["200"].get("content"), (method, path)
            for media in operation["responses"]["200"]["content"].values():
                assert media.get("schema") or media == {}, (method, path)


def test_the_body_limit_is_part_of_the_app():
    """Through the app itself (httpx's ASGI transport, no server, no serve()): a declared
    or a chunked body over the limit gets 413; one under it reaches the route intact."""
    import asyncio

    from tickercast.app.service import MAX_BODY_BYTES, create_app

    async def calls():
        app = create_app("unused", max_body_bytes=1000)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            headers = {"content-type": "application/json"}
            big = b'{"ticker": "MSFT", "window": [' + b"[1.0, 2.0]," * 200 + b"[1.0]]}"
            declared = await client.post("/predict", content=big, headers=headers)

            async def chunks():
                for _ in range(10):
                    yield b" " * 200

            chunked = await client.post("/predict", content=chunks(), headers=headers)
            small = await client.post(
                "/predict", content=b'{"ticker": "../x", "window": [[1.0]]}', headers=headers
            )
        default = create_app("unused")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=default), base_url="http://app"
        ) as client:
            huge = await client.post("/predict", content=b" " * (MAX_BODY_BYTES + 1))
        return declared, chunked, small, huge

    declared, chunked, small, huge = asyncio.run(calls())
    assert "content-length" not in chunked.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json() == {"detail": "request body larger than 1000 bytes"}
    assert small.status_code == 422 and "invalid ticker" in small.text  # parsed by the route
    assert huge.status_code == 413 and f"larger than {MAX_BODY_BYTES} bytes" in huge.text


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_pages_escape_what_they_read(tmp_path):
    """A promotion reason is free text from whoever ran `models promote`: it is shown as
    text, never as markup."""
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app

    data = copy_store(tmp_path)
    hostile = '<img src="https://example.com/x.png" onerror="alert(1)">'
    promote(data, TICKER, 3, reason=hostile)
    with TestClient(create_app(data)) as client:
        for path in ("/", f"/tickers/{TICKER}"):
            page = client.get(path).text
            assert '<img src="https' not in page and not any(
                "example.com" in link for link in links(page)
            )
        page = client.get(f"/tickers/{TICKER}").text
        assert (
            "&lt;img src=&quot;https://example.com/x.png&quot; onerror=&quot;alert(1)&quot;&gt;"
            in page
        )


def test_every_forecast_served_is_kept_in_the_ledger_and_served_scored(tmp_path):
    """GET /forecast keeps what it issues (once per origin and version); GET /ledger
    serves the kept forecasts, scored once their days are in the lake."""
    from fastapi.testclient import TestClient

    from tickercast.app.service import create_app
    from tickercast.delivery import ledger

    data = copy_store(tmp_path)
    promote(data, TICKER, 3)
    full = lake.read_partition(data, TICKER)
    lake.write_partition(data, TICKER, full.iloc[:-10])  # the service sees an older lake
    with TestClient(create_app(data)) as client:
        assert client.get("/ledger/" + TICKER).status_code == 404  # nothing issued yet
        issued = client.get(f"/forecast/{TICKER}").json()["forecasts"][0]
        client.get(f"/forecast/{TICKER}")
        kept = ledger.read(data, TICKER)
        assert len(kept) == len(issued and [issued]) and kept["as_of"].iloc[0] == issued["as_of"]
        assert kept["bundle_sha"].iloc[0] and kept["data_sha"].iloc[0]
        lake.write_partition(data, TICKER, full)  # the truth arrives
        body = client.get("/ledger/" + TICKER.lower()).json()
        assert body["issued"] == 1 and len(body["scored"]) == 1
        row = body["scored"][0]
        assert row["realized"] > 0 and row["error"] == pytest.approx(
            row["forecast"] - row["realized"]
        )
        assert body["live"]["n"] == 1 and body["live"]["flag"] is None
        assert client.get("/ledger/..%2Fetc").status_code in (404, 422)
