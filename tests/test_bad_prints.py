"""Bad prints are quirks ingest handles: a close 1,000x off never becomes a model input or
the last close of a forecast, an absurd magnitude is no price, and a real big move stays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.validate import (
    InvalidPricesError,
    check_prices,
    move_warnings,
    screen_prices,
)


def frame(closes) -> pd.DataFrame:
    closes = np.asarray(closes, dtype=float)
    out = pd.DataFrame(
        {
            "date": pd.bdate_range("2020-01-01", periods=len(closes)).date,
            "open": closes,
            "high": closes * 1.01,
            "low": closes * 0.99,
            "close": closes,
            "adj_close": closes,
            "volume": 100.0,
        }
    )
    return out


def walk(n=60, seed=0) -> np.ndarray:
    return 120 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, n)))


def test_a_last_day_1000x_off_is_held_back_not_stored_as_the_last_close():
    closes = walk()
    closes[-1] = closes[-2] * 1000
    screened = screen_prices(frame(closes), "AAPL")
    assert screened.quirks == {"last_close_jump": 1}
    assert len(screened.prices) == len(closes) - 1
    assert screened.prices["close"].iloc[-1] == pytest.approx(closes[-2])
    with pytest.raises(InvalidPricesError, match="bad print.*last_close_jump"):
        screen_prices(frame(closes), "AAPL", "fail")


def test_a_spike_that_reverts_is_dropped_whatever_on_quirk_says():
    closes = walk()
    closes[30] *= 1000
    for mode in ("repair", "drop"):
        screened = screen_prices(frame(closes), "T", mode)
        assert screened.quirks.get("close_spike") == 1
        assert len(screened.prices) == len(closes) - 1
        assert screened.prices["close"].max() < closes[:30].max() * 2
    # a tenth of the price (a decimal slip down) too
    closes = walk()
    closes[10] /= 10
    assert screen_prices(frame(closes), "T").quirks == {"close_spike": 1}


def test_a_close_far_outside_its_own_high_low_is_the_bad_field():
    closes = walk()
    bad = frame(closes)
    bad.loc[20, "close"] = bad.loc[20, "high"] * 50  # high/low say ~120
    screened = screen_prices(bad, "T")
    assert screened.quirks == {"close_outside_range": 1} and len(screened.prices) == 59
    # a close just above its high is still the vendor quirk it was (the high goes)
    near = frame(closes)
    near.loc[20, "close"] = near.loc[20, "high"] * 1.02
    assert screen_prices(near, "T").quirks == {"close_above_high": 1}


def test_absurd_magnitudes_are_no_price():
    closes = walk()
    bad = frame(closes)
    bad.loc[5, ["open", "high", "low", "close", "adj_close"]] = 1e300
    bad.loc[9, "high"] = 1e300
    screened = screen_prices(bad, "T")
    assert screened.quirks["close_absurd"] == 1 and screened.quirks["high_absurd"] == 1
    assert screened.prices["close"].max() < 1e3 and len(screened.prices) == 59
    with pytest.raises(InvalidPricesError, match="open >= 1e\\+08, not a price"):
        check_prices(bad, "T")


def test_a_real_big_move_is_kept_and_warned_about_in_sane_numbers():
    closes = walk()
    closes[40:] *= 2.35  # GameStop's +135% day, and the level holds
    screened = screen_prices(frame(closes), "GME")
    assert screened.quirks == {} and len(screened.prices) == 60
    (warning,) = move_warnings(screened.prices, "GME")
    assert "close moved 13" in warning  # ~135%
    huge = frame([1.0, 1e6, 1e6])
    (warning,) = move_warnings(huge, "X")
    assert "by a factor of 1e+06" in warning and len(warning) < 120


def test_ingest_never_stores_a_bad_last_print(tmp_path: Path):
    closes = walk(300)
    closes[-1] = closes[-2] * 1000
    csv = tmp_path / "csv" / "AAPL.csv"
    csv.parent.mkdir()
    rows = frame(closes)
    rows.rename(
        columns={
            "date": "Date",
            "open": "Open",
            "high": "High",
            "low": "Low",
            "close": "Close",
            "adj_close": "Adj Close",
            "volume": "Volume",
        }
    ).to_csv(csv, index=False)
    result = ingest_ticker("AAPL", "csv", tmp_path / "data", csv_dir=str(csv.parent))
    assert result["quirks"] == {"last_close_jump": 1}
    stored = lake.read_partition(tmp_path / "data", "AAPL")
    assert stored["close"].iloc[-1] == pytest.approx(closes[-2], rel=1e-6)


def test_a_2x_slip_on_a_calm_last_day_is_held_back_by_the_volatility_until_confirmed():
    closes = walk(120)  # daily moves ~1%: a 2x last day is ~70 sds out
    closes[-1] = closes[-2] * 2
    screened = screen_prices(frame(closes), "AAPL")
    assert screened.quirks == {"last_close_jump": 1} and len(screened.prices) == 119
    confirmed = np.append(closes, closes[-1] * 1.01)  # the next day keeps the level
    assert screen_prices(frame(confirmed), "AAPL").quirks == {}
    with pytest.raises(InvalidPricesError, match="last_close_jump"):
        screen_prices(frame(closes), "AAPL", "fail")


def test_a_big_last_move_of_a_volatile_stock_is_kept():
    rng = np.random.default_rng(1)
    closes = 20 * np.exp(np.cumsum(rng.normal(0, 0.08, 120)))  # ~8% a day
    closes[-1] = closes[-2] * 1.8  # within 10 sds and under the factor 3
    assert screen_prices(frame(closes), "MEME").quirks == {}
    calm = walk(120)
    calm[-1] = calm[-2] * 1.3  # under the floor (a factor 1.5): never held, however calm
    assert screen_prices(frame(calm), "T").quirks == {}


def test_decades_of_real_history_seldom_hold_back_a_last_day():
    """Every day of the five sample histories taken as the last one: the volatility rule
    holds back two real days in ~34,000 (AAPL's -52% of 2000-09-29, one NVDA day), each for
    one night, and the factor rules none."""
    from tickercast.market.locate import sample_tickers
    from tickercast.market.sources import load_sample
    from tickercast.market.validate import PRINT_FACTOR, beyond_volatility

    held = 0
    for ticker in sample_tickers():
        close = load_sample(ticker).prices["close"].dropna().to_numpy(float)
        steps = np.diff(np.log(close[close > 0]))
        assert not (np.abs(steps) >= np.log(PRINT_FACTOR)).any(), ticker
        held += sum(beyond_volatility(steps[: t + 1]) for t in range(20, len(steps)))
    assert held <= 2


def test_a_bad_print_inside_the_training_period_never_reaches_the_model_inputs(tmp_path: Path):
    """Issue 25: one 1,000x close in the middle of a CSV poisoned a retrain (RMSE 4,280 vs
    44). It is a counted quirk at ingest, and preprocessing (no training) sees no trace."""
    from tickercast.modeling.preprocess import preprocess
    from tickercast.sections import PreprocessSettings

    closes = walk(300)
    closes[100] *= 1000  # inside the training rows (70% of 300)
    csv = tmp_path / "csv" / "AAPL.csv"
    csv.parent.mkdir()
    frame(closes).rename(columns=lambda c: c.title().replace("_", " ")).to_csv(csv, index=False)
    result = ingest_ticker("AAPL", "csv", tmp_path / "data", csv_dir=str(csv.parent))
    assert result["quirks"] == {"close_spike": 1}
    stored = lake.read_partition(tmp_path / "data", "AAPL")
    assert len(stored) == 299 and stored["close"].max() < 2 * np.delete(closes, 100).max()
    section = PreprocessSettings(
        start=None, features=["close", "log_return"], target="close", lookback=20, horizon=1
    )
    spec, arrays = preprocess(stored, section, who="ticker AAPL")
    assert spec.gaps == []  # one missing weekday is no gap
    clean = np.delete(closes, 100)
    assert max(spec.feature_scaler.max[0], spec.target_scaler.max[0]) < 2 * clean.max()
    returns = (spec.feature_scaler.min[1], spec.feature_scaler.max[1])
    assert max(abs(v) for v in returns) < 0.2  # daily moves of ~1%, no 1000x jump
    assert np.isfinite(arrays["x"]).all()
    assert np.isfinite(arrays["y"][:-1]).all()  # the last row has no next day to target


def test_an_absurd_open_high_or_low_is_marked_missing_and_the_bar_stays_consistent():
    """Decided: the close is what a row is kept for; an absurd other price is no price, so
    it is marked missing like Open = 0 (never stored), and what is left of the bar holds
    together (check_prices with missing values passes). `drop` drops the row, `fail`
    refuses the batch."""
    closes = walk()
    bad = frame(closes)
    bad.loc[7, "open"] = 1e300
    bad.loc[8, "high"] = 1e300
    bad.loc[9, "low"] = 1e300
    screened = screen_prices(bad, "T")
    assert screened.quirks == {"open_absurd": 1, "high_absurd": 1, "low_absurd": 1}
    kept = screened.prices
    assert len(kept) == 60 and kept[["open", "high", "low"]].max().max() < 1e3
    assert kept.loc[7:9, ["open", "high", "low"]].isna().sum().sum() == 3
    assert (kept.loc[7:9, "close"].to_numpy() == closes[7:10]).all()
    check_prices(kept, "T", missing_ok=True)
    assert len(screen_prices(bad, "T", "drop").prices) == 57
    with pytest.raises(InvalidPricesError, match=r"2020-01-\d+: open >= 1e\+08, not a price"):
        screen_prices(bad, "T", "fail")


def test_a_volume_of_1e15_or_more_is_refused_naming_the_day_or_the_csv_line(tmp_path: Path):
    from tickercast.market.sources import MalformedFileError

    bad = frame(walk())
    bad.loc[12, "volume"] = 1e18
    for mode in ("repair", "drop", "fail"):  # frame-wide: whatever on_quirk says
        with pytest.raises(
            InvalidPricesError, match=r"ticker T, 2020-01-17: volume >= 1e\+15, not a volume"
        ):
            screen_prices(bad, "T", mode)
    screen_prices(frame(walk()).assign(volume=9e14), "T")  # large, still a volume
    csv = tmp_path / "csv" / "AAPL.csv"
    csv.parent.mkdir()
    csv.write_text("Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1.5,1e18\n")
    with pytest.raises(MalformedFileError, match=r"AAPL\.csv, line 2, field volume: '1e18'"):
        ingest_ticker("AAPL", "csv", tmp_path / "data", csv_dir=str(csv.parent))
    assert not lake.partition_path(tmp_path / "data", "AAPL").exists()


def test_an_incremental_fetch_removes_a_stored_bad_print_of_the_overlap(tmp_path: Path):
    """New rows win (README): also when the new answer's screen drops an overlap day as a
    bad print, the stored row of that day goes (a lake written before the rules existed),
    counted and noted; a day the answer corrects is replaced; other days are kept."""
    from tickercast.market.retry import Fetched

    data = tmp_path / "data"
    days = pd.bdate_range("2021-03-01", periods=40).date
    clean = frame(walk(40)).assign(date=days)
    bad = clean.copy()
    bad.loc[37, ["open", "high", "low", "close", "adj_close"]] *= 1000  # a print that reverts
    answers = {"first": clean.iloc[:39], "next": bad}

    def fetch(ticker, start, end, period) -> Fetched:
        rows = answers["next" if start and start > days[0] else "first"]
        chosen = rows[(rows["date"] >= (start or days[0])) & (rows["date"] <= (end or days[-1]))]
        return Fetched(chosen.reset_index(drop=True))

    ingest_ticker("WIN", "yfinance", data, fetch=fetch, start=days[0], end=days[38])
    stored = lake.read_partition(data, "WIN")
    poisoned = stored.copy()  # as a lake written before the bad-print rules held it
    poisoned.loc[37, ["open", "high", "low", "close", "adj_close"]] *= 1000
    poisoned.loc[36, "close"] *= 1.001  # a day the next answer revises
    poisoned.loc[36, "adj_close"] = poisoned.loc[36, "close"]
    lake.write_partition(data, "WIN", poisoned, covered_from=str(days[0]))

    result = ingest_ticker("WIN", "yfinance", data, fetch=fetch, start=days[0], end=days[-1])
    assert result["mode"] == "incremental" and result["quirks"] == {"close_spike": 1}
    assert result["rows_removed"] == 1
    assert any("removed 1 stored day(s)" in w and str(days[37]) in w for w in result["warnings"])
    after = lake.read_partition(data, "WIN")
    assert days[37] not in set(after["date"]) and len(after) == 39
    assert after["close"].max() < 2 * clean["close"].max()
    revised = after.loc[after["date"] == days[36], "close"].item()
    assert revised == pytest.approx(clean.loc[36, "close"])  # new rows win on shared days
    assert after["date"].iloc[-1] == days[-1]
