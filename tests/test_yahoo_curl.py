"""The production Yahoo session (curl_cffi impersonating Chrome) against a loopback replay.

`tickercast.market.yahoo.default_session()` is what `fetch_history()` uses when nobody
passes a session: libcurl does its I/O, so the in-process `requests` replay cannot stand
in for it. Here a fresh session of that very class talks real HTTPS (Chrome's TLS
fingerprint, yfinance's cookie and crumb requests) to `yahoo_https_replay` on 127.0.0.1,
through a loopback proxy: the only change from production is where the bytes go.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests import netguard
from tests.yahoo_https_replay import https_replay
from tests.yahoo_replay import ALWAYS, CHART_DIR, reset_yfinance
from tickercast.errors import PermanentSourceError, TransientSourceError
from tickercast.market.yahoo import default_session, fetch_history

if not CHART_DIR.is_dir():
    pytest.skip(f"recorded Yahoo responses not found at {CHART_DIR}", allow_module_level=True)

AAPL_FILE = CHART_DIR / "AAPL_1d_2020-08-31_2020-11-07.chart.json"


@pytest.fixture(autouse=True)
def offline_yfinance(tmp_path: Path) -> None:
    reset_yfinance(tmp_path / "yfinance-cache")
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning, r"yfinance\.")


def production_session(server=None):
    """A new session of the class `default_session()` makes (not the process-wide one)."""
    from curl_cffi.requests import Session

    session = default_session.__wrapped__()
    assert isinstance(session, Session) and getattr(session, "reports_chart_statuses", False)
    if server is not None:
        session.proxies = {"https": server.proxy_url, "http": server.proxy_url}
        session.verify = str(server.ca_file)
    return session


def test_aapl_through_the_production_session_over_loopback_https(tmp_path):
    with https_replay(tmp_path / "tls") as server:
        history = fetch_history("AAPL", session=production_session(server))

    assert "query2.finance.yahoo.com:443" in server.tunnels, "Yahoo's real host, over TLS"
    assert server.adapter.chart_calls and all(
        url.startswith("https://query2.finance.yahoo.com/v8/finance/chart/AAPL?")
        for url in server.adapter.chart_calls
    )
    quote = json.loads(AAPL_FILE.read_text())["chart"]["result"][0]["indicators"]["quote"][0]
    assert len(history.prices) == 49
    np.testing.assert_allclose(history.prices["close"], quote["close"], rtol=1e-12)
    assert history.events["kind"].tolist() == ["split", "dividend"]


def test_window_is_sent_to_yahoo_and_honoured(tmp_path):
    with https_replay(tmp_path / "tls") as server:
        history = fetch_history(
            "AAPL",
            start=dt.date(2020, 9, 1),
            end=dt.date(2020, 11, 5),
            session=production_session(server),
        )
    assert (history.prices["date"].iloc[0], history.prices["date"].iloc[-1]) == (
        dt.date(2020, 9, 1),
        dt.date(2020, 11, 5),
    )
    assert "period1=" in server.adapter.chart_calls[-1]


@pytest.mark.parametrize("status", [500, 429])
def test_server_errors_seen_by_the_curl_session_are_transient(tmp_path, status):
    # Only the production session's own status reports (curl_cffi has no response hooks)
    # tell a failed timezone lookup from an unknown ticker.
    with https_replay(tmp_path / "tls", fail_first=ALWAYS, status=status) as server:
        with pytest.raises(TransientSourceError, match="AAPL"):
            fetch_history("AAPL", session=production_session(server))
    assert server.adapter.chart_calls


def test_unknown_ticker_is_permanent_over_curl(tmp_path):
    # yfinance logs the quoteSummary 404 (its HTTPError is curl_cffi's) and fails later
    # on another endpoint; the chart API's 404 "No data found" must still decide.
    # From the third call on yfinance skips that fallback ("no timezone found").
    with https_replay(tmp_path / "tls") as server:
        for _ in range(3):
            with pytest.raises(PermanentSourceError, match="ZZZZQ.*HTTP 404"):
                fetch_history("ZZZZQ", session=production_session(server))
    assert server.adapter.chart_calls


def test_the_production_session_cannot_reach_yahoo_itself():
    """Without the replay proxy the guard stops libcurl before it resolves Yahoo's name."""
    with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever yfinance makes of it
        fetch_history("AAPL", session=production_session())
    assert "network access blocked in tests" in str(caught.value)
    lines = netguard.take_violations()
    netguard.VIOLATIONS.clear()
    assert lines and all("curl_cffi request to https://" in line for line in lines), lines
    assert any("yahoo.com" in line for line in lines)
