"""The band a model ships (issue 21): a GARCH-family daily variance recursion, fit once on
the training rows, run over each window's own recent returns, mapped onto the target and
calibrated split-conformally on the validation origins.

Why this shape. On the five sample tickers the 20-day realized-volatility band (the band
the product shipped) is significantly worse than EWMA, GARCH(1,1)-t and GJR-GARCH(1,1)-t
(bench/FORECAST_BANDS.md), and the network's own quantile head does not beat GARCH
(bench/QUANTILE_HEAD.md); so the default band is GJR-GARCH(1,1) with Student-t errors
around the network's (DM-gated, shrunk) median. Its parameters are a small JSON dict
(`fit_params`), kept in metadata, so `predict`, the gate and the SavedModel rebuild the
band without refitting; and the recursion reads only the last `returns` daily log returns
before an origin (lookback + 20), started from the training returns' variance, so the
SavedModel computes the same numbers from the window it is sent
(`tickercast.delivery.servable`). The start is forgotten at the rate beta per day: with
the betas fitted on the sample tickers (0.6 to 0.97) it weighs 1e-18 to 9% after 80 days.
The start is the sample variance, not the fit's long-run variance omega / (1 - alpha -
gamma / 2 - beta) (kept in the record): a near-integrated fit (persistence 0.9999, as
short or calm training spans give) puts that orders of magnitude off.

The recursion (daily log returns r, eps = r - mu):
    s2[t+1] = omega + (alpha + gamma * 1{eps[t] < 0}) * eps[t]^2 + beta * s2[t]
and the k-step forecast (GJR's expected asymmetric term, symmetric errors: gamma / 2):
    s2[t+k] = omega + (alpha + gamma / 2 + beta) * s2[t+k-1]
as `arch` forecasts it (the tests check it against `arch` on the same parameters). A
missing return (NaN, a gap) adds its expectation, (alpha + gamma / 2) * s2. EWMA
(lambda 0.94) is the same recursion with omega = mu = gamma = 0, alpha = 1 - lambda,
beta = lambda; GARCH(1,1)-t has gamma = 0. Pure numpy (and `arch`, imported by a fit).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np

# The bands built from this recursion (tickercast.choices.Band names them all).
RECURSIVE = ("ewma", "garch_t", "gjr_garch_t")
EXTRA_RETURNS = 20  # returns the recursion reads beyond the lookback
MIN_FIT_RETURNS = 250  # fewer training returns: no GARCH fit (EWMA's parameters, noted)
VARIANCE_FLOOR = 1e-8  # a daily variance (1e-4 daily volatility, conformal's floor)
EWMA_LAMBDA = 0.94  # RiskMetrics' daily decay
PERCENT = 100.0  # arch fits percent returns: better scaled for its optimizer


def recursion_returns(lookback: int) -> int:
    """Daily log returns the recursion reads before each origin."""
    return int(lookback) + EXTRA_RETURNS


def log_returns(close) -> np.ndarray:
    """r[t] = log(close[t] / close[t-1]); r[0] and any return of a non-positive or
    missing close are NaN (the recursion takes their expectation)."""
    c = np.asarray(close, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(c > 0, np.log(np.where(c > 0, c, 1.0)), np.nan)
    r = np.concatenate([[np.nan], np.diff(logs)])
    return np.where(np.isfinite(r), r, np.nan)


def ewma_params(returns: np.ndarray, n_returns: int, note: str | None = None) -> dict:
    """RiskMetrics as the recursion's parameters, started at the sample variance."""
    r = returns[np.isfinite(returns)]
    start = float(np.var(r)) if len(r) > 1 else 1e-4
    params = {
        "band": "ewma",
        "mu": 0.0,
        "omega": 0.0,
        "alpha": 1.0 - EWMA_LAMBDA,
        "gamma": 0.0,
        "beta": EWMA_LAMBDA,
        "nu": None,
        "start_variance": max(start, VARIANCE_FLOOR),
        "returns": int(n_returns),
        "fit_returns": int(len(r)),
    }
    return params | ({"note": note} if note else {})


def fit_params(close, first: int, last: int, band: str, n_returns: int) -> dict:
    """The band's parameters from the daily log returns of rows first..last (the training
    rows: the test split is never read), JSON-ready. A fit `arch` cannot make (too few
    returns, a flat series, non-finite or explosive estimates) falls back to EWMA's
    parameters, saying why in `note`."""
    if band not in RECURSIVE:
        raise ValueError(f"band {band!r} is no variance recursion; known: {RECURSIVE}")
    r = log_returns(close)[int(first) + 1 : int(last) + 1]
    r = r[np.isfinite(r)]
    if band == "ewma":
        return ewma_params(r, n_returns)
    if len(r) < MIN_FIT_RETURNS or float(np.std(r)) < 1e-6:
        why = f"{len(r)} training returns (or a flat series): too few for a GARCH fit"
        return ewma_params(r, n_returns, f"{band}: {why}; EWMA (lambda {EWMA_LAMBDA}) instead")
    try:
        params = _arch_fit(r, asymmetric=band == "gjr_garch_t")
    except (ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
        why = f"the arch fit failed ({type(exc).__name__}: {exc})"
        return ewma_params(r, n_returns, f"{band}: {why}; EWMA (lambda {EWMA_LAMBDA}) instead")
    persistence = params["alpha"] + params["gamma"] / 2 + params["beta"]
    bad = not all(math.isfinite(v) for v in params.values()) or persistence >= 1.0
    if bad or params["omega"] <= 0:
        why = f"the fit is not stationary (alpha + gamma/2 + beta = {persistence:.4g})"
        return ewma_params(r, n_returns, f"{band}: {why}; EWMA (lambda {EWMA_LAMBDA}) instead")
    return {
        "band": band,
        **params,
        "long_run_variance": params["omega"] / (1.0 - persistence),
        "start_variance": max(float(np.var(r)), VARIANCE_FLOOR),
        "returns": int(n_returns),
        "fit_returns": int(len(r)),
    }


def _arch_fit(r: np.ndarray, asymmetric: bool) -> dict[str, float]:
    """GARCH(1,1) or GJR-GARCH(1,1), Student-t errors, constant mean, on percent returns;
    the parameters back in daily log-return units."""
    from arch import arch_model

    model = arch_model(
        PERCENT * r, mean="Constant", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t"
    )
    with warnings.catch_warnings():  # convergence chatter: the estimates are checked
        warnings.simplefilter("ignore")
        fitted = model.fit(disp="off", show_warning=False)
    p = fitted.params
    return {
        "mu": float(p["mu"]) / PERCENT,
        "omega": float(p["omega"]) / PERCENT**2,
        "alpha": float(p["alpha[1]"]),
        "gamma": float(p["gamma[1]"]) if asymmetric else 0.0,
        "beta": float(p["beta[1]"]),
        "nu": float(p["nu"]),
    }


def window_returns(close, rows, n_returns: int) -> np.ndarray:
    """(origins, n_returns): the daily log returns up to each origin row, oldest first;
    NaN before the series' first return."""
    r = log_returns(close)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    at = rows[:, None] + np.arange(1 - int(n_returns), 1)[None, :]
    return np.where(at >= 1, r[np.clip(at, 0, len(r) - 1)], np.nan)


def variance_path(params: Mapping, returns: np.ndarray, horizon: int) -> np.ndarray:
    """The daily variance forecasts of days t+1..t+horizon (origins, horizon) from each
    origin's window of returns (origins, n), oldest first: the recursion from the fit's
    start variance, then the k-step forecasts. Finite and >= VARIANCE_FLOOR always."""
    mu, omega, alpha, gamma, beta = (
        float(params[k]) for k in ("mu", "omega", "alpha", "gamma", "beta")
    )
    r = np.asarray(returns, dtype=np.float64)
    s2 = np.full(len(r), float(params["start_variance"]))
    for k in range(r.shape[1]):
        eps = r[:, k] - mu
        seen = np.isfinite(eps)
        e2 = np.where(seen, eps * eps, 0.0)
        shock = np.where(seen, (alpha + gamma * (eps < 0)) * e2, (alpha + gamma / 2) * s2)
        s2 = np.maximum(omega + shock + beta * s2, VARIANCE_FLOOR)
    out = np.empty((len(r), int(horizon)))
    persistence = alpha + gamma / 2 + beta
    for h in range(int(horizon)):
        out[:, h] = s2
        s2 = np.maximum(omega + persistence * s2, VARIANCE_FLOOR)
    return out


def daily_variance(params: Mapping, close, rows, horizon: int) -> np.ndarray:
    """The band's daily variance forecasts at origin rows of `close` (origins, horizon)."""
    return variance_path(params, window_returns(close, rows, params["returns"]), horizon)
