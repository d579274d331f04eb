"""Offline replay of Yahoo's chart API (v8) for driving yfinance's real parser in tests.

Why: tests must exercise yfinance's own request and parsing code (cookie/crumb dance,
timezone lookup, `history()`), yet never open a socket. `replay_session()` returns a
`requests.Session` whose only transport is `ReplayAdapter`, which answers from recorded
response bodies (`<SYM>_1d_<start>_<end>.chart.json`, see ../shared/data/README.md):

- `/v8/finance/chart/<SYM>`: the recording for SYM, sliced to `period1`/`period2`
  (or to `range=`), with the matching indicator arrays, adjclose and events;
  an unknown SYM gets Yahoo's 404 "No data found, symbol may be delisted" body;
- `/v1/test/getcrumb`: a short crumb text;
- anything else (fc.yahoo.com, guce consent pages, quoteSummary, ...): an empty 404.

Faults for retry tests: the first `fail_first` chart requests raise
`requests.ConnectionError`, or answer HTTP `status` (e.g. 500, 429) when it is given.

yfinance keeps per-process state that leaks between tests unless reset:
`YfData.cache_get` memoises whole responses by (url, params) -- not by session -- so a
later test asking for the same URL would get an earlier test's answer without any
request reaching its adapter; the `YfData` singleton keeps the crumb and cookie strategy;
and `set_tz_cache_location()` only moves caches that have not been opened yet.
Call `reset_yfinance(tmp_path)` before each test (e.g. from an autouse fixture).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from tickercast.market.yahoo import clear_response_memo

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHART_DIR = SHARED_DATA / "yahoo_chart"

# fail_first value that makes every chart request fail.
ALWAYS = sys.maxsize

CRUMB = "replay-crumb"
_CHART_PATH = re.compile(r"/v8/finance/chart/(?P<symbol>[^/]+)")
_FILE_NAME = re.compile(r"(?P<symbol>.+?)_(?P<interval>[^_]+)_[^_]+_[^_]+\.chart\.json")
_NOT_FOUND = {
    "chart": {
        "result": None,
        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
    }
}
# Yahoo's `range=` values as look-back windows ending at the recording's last bar.
_RANGES = {
    "1d": dt.timedelta(days=1),
    "5d": dt.timedelta(days=5),
    "1mo": dt.timedelta(days=31),
    "3mo": dt.timedelta(days=92),
    "6mo": dt.timedelta(days=183),
    "1y": dt.timedelta(days=366),
    "2y": dt.timedelta(days=731),
    "5y": dt.timedelta(days=1827),
    "10y": dt.timedelta(days=3653),
}


@dataclass
class ReplayAdapter(BaseAdapter):
    """Transport adapter answering Yahoo URLs from recordings; it never opens a socket.

    `calls` lists every URL requested, `chart_calls` only the chart ones, so tests can
    assert how many requests yfinance made (and that none were made at all).
    """

    chart_dir: Path
    fail_first: int = 0
    status: int | None = None
    calls: list[str] = field(default_factory=list)
    chart_calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()
        self._recordings: dict[str, list[Path]] = {}
        for path in sorted(Path(self.chart_dir).glob("*.chart.json")):
            match = _FILE_NAME.fullmatch(path.name)
            if match and match["interval"] == "1d":
                self._recordings.setdefault(match["symbol"].upper(), []).append(path)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: object = None,
        verify: object = True,
        cert: object = None,
        proxies: object = None,
    ) -> requests.Response:
        """Answer one request from the recordings (or an injected fault)."""
        url = request.url or ""
        self.calls.append(url)
        parts = urlsplit(url)
        chart = _CHART_PATH.fullmatch(parts.path)
        if parts.hostname and parts.hostname.endswith("fc.yahoo.com"):
            return _response(request, 404, b"")
        if parts.path == "/v1/test/getcrumb":
            return _response(request, 200, CRUMB.encode(), "text/plain")
        if chart is None:
            return _response(request, 404, b"")

        self.chart_calls.append(url)
        if len(self.chart_calls) <= self.fail_first:
            if self.status is None:
                raise requests.ConnectionError(f"replayed fault: connection refused for {url}")
            return _fault(request, self.status)
        symbol = unquote(chart["symbol"]).upper()
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if query.get("interval", "1d") != "1d":
            return _json(request, 422, _error("Unprocessable Entity", "only 1d is recorded"))
        paths = self._recordings.get(symbol)
        if not paths:
            return _json(request, 404, _NOT_FOUND)
        body = json.loads(paths[-1].read_text(encoding="utf-8"))
        return _json(request, 200, _slice(body, query))

    def close(self) -> None:
        """Nothing to release: no connections are ever opened."""


class ReplaySession(requests.Session):
    """A `requests.Session` wired to one `ReplayAdapter` for every URL (http and https)."""

    def __init__(self, adapter: ReplayAdapter) -> None:
        super().__init__()
        self.adapter = adapter
        self.mount("https://", adapter)
        self.mount("http://", adapter)


def replay_session(
    chart_dir: Path = CHART_DIR, fail_first: int = 0, status: int | None = None
) -> ReplaySession:
    """A session answering Yahoo from `chart_dir`; the first `fail_first` chart requests fail.

    With `status=None` those failures raise `requests.ConnectionError`, otherwise they
    answer that HTTP status. Use `fail_first=ALWAYS` for a permanently failing service.
    """
    return ReplaySession(ReplayAdapter(Path(chart_dir), fail_first=fail_first, status=status))


def reset_yfinance(cache_dir: Path) -> None:
    """Forget yfinance's per-process state so each test starts as a fresh process would.

    Clears the response memo (`YfData.cache_get`), drops the `YfData` singleton (crumb,
    cookie strategy, session), and re-opens the timezone/cookie/ISIN caches in
    `cache_dir`: `yf.set_tz_cache_location()` alone does not move caches already opened.
    Touches yfinance internals (checked against 1.7); tests only.
    """
    import yfinance as yf
    from yfinance import base, cache, data

    clear_response_memo()
    data.SingletonMeta._instances.pop(data.YfData, None)
    yf.set_tz_cache_location(str(cache_dir))
    cache._TzCacheManager._tz_cache = None
    cache._CookieCacheManager._Cookie_cache = None
    cache._ISINCacheManager._isin_cache = None
    base._tz_info_fetch_ctr = 0


def _slice(body: dict, query: dict[str, str]) -> dict:
    """Keep the bars (and events) Yahoo would return for period1/period2 or range."""
    result = body["chart"]["result"][0]
    stamps: list[int] = result.get("timestamp", [])
    if "period1" in query or "period2" in query:
        low = int(query.get("period1", 0))
        high = int(query.get("period2", 2**62))
    else:
        last = stamps[-1] if stamps else 0
        window = query.get("range", "max")
        if window == "ytd":
            year = dt.datetime.fromtimestamp(last, dt.UTC).year
            low = int(dt.datetime(year, 1, 1, tzinfo=dt.UTC).timestamp())
        elif window in _RANGES:
            low = last - int(_RANGES[window].total_seconds()) + 1
        else:
            low = 0
        high = last + 1
    keep = [i for i, stamp in enumerate(stamps) if low <= stamp < high]
    sliced = dict(result)
    indicators = result["indicators"]
    if keep:
        sliced["timestamp"] = [stamps[i] for i in keep]
        sliced["indicators"] = {
            name: [{k: [v[i] for i in keep] for k, v in series.items()} for series in block]
            for name, block in indicators.items()
        }
    else:
        sliced.pop("timestamp", None)
        sliced["indicators"] = {name: [{}] for name in indicators}
    events = {
        kind: {key: event for key, event in items.items() if low <= event["date"] < high}
        for kind, items in result.get("events", {}).items()
    }
    events = {kind: items for kind, items in events.items() if items}
    if events:
        sliced["events"] = events
    else:
        sliced.pop("events", None)
    return {"chart": {"result": [sliced], "error": None}}


def _error(code: str, description: str) -> dict:
    return {"chart": {"result": None, "error": {"code": code, "description": description}}}


def _fault(request: requests.PreparedRequest, status: int) -> requests.Response:
    """An injected HTTP failure shaped like Yahoo's (its edge answers 429 in plain text)."""
    if status == 429:
        return _response(request, 429, b"Too Many Requests\r\n", "text/plain")
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return _json(request, status, _error(reason, f"replayed fault: HTTP {status}"))


def _json(request: requests.PreparedRequest, status: int, payload: dict) -> requests.Response:
    return _response(request, status, json.dumps(payload).encode(), "application/json")


def _response(
    request: requests.PreparedRequest,
    status: int,
    body: bytes,
    content_type: str = "text/html",
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    try:
        response.reason = HTTPStatus(status).phrase
    except ValueError:
        response.reason = ""
    response.headers = CaseInsensitiveDict(
        {"Content-Type": f"{content_type};charset=utf-8", "Content-Length": str(len(body))}
    )
    response._content = body
    response.encoding = "utf-8"
    response.url = request.url or ""
    response.request = request
    return response
