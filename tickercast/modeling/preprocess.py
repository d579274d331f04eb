"""Clean, featurise, split chronologically and scale: the only place scalers are fitted.

Rows split as [train | validation | test] in time order. Scalers are fitted on the
training rows alone. Targets are defined per row t (the last day of an input window)
from the closes of days t+1..t+horizon; windows are assigned to a split by where their
target days lie (`tickercast.modeling.windows`), and windows whose target straddles a boundary are
dropped, so no training target ever reads a validation or test day.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tickercast.atomic import atomic_path, write_json
from tickercast.choices import Target
from tickercast.layout import SPEC_FILE
from tickercast.modeling.features import build_features
from tickercast.modeling.windows import anchors_for, describe_gaps
from tickercast.splits import Fractions, Split, SplitDates

if TYPE_CHECKING:  # settings arrive as values: their classes' code is no part of a step
    from tickercast.sections import Windowing


class InsufficientHistoryError(ValueError):
    """Too few rows for lookback + horizon in every split; says how many are needed."""


class GapError(ValueError):
    """The rows hold a gap windows may not span (on_gap=refuse), or no window is left."""


def find_gaps(days: np.ndarray, gap_days: int) -> list[list]:
    """[row before, day before, day after, weekdays missing] for each pair of consecutive
    rows more than `gap_days` weekdays apart (holidays cost one or two, 9/11 four)."""
    days = np.asarray(days, dtype="datetime64[D]")
    if len(days) < 2:
        return []
    missing = np.busday_count(days[:-1], days[1:]) - 1
    return [
        [int(i), str(days[i]), str(days[i + 1]), int(missing[i])]
        for i in np.flatnonzero(missing > gap_days)
    ]


@dataclass
class MinMax:
    """Per-column min-max scaling to [0, 1]; constant columns map to 0."""

    min: list[float]
    max: list[float]

    @classmethod
    def fit(cls, values: np.ndarray) -> MinMax:
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        return cls(values.min(axis=0).tolist(), values.max(axis=0).tolist())

    def offset_and_span(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max - min) per column, a zero span taken as 1: what `transform` subtracts
        and divides by (the SavedModel's graph scales with the same numbers)."""
        lo, hi = np.asarray(self.min), np.asarray(self.max)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        return lo, span

    def transform(self, values: np.ndarray) -> np.ndarray:
        lo, span = self.offset_and_span()
        return (np.asarray(values, dtype=np.float64) - lo) / span

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        lo, span = self.offset_and_span()
        return np.asarray(scaled, dtype=np.float64) * span + lo


@dataclass
class Splits:
    n_rows: int
    n_train: int
    n_val: int
    n_test: int


def split_sizes(n_rows: int, val_fraction: float, test_fraction: float) -> Splits:
    n_test = int(round(n_rows * test_fraction))
    n_val = int(round(n_rows * val_fraction))
    return Splits(n_rows, n_rows - n_val - n_test, n_val, n_test)


def _fits(s: Splits, lookback: int, horizon: int) -> bool:
    # One training window needs lookback inputs plus horizon target days inside train;
    # validation and test each need at least one window whose target days lie inside them.
    return s.n_train >= lookback + horizon and s.n_val >= horizon and s.n_test >= horizon


def check_history(
    n_rows: int, lookback: int, horizon: int, val_fraction: float, test_fraction: float, who: str
) -> Splits:
    splits = split_sizes(n_rows, val_fraction, test_fraction)
    if _fits(splits, lookback, horizon):
        return splits
    needed = n_rows + 1
    while not _fits(split_sizes(needed, val_fraction, test_fraction), lookback, horizon):
        needed += 1
    raise InsufficientHistoryError(
        f"{who}: history too short: lookback {lookback} + horizon {horizon} with a "
        f"{1 - val_fraction - test_fraction:.0%}/{val_fraction:.0%}/{test_fraction:.0%} split "
        f"needs at least {needed} usable rows, there are {n_rows}"
    )


def shared_split_dates(frames: list[pd.DataFrame], section: Windowing) -> SplitDates:
    """Split boundaries as dates shared by several tickers (global mode): the fractions of
    the union of their trading days (within the section's start and end), so no ticker's
    test period lies inside another's training or validation data."""
    days = np.unique(
        np.concatenate(
            [
                pd.to_datetime(filter_dates(f, section.start, section.end)["date"]).to_numpy(
                    dtype="datetime64[D]"
                )
                for f in frames
            ]
        )
    )
    if len(days) == 0:
        raise InsufficientHistoryError("no trading days in the selected date range")
    split = fractions_of(section)
    s = split_sizes(len(days), split.val, split.test)
    last_train = days[max(s.n_train - 1, 0)]
    last_val = days[max(s.n_train + s.n_val - 1, 0)]
    return SplitDates(train_end=str(last_train), val_end=str(last_val))


def date_splits(
    dates: pd.Series, split_dates: SplitDates, lookback: int, horizon: int, who: str
) -> Splits:
    """Row counts of [train | validation | test] cut at shared boundary dates."""
    days = pd.to_datetime(dates).to_numpy(dtype="datetime64[D]")
    train_end = np.datetime64(split_dates.train_end, "D")
    val_end = np.datetime64(split_dates.val_end, "D")
    n_train = int((days <= train_end).sum())
    n_val = int(((days > train_end) & (days <= val_end)).sum())
    splits = Splits(len(days), n_train, n_val, len(days) - n_train - n_val)
    if not _fits(splits, lookback, horizon):
        ends = (
            "; its history ends before the shared validation dates: leave it out of this "
            "global run, or train it on its own (mode per_ticker)"
            if n_val == 0
            else ""
        )
        raise InsufficientHistoryError(
            f"{who}: with the shared split dates (train to {train_end}, validation to "
            f"{val_end}) it has {n_train} training, {n_val} validation and {splits.n_test} "
            f"test rows; lookback {lookback} + horizon {horizon} needs at least "
            f"{lookback + horizon} training and {horizon} rows in each other split{ends}"
        )
    return splits


TARGETS: tuple[str, ...] = Target.__args__  # type: ignore[attr-defined]
"""mean_close: mean close of days t+1..t+h (the tutorial's); close: close at t+h;
closes: the vector of closes t+1..t+h (multi-step). `*_log_return`: the same quantity as
log(quantity / close at t), so the model learns a scale-free return and predictions
are mapped back to prices with the anchor day's close."""


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {list(TARGETS)}")


def is_log_return(target: str) -> bool:
    _check_target(target)
    return target.endswith("_log_return")


def output_width(target: str, horizon: int) -> int:
    """How many numbers the model predicts per window: h for the multi-step targets, else 1."""
    _check_target(target)
    return horizon if target.startswith("closes") else 1


def target_prices(close: np.ndarray, horizon: int, target: str) -> np.ndarray:
    """The target in prices per row t, NaN where t+horizon runs past the data; (n, width)."""
    _check_target(target)
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    out = np.full((n, output_width(target, horizon)), np.nan)
    if n > horizon:
        m = n - horizon
        if target.startswith("mean_close"):
            csum = np.concatenate([[0.0], np.cumsum(close)])
            t = np.arange(m)
            out[:m, 0] = (csum[t + horizon + 1] - csum[t + 1]) / horizon
        elif target.startswith("closes"):
            for k in range(horizon):
                out[:m, k] = close[k + 1 : k + 1 + m]
        else:
            out[:m, 0] = close[horizon:]
    return out


def make_targets(close: np.ndarray, horizon: int, target: str) -> np.ndarray:
    """What the model learns per row t, before scaling: prices, or log returns vs close t."""
    prices = target_prices(close, horizon, target)
    if is_log_return(target):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log(prices / np.asarray(close, dtype=np.float64)[:, None])
    return prices


def to_prices(
    spec: Preprocessing, scaled_outputs: np.ndarray, last_close: np.ndarray | None = None
) -> np.ndarray:
    """Model outputs (scaled, any target) back to prices; shape (n, width).

    `last_close` is the close of each window's anchor day, needed by the log-return
    targets (price = last_close * exp(log return)).
    """
    scaled = np.asarray(scaled_outputs, dtype=np.float64)
    values = spec.target_scaler.inverse(scaled.reshape(len(scaled), -1))
    if not is_log_return(spec.target):
        return values
    if last_close is None:
        raise ValueError(
            f"target {spec.target!r} predicts log returns: mapping them to prices needs "
            "the close of each window's anchor day (last_close)"
        )
    last = np.asarray(last_close, dtype=np.float64).reshape(-1, 1)
    if len(last) != len(values):
        raise ValueError(f"last_close has {len(last)} rows for {len(values)} predictions")
    return last * np.exp(values)


@dataclass
class Preprocessing:
    """What inference needs to rebuild a model's inputs from raw prices."""

    features: list[str]
    lookback: int
    horizon: int
    target: str
    feature_scaler: MinMax
    target_scaler: MinMax
    n_train: int
    n_val: int
    n_test: int
    first_day: str
    last_day: str
    train_end: str
    val_end: str
    # Gaps in the days ([row before, day before, day after, weekdays missing]) and what
    # windows over them do (`tickercast.modeling.windows.anchors_for`); bundles written
    # before gaps were known bridge them, as they were trained.
    gaps: list = field(default_factory=list)
    on_gap: str = "bridge"
    # Rows before a day its features read (a return 1, a 20-day volatility 20): a window
    # whose inputs reach back across a gap through them spans it too. At least 1 (and 1
    # for older bundles).
    feature_memory: int = 1

    @property
    def n_rows(self) -> int:
        """Rows preprocessed: train + validation + test."""
        return self.n_train + self.n_val + self.n_test

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        data = dict(data)
        data["feature_scaler"] = MinMax(**data["feature_scaler"])
        data["target_scaler"] = MinMax(**data["target_scaler"])
        return cls(**data)


def filter_dates(
    prices: pd.DataFrame, start: dt.date | str | None, end: dt.date | str | None
) -> pd.DataFrame:
    days = pd.to_datetime(prices["date"]).dt.date
    mask = np.ones(len(prices), dtype=bool)
    if start:
        mask &= days >= dt.date.fromisoformat(str(start))
    if end:
        mask &= days <= dt.date.fromisoformat(str(end))
    return prices.loc[mask].reset_index(drop=True)


def fractions_of(section: Windowing) -> Fractions:
    """The section's own split (retrain's preprocessing has both fractions)."""
    test = getattr(section, "test_fraction", None)
    if test is None:
        raise ValueError("this preprocessing has no test_fraction: give the split")
    return Fractions(section.val_fraction, test)


def preprocess(
    prices: pd.DataFrame, section: Windowing, who: str, split: Split | None = None
) -> tuple[Preprocessing, dict]:
    """Fit scalers on training rows only; return the spec and the arrays for windowing.

    `split` is how rows are split: by default the section's own fractions; a backtest's
    fold gives its own (`Fractions`), global mode the shared dates (`SplitDates`)."""
    prices = filter_dates(prices, section.start, section.end)
    features = list(section.features)
    frame = build_features(prices, features, who=who)
    lookback, horizon = section.lookback, section.horizon
    split = split or fractions_of(section)
    if isinstance(split, SplitDates):
        splits = date_splits(frame["date"], split, lookback, horizon, who)
    else:
        splits = check_history(len(frame), lookback, horizon, split.val, split.test, who)
    raw = frame[features].to_numpy(dtype=np.float64)
    close = frame["_close"].to_numpy(dtype=np.float64)
    target = section.target
    targets = make_targets(close, horizon, target)
    train = slice(0, splits.n_train)
    feature_scaler = MinMax.fit(raw[train])
    target_scaler = _target_scaler(target, targets, close, splits.n_train, horizon)
    days = frame["date"].astype(str).tolist()
    warm_up = len(prices) - len(frame)  # the leading rows the features' memory used up
    gaps = _gaps(prices["date"], section, who, warm_up)
    spec = Preprocessing(
        features=features,
        lookback=lookback,
        horizon=horizon,
        target=target,
        feature_scaler=feature_scaler,
        target_scaler=target_scaler,
        n_train=splits.n_train,
        n_val=splits.n_val,
        n_test=splits.n_test,
        first_day=days[0],
        last_day=days[-1],
        train_end=days[splits.n_train - 1],
        val_end=days[splits.n_train + splits.n_val - 1],
        gaps=gaps,
        on_gap=getattr(section, "on_gap", "split"),
        feature_memory=max(1, warm_up),
    )
    _check_windows_left(spec, who)
    arrays = {
        "x": feature_scaler.transform(raw).astype(np.float32),
        "y": target_scaler.transform(targets).astype(np.float32),
        "y_price": target_prices(close, horizon, target),
        "close": close,
        "dates": np.array(days, dtype="datetime64[D]"),
    }
    return spec, arrays


def _target_scaler(
    target: str, targets: np.ndarray, close: np.ndarray, n_train: int, horizon: int
) -> MinMax:
    """The target's scaler, fit on the training rows only."""
    if is_log_return(target):
        # Scaled by the largest move of the rows whose target days all lie inside the
        # training rows, not shifted: "no change" stays exactly 0, so a network shrunk all
        # the way to naive (tickercast.modeling.shrink) forecasts the last close exactly.
        moves = np.abs(targets[: n_train - horizon])
        largest = np.nanmax(moves, axis=0) if len(moves) else np.ones(targets.shape[1])
        return MinMax([0.0] * targets.shape[1], [float(v) for v in largest])
    return MinMax.fit(close[:n_train])  # prices: the closes' own range


def _gaps(dates: pd.Series, section: Windowing, who: str, warm_up: int) -> list[list]:
    """The gaps of the selected rows, numbered as the feature rows (the price rows less
    the `warm_up` first: a gap inside those gets a negative row, still read by the first
    rows' features); on_gap=refuse fails here, naming them."""
    days = pd.to_datetime(dates).to_numpy(dtype="datetime64[D]")
    limit = getattr(section, "gap_days", 5)
    gaps = [[g[0] - warm_up, *g[1:]] for g in find_gaps(days, limit)]
    if gaps and getattr(section, "on_gap", "split") == "refuse":
        raise GapError(
            f"{who}: {describe_gaps(gaps)} longer than {limit} trading days in the selected "
            "rows (on_gap=refuse): choose on_gap split (no window spans a gap) or bridge, "
            "or a start after the gap"
        )
    return gaps


def _check_windows_left(spec: Preprocessing, who: str) -> None:
    """With on_gap=split, every split must keep at least one window."""
    if spec.on_gap != "split" or not spec.gaps:
        return
    empty = [name for name, a in anchors_for(spec).items() if len(a) == 0]
    if empty:
        raise GapError(
            f"{who}: no {'/'.join(empty)} window left: every one spans a gap "
            f"({describe_gaps(spec.gaps)}; on_gap=split); choose a start after the gap "
            "or on_gap bridge"
        )


def save_preprocessed(out_dir: Path, spec: Preprocessing, arrays: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    npz = out_dir / "arrays.npz"
    with atomic_path(npz) as tmp:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)
    spec_path = out_dir / SPEC_FILE
    write_json(spec_path, spec.to_json())
    return npz, spec_path


def load_spec(spec_path: str | Path) -> Preprocessing:
    """preprocessing.json (what `save_preprocessed` wrote) as a Preprocessing."""
    return Preprocessing.from_json(json.loads(Path(spec_path).read_text()))


def load_preprocessed(npz: str | Path, spec_path: str | Path) -> tuple[Preprocessing, dict]:
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return load_spec(spec_path), arrays
