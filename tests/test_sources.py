import datetime as dt
import math

import numpy as np
import pytest

from tickercast.market.sources import MalformedFileError, load_csv, load_sample, sine_prices

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"


def write(tmp_path, text, name="X.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_real_export_null_row_dropped_and_counted(shared_data):
    loaded = load_csv(shared_data / "prices" / "AAPL.csv")
    assert loaded.dropped_null_rows == 1
    assert dt.date(1981, 8, 10) not in set(loaded.prices["date"])
    assert loaded.prices["date"].iloc[0] == dt.date(1980, 12, 12)
    assert loaded.prices["volume"].dtype == np.int64


def test_headers_case_insensitive_and_adj_close_optional(tmp_path):
    path = write(tmp_path, "date,OPEN,high,Low,CLOSE,volume\n2020-01-02,1,2,0.5,1.5,10\n")
    prices = load_csv(path).prices
    assert prices["adj_close"].tolist() == [1.5]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("2020-01-02,1,2,0.5,abc,1.5,10\n", "line 2, field close: 'abc' is not a number"),
        ("2020-13-02,1,2,0.5,1,1,10\n", "line 2, field date"),
        ("2020-01-02,1,2,0.5,1,1,10\n2020-01-03,1,2,0.5,null,1,10\n", "line 3, field close"),
        ("2020-01-02,1,2,0.5,1,1\n", "line 2: 6 fields"),
    ],
)
def test_malformed_rows_named_by_file_line_and_field(tmp_path, body, fragment):
    path = write(tmp_path, HEADER + body)
    with pytest.raises(MalformedFileError) as err:
        load_csv(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_missing_column_refused(tmp_path):
    path = write(tmp_path, "Date,Open,High,Low,Volume\n2020-01-02,1,2,0.5,10\n")
    with pytest.raises(MalformedFileError, match=r"line 1: missing column\(s\) \['close'\]"):
        load_csv(path)


def test_bundled_sample_is_real_data():
    prices = load_sample("MSFT").prices
    assert len(prices) == 8761
    assert prices["date"].iloc[-1] == dt.date(2020, 12, 11)
    assert math.isclose(prices["close"].iloc[-1], 213.259995)


def test_sample_unknown_ticker_lists_available():
    with pytest.raises(FileNotFoundError, match="available: .*'AAPL'"):
        load_sample("ZZZZ")


def test_sine_is_the_tutorials_wave():
    prices = sine_prices().prices
    wave = np.sin(np.arange(0, 20 * math.pi, 0.1))
    assert len(prices) == len(wave) == 629
    np.testing.assert_allclose(prices["close"].to_numpy() - 2.0, wave)
