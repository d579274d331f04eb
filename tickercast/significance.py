"""Diebold–Mariano tests: is one forecast's loss really lower than another's on the same windows?

A metric gap between two forecasters on one test split can be noise.  The Diebold–Mariano (1995)
test asks whether the mean loss differential ``d_t = L(e_a,t) - L(e_b,t)`` is distinguishable from
zero.  Because forecasts are h-step-ahead, consecutive windows share future targets, so their
errors (and ``d_t``) are MA(h-1) dependent; the variance of the mean therefore uses
autocovariances up to lag h-1.  The Harvey–Leybourne–Newbold (1997) correction rescales the
statistic and compares it with Student t(n-1), which keeps the size honest on the few hundred
windows a backtest yields.

Pure numpy/scipy so reports and tests can use it without Prefect or TensorFlow.  Nothing here
raises on small or degenerate samples: results go into reports, so they carry NaN and a ``note``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "ALTERNATIVES",
    "LEVEL",
    "LOSSES",
    "DMResult",
    "KupiecResult",
    "compare",
    "dm_test",
    "dm_test_differential",
    "kupiec_test",
    "format_p",
    "verdict_of",
    "loss_differential",
    "verdict_text",
]

LEVEL = 0.05  # the significance level of every verdict the reports print
LOSSES = ("squared", "absolute")
ALTERNATIVES = ("two-sided", "less", "greater")


@dataclass(frozen=True)
class DMResult:
    """Outcome of one DM/HLN test of forecast A against forecast B.

    ``mean_diff`` is mean(L(e_a) - L(e_b)): negative means A had the lower loss.  ``statistic``
    is the HLN-corrected statistic (t(n-1) under H0).  ``note`` explains NaN/inf results or a
    kernel fallback, so a report can say why a number is missing.
    """

    statistic: float
    p_value: float
    n: int
    horizon: int
    mean_diff: float
    alternative: str
    loss: str
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: non-finite floats (NaN, and ±inf from constant differentials) -> None."""
        return {k: _json_float(v) for k, v in asdict(self).items()}


def _json_float(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    return v


def _as_2d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D (n,) or 2-D (n, k); got shape {a.shape}")
    return a


def loss_differential(actual: Any, pred_a: Any, pred_b: Any, loss: str = "squared") -> np.ndarray:
    """Per-window loss differential ``d_t = L(actual - pred_a) - L(actual - pred_b)``.

    2-D inputs (n windows, k outputs) are averaged over the k columns so there is one ``d`` per
    window: the windows, not the outputs, are the (dependent) observations.  Windows with any NaN
    in any of the three inputs are dropped, so both forecasts are compared on the same windows.
    Forecasts that agree to 12 significant digits count as equal: one number computed two ways
    (naive as the last close, and as a model's zero move mapped back to prices) differs in its
    last bits, and a test must not read that rounding as a systematic difference.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
    y, a, b = _as_2d(actual, "actual"), _as_2d(pred_a, "pred_a"), _as_2d(pred_b, "pred_b")
    if not (y.shape == a.shape == b.shape):
        raise ValueError(f"shape mismatch: actual {y.shape}, pred_a {a.shape}, pred_b {b.shape}")
    keep = ~(np.isnan(y).any(axis=1) | np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1))
    y, a, b = y[keep], a[keep], b[keep]
    b = np.where(np.isclose(a, b, rtol=1e-12, atol=0.0), a, b)
    fn = np.square if loss == "squared" else np.abs
    return (fn(y - a) - fn(y - b)).mean(axis=1)


def _autocov(d: np.ndarray, max_lag: int) -> np.ndarray:
    """gamma_0..gamma_max_lag about the mean with 1/n normalisation (as in DM 1995)."""
    n = d.size
    dev = d - d.mean()
    return np.array([dev[k:] @ dev[: n - k] / n for k in range(max_lag + 1)])


def _hln_factor(n: int, h: int) -> float:
    return (n + 1 - 2 * h + h * (h - 1) / n) / n


def _p_value(stat: float, df: int, alternative: str) -> float:
    if alternative == "less":
        return float(_t().cdf(stat, df))
    if alternative == "greater":
        return float(_t().sf(stat, df))
    return float(min(1.0, 2.0 * _t().sf(abs(stat), df)))


def _t():
    """Student's t (scipy.stats takes 0.6 s to import: only when a p-value is needed)."""
    from scipy import stats

    return stats.t


def dm_test(
    actual: Any,
    pred_a: Any,
    pred_b: Any,
    horizon: int,
    loss: str = "squared",
    alternative: str = "two-sided",
) -> DMResult:
    """Diebold–Mariano test with the HLN small-sample correction.

    H0: equal expected loss.  ``alternative="less"``: A has lower expected loss (A better);
    ``"greater"``: A worse.  Long-run variance of d uses the truncated (rectangular) kernel up to
    lag ``horizon - 1``, matching the MA(h-1) structure of h-step errors; if that estimate is not
    positive (it can be, in small samples) the Bartlett kernel with the same lags is used instead.
    A constant differential gives statistic 0 / p 1 when it is zero, otherwise ±inf with p 0 on
    the side it points to.  Fewer than 2 windows, or ``n <= horizon``, gives NaN and a note.
    """
    d = loss_differential(actual, pred_a, pred_b, loss)
    return dm_test_differential(d, horizon, alternative, loss)


def dm_test_differential(
    d: Any, horizon: int, alternative: str = "two-sided", loss: str = "squared"
) -> DMResult:
    """The Diebold–Mariano/HLN test of a loss-differential series ``d_t = L_a,t - L_b,t``.

    `dm_test` builds ``d`` from errors; any per-window score difference (CRPS, interval
    score, pinball loss, or a pooled per-date mean across tickers) is tested the same way.
    NaN entries are dropped. `loss` only labels the result.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}; got {alternative!r}")
    h = int(horizon)
    if h < 1:
        raise ValueError(f"horizon must be >= 1; got {horizon!r}")
    d = np.asarray(d, dtype=float).ravel()
    d = d[~np.isnan(d)]
    n = int(d.size)
    mean_diff = float(d.mean()) if n else math.nan

    def result(stat: float, p: float, note: str | None = None) -> DMResult:
        return DMResult(float(stat), float(p), n, h, mean_diff, alternative, loss, note)

    if n < 2 or n <= h:
        return result(math.nan, math.nan, f"too few windows: n={n}, need n >= 2 and n > h={h}")

    note = None
    if np.ptp(d) == 0:
        var = 0.0
    else:
        gamma = _autocov(d, h - 1)
        var = (gamma[0] + 2.0 * gamma[1:].sum()) / n
        if var <= 0:
            weights = 1.0 - np.arange(1, h) / h
            var = (gamma[0] + 2.0 * (weights * gamma[1:]).sum()) / n
            note = "truncated-kernel variance not positive; used Bartlett kernel"

    if not var > 0:
        if mean_diff == 0:
            return result(0.0, 1.0, "loss differential identically zero")
        stat = math.copysign(math.inf, mean_diff)
        side_ok = {"two-sided": True, "less": mean_diff < 0, "greater": mean_diff > 0}
        return result(
            stat, 0.0 if side_ok[alternative] else 1.0, "constant nonzero loss differential"
        )

    stat = mean_diff / math.sqrt(var) * math.sqrt(_hln_factor(n, h))
    return result(stat, _p_value(stat, n - 1, alternative), note)


@dataclass(frozen=True)
class KupiecResult:
    """Kupiec's (1995) proportion-of-failures test of an interval's coverage.

    ``misses`` of ``n`` outcomes fell outside a band of nominal coverage ``nominal``;
    ``statistic`` is the likelihood ratio (chi-square, 1 df under H0: the miss rate is
    1 - nominal), ``p_value`` two-sided, ``p_below`` one-sided (H1: coverage below nominal,
    from the signed root of the statistic). NaN when there is nothing to test.
    """

    n: int
    misses: int
    nominal: float
    coverage: float
    statistic: float
    p_value: float
    p_below: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_float(v) for k, v in asdict(self).items()}


def kupiec_test(hits: Any, nominal: float) -> KupiecResult:
    """Kupiec's POF test: did a band that promises `nominal` coverage cover as often as it
    promised? `hits` is one bool per outcome (True = inside the band); NaN entries (not yet
    known) are dropped. Overlapping h-step outcomes are dependent, which this test ignores:
    read its p-value as indicative for h > 1."""
    from scipy import stats

    if not 0 < nominal < 1:
        raise ValueError(f"nominal coverage must be within (0, 1); got {nominal!r}")
    h = np.asarray(hits, dtype=float).ravel()
    h = h[~np.isnan(h)]
    n, misses = int(h.size), int(np.sum(h == 0))
    if n == 0:
        return KupiecResult(0, 0, nominal, math.nan, math.nan, math.nan, math.nan)
    p0, rate = 1.0 - nominal, misses / n

    def loglik(p: float) -> float:
        # x*log(p) + (n-x)*log(1-p), with 0*log(0) = 0
        return float(
            (misses * math.log(p) if misses else 0.0)
            + ((n - misses) * math.log1p(-p) if n - misses else 0.0)
        )

    stat = max(0.0, -2.0 * (loglik(p0) - loglik(rate)))
    p_two = float(stats.chi2.sf(stat, 1))
    signed = math.copysign(math.sqrt(stat), rate - p0)  # > 0: more misses than promised
    p_below = float(stats.norm.sf(signed))
    return KupiecResult(n, misses, nominal, 1.0 - rate, stat, p_two, p_below)


def verdict_of(p_two_sided: float | None, mean_diff: float | None, level: float = LEVEL) -> str:
    """ "better" / "worse" (A than B) when the two-sided p is below `level`, by the sign of the
    mean loss differential; else "indistinguishable" (also when the test could not run)."""
    if p_two_sided is None or mean_diff is None or not math.isfinite(p_two_sided):
        return "indistinguishable"
    if p_two_sided < level and mean_diff != 0:
        return "better" if mean_diff < 0 else "worse"
    return "indistinguishable"


def compare(
    actual: Any,
    model_pred: Any,
    others: Mapping[str, Any],
    horizon: int,
    level: float = 0.05,
    loss: str = "squared",
) -> dict[str, dict[str, Any]]:
    """Test the model against each other forecaster (model is A, the other is B).

    Per name: ``statistic``, ``p_value`` (two-sided), ``p_better`` (one-sided, H1 model better),
    ``p_worse`` (H1 model worse), ``n``, ``mean_diff``, ``note`` and ``verdict``.  The verdict is
    "better"/"worse" when the two-sided p < ``level``, by the sign of ``mean_diff``, else
    "indistinguishable": a single two-sided decision, so picking a side after seeing the data
    cannot halve the p-value.  Values are JSON-safe (non-finite -> None).
    """
    out: dict[str, dict[str, Any]] = {}
    for name, pred in others.items():
        two = dm_test(actual, model_pred, pred, horizon, loss, "two-sided")
        better = dm_test(actual, model_pred, pred, horizon, loss, "less")
        worse = dm_test(actual, model_pred, pred, horizon, loss, "greater")
        row = {
            "statistic": two.statistic,
            "p_value": two.p_value,
            "p_better": better.p_value,
            "p_worse": worse.p_value,
            "n": two.n,
            "mean_diff": two.mean_diff,
            "verdict": verdict_of(two.p_value, two.mean_diff, level),
            "note": two.note,
        }
        out[name] = {k: _json_float(v) for k, v in row.items()}
    return out


def format_p(p: float | None) -> str:
    """How every report prints a p-value: '= 0.041', '< 0.001', or 'n/a' (not testable)."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.2g}"


def verdict_text(name: str, result: DMResult | Mapping[str, Any], level: float = 0.05) -> str:
    """One-line summary, e.g. "beats naive (DM p = 0.012)".

    Accepts a ``DMResult`` (verdict from its p and the sign of ``mean_diff``) or a ``compare``
    row (its ``verdict`` is used).  Untestable results say so instead of guessing.
    """
    if isinstance(result, DMResult):
        p, mean_diff, note = result.p_value, result.mean_diff, result.note
        verdict = verdict_of(p, mean_diff, level)
    else:
        p, note = result.get("p_value"), result.get("note")
        verdict = result.get("verdict") or verdict_of(p, result.get("mean_diff"), level)
    if p is None or not math.isfinite(p):
        return f"not tested against {name} ({note or 'no p-value'})"
    phrase = {
        "better": f"beats {name}",
        "worse": f"worse than {name}",
        "indistinguishable": f"indistinguishable from {name}",
    }[verdict]
    return f"{phrase} (DM p {format_p(p)})"
