import datetime as dt

import pytest
from pydantic import ValidationError

from tickercast.config import RetrainConfig
from tickercast.tickers import InvalidTickerError, validate_ticker


def test_tutorial_preset_reproduces_the_tutorial():
    c = RetrainConfig(preset="tutorial").flat()
    assert c["tickers"] == ["AAPL"] and c["source"] == "sample"
    assert c["features"] == ["close", "volume"] and c["shrink"] is False
    assert (c["lookback"], c["horizon"], c["target"]) == (60, 5, "mean_close")
    assert (c["model"], c["units"], c["clipvalue"], c["patience"]) == (
        "stacked_lstm",
        [64, 32],
        1.0,
        10,
    )
    assert (c["val_fraction"], c["test_fraction"]) == (0.15, 0.15)
    assert (c["mode"], c["device"], c["ticker_embedding"]) == ("per_ticker", "auto", 0)
    assert (c["dropout"], c["recurrent_dropout"], c["l2"], c["mixed_precision"]) == (
        0,
        0,
        0,
        False,
    )


def test_defaults_are_the_recommended_preset_not_the_tutorial():
    c = RetrainConfig()
    assert c.preprocessing.features == ["log_return", "volatility"] and c.training.shrink
    assert c.preprocessing.target == "mean_close_log_return"
    assert "preset tutorial" in RetrainConfig.__doc__.replace('="', " ").replace('"', "")


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
        ({"model": "stacked_lstm", "units": [8]}, "at least 2 entries in units"),
        ({"model": "cnn_lstm", "units": [8]}, "at least 2 entries in units"),
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


def test_flat_settings_are_json_ready_and_lift_back():
    c = RetrainConfig(start=dt.date(2019, 1, 1), features=["close", "volume"])
    flat = c.flat()
    assert flat["start"] == "2019-01-01" and flat["features"] == ["close", "volume"]
    assert RetrainConfig(**flat) == c  # a flat file is a config
    assert RetrainConfig.model_validate(c.model_dump(mode="json")) == c  # so is a nested one


def test_each_setting_lives_in_one_section_under_its_flat_name():
    c = RetrainConfig(epochs=3, lookback=20, promotion_level=0.01, data_dir="/x", mlflow_uri=None)
    assert c.training.epochs == 3 and c.preprocessing.lookback == 20
    assert c.gate.promotion_level == 0.01 and c.execution.data_dir == "/x"
    assert RetrainConfig.leaves()["epochs"] == "training"
    assert c.model_copy(update={"epochs": 4}).training.epochs == 4  # validated copies
    with pytest.raises(ValidationError, match="epochs"):
        c.model_copy(update={"epochs": 0})


def test_a_setting_given_twice_differently_is_refused_naming_it():
    with pytest.raises(ValidationError, match="epochs is given twice"):
        RetrainConfig(epochs=3, training={"epochs": 4})
    assert RetrainConfig(epochs=3, training={"epochs": 3}).training.epochs == 3


def test_sections_are_frozen():
    c = RetrainConfig()
    with pytest.raises(ValidationError):
        c.training.epochs = 3  # type: ignore[misc]


def test_sine_source_starts_at_its_first_day_unless_told_otherwise():
    """The sine wave's days begin in 2000; retrain's default start (2015) would leave none."""
    from tickercast.config import BacktestConfig

    assert RetrainConfig(source="sine").preprocessing.start is None
    assert BacktestConfig(source="sine", tickers=["SINE"]).preprocessing.start is None
    assert str(RetrainConfig(source="sine", start="2001-01-02").preprocessing.start) == "2001-01-02"
    assert str(RetrainConfig().preprocessing.start) == "2015-01-01"  # other sources keep it
