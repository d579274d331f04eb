"""Ingest into the lake through yfinance's own parser, replayed offline (tests/yahoo_replay.py).

Nothing mocks yfinance: every fetch goes through `yf.Ticker(...).history()` and its HTTP
requests are answered from recorded Yahoo chart responses, so the requested windows
(`period1`) seen by the replay adapter are what a live run would ask Yahoo for.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from tests.yahoo_replay import ALWAYS, CHART_DIR, replay_session, reset_yfinance
from tickercast.errors import PermanentSourceError, TransientSourceError
from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.options import IngestOptions
from tickercast.market.report import ingest_many, verdict
from tickercast.market.retry import Fetched, call_with_retries, yahoo_fetcher
from tickercast.market.validate import check_prices, move_warnings
from tickercast.market.window import plan_window

if not CHART_DIR.is_dir():
    pytest.skip(f"recorded Yahoo responses not found at {CHART_DIR}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
AAPL_FILE = CHART_DIR / "AAPL_1d_2020-08-31_2020-11-07.chart.json"
NEW_YORK = ZoneInfo("America/New_York")
SPLIT_DAY = dt.date(2020, 8, 31)
DIVIDEND_DAY = dt.date(2020, 11, 6)
# No sleeping in tests: retries wait this long (the schedule itself is checked via `sleep`).
FAST = {"retry_delay": 0.001, "max_retry_delay": 0.01}


@pytest.fixture(autouse=True)
def offline_yfinance(tmp_path: Path) -> Path:
    cache_dir = tmp_path / "yfinance-cache"
    reset_yfinance(cache_dir)
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning, r"yfinance\.")
    return cache_dir


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def recorded_days() -> list[dt.date]:
    result = json.loads(AAPL_FILE.read_text())["chart"]["result"][0]
    return [dt.datetime.fromtimestamp(t, NEW_YORK).date() for t in result["timestamp"]]


def history_starts(session) -> list[dt.date | None]:
    """First day of each history request yfinance sent (not its timezone look-ups)."""
    starts = []
    for url in session.adapter.chart_calls:
        query = parse_qs(urlsplit(url).query)
        if "period1" in query:
            stamp = int(query["period1"][0])
            first = dt.datetime.fromtimestamp(stamp, NEW_YORK).date()
            starts.append(None if first.year < 1950 else first)  # period=max: 99 years back
    return starts


def chart_dir_with(tmp_path: Path, change) -> Path:
    """A copy of the AAPL recording edited by `change(result)`, as its own chart folder."""
    body = json.loads(AAPL_FILE.read_text())
    edited = copy.deepcopy(body)
    change(edited["chart"]["result"][0])
    folder = tmp_path / f"charts-{len(list(tmp_path.glob('charts-*')))}"
    folder.mkdir()
    (folder / AAPL_FILE.name).write_text(json.dumps(edited))
    return folder


def ingest(lake_dir: Path, session, **kwargs) -> dict:
    kwargs.setdefault("options", FAST)
    return ingest_ticker("AAPL", "yfinance", lake_dir, session=session, **kwargs)


# -- parse, adjustment choice, events ---------------------------------------------------


def test_first_ingest_stores_split_adjusted_prices_and_events(lake_dir: Path) -> None:
    session = replay_session()
    result = ingest(lake_dir, session)

    assert result["mode"] == "full" and result["rows"] == result["rows_added"] == 49
    assert (result["first_day"], result["last_day"]) == (str(SPLIT_DAY), str(DIVIDEND_DAY))
    assert history_starts(session) == [None], "a first run asks for the whole history"
    stored = lake.read_partition(lake_dir, "AAPL")
    assert list(stored["date"]) == recorded_days()
    # split-adjusted close: the 4:1 split day is an ordinary move, no warning
    assert stored["close"].pct_change().abs().max() < 0.25 and result["warnings"] == []
    events = lake.read_events(lake_dir, "AAPL")
    assert events.to_dict("records") == [
        {"date": SPLIT_DAY, "kind": "split", "value": 4.0},
        {"date": DIVIDEND_DAY, "kind": "dividend", "value": pytest.approx(0.205)},
    ]
    quote = json.loads(AAPL_FILE.read_text())["chart"]["result"][0]["indicators"]
    assert stored["close"].tolist() == pytest.approx(quote["quote"][0]["close"], rel=1e-12)
    assert stored["adj_close"].tolist() == pytest.approx(quote["adjclose"][0]["adjclose"])


def test_yahoo_null_bars_are_dropped_and_counted(lake_dir: Path, tmp_path: Path) -> None:
    gone = recorded_days().index(dt.date(2020, 9, 15))

    def blank(result: dict) -> None:
        for series in result["indicators"]["quote"][0].values():
            series[gone] = None
        result["indicators"]["adjclose"][0]["adjclose"][gone] = None

    result = ingest(lake_dir, replay_session(chart_dir_with(tmp_path, blank)))

    assert result["dropped_null_rows"] == 1 and result["rows"] == 48
    assert dt.date(2020, 9, 15) not in set(lake.read_partition(lake_dir, "AAPL")["date"])


def test_bar_without_close_is_dropped_and_counted_or_refused(
    lake_dir: Path, tmp_path: Path
) -> None:
    def hole(result: dict) -> None:
        result["indicators"]["quote"][0]["close"][3] = None

    charts = chart_dir_with(tmp_path, hole)
    strict = {**FAST, "on_quirk": "fail"}
    with pytest.raises(ValueError, match=r"ticker AAPL, 2020-09-03: close is missing"):
        ingest(lake_dir, replay_session(charts), options=strict)
    assert not lake.partition_path(lake_dir, "AAPL").exists()

    result = ingest(lake_dir, replay_session(charts))  # default on_quirk=repair
    assert result["dropped_null_rows"] == 1 and result["rows"] == 48 and result["quirks"] == {}
    assert dt.date(2020, 9, 3) not in set(lake.read_partition(lake_dir, "AAPL")["date"])


def test_unexplained_jump_is_a_warning(lake_dir: Path, tmp_path: Path) -> None:
    jump = recorded_days().index(dt.date(2020, 10, 1))

    def spike(result: dict) -> None:
        quote = result["indicators"]["quote"][0]
        for key in ("open", "high", "low", "close"):
            quote[key][jump] *= 2.5
        result["indicators"]["adjclose"][0]["adjclose"][jump] *= 2.5

    result = ingest(
        lake_dir,
        replay_session(chart_dir_with(tmp_path, spike)),
        options={**FAST, "move_threshold": 0.5},
    )

    assert len(result["warnings"]) == 2, result["warnings"]  # up on 10-01, back on 10-02
    assert result["warnings"][0].startswith("ticker AAPL, 2020-10-01: close moved 15")
    assert result["warnings"][1].startswith("ticker AAPL, 2020-10-02: close moved 6")
    assert all("no split recorded" in w for w in result["warnings"])
    assert result["rows"] == 49, "warnings never block the data"


def test_move_on_a_recorded_split_day_is_not_flagged() -> None:
    days = [dt.date(2020, 8, 28), SPLIT_DAY, dt.date(2020, 9, 1)]
    closes = [500.0, 125.0, 130.0]  # an unadjusted 4:1 split
    frame = pd.DataFrame({"date": days, "close": closes})

    assert len(move_warnings(frame, "AAPL", move_threshold=0.5)) == 1
    assert move_warnings(frame, "AAPL", move_threshold=0.5, split_days={SPLIT_DAY}) == []
    assert move_warnings(frame, "AAPL", move_threshold=0.8) == []


# -- incremental ----------------------------------------------------------------------


def test_rerun_asks_only_for_new_days_and_adds_only_them(lake_dir: Path) -> None:
    first = ingest(lake_dir, replay_session(), end="2020-10-15")
    assert first["rows"] == 33 and first["last_day"] == "2020-10-15"
    before = lake.read_partition(lake_dir, "AAPL")

    session = replay_session()
    again = ingest(lake_dir, session, end="2020-11-05", options={**FAST, "overlap_days": 5})

    # one request, starting at the 5th last stored day (the overlap), not at the beginning
    assert history_starts(session) == [dt.date(2020, 10, 9)]
    assert again["mode"] == "incremental" and again["rows_added"] == 15
    after = lake.read_partition(lake_dir, "AAPL")
    assert after["date"].is_unique and after["date"].is_monotonic_increasing
    assert list(after["date"]) == recorded_days()[:48]
    pd.testing.assert_frame_equal(after.iloc[:33], before)  # stored rows kept as they were
    check_prices(after, "AAPL")


def test_rerun_with_nothing_missing_asks_yahoo_nothing(lake_dir: Path) -> None:
    ingest(lake_dir, replay_session(), end="2020-10-15")
    path = lake.partition_path(lake_dir, "AAPL")
    before = path.read_bytes()

    session = replay_session()
    again = ingest(lake_dir, session, start="2020-09-01", end="2020-10-15")

    assert again["mode"] == "up-to-date" and again["rows_added"] == 0
    assert session.adapter.chart_calls == []
    assert path.read_bytes() == before


def test_start_before_the_stored_span_refetches_the_whole_span(lake_dir: Path) -> None:
    ingest(lake_dir, replay_session(), start="2020-10-01", end="2020-10-15")
    session = replay_session()
    result = ingest(lake_dir, session, start="2020-09-01", end="2020-10-15")

    assert history_starts(session) == [dt.date(2020, 9, 1)]
    assert result["mode"] == "full" and result["first_day"] == "2020-09-01"
    assert result["rows_added"] == 21  # 2020-09-01 .. 09-30


def test_start_before_the_first_trading_day_is_not_refetched_every_run(lake_dir: Path) -> None:
    # the recording's first bar is 2020-08-31: as for a ticker listed after `start`
    ingest(lake_dir, replay_session(), start="2020-08-01", end="2020-10-15")
    session = replay_session()
    result = ingest(lake_dir, session, start="2020-08-01", end="2020-11-05")

    assert history_starts(session) == [dt.date(2020, 10, 9)]
    assert result["mode"] == "incremental" and result["rows_added"] == 15

    session = replay_session()  # a re-adjustment refetches from the covered start
    result = ingest(lake_dir, session, start="2020-08-01")
    assert history_starts(session) == [dt.date(2020, 10, 30), dt.date(2020, 8, 1)]
    assert result["mode"] == "refetch" and result["rows"] == 49


def test_new_dividend_in_the_overlap_triggers_a_full_refetch(lake_dir: Path) -> None:
    ingest(lake_dir, replay_session(), end="2020-11-05")  # the 11-06 dividend not yet paid

    session = replay_session()
    result = ingest(lake_dir, session)

    # incremental request first; its answer holds an unknown dividend -> the whole history
    # again (the first run asked for all of it)
    assert history_starts(session) == [dt.date(2020, 10, 30), None]
    assert result["mode"] == "refetch"
    assert any("re-adjusted (new dividend on 2020-11-06" in w for w in result["warnings"])
    assert [f["why"] for f in result["fetches"]] == ["incremental", "re-adjusted"]
    assert lake.read_events(lake_dir, "AAPL")["kind"].tolist() == ["split", "dividend"]
    assert list(lake.read_partition(lake_dir, "AAPL")["date"]) == recorded_days()


def test_rescaled_history_triggers_a_full_refetch_and_leaves_no_stale_rows(
    lake_dir: Path, tmp_path: Path
) -> None:
    ingest(lake_dir, replay_session(), end="2020-10-15")

    def readjust(result: dict) -> None:  # Yahoo re-based adj_close for every day
        series = result["indicators"]["adjclose"][0]["adjclose"]
        series[:] = [v * 0.97 for v in series]

    charts = chart_dir_with(tmp_path, readjust)
    session = replay_session(charts)
    result = ingest(lake_dir, session, end="2020-11-05")

    assert history_starts(session) == [dt.date(2020, 10, 9), None]
    assert result["mode"] == "refetch"
    assert any("all 5 overlapping day(s) changed" in w for w in result["warnings"])
    stored = lake.read_partition(lake_dir, "AAPL")
    expected = json.loads((charts / AAPL_FILE.name).read_text())
    adj = expected["chart"]["result"][0]["indicators"]["adjclose"][0]["adjclose"][:48]
    assert stored["adj_close"].tolist() == pytest.approx(adj, rel=1e-12)  # every row re-based


def test_revision_of_one_overlap_day_is_merged_without_refetch(
    lake_dir: Path, tmp_path: Path
) -> None:
    ingest(lake_dir, replay_session(), end="2020-10-15")
    day = recorded_days().index(dt.date(2020, 10, 14))

    def revise(result: dict) -> None:
        quote = result["indicators"]["quote"][0]
        quote["close"][day] = (quote["close"][day] + quote["high"][day]) / 2

    charts = chart_dir_with(tmp_path, revise)
    session = replay_session(charts)
    result = ingest(lake_dir, session, end="2020-11-05")

    assert history_starts(session) == [dt.date(2020, 10, 9)]
    assert result["mode"] == "incremental"
    assert result["warnings"] == ["revised 1 overlapping day(s): 2020-10-14"]
    stored = lake.read_partition(lake_dir, "AAPL").set_index("date")
    revised = json.loads((charts / AAPL_FILE.name).read_text())["chart"]["result"][0]
    new_close = revised["indicators"]["quote"][0]["close"][day]
    assert stored.loc[dt.date(2020, 10, 14), "close"] == pytest.approx(new_close)


def test_plan_window_rules() -> None:
    days = pd.Index([dt.date(2020, 1, d) for d in (2, 3, 6, 7, 8, 9, 10)])
    assert plan_window(None, None, None, "1y", 5).period == "1y"
    tail = plan_window(days, None, None, "1y", 3)
    assert (tail.start, tail.period, tail.why) == (dt.date(2020, 1, 8), None, "incremental")
    assert plan_window(days, None, dt.date(2020, 1, 9), None, 3) is None
    back = plan_window(days, dt.date(2019, 12, 1), dt.date(2020, 1, 5), None, 3)
    assert (back.start, back.end, back.why) == (
        dt.date(2019, 12, 1),
        dt.date(2020, 1, 10),
        "backfill",
    )


# -- retries --------------------------------------------------------------------------


@pytest.mark.parametrize(("fail_first", "status"), [(1, None), (2, 500), (2, 429)])
def test_transient_failure_is_retried_then_succeeds(
    lake_dir: Path, fail_first: int, status: int | None
) -> None:
    session = replay_session(fail_first=fail_first, status=status)
    sleeps: list[float] = []
    logged: list[str] = []

    result = ingest(
        lake_dir,
        session,
        options={"retries": 3, "retry_delay": 0.5, "jitter": 0.5},
        sleep=sleeps.append,
        log=logged.append,
    )

    assert result["attempts"] == 2 and result["rows"] == 49
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.75
    assert len(logged) == 1 and "ticker AAPL: attempt 1/4 failed" in logged[0]


def test_outage_is_retried_with_growing_delays_then_reported(lake_dir: Path) -> None:
    session = replay_session(fail_first=ALWAYS, status=503)
    sleeps: list[float] = []

    with pytest.raises(TransientSourceError, match=r"ticker AAPL: gave up after 4 attempt"):
        ingest(
            lake_dir,
            session,
            options={"retries": 3, "retry_delay": 1.0, "jitter": 0.25},
            sleep=sleeps.append,
        )

    assert len(sleeps) == 3
    for n, wait in enumerate(sleeps):
        assert 0.75 * 2**n <= wait <= 1.25 * 2**n
    assert not lake.partition_path(lake_dir, "AAPL").exists()


def test_backoff_schedule_is_exponential_capped_and_jittered() -> None:
    opts = IngestOptions(retries=5, retry_delay=1.0, max_retry_delay=5.0, jitter=0.5)
    assert [opts.delay(n, rng=lambda: 0.5) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert opts.delay(2, rng=lambda: 0.0) == 1.0 and opts.delay(2, rng=lambda: 1.0) == 3.0

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset by peer")
        return "ok"

    sleeps: list[float] = []
    assert call_with_retries(flaky, "X", opts, sleep=sleeps.append, rng=lambda: 0.5) == "ok"
    assert sleeps == [1.0, 2.0] and len(calls) == 3


@pytest.mark.parametrize(
    ("ticker", "window"),
    [("ZZZZQ", {}), ("AAPL", {"start": "2020-07-01", "end": "2020-07-31"})],
    ids=["unknown-ticker", "empty-window"],
)
def test_permanent_failure_is_not_retried(lake_dir: Path, ticker: str, window: dict) -> None:
    session = replay_session()
    fetch_calls: list[str] = []
    inner = yahoo_fetcher(session)

    def counted(*args) -> Fetched:
        fetch_calls.append(args[0])
        return inner(*args)

    sleeps: list[float] = []
    with pytest.raises(PermanentSourceError, match=ticker):
        ingest_ticker(
            ticker,
            "yfinance",
            lake_dir,
            fetch=counted,
            options={"retries": 5},
            sleep=sleeps.append,
            **window,
        )
    assert fetch_calls == [ticker] and sleeps == []
    assert session.adapter.chart_calls, "Yahoo was asked once and said no"
    assert not lake.partition_dir(lake_dir, ticker).exists()


# -- many tickers ---------------------------------------------------------------------


def test_one_bad_ticker_never_stops_the_others(lake_dir: Path) -> None:
    rows, results = ingest_many(
        ["AAPL", "ZZZZQ", "MSFT"], "yfinance", lake_dir, session=replay_session(), options=FAST
    )

    assert [(r["ticker"], r["status"]) for r in rows] == [
        ("AAPL", "ok"),
        ("ZZZZQ", "failed"),
        ("MSFT", "ok"),
    ]
    assert rows[1]["error"].startswith("permanent: ticker ZZZZQ")
    assert rows[2]["rows_added"] == 252 and rows[2]["first_day"] == "2021-02-01"
    assert set(results) == {"AAPL", "MSFT"}
    assert verdict(rows, "all") is None
    assert verdict(rows, "any") == "1 of 3 ticker(s) failed: ZZZZQ"
    assert verdict(rows, "never") is None
    all_bad = [dict(r, status="failed") for r in rows]
    assert verdict(all_bad, "all") == "3 of 3 ticker(s) failed: AAPL, ZZZZQ, MSFT"
    assert verdict(all_bad, "never") is None


# -- concurrency and crashes ------------------------------------------------------------

_WORKER = """
import sys, time, warnings
from pathlib import Path
sys.path.insert(0, {root!r})
from tests import netguard; netguard.install()
from tests.yahoo_replay import replay_session, reset_yfinance
from tickercast.market.ingest import ingest_ticker
warnings.filterwarnings("ignore")
reset_yfinance(Path({cache!r}))
session = replay_session()
Path({ready!r}).touch()
while not Path({go!r}).exists():
    time.sleep(0.01)
ingest_ticker("AAPL", "yfinance", {data!r}, end={end!r}, session=session)
"""


def test_concurrent_ingests_of_one_ticker_leave_a_valid_partition(
    lake_dir: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    procs, ready = [], []
    for i, end in enumerate(["2020-10-15", "2020-11-05"]):
        flag = tmp_path / f"ready-{i}"
        code = _WORKER.format(
            root=str(ROOT),
            cache=str(tmp_path / f"yf-{i}"),
            ready=str(flag),
            go=str(go),
            data=str(lake_dir),
            end=end,
        )
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT))
        ready.append(flag)
    deadline = time.monotonic() + 120
    while not all(f.exists() for f in ready):
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), "a worker died while starting"
        time.sleep(0.05)
    go.touch()  # both start their read-fetch-merge-write at once
    assert [p.wait(timeout=120) for p in procs] == [0, 0]

    stored = lake.read_partition(lake_dir, "AAPL")
    check_prices(stored, "AAPL")  # unique, sorted days; valid bars
    assert list(stored["date"]) == recorded_days()[:48], "neither writer lost the other's days"
    assert [p.name for p in lake.partition_dir(lake_dir, "AAPL").iterdir()] == ["part-0.parquet"]


def test_crash_between_temp_file_and_rename_keeps_the_old_partition(lake_dir: Path) -> None:
    ingest(lake_dir, replay_session(), end="2020-10-15")
    path = lake.partition_path(lake_dir, "AAPL")
    before = path.read_bytes()
    code = f"""
import os, sys, warnings
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from tests import netguard; netguard.install()
from tests.yahoo_replay import replay_session, reset_yfinance
import tickercast.atomic as atomic
from tickercast.market.ingest import ingest_ticker
warnings.filterwarnings("ignore")
reset_yfinance(Path({str(lake_dir.parent / "yf-crash")!r}))
real = os.replace
def die(src, dst):
    if str(dst).endswith("part-0.parquet"):
        assert Path(src).stat().st_size > 0  # the new partition is fully written
        os._exit(9)
    real(src, dst)
atomic.os.replace = die
ingest_ticker("AAPL", "yfinance", {str(lake_dir)!r}, end="2020-11-05", session=replay_session())
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ})
    assert proc.returncode == 9
    assert path.read_bytes() == before
    assert lake.read_dataset(lake_dir).num_rows == 33  # the orphaned temp file stays hidden
    rerun = ingest(lake_dir, replay_session(), end="2020-11-05")
    assert rerun["rows"] == 48 and rerun["rows_added"] == 15
