import datetime as dt

import pytest
from pydantic import ValidationError

from tickercast.config import RetrainConfig
from tickercast.tickers import InvalidTickerError, validate_ticker


def test_tutorial_preset_reproduces_the_tutorial():
    c = RetrainConfig(preset="tutorial")
    assert c.tickers == ["AAPL"] and c.source == "sample"
    assert c.features == ["close", "volume"] and c.shrink is False
    assert (c.lookback, c.horizon, c.target) == (60, 5, "mean_close")
    assert (c.model, c.units, c.clipvalue, c.patience) == ("stacked_lstm", [64, 32], 1.0, 10)
    assert (c.val_fraction, c.test_fraction) == (0.15, 0.15)
    assert (c.mode, c.device, c.ticker_embedding) == ("per_ticker", "auto", 0)
    assert (c.dropout, c.recurrent_dropout, c.l2, c.mixed_precision) == (0, 0, 0, False)


@pytest.mark.parametrize("symbol", ["AAPL", "BRK-B", "^GSPC", "EURUSD=X", "brk.b", "ES=F"])
def test_yahoo_alphabet_accepted(symbol):
    assert validate_ticker(symbol) == symbol.upper()


@pytest.mark.parametrize("symbol", ["../x", "AAPL;rm", "", "A" * 30, "a/b", "..", "A B", "$(x)"])
def test_unsafe_tickers_refused(symbol):
    with pytest.raises(InvalidTickerError, match="invalid ticker"):
        validate_ticker(symbol)
    with pytest.raises(ValidationError, match="invalid ticker"):
        RetrainConfig(tickers=[symbol])


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"lookback": 0}, "lookback"),
        ({"epochs": -1}, "epochs"),
        ({"model": "transformer"}, "'stacked_lstm'"),
        ({"features": ["close", "sentiment"]}, "'log_volume'"),
        ({"source": "csv"}, "csv_dir"),
        ({"start": dt.date(2020, 1, 2), "end": dt.date(2020, 1, 1)}, "after end"),
        ({"model": "stacked_lstm", "units": [8]}, "two entries"),
        ({"model": "cnn_lstm", "units": [8]}, "two entries"),
        ({"target": "returns"}, "'closes_log_return'"),
        ({"mode": "federated"}, "'global'"),
        ({"ticker_embedding": 4}, "needs mode 'global'"),
        ({"device": "tpu"}, "'gpu'"),
        ({"dropout": 0.95}, "dropout"),
        ({"reduce_lr_factor": 1.0}, "reduce_lr_factor"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_invalid_config_refused_naming_the_problem(fields, fragment):
    with pytest.raises(ValidationError) as err:
        RetrainConfig(**fields)
    assert fragment in str(err.value)


def test_slice_is_json_ready():
    c = RetrainConfig(start=dt.date(2019, 1, 1), features=["close", "volume"])
    assert c.slice("start", "features") == {"start": "2019-01-01", "features": ["close", "volume"]}


def test_sine_source_starts_at_its_first_day_unless_told_otherwise():
    """The sine wave's days begin in 2000; retrain's default start (2015) would leave none."""
    from tickercast.config import BacktestConfig

    assert RetrainConfig(source="sine").start is None
    assert BacktestConfig(source="sine", tickers=["SINE"]).start is None
    assert str(RetrainConfig(source="sine", start="2001-01-02").start) == "2001-01-02"
    assert str(RetrainConfig().start) == "2015-01-01"  # other sources keep the default
