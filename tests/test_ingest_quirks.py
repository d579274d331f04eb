"""Yahoo's real long histories: vendor quirks kept (marked missing), dropped or refused.

Shaped like issue 14's report: Open = 0.0 on the first ~2,000 rows (the 1960s) while high,
low and close are valid, and a handful of later rows with the close outside [low, high] or
high < low. Through CSV import, through yfinance's own parser (replayed offline), as a
whole ingest (library, flow and CLI), and on to the features, where no NaN may pass.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from tests.yahoo_replay import CHART_DIR, replay_session, reset_yfinance
from tickercast.config import IngestConfig, RetrainConfig
from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.options import IngestOptions
from tickercast.market.report import ingest_many, quirks_text, report_row
from tickercast.market.sources import MalformedFileError, load_csv
from tickercast.market.validate import (
    InvalidPricesError,
    check_prices,
    screen_prices,
)
from tickercast.modeling.features import MissingFieldError, build_features
from tickercast.modeling.preprocess import preprocess
from tickercast.sections import IngestChecks, PreprocessSettings

TICKER = "XOM"
ZERO_OPEN = 1987  # the rows of the issue's refusal: "open <= 0 (1987 rows)"
N_ROWS = ZERO_OPEN + 700
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"
# Rows after the zero opens that carry the other quirks (offsets from ZERO_OPEN).
CLOSE_ABOVE_HIGH = (20, 120)
CLOSE_BELOW_LOW = (220,)
HIGH_BELOW_LOW = (320, 321)
FLAT_ZERO_OPEN = 400  # open 0.0 on a bar with high == low == close: the one repair
NULL_CLOSE = 500  # a partly null row: no close, the other fields valid
ALL_NULL = 510  # Yahoo's all-null row


def issue_rows(partial: bool = True) -> tuple[list[dt.date], list[str]]:
    """The days and CSV lines of an issue-shaped export (`partial`: with the null rows)."""
    days = [d.date() for d in pd.bdate_range("1962-01-02", periods=N_ROWS)]
    lines = []
    for i, day in enumerate(days):
        close = 10 + 0.01 * i + 0.3 * np.sin(i / 7)
        o, h, lo, c = close - 0.05, close + 0.1, close - 0.1, close
        k = i - ZERO_OPEN
        if i < ZERO_OPEN:
            o = 0.0
        if k in CLOSE_ABOVE_HIGH:
            c = h + 0.2
        if k in CLOSE_BELOW_LOW:
            c = lo - 0.2
        if k in HIGH_BELOW_LOW:
            h, lo = lo, h
        if k == FLAT_ZERO_OPEN:
            o, h, lo = 0.0, c, c
        row = f"{day},{o:.6f},{h:.6f},{lo:.6f},{c:.6f},{c * 0.9:.6f},{1000 + i}"
        if partial and k == NULL_CLOSE:
            row = f"{day},{o:.6f},{h:.6f},{lo:.6f},null,null,{1000 + i}"
        if partial and k == ALL_NULL:
            row = f"{day},null,null,null,null,null,null"
        lines.append(row + "\n")
    return days, lines


def issue_csv(folder: Path, partial: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TICKER}.csv"
    path.write_text(HEADER + "".join(issue_rows(partial)[1]))
    return path


DAYS = issue_rows()[0]


def day(k: int) -> dt.date:
    """The day of the row `k` rows after the zero opens."""
    return DAYS[ZERO_OPEN + k]


EXPECTED_QUIRKS = {
    "open_zero": ZERO_OPEN + 1,
    "high_below_low": len(HIGH_BELOW_LOW),
    "close_above_high": len(CLOSE_ABOVE_HIGH),
    "close_below_low": len(CLOSE_BELOW_LOW),
}
QUIRKY_ROWS = ZERO_OPEN + 1 + 2 + 2 + 1


# -- CSV import, the whole ingest ---------------------------------------------------------


def test_issue_shaped_export_is_kept_with_quirks_marked_missing_and_counted(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "csv"
    issue_csv(folder)
    data = tmp_path / "data"

    result = ingest_ticker(TICKER, "csv", data, csv_dir=str(folder))  # default: repair

    assert result["quirks"] == EXPECTED_QUIRKS
    assert list(result["quirks"]) == list(EXPECTED_QUIRKS), "kinds in the order checked"
    assert result["dropped_null_rows"] == 2, "the all-null row and the row without a close"
    assert result["rows"] == N_ROWS - 2 and result["dropped_quirk_rows"] == 0
    (note,) = [w for w in result["warnings"] if "vendor quirks" in w]
    assert f"open_zero {ZERO_OPEN + 1} (1962-01-02..{day(FLAT_ZERO_OPEN)})" in note
    assert f"close_below_low 1 ({day(CLOSE_BELOW_LOW[0])})" in note
    assert "1 flat-bar open(s) set to the close" in note and "on_quirk=repair" in note
    (dropped,) = [w for w in result["warnings"] if "without a valid close" in w]
    assert f"dropped 1 row(s) without a valid close ({day(NULL_CLOSE)})" in dropped

    stored = lake.read_partition(data, TICKER).set_index("date")
    assert day(NULL_CLOSE) not in stored.index and day(ALL_NULL) not in stored.index
    assert stored["close"].notna().all() and stored["adj_close"].notna().all()
    missing_open = set(stored.index[stored["open"].isna()])
    assert missing_open == set(DAYS[:ZERO_OPEN]), "only the zero opens, the flat bar repaired"
    flat = stored.loc[day(FLAT_ZERO_OPEN)]
    assert flat["open"] == flat["close"] == flat["high"] == flat["low"]
    assert set(stored.index[stored["high"].isna()]) == {
        day(k) for k in CLOSE_ABOVE_HIGH + HIGH_BELOW_LOW
    }
    assert set(stored.index[stored["low"].isna()]) == {
        day(k) for k in CLOSE_BELOW_LOW + HIGH_BELOW_LOW
    }
    # every value still there is a real, consistent price (NaN compares as absent)
    check_prices(stored.reset_index(), TICKER, missing_ok=True)
    with pytest.raises(InvalidPricesError, match="open is missing"):
        check_prices(stored.reset_index(), TICKER)


def test_lake_stores_nulls_every_reader_understands(tmp_path: Path) -> None:
    issue_csv(tmp_path / "csv")
    ingest_ticker(TICKER, "csv", tmp_path / "data", csv_dir=str(tmp_path / "csv"))
    root = lake.prices_root(tmp_path / "data")

    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert table.column("open").null_count == ZERO_OPEN
    assert table.schema.field("open").nullable and not table.schema.field("close").nullable
    assert lake.read_dataset(tmp_path / "data").num_rows == N_ROWS - 2
    duckdb = pytest.importorskip("duckdb")
    ((counted,),) = duckdb.sql(
        f"SELECT count(open) FROM read_parquet('{root}/*/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert counted == N_ROWS - 2 - ZERO_OPEN, "SQL sees NULL, not a fake 0.0"


def test_on_quirk_fail_keeps_todays_refusal_and_message(tmp_path: Path) -> None:
    path = issue_csv(tmp_path / "csv", partial=False)
    data = tmp_path / "data"
    with pytest.raises(MalformedFileError) as err:
        ingest_ticker(TICKER, "csv", data, csv_dir=str(path), options={"on_quirk": "fail"})
    assert str(err.value) == (
        f"{path}, line 2: ticker {TICKER}, 1962-01-02: open <= 0 ({ZERO_OPEN + 1} rows)"
    )
    assert not lake.partition_path(data, TICKER).exists()
    # a partly null row stays malformed too, named by line and field, as before
    path = issue_csv(tmp_path / "csv2")
    with pytest.raises(
        MalformedFileError, match=rf"line {ZERO_OPEN + NULL_CLOSE + 2}, field close"
    ):
        ingest_ticker(TICKER, "csv", data, csv_dir=str(path), options={"on_quirk": "fail"})


def test_on_quirk_drop_drops_those_rows_and_counts_them(tmp_path: Path) -> None:
    issue_csv(tmp_path / "csv")
    rows, results = ingest_many(
        [TICKER],
        "csv",
        tmp_path / "data",
        csv_dir=str(tmp_path / "csv"),
        options={"on_quirk": "drop"},
    )
    (row,) = rows
    assert row["status"] == "ok" and row["quirks"] == EXPECTED_QUIRKS
    assert results[TICKER]["dropped_quirk_rows"] == QUIRKY_ROWS
    assert row["rows_dropped"] == QUIRKY_ROWS + 2
    assert row["rows"] == N_ROWS - 2 - QUIRKY_ROWS
    stored = lake.read_partition(tmp_path / "data", TICKER)
    assert not stored.isna().any().any()
    assert stored["date"].iloc[0] == DAYS[ZERO_OPEN]
    check_prices(stored, TICKER)  # strict: nothing quirky is left


def test_report_row_and_artifact_table_carry_the_quirks(tmp_path: Path) -> None:
    from tickercast.market.report import artifact_table as _table

    issue_csv(tmp_path / "csv")
    rows, results = ingest_many([TICKER], "csv", tmp_path / "data", csv_dir=str(tmp_path / "csv"))
    (line,) = _table(rows)
    assert line["quirks"] == (
        f"open_zero {ZERO_OPEN + 1}, high_below_low 2, close_above_high 2, close_below_low 1"
    )
    assert line["rows_dropped"] == 2
    assert report_row(TICKER, results[TICKER], cached=True)["quirks"] == {}
    assert report_row(TICKER, error="failed")["quirks"] == {}
    assert quirks_text({}) == ""


# -- the rules, one by one ------------------------------------------------------------------


def bar(**changes: float) -> dict:
    return {"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "adj_close": 10.4} | changes


RULES = {  # a bar -> (kinds counted, fields marked missing)
    "open_zero": (bar(open=0.0), ["open_zero"], {"open"}),
    "open_negative": (bar(open=-1.0), ["open_negative"], {"open"}),
    "high_zero": (bar(high=0.0), ["high_zero"], {"high"}),
    "low_missing": (bar(low=np.nan), ["low_missing"], {"low"}),
    "low_infinite": (bar(low=np.inf), ["low_missing"], {"low"}),
    "adj_close_zero": (bar(adj_close=0.0), ["adj_close_zero"], {"adj_close"}),
    "high_below_low": (bar(high=9.0, low=11.0), ["high_below_low"], {"high", "low"}),
    "close_above_high": (bar(close=11.5), ["close_above_high"], {"high"}),
    "close_below_low": (bar(close=8.5), ["close_below_low"], {"low"}),
    "open_above_high": (bar(open=12.0), ["open_above_high"], {"open", "high"}),
    "open_below_low": (bar(open=8.0), ["open_below_low"], {"open", "low"}),
    "zero_open_and_bad_close": (
        bar(open=0.0, close=12.0),
        ["open_zero", "close_above_high"],
        {"open", "high"},
    ),
    "rounding_is_no_quirk": (bar(high=10.5 * (1 - 1e-7)), [], set()),
}


def frame_of(*bars: dict) -> pd.DataFrame:
    days = pd.bdate_range("2020-01-02", periods=len(bars)).date
    frame = pd.DataFrame(list(bars))
    frame.insert(0, "date", days)
    frame["volume"] = 100
    return frame


@pytest.mark.parametrize("case", sorted(RULES))
def test_each_rule_counts_its_kind_and_marks_only_its_fields(case: str) -> None:
    quirky, kinds, fields = RULES[case]
    screened = screen_prices(frame_of(bar(), quirky, bar()), "T")

    assert screened.quirks == dict.fromkeys(kinds, 1)
    middle = screened.prices.iloc[1]
    assert {f for f in ("open", "high", "low", "adj_close") if pd.isna(middle[f])} == fields
    assert middle["close"] == quirky["close"], "the close is never touched"
    assert not screened.prices.iloc[[0, 2]].isna().any().any()
    drop = screen_prices(frame_of(bar(), quirky, bar()), "T", "drop")
    assert len(drop.prices) == (2 if kinds else 3) and drop.dropped == (1 if kinds else 0)
    if kinds:
        with pytest.raises(InvalidPricesError, match=r"ticker T, 2020-01-03: "):
            screen_prices(frame_of(bar(), quirky, bar()), "T", "fail")


def test_flat_bar_open_is_the_one_repair() -> None:
    flat = bar(open=0.0, high=10.0, low=10.0, close=10.0)
    screened = screen_prices(frame_of(bar(), flat), "T")
    assert screened.prices["open"].tolist() == [10.0, 10.0] and screened.repaired == 1
    assert screened.quirks == {"open_zero": 1}
    # not flat: nothing tells what the open was, so it stays missing
    screened = screen_prices(frame_of(bar(), bar(open=0.0)), "T")
    assert np.isnan(screened.prices["open"].iloc[1]) and screened.repaired == 0


def test_rows_without_a_valid_close_are_dropped_and_counted() -> None:
    frame = frame_of(bar(), bar(close=np.nan), bar(close=0.0), bar())
    screened = screen_prices(frame, "T")
    assert screened.no_close == 2 and screened.quirks == {} and len(screened.prices) == 2
    with pytest.raises(InvalidPricesError, match="no row has a valid close"):
        screen_prices(frame_of(bar(close=np.nan)), "T")
    with pytest.raises(InvalidPricesError, match=r"no row left: 1 row\(s\) with quirks"):
        screen_prices(frame_of(bar(open=0.0)), "T", "drop")


def test_frame_wide_problems_are_refused_whatever_on_quirk_says() -> None:
    frame = frame_of(bar(), bar())
    frame.loc[1, "date"] = frame.loc[0, "date"]
    with pytest.raises(InvalidPricesError, match="duplicate trading day"):
        screen_prices(frame, "T")
    frame = frame_of(bar(), bar())
    frame["volume"] = [100, -1]
    with pytest.raises(InvalidPricesError, match="volume < 0"):
        screen_prices(frame, "T")
    with pytest.raises(ValueError, match=r"on_quirk must be one of \['repair', 'drop', 'fail'\]"):
        screen_prices(frame_of(bar()), "T", "ignore")


def test_on_quirk_option_and_config_fields() -> None:
    with pytest.raises(ValueError, match="on_quirk must be one of"):
        IngestOptions(on_quirk="ignore")
    assert IngestOptions().on_quirk == "repair"
    # a flat setting name is lifted into its section (older configs keep working)
    assert IngestConfig(on_quirk="drop").ingest.on_quirk == "drop"
    assert RetrainConfig().ingest.on_quirk == "repair"
    assert IngestChecks.model_fields["on_quirk"].description


def test_csv_reads_vendor_null_cells_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text(HEADER + "2020-01-02,null,2,,1.5,NaN,10\n2020-01-03,1,2,0.5,1.5,1.4,10\n")
    loaded = load_csv(path, missing_ok=True)
    row = loaded.prices.iloc[0]
    assert np.isnan(row["open"]) and np.isnan(row["low"]) and np.isnan(row["adj_close"])
    with pytest.raises(MalformedFileError, match="line 2, field open: 'null' is not a number"):
        load_csv(path)
    path.write_text(HEADER + "2020-01-02,abc,2,1,1.5,1.5,10\n")
    with pytest.raises(MalformedFileError, match="field open: 'abc' is not a number"):
        load_csv(path, missing_ok=True)


# -- features: no NaN reaches a model -----------------------------------------------------


@pytest.fixture
def quirky_prices(tmp_path: Path) -> pd.DataFrame:
    issue_csv(tmp_path / "csv")
    ingest_ticker(TICKER, "csv", tmp_path / "data", csv_dir=str(tmp_path / "csv"))
    return lake.read_partition(tmp_path / "data", TICKER)


def test_a_feature_needing_a_missing_field_refuses_naming_ticker_field_and_days(
    quirky_prices: pd.DataFrame,
) -> None:
    with pytest.raises(MissingFieldError) as err:
        build_features(quirky_prices, ["log_return", "open"], who=f"ticker {TICKER}")
    assert str(err.value).startswith(
        f"ticker {TICKER}: feature 'open' needs open, which is missing on {ZERO_OPEN} day(s) "
        f"in the selected date range, first 1962-01-02, last {DAYS[ZERO_OPEN - 1]}"
    )
    with pytest.raises(MissingFieldError, match=rf"first {day(CLOSE_BELOW_LOW[0])}, last "):
        build_features(quirky_prices, ["low"])


def test_features_that_do_not_need_the_missing_fields_use_every_row(
    quirky_prices: pd.DataFrame,
) -> None:
    frame = build_features(quirky_prices, ["log_return", "volatility", "close", "volume"])
    assert len(frame) == len(quirky_prices) - 20, "only the volatility warm-up is lost"
    assert np.isfinite(frame.drop(columns="date").to_numpy(dtype=float)).all()


CFG = {
    "features": ["log_return", "open"],
    "lookback": 10,
    "horizon": 2,
    "target": "mean_close_log_return",
    "val_fraction": 0.15,
    "test_fraction": 0.15,
}


def test_preprocess_refuses_a_range_with_missing_opens_and_accepts_one_without(
    quirky_prices: pd.DataFrame,
) -> None:
    with pytest.raises(MissingFieldError, match=rf"needs open, .* last {DAYS[ZERO_OPEN - 1]}"):
        preprocess(
            quirky_prices,
            PreprocessSettings(**{**CFG, "start": None, "end": None}),
            who=f"ticker {TICKER}",
        )
    # after the last missing open: every row is there and every input is finite
    start = str(DAYS[ZERO_OPEN])
    spec, arrays = preprocess(
        quirky_prices, PreprocessSettings(**{**CFG, "start": start, "end": None}), "T"
    )
    assert spec.first_day == str(DAYS[ZERO_OPEN + 1])  # the log return's one warm-up row
    assert len(arrays["x"]) == N_ROWS - ZERO_OPEN - 2 - 1
    assert np.isfinite(arrays["x"]).all()
    # default features read only the close: the whole history, no NaN
    cfg = {**CFG, "features": ["log_return", "volatility"], "start": None, "end": None}
    _, arrays = preprocess(quirky_prices, PreprocessSettings(**cfg), "T")
    assert len(arrays["x"]) == N_ROWS - 2 - 20 and np.isfinite(arrays["x"]).all()


# -- yfinance: the same rows through yfinance's own parser (replayed) ---------------------

AAPL_FILE = CHART_DIR / "AAPL_1d_2020-08-31_2020-11-07.chart.json"
REPLAY_QUIRKS = {"open_zero": 10, "high_below_low": 1, "close_above_high": 1}


@pytest.fixture
def quirky_yahoo(tmp_path: Path) -> Path:
    """The AAPL recording with Yahoo's quirks written in, as a chart folder to replay."""
    if not AAPL_FILE.is_file():
        pytest.skip(f"recorded Yahoo responses not found at {CHART_DIR}")
    reset_yfinance(tmp_path / "yfinance-cache")
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning, r"yfinance\.")
    body = json.loads(AAPL_FILE.read_text())
    edited = copy.deepcopy(body)
    quote = edited["chart"]["result"][0]["indicators"]["quote"][0]
    for i in range(10):
        quote["open"][i] = 0.0
    quote["close"][20] = quote["high"][20] * 1.05
    quote["high"][30], quote["low"][30] = quote["low"][30], quote["high"][30]
    quote["close"][40] = None  # a partly null bar: dropped, counted with the null rows
    folder = tmp_path / "charts"
    folder.mkdir()
    (folder / AAPL_FILE.name).write_text(json.dumps(edited))
    return folder


def yahoo_ingest(data: Path, charts: Path, on_quirk: str | None = None) -> dict:
    options = {"retry_delay": 0.001} | ({"on_quirk": on_quirk} if on_quirk else {})
    return ingest_ticker("AAPL", "yfinance", data, session=replay_session(charts), options=options)


def test_yfinance_rows_with_quirks_are_kept_and_counted(tmp_path: Path, quirky_yahoo: Path) -> None:
    result = yahoo_ingest(tmp_path / "data", quirky_yahoo)

    assert result["quirks"] == REPLAY_QUIRKS
    assert result["dropped_null_rows"] == 1 and result["rows"] == 48
    stored = lake.read_partition(tmp_path / "data", "AAPL")
    assert stored["open"].isna().sum() == 10 and stored["open"].iloc[:10].isna().all()
    assert stored["high"].isna().sum() == 2 and stored["low"].isna().sum() == 1
    assert stored["close"].notna().all()


def test_yfinance_on_quirk_fail_and_drop(tmp_path: Path, quirky_yahoo: Path) -> None:
    with pytest.raises(InvalidPricesError, match=r"ticker AAPL, 2020-08-31: open <= 0 \(10 rows"):
        yahoo_ingest(tmp_path / "fail", quirky_yahoo, "fail")
    assert not lake.partition_path(tmp_path / "fail", "AAPL").exists()

    reset_yfinance(tmp_path / "yfinance-cache-2")
    result = yahoo_ingest(tmp_path / "drop", quirky_yahoo, "drop")
    assert result["quirks"] == REPLAY_QUIRKS and result["dropped_quirk_rows"] == 12
    assert result["rows"] == 49 - 1 - 12
    assert not lake.read_partition(tmp_path / "drop", "AAPL").isna().any().any()


# -- the flow and the CLI ------------------------------------------------------------------


def test_ingest_flow_artifact_and_cli_show_the_quirks(
    prefect_server, tmp_path: Path, capsys
) -> None:
    from tests.prefect_runs import flow_run_artifacts
    from tickercast.app.cli import main
    from tickercast.flows.ingest import ingest

    folder = tmp_path / "csv"
    issue_csv(folder)
    config = IngestConfig(source="csv", csv_dir=str(folder), data_dir=str(tmp_path / "data"))
    state = ingest(config, return_state=True)
    assert state.is_completed(), state.message
    (table,) = [a for a in flow_run_artifacts(state) if a.key == "ingest-report"]
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert data[0]["quirks"] == quirks_text(EXPECTED_QUIRKS) and data[0]["rows_dropped"] == 2

    argv = ["ingest", "--source", "csv", "--csv-dir", str(folder), "--on-quirk", "drop"]
    assert main([*argv, "--data-dir", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert f"{QUIRKY_ROWS + 2} rows dropped" in out
    assert f"  quirks: {quirks_text(EXPECTED_QUIRKS)}" in out
