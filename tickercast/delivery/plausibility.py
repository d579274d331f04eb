"""The plausibility gate every served forecast passes (predict, GET /forecast, the page,
POST /predict, and the SavedModel in its graph): never serve a wrong number.

The one threshold (`max_log_move`): a price may move, over `days` trading days, at most
MAX_SIGMAS times the champion's training volatility (std of its training rows' daily log
returns, recorded in the bundle's metadata as `plausibility`) times sqrt(days), and never
less than a factor MIN_FACTOR is allowed. It is applied to

- the window's closes: each daily move of the last HISTORY_DAYS closes (a bad print of
  1,000x the day before is a jump, refused before it becomes an input or a last close);
- the last close against the champion's training close range, over the trading days
  since the training data ended (at most TRADING_YEAR: a champion whose training prices
  are further away than a year's plausible move needs retraining, not extrapolation);
- the forecast against the last valid close, over the horizon;

and every value must be a finite price in (0, MAX_PRICE]. A model input further than
MAX_SCALED training ranges from the training range is refused too (the network's answer
there means nothing). A refusal is a `Refused` (a ValueError) naming ticker and reason.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

MAX_SIGMAS = 10.0  # moves beyond 10 training sigmas (times sqrt(days)) are implausible
MIN_FACTOR = 2.0  # ... but a move within a factor 2 is never refused on these grounds
MAX_PRICE = 1e7  # no listed share trades near it (BRK-A: ~7e5); 1e300 is a bad value
MAX_SCALED = 10.0  # scaled model inputs beyond 10 training ranges outside [0, 1]
HISTORY_DAYS = 60  # recent lake closes whose daily moves are checked
TRADING_YEAR = 252  # the training-range check allows at most a year's move
DEFAULT_VOLATILITY = 0.02  # a typical share's daily log-return std, when nothing is known

NON_FINITE = "non-finite"
NON_POSITIVE = "non-positive"
ABSURD = "absurd price"
JUMP = "implausible jump in the closes"
OUTSIDE_TRAINING = "far outside the training range"
FAR_FROM_CLOSE = "implausibly far from the last close"


class Refused(ValueError):
    """A forecast (or its input) that must not be served: `reason` is one of the names
    above; `of_input` when the client's window is at fault (HTTP 422, else 503)."""

    def __init__(self, ticker: str, reason: str, detail: str, of_input: bool = False):
        self.ticker, self.reason, self.detail, self.of_input = ticker, reason, detail, of_input
        super().__init__(f"ticker {ticker}: forecast refused ({reason}): {detail}")


def max_log_move(volatility: float, days: float) -> float:
    """The largest plausible |log(price ratio)| over `days` trading days (module doc)."""
    spread = MAX_SIGMAS * float(volatility) * math.sqrt(max(float(days), 1.0))
    return max(spread, math.log(MIN_FACTOR))


def training_range(close, train_end: str) -> dict:
    """What the bundle records about its training closes (metadata `plausibility`)."""
    close = np.asarray(close, dtype=np.float64)
    close = close[np.isfinite(close) & (close > 0)]
    returns = np.diff(np.log(close))
    return {
        "close_min": float(close.min()),
        "close_max": float(close.max()),
        "daily_volatility": float(np.std(returns, ddof=1)) if len(returns) > 1 else None,
        "train_end": train_end,
        "threshold": f"max({MAX_SIGMAS:g} * daily_volatility * sqrt(days), log({MIN_FACTOR:g}))",
    }


def _robust_volatility(closes: np.ndarray) -> float | None:
    """Daily log-return std from the median absolute move (a bad print does not inflate it)."""
    closes = closes[np.isfinite(closes) & (closes > 0)]
    if len(closes) < 3:
        return None
    moves = np.abs(np.diff(np.log(closes)))
    return float(np.median(moves) * 1.4826) or None


def volatility(metadata: dict, closes=None) -> float:
    """The champion's training volatility; for bundles that did not record it, a robust
    estimate from `closes`, else DEFAULT_VOLATILITY."""
    recorded = (metadata.get("plausibility") or {}).get("daily_volatility")
    if recorded and math.isfinite(recorded):
        return float(recorded)
    estimate = None if closes is None else _robust_volatility(np.asarray(closes, np.float64))
    return estimate or DEFAULT_VOLATILITY


def _trading_days_since(train_end: str | None, as_of: str | None) -> int:
    if not train_end:
        return 1
    end = as_of or dt.date.today().isoformat()
    try:
        days = int(np.busday_count(str(train_end)[:10], str(end)[:10]))
    except ValueError:
        return 1
    return min(max(days, 1), TRADING_YEAR)


def check_prices(ticker: str, name: str, values, of_input: bool = False) -> None:
    """Every value of a price field is a finite price in (0, MAX_PRICE]."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise Refused(ticker, NON_FINITE, f"{name} holds NaN or infinite values", of_input)
    if (values <= 0).any():
        raise Refused(ticker, NON_POSITIVE, f"{name} must be > 0, got {values.min():g}", of_input)
    if (values > MAX_PRICE).any():
        raise Refused(ticker, ABSURD, f"{name} {values.max():g} is above {MAX_PRICE:g}", of_input)


def check_closes(
    ticker: str,
    closes,
    metadata: dict,
    dates=None,
    as_of: str | None = None,
    of_input: bool = False,
) -> None:
    """The window's recent closes: valid prices, no implausible daily jump, and a last
    close not implausibly far from the champion's training close range."""
    closes = np.asarray(closes, dtype=np.float64)[-HISTORY_DAYS:]
    check_prices(ticker, "close", closes, of_input)
    vol = volatility(metadata, closes)
    limit = max_log_move(vol, 1)
    moves = np.abs(np.diff(np.log(closes)))
    if len(moves) and moves.max() > limit:
        i = int(np.argmax(moves)) + 1
        day = f" on {dates[-len(closes) :][i]}" if dates is not None else f" at row {i + 1}"
        raise Refused(
            ticker,
            JUMP,
            f"close {closes[i]:g}{day} after {closes[i - 1]:g} (x{closes[i] / closes[i - 1]:.3g}; "
            f"at most x{math.exp(limit):.3g} a day for a daily volatility of {vol:.3g})",
            of_input,
        )
    recorded = metadata.get("plausibility") or {}
    if recorded.get("close_min") and recorded.get("close_max"):
        days = _trading_days_since(recorded.get("train_end"), as_of)
        limit = max_log_move(vol, days)
        lo, hi, last = recorded["close_min"], recorded["close_max"], closes[-1]
        if math.log(last / hi) > limit or math.log(lo / last) > limit:
            raise Refused(
                ticker,
                OUTSIDE_TRAINING,
                f"last close {last:g} vs training closes {lo:g}..{hi:g} "
                f"(at most x{math.exp(limit):.3g} away after {days} trading days)",
                of_input,
            )


def check_scaled(ticker: str, scaled, features: list[str], scaler, of_input: bool = False):
    """Model inputs (min-max scaled on training rows) within MAX_SCALED ranges of [0, 1]."""
    scaled = np.asarray(scaled, dtype=np.float64)
    outside = ~(np.abs(scaled - 0.5) <= MAX_SCALED + 0.5)
    if outside.any():
        j = int(np.argwhere(outside)[0][-1])
        raise Refused(
            ticker,
            OUTSIDE_TRAINING,
            f"window feature {features[j]!r} is far outside the range the model was trained "
            f"on ({scaler.min[j]:g}...{scaler.max[j]:g}); refusing to extrapolate",
            of_input,
        )


def check_forecast(
    ticker: str, forecast, last_close: float | None, metadata: dict, horizon: int, closes=None
) -> np.ndarray:
    """The forecast (prices), or Refused: non-finite, non-positive, or further from the
    last valid close than `max_log_move` over the horizon."""
    forecast = np.asarray(forecast, dtype=np.float64)
    if not np.isfinite(forecast).all():
        raise Refused(ticker, NON_FINITE, "the model's forecast is not a finite number")
    if (forecast <= 0).any():
        raise Refused(ticker, NON_POSITIVE, f"the model forecast {forecast.min():g}, not a price")
    if last_close is None:
        return forecast
    limit = max_log_move(volatility(metadata, closes), horizon)
    move = np.abs(np.log(forecast / last_close))
    if move.max() > limit:
        worst = float(forecast.ravel()[int(np.argmax(move))])
        raise Refused(
            ticker,
            FAR_FROM_CLOSE,
            f"forecast {worst:g} vs last close {last_close:g} (at most x{math.exp(limit):.3g} "
            f"over {horizon} day(s))",
        )
    return forecast


def export_limit(metadata: dict, horizon: int) -> float:
    """The forecast's largest plausible log move from the last close, built into the
    SavedModel's graph (inf when the bundle recorded no training volatility)."""
    if not (metadata.get("plausibility") or {}).get("daily_volatility"):
        return math.inf
    return max_log_move(volatility(metadata), horizon)
