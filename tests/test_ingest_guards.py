"""Issue 25, ingest and data side: bad close prints, absurd values, no silent loss in the
lake (every source), CSV names differing only in case, gaps known to windowing."""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.yahoo_replay import CHART_DIR, replay_session, reset_yfinance
from tickercast.config import IngestConfig, RetrainConfig
from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.locate import csv_path
from tickercast.market.partition import HistoryShrinkError
from tickercast.market.report import ingest_many
from tickercast.market.sources import MalformedFileError, load_sample, sine_prices
from tickercast.modeling.preprocess import GapError, preprocess
from tickercast.modeling.windows import anchors_for, gap_windows
from tickercast.sections import PreprocessSettings

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"
AAPL_CHART = CHART_DIR / "AAPL_1d_2020-08-31_2020-11-07.chart.json"


def real_rows(n: int, ticker: str = "AAPL") -> pd.DataFrame:
    """The last `n` rows of a real Yahoo export (shared data), or of the bundled sample."""
    path = SHARED / "prices" / f"{ticker}.csv"
    frame = (
        pd.read_csv(path).rename(columns=str.lower).rename(columns={"adj close": "adj_close"})
        if path.is_file()
        else load_sample(ticker).prices
    )
    return frame.dropna().tail(n).reset_index(drop=True)


def write_csv(folder: Path, frame: pd.DataFrame, name: str = "AAPL.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    lines = [
        f"{pd.Timestamp(r.date).date()},{r.open!r},{r.high!r},{r.low!r},{r.close!r},"
        f"{r.adj_close!r},{int(r.volume)}\n"
        for r in frame.itertuples()
    ]
    path.write_text(HEADER + "".join(lines))
    return path


def ingest_csv(tmp_path: Path, frame: pd.DataFrame, **options) -> dict:
    folder = tmp_path / "csv"
    write_csv(folder, frame)
    return ingest_ticker(
        "AAPL", "csv", tmp_path / "data", csv_dir=str(folder), options=options or None
    )


def sane(texts: list[str]) -> None:
    """No number in a message longer than a price needs (no 300-digit percentages)."""
    for text in texts:
        assert all(len(n) < 16 for n in re.findall(r"[\d.]+", text)), text


# -- bad prints ---------------------------------------------------------------------------


@pytest.mark.parametrize("bar", ["bar_unchanged", "bar_scaled_too"])
def test_a_bad_last_day_is_never_the_last_close(tmp_path: Path, bar: str) -> None:
    frame = real_rows(300)
    last = frame.index[-1]
    good_close = frame.loc[last - 1, "close"]
    frame.loc[last, "close"] *= 1000  # the bad print
    if bar == "bar_scaled_too":  # high/low agree with it: only the volatility can tell
        for column in ("open", "high", "low", "adj_close"):
            frame.loc[last, column] *= 1000

    result = ingest_csv(tmp_path, frame)

    kind = "close_outside_bar" if bar == "bar_unchanged" else "close_last_jump"
    assert result["quirks"] == {kind: 1} and result["dropped_quirk_rows"] == 1
    stored = lake.read_partition(tmp_path / "data", "AAPL")
    assert len(stored) == 299 and stored["close"].iloc[-1] == good_close
    assert stored["high"].notna().all(), "the high is not discarded in the close's place"
    (note,) = [w for w in result["warnings"] if "bad close print" in w]
    assert f"{kind} 1" in note and "close 122410 after 123.24, x993" in note
    sane(result["warnings"])


def test_a_held_back_last_day_is_kept_once_a_later_day_confirms_it(tmp_path: Path) -> None:
    frame = real_rows(200)
    for column in ("open", "high", "low", "close", "adj_close"):
        frame.loc[frame.index[-2] :, column] *= 3  # a real re-rating: the level stays

    held = ingest_csv(tmp_path, frame.iloc[:-1])
    assert held["quirks"] == {"close_last_jump": 1} and held["rows"] == 198
    assert "kept once a later day confirms it" in " ".join(held["warnings"])

    confirmed = ingest_csv(tmp_path, frame)
    assert confirmed["quirks"] == {} and confirmed["rows"] == 200
    assert any("close moved +20" in w for w in confirmed["warnings"]), "still flagged"


def test_a_one_day_spike_that_reverts_is_dropped_and_fail_refuses_it(tmp_path: Path) -> None:
    frame = real_rows(300)
    day = frame.index[150]
    for column in ("open", "high", "low", "close", "adj_close"):
        frame.loc[day, column] *= 1000

    result = ingest_csv(tmp_path, frame)
    assert result["quirks"] == {"close_spike": 1} and result["rows"] == 299
    assert lake.read_partition(tmp_path / "data", "AAPL")["close"].max() < 1000
    sane(result["warnings"])

    with pytest.raises(MalformedFileError, match=r"AAPL.csv, line 152: .*close_spike"):
        ingest_csv(tmp_path / "strict", frame, on_quirk="fail")
    assert not (tmp_path / "strict" / "data").exists()


@pytest.mark.parametrize("column", ["close", "high", "volume"])
def test_absurd_magnitudes_are_invalid_rows_not_kept(tmp_path: Path, column: str) -> None:
    frame = real_rows(100)
    frame.loc[50, column] = 1e300 if column != "volume" else 1e18

    result = ingest_csv(tmp_path, frame)

    stored = lake.read_partition(tmp_path / "data", "AAPL")
    assert result["rows"] == 99 and result["dropped_null_rows"] == 1
    assert stored["high"].max() < 1e6 and stored["close"].max() < 1e6
    sane(result["warnings"])
    with pytest.raises(MalformedFileError, match="line 52"):
        ingest_csv(tmp_path / "strict", frame, on_quirk="fail")


def test_real_exports_hold_no_bad_print(tmp_path: Path) -> None:
    """The rules stay quiet on decades of real history (1980-2020, five tickers)."""
    from tickercast.market.locate import sample_tickers

    for ticker in sample_tickers():
        result = ingest_ticker(ticker, "sample", tmp_path / "data")
        bad = {k for k in result["quirks"] if k.startswith("close_")}
        assert not bad - {"close_above_high", "close_below_low"}, (ticker, result["quirks"])


# -- no silent loss in the lake ---------------------------------------------------------------


def test_a_shorter_csv_is_refused_with_the_counts_unless_replace(tmp_path: Path) -> None:
    full = real_rows(1000)
    ingest_csv(tmp_path, full)
    path = lake.partition_path(tmp_path / "data", "AAPL")
    before = path.read_bytes()

    with pytest.raises(HistoryShrinkError) as refused:
        ingest_csv(tmp_path, full.tail(100))
    message = str(refused.value)
    assert "ticker AAPL" in message and "100 row(s)" in message and "lake 1000" in message
    assert "900 stored day(s) would be removed" in message and "--replace" in message
    assert "\n" not in message
    assert path.read_bytes() == before, "nothing stored changed"

    replaced = ingest_csv(tmp_path, full.tail(100), replace=True)
    assert replaced["rows"] == 100 and replaced["rows_removed"] == 900
    assert any("removed 900 day(s)" in w for w in replaced["warnings"])


def test_longer_or_equal_sources_and_quirk_drops_pass(tmp_path: Path) -> None:
    frame = real_rows(300)
    ingest_csv(tmp_path, frame.iloc[:200])
    assert ingest_csv(tmp_path, frame)["rows_added"] == 100
    assert ingest_csv(tmp_path, frame)["rows_removed"] == 0
    frame.loc[250, "close"] *= 1000  # a stored day found to be a bad print: announced
    result = ingest_csv(tmp_path, frame)
    assert result["rows"] == 299 and result["quirks"] == {"close_spike": 1}
    assert result["rows_removed"] == 0, "announced as a bad print, not a loss"


def test_sample_source_refused_over_a_longer_history(tmp_path: Path) -> None:
    sample = load_sample("MSFT").prices
    later = sample.tail(1).copy()
    later["date"] = pd.Timestamp(sample["date"].iloc[-1]) + pd.offsets.BDay(1)
    write_csv(tmp_path / "csv", pd.concat([sample, later]), "MSFT.csv")
    ingest_ticker("MSFT", "csv", tmp_path / "data", csv_dir=str(tmp_path / "csv"))

    with pytest.raises(HistoryShrinkError, match=r"ticker MSFT: .*1 stored day\(s\) would be"):
        ingest_ticker("MSFT", "sample", tmp_path / "data")
    result = ingest_ticker("MSFT", "sample", tmp_path / "data", options={"replace": True})
    assert result["rows_removed"] == 1


def test_sine_source_refused_over_a_longer_history(tmp_path: Path) -> None:
    sine = sine_prices().prices
    earlier = sine.head(1).copy()
    earlier["date"] = dt.date(1999, 12, 31)
    write_csv(tmp_path / "csv", pd.concat([earlier, sine]), "SINE.csv")
    ingest_ticker("SINE", "csv", tmp_path / "data", csv_dir=str(tmp_path / "csv"))

    with pytest.raises(HistoryShrinkError, match="1999-12-31"):
        ingest_ticker("SINE", "sine", tmp_path / "data")
    assert (
        ingest_ticker("SINE", "sine", tmp_path / "data", options={"replace": True})["rows_removed"]
        == 1
    )


@pytest.mark.skipif(not AAPL_CHART.is_file(), reason="recorded Yahoo responses not found")
def test_yahoo_refetch_with_fewer_days_is_refused(tmp_path: Path) -> None:
    reset_yfinance(tmp_path / "yfinance-cache")
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning, r"yfinance\.")
    fast = {"retry_delay": 0.001, "max_retry_delay": 0.01}
    data = tmp_path / "data"
    first = ingest_ticker(
        "AAPL", "yfinance", data, start="2020-08-31", session=replay_session(), options=fast
    )
    assert first["rows"] == 49
    body = json.loads(AAPL_CHART.read_text())  # Yahoo now answers without the first 10 bars
    result = body["chart"]["result"][0]
    result["timestamp"] = result["timestamp"][10:]
    for values in result["indicators"]["quote"][0].values():
        del values[:10]
    del result["indicators"]["adjclose"][0]["adjclose"][:10]
    short = tmp_path / "short-charts"
    short.mkdir()
    (short / AAPL_CHART.name).write_text(json.dumps(body))
    before = lake.partition_path(data, "AAPL").read_bytes()

    # an earlier start than what was covered: the full span is fetched again, and replaces
    with pytest.raises(HistoryShrinkError, match="10 stored day"):
        ingest_ticker(
            "AAPL",
            "yfinance",
            data,
            start="2020-08-01",
            session=replay_session(short),
            options=fast,
        )
    assert lake.partition_path(data, "AAPL").read_bytes() == before
    replaced = ingest_ticker(
        "AAPL",
        "yfinance",
        data,
        start="2020-08-01",
        session=replay_session(short),
        options={**fast, "replace": True},
    )
    assert replaced["rows"] == 39 and replaced["rows_removed"] == 10


def test_replace_is_an_ingest_setting_and_a_cli_option() -> None:
    from tickercast.app.cli import build_parser

    assert IngestConfig(replace=True).ingest.options().replace is True
    assert RetrainConfig().ingest.replace is False
    assert IngestConfig.leaf_field("replace").description
    for command in ("ingest", "retrain"):
        args = build_parser().parse_args([command, "--replace"])
        assert args.replace is True


# -- two names for one ticker --------------------------------------------------------------


def test_csv_files_differing_only_in_case_are_refused_naming_both(tmp_path: Path) -> None:
    frame = real_rows(50)
    write_csv(tmp_path / "csv", frame, "aapl.csv")
    write_csv(tmp_path / "csv", frame, "AAPL.csv")
    write_csv(tmp_path / "csv", frame, "MSFT.csv")
    if len(list((tmp_path / "csv").iterdir())) < 3:
        pytest.skip("case-insensitive file system")

    with pytest.raises(ValueError, match=r"AAPL.csv and aapl.csv .* differ only in case"):
        csv_path(tmp_path / "csv", "AAPL")
    rows, _ = ingest_many(["AAPL", "MSFT"], "csv", tmp_path / "data", csv_dir=str(tmp_path / "csv"))
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert "AAPL.csv and aapl.csv" in rows[0]["error"]


# -- gaps ------------------------------------------------------------------------------------


def gapped_history(tmp_path: Path) -> pd.DataFrame:
    """A real history whose 100 consecutive zero closes were dropped at ingest."""
    frame = real_rows(700)
    frame.loc[300:399, "close"] = 0.0
    result = ingest_csv(tmp_path, frame)
    assert result["dropped_null_rows"] == 100
    return lake.read_partition(tmp_path / "data", "AAPL")


def settings(**changes) -> PreprocessSettings:
    base = dict(start=None, features=["close"], target="close", lookback=20, horizon=5)
    return PreprocessSettings(**{**base, **changes})


def test_windows_never_span_a_gap_unannounced(tmp_path: Path) -> None:
    prices = gapped_history(tmp_path)

    spec, _ = preprocess(prices, settings(), who="ticker AAPL")  # default: split
    assert spec.on_gap == "split" and len(spec.gaps) == 1
    row, before, after, missing = spec.gaps[0]
    assert missing >= 100 and pd.Timestamp(prices["date"].iloc[row + 1]) == pd.Timestamp(after)
    skipped = gap_windows(spec)
    assert sum(skipped.values()) == 20 + 5, "lookback + horizon windows hold the gap"
    built = anchors_for(spec)
    for anchors in built.values():
        assert not np.any((anchors - 20 <= row) & (row <= anchors + 5 - 1))
    total = spec.n_rows - 20 - 5 + 1  # every window that fits, before splitting
    assert sum(len(a) for a in built.values()) < total - 20

    bridged, _ = preprocess(prices, settings(on_gap="bridge"), who="ticker AAPL")
    assert gap_windows(bridged) == skipped
    assert sum(len(a) for a in anchors_for(bridged).values()) > sum(len(a) for a in built.values())

    with pytest.raises(GapError, match=r"ticker AAPL: 1 gap\(s\): .*on_gap=refuse"):
        preprocess(prices, settings(on_gap="refuse"), who="ticker AAPL")


def test_short_holiday_gaps_are_no_gaps(tmp_path: Path) -> None:
    prices = real_rows(2000)  # 2013-2020: weekends, holidays, Hurricane Sandy (2 days)
    spec, _ = preprocess(prices, settings(), who="ticker AAPL")
    assert spec.gaps == []


def test_a_split_left_without_windows_is_refused(tmp_path: Path) -> None:
    prices = gapped_history(tmp_path).iloc[:353]  # the test rows begin at the gap
    with pytest.raises(GapError, match="no test window left"):
        preprocess(prices, settings(lookback=50), who="ticker AAPL")
