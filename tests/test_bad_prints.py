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
