"""Clean, featurise, split chronologically and scale: the only place scalers are fitted.

Rows split as [train | validation | test] in time order. Scalers are fitted on the
training rows alone. Targets are defined per row t (the last day of an input window)
from the closes of days t+1..t+horizon; windows are assigned to a split by where their
target days lie (`tasks.windows`), and windows whose target straddles a boundary are
dropped, so no training target ever reads a validation or test day.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.atomic import atomic_path, write_json
from tasks.features import build_features


class InsufficientHistoryError(ValueError):
    """Too few rows for lookback + horizon in every split; says how many are needed."""


@dataclass
class MinMax:
    """Per-column min-max scaling to [0, 1]; constant columns map to 0."""

    min: list[float]
    max: list[float]

    @classmethod
    def fit(cls, values: np.ndarray) -> MinMax:
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        return cls(values.min(axis=0).tolist(), values.max(axis=0).tolist())

    def _scale(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.asarray(self.min), np.asarray(self.max)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        return lo, span

    def transform(self, values: np.ndarray) -> np.ndarray:
        lo, span = self._scale()
        return (np.asarray(values, dtype=np.float64) - lo) / span

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        lo, span = self._scale()
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


def make_targets(close: np.ndarray, horizon: int, target: str) -> np.ndarray:
    """Target per row t in prices, NaN where t+horizon runs past the data; shape (n, 1)."""
    n = len(close)
    out = np.full((n, 1), np.nan)
    if n > horizon:
        if target == "mean_close":
            csum = np.concatenate([[0.0], np.cumsum(close)])
            t = np.arange(n - horizon)
            out[: n - horizon, 0] = (csum[t + horizon + 1] - csum[t + 1]) / horizon
        elif target == "close":
            out[: n - horizon, 0] = close[horizon:]
        else:
            raise ValueError(f"unknown target {target!r}; valid: ['close', 'mean_close']")
    return out


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

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        data = dict(data)
        data["feature_scaler"] = MinMax(**data["feature_scaler"])
        data["target_scaler"] = MinMax(**data["target_scaler"])
        return cls(**data)


def filter_dates(prices: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    days = pd.to_datetime(prices["date"]).dt.date
    mask = np.ones(len(prices), dtype=bool)
    if start:
        mask &= days >= dt.date.fromisoformat(str(start))
    if end:
        mask &= days <= dt.date.fromisoformat(str(end))
    return prices.loc[mask].reset_index(drop=True)


def preprocess(prices: pd.DataFrame, cfg: dict, who: str) -> tuple[Preprocessing, dict]:
    """Fit scalers on training rows only; return the spec and the arrays for windowing."""
    prices = filter_dates(prices, cfg.get("start"), cfg.get("end"))
    frame = build_features(prices, list(cfg["features"]))
    lookback, horizon = int(cfg["lookback"]), int(cfg["horizon"])
    splits = check_history(
        len(frame), lookback, horizon, cfg["val_fraction"], cfg["test_fraction"], who
    )
    raw = frame[cfg["features"]].to_numpy(dtype=np.float64)
    close = frame["_close"].to_numpy(dtype=np.float64)
    targets = make_targets(close, horizon, cfg["target"])
    train = slice(0, splits.n_train)
    feature_scaler = MinMax.fit(raw[train])
    target_scaler = MinMax.fit(close[train])
    days = frame["date"].astype(str).tolist()
    spec = Preprocessing(
        features=list(cfg["features"]),
        lookback=lookback,
        horizon=horizon,
        target=cfg["target"],
        feature_scaler=feature_scaler,
        target_scaler=target_scaler,
        n_train=splits.n_train,
        n_val=splits.n_val,
        n_test=splits.n_test,
        first_day=days[0],
        last_day=days[-1],
        train_end=days[splits.n_train - 1],
        val_end=days[splits.n_train + splits.n_val - 1],
    )
    arrays = {
        "x": feature_scaler.transform(raw).astype(np.float32),
        "y": target_scaler.transform(targets).astype(np.float32),
        "y_price": targets,
        "close": close,
        "dates": np.array(days, dtype="datetime64[D]"),
    }
    return spec, arrays


def save_preprocessed(out_dir: Path, spec: Preprocessing, arrays: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    npz = out_dir / "arrays.npz"
    with atomic_path(npz) as tmp:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)
    spec_path = out_dir / "preprocessing.json"
    write_json(spec_path, spec.to_json())
    return npz, spec_path


def load_preprocessed(npz: str | Path, spec_path: str | Path) -> tuple[Preprocessing, dict]:
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    spec = Preprocessing.from_json(json.loads(Path(spec_path).read_text()))
    return spec, arrays
