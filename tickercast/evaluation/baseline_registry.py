"""Every baseline, once: one name means one forecaster everywhere it is scored (the retrain
evaluation, walk-forward, `tickercast backtest`, the gate's naive reference and every report).

An entry holds the name, what the forecaster is in one line (reports and the README print
it), the parameters it takes (their defaults are stated once, in
`tickercast.evaluation.baselines`) and its forms:

- `PointBaseline` reads closes only, so every engine runs it: `window` forecasts one
  origin from its training window (the specification), `rolling` every origin at once
  (backtests, and the retrain evaluation at origins starting at row 0); both are held
  equal by tests.
- `InputsBaseline` is fit on the model's own preprocessed input windows, so it exists only
  where a model's preprocessing does (the retrain evaluation and its walk-forward).
- `DistributionBaseline` (kind "distribution", issue 21) forecasts bands on the grid
  `tickercast.choices.QUANTILES` around a given median: its form is daily variance
  forecasts at given origins, refit on the networks' schedule, which
  `tickercast.evaluation.distribution` maps onto the target and calibrates.

Consumers pick entries by kind
(`of_kind("point")`: the metrics tables; `of_kind("distribution")`: the band tables), so
neither kind's scoring sees the other's. The names themselves are the `Literal`s in
`tickercast.choices` (what configs validate and the CLI offers); this module refuses to
import if a name lacks an entry or an entry lacks a name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from tickercast.choices import BASELINES as CLOSE_NAMES
from tickercast.choices import DISTRIBUTION_BASELINES as DISTRIBUTION_NAMES
from tickercast.choices import INPUTS_BASELINES as INPUTS_NAMES
from tickercast.evaluation import baselines as b
from tickercast.evaluation import distribution as dist
from tickercast.evaluation.names import NAIVE


@dataclass(frozen=True)
class Parameter:
    """A baseline parameter: its one default and what it sets (for the CLI help)."""

    default: int | float
    description: str


PARAMETERS: dict[str, Parameter] = {
    "ma_window": Parameter(b.MA_WINDOW, "moving_average: closes averaged (trading days)."),
    "ridge_lags": Parameter(b.RIDGE_LAGS, "ridge: daily log returns fed to the regression."),
    "ridge_alpha": Parameter(
        b.RIDGE_ALPHA, "ridge: L2 penalty on the standardised coefficients (intercept free)."
    ),
}
DEFAULTS: dict[str, int | float] = {k: p.default for k, p in PARAMETERS.items()}


@dataclass(frozen=True)
class Registered:
    """What every registered forecaster has, whatever it forecasts."""

    kind: ClassVar[str]
    name: str
    description: str  # one line; `{parameter}` fields are filled in by `describe`
    params: tuple[str, ...] = ()

    def settings(self, given: Mapping[str, object] | None = None) -> dict:
        """This forecaster's parameters: the given values, defaults for the rest."""
        return settings(given, self.params)

    def describe(
        self, given: Mapping[str, object] | None = None, horizon: int | None = None
    ) -> str:
        """The one-line description with the parameter values (and horizon) filled in."""
        h = "`horizon`" if horizon is None else horizon
        return self.description.format(horizon=h, **self.settings(given))


@dataclass(frozen=True, kw_only=True)
class PointBaseline(Registered):
    """A point forecast of the next `horizon` closes from the closes alone."""

    kind: ClassVar[str] = "point"
    window: Callable[..., np.ndarray] = field(repr=False)
    rolling: Callable[..., np.ndarray] = field(repr=False)
    min_rows: Callable[..., int] = field(default=lambda horizon: 1, repr=False)
    needs: str = "one training day"  # why min_rows, in words ({horizon}, {parameter})

    def shortest(self, horizon: int, given: Mapping[str, object] | None = None) -> int:
        """The fewest training rows (closes s..o) this forecaster needs at an origin."""
        return int(self.min_rows(horizon, **self.settings(given)))

    def why(self, horizon: int, given: Mapping[str, object] | None = None) -> str:
        return self.needs.format(horizon=horizon, **self.settings(given))


@dataclass(frozen=True, kw_only=True)
class InputsBaseline(Registered):
    """A point forecast fit on the model's scaled input windows (train split; validation
    picks its hyperparameter), scored like the model. `fit(arrays, anchors, lookback,
    to_prices)` returns its forecaster (anchors -> prices) and the values it fitted."""

    kind: ClassVar[str] = "point"
    fit: Callable[..., tuple] = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class DistributionBaseline(Registered):
    """A distribution forecast on the grid `tickercast.choices.QUANTILES` around a given
    median: `variance(close, rows, horizon, fit_end)` forecasts the daily log-return
    variances of the next `horizon` days at each origin row (a fitted one reads rows up to
    its `fit_end` to fit, up to the origin to forecast); `tickercast.evaluation.distribution`
    maps them onto the target and calibrates them (`quantiles`)."""

    kind: ClassVar[str] = "distribution"
    label: str  # how verdicts name it ("GARCH(1,1)-t")
    variance: Callable[..., np.ndarray] = field(repr=False)


def _distribution(name: str, description: str) -> DistributionBaseline:
    return DistributionBaseline(
        name, description, label=dist.LABELS[name], variance=dist.DAILY_VARIANCE[name]
    )


DISTRIBUTIONS: tuple[DistributionBaseline, ...] = (
    _distribution(
        "volatility_conformal",
        "the product's band today: the standard deviation of the last "
        f"{dist.VOLATILITY_DAYS} daily log returns as the scale, flat over the horizon",
    ),
    _distribution(
        "ewma",
        f"RiskMetrics EWMA variance of daily log returns (lambda {dist.EWMA_LAMBDA}), flat "
        "over the horizon",
    ),
    _distribution(
        "garch_t",
        "GARCH(1,1) with Student-t errors (arch), refit with the networks, its variance "
        "path over the horizon",
    ),
    _distribution(
        "gjr_garch_t",
        "GJR-GARCH(1,1) with Student-t errors (arch: falls raise variance more than rises), "
        "refit with the networks, its variance path over the horizon",
    ),
    _distribution(
        "unconditional",
        "the unconditional empirical band: one constant scale, the validation residuals' "
        "own spread",
    ),
)

DISTRIBUTIONS_NAMES = tuple(e.name for e in DISTRIBUTIONS)

ENTRIES: tuple[Registered, ...] = (
    PointBaseline(
        NAIVE,
        "the last close, for every day of the horizon (the skill reference)",
        window=b.window_naive,
        rolling=b.rolling_naive,
    ),
    PointBaseline(
        "drift",
        "the last close plus the average daily change over the training window (the line "
        "through its first and last close)",
        window=b.window_drift,
        rolling=b.rolling_drift,
        min_rows=lambda horizon: 2,
        needs="two training days",
    ),
    PointBaseline(
        "mean",
        "the mean close of the training window",
        window=b.window_mean,
        rolling=b.rolling_mean,
    ),
    PointBaseline(
        "moving_average",
        "the mean of the last {ma_window} closes",
        ("ma_window",),
        window=b.window_moving_average,
        rolling=b.rolling_moving_average,
        min_rows=lambda horizon, ma_window: max(ma_window, 2),
        needs="its window, ma_window {ma_window}",
    ),
    PointBaseline(
        "moving_average_horizon",
        "the mean of the last {horizon} closes (one per horizon day)",
        window=b.window_moving_average_horizon,
        rolling=b.rolling_moving_average_horizon,
        min_rows=lambda horizon: max(horizon, 2),
        needs="its window, horizon {horizon}",
    ),
    PointBaseline(
        "ridge",
        "ridge autoregression: the log return to each horizon day regressed on the last "
        "{ridge_lags} daily log returns over the training window (standardised, intercept "
        "free, penalty {ridge_alpha})",
        ("ridge_lags", "ridge_alpha"),
        window=b.window_ridge,
        rolling=b.rolling_ridge,
        min_rows=lambda horizon, ridge_lags, ridge_alpha: 2 * ridge_lags + horizon + 1,
        needs="ridge_lags {ridge_lags} and horizon {horizon}: ridge_lags + 1 training windows",
    ),
    InputsBaseline(
        "ridge_inputs",
        "ridge regression on the model's own scaled input windows and target (fit on the "
        "training windows, penalty chosen on validation RMSE)",
        fit=b.fit_ridge_inputs,
    ),
    *DISTRIBUTIONS,
)
BASELINES: dict[str, Registered] = {e.name: e for e in ENTRIES}
# names that meant something else before this registry (metadata.json written earlier):
# what those keys measured there
LEGACY: dict[str, str] = {
    "moving_average": "the mean of the last `horizon` closes (now moving_average_horizon)",
    "moving_average_20": "the mean of the last 20 closes (now moving_average)",
    "ridge": "ridge regression on the model's own scaled input windows (now ridge_inputs)",
}

# every kind's entries match its names in tickercast.choices, in order (a distribution kind
# adds its Literal here); naive is the closes-only skill reference
KIND_NAMES: dict[type, tuple[str, ...]] = {
    PointBaseline: CLOSE_NAMES,
    InputsBaseline: INPUTS_NAMES,
    DistributionBaseline: DISTRIBUTION_NAMES,
}


def _check_names() -> None:
    for cls, names in KIND_NAMES.items():
        entries = tuple(e.name for e in ENTRIES if type(e) is cls)
        if entries != names or len(BASELINES) != len(ENTRIES) or NAIVE not in CLOSE_NAMES:
            raise ImportError(
                f"baseline registry: {cls.__name__} entries {list(entries)} != the names in "
                f"tickercast.choices {list(names)} (or a name registered twice)"
            )


_check_names()


def naive_targets(last_close: np.ndarray, n_outputs: int) -> np.ndarray:
    """Naive's forecast of any price target, (n, outputs): its path is flat at the last
    close, and every target is a weighted mean of future closes (weights summing to one),
    so every output is the last close. The gate scores against it."""
    return b.flat_paths(last_close, n_outputs)


def get(name: str) -> Registered:
    """The entry of `name`, or one line naming the valid ones."""
    try:
        return BASELINES[name]
    except KeyError:
        was = f" (it was {LEGACY[name]})" if name in LEGACY else ""
        raise ValueError(f"unknown baseline {name!r}{was}; valid: {list(BASELINES)}") from None


def of_kind(kind: str) -> list[Registered]:
    """Every entry forecasting a `kind` ("point": the metrics tables; "distribution": the
    band tables)."""
    return [e for e in ENTRIES if e.kind == kind]


def settings(
    given: Mapping[str, object] | None = None, names: Sequence[str] = tuple(PARAMETERS)
) -> dict:
    """Baseline parameters (all, or `names`): the values given (e.g. a config's fields),
    the defaults for the rest."""
    given = given or {}
    return {p: given.get(p, DEFAULTS[p]) for p in names}


def point(name: str) -> PointBaseline:
    """The closes-only entry of `name`; an inputs baseline is refused, saying where it runs."""
    entry = get(name)
    if not isinstance(entry, PointBaseline):
        raise ValueError(
            f"baseline {name!r} is fit on a model's preprocessed inputs: only the retrain "
            f"evaluation and its walk-forward run it; from the closes alone: {list(CLOSE_NAMES)}"
        )
    return entry


def forecast_rolling(
    name: str, close: np.ndarray, origins, given: Mapping[str, object] | None = None
) -> np.ndarray:
    """`name`'s forecast of the next `origins.horizon` closes at every origin of
    `tickercast.folds.Origins`; (n, horizon) prices, each origin reading closes s..o only."""
    entry = point(name)
    close = np.asarray(close, dtype=np.float64)
    return entry.rolling(
        close, origins.rows, origins.starts, origins.horizon, **entry.settings(given)
    )


def forecast_windows(
    name: str,
    close: np.ndarray,
    anchors: np.ndarray,
    horizon: int,
    given: Mapping[str, object] | None = None,
) -> np.ndarray:
    """`name`'s forecast at each anchor from all closes up to it (an expanding training
    window); (n, horizon), NaN where the history is too short. Computed by the rolling
    form at origins starting at row 0, which equals the per-window form per anchor
    (tests/test_baselines.py): the per-window ridge refit its regression on the whole
    history at every test window, most of a retrain evaluation's baseline time
    (bench/RESULTS.md `evaluation_baselines`)."""
    entry = point(name)
    close = np.asarray(close, dtype=np.float64)
    params = entry.settings(given)
    anchors = np.asarray(anchors, dtype=np.int64)
    out = np.full((len(anchors), horizon), np.nan)
    enough = anchors + 1 >= entry.shortest(horizon, params)
    if enough.any():
        rows = anchors[enough]
        out[enough] = entry.rolling(close, rows, np.zeros_like(rows), horizon, **params)
    return out


def minimum_rows(
    names: Sequence[str], horizon: int, given: Mapping[str, object] | None = None
) -> dict[str, tuple[int, str]]:
    """Per closes-only baseline among `names`: the fewest training rows it needs and why."""
    return {
        name: (point(name).shortest(horizon, given), point(name).why(horizon, given))
        for name in names
    }


def descriptions(
    given: Mapping[str, object] | None = None,
    names: Sequence[str] | None = None,
    horizon: int | None = None,
) -> dict[str, str]:
    """What each baseline (all, or `names`) is, with the parameter values `given`."""
    return {n: get(n).describe(given, horizon) for n in (BASELINES if names is None else names)}


def recorded_descriptions(evaluation: Mapping | None) -> dict[str, str]:
    """What each baseline key of a stored evaluation measured: its own record (an
    evaluation stores `baselines` with its metrics), or, for metadata written before
    this registry, the meanings those names had then."""
    record = (evaluation or {}).get("baselines")
    if isinstance(record, Mapping):
        return {k: v.get("description", "") for k, v in record.items() if isinstance(v, Mapping)}
    return {**descriptions(), **LEGACY}


def legend(names: Sequence[str], described: Mapping[str, str] | None = None) -> list[str]:
    """'`name`: what it is' for every baseline among `names` (descriptions: `described`,
    else the registry's at default parameters); names it cannot describe are left out."""
    described = descriptions() if described is None else described
    return [f"`{n}`: {described[n]}" for n in names if described.get(n)]


def distribution(name: str) -> DistributionBaseline:
    """The distribution entry of `name`, or one line naming the valid ones."""
    entry = get(name)
    if not isinstance(entry, DistributionBaseline):
        raise ValueError(f"{name!r} is a point baseline; distributions: {list(DISTRIBUTION_NAMES)}")
    return entry


def distribution_quantiles(
    names: Sequence[str],
    close: np.ndarray,
    price_weights: np.ndarray,
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
    forecast: tuple[np.ndarray, np.ndarray],
    fit_end: int | np.ndarray,
) -> dict[str, np.ndarray]:
    """Each named distribution baseline's grid in prices at the forecast origins (see
    `tickercast.evaluation.distribution.baseline_quantiles`)."""
    variances = {name: distribution(name).variance for name in names}
    return dist.baseline_quantiles(variances, close, price_weights, calibration, forecast, fit_end)
