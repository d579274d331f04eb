"""The live Yahoo Finance source, through yfinance, with failures sorted into retry or give up.

`fetch_history()` returns daily bars in the lake's columns
(`tickercast.market.schema.PRICE_COLUMNS`) plus the split and dividend events Yahoo reports,
and raises `TransientSourceError` or `PermanentSourceError` (see `tickercast.errors`) so
callers know whether a retry can help.
Yahoo's all-`null` bars (a day it lists without any prices) are dropped and counted.

yfinance is imported inside the functions: it pulls in pandas extensions, curl_cffi
and peewee, and importing this module must stay cheap for flows that never go online.

Why failures need more than yfinance's exceptions (checked against yfinance 1.7):
- history() first looks up the exchange timezone with its own chart request and hides
  that request's failure; a 5xx or a dropped connection there comes out as "possibly
  delisted; no timezone found" (or, twice per process, as an HTTP 404 from a quoteSummary
  fallback), exactly like an unknown ticker does. So this module watches the HTTP status
  of Yahoo's chart answers during the call and lets that status decide.
- Conversely, over curl_cffi that fallback logs its 404s (it only catches curl_cffi's
  HTTPError) and tries another endpoint, whose empty answer fails as "not JSON". So a
  chart 404 with Yahoo's own error object ("No data found") is permanent whatever
  yfinance raises after it.
- yfinance memoises GET responses by URL for the whole process (`YfData.cache_get`, 64
  entries), error responses included, and memoised answers bypass the status watch.
  Each call therefore starts with `clear_response_memo()`; otherwise a retry in the same
  process would be served the very answer that failed.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from tickercast.errors import PermanentSourceError, SourceError, TransientSourceError
from tickercast.market.schema import EVENT_COLUMNS, PRICE_COLUMNS
from tickercast.tickers import validate_ticker

__all__ = [
    "EVENT_COLUMNS",
    "PermanentSourceError",
    "SourceError",
    "TransientSourceError",
    "YahooHistory",
    "clear_response_memo",
    "default_session",
    "fetch_history",
]

_CHART_PATH = "/v8/finance/chart/"
# Besides 5xx: auth/crumb trouble (a retry gets a fresh cookie), timeouts, throttling.
_TRANSIENT_STATUSES = frozenset({401, 403, 408, 425, 429})
_URL_QUERY = re.compile(r"(https?://[^\s?]+)\?\S*")
_PERIOD = re.compile(r"[1-9][0-9]*(?:d|wk|mo|y)|ytd|max")
# Chart-answer statuses seen during the current fetch_history() call (None outside one).
_CHART_STATUSES: ContextVar[list[int] | None] = ContextVar("yahoo_chart_statuses", default=None)
# Noted instead of a 2xx status when the answer's body is not JSON (a connection cut
# mid-answer): yfinance hides that failure in its timezone lookup and falls back to an
# endpoint whose 404 reads like "unknown ticker", yet retrying is what helps.
_CUT_SHORT = -1
# Noted instead of 404 when the chart API itself said it has no such symbol (or window).
_NOT_FOUND = -2


@dataclass
class YahooHistory:
    """Daily bars in the lake's columns and the corporate events Yahoo reported with them."""

    prices: pd.DataFrame
    events: pd.DataFrame
    dropped_null_rows: int = 0


def fetch_history(
    ticker: str,
    start: dt.date | None = None,
    end: dt.date | None = None,
    period: str | None = None,
    session: Any = None,
) -> YahooHistory:
    """Daily history of `ticker` from Yahoo, `start` and `end` both inclusive.

    Prices are as traded (split-adjusted, not dividend-adjusted) with Yahoo's `adj_close`;
    `date` is the exchange-local trading day. With neither dates nor `period` the whole
    history is fetched (`period="max"`), and so is everything up to a lone `end`.
    `period` (e.g. "1y") may be combined with one of `start`/`end`, as in yfinance.
    `session` is a `requests` or `curl_cffi` Session (tests pass an offline replay one);
    None uses `default_session()`.

    Raises `InvalidTickerError` before any request for a malformed symbol, `ValueError`
    for inconsistent arguments, `TransientSourceError` when retrying later may help and
    `PermanentSourceError` when it cannot; both name the ticker.
    """
    symbol = validate_ticker(ticker)
    start, end = _as_day(start, "start"), _as_day(end, "end")
    period = _checked_period(start, end, period)
    window: dict[str, Any] = {"start": start}
    if end is not None:
        window["end"] = end + dt.timedelta(days=1)  # yfinance's end is exclusive
    if period is not None:
        window["period"] = period

    http = default_session() if session is None else _checked_session(session)
    observed = _observe(http)
    # A memoised answer would reach yfinance without passing the status hook, and a
    # memoised failure would be served again: start every call from the network.
    clear_response_memo()
    statuses: list[int] = []
    token = _CHART_STATUSES.set(statuses)
    try:
        frame = _download(symbol, http, window)
    except Exception as exc:
        last_status = statuses[-1] if statuses else None
        error = _classify(symbol, exc, last_status, observed, _span(start, end, period))
        if error is None:
            raise
        raise error from exc
    finally:
        _CHART_STATUSES.reset(token)

    prices, dropped = _prices(frame)
    if prices.empty:
        span = _span(start, end, period)
        nulls = f" ({dropped} all-null bars)" if dropped else ""
        raise PermanentSourceError(f"ticker {symbol}: Yahoo returned no price rows{span}{nulls}")
    return YahooHistory(prices=prices, events=_events(frame), dropped_null_rows=dropped)


def _checked_period(start: dt.date | None, end: dt.date | None, period: str | None) -> str | None:
    """The `period` to ask for, after rejecting inconsistent arguments before any request."""
    if period is not None and not _PERIOD.fullmatch(period):
        raise ValueError(f"period {period!r} is not one of 1d, 5d, 3mo, 1y, ytd, max, ...")
    if start is not None and end is not None:
        if period is not None:
            raise ValueError("give at most two of start, end and period")
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
    if start is None and period is None:
        period = "max"  # yfinance would read a lone `end` as the month before it
    return period


def _download(symbol: str, http: Any, window: dict[str, Any]) -> pd.DataFrame:
    """One yfinance history call with our settings: raw prices, actions, errors raised."""
    import yfinance as yf

    with warnings.catch_warnings():
        # yfinance 1.7 deprecates raise_errors for the process-wide
        # yf.config.debug.hide_exceptions; the per-call flag keeps the change local.
        warnings.filterwarnings("ignore", "'raise_errors' deprecated", DeprecationWarning)
        return yf.Ticker(symbol, session=http).history(
            **window,
            interval="1d",
            actions=True,
            auto_adjust=False,
            back_adjust=False,
            # Ours, not yfinance's: its repair rebuilds a bad bar only from hourly
            # bars of the last 730 days (older ones are left as they were), may rescale
            # prices or dividends by heuristics, needs scikit-learn and makes extra
            # requests. screen_prices treats every source alike (README, Ingest).
            repair=False,
            keepna=True,  # null bars reach _prices(), which drops and counts them
            raise_errors=True,
        )


def clear_response_memo() -> None:
    """Forget every response yfinance memoised in this process.

    yfinance serves repeated GETs of the same URL and parameters (the timezone lookup,
    date ranges in the past) from an in-process LRU memo, failed answers included; clear
    it so the next request really reaches Yahoo (or a test's replay adapter).
    """
    from yfinance.data import YfData

    YfData.cache_get.cache_clear()


@functools.cache
def default_session() -> Any:
    """The process-wide session used when a caller passes none, created on first use.

    Like yfinance's own default it impersonates Chrome through curl_cffi (Yahoo throttles
    plain `requests` clients), falling back to `requests`; unlike yfinance's it reports
    chart status codes to `fetch_history()`. One session keeps the cookie that matches
    the crumb yfinance caches process-wide.
    """
    try:
        from curl_cffi import requests as curl_requests
    except ImportError:
        import requests

        session = requests.Session()
        session.headers["User-Agent"] = (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
        )
        return session

    class ObservedCurlSession(curl_requests.Session):
        """curl_cffi has no response hooks, so chart statuses are reported from request()."""

        reports_chart_statuses = True

        def request(self, *args: Any, **kwargs: Any) -> Any:
            response = super().request(*args, **kwargs)
            _note_response(response)
            return response

    return ObservedCurlSession(impersonate="chrome")


def _as_day(value: dt.date | None, name: str) -> dt.date | None:
    """Accept dates (and datetimes, reduced to their day); yfinance reads both as local."""
    if value is None or type(value) is dt.date:
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    raise TypeError(f"{name} must be a datetime.date, got {type(value).__name__}")


def _checked_session(session: Any) -> Any:
    """Refuse sessions yfinance would reject, before its refusal looks like a Yahoo outage."""
    import requests

    kinds: tuple[type, ...] = (requests.Session,)
    try:
        from curl_cffi.requests import Session as CurlSession
    except ImportError:
        pass
    else:
        kinds += (CurlSession,)
    if not isinstance(session, kinds) or getattr(session, "cache", None) is not None:
        raise TypeError(
            "session must be a requests or curl_cffi Session without response caching, "
            f"got {type(session).__name__}"
        )
    return session


def _observe(session: Any) -> bool:
    """Make `session` report chart statuses; False if it cannot (a caller's curl_cffi one).

    On a `requests` session a response hook is installed once and stays: it is inert
    outside fetch_history(), and never removing it keeps concurrent calls that share
    the session from pulling it out from under each other.
    """
    if getattr(session, "reports_chart_statuses", False):
        return True
    hooks = getattr(session, "hooks", None)
    if not isinstance(hooks, dict) or not isinstance(hooks.get("response"), list):
        return False
    if _note_response not in hooks["response"]:
        hooks["response"].append(_note_response)
    return True


def _note_response(response: Any, *args: Any, **kwargs: Any) -> None:
    """Response hook: remember the status of each chart answer for the running call."""
    statuses = _CHART_STATUSES.get()
    if statuses is not None and _CHART_PATH in urlsplit(str(response.url)).path:
        status = int(response.status_code)
        if 200 <= status < 300:
            try:
                json.loads(response.content)
            except (ValueError, TypeError):
                status = _CUT_SHORT
        elif status == 404 and _chart_error(response) is not None:
            status = _NOT_FOUND
        statuses.append(status)


def _chart_error(response: Any) -> dict | None:
    """The chart API's own error object in `response` ({"code", "description"}), if any."""
    try:
        error = json.loads(response.content)["chart"]["error"]
    except (ValueError, TypeError, KeyError):
        return None
    return error if isinstance(error, dict) and error else None


def _classify(
    symbol: str, exc: Exception, chart_status: int | None, observed: bool, span: str
) -> SourceError | None:
    """Sort a yfinance failure into transient or permanent; None leaves it unwrapped.

    `chart_status` is the status of Yahoo's last chart answer in this call (None when no
    answer arrived, or the session could not be watched). A transient last answer wins
    whatever yfinance made of it; "no data" verdicts count only when Yahoo actually said so.
    """
    from yfinance.exceptions import (
        YFException,
        YFInvalidPeriodError,
        YFRateLimitError,
        YFTickerMissingError,
    )

    def transient(why: str) -> TransientSourceError:
        return _transient(symbol, why)

    def permanent(why: str) -> PermanentSourceError:
        return PermanentSourceError(f"ticker {symbol}: {why}")

    # Without query strings: yfinance's URLs carry the session's crumb.
    detail = _URL_QUERY.sub(r"\1", f"{type(exc).__name__}: {exc}")
    if isinstance(exc, YFRateLimitError):
        return transient("rate limited, HTTP 429")
    by_chart = _classify_chart_status(symbol, chart_status, detail, span)
    if by_chart is not None:
        return by_chart
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(exc, OSError) and isinstance(status, int):
        # An HTTPError (requests and curl_cffi both derive theirs from OSError).
        return _classify_http_error(symbol, status, response, chart_status, observed, detail)
    if isinstance(exc, OSError):
        # Connection errors, timeouts, DNS, broken streams, from requests or curl_cffi.
        return transient(detail)
    if isinstance(exc, json.JSONDecodeError):
        return transient(f"answer was not JSON; {detail}")
    if isinstance(exc, (YFTickerMissingError, YFInvalidPeriodError)):
        if observed and chart_status is None:
            # No chart answer arrived, so nothing said the ticker is unknown.
            return transient(detail)
        return permanent(f"Yahoo has no data{span}: {exc}")
    if isinstance(exc, YFException):
        return transient(detail)
    return None


def _transient(symbol: str, why: str) -> TransientSourceError:
    """The one wording of "Yahoo is unavailable now", so every transient cause reads alike."""
    return TransientSourceError(f"ticker {symbol}: Yahoo unavailable ({why}); retry later")


def _classify_chart_status(
    symbol: str, chart_status: int | None, detail: str, span: str
) -> SourceError | None:
    """Yahoo's last chart answer decides first, whatever yfinance made of it; None: it
    does not decide."""
    if chart_status == _CUT_SHORT:
        return _transient(symbol, f"the chart API's answer was cut short or not JSON; {detail}")
    if chart_status is not None and _is_transient_status(chart_status):
        return _transient(symbol, f"HTTP {chart_status} from the chart API; {detail}")
    if chart_status == _NOT_FOUND:
        # Yahoo's verdict; yfinance may then fail differently on the endpoints it tries next.
        return PermanentSourceError(
            f"ticker {symbol}: unknown or delisted ticker, Yahoo has no data{span} (HTTP 404)"
        )
    return None


def _classify_http_error(
    symbol: str,
    status: int,
    response: Any,
    chart_status: int | None,
    observed: bool,
    detail: str,
) -> SourceError:
    """Sort an HTTP error answer (from the chart API or another endpoint yfinance tried)."""
    if _is_transient_status(status):
        return _transient(symbol, f"HTTP {status}; {detail}")
    if _CHART_PATH in urlsplit(str(getattr(response, "url", ""))).path:
        return PermanentSourceError(f"ticker {symbol}: Yahoo refused the request, HTTP {status}")
    # Another endpoint failed in yfinance's timezone fallback (quoteSummary). When the
    # chart request itself got no answer (connection lost), that 4xx says nothing.
    if chart_status is not None and 400 <= chart_status < 500:
        return PermanentSourceError(
            f"ticker {symbol}: unknown or delisted ticker (HTTP {chart_status})"
        )
    if observed and chart_status is None:
        return _transient(symbol, f"timezone lookup failed; {detail}")
    return PermanentSourceError(f"ticker {symbol}: unknown or delisted ticker ({detail})")


def _is_transient_status(status: int) -> bool:
    """Statuses that say "not now" rather than "no such ticker"."""
    return status >= 500 or status in _TRANSIENT_STATUSES


def _prices(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """yfinance's frame in the lake's columns, one row per trading day, sorted; and how
    many of Yahoo's all-null bars were dropped.

    A row without any price is either a bar Yahoo sent as all `null` (dropped, counted)
    or a row yfinance added to carry a split or dividend on a day without a bar (dropped,
    not counted: it never was a trading day). A partly null bar stays: `screen_prices`
    drops it (counted) when its close is missing and otherwise counts its missing fields
    as quirks (`on_quirk`).
    """
    no_prices = frame[["Open", "High", "Low", "Close"]].isna().all(axis=1)
    event_columns = [c for c in ("Dividends", "Stock Splits") if c in frame.columns]
    has_event = (frame[event_columns].fillna(0) != 0).any(axis=1)  # False without columns
    dropped = int((no_prices & ~has_event).sum())
    bars = frame[~no_prices]
    prices = pd.DataFrame(
        {
            "date": [stamp.date() for stamp in bars.index],
            "open": bars["Open"].astype("float64").to_numpy(),
            "high": bars["High"].astype("float64").to_numpy(),
            "low": bars["Low"].astype("float64").to_numpy(),
            "close": bars["Close"].astype("float64").to_numpy(),
            "adj_close": bars["Adj Close"].astype("float64").to_numpy(),
            "volume": bars["Volume"].fillna(0).astype("int64").to_numpy(),
        },
        columns=PRICE_COLUMNS,
    )
    prices = prices.sort_values("date", kind="stable").drop_duplicates("date", keep="first")
    return prices.reset_index(drop=True), dropped


def _events(frame: pd.DataFrame) -> pd.DataFrame:
    """Splits (ratio, 4.0 for 4:1) and dividends (amount per share) by exchange-local day.

    A fund's capital gains are left out: the lake's consumers only adjust for these two.
    """
    rows: list[tuple[dt.date, str, float]] = []
    for column, kind in (("Stock Splits", "split"), ("Dividends", "dividend")):
        if column not in frame.columns:
            continue
        values = frame[column].fillna(0).astype("float64")
        rows += [(stamp.date(), kind, float(v)) for stamp, v in values[values != 0].items()]
    events = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    events["value"] = events["value"].astype("float64")
    return events.sort_values(["date", "kind"], kind="stable").reset_index(drop=True)


def _span(start: dt.date | None, end: dt.date | None, period: str | None) -> str:
    """The requested window in our terms (inclusive end) for error messages."""
    parts = [f"start {start}" if start else "", f"end {end}" if end else ""]
    parts.append(f"period {period}" if period else "")
    text = ", ".join(p for p in parts if p)
    return f" ({text})" if text else ""
