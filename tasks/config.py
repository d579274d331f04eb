"""The one typed parameter of the retrain flow.

Every field carries a description, bounds and enums so the Prefect UI renders a usable
form, the CLI can generate its options from it, and bad values are refused before any
work starts.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.tickers import validate_ticker

Source = Literal["sample", "csv", "yfinance", "sine"]
Feature = Literal[
    "close",
    "open",
    "high",
    "low",
    "volume",
    "log_volume",
    "return",
    "log_return",
    "volatility",
    "day_of_week",
]
FEATURES: tuple[str, ...] = Feature.__args__  # type: ignore[attr-defined]
Target = Literal["mean_close", "close"]
ModelName = Literal["stacked_lstm", "lstm"]


class RetrainConfig(BaseModel):
    """Everything one retrain run depends on; defaults reproduce the reference tutorial."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    tickers: list[str] = Field(
        default_factory=lambda: ["AAPL"],
        min_length=1,
        max_length=500,
        description="Ticker symbols in Yahoo's alphabet (letters, digits, . - ^ =).",
    )
    source: Source = Field(
        "sample",
        description="Where prices come from: bundled sample, a folder of Yahoo CSVs, "
        "live yfinance, or the tutorial's sine wave.",
    )
    csv_dir: str | None = Field(
        None, description="Folder of Yahoo-export CSVs named <TICKER>.csv (source=csv)."
    )
    start: dt.date | None = Field(
        dt.date(2015, 1, 1), description="First trading day used (inclusive); empty = all."
    )
    end: dt.date | None = Field(
        None, description="Last trading day used (inclusive); empty = up to the latest."
    )
    features: list[Feature] = Field(
        default_factory=lambda: ["close", "volume"],
        min_length=1,
        description="Model inputs per trading day, by name.",
    )
    lookback: int = Field(60, ge=1, le=1000, description="Trading days per input window.")
    horizon: int = Field(5, ge=1, le=250, description="Trading days ahead that the target covers.")
    target: Target = Field(
        "mean_close",
        description="mean_close: mean close of the next `horizon` days; close: close at t+horizon.",
    )
    model: ModelName = Field(
        "stacked_lstm",
        description="stacked_lstm: LSTM(units[0], return_sequences) -> LSTM(units[1]) -> Dense; "
        "lstm: one LSTM(units[0]) -> Dense.",
    )
    units: list[int] = Field(
        default_factory=lambda: [64, 32],
        min_length=1,
        max_length=4,
        description="LSTM units per layer.",
    )
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="Adam learning rate.")
    clipvalue: float = Field(1.0, gt=0, description="Adam gradient clipping value.")
    epochs: int = Field(50, ge=1, le=10_000, description="Maximum training epochs.")
    batch_size: int = Field(32, ge=1, le=65_536, description="Windows per gradient step.")
    patience: int = Field(
        10, ge=1, le=1000, description="EarlyStopping patience on val_loss (best weights restored)."
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of rows for validation.")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of rows for the test.")
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Random seed (weights, shuffling).")
    data_dir: str = Field(
        "data", description="Root of the data lake, work files, caches and model bundles."
    )
    refresh: bool = Field(False, description="Recompute every step, ignoring cached results.")

    @field_validator("tickers")
    @classmethod
    def _tickers(cls, value: list[str]) -> list[str]:
        symbols = [validate_ticker(t) for t in value]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"duplicate tickers in {symbols}")
        return symbols

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate features in {value}")
        return value

    @field_validator("units")
    @classmethod
    def _units(cls, value: list[int]) -> list[int]:
        if any(u < 1 or u > 4096 for u in value):
            raise ValueError(f"units must each be within 1..4096, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RetrainConfig:
        if self.source == "csv" and not self.csv_dir:
            raise ValueError("source 'csv' needs csv_dir (a folder of <TICKER>.csv files)")
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        if self.model == "stacked_lstm" and len(self.units) < 2:
            raise ValueError("model 'stacked_lstm' needs at least two entries in units")
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("val_fraction + test_fraction must leave at least 20% for training")
        return self

    def slice(self, *names: str) -> dict:
        """The JSON-ready subset of fields a step depends on (its cache-key slice)."""
        dumped = self.model_dump(mode="json")
        return {name: dumped[name] for name in names}


# Which fields each step depends on: a change elsewhere leaves that step's cache valid.
PREPROCESS_FIELDS = (
    "start",
    "end",
    "features",
    "lookback",
    "horizon",
    "target",
    "val_fraction",
    "test_fraction",
)
TRAIN_FIELDS = (
    "model",
    "units",
    "learning_rate",
    "clipvalue",
    "epochs",
    "batch_size",
    "patience",
    "seed",
)
