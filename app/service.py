"""HTTP service for the champions: FastAPI + uvicorn, loopback by default.

    GET  /health               liveness, how many champions are loaded
    GET  /models               every model: registry champion, the version served, errors
    GET  /forecast/{ticker}    next-horizon forecast from the latest lake rows, with intervals
    POST /predict              {"ticker": "AAPL", "window": [[f1, f2, ...], ...]}: lookback
                               rows (oldest first) of the model's features, raw prices;
                               "last_close" too when the features do not include close
    POST /reload               re-read every registry and reload changed champions

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

import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from tickercast.tickers import InvalidTickerError, validate_ticker

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a 1000 x 10 window of floats is ~200 kB of JSON
MAX_WINDOW_ROWS = 5000
MAX_FEATURES = 64


class UnknownModel(LookupError):
    """No champion to serve for this name."""


@dataclass
class Served:
    """The champion a name is served with, and the registry state it was loaded from."""

    bundle: object | None
    stamp: tuple | None
    error: str | None = None
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
                entry = Served(keep, stamp, f"registry unreadable: {exc}")
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
                        entry = Served(keep, stamp, f"champion v{champion} refused: {exc}{serving}")
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
        description="lookback rows, oldest first, of the model's features in raw units",
    )
    last_close: float | None = Field(
        None,
        gt=0,
        description="the close of the window's last day: needed when the model forecasts a "
        "return from it and its features do not include close (the recommended default)",
    )


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
    row = {"name": name, "champion": champion, "serving": None, "error": None}
    if entry is not None:
        row["error"] = entry.error
        if entry.bundle is not None:
            b = entry.bundle
            row.update(
                serving=b.version,
                features=b.spec.features,
                lookback=b.spec.lookback,
                horizon=b.spec.horizon,
                target=b.spec.target,
                intervals=sorted((b.metadata.get("intervals") or {}).keys()),
                trained_to=b.metadata.get("data", {}).get("last_day"),
            )
    return row


def _file_stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def create_app(data_dir: str | Path) -> FastAPI:
    """The service over `data_dir`; champions load at start-up and on registry changes."""
    from contextlib import asynccontextmanager

    champions = Champions(data_dir)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        for name in champions.names():
            champions.refresh(name)
        yield

    app = FastAPI(
        title="Tickercast",
        description="Forecasts from the registry's champion models.",
        lifespan=lifespan,
    )
    app.state.champions = champions

    def lookup(ticker: str) -> Served:
        try:
            return champions.get(ticker)
        except InvalidTickerError as exc:
            raise HTTPException(422, str(exc)) from exc
        except UnknownModel as exc:
            raise HTTPException(404, f"unknown ticker {ticker!r}: {exc}") from exc

    @app.get("/health")
    def health() -> dict:
        loaded = sum(1 for e in champions.served.values() if e.bundle is not None)
        return {"status": "ok", "data_dir": str(champions.data_dir), "models_loaded": loaded}

    @app.get("/models")
    def models() -> list[dict]:
        from tickercast.delivery.registry import RegistryError, read_registry

        rows = []
        for name in champions.names():
            try:
                champions.get(name)
            except UnknownModel:
                pass
            try:
                champion = read_registry(data_dir, name)["champion"]
            except RegistryError:
                champion = None
            rows.append(_describe(name, champions.served.get(name), champion))
        return rows

    @app.post("/reload")
    def reload() -> list[dict]:
        return [
            _describe(name, champions.refresh(name, force=True), None) for name in champions.names()
        ]

    @app.get("/forecast/{ticker}")
    def forecast(ticker: str) -> dict:
        from tickercast.delivery.predict import forecast_next
        from tickercast.market import lake

        entry = lookup(ticker)
        name = validate_ticker(ticker)
        try:
            with entry.lock:
                stamp = _file_stamp(lake.partition_path(champions.data_dir, name))
                if entry.last_forecast is not None and entry.last_forecast[0] == stamp:
                    rows = entry.last_forecast[1]
                else:
                    prices = lake.read_partition(champions.data_dir, name)
                    rows = forecast_next(entry.bundle, prices, name)
                    entry.last_forecast = (stamp, rows)
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except lake.CorruptPartitionError as exc:
            raise HTTPException(503, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"ticker": name, "version": entry.bundle.version, "forecasts": rows}

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict:
        from tickercast.delivery.predict import forecast_window

        entry = lookup(request.ticker)
        name = validate_ticker(request.ticker)
        if any(len(row) > MAX_FEATURES for row in request.window):
            raise HTTPException(422, f"window rows may hold at most {MAX_FEATURES} features")
        try:
            with entry.lock:
                rows = forecast_window(entry.bundle, request.window, name, request.last_close)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"ticker": name, "version": entry.bundle.version, "forecasts": rows}

    return app


def serve(data_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    app = BodyLimit(create_app(data_dir))
    uvicorn.run(app, host=host, port=port, log_level="info")
