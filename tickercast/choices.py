"""Every closed set of choices, as the `Literal` types the configs validate with; the tuples
the code checks against are derived from them here, so a new choice is added in one place."""

from __future__ import annotations

from typing import Literal, get_args

Source = Literal["sample", "csv", "yfinance", "sine"]
WholeSource = Literal["sample", "csv", "sine"]  # ingested whole: replace the partition
WindowedSource = Literal["yfinance"]  # fetched by date window: incremental
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
    "abs_log_return",
    "parkinson",
    "garman_klass",
]
Target = Literal[
    "mean_close",
    "close",
    "closes",
    "mean_close_log_return",
    "close_log_return",
    "closes_log_return",
]
# The network's output: one point forecast per output, or the QUANTILES grid per output
# (never crossing by construction; tickercast.modeling.models.build_model).
Head = Literal["point", "quantile"]
ModelName = Literal["stacked_lstm", "lstm", "bilstm", "cnn_lstm", "lstm_attention"]
# Networks whose `units` needs more than one entry (stacked LSTMs; cnn_lstm's Conv1D + LSTM)
MIN_UNITS: dict[str, int] = {"stacked_lstm": 2, "cnn_lstm": 2}
# Baselines (what each one is: tickercast.evaluation.baseline_registry). `Baseline`: forecast
# from the closes alone, refit at every origin on its training window, so every engine runs
# them; `InputsBaseline`: fit on the model's own preprocessed input windows, so only where a
# model's preprocessing exists (the retrain evaluation and its walk-forward).
Baseline = Literal["naive", "drift", "mean", "moving_average", "moving_average_horizon", "ridge"]
InputsBaseline = Literal["ridge_inputs"]
# Distribution baselines (issue 21): bands on the QUANTILES grid around a given median, each
# a daily-variance forecaster mapped onto the target and calibrated split-conformally.
DistributionBaseline = Literal[
    "volatility_conformal", "ewma", "garch_t", "gjr_garch_t", "unconditional"
]
# The band a model ships around its median when it has no quantile head (issue 21): one of
# the variance forecasters above, fit on the training rows and calibrated on validation
# (tickercast.evaluation.garch_band, distribution.model_band). The default is the one the
# sample tickers' benchmark found best (bench/FORECAST_BANDS.md).
Band = Literal["volatility_conformal", "ewma", "garch_t", "gjr_garch_t"]
BAND: Band = "gjr_garch_t"
# The baselines' parameters' defaults (the registry, the arithmetic and the backtest's
# config section read them here)
MA_WINDOW = 20  # moving_average: closes averaged
RIDGE_LAGS = 5  # ridge: daily log returns the regression reads
RIDGE_ALPHA = 1.0  # ridge: L2 penalty on the standardised coefficients
BacktestModel = Literal[ModelName, Baseline]
Window = Literal["expanding", "sliding"]
MaseScale = Literal["series", "origin"]
Mode = Literal["per_ticker", "global"]
PromotionMetric = Literal["rmse", "mae", "mape", "smape", "mase"]
Device = Literal["auto", "cpu", "gpu"]
OnCorrupt = Literal["reingest", "skip", "fail"]
OnQuirk = Literal["repair", "drop", "fail"]  # a kept row's vendor quirks: see market/validate.py
OnGap = Literal["split", "refuse", "bridge"]  # windows over a gap in the days: modeling/windows.py
FailOn = Literal["any", "all", "never"]
Preset = Literal["recommended", "tutorial"]
TaskRunner = Literal["threads", "dask"]
TuneAlgorithm = Literal["bayesian", "hyperband"]
# The second night (issue 22): off = every fit from scratch; auto = fine-tune the champion's
# fitted weights when compatible and recent enough (tickercast.modeling.warm), else refit
WarmStartMode = Literal["off", "auto"]
ProgressMode = Literal["on", "off", "auto"]  # terminal progress bars: see progress.py


def values(choice: object) -> tuple[str, ...]:
    """The values of a Literal (nested Literals flattened), in declaration order."""
    out: list[str] = []
    for arg in get_args(choice):
        out.extend(values(arg) if get_args(arg) else [arg])
    return tuple(out)


SOURCES = values(Source)
WHOLE_SOURCES = values(WholeSource)
WINDOWED_SOURCES = values(WindowedSource)
FEATURES = values(Feature)
TARGETS = values(Target)
NETWORKS = values(ModelName)
HEADS = values(Head)
BASELINES = values(Baseline)
INPUTS_BASELINES = values(InputsBaseline)
DISTRIBUTION_BASELINES = values(DistributionBaseline)
BANDS = values(Band)
WINDOWS = values(Window)
DEVICES = values(Device)
ON_CORRUPT = values(OnCorrupt)
ON_QUIRK = values(OnQuirk)
ON_GAP = values(OnGap)
PROGRESS_MODES = values(ProgressMode)
WARM_START_MODES = values(WarmStartMode)

# The quantile grid of every distribution forecast (the network's quantile head, the
# distribution baselines, their scores, the bundle's and the service's outputs): one grid,
# so every forecaster is scored on the same levels. The 80% and 95% bands are its
# (0.1, 0.9) and (0.025, 0.975) pairs.
QUANTILES: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)
