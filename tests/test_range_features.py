"""Inputs that carry volatility: range estimators (Parkinson, Garman-Klass) and |log
return|: causal, and never NaN on the quirky rows ingest keeps (marked missing)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickercast.modeling.features import (
    ABS_TO_SIGMA,
    GARMAN_KLASS_C,
    PARKINSON_DIVISOR,
    build_features,
)

NEW = ["abs_log_return", "parkinson", "garman_klass"]


def _prices(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    days = pd.bdate_range("2020-01-01", periods=n).date
    volume = rng.integers(1_000, 10_000, n)
    return pd.DataFrame(
        {"date": days, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    )


def test_range_estimators_follow_their_formulas():
    p = _prices()
    f = build_features(p, ["parkinson", "garman_klass", "abs_log_return"])
    row = p.iloc[1:].reset_index(drop=True)  # the first day has no return: warm-up
    hl, co = np.log(row["high"] / row["low"]), np.log(row["close"] / row["open"])
    np.testing.assert_allclose(f["parkinson"], np.abs(hl) / PARKINSON_DIVISOR)
    np.testing.assert_allclose(f["garman_klass"], np.sqrt(0.5 * hl**2 - GARMAN_KLASS_C * co**2))
    np.testing.assert_allclose(f["abs_log_return"], np.abs(np.diff(np.log(p["close"]))))


@pytest.mark.parametrize("name", NEW)
def test_no_look_ahead(name):
    """A feature at day t is the same whatever happens after t."""
    p = _prices()
    before = build_features(p, [name])
    changed = p.copy()
    changed.loc[40:, ["open", "high", "low", "close"]] *= 3.0
    after = build_features(changed, [name])
    cut = before["date"] < p["date"].iloc[40]
    np.testing.assert_array_equal(before.loc[cut, name], after.loc[cut[: len(after)], name])


def test_quirky_rows_fall_back_to_the_return_never_nan():
    """Open = 0 (Yahoo's early rows), high < low and fields ingest marked missing (NaN):
    the day is kept, its range estimate replaced by |log return| * sqrt(pi / 2)."""
    p = _prices()
    p.loc[10, "open"] = 0.0
    p.loc[11, ["high", "low"]] = [p.loc[11, "low"], p.loc[11, "high"]]
    p.loc[12, "high"] = np.nan
    p.loc[13, ["open", "high", "low"]] = np.nan
    p.loc[14, "close"] = p.loc[14, "high"] * 1.05  # a close outside the range (GK < 0)
    p.loc[14, "open"] = p.loc[14, "low"]
    f = build_features(p, ["parkinson", "garman_klass"])
    assert len(f) == len(p) and np.isfinite(f[["parkinson", "garman_klass"]]).all().all()
    fallback = np.abs(np.diff(np.log(p["close"].to_numpy()))) * ABS_TO_SIGMA
    for day in (10, 11, 12, 13):
        assert f.loc[day, "garman_klass"] == pytest.approx(fallback[day - 1])
    for day in (11, 12, 13):
        assert f.loc[day, "parkinson"] == pytest.approx(fallback[day - 1])
    hl = np.log(p.loc[10, "high"] / p.loc[10, "low"])
    assert f.loc[10, "parkinson"] == pytest.approx(abs(hl) / PARKINSON_DIVISOR)  # open unused


def test_graph_range_features_equal_pandas_on_quirky_rows():
    """The SavedModel's builders give build_features' values, fallbacks included (a zero
    open is refused by the serving window's checks, so not tested here)."""
    import tensorflow as tf

    from tickercast.delivery.servable import GRAPH_FEATURES

    p = _prices()
    p.loc[11, ["high", "low"]] = [p.loc[11, "low"], p.loc[11, "high"]]
    p.loc[14, "close"] = p.loc[14, "high"] * 1.05
    p.loc[14, "open"] = p.loc[14, "low"]
    cols = {k: tf.constant(p[k].to_numpy(dtype=np.float64)[None]) for k in ("open", "high", "low")}
    cols["close"] = tf.constant(p["close"].to_numpy(dtype=np.float64)[None])
    for name in NEW:
        graph = np.asarray(GRAPH_FEATURES[name][1](cols))[0]
        expected = build_features(p, [name])[name].to_numpy()
        np.testing.assert_allclose(
            graph[-len(expected) :], expected, rtol=1e-9, atol=1e-14, err_msg=name
        )
