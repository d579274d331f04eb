"""tickercast.market.yahoo through yfinance's own request and parsing code, replayed offline.

Nothing here mocks yfinance: `replay_session()` answers its HTTP requests from recorded
Yahoo chart responses, so these tests pin down what yfinance 1.7 really does with them.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.yahoo_replay import ALWAYS, CHART_DIR, replay_session, reset_yfinance
from tickercast.errors import PermanentSourceError, TransientSourceError
from tickercast.market.schema import PRICE_COLUMNS, to_price_table
from tickercast.market.yahoo import EVENT_COLUMNS, fetch_history
from tickercast.tickers import InvalidTickerError

if not CHART_DIR.is_dir():
    pytest.skip(f"recorded Yahoo responses not found at {CHART_DIR}", allow_module_level=True)

AAPL_FILE = CHART_DIR / "AAPL_1d_2020-08-31_2020-11-07.chart.json"
SPLIT_DAY = dt.date(2020, 8, 31)
DIVIDEND_DAY = dt.date(2020, 11, 6)


@pytest.fixture(autouse=True)
def offline_yfinance(tmp_path: Path) -> Path:
    """Fresh yfinance state (memo, crumb, caches) with its caches under tmp_path.

    The offline guard is conftest's: it fails any test that opens a non-loopback socket.
    """
    cache_dir = tmp_path / "yfinance-cache"
    reset_yfinance(cache_dir)
    # yfinance 1.7 calls pandas APIs that pandas 3 deprecates; not ours to fix. Set after
    # yfinance's import, which puts its own DeprecationWarning filter first.
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning, r"yfinance\.")
    return cache_dir


def recorded(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["chart"]["result"][0]


def test_aapl_full_recording_parses_to_lake_columns(offline_yfinance: Path) -> None:
    session = replay_session()
    history = fetch_history("aapl", session=session)
    prices = history.prices

    assert list(prices.columns) == PRICE_COLUMNS
    assert len(prices) == 49
    assert all(type(day) is dt.date for day in prices["date"])
    assert prices["date"].iloc[0] == SPLIT_DAY
    assert prices["date"].iloc[-1] == DIVIDEND_DAY
    assert prices["date"].is_unique and prices["date"].is_monotonic_increasing
    assert prices["volume"].dtype == np.int64
    to_price_table(prices)  # the lake schema accepts it as is
    assert session.adapter.chart_calls, "yfinance's real request path was used"
    assert (offline_yfinance / "tkr-tz.db").is_file(), "caches stay under tmp_path"


def test_aapl_prices_are_yahoos_numbers_unadjusted_by_yfinance() -> None:
    prices = fetch_history("AAPL", session=replay_session()).prices
    raw = recorded(AAPL_FILE)
    quote = raw["indicators"]["quote"][0]

    np.testing.assert_allclose(prices["close"], quote["close"], rtol=1e-12)
    np.testing.assert_allclose(prices["open"], quote["open"], rtol=1e-12)
    np.testing.assert_allclose(prices["adj_close"], raw["indicators"]["adjclose"][0]["adjclose"])
    assert prices["volume"].tolist() == quote["volume"]


def test_aapl_split_and_dividend_events() -> None:
    events = fetch_history("AAPL", session=replay_session()).events

    assert list(events.columns) == EVENT_COLUMNS
    assert events.to_dict("records") == [
        {"date": SPLIT_DAY, "kind": "split", "value": 4.0},
        {"date": DIVIDEND_DAY, "kind": "dividend", "value": pytest.approx(0.205)},
    ]


def test_aapl_close_has_no_split_jump_and_adj_close_carries_the_dividend() -> None:
    prices = fetch_history("AAPL", session=replay_session()).prices.set_index("date")
    previous_close = recorded(AAPL_FILE)["meta"]["chartPreviousClose"]  # 2020-08-28, split-adj.

    # Split-adjusted closes: the split day moves by percent, not by 4x.
    assert 0.8 < prices.loc[SPLIT_DAY, "close"] / previous_close < 1.25
    assert prices["close"].pct_change().abs().max() < 0.25
    before = prices.index < DIVIDEND_DAY
    assert (prices.loc[before, "adj_close"] <= prices.loc[before, "close"]).all()
    # The dividend shows as a step in the adjustment factor at the ex-day.
    factor = prices["adj_close"] / prices["close"]
    step = factor.loc[dt.date(2020, 11, 5)] / factor.loc[DIVIDEND_DAY]
    expected = 1 - 0.205 / prices.loc[dt.date(2020, 11, 5), "close"]
    assert step == pytest.approx(expected, rel=1e-4)


def test_msft_has_four_dividends_and_no_split() -> None:
    history = fetch_history("MSFT", session=replay_session())

    assert len(history.prices) == 252
    dividends = history.events[history.events["kind"] == "dividend"]
    assert dividends["value"].tolist() == pytest.approx([0.56, 0.56, 0.56, 0.62])
    assert dividends["date"].tolist() == [
        dt.date(2021, 2, 17),
        dt.date(2021, 5, 19),
        dt.date(2021, 8, 18),
        dt.date(2021, 11, 17),
    ]
    assert (history.events["kind"] != "split").all()


def test_start_and_end_are_both_inclusive() -> None:
    history = fetch_history(
        "AAPL", start=dt.date(2020, 9, 1), end=dt.date(2020, 11, 5), session=replay_session()
    )

    assert history.prices["date"].iloc[0] == dt.date(2020, 9, 1)
    assert history.prices["date"].iloc[-1] == dt.date(2020, 11, 5)
    assert len(history.prices) == 47
    assert history.events.empty, "split (08-31) and dividend (11-06) lie outside"
    assert list(history.events.columns) == EVENT_COLUMNS


def test_a_lone_end_fetches_everything_up_to_it() -> None:
    # yfinance alone would read `end` without `start` as the month before it
    history = fetch_history("AAPL", end=dt.date(2020, 10, 15), session=replay_session())

    assert history.prices["date"].iloc[0] == SPLIT_DAY
    assert history.prices["date"].iloc[-1] == dt.date(2020, 10, 15)
    assert history.events["kind"].tolist() == ["split"]


def test_single_day_window_and_event_on_its_end_day() -> None:
    one = fetch_history("AAPL", start=DIVIDEND_DAY, end=DIVIDEND_DAY, session=replay_session())

    assert one.prices["date"].tolist() == [DIVIDEND_DAY]
    assert one.events["kind"].tolist() == ["dividend"]


def test_window_without_trading_days_is_permanent() -> None:
    with pytest.raises(PermanentSourceError, match="AAPL"):
        fetch_history(
            "AAPL", start=dt.date(2020, 7, 1), end=dt.date(2020, 7, 31), session=replay_session()
        )


def test_unknown_ticker_is_permanent_and_names_it() -> None:
    session = replay_session()
    with pytest.raises(PermanentSourceError, match="ZZZZQ"):
        fetch_history("ZZZZQ", session=session)
    assert session.adapter.chart_calls, "Yahoo was asked and answered 404"


def test_unknown_ticker_stays_permanent_when_asked_again() -> None:
    # yfinance memoises the 404; without clearing it the second answer would not be seen.
    for _ in range(3):
        session = replay_session()
        with pytest.raises(PermanentSourceError, match="ZZZZQ"):
            fetch_history("ZZZZQ", session=session)
        assert session.adapter.chart_calls


@pytest.mark.parametrize("status", [500, 502, 503, 429, 401])
def test_server_errors_and_rate_limits_are_transient(status: int) -> None:
    session = replay_session(fail_first=ALWAYS, status=status)
    with pytest.raises(TransientSourceError, match="AAPL") as caught:
        fetch_history("AAPL", session=session)
    assert session.adapter.chart_calls
    assert "crumb" not in str(caught.value), "no session tokens in messages"


def test_connection_error_is_transient() -> None:
    with pytest.raises(TransientSourceError, match="AAPL"):
        fetch_history("AAPL", session=replay_session(fail_first=ALWAYS))


@pytest.mark.parametrize("status", [None, 500])
def test_outage_stays_transient_when_asked_again(status: int | None) -> None:
    # yfinance reports a failed timezone lookup differently from the third time on
    # (quoteSummary fallback twice per process, then "no timezone found").
    for _ in range(3):
        with pytest.raises(TransientSourceError, match="AAPL"):
            fetch_history("AAPL", session=replay_session(fail_first=ALWAYS, status=status))


def test_not_found_once_tz_is_known_is_permanent() -> None:
    fetch_history("AAPL", session=replay_session())  # caches the exchange timezone
    with pytest.raises(PermanentSourceError, match="AAPL"):
        fetch_history("AAPL", session=replay_session(fail_first=ALWAYS, status=404))


def test_server_error_once_tz_is_known_is_transient() -> None:
    fetch_history("AAPL", session=replay_session())  # caches the exchange timezone
    session = replay_session(fail_first=ALWAYS, status=500)
    with pytest.raises(TransientSourceError, match="AAPL"):
        fetch_history("AAPL", start=SPLIT_DAY, end=DIVIDEND_DAY, session=session)
    assert len(session.adapter.chart_calls) == 2, "only the history request and its retry"


@pytest.mark.parametrize(("fail_first", "status"), [(1, None), (2, 500), (2, 429)])
def test_retry_after_transient_failure_reaches_yahoo_again(
    fail_first: int, status: int | None
) -> None:
    session = replay_session(fail_first=fail_first, status=status)
    with pytest.raises(TransientSourceError):
        fetch_history("AAPL", start=SPLIT_DAY, end=DIVIDEND_DAY, session=session)
    calls_before = len(session.adapter.chart_calls)

    history = fetch_history("AAPL", start=SPLIT_DAY, end=DIVIDEND_DAY, session=session)

    assert len(history.prices) == 49
    assert len(session.adapter.chart_calls) > calls_before, "not served from yfinance's memo"


def test_yfinance_absorbs_a_single_http_error_itself() -> None:
    # yfinance repeats any >= 400 answer once, after switching cookie strategy.
    session = replay_session(fail_first=1, status=500)
    history = fetch_history("AAPL", session=session)

    assert len(history.prices) == 49
    assert len(session.adapter.chart_calls) == 3  # tz lookup 500, its retry, history


@pytest.mark.parametrize("symbol", ["../x", "", "A/B", "..", "AAPL\n", "A" * 21])
def test_invalid_ticker_refused_before_any_request(symbol: str) -> None:
    session = replay_session()
    with pytest.raises(InvalidTickerError):
        fetch_history(symbol, session=session)
    assert session.adapter.calls == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": dt.date(2020, 9, 2), "end": dt.date(2020, 9, 1)},
        {"start": SPLIT_DAY, "end": DIVIDEND_DAY, "period": "1mo"},
        {"period": "3 months"},
        {"start": "2020-09-01"},
    ],
)
def test_inconsistent_arguments_refused_before_any_request(kwargs: dict) -> None:
    session = replay_session()
    with pytest.raises((ValueError, TypeError)):
        fetch_history("AAPL", session=session, **kwargs)
    assert session.adapter.calls == []


def test_unsupported_session_refused_before_any_request() -> None:
    with pytest.raises(TypeError, match="session"):
        fetch_history("AAPL", session=object())


def test_period_counts_back_from_the_latest_bar() -> None:
    prices = fetch_history("AAPL", period="5d", session=replay_session()).prices

    assert prices["date"].iloc[-1] == DIVIDEND_DAY
    assert 1 <= len(prices) <= 5


def test_importing_the_module_does_not_import_yfinance() -> None:
    code = "import sys, tickercast.market.yahoo; sys.exit('yfinance' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
