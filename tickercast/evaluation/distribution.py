"""Distribution forecasts on the quantile grid `tickercast.choices.QUANTILES`, in prices, and
their scores: is one band really better than another on the same origins? (issue 21)

Every distribution here shares one median (the point forecast it is given) and differs
only in its **scale**: a forecast of the standard deviation of the target's log ratio to
the last close, built from daily log-return variance forecasts mapped onto the target
(`variance_weights`). The scale's level is then set by one split-conformal calibration on
the validation origins, the same for every method (`calibrate`), so every band covers as
promised and a comparison is about sharpness: which scale tracks the market's spread.

Daily variance forecasters (`daily_variance_*`; names and descriptions in
`tickercast.evaluation.baseline_registry`, kind "distribution"):

- `volatility_conformal`: the 20-day realized volatility the product's bands use today
  (`tickercast.evaluation.conformal`), expressed on the grid;
- `ewma`: RiskMetrics exponentially weighted variance, lambda 0.94;
- `garch_t`, `gjr_garch_t`: GARCH(1,1) and GJR-GARCH(1,1) with Student-t errors (`arch`),
  fit on the returns up to a fit's last row, forecasting each origin with that fit's
  parameters and the returns up to the origin (refit on the networks' schedule);
- `unconditional`: one constant scale: the validation residuals' own spread.

Scores (per origin, averaged over the target's outputs, so the DM test sees one loss per
origin): CRPS approximated from the grid by the quantile (pinball) score,
CRPS = 2 * integral over tau of QS_tau, with each grid level weighing the width of its cell
(midpoints between levels, 0 and 1 at the ends): on a normal it reads about 3% low, the
same for every method on the grid; `crps_normal` is the closed form the tests check it
against. The interval (Winkler) score at 80% and 95%, the mean pinball loss, coverage with
Kupiec's test, and Diebold-Mariano (HLN, h-1 lags) on per-origin score differences, per
ticker and pooled across tickers (scores relative to the last close, mean per date).
Pure numpy/scipy (and `arch`, imported when a GARCH is fit): no Prefect, no TensorFlow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from tickercast.choices import QUANTILES
from tickercast.evaluation.conformal import LOG_SPACE
from tickercast.significance import LEVEL, dm_test_differential, format_p, kupiec_test

GRID = np.asarray(QUANTILES, dtype=np.float64)
MEDIAN = int(np.flatnonzero(np.isclose(GRID, 0.5))[0])
# central intervals of the grid: (lower level, upper level) pairs, innermost last
PAIRS: tuple[tuple[int, int], ...] = tuple((i, len(GRID) - 1 - i) for i in range(MEDIAN))
INTERVALS = {"80": (0.1, 0.9), "95": (0.025, 0.975)}  # the scored bands (on the grid)
EWMA_LAMBDA = 0.94  # RiskMetrics' daily decay
VOLATILITY_DAYS = 20  # the product's realized-volatility window (conformal.py's)
SCORES = ("crps", "interval_80", "interval_95", "pinball")
LABELS = {  # how verdicts name each distribution forecaster
    "volatility_conformal": "the 20-day-volatility conformal band",
    "ewma": "EWMA (lambda 0.94)",
    "garch_t": "GARCH(1,1)-t",
    "gjr_garch_t": "GJR-GARCH(1,1)-t",
    "unconditional": "the unconditional band",
}


def grid_index(level: float) -> int:
    """The position of a level on the grid."""
    return int(np.flatnonzero(np.isclose(GRID, level))[0])


def interval_bounds(grid, keys=None) -> dict:
    """Each scored band's (lower, upper) bound read off a grid (..., len(GRID)), for
    `keys` (default: every band of INTERVALS); indexing only, so numpy arrays and
    TensorFlow tensors alike."""
    return {
        key: (grid[..., grid_index(INTERVALS[key][0])], grid[..., grid_index(INTERVALS[key][1])])
        for key in (INTERVALS if keys is None else keys)
    }


# --------------------------------------------------------------------------- targets


def target_weights(target: str, horizon: int, n_outputs: int) -> np.ndarray:
    """W (outputs x horizon) with target_j = sum_s W[j, s] * close[t + 1 + s].

    Lets every path forecaster (naive, drift, moving average) be scored against any
    price-level target: the mean of the next `horizon` closes, the close at t+h, or the
    vector of the next h closes; and maps daily variances onto the target
    (`variance_weights`).
    """
    if n_outputs == horizon and horizon > 1 and "mean" not in target:
        return np.eye(horizon)
    w = np.zeros((n_outputs, horizon))
    if n_outputs != 1:
        raise ValueError(f"target {target!r}: cannot map {n_outputs} outputs onto {horizon} days")
    if "mean" in target:
        w[0, :] = 1.0 / horizon
    else:
        w[0, -1] = 1.0
    return w


def variance_weights(price_weights: np.ndarray) -> np.ndarray:
    """V (outputs x horizon): var(log(target_j / last close)) ~= sum_k V[j, k] * var(r_k),
    r_k the daily log return of day t+k, for uncorrelated returns.

    To first order log(sum_s W[j, s] C_{t+1+s} / C_t) = sum_s W[j, s] sum_{k <= s+1} r_k,
    so r_k weighs the weights of the days on or after it: c_jk = sum_{s >= k-1} W[j, s],
    and its variance weighs c_jk^2. The mean of h closes gives ((h+1-k)/h)^2, the close at
    t+h ones, a vector target per step the days up to that step. Log-return targets are
    the log of these ratios, the same weights."""
    w = np.asarray(price_weights, dtype=np.float64)
    return np.cumsum(w[:, ::-1], axis=1)[:, ::-1] ** 2


def target_scale(daily_variance: np.ndarray, price_weights: np.ndarray) -> np.ndarray:
    """Per origin and output: the forecast standard deviation of log(target / last close),
    from daily log-return variance forecasts (n, horizon)."""
    var = np.asarray(daily_variance, dtype=np.float64) @ variance_weights(price_weights).T
    return np.sqrt(var)


# --------------------------------------------------------------------------- daily variances


def log_returns(close: np.ndarray) -> np.ndarray:
    """r[t] = log(close[t] / close[t-1]); r[0] is NaN."""
    c = np.asarray(close, dtype=np.float64)
    return np.concatenate([[np.nan], np.diff(np.log(c))])


def daily_variance_realized(close, rows, horizon: int, fit_end=None) -> np.ndarray:
    """The product's scale today: the variance of the last 20 daily log returns (ddof 1)
    at each origin, held flat over the horizon (fit_end unused: nothing is fit)."""
    r = pd.Series(log_returns(close))
    var = r.rolling(VOLATILITY_DAYS, min_periods=2).var().to_numpy()
    v = np.maximum(var[np.asarray(rows, dtype=np.int64)], 1e-8)
    return np.repeat(v[:, None], horizon, axis=1)


def daily_variance_ewma(
    close, rows, horizon: int, fit_end=None, lam: float = EWMA_LAMBDA
) -> np.ndarray:
    """RiskMetrics: s2[t+1] = lam * s2[t] + (1 - lam) * r[t]^2, started at the variance of
    the first 20 returns; flat over the horizon (the EWMA's h-step forecast)."""
    r = log_returns(close)[1:]
    s2 = np.empty(len(r) + 1)
    s2[0] = float(np.var(r[:VOLATILITY_DAYS])) if len(r) > 1 else 1e-4
    for t, x in enumerate(r):  # s2[t + 1]: the forecast made after return t (row t + 1)
        s2[t + 1] = lam * s2[t] + (1.0 - lam) * x * x
    v = np.maximum(s2[np.asarray(rows, dtype=np.int64)], 1e-8)
    return np.repeat(v[:, None], horizon, axis=1)


def daily_variance_unconditional(close, rows, horizon: int, fit_end=None) -> np.ndarray:
    """One constant: the scale carries no information, so the calibrated band is the
    validation residuals' own unconditional spread."""
    return np.full((len(np.asarray(rows)), horizon), 1e-4)


def _garch(asym: bool) -> Callable[..., np.ndarray]:
    def forecast(close, rows, horizon: int, fit_end) -> np.ndarray:
        return daily_variance_garch(close, rows, horizon, fit_end, asymmetric=asym)

    forecast.__doc__ = f"{'GJR-' if asym else ''}GARCH(1,1)-t daily variances (see below)."
    return forecast


def daily_variance_garch(
    close, rows, horizon: int, fit_end, asymmetric: bool = False
) -> np.ndarray:
    """GARCH(1,1) (GJR when `asymmetric`) with Student-t errors and a constant mean, fit by
    `arch` on the daily log returns (in percent) up to each origin's `fit_end` row; each
    origin is forecast with its fit's parameters and the returns up to the origin, so one
    fit serves every origin until the next refit (the networks' schedule)."""
    from arch import arch_model

    rows = np.asarray(rows, dtype=np.int64)
    fit_end = np.broadcast_to(np.asarray(fit_end, dtype=np.int64), rows.shape)
    r = 100.0 * log_returns(close)[1 : int(rows.max()) + 1]  # position p holds row p + 1
    model = arch_model(r, mean="Constant", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t")
    out = np.full((len(rows), horizon), np.nan)
    for end in np.unique(fit_end):
        at = fit_end == end
        with warnings.catch_warnings():  # convergence chatter: the fit is used as it is
            warnings.simplefilter("ignore")
            fitted = model.fit(disp="off", last_obs=int(end), show_warning=False)
            start = int(rows[at].min()) - 1
            fc = model.forecast(fitted.params, horizon=horizon, start=start, reindex=False)
        out[at] = np.asarray(fc.variance)[rows[at] - 1 - start]
    return out / 1e4


DAILY_VARIANCE: dict[str, Callable[..., np.ndarray]] = {
    "volatility_conformal": daily_variance_realized,
    "ewma": daily_variance_ewma,
    "garch_t": _garch(False),
    "gjr_garch_t": _garch(True),
    "unconditional": daily_variance_unconditional,
}


def refit_schedule(rows, refit_every: int) -> np.ndarray:
    """Per origin, the last row its fit may read: origins in groups of `refit_every`, each
    group fit on the rows up to its first origin (as the backtests refit the networks)."""
    rows = np.asarray(rows, dtype=np.int64)
    first = np.arange(len(rows)) // max(int(refit_every), 1) * max(int(refit_every), 1)
    return rows[first]


# --------------------------------------------------------------------------- quantiles


def conformal_rank_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil((n+1)*level)-th smallest score (split-conformal's finite-sample quantile);
    the largest score when there are too few (a band then promises a little less)."""
    s = np.sort(scores[np.isfinite(scores)])
    if len(s) == 0:
        return math.nan
    rank = min(max(math.ceil((len(s) + 1) * level), 1), len(s))
    return float(s[rank - 1])


def calibrate(actual, median, scale) -> np.ndarray:
    """Split-conformal on the validation origins, the same for every method: per output and
    central interval of the grid (95%, 90%, 80%, 50%), the conformal quantile of the
    standardized absolute log residuals |log(actual / median)| / scale. (outputs, pairs)."""
    a, m, s = (np.asarray(v, dtype=np.float64) for v in (actual, median, scale))
    z = np.abs(np.log(a / m)) / s
    coverage = [GRID[hi] - GRID[lo] for lo, hi in PAIRS]
    return np.array(
        [[conformal_rank_quantile(z[:, j], c) for c in coverage] for j in range(z.shape[1])]
    )


def nested(calibration: np.ndarray) -> np.ndarray:
    """Calibrated quantiles (outputs, pairs; outermost first) made nested: an outer band
    never narrower than an inner one."""
    return np.maximum.accumulate(np.asarray(calibration)[:, ::-1], axis=1)[:, ::-1]


def band_quantiles(median, scale, calibration: np.ndarray) -> np.ndarray:
    """The grid in prices, (n, outputs, len(QUANTILES)): median * exp(-+ q * scale) for
    each central interval; the median is the point forecast. Never crossing: the conformal
    quantiles grow with the interval's coverage and exp is increasing."""
    m = np.asarray(median, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float64)
    q = nested(calibration)
    out = np.empty((*m.shape, len(GRID)))
    out[..., MEDIAN] = m
    for p, (lo, hi) in enumerate(PAIRS):
        out[..., lo] = m * np.exp(-q[:, p] * s)
        out[..., hi] = m * np.exp(q[:, p] * s)
    return out


def calibrated_band(
    variance: Callable[..., np.ndarray],
    close: np.ndarray,
    price_weights: np.ndarray,
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
    forecast: tuple[np.ndarray, np.ndarray],
    fit_end: int | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One daily variance forecaster's grid at the forecast origins, in prices, and its
    calibration (`calibrate`'s quantiles, what `calibration_record` stores).

    `calibration` = (rows, actual, median) of the validation origins, `forecast` = (rows,
    median) of the scored origins; `fit_end` the last row each fit may read (one value, or
    per validation-then-forecast origin)."""
    cal_rows, cal_actual, cal_median = calibration
    rows, median = forecast
    both = np.concatenate([np.asarray(cal_rows), np.asarray(rows)]).astype(np.int64)
    ends = np.broadcast_to(np.asarray(fit_end, dtype=np.int64), both.shape)
    daily = variance(close, both, price_weights.shape[1], ends)
    scale = target_scale(daily, price_weights)
    q = calibrate(cal_actual, cal_median, scale[: len(cal_rows)])
    return band_quantiles(median, scale[len(cal_rows) :], q), q


def baseline_quantiles(
    variances: Mapping[str, Callable[..., np.ndarray]],
    close: np.ndarray,
    price_weights: np.ndarray,
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
    forecast: tuple[np.ndarray, np.ndarray],
    fit_end: int | np.ndarray,
) -> dict[str, np.ndarray]:
    """Each distribution baseline's grid at the forecast origins, in prices (`variances`:
    name -> its daily variance forecaster, the registry's entries; the rest as in
    `calibrated_band`). Every method gets the same median and the same calibration; only
    its scale differs."""
    return {
        name: calibrated_band(variance, close, price_weights, calibration, forecast, fit_end)[0]
        for name, variance in variances.items()
    }


def sort_quantiles(q: np.ndarray) -> np.ndarray:
    """A grid forced monotone along its last axis (a guard for outside forecasts)."""
    return np.sort(np.asarray(q, dtype=np.float64), axis=-1)


# --------------------------------------------------------------------------- scores


def _cell_weights() -> np.ndarray:
    edges = np.concatenate([[0.0], (GRID[1:] + GRID[:-1]) / 2.0, [1.0]])
    return np.diff(edges)


CELL_WEIGHTS = _cell_weights()


def pinball(actual, quantiles) -> np.ndarray:
    """Quantile (pinball) loss per level: (1{y < q} - tau) (q - y); (n, outputs, levels)."""
    y = np.asarray(actual, dtype=np.float64)[..., None]
    q = np.asarray(quantiles, dtype=np.float64)
    return ((y < q).astype(np.float64) - GRID) * (q - y)


def crps_grid(actual, quantiles) -> np.ndarray:
    """CRPS from the grid: 2 * sum_tau w_tau QS_tau (cell weights, see the module); (n, out)."""
    return 2.0 * pinball(actual, quantiles) @ CELL_WEIGHTS


def crps_normal(actual, mu, sigma) -> np.ndarray:
    """The closed-form CRPS of N(mu, sigma^2) (Gneiting & Raftery 2007)."""
    from scipy import stats

    z = (np.asarray(actual) - mu) / sigma
    return sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))


def interval_score(actual, lo, hi, level: float) -> np.ndarray:
    """Winkler's interval score: width, plus 2/alpha times any miss (alpha = 1 - level)."""
    y, lo, hi = (np.asarray(v, dtype=np.float64) for v in (actual, lo, hi))
    alpha = 1.0 - level
    return (hi - lo) + 2.0 / alpha * (np.maximum(lo - y, 0) + np.maximum(y - hi, 0))


def per_origin_scores(actual, quantiles) -> dict[str, np.ndarray]:
    """One value per origin (mean over outputs) of every score, and the band hits."""
    y = np.asarray(actual, dtype=np.float64).reshape(len(actual), -1)
    q = np.asarray(quantiles, dtype=np.float64).reshape(len(y), y.shape[1], len(GRID))
    out = {"crps": crps_grid(y, q).mean(axis=1), "pinball": pinball(y, q).mean(axis=(1, 2))}
    for key, (lo, hi) in INTERVALS.items():
        lo_q, hi_q = q[..., grid_index(lo)], q[..., grid_index(hi)]
        out[f"interval_{key}"] = interval_score(y, lo_q, hi_q, hi - lo).mean(axis=1)
        out[f"hits_{key}"] = (y >= lo_q) & (y <= hi_q)  # (n, outputs)
    return out


def summary(actual, quantiles) -> dict:
    """Mean scores, coverage per band with Kupiec's test (all outputs' hits)."""
    s = per_origin_scores(actual, quantiles)
    out: dict = {k: float(np.nanmean(s[k])) for k in SCORES}
    for key, (lo, hi) in INTERVALS.items():
        test = kupiec_test(s[f"hits_{key}"].ravel(), hi - lo)
        out[f"coverage_{key}"] = test.coverage
        out[f"kupiec_p_{key}"] = test.p_value
    return out


# --------------------------------------------------------------------------- verdicts


def label(name: str) -> str:
    return LABELS.get(name, name)


def verdict_words(verdict: str, other: str, p: float | None, same_coverage: bool) -> str:
    """One line in words, e.g. "bands sharper than GARCH(1,1)-t at the same coverage
    (DM p = 0.003)"; the p-value is the CRPS test's."""
    text = f"(DM p {format_p(p)})"
    if verdict == "better":
        if same_coverage:
            return f"bands sharper than {label(other)} at the same coverage {text}"
        return f"better than {label(other)} by CRPS {text}"
    if verdict == "worse":
        return f"worse than {label(other)} {text}"
    return f"indistinguishable from {label(other)} {text}"


def dm_verdict(d: np.ndarray, horizon: int) -> dict:
    """DM/HLN on a per-origin score difference (negative: the first is better): two-sided
    p, mean difference and the verdict at the reports' level."""
    r = dm_test_differential(d, horizon)
    verdict = "indistinguishable"
    if math.isfinite(r.p_value) and r.p_value < LEVEL and r.mean_diff != 0:
        verdict = "better" if r.mean_diff < 0 else "worse"
    return {"p": _finite(r.p_value), "mean_diff": _finite(r.mean_diff), "verdict": verdict}


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def compare(
    actual,
    forecasts: Mapping[str, np.ndarray],
    reference: str,
    horizon: int,
) -> dict[str, dict]:
    """Scores of every forecaster, and for each other one the DM/HLN test of `reference`
    against it on each score's per-origin differences (reference minus other: negative is
    better), with the CRPS verdict in words. {name: {scores..., "dm": {score: test},
    "verdict", "verdict_text"}}."""
    scored = {n: per_origin_scores(actual, q) for n, q in forecasts.items()}
    out = {n: summary(actual, q) for n, q in forecasts.items()}
    ref = scored[reference]
    for name, s in scored.items():
        if name == reference:
            continue
        tests = {k: dm_verdict(ref[k] - s[k], horizon) for k in SCORES}
        crps = tests["crps"]
        out[name]["dm"] = tests
        out[name]["verdict"] = crps["verdict"]
        same = same_coverage(out[reference], out[name])
        out[name]["verdict_text"] = verdict_words(crps["verdict"], name, crps["p"], same)
    return out


COVERAGE_TOLERANCE = 0.02  # "the same coverage": within 2 points on both bands


def same_coverage(a: Mapping, b: Mapping) -> bool:
    """Two forecasters' bands cover alike: within COVERAGE_TOLERANCE on the 80% and the 95%
    band (each one's own Kupiec test is reported beside it)."""
    gaps = [abs((a.get(f"coverage_{k}") or 0) - (b.get(f"coverage_{k}") or 9)) for k in INTERVALS]
    return max(gaps) <= COVERAGE_TOLERANCE


def pooled(
    frames: Mapping[str, pd.DataFrame],
    reference: str,
    others: Sequence[str],
    horizon: int,
    same_coverage: bool = False,
) -> dict[str, dict]:
    """Across tickers: per ticker a frame of per-origin scores (columns `date`, and
    `<name>_<score>` relative to the last close, so every ticker weighs alike); per date the
    mean difference over the tickers forecasting it, DM/HLN on that series. `same_coverage`:
    whether the caller found every ticker's bands covering as promised (the wording)."""
    rows = []
    for frame in frames.values():
        f = frame.set_index("date")
        rows.append(
            pd.DataFrame(
                {
                    (name, k): f[f"{reference}_{k}"] - f[f"{name}_{k}"]
                    for name in others
                    for k in SCORES
                }
            )
        )
    if not rows:
        return {}
    by_date = pd.concat(rows).groupby(level=0).mean().sort_index()
    out = {}
    for name in others:
        tests = {k: dm_verdict(by_date[(name, k)].to_numpy(), horizon) for k in SCORES}
        out[name] = {
            "dm": tests,
            "verdict": tests["crps"]["verdict"],
            "verdict_text": verdict_words(
                tests["crps"]["verdict"], name, tests["crps"]["p"], same_coverage
            ),
            "dates": int(len(by_date)),
        }
    return out


def relative_scores(actual, last_close, forecasts: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per origin, every forecaster's scores divided by the last close (`<name>_<score>`):
    what `pooled` averages across tickers."""
    last = np.asarray(last_close, dtype=np.float64)
    cols = {}
    for name, q in forecasts.items():
        s = per_origin_scores(actual, q)
        for k in SCORES:
            cols[f"{name}_{k}"] = s[k] / last
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------- judging a model


LEGACY_BAND = "volatility_conformal"  # the band of a record without parameters (before the
# shipped band was a setting) and of the tutorial preset


def model_band(
    band: str,
    close: np.ndarray,
    price_weights: np.ndarray,
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
    forecast: tuple[np.ndarray, np.ndarray],
    fit_rows: tuple[int, int],
    lookback: int,
) -> tuple[np.ndarray, dict]:
    """The band a model ships around its median (the config's `band`): its grid at the
    forecast origins, in prices, and the record that rebuilds it (`calibration_record`).

    A variance recursion (`garch_band.RECURSIVE`) is fit on rows `fit_rows` (first, last:
    the training rows) and run over the `lookback + 20` returns before each origin, its
    parameters kept in the record; the others read the closes alone. Either way the
    scale's level is set on the validation origins (`calibration`, as `calibrated_band`)."""
    from tickercast.evaluation import garch_band

    params = None
    variance = DAILY_VARIANCE[band]
    if band in garch_band.RECURSIVE:
        n_returns = garch_band.recursion_returns(lookback)
        params = garch_band.fit_params(close, fit_rows[0], fit_rows[1], band, n_returns)

        def variance(c, rows, horizon, fit_end=None):
            return garch_band.daily_variance(params, c, rows, horizon)

    grid, q = calibrated_band(variance, close, price_weights, calibration, forecast, fit_rows[1])
    return grid, calibration_record(q, len(calibration[0]), band, params)


def band_scale(record: Mapping, close, rows, price_weights) -> np.ndarray:
    """A recorded band's scale (origins, outputs) at origin rows of `close`: its fitted
    recursion's (`params`), else its scale's daily variance from the closes alone."""
    horizon = price_weights.shape[1]
    if record.get("params"):
        from tickercast.evaluation.garch_band import daily_variance

        daily = daily_variance(record["params"], close, rows, horizon)
    else:
        daily = DAILY_VARIANCE[record.get("scale", LEGACY_BAND)](close, rows, horizon, None)
    return target_scale(daily, price_weights)


def band_from_returns(record: Mapping, returns, median, price_weights) -> np.ndarray:
    """A recorded variance-recursion band (its `params`) from windows of daily log returns
    (n, k), oldest first, the latest ending at each origin: what `predict` and the
    SavedModel compute from a window. Fewer than the recursion's returns are taken as
    missing before the first (their expectation), as `garch_band.window_returns` gives."""
    from tickercast.evaluation.garch_band import variance_path

    params = record["params"]
    n_returns = int(params["returns"])
    r = np.asarray(returns, dtype=np.float64)
    r = r.reshape(len(np.asarray(median)), -1)[:, -n_returns:]
    r = np.concatenate([np.full((len(r), n_returns - r.shape[1]), np.nan), r], axis=1)
    daily = variance_path(params, r, price_weights.shape[1])
    scale = target_scale(daily, price_weights)
    return band_quantiles(median, scale, np.asarray(record["q"], dtype=np.float64))


def rebuild_band(record: Mapping, close, rows, median, price_weights) -> np.ndarray:
    """A model's recorded band (`calibration_record`) at new origins: its scale there, its
    calibration. What the gate and predict use for a model without a quantile head."""
    q = np.asarray(record["q"], dtype=np.float64)
    return band_quantiles(median, band_scale(record, close, rows, price_weights), q)


def calibration_record(
    q: np.ndarray, n: int, scale: str = LEGACY_BAND, params: Mapping | None = None
) -> dict:
    """What rebuilds a calibrated band: its scale's name, the conformal quantiles per
    output and central interval (pairs of grid levels, outermost first) and, for a fitted
    variance recursion, its parameters (`garch_band.fit_params`)."""
    record = {
        "scale": scale,
        "pairs": [[float(GRID[lo]), float(GRID[hi])] for lo, hi in PAIRS],
        "q": np.asarray(q, dtype=np.float64).tolist(),
        "n_calibration": int(n),
    }
    return record | ({"params": dict(params)} if params else {})


def band_intervals(model: Mapping, grid: np.ndarray | None, actual) -> dict[str, dict]:
    """A shipped variance-recursion band (`model`: the distribution record's `model`) as
    the 80%/95% intervals metadata records (the conformal quantiles of its grid's pairs,
    per output, its scale, test coverage); {} for any other band (the 20-day volatility
    band keeps `conformal.calibrate`'s intervals, which are the same band) or grid."""
    record = model.get("calibration") or {}
    if grid is None or not record.get("params"):
        return {}
    q = nested(np.asarray(record["q"], dtype=np.float64))
    y = np.asarray(actual, dtype=np.float64).reshape(grid.shape[:2])
    out = {}
    for key, (lower, upper) in interval_bounds(grid).items():
        lo, hi = INTERVALS[key]
        pair = [GRID[a] for a, _ in PAIRS].index(GRID[grid_index(lo)])
        out[key] = {
            "nominal": round(hi - lo, 6),
            "q": q[:, pair].tolist(),
            "n_calibration": record["n_calibration"],
            "space": LOG_SPACE,
            "scale": record["scale"],
            "coverage_test": float(np.mean((y >= lower) & (y <= upper))),
        }
    return out


def judge(
    actual,
    model: np.ndarray,
    baselines: Mapping[str, np.ndarray],
    horizon: int,
    reference: str = "model",
) -> dict:
    """The model's grid against every baseline's on the same origins: scores, DM tests on
    per-origin differences, verdict lines in words, and each one's per-origin CRPS
    (`crps`, arrays: for tables, not JSON)."""
    forecasts = {reference: model, **baselines}
    table = compare(actual, forecasts, reference, horizon)
    for name, grid in baselines.items():  # the model's band may be a baseline's own
        if name in table and np.array_equal(grid, model, equal_nan=True):
            table[name]["verdict_text"] = f"the same band as {label(name)}"
    lines = [table[n]["verdict_text"] for n in baselines if "verdict_text" in table[n]]
    crps = {n: per_origin_scores(actual, q)["crps"] for n, q in forecasts.items()}
    return {"metrics": table, "verdicts": lines, "crps": crps}


def quantile_columns(quantiles: np.ndarray, prefix: str = "q") -> dict[str, np.ndarray]:
    """Table columns of the first output's grid: `q_0.025` ... `q_0.975` (prices)."""
    q = np.asarray(quantiles, dtype=np.float64)
    return {f"{prefix}_{level:g}": q[:, 0, i] for i, level in enumerate(GRID)}


def grid_fields(grid: np.ndarray) -> dict:
    """One origin's grid as JSON fields (what a forecast row, a page's fan chart and
    metadata read): `quantile_levels` (the grid) and `quantiles`, one list of prices per
    output, in the grid's order (never decreasing)."""
    q = np.asarray(grid, dtype=np.float64).reshape(-1, len(GRID))
    return {"quantile_levels": [float(x) for x in GRID], "quantiles": q.tolist()}
