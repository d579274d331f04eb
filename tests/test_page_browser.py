"""The service's pages in a real browser: headless Chromium (the system's package;
`make test` installs it: tests/ensure-browser) driven over the Chrome DevTools Protocol,
against the service run by uvicorn on a loopback port. The page loads, shows every
champion, and every image it shows has loaded; the per-ticker page lists the versions;
nothing is fetched from anywhere else.

Without Chromium this test fails saying how to install it; TICKERCAST_SKIP_BROWSER=1
skips it instead (a machine that cannot have a browser).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.serve_load import serve_in_thread
from tests.test_serve import page_store
from tests.tiny_models import TICKER

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
START_TIMEOUT_S = 60
LOAD_TIMEOUT_S = 60
INSTALL = (
    "install Chromium from the system's packages (Debian/Ubuntu: "
    "`sudo apt-get install -y chromium`; `make test` does it when it is missing), point "
    "TICKERCAST_CHROMIUM at a Chromium/Chrome binary, or set TICKERCAST_SKIP_BROWSER=1 to "
    "skip this test"
)


def chromium_binary() -> str:
    if os.environ.get("TICKERCAST_SKIP_BROWSER") == "1":
        pytest.skip("TICKERCAST_SKIP_BROWSER=1")
    given = os.environ.get("TICKERCAST_CHROMIUM")
    found = shutil.which(given) if given else next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None:
        pytest.fail(f"no headless browser found ({given or ', '.join(BROWSERS)}): {INSTALL}")
    return found


class DevTools:
    """A minimal Chrome DevTools Protocol client: one browser websocket, flat sessions."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.socket = connect(url, max_size=None, open_timeout=START_TIMEOUT_S)
        self.next_id = 0
        self.events: list[dict] = []

    def _receive(self, deadline: float) -> dict:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from the browser in time")
        return json.loads(self.socket.recv(timeout=left))

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._receive(deadline))

    def evaluate(self, session: str, expression: str):
        result = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.socket.close()


@contextlib.contextmanager
def browser(folder: Path) -> Iterator[DevTools]:
    """Headless Chromium with its own profile; any name but loopback fails to resolve, so
    the page cannot fetch from elsewhere even by accident."""
    profile = folder / "profile"
    log = (folder / "chromium.log").open("wb")
    process = subprocess.Popen(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-extensions",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            if process.poll() is not None:
                text = (folder / "chromium.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"Chromium exited with {process.returncode}: {text}")
            if time.monotonic() > deadline:
                pytest.fail(f"Chromium did not open its DevTools port in {START_TIMEOUT_S} s")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        client = DevTools(f"ws://127.0.0.1:{port}{path}")
        yield client
    finally:
        if client is not None:
            client.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        log.close()


def open_page(devtools: DevTools, url: str) -> tuple[str, dict, list[str]]:
    """Load `url` in a fresh tab until its load event (images included): (session, the
    document's response, every URL the tab requested)."""
    target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
    session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    devtools.call("Page.enable", session)
    devtools.call("Network.enable", session)
    devtools.call("Page.navigate", session, url=url)
    devtools.wait_for("Page.loadEventFired", session)
    requested, document = [], None
    for event in devtools.events:
        if event.get("sessionId") != session:
            continue
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            requested.append(params["request"]["url"])
        if event.get("method") == "Network.responseReceived" and params.get("type") == "Document":
            document = params["response"]
    assert document is not None, f"no document response for {url}"
    return session, document, requested


IMAGES = """[...document.images].map(i => ({
    src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}))"""
CHAMPIONS = """[...document.querySelectorAll('section.card')].map(s => ({
    id: s.id, title: s.querySelector('h2').innerText, images: s.querySelectorAll('img').length}))"""
VERSIONS = """[...document.querySelectorAll('table')[0].tBodies[0].rows].map(r => ({
    version: r.cells[0].firstChild.textContent, champion: r.className === 'champion'}))"""


@pytest.mark.slow
def test_the_page_loads_in_a_browser_with_every_champion_and_its_images(tmp_path):
    from tickercast.app.service import create_app

    chromium_binary()  # fail (or skip) before building anything
    data = page_store(tmp_path)
    with serve_in_thread(create_app(data)) as url, browser(tmp_path) as devtools:
        session, document, requested = open_page(devtools, url + "/")
        assert document["status"] == 200 and document["mimeType"] == "text/html"
        assert devtools.evaluate(session, "document.title") == "Tickercast champions"
        cards = {c["id"]: c for c in devtools.evaluate(session, CHAMPIONS)}
        assert sorted(cards) == ["AAPL", "GOOG", TICKER]
        assert cards[TICKER]["title"].startswith(f"{TICKER}v4")
        assert cards["AAPL"]["title"].startswith("AAPLv1")
        assert (cards[TICKER]["images"], cards["AAPL"]["images"], cards["GOOG"]["images"]) == (
            4,
            3,
            0,
        )
        text = devtools.evaluate(session, "document.body.innerText")
        assert "Latest forecast" in text and "80% band" in text and "Walk-forward" in text
        images = devtools.evaluate(session, IMAGES)
        assert len(images) == 7
        broken = [i for i in images if not (i["complete"] and i["width"] > 0)]
        assert not broken, f"images that did not load: {broken}"
        assert sum(".png" in u for u in requested) == 7
        assert all(u.startswith(url + "/") for u in requested), requested

        session, document, requested = open_page(devtools, f"{url}/tickers/{TICKER}")
        assert document["status"] == 200
        assert devtools.evaluate(session, "document.title") == f"{TICKER}: versions"
        versions = devtools.evaluate(session, VERSIONS)
        assert [v["version"] for v in versions] == ["v4", "v3", "v2", "v1"]
        assert [v["champion"] for v in versions] == [True, False, False, False]
        assert all(u.startswith(url + "/") for u in requested), requested


# Every element a person must see: the summary, each fan chart and each of its bands; for
# each, its box and whether it lies inside the viewport's width (no sideways scrolling).
VISIBLE = """(() => {
  const width = document.documentElement.clientWidth;
  const boxes = [...document.querySelectorAll(
      '#summary, #summary tbody tr, svg.fan, svg.fan rect.band-80, svg.fan rect.band-95, '
      + 'svg.fan line.forecast')];
  return {
    width: width,
    scrollWidth: document.documentElement.scrollWidth,
    items: boxes.map(e => { const r = e.getBoundingClientRect();
      return {what: e.id || e.getAttribute('class') || e.tagName, left: r.left,
              right: r.right, width: r.width, height: r.height}; }),
  };
})()"""


def screenshot(devtools: DevTools, session: str, width: int, path: Path) -> dict:
    """Set the viewport to `width` CSS pixels (a phone's 390 with touch metrics), reload,
    save a full-page PNG to `path`; returns what VISIBLE measures."""
    import base64

    devtools.call(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=width,
        height=900,
        deviceScaleFactor=1,
        mobile=width < 600,
    )
    devtools.call("Page.reload", session)
    devtools.wait_for("Page.loadEventFired", session)
    shot = devtools.call(
        "Page.captureScreenshot", session, format="png", captureBeyondViewport=True
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return devtools.evaluate(session, VISIBLE)


@pytest.mark.slow
@pytest.mark.parametrize("width", [1400, 390])
def test_summary_fan_chart_and_bands_fit_the_screen(tmp_path, width):
    """At desktop and phone width: the summary, every fan chart and every band are shown
    and lie within the screen's width; the page itself never scrolls sideways (wide tables
    scroll inside their own container). Screenshots are kept in TICKERCAST_SCREENSHOTS
    when set (else the test's tmp folder)."""
    from tickercast.app.service import create_app

    chromium_binary()
    out = Path(os.environ.get("TICKERCAST_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    data = page_store(tmp_path)
    with serve_in_thread(create_app(data)) as url, browser(tmp_path) as devtools:
        session, document, _ = open_page(devtools, url + "/")
        assert document["status"] == 200
        seen = screenshot(devtools, session, width, out / f"index-{width}.png")
        assert (out / f"index-{width}.png").stat().st_size > 10_000
        assert seen["scrollWidth"] <= seen["width"], seen
        kinds = [i["what"] for i in seen["items"]]
        assert kinds.count("summary") == 1 and kinds.count("fan") == 2, kinds
        assert kinds.count("band-80") == 2 and kinds.count("band-95") == 2, kinds
        assert kinds.count("forecast") == 2, kinds
        for item in seen["items"]:
            flat = item["what"] == "forecast"  # a horizontal line: no height of its own
            assert item["width"] > 0 and (item["height"] > 0 or flat), item
            assert item["left"] >= 0 and item["right"] <= seen["width"] + 0.5, item
        text = devtools.evaluate(session, "document.querySelector('#summary').innerText")
        assert "no skill found" in text or "beats the last close" in text or "evidence" in text
        session, document, _ = open_page(devtools, f"{url}/tickers/{TICKER}")
        seen = screenshot(devtools, session, width, out / f"ticker-{width}.png")
        assert seen["scrollWidth"] <= seen["width"], seen
