"""Inference from a bundle and raw prices, with the bundle's own (training-fit) scalers.

`forecast_next` gives the next-horizon forecast from the latest lake rows (the `predict`
flow and `GET /forecast/{ticker}`); `forecast_window` does the same from a raw window a
client sends (`POST /predict`). Both attach the bundle's split-conformal intervals and a
calibrated quantile grid in prices (`quantile_levels`, `quantiles`: see
docs/ARCHITECTURE.md): a quantile head's, or the band the version ships when it is a
fitted variance recursion (GJR-GARCH(1,1)-t by default, `evaluation.distribution.model`
in metadata: `tickercast.evaluation.garch_band`), whose 80%/95% levels are then the
intervals too. A POSTed window gives that band the daily returns it holds (its
`log_return` feature, else its closes): `lookback` rows feed the network, and a window
may hold up to `window_rows(bundle)[1]` rows, the lookback plus what the band reads
before it (the recursion's lookback + 20 returns, or the 20-day volatility; one more row
when the returns come from closes), and then gets the same band as `GET /forecast` and
the SavedModel. With only `lookback` rows the missing returns count at their expectation
from the training variance. How far that moves the band depends on the fit's beta (its
memory): negligible for beta 0.74 (the tiny MSFT fit), but with beta 0.94 on MSFT
2019-2020 the 95% width of 5% to 95% of origins was 0.89x to 1.22x the lake's (0.43x right
after March 2020's jump).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from tickercast import layout
from tickercast.choices import QUANTILES
from tickercast.delivery import plausibility
from tickercast.delivery.bundle import Bundle
from tickercast.evaluation import distribution as dist
from tickercast.evaluation.conformal import (
    LINEAR_SPACE,
    MIN_VOLATILITY,
    SCALE,
    VOLATILITY_DAYS,
    interval,
    recent_volatility,
)
from tickercast.evaluation.evaluate import predict_prices, scaled_to_prices
from tickercast.evaluation.garch_band import log_returns
from tickercast.modeling import inference
from tickercast.modeling.features import build_features

# Raw features that are prices (> 0) or counts (>= 0) in a POSTed window.
POSITIVE_FEATURES = frozenset({"close", "open", "high", "low"})
NON_NEGATIVE_FEATURES = frozenset(
    {"volume", "log_volume", "volatility", "abs_log_return", "parkinson", "garman_klass"}
)
# Days of history before a forecast window that feature warm-up may need (see forecast_next).
WARMUP_ROWS = 256


def _inputs(bundle: Bundle, prices: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = build_features(prices, bundle.spec.features)
    raw = frame[bundle.spec.features].to_numpy(dtype=np.float64)
    x = bundle.spec.feature_scaler.transform(raw).astype(np.float32)
    dates = np.array(frame["date"].astype(str).tolist(), dtype="datetime64[D]")
    return x, dates, frame["_close"].to_numpy(dtype=np.float64)


def predict_at(bundle: Bundle, prices: pd.DataFrame, anchor_dates) -> np.ndarray:
    """Forecast (in prices) for windows ending on each of `anchor_dates`."""
    x, dates, close = _inputs(bundle, prices)
    positions = _positions(bundle, dates, anchor_dates)
    return predict_prices(bundle.model, bundle.spec, x, positions, close)


def predict_quantiles_at(bundle: Bundle, prices: pd.DataFrame, anchor_dates) -> np.ndarray | None:
    """A quantile head's grid in prices, (n, outputs, len(QUANTILES)), for windows ending
    on each of `anchor_dates`; None for a bundle without one (the gate's hook)."""
    if bundle.quantiles is None:
        return None
    from tickercast.modeling.quantiles import predict_quantile_prices

    x, dates, close = _inputs(bundle, prices)
    positions = _positions(bundle, dates, anchor_dates)
    return predict_quantile_prices(bundle.quantiles, bundle.spec, x, positions, close)


def _positions(bundle: Bundle, dates: np.ndarray, anchor_dates) -> np.ndarray:
    wanted = np.asarray(pd.to_datetime(anchor_dates).values.astype("datetime64[D]"))
    positions = np.searchsorted(dates, wanted)
    found = (positions < len(dates)) & (dates[np.minimum(positions, len(dates) - 1)] == wanted)
    if not found.all():
        raise ValueError(f"no price row for anchor day(s) {wanted[~found][:3]}")
    if (positions < bundle.spec.lookback - 1).any():
        raise ValueError(f"fewer than lookback={bundle.spec.lookback} rows before an anchor day")
    return positions


def quantile_grid(bundle: Bundle, window: np.ndarray, last_close, ticker: str) -> np.ndarray | None:
    """The head's grid in prices for scaled windows (n, lookback, features): (n, outputs,
    len(QUANTILES)); None without a quantile head; ValueError when not finite."""
    if bundle.quantiles is None:
        return None
    from tickercast.modeling.quantiles import quantiles_to_prices

    scaled = inference.predict(bundle.quantiles, window)  # as forecast_next
    grid = quantiles_to_prices(bundle.spec, scaled, last_close)
    if not np.isfinite(grid).all():
        raise ValueError(f"ticker {ticker}: the model's quantiles are not finite numbers")
    return grid


def shipped_band(bundle: Bundle) -> dict | None:
    """The band record a version without a quantile head ships when it is a fitted
    variance recursion (its `params`); None otherwise (the legacy volatility band, whose
    intervals are `metadata.intervals` alone)."""
    if bundle.quantiles is not None:
        return None
    evaluation = bundle.metadata.get("evaluation") or {}
    model = (evaluation.get("distribution") or {}).get("model") or {}
    record = model.get("calibration") or {}
    return record if record.get("params") else None


def band_grid(bundle: Bundle, returns, forecast: np.ndarray, ticker: str) -> np.ndarray | None:
    """The shipped band's grid in prices around `forecast` (1, outputs) from the daily
    log returns before the origin (oldest first); None without such a band or returns."""
    record = shipped_band(bundle)
    if record is None or returns is None:
        return None
    weights = dist.target_weights(bundle.spec.target, bundle.spec.horizon, forecast.shape[-1])
    grid = dist.band_from_returns(record, np.asarray(returns)[None], forecast, weights)
    if not np.isfinite(grid).all():
        raise ValueError(f"ticker {ticker}: the band's quantiles are not finite numbers")
    return grid


def grid_bands(grid: np.ndarray) -> dict[str, np.ndarray]:
    """lo_<level>/hi_<level> per output from a shipped band's grid (its 80%/95% levels)."""
    out = {}
    for key, (lower, upper) in dist.interval_bounds(grid).items():
        out[f"lo_{key}"], out[f"hi_{key}"] = lower, upper
    return out


def grid_columns(grid: np.ndarray | None, j: int) -> dict:
    """A forecast row's quantile fields for output j (none without a quantile head):
    `quantile_levels` (the grid) and `quantiles` (prices, in grid order)."""
    if grid is None:
        return {}
    return {"quantile_levels": list(QUANTILES), "quantiles": [float(v) for v in grid[0, j]]}


def interval_columns(
    bundle: Bundle, forecast: np.ndarray, volatility: float | None = None
) -> dict[str, np.ndarray]:
    """lo_<level>/hi_<level> per output from the bundle's conformal quantiles (NaN if none,
    if they were calibrated per unit of volatility and `volatility` is unknown, or per
    unit of a shipped band's scale, which only its grid has: `grid_bands`)."""
    out = {}
    for key, cal in sorted((bundle.metadata.get("intervals") or {}).items()):
        q = np.array(
            [np.nan if v is None else v for v in cal.get("q", [])], dtype=np.float64
        ).reshape(-1)
        if q.size != forecast.shape[-1]:
            q = np.full(forecast.shape[-1], np.nan)
        scale = None
        if cal.get("scale") == SCALE:
            scale = np.array([np.nan if volatility is None else volatility])
        elif cal.get("scale") is not None:  # a shipped band's scale: its grid gives the bounds
            scale = np.array([np.nan])
        space = cal.get("space", LINEAR_SPACE)  # bundles calibrated before log space
        out[f"lo_{key}"], out[f"hi_{key}"] = interval(forecast, q, scale, space)
    return out


def _rows(
    bundle: Bundle,
    ticker: str,
    forecast: np.ndarray,
    as_of: str,
    last_close,
    volatility: float | None = None,
    grid: np.ndarray | None = None,
) -> list:
    if shipped_band(bundle) is not None and grid is not None:
        bands = grid_bands(grid)
    else:
        bands = interval_columns(bundle, forecast, volatility)
    rows = []
    for j in range(forecast.shape[-1]):
        rows.append(
            {
                "ticker": ticker,
                "version": bundle.version,
                "as_of": as_of,
                "horizon": bundle.spec.horizon,
                "target": bundle.spec.target,
                "output": j + 1,
                "last_close": last_close,
                "forecast": float(forecast[0, j]),
                **{k: _finite(v[0, j]) for k, v in bands.items()},
                **grid_columns(grid, j),
            }
        )
    return rows


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def forecast_next(bundle: Bundle, prices: pd.DataFrame, ticker: str) -> list[dict]:
    """The forecast for the `horizon` days after the last lake day, one row per output.

    Only the last `lookback + WARMUP_ROWS` days are turned into features: every feature
    looks back a bounded number of days (at most 21), so the window is the same (to
    rounding) as from the whole history, at a fraction of the cost per request.
    """
    prices = prices.iloc[-(bundle.spec.lookback + WARMUP_ROWS) :]
    x, dates, closes = _inputs(bundle, prices)
    if len(x) < bundle.spec.lookback:
        raise ValueError(
            f"ticker {ticker}: {len(x)} usable rows in the lake, the model needs "
            f"lookback={bundle.spec.lookback}"
        )
    as_of = str(dates[-1])
    plausibility.check_closes(ticker, closes, bundle.metadata, dates, as_of)
    window = x[len(x) - bundle.spec.lookback :][None]
    scaler = bundle.spec.feature_scaler
    plausibility.check_scaled(ticker, window, bundle.spec.features, scaler)
    # predict_on_batch would trace a tf.function per champion loaded
    scaled = inference.predict(bundle.model, window)
    forecast = plausible_forecast(bundle, scaled, float(closes[-1]), ticker, closes)
    volatility = float(recent_volatility(closes, [len(closes) - 1])[0])
    grid = quantile_grid(bundle, window, closes[-1:], ticker)
    if grid is None:
        grid = band_grid(bundle, log_returns(closes), forecast, ticker)
    return _rows(bundle, ticker, forecast, as_of, float(closes[-1]), volatility, grid)


def window_rows(bundle: Bundle) -> tuple[int, int]:
    """(fewest, most) rows a POSTed window may hold: `lookback` feed the network; the most
    also let the band see what `forecast_next`'s sees: a variance recursion's returns, or
    the 20-day volatility when no `volatility` feature gives it (one more row when the
    returns come from closes). A quantile head needs no more."""
    spec = bundle.spec
    features = spec.features
    record = shipped_band(bundle)
    if bundle.quantiles is not None:
        returns = 0
    elif record is not None:
        returns = int(record["params"]["returns"])
    else:
        returns = 0 if "volatility" in features else VOLATILITY_DAYS
    if "log_return" not in features:
        returns = returns + 1 if returns and "close" in features else 0
    return spec.lookback, max(spec.lookback, returns)


def check_window(bundle: Bundle, window, ticker: str = "window") -> np.ndarray:
    """A client's raw window as a float array, or ValueError saying what is wrong with it
    (`plausibility.Refused` with `of_input` when it is implausible)."""
    fewest, most = window_rows(bundle)
    n_features = len(bundle.spec.features)
    try:
        array = np.asarray(window, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"window must be a list of rows of numbers: {exc}") from exc
    if array.ndim != 2 or array.shape[1] != n_features or not fewest <= len(array) <= most:
        rows = str(fewest) if fewest == most else f"{fewest} to {most}"
        extra = (
            ""
            if fewest == most
            else f"; the last {fewest} feed the network, up to {most - fewest} more before "
            "them give the band the returns GET /forecast's band reads"
        )
        raise ValueError(
            f"window has shape {list(array.shape)}, expected {rows} rows (oldest first) of "
            f"{n_features} features {bundle.spec.features}{extra}"
        )
    if not np.isfinite(array).all():
        raise ValueError("window contains NaN or infinite values")
    for j, name in enumerate(bundle.spec.features):
        column = array[:, j]
        if name in POSITIVE_FEATURES and (column <= 0).any():
            raise ValueError(f"window feature {name!r} must be > 0 (a price), got {column.min():g}")
        if name in NON_NEGATIVE_FEATURES and (column < 0).any():
            raise ValueError(f"window feature {name!r} must be >= 0, got {column.min():g}")
        if name in POSITIVE_FEATURES:
            plausibility.check_prices(ticker, f"window feature {name!r}", column, of_input=True)
    if "close" in bundle.spec.features:
        closes = array[:, bundle.spec.features.index("close")]
        plausibility.check_closes(ticker, closes, bundle.metadata, of_input=True)
    scaled = bundle.spec.feature_scaler.transform(array)
    scaler = bundle.spec.feature_scaler
    plausibility.check_scaled(ticker, scaled, bundle.spec.features, scaler, of_input=True)
    return array


def plausible_forecast(
    bundle: Bundle, scaled: np.ndarray, last_close: float | None, ticker: str, closes=None
) -> np.ndarray:
    """The network's scaled output in prices, or `plausibility.Refused` (never served):
    non-finite, non-positive, or implausibly far from the last close."""
    last = None if last_close is None else np.array([last_close])
    forecast = scaled_to_prices(bundle.spec, scaled, last)
    return plausibility.check_forecast(
        ticker, forecast, last_close, bundle.metadata, bundle.spec.horizon, closes
    )


def forecast_window(
    bundle: Bundle, window, ticker: str, last_close: float | None = None
) -> list[dict]:
    """The forecast from a raw (unscaled, price-unit) window of the model's features.
    A target relative to the last close needs that close: the window's `close` feature,
    or `last_close` when the features are scale-free (the recommended default)."""
    raw = check_window(bundle, window, ticker)
    features = bundle.spec.features
    close = last_close
    if "close" in features:
        close = float(raw[-1, features.index("close")])
    if close is not None and not (math.isfinite(close) and close > 0):
        raise ValueError(f"last_close must be a positive price, got {close}")
    if close is None and bundle.spec.target.endswith("_log_return"):
        raise ValueError(
            f"target {bundle.spec.target!r} predicts a return from the last close: send "
            "last_close (the window's features do not include close)"
        )
    if close is not None:
        plausibility.check_prices(ticker, "last_close", [close], of_input=True)
    x = bundle.spec.feature_scaler.transform(raw[-bundle.spec.lookback :]).astype(np.float32)[None]
    scaled = inference.predict(bundle.model, x)  # as forecast_next
    last = None if close is None else np.array([close])
    forecast = plausible_forecast(bundle, scaled, close, ticker)
    grid = quantile_grid(bundle, x, last, ticker)
    if grid is None:
        grid = band_grid(bundle, window_returns(features, raw), forecast, ticker)
    volatility = window_volatility(features, raw)
    return _rows(bundle, ticker, forecast, "window", close, volatility, grid)


def window_returns(features: list[str], raw: np.ndarray) -> np.ndarray | None:
    """A POSTed window's daily log returns, oldest first: its `log_return` feature, else
    its closes' (one fewer); None when it holds neither."""
    if "log_return" in features:
        return raw[:, features.index("log_return")]
    if "close" in features:
        return log_returns(raw[:, features.index("close")])[1:]
    return None


def window_volatility(features: list[str], raw: np.ndarray) -> float | None:
    """The recent volatility at a window's last day, from what the window holds: its
    `volatility` feature, else its daily log returns, else its closes; None if none."""
    if "volatility" in features:
        return float(max(raw[-1, features.index("volatility")], MIN_VOLATILITY))
    if "log_return" in features:
        returns = raw[-VOLATILITY_DAYS:, features.index("log_return")]
        return float(max(np.std(returns, ddof=1), MIN_VOLATILITY)) if len(returns) > 1 else None
    if "close" in features:
        closes = raw[:, features.index("close")]
        return float(recent_volatility(closes, [len(closes) - 1])[0])
    return None


def write_forecasts(data_dir: str | Path, rows: list[dict]) -> Path:
    """One Parquet file per predict run under <data_dir>/forecasts/, written atomically."""
    from tickercast.atomic import atomic_path

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = layout.forecasts_dir(data_dir) / f"forecast-{stamp}-{uuid.uuid4().hex[:6]}.parquet"
    frame = pd.DataFrame(rows)
    frame.insert(0, "created_at", pd.Timestamp.now(tz="UTC"))
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path
