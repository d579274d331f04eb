"""How a ticker's rows are split into [train | validation | test]: by shares of its rows
(`Fractions`), or at days shared by several tickers (`SplitDates`, global mode). A split
is computed for a run (a backtest's fold, global mode's calendar) and handed to
preprocessing beside its settings; it is never a setting itself."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class Fractions:
    """Shares of the rows for validation and test (the rest, first, is training)."""

    val: float
    test: float


class SplitDates(BaseModel):
    """Split boundaries as days shared by several tickers (ISO, inclusive); a pydantic
    model, so a step result carrying it survives Prefect's JSON result serializer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train_end: str
    val_end: str


Split = Fractions | SplitDates
