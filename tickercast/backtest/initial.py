"""What a backtest refuses before any work: a first training window too short for one of
its models (naming the model and the setting), a stacked network with one units entry.

The rows each baseline needs come from the baseline registry; `tickercast.folds` (below
the registry) knows the networks' needs and takes the baselines' as given.
"""

from __future__ import annotations

from tickercast.choices import NETWORKS
from tickercast.evaluation.baseline_registry import minimum_rows
from tickercast.folds import check_initial as _check_rows
from tickercast.sections import Architecture, Rolling, Windowing, check_stacking


def check_initial(
    initial: int, models: list[str], *, horizon: int, lookback: int, val_fraction: float, **params
) -> None:
    """Refuse a first window of `initial` rows too short for a model; a baseline parameter
    not in `params` is the registry's default."""
    needs = minimum_rows([m for m in models if m not in NETWORKS], horizon, params)
    _check_rows(
        initial,
        models,
        horizon=horizon,
        lookback=lookback,
        val_fraction=val_fraction,
        baseline_needs=needs,
    )


def check_rolling(windowing: Windowing, rolling: Rolling, network: Architecture) -> None:
    """A backtest's settings, checked together before any work."""
    check_stacking(rolling.model, network.units)
    check_initial(
        rolling.initial,
        rolling.model,
        horizon=windowing.horizon,
        lookback=windowing.lookback,
        val_fraction=windowing.val_fraction,
        ridge_lags=rolling.ridge_lags,
        ma_window=rolling.ma_window,
        ridge_alpha=rolling.ridge_alpha,
    )
