"""The HTTP service under load: requests/s and p99 latency of 200 concurrent forecasts.

Two endpoints: `GET /forecast/MSFT` (answered from the last forecast while the lake
partition and the champion are unchanged) and `POST /predict` with a client's window
(the model runs for every request).

Serves the tiny test champion (tests/tiny_models.py: the MSFT sample from 2019, an LSTM
of units [8, 4]) with `tickercast serve` in its own process (uvicorn, loopback) and fires
rounds of 200 concurrent `GET /forecast/MSFT` at it, one connection each, from a minimal
asyncio client, side by side with two baselines measured in the same run:
- the same load on `GET /health` (a bare endpoint: what HTTP, uvicorn and FastAPI cost);
- the forecast called in-process, one after another (what the work itself costs: read
  the lake partition, build the features, one model call).
Run: python bench/serve_load.py  (writes a row to bench/RESULTS.md)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CONCURRENCY = 200
ROUNDS = 5
START_TIMEOUT_S = 120


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Run an ASGI app with uvicorn in a background thread; yields its base URL.

    The socket is bound here (port 0: a free one) and handed to uvicorn, so there is no
    race for the port; the server stops when the block ends.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", backlog=4096))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {START_TIMEOUT_S} s")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# Bodies above this are sent after the server's "100 Continue" (Expect: 100-continue), so
# a server refusing them early (413) is heard instead of resetting a half-sent upload.
EXPECT_CONTINUE_BYTES = 64 * 1024


async def _request(
    base_url: str, method: str, path: str, body: bytes = b"", timeout: float = 120
) -> tuple[int | None, float, bytes]:
    """One HTTP/1.1 request on its own connection: (status or None, seconds, body).

    A minimal asyncio client on purpose: a load generator must cost far less than the
    server it measures (httpx's per-request overhead made it the bottleneck here).
    """
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
            if body or method == "POST":
                head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
            early = len(body) > EXPECT_CONTINUE_BYTES
            if early:
                head.append("Expect: 100-continue")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if early else body))
            await writer.drain()
            first = b""
            if early:
                first = await reader.readline()
                if b" 100 " in first:  # go ahead: send the body, then read the answer
                    await reader.readline()
                    first = b""
                    writer.write(body)
                    await writer.drain()
            raw = first + await reader.read()
            writer.close()
    except (OSError, TimeoutError) as exc:  # counted as an error, never raised
        return None, time.perf_counter() - started, repr(exc).encode()
    elapsed = time.perf_counter() - started
    status_line, _, rest = raw.partition(b"\r\n")
    headers, _, content = rest.partition(b"\r\n\r\n")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        status = None
    if b"transfer-encoding: chunked" in headers.lower():
        content = _dechunk(content)
    return status, elapsed, content


def _dechunk(data: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 answer."""
    out = []
    while data:
        size, _, data = data.partition(b"\r\n")
        length = int(size.split(b";")[0] or b"0", 16)
        if length == 0:
            break
        out.append(data[:length])
        data = data[length + 2 :]
    return b"".join(out)


Call = tuple[str, str, bytes]  # method, path, body


def fire(base_url: str, calls: list[Call], timeout: float = 120) -> list[tuple]:
    """Send every call at once, one connection each; [(status or None, seconds, body)]."""

    async def burst() -> list[tuple]:
        return await asyncio.gather(
            *(_request(base_url, method, path, body, timeout) for method, path, body in calls)
        )

    return asyncio.run(burst())


def load(
    base_url: str, call: Call | str, concurrency: int = CONCURRENCY, rounds: int = ROUNDS
) -> dict:
    """`rounds` bursts of `concurrency` concurrent calls (a path: GET it): requests/s and
    latency percentiles."""
    import numpy as np

    latencies, errors, elapsed = [], 0, 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        one = ("GET", call, b"") if isinstance(call, str) else call
        results = fire(base_url, [one] * concurrency)
        elapsed += time.perf_counter() - started
        errors += sum(status != 200 for status, _, _ in results)
        latencies += [seconds for _, seconds, _ in results]
    lat = np.asarray(latencies)
    return {
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / elapsed,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
    }


@contextlib.contextmanager
def serve_process(
    data_dir: Path, log: Path | None = None, start_timeout: float = START_TIMEOUT_S
) -> Iterator[str]:
    """`tickercast serve` in its own process on a free loopback port, as users start it;
    yields its URL once /health answers. Its output goes to `log` (quoted when it fails to
    start) or nowhere. tests/test_serve.py starts its service with this too."""
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("w")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickercast.app.cli", "serve", "--data-dir", str(data_dir)]
            + ["--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

        def said() -> str:
            return f":\n{log.read_text()[-3000:]}" if log else ""

        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout
            while fire(url, [("GET", "/health", b"")], timeout=5)[0][0] != 200:
                if proc.poll() is not None:
                    raise RuntimeError(f"tickercast serve exited with {proc.returncode}{said()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"tickercast serve did not answer /health within {start_timeout} s" + said()
                    )
                time.sleep(0.25)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def in_process(data_dir: Path, ticker: str, calls: int) -> float:
    """What one forecast costs without HTTP: the same functions, called one by one."""
    from tickercast.delivery.predict import forecast_next
    from tickercast.delivery.registry import load_champion
    from tickercast.market import lake

    bundle = load_champion(data_dir, ticker)
    forecast_next(bundle, lake.read_partition(data_dir, ticker), ticker)  # warm-up
    started = time.perf_counter()
    for _ in range(calls):
        forecast_next(bundle, lake.read_partition(data_dir, ticker), ticker)
    return calls / (time.perf_counter() - started)


def predict_call(data_dir: Path, ticker: str) -> Call:
    """POST /predict with the lake's last window: the model runs for every request."""
    import json

    from tickercast.delivery.registry import load_champion
    from tickercast.market import lake

    spec = load_champion(data_dir, ticker).spec
    window = lake.read_partition(data_dir, ticker)[spec.features].tail(spec.lookback)
    body = {"ticker": ticker, "window": window.astype(float).to_numpy().tolist()}
    return ("POST", "/predict", json.dumps(body).encode())


def main() -> dict:
    import tempfile

    from tests.tiny_models import TICKER, copy_store
    from tickercast.delivery.registry import promote

    with tempfile.TemporaryDirectory() as tmp:
        data = copy_store(Path(tmp))
        promote(data, TICKER, 1, reason="bench: the LSTM serves")
        direct = in_process(data, TICKER, CONCURRENCY)
        posted = predict_call(data, TICKER)
        with serve_process(data) as url:
            fire(url, [("GET", f"/forecast/{TICKER}", b""), posted] * 10)  # warm-up
            health = load(url, "/health")
            forecast = load(url, f"/forecast/{TICKER}")
            predict = load(url, posted)
    return {"health": health, "forecast": forecast, "predict": predict, "direct_per_s": direct}


def row(r: dict) -> str:
    h, f, p = r["health"], r["forecast"], r["predict"]
    return (
        f"| serve: {CONCURRENCY} concurrent requests on loopback (LSTM [8, 4], "
        f"{ROUNDS} rounds each) | bare `GET /health`, same load: {h['rps']:.0f} req/s, p99 "
        f"{h['p99_ms']:.0f} ms; forecast computed in-process one by one (lake read, "
        f"features, model): {r['direct_per_s']:.0f} /s | `GET /forecast` (the forecast is "
        f"reused until the lake or champion changes): {f['rps']:.0f} req/s, p99 "
        f"{f['p99_ms']:.0f} ms, {f['errors']} errors of {f['requests']}; `POST /predict` "
        f"(the model runs per request): {p['rps']:.0f} req/s, p99 {p['p99_ms']:.0f} ms, "
        f"{p['errors']} errors of {p['requests']} | GET /forecast {f['rps'] / h['rps']:.2f}x, "
        f"POST /predict {p['rps'] / h['rps']:.2f}x of /health req/s |"
    )


if __name__ == "__main__":
    from bench.results import record

    result = main()
    line = row(result)
    print(line)
    record("serve_load", line)
    errors = sum(result[k]["errors"] for k in ("forecast", "predict", "health"))
    sys.exit(f"{errors} requests failed" if errors else 0)
