"""HTTP service for the champions: FastAPI + uvicorn, loopback by default.

    GET  /health               liveness, how many champions are loaded
    GET  /models               every model: registry champion, the version served, errors
    GET  /forecast/{ticker}    next-horizon forecast from the latest lake rows, with intervals
    POST /predict              {"ticker": "AAPL", "window": [[f1, f2, ...], ...]}: lookback
                               rows (oldest first) of the model's features, raw prices, or
                               up to `window_rows` (GET /models) for GET /forecast's band;
                               "last_close" too when the features do not include close
    POST /reload               re-read every registry and reload changed champions
    GET  /                     HTML: every champion, its latest forecast and bands, its
                               verdict against naive, test and walk-forward figures, plots
    GET  /tickers/{ticker}     HTML: every version of one model and the registry's history
    GET  /models/{ticker}/plots/{name}.png
                               a plot of the served champion (or of ?version=N): only
                               forecast, loss, residuals, folds; listed in the manifest,
                               checksum verified
    GET  /docs, /openapi.json  the API, every response's schema included

Every request body is bounded by MAX_BODY_BYTES in the app itself (`BodyLimit`), chunked
uploads without Content-Length included: 413 before anything parses it.

Each request stats the ticker's registry.json; when it changed (a promotion, a
rollback) the new champion is loaded before answering, without a restart. A champion
that fails verification (missing file, checksum mismatch) is refused and the service
keeps serving the version it had, reporting the refusal in /models.

A champion's forecast from the lake changes only when the model or the ticker's lake
partition does (every lake write is an atomic rename: a new inode), so GET /forecast
answers from the last forecast while both are unchanged; concurrent requests for the
same ticker wait for one computation instead of repeating it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tickercast.delivery.plausibility import Refused
from tickercast.errors import CorruptPartitionError
from tickercast.evaluation.jsonsafe import clean
from tickercast.tickers import InvalidTickerError, validate_ticker

if TYPE_CHECKING:
    from tickercast.delivery.page import ChampionView

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a 1000 x 10 window of floats is ~200 kB of JSON
MAX_WINDOW_ROWS = 5000
MAX_FEATURES = 64


class UnknownModel(LookupError):
    """No champion to serve for this name."""


class DamagedModel(LookupError):
    """A champion exists but cannot be served (damaged bundle, unreadable registry): 503."""


@dataclass
class Served:
    """The champion a name is served with, and the registry state it was loaded from."""

    bundle: object | None
    stamp: tuple | None
    error: str | None = None
    damaged: bool = False  # the registry names a champion that cannot be loaded
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (lake partition stamp, forecast rows) of the last GET /forecast with this champion
    last_forecast: tuple[tuple, list[dict]] | None = None


class Champions:
    """Loaded champions, reloaded when their registry.json changes (stat per request)."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.served: dict[str, Served] = {}
        self._lock = threading.Lock()

    def _stamp(self, name: str) -> tuple | None:
        from tickercast.delivery.registry import registry_path

        return _file_stamp(registry_path(self.data_dir, name))

    def get(self, name: str) -> Served:
        """The served entry for `name`, refreshed first if its registry changed."""
        name = validate_ticker(name)
        entry = self.served.get(name)
        if entry is None or entry.stamp != self._stamp(name):
            entry = self.refresh(name)
        if entry.bundle is None:
            if entry.damaged:
                raise DamagedModel(entry.error)
            raise UnknownModel(entry.error or f"no champion for {name}")
        return entry

    def refresh(self, name: str, force: bool = False) -> Served:
        """Re-read the registry; load a new champion, keeping the old one if it is refused."""
        from tickercast.delivery.bundle import BundleError, bundle_path, load_bundle
        from tickercast.delivery.registry import RegistryError, read_registry

        with self._lock:
            stamp = self._stamp(name)
            old = self.served.get(name)
            if old is not None and old.stamp == stamp and not force:
                return old
            keep = old.bundle if old else None
            try:
                champion = read_registry(self.data_dir, name)["champion"]
            except RegistryError as exc:
                entry = Served(keep, stamp, f"registry unreadable: {exc}", damaged=True)
            else:
                if champion is None:
                    entry = Served(None, stamp, f"model {name} has no champion")
                elif keep is not None and keep.version == champion and not force:
                    entry = Served(keep, stamp)
                else:
                    try:
                        entry = Served(
                            load_bundle(bundle_path(self.data_dir, name, champion)), stamp
                        )
                    except (BundleError, FileNotFoundError, OSError) as exc:
                        serving = f"; still serving v{keep.version}" if keep else ""
                        why = f"champion v{champion} refused: {exc}{serving}"
                        entry = Served(keep, stamp, why, damaged=True)
            if old is not None and entry.bundle is old.bundle:
                entry.lock = old.lock
            if stamp is not None or entry.bundle is not None:
                self.served[name] = entry  # never grows for names nobody registered
            return entry

    def names(self) -> list[str]:
        from tickercast.delivery.registry import model_names

        loaded = {name for name, entry in self.served.items() if entry.bundle is not None}
        return sorted(set(model_names(self.data_dir)) | loaded)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticker: str = Field(min_length=1, max_length=20, description="model name (the ticker)")
    window: list[list[float]] = Field(
        min_length=1,
        max_length=MAX_WINDOW_ROWS,
        description="lookback rows, oldest first, of the model's features in raw units; up "
        "to window_rows (GET /models) give the band the returns GET /forecast's band reads",
    )
    last_close: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="the close of the window's last day: needed when the model forecasts a "
        "return from it and its features do not include close (the recommended default)",
    )


class Health(BaseModel):
    status: Literal["ok"]
    data_dir: str
    models_loaded: int = Field(description="model names with a champion loaded")


class ModelInfo(BaseModel):
    """One model name: the registry's champion, the version served, why they differ."""

    name: str
    champion: int | None = Field(
        description="the registry's champion version (null in POST /reload's answer)"
    )
    serving: int | None = Field(description="the version this service answers with")
    error: str | None = Field(
        description="why the champion is not served (refused, unreadable registry), if so"
    )
    features: list[str] | None = None
    lookback: int | None = None
    window_rows: int | None = Field(
        None,
        description="most rows a POST /predict window may hold: the lookback feeds the "
        "network, the rows before it the band (the same band as GET /forecast)",
    )
    horizon: int | None = None
    target: str | None = None
    intervals: list[str] | None = Field(None, description="conformal levels, e.g. ['80', '95']")
    trained_to: str | None = Field(None, description="the last day of the training data")
    savedmodel_fields: list[str] | None = Field(
        None,
        description="the raw window the bundle's SavedModel takes (serving_default): these "
        "lake fields per row, oldest day first (serving.json)",
    )
    savedmodel_rows: int | None = Field(
        None, description="rows of that raw window: the lookback plus the features' warm-up"
    )


class ForecastRow(BaseModel):
    """One output of a forecast; lo_<level>/hi_<level> per conformal level of the bundle."""

    model_config = ConfigDict(extra="allow")

    ticker: str
    version: int
    as_of: str = Field(description='the last day of the window ("window" for POST /predict)')
    horizon: int
    target: str
    output: int
    last_close: float | None
    forecast: float = Field(description="in price units")
    lo_80: float | None = None
    hi_80: float | None = None
    lo_95: float | None = None
    hi_95: float | None = None
    quantile_levels: list[float] | None = Field(
        None,
        description="the grid (tickercast.choices.QUANTILES) of a quantile head or of the "
        "variance-recursion band the version ships (GJR-GARCH(1,1)-t by default); null "
        "for the 20-day volatility band",
    )
    quantiles: list[float] | None = Field(
        None,
        description="this output's calibrated quantiles in prices, one per level, never "
        "decreasing (the 0.5 level is the forecast); null without a grid",
    )


class Forecast(BaseModel):
    ticker: str
    version: int
    forecasts: list[ForecastRow]


class ErrorDetail(BaseModel):
    detail: str


def errors(*codes: int) -> dict:
    """OpenAPI entries for the error answers a route gives: {"detail": message}."""
    what = {
        404: "unknown ticker, version or file",
        413: "request body too large",
        422: "an invalid ticker or request",
        503: "stored data fails verification or cannot be read, or the forecast is "
        "refused as implausible (the reason named)",
    }
    return {code: {"model": ErrorDetail, "description": what[code]} for code in codes}


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before any parsing.

    The body is read (up to the limit) before the app runs and then replayed to it, so a
    chunked upload without Content-Length is bounded too.
    """

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def _reject(self, send) -> None:
        body = b'{"detail":"request body larger than %d bytes"}' % self.limit
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._reject(send)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _describe(name: str, entry: Served | None, champion) -> dict:
    from tickercast.delivery.predict import window_rows

    row = {"name": name, "champion": champion, "serving": None, "error": None}
    if entry is not None:
        row["error"] = entry.error
        if entry.bundle is not None:
            b = entry.bundle
            row.update(
                serving=b.version,
                features=b.spec.features,
                lookback=b.spec.lookback,
                window_rows=window_rows(b)[1],
                horizon=b.spec.horizon,
                target=b.spec.target,
                intervals=sorted((b.metadata.get("intervals") or {}).keys()),
                trained_to=b.metadata.get("data", {}).get("last_day"),
                savedmodel_fields=(b.metadata.get("serving") or {}).get("fields"),
                savedmodel_rows=(b.metadata.get("serving") or {}).get("rows"),
            )
    return row


def _file_stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def create_app(data_dir: str | Path, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The service over `data_dir`; champions load at start-up and on registry changes.
    Request bodies over `max_body_bytes` get 413 (`BodyLimit`, part of the app)."""
    from contextlib import asynccontextmanager

    service = Service(data_dir)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        for name in service.champions.names():
            service.champions.refresh(name)
        yield

    app = FastAPI(
        title="Tickercast",
        description="Forecasts from the registry's champion models. The page at `/` shows "
        "every champion; `/tickers/{ticker}` one model's versions.",
        lifespan=lifespan,
        docs_url=None,  # /docs is served below from the schema alone: no CDN, works offline
        redoc_url=None,
    )
    app.state.champions = service.champions
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_exception_handler(RequestValidationError, invalid_request)
    add_api_routes(app, service)
    add_ledger_and_predict_routes(app, service)
    add_page_routes(app, service)
    add_plot_routes(app, service)
    add_docs_and_downloads(app, service.champions, service.champion_view)
    return app


class Service:
    """What every route shares: the champions served from `data_dir`, their latest
    forecasts (kept in the ledger), and what the pages show about each."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = data_dir
        self.champions = Champions(data_dir)

    def lookup(self, ticker: str) -> Served:
        try:
            return self.champions.get(ticker)
        except InvalidTickerError as exc:
            raise HTTPException(422, str(exc)) from exc
        except UnknownModel as exc:
            raise HTTPException(404, f"unknown ticker {ticker!r}: {exc}") from exc
        except DamagedModel as exc:
            raise HTTPException(503, f"model {ticker}: {exc}") from exc

    def latest_forecast(self, entry: Served, name: str) -> list[dict]:
        """The forecast from the lake's latest rows, reused while lake and model stay."""
        from tickercast.delivery.predict import forecast_next
        from tickercast.market import lake

        try:
            with entry.lock:
                stamp = _file_stamp(lake.partition_path(self.champions.data_dir, name))
                if entry.last_forecast is not None and entry.last_forecast[0] == stamp:
                    return entry.last_forecast[1]
                prices = lake.read_partition(self.champions.data_dir, name)
                rows = forecast_next(entry.bundle, prices, name)
                entry.last_forecast = (stamp, rows)
                self.keep_issued(rows)
                return rows
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except (CorruptPartitionError, Refused) as exc:
            raise HTTPException(503, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    def keep_issued(self, rows: list[dict]) -> None:
        """Every forecast served goes into the ledger once; a failure to record it is
        logged, and the forecast is still served."""
        from tickercast.delivery import ledger

        try:
            ledger.append(self.champions.data_dir, rows)
        except Exception:  # noqa: BLE001 - recording must never block serving
            logging.getLogger(__name__).exception("could not record the forecast in the ledger")

    def registry_champion(self, name: str) -> int | None:
        from tickercast.delivery.registry import RegistryError, read_registry

        try:
            return read_registry(self.data_dir, name)["champion"]
        except RegistryError:
            return None

    def champion_view(self, name: str) -> ChampionView:
        """What the pages show about `name`: its served champion and latest forecast, or
        why there is none."""
        from tickercast.delivery.page import ChampionView

        view = ChampionView(name, self.registry_champion(name))
        try:
            entry = self.champions.get(name)
        except (UnknownModel, DamagedModel, InvalidTickerError) as exc:
            view.error = str(exc)
            return view
        view.bundle, view.error = entry.bundle, entry.error
        try:
            view.forecast = self.latest_forecast(entry, name)
        except HTTPException as exc:
            view.forecast_error = str(exc.detail)
        else:
            view.history = self.recent_closes(name)
        if entry.bundle is not None:
            from tickercast.delivery.live_page import live_fragment

            view.live = live_fragment(self.champions.data_dir, name, entry.bundle.version)
        return view

    def recent_closes(self, name: str) -> tuple[list[str], list[float]] | None:
        """The last ~6 months of closes the fan chart starts from (None if unreadable)."""
        from tickercast.market import lake

        try:
            tail = lake.read_partition(self.champions.data_dir, name).tail(HISTORY_DAYS)
        except (OSError, ValueError, CorruptPartitionError):
            return None
        return [str(d)[:10] for d in tail["date"]], [float(c) for c in tail["close"]]


def add_api_routes(app: FastAPI, service: Service) -> None:
    """The JSON API about the champions: health, models, reload, their forecasts."""

    @app.get("/health", response_model=Health)
    def health() -> dict:
        loaded = sum(1 for e in service.champions.served.values() if e.bundle is not None)
        return {
            "status": "ok",
            "data_dir": str(service.champions.data_dir),
            "models_loaded": loaded,
        }

    @app.get("/models", response_model=list[ModelInfo])
    def models() -> list[dict]:
        rows = []
        for name in service.champions.names():
            try:
                service.champions.get(name)
            except (UnknownModel, DamagedModel):
                pass
            rows.append(
                _describe(name, service.champions.served.get(name), service.registry_champion(name))
            )
        return rows

    @app.post("/reload", response_model=list[ModelInfo], responses=errors(413))
    def reload() -> list[dict]:
        return [
            _describe(name, service.champions.refresh(name, force=True), None)
            for name in service.champions.names()
        ]

    @app.get("/forecast/{ticker}", response_model=Forecast, responses=errors(404, 503))
    def forecast(ticker: str) -> dict:
        entry = service.lookup(ticker)
        name = validate_ticker(ticker)
        rows = service.latest_forecast(entry, name)
        return {"ticker": name, "version": entry.bundle.version, "forecasts": rows}


def add_ledger_and_predict_routes(app: FastAPI, service: Service) -> None:
    """The forecasts published (the ledger) and a forecast from a window sent in."""

    @app.get("/ledger/{ticker}", responses=errors(404, 422))
    def ledger_rows(ticker: str) -> dict:
        """The forecasts this ticker's champions published, scored where the truth has
        arrived, and the live record (skill vs naive, coverage, a flag)."""
        from tickercast.delivery import ledger

        try:
            name = validate_ticker(ticker)
        except InvalidTickerError as exc:
            raise HTTPException(422, str(exc)) from exc
        kept = ledger.read(service.champions.data_dir, name)
        if kept.empty:
            raise HTTPException(404, f"no forecast of {name} in the ledger")
        scored = ledger.score(service.champions.data_dir, name)
        return {
            "ticker": name,
            "issued": len(kept),
            "live": clean(ledger.live_record(scored)),  # NaN -> null
            "scored": json.loads(scored.to_json(orient="records", date_format="iso")),
        }

    @app.post("/predict", response_model=Forecast, responses=errors(404, 413, 503))
    def predict(request: PredictRequest) -> dict:
        from tickercast.delivery.predict import forecast_window

        entry = service.lookup(request.ticker)
        name = validate_ticker(request.ticker)
        if any(len(row) > MAX_FEATURES for row in request.window):
            raise HTTPException(422, f"window rows may hold at most {MAX_FEATURES} features")
        try:
            with entry.lock:
                rows = forecast_window(entry.bundle, request.window, name, request.last_close)
        except Refused as exc:
            raise HTTPException(422 if exc.of_input else 503, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"ticker": name, "version": entry.bundle.version, "forecasts": rows}


def add_page_routes(app: FastAPI, service: Service) -> None:
    """The HTML pages: every champion, one model's versions."""

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        """Every champion: forecast and bands, verdict against naive, figures, plots."""
        from tickercast.delivery.page import index_page

        return index_page(
            [service.champion_view(n) for n in service.champions.names()],
            service.champions.data_dir,
        )

    @app.get(
        "/tickers/{ticker}",
        response_class=HTMLResponse,
        responses={
            404: {"description": "unknown ticker (an HTML page saying so)"},
            503: {"description": "the registry cannot be read (an HTML page saying so)"},
        },
    )
    def ticker_page(ticker: str) -> HTMLResponse:
        """One model: every version, the champion marked, and the registry's history."""
        from tickercast.delivery import page
        from tickercast.delivery.bundle import versions_dir
        from tickercast.delivery.registry import RegistryError, model_names, show

        def problem(status: int, message: str) -> HTMLResponse:
            return HTMLResponse(page.error_page(status, message), status_code=status)

        try:
            name = validate_ticker(ticker)
        except InvalidTickerError as exc:
            return problem(422, str(exc))
        if name not in model_names(service.champions.data_dir):
            return problem(404, f"unknown ticker {ticker!r}")
        try:
            shown = show(service.champions.data_dir, name)
        except RegistryError as exc:
            return problem(503, str(exc))
        view = service.champion_view(name)
        served = view.bundle.version if view.bundle is not None else None
        folder = versions_dir(service.champions.data_dir, name)
        return HTMLResponse(page.ticker_page(name, shown, folder, served, view.error))


def add_plot_routes(app: FastAPI, service: Service) -> None:
    """The bundles' plots, checked against their manifest, with an ETag."""

    @app.get(
        "/models/{ticker}/plots/{plot}.png",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "the PNG"},
            **errors(404, 503),
        },
    )
    def plot(ticker: str, plot: str, request: Request, version: int | None = None) -> Response:
        """A plot of the served champion, or of `version`: forecast, loss, residuals or
        folds, only if the bundle's manifest lists it and its checksum matches."""
        from tickercast.delivery.bundle import BundleError, bundle_path, list_versions
        from tickercast.delivery.page import plot_bytes

        if version is None:
            path = service.lookup(ticker).bundle.path
        else:
            try:
                name = validate_ticker(ticker)
            except InvalidTickerError as exc:
                raise HTTPException(422, str(exc)) from exc
            if version not in list_versions(service.champions.data_dir, name):
                raise HTTPException(404, f"model {name} has no version {version}")
            path = bundle_path(service.champions.data_dir, name, version)
        try:
            data, digest = plot_bytes(path, plot)
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except BundleError as exc:
            raise HTTPException(503, str(exc)) from exc
        etag = '"' + digest[:32] + '"'
        headers = {"Cache-Control": "no-cache", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/png", headers=headers)


HISTORY_DAYS = 126  # about six months of trading days before the forecast


def add_docs_and_downloads(app: FastAPI, champions: Champions, champion_view) -> None:
    """`/docs` (the API from its own schema, self-contained) and the downloads: the latest
    forecasts of every champion, a version's test predictions, as CSV or JSON."""
    from fastapi.responses import JSONResponse, PlainTextResponse

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> str:
        from tickercast.delivery.apidocs import api_page

        return api_page(app.openapi())

    def as_download(rows: list[dict], fmt: Literal["csv", "json"], name: str) -> Response:
        from tickercast.delivery.downloads import to_csv

        disposition = {"Content-Disposition": f'attachment; filename="{name}.{fmt}"'}
        if fmt == "json":
            return JSONResponse(rows, headers=disposition)
        return PlainTextResponse(to_csv(rows), media_type="text/csv", headers=disposition)

    files = {200: {"content": {"text/csv": {}, "application/json": {}}, "description": "a file"}}

    @app.get("/downloads/forecasts.{fmt}", response_class=Response, responses=files)
    def forecasts_download(fmt: Literal["csv", "json"]) -> Response:
        """The latest forecast of every champion, one row per ticker and output."""
        rows = [r for n in champions.names() for r in champion_view(n).forecast]
        return as_download(rows, fmt, "forecasts")

    @app.get(
        "/downloads/{ticker}/v{version}/test.{fmt}",
        response_class=Response,
        responses={**files, **errors(404, 503)},
    )
    def test_download(ticker: str, version: int, fmt: Literal["csv", "json"]) -> Response:
        """A version's test-split predictions: every forecaster, the actual, the bands."""
        from tickercast.delivery.bundle import BundleError, bundle_path, list_versions
        from tickercast.delivery.downloads import test_predictions

        try:
            name = validate_ticker(ticker)
        except InvalidTickerError as exc:
            raise HTTPException(422, str(exc)) from exc
        if version not in list_versions(champions.data_dir, name):
            raise HTTPException(404, f"model {name} has no version {version}")
        try:
            rows = test_predictions(bundle_path(champions.data_dir, name, version))
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except BundleError as exc:
            raise HTTPException(503, str(exc)) from exc
        return as_download(rows, fmt, f"{name}-v{version}-test")


def check_data_dir(data_dir: str | Path) -> None:
    """Refuse a data dir without a model registry (a typo would serve 'ok, 0 models')."""
    from tickercast import layout

    root = layout.models_root(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"no model registry under {data_dir} ({root} is not a folder): nothing to "
            "serve; check --data-dir, or train a model first (tickercast retrain)"
        )


def _finite_json(value):
    """`value` with every non-finite float written as text: JSON has no NaN or Infinity,
    and a 422 that echoes the client's NaN must still render."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a body that fails validation, rendering NaN/inf/1e999999 too."""
    from fastapi.encoders import jsonable_encoder

    detail = _finite_json(jsonable_encoder(exc.errors()))
    return JSONResponse(status_code=422, content={"detail": detail})


def serve(data_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted (refused on a data dir without a
    registry)."""
    import uvicorn

    check_data_dir(data_dir)
    uvicorn.run(create_app(data_dir), host=host, port=port, log_level="info")
