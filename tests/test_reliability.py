"""The failure-mode suite, data side: each failure of docs/RELIABILITY.md tried for real.

Network faults go through yfinance's own code (offline replay with injected faults);
crashes are real processes killed with SIGKILL in the middle of a write; a full disk
is a real tmpfs filled up (skipped where mounting is not allowed) and, everywhere, an
ENOSPC raised by the writer. The model side (bundles, training, registry, the HTTP
service) is in tests/test_reliability_models.py.
"""

from __future__ import annotations

import contextlib
import errno
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
import requests

from tests.test_ingest_flow import HEADER, ROWS  # a small valid Yahoo CSV
from tests.yahoo_replay import (
    _CHART_PATH,
    CHART_DIR,
    ReplayAdapter,
    ReplaySession,
    _fault,
    reset_yfinance,
)
from tickercast.errors import CorruptPartitionError, PermanentSourceError
from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.options import IngestOptions
from tickercast.market.partition import CorruptSkippedError
from tickercast.market.report import ingest_many, verdict
from tickercast.market.schema import empty_events
from tickercast.tickers import InvalidTickerError

ROOT = Path(__file__).resolve().parents[1]
MORE_ROWS = "2020-01-07,11.5,12.5,11,12,11.9,400\n2020-01-08,12,13,11.5,12.5,12.4,500\n"
NO_SLEEP = {"retry_delay": 0.0, "max_retry_delay": 0.0}

needs_recordings = pytest.mark.skipif(
    not CHART_DIR.is_dir(), reason=f"recorded Yahoo responses not found at {CHART_DIR}"
)


@pytest.fixture(autouse=True)
def offline_yfinance(tmp_path: Path) -> None:
    reset_yfinance(tmp_path / "yfinance-cache")
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning, r"yfinance\.")


# -- fault injection --------------------------------------------------------------------


@dataclass
class FaultyAdapter(ReplayAdapter):
    """The Yahoo replay with network faults: scheduled per symbol, or random.

    `pending[SYMBOL]` lists the faults the next chart requests for that symbol get, in
    order; with `rate` > 0 any chart request fails with that probability (seeded). A
    fault is "reset" (connection refused/reset), "timeout" (read timeout), "truncated"
    (the connection drops mid-answer: half the body), or an HTTP status (500, 503, 429).
    """

    pending: dict[str, list] = field(default_factory=dict)
    rate: float = 0.0
    seed: int = 0
    kinds: tuple = ("reset", "timeout", "truncated", 500, 503, 429)
    injected: list = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._rng = random.Random(self.seed)

    def send(self, request, **kwargs):  # type: ignore[override]
        url = request.url or ""
        chart = _CHART_PATH.fullmatch(urlsplit(url).path)
        if chart is None:
            return super().send(request, **kwargs)
        symbol = unquote(chart["symbol"]).upper()
        queue = self.pending.get(symbol)
        kind = queue.pop(0) if queue else None
        if kind is None and self.rate and self._rng.random() < self.rate:
            kind = self._rng.choice(self.kinds)
        if kind is None:
            return super().send(request, **kwargs)
        self.injected.append((symbol, kind))
        if kind == "truncated":
            response = super().send(request, **kwargs)
            response._content = response._content[: len(response._content) // 2]
            return response
        self.calls.append(url)
        self.chart_calls.append(url)
        if kind == "reset":
            raise requests.ConnectionError(f"injected fault: connection reset for {url}")
        if kind == "timeout":
            raise requests.ReadTimeout(f"injected fault: read timed out for {url}")
        return _fault(request, int(kind))


def faulty_session(**kwargs) -> ReplaySession:
    return ReplaySession(FaultyAdapter(CHART_DIR, **kwargs))


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones too) by relative path, with its bytes."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def clean_lake(tmp_path: Path, windows: dict[str, dict]) -> Path:
    """The same windows ingested once, with no faults: what every faulty run must equal."""
    reset_yfinance(tmp_path / "yf-clean")
    data = tmp_path / "clean"
    for ticker, window in windows.items():
        ingest_ticker(ticker, "yfinance", data, session=faulty_session(), **window)
    return data


def assert_same_lake(data: Path, clean: Path, tickers: list[str]) -> None:
    for ticker in tickers:
        got, want = lake.read_partition(data, ticker), lake.read_partition(clean, ticker)
        assert not got["date"].duplicated().any(), f"{ticker}: duplicate days"
        pd.testing.assert_frame_equal(got, want)
        pd.testing.assert_frame_equal(
            lake.read_events(data, ticker), lake.read_events(clean, ticker)
        )


# -- network drops mid-ingest -----------------------------------------------------------


@needs_recordings
def test_network_drops_mid_ingest_are_retried_with_backoff_and_add_no_duplicates(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    sleeps: list[float] = []
    opts = {"retries": 3, "retry_delay": 1.0, "jitter": 0.0}
    first = {"AAPL": {"end": "2020-10-15"}, "MSFT": {"end": "2021-06-30"}}
    # AAPL: the connection drops twice in a row, then a read times out mid-run;
    # MSFT: its first answer is cut off halfway (a 200 with half a body).
    session = faulty_session(
        pending={"AAPL": ["reset", "reset"], "MSFT": ["truncated"]},
    )
    results = {}
    for ticker, window in first.items():
        results[ticker] = ingest_ticker(
            ticker, "yfinance", data, session=session, options=opts, sleep=sleeps.append, **window
        )
    assert session.adapter.injected == [("AAPL", "reset"), ("AAPL", "reset"), ("MSFT", "truncated")]
    assert results["AAPL"]["attempts"] == 3 and results["MSFT"]["attempts"] == 2
    assert sleeps == [1.0, 2.0, 1.0], "exponential backoff per ticker: 1 s, then 2 s"
    assert "attempt 1/4 failed" in results["AAPL"]["retries"][0]
    assert "cut short" in results["MSFT"]["retries"][0]

    # The nightly rerun: the overlap is fetched again while faults keep coming.
    rerun = {"AAPL": {}, "MSFT": {}}
    session = faulty_session(pending={"AAPL": ["timeout", 503, 503, 503], "MSFT": ["reset"]})
    rows, done = ingest_many(
        ["AAPL", "MSFT"], "yfinance", data, session=session, options=opts, sleep=sleeps.append
    )
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    for ticker in ("AAPL", "MSFT"):  # refetch: a dividend came in, history was re-adjusted
        assert done[ticker]["mode"] in ("incremental", "refetch")
        assert done[ticker]["attempts"] > len(done[ticker]["fetches"]), "faults were retried"
    assert_same_lake(data, clean_lake(tmp_path, rerun), ["AAPL", "MSFT"])


@needs_recordings
def test_an_outage_longer_than_the_retries_fails_that_ticker_only_and_the_next_run_catches_up(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    session = faulty_session(pending={"AAPL": ["reset"] * 10})
    rows, _ = ingest_many(
        ["AAPL", "MSFT"], "yfinance", data, session=session, options={"retries": 2, **NO_SLEEP}
    )
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert rows[0]["error"].startswith("transient: ticker AAPL: gave up after 3 attempt(s)")
    assert not lake.partition_path(data, "AAPL").exists()
    rows, _ = ingest_many(["AAPL", "MSFT"], "yfinance", data, session=faulty_session())
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert_same_lake(data, clean_lake(tmp_path, {"AAPL": {}, "MSFT": {}}), ["AAPL", "MSFT"])


# -- unknown ticker, empty window, start after end ----------------------------------------


@needs_recordings
def test_unknown_ticker_and_empty_window_fail_at_once_naming_them_and_others_proceed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    sleeps: list[float] = []
    session = faulty_session()
    rows, _ = ingest_many(
        ["AAPL", "ZZZZQ", "MSFT"],
        "yfinance",
        data,
        session=session,
        options={"retries": 5},
        sleep=sleeps.append,
    )
    assert [(r["ticker"], r["status"]) for r in rows] == [
        ("AAPL", "ok"),
        ("ZZZZQ", "failed"),
        ("MSFT", "ok"),
    ]
    assert rows[1]["error"].startswith("permanent: ticker ZZZZQ")
    assert sleeps == [], "a permanent failure is never retried"
    assert verdict(rows, "all") is None

    stored = snapshot(data / "lake")
    session = faulty_session()
    # a weekend: a valid request that holds no trading day
    rows, _ = ingest_many(
        ["AAPL"], "yfinance", data, session=session, start="2020-10-10", end="2020-10-11"
    )
    assert rows[0]["status"] == "ok" and rows[0]["mode"] == "up-to-date", "nothing missing"
    fresh = tmp_path / "fresh"
    with pytest.raises(PermanentSourceError, match=r"ticker AAPL: .*2020-10-10.*2020-10-11"):
        ingest_ticker(
            "AAPL", "yfinance", fresh, session=session, start="2020-10-10", end="2020-10-11"
        )
    assert not lake.partition_path(fresh, "AAPL").exists()

    session = faulty_session()
    with pytest.raises(ValueError, match="ticker MSFT: start 2021-03-02 is after end 2021-03-01"):
        ingest_ticker(
            "MSFT", "yfinance", data, session=session, start="2021-03-02", end="2021-03-01"
        )
    assert session.adapter.calls == [], "refused before any request"
    assert snapshot(data / "lake") == stored


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--start", "2021-03-02", "--end", "2021-03-01"], "start 2021-03-02 is after end"),
        (["--tickers", "AAPL", "a/b"], "invalid ticker 'a/b'"),
        (["--tickers", "AAPL;rm -rf ~"], "invalid ticker 'AAPL;rm -rf ~'"),
        (["--on-corrupt", "ignore"], "got 'ignore'; input should be 'reingest', 'skip' or"),
    ],
)
def test_cli_refuses_bad_dates_and_names_before_any_work(
    tmp_path: Path, capsys, argv: list[str], fragment: str
) -> None:
    from tickercast.app.cli import main

    data = tmp_path / "data"
    base = ["ingest", "--source", "yfinance", "--data-dir", str(data)]
    if "--tickers" not in argv:
        base += ["--tickers", "AAPL", "MSFT"]
    assert main([*base, *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not data.exists(), "refused before any work"


# -- path and shell characters ------------------------------------------------------------

UNSAFE = [
    "../x",
    "..",
    "a/b",
    "/etc/passwd",
    "AAPL;rm -rf ~",
    "$(id)",
    "`id`",
    "A B",
    "AAPL\n",
    "%2e%2e",
    "~root",
    "A|B",
    "A&B",
    "C:\\x",
    "\x00",
    "ÄAPL",
]


@pytest.mark.parametrize("symbol", UNSAFE)
def test_unsafe_ticker_refused_before_any_path_or_url(tmp_path: Path, symbol: str) -> None:
    from tickercast.delivery import bundle as export
    from tickercast.delivery import registry
    from tickercast.market.locate import csv_path, sample_path

    data = tmp_path / "data"
    asked: list[str] = []

    def fetch(ticker, *args):  # never reached
        asked.append(ticker)
        raise AssertionError("fetch was called")

    for source, extra in (("yfinance", {"fetch": fetch}), ("csv", {"csv_dir": str(tmp_path)})):
        with pytest.raises(InvalidTickerError, match="invalid ticker"):
            ingest_ticker(symbol, source, data, **extra)
    for build in (
        lambda: lake.partition_path(data, symbol),
        lambda: lake.partition_lock(data, symbol),
        lambda: csv_path(tmp_path, symbol),
        lambda: sample_path(symbol),
        lambda: export.versions_dir(data, symbol),
        lambda: registry.registry_path(data, symbol),
    ):
        with pytest.raises(InvalidTickerError):
            build()
    assert asked == [] and not data.exists()


# -- malformed CSV ------------------------------------------------------------------------

CSV_CASES = {
    "NULLS": (HEADER + ROWS + "2020-01-07,null,null,null,null,null,null\n" * 2, None),
    "NOCLOSE": (
        "Date,Open,High,Low,Adj Close,Volume\n2020-01-02,1,2,0.5,1,10\n",
        "line 1: missing column(s) ['close']",
    ),
    "BADDATE": (HEADER + ROWS + "2020-02-30,1,2,0.5,1,1,10\n", "line 5, field date"),
    "TEXTPRICE": (
        HEADER + ROWS + "2020-01-07,11.5,12.5,11,eleven,11.9,400\n",
        "line 5, field close: 'eleven' is not a number",
    ),
    "ALLNULL": (HEADER + "2020-01-02,null,null,null,null,null,null\n", "all 1 data rows are null"),
}


def test_malformed_csvs_refused_naming_file_line_and_field_null_rows_counted(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "csv"
    data = tmp_path / "data"
    for name in CSV_CASES:  # yesterday's good files: their partitions must survive
        write(tmp_path / "good", f"{name}.csv", HEADER + ROWS)
    ingest_many(list(CSV_CASES), "csv", data, csv_dir=str(tmp_path / "good"))
    before = snapshot(data / "lake")
    for name, (text, _) in CSV_CASES.items():
        write(folder, f"{name}.csv", text)

    rows, _ = ingest_many(list(CSV_CASES), "csv", data, csv_dir=str(folder))

    by = {r["ticker"]: r for r in rows}
    assert by["NULLS"]["status"] == "ok" and by["NULLS"]["rows_dropped"] == 2
    assert by["NULLS"]["rows"] == 3
    for name, (_, fragment) in CSV_CASES.items():
        if fragment is None:
            continue
        assert by[name]["status"] == "failed"
        assert str(folder / f"{name}.csv") in by[name]["error"] and fragment in by[name]["error"]
        path = f"prices/{lake.partition_name(name)}/part-0.parquet"
        assert snapshot(data / "lake")[path] == before[path], f"{name}: stored data changed"


# -- corrupted partitions -----------------------------------------------------------------


def corrupt(path: Path) -> bytes:
    """Overwrite the middle of a Parquet file (its data pages) and cut off its footer."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3 : len(raw) // 2] = b"\xde\xad\xbe\xef" * (
        (len(raw) // 2 - len(raw) // 3) // 4
    )
    path.write_bytes(bytes(raw[: len(raw) - 7]))
    return path.read_bytes()


@needs_recordings
@pytest.mark.parametrize("on_corrupt", ["reingest", "skip", "fail"])
def test_corrupt_partition_is_reported_by_name_and_handled_by_choice(
    tmp_path: Path, on_corrupt: str
) -> None:
    data = tmp_path / "data"
    windows = {"AAPL": {"end": "2020-10-15"}, "MSFT": {"end": "2021-06-30"}}
    for ticker, window in windows.items():
        ingest_ticker(ticker, "yfinance", data, session=faulty_session(), **window)
    msft = snapshot(data / "lake" / "prices" / "ticker=MSFT")
    msft_events = snapshot(data / "lake" / "events" / "ticker=MSFT")
    path = lake.partition_path(data, "AAPL")
    damaged = corrupt(path)
    with pytest.raises(CorruptPartitionError, match="ticker=AAPL/part-0.parquet"):
        lake.read_partition(data, "AAPL")  # every reader names the file

    rows = []
    for ticker, window in windows.items():
        row, _ = ingest_many(
            [ticker],
            "yfinance",
            data,
            session=faulty_session(),
            options={"on_corrupt": on_corrupt},
            **window,
        )
        rows += row
    aapl, msft_row = rows
    assert msft_row["status"] == "ok" and msft_row["mode"] == "up-to-date"
    assert snapshot(data / "lake" / "prices" / "ticker=MSFT") == msft, "other partitions untouched"
    assert snapshot(data / "lake" / "events" / "ticker=MSFT") == msft_events
    if on_corrupt == "reingest":
        assert aapl["status"] == "ok" and aapl["mode"] == "full"
        (note,) = [w for w in aapl["warnings"] if "corrupt" in w]
        assert str(path) in note and "re-ingested" in note
        assert_same_lake(data, clean_lake(tmp_path, {"AAPL": windows["AAPL"]}), ["AAPL"])
    else:
        assert str(path) in aapl["error"] and f"on_corrupt={on_corrupt}" in aapl["error"]
        assert path.read_bytes() == damaged, "left exactly as it was"
        assert aapl["status"] == ("skipped" if on_corrupt == "skip" else "failed")
        # skipping is a choice, not a failure; `fail` fails the run under fail_on=any
        assert (verdict(rows, "any") is None) == (on_corrupt == "skip")


def test_corrupt_events_file_of_a_csv_ticker_is_reported_and_replaced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv = write(tmp_path / "csv", "AAA.csv", HEADER + ROWS).parent
    ingest_ticker("AAA", "csv", data, csv_dir=str(csv))
    events = lake.write_events(data, "AAA", empty_events())
    events.write_bytes(b"PAR1 garbage")
    with pytest.raises(CorruptSkippedError, match=re.escape(str(events))):
        ingest_ticker("AAA", "csv", data, csv_dir=str(csv), options={"on_corrupt": "skip"})
    result = ingest_ticker("AAA", "csv", data, csv_dir=str(csv))
    assert any(str(events) in w and "re-ingested" in w for w in result["warnings"])
    assert lake.read_events(data, "AAA") is None and len(lake.read_partition(data, "AAA")) == 3


def test_on_corrupt_is_checked() -> None:
    with pytest.raises(
        ValueError, match=r"on_corrupt must be one of \['reingest', 'skip', 'fail'\]"
    ):
        IngestOptions(on_corrupt="ignore")


def test_ingest_flow_skips_a_corrupt_ticker_by_choice_and_completes(
    prefect_server, tmp_path: Path
) -> None:
    from tickercast.config import IngestConfig
    from tickercast.flows.ingest import ingest

    folder = tmp_path / "csv"
    for name in ("AAA", "BBB"):
        write(folder, f"{name}.csv", HEADER + ROWS)
    data = tmp_path / "data"
    config = IngestConfig(source="csv", csv_dir=str(folder), data_dir=str(data), fail_on="any")
    assert ingest(config, return_state=True).is_completed()
    damaged = corrupt(lake.partition_path(data, "AAA"))
    write(folder, "BBB.csv", HEADER + ROWS + MORE_ROWS)  # BBB has news tonight

    state = ingest(config.model_copy(update={"on_corrupt": "skip"}), return_state=True)

    assert state.is_completed(), state.message
    rows = {r["ticker"]: r for r in state.result()["tickers"]}
    assert (
        rows["AAA"]["status"] == "skipped" and "ticker=AAA/part-0.parquet" in rows["AAA"]["error"]
    )
    assert rows["BBB"]["status"] == "ok" and rows["BBB"]["rows"] == 5
    assert lake.partition_path(data, "AAA").read_bytes() == damaged

    state = ingest(config, return_state=True)  # reingest (the default) repairs it
    assert state.is_completed(), state.message
    assert len(lake.read_partition(data, "AAA")) == 3


# -- killed mid-write -------------------------------------------------------------------

SLOW_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
import pyarrow.parquet as pq
import tickercast.market.lake as lake
from tickercast.market.ingest import ingest_ticker

real = pq.write_table

def slow_write(table, where, **kwargs):
    real(table, where, **kwargs)  # the full new file, then only its first half stays
    data = Path(where).read_bytes()
    Path(where).write_bytes(data[: len(data) // 2])
    Path({flag!r}).touch()  # tell the test we are mid-write
    time.sleep(120)

lake.pq.write_table = slow_write
ingest_ticker("AAA", "csv", {data!r}, csv_dir={csv!r})
"""


def run_until_flag(code: str, flag: Path, timeout: float = 120) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"writer exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("writer never reached the write")
        time.sleep(0.02)
    return proc


def test_sigkill_in_the_middle_of_a_lake_write_keeps_the_old_partition(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv = write(tmp_path / "csv", "AAA.csv", HEADER + ROWS).parent
    ingest_ticker("AAA", "csv", data, csv_dir=str(csv))
    partition = lake.partition_path(data, "AAA")
    before = partition.read_bytes()
    write(csv, "AAA.csv", HEADER + ROWS + MORE_ROWS)
    flag = tmp_path / "mid-write"

    proc = run_until_flag(
        SLOW_WRITER.format(root=str(ROOT), flag=str(flag), data=str(data), csv=str(csv)), flag
    )
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL

    leftovers = [p.name for p in partition.parent.iterdir() if p.name != "part-0.parquet"]
    assert len(leftovers) == 1 and leftovers[0].startswith("."), "the half file is hidden"
    assert partition.read_bytes() == before, "the old partition is intact"
    assert len(lake.read_partition(data, "AAA")) == 3
    assert lake.read_dataset(data).num_rows == 3, "dataset readers never see the half file"
    import duckdb

    glob = str(lake.prices_root(data) / "*" / "*.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(3,)]

    result = ingest_ticker("AAA", "csv", data, csv_dir=str(csv))  # the next run
    assert result["rows"] == 5 and any("leftover temporary" in w for w in result["warnings"])
    assert sorted(p.name for p in partition.parent.iterdir()) == ["part-0.parquet"]


# -- disk full ---------------------------------------------------------------------------


def big_csv(path: Path, rows: int = 40_000) -> Path:
    """Random (incompressible) valid bars: far more than a small disk holds as Parquet."""
    rng = np.random.default_rng(0)
    low = rng.uniform(1, 2, rows)
    frame = pd.DataFrame(
        {
            "Date": pd.bdate_range("1900-01-01", periods=rows).strftime("%Y-%m-%d"),
            "Open": low + rng.uniform(0, 1, rows),
            "High": low + 2,
            "Low": low,
            "Close": low + rng.uniform(0, 1, rows),
            "Adj Close": low + rng.uniform(0, 1, rows),
            "Volume": rng.integers(0, 10**9, rows),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@contextlib.contextmanager
def tiny_disk(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `where`; skips the test where mounting is refused."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def assert_disk_full_refused(data: Path, csv: Path, before: bytes) -> None:
    partition = lake.partition_path(data, "AAA")
    with pytest.raises(OSError) as err:
        ingest_ticker("AAA", "csv", data, csv_dir=str(csv))
    assert err.value.errno == errno.ENOSPC
    message = str(err.value)
    assert str(partition) in message and "No space left on device" in message, message
    assert "nothing was replaced" in message
    assert partition.read_bytes() == before
    assert sorted(p.name for p in partition.parent.iterdir()) == ["part-0.parquet"], "no temp"
    rows, _ = ingest_many(["AAA"], "csv", data, csv_dir=str(csv))
    assert rows[0]["status"] == "failed" and "No space left on device" in rows[0]["error"]


def test_disk_full_on_a_real_tmpfs_is_a_clear_error_and_keeps_the_old_partition(
    tmp_path: Path,
) -> None:
    csv = write(tmp_path / "csv", "AAA.csv", HEADER + ROWS).parent
    with tiny_disk(tmp_path / "disk", "256k") as disk:
        data = disk / "data"
        ingest_ticker("AAA", "csv", data, csv_dir=str(csv))
        before = lake.partition_path(data, "AAA").read_bytes()
        big_csv(csv / "AAA.csv")
        assert_disk_full_refused(data, csv, before)


def test_disk_full_simulated_in_the_writer_keeps_the_old_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = write(tmp_path / "csv", "AAA.csv", HEADER + ROWS).parent
    data = tmp_path / "data"
    ingest_ticker("AAA", "csv", data, csv_dir=str(csv))
    before = lake.partition_path(data, "AAA").read_bytes()
    write(csv, "AAA.csv", HEADER + ROWS + MORE_ROWS)
    real = lake.pq.write_table

    def full_disk(table, where, **kwargs):
        real(table, where, **kwargs)
        Path(where).write_bytes(Path(where).read_bytes()[:100])  # what fitted
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space")

    monkeypatch.setattr(lake.pq, "write_table", full_disk)
    assert_disk_full_refused(data, csv, before)


# -- invalid config ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["--lookback", "0"], "lookback: Input should be greater than or equal to 1"),
        (["--epochs", "-1"], "epochs: Input should be greater than or equal to 1"),
        (
            ["--model", "transformer"],
            "'stacked_lstm', 'lstm', 'bilstm', 'cnn_lstm' or 'lstm_attention'",
        ),
        (["--features", "close", "sentiment"], "'log_volume'"),
        (["--on-corrupt", "ignore"], "'reingest', 'skip' or 'fail'"),
        (["--source", "ftp"], "'sample', 'csv', 'yfinance' or 'sine'"),
    ],
)
def test_invalid_config_is_refused_before_any_work_listing_valid_values(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, argv: list[str], valid: str
) -> None:
    import tickercast.flows.retrain
    from tickercast.app.cli import main

    started: list[str] = []
    monkeypatch.setattr(
        tickercast.flows.retrain, "preflight", lambda config: started.append("work")
    )
    data = tmp_path / "data"
    assert main(["retrain", "--data-dir", str(data), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tickercast retrain: error: invalid config: ")
    assert len(err.splitlines()) == 1 and valid in err, err
    assert started == [] and not data.exists(), "no work started, nothing written"
