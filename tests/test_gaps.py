"""Gaps left by dropped rows are known to windowing (issue 25): split, bridge or refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickercast.market import lake
from tickercast.market.ingest import ingest_ticker
from tickercast.market.sources import load_sample
from tickercast.modeling.preprocess import GapError, preprocess
from tickercast.modeling.windows import anchors_for, gap_windows
from tickercast.sections import PreprocessSettings

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"


def real_rows(n: int, ticker: str = "AAPL") -> pd.DataFrame:
    """The last `n` rows of a real Yahoo export (shared data), or of the bundled sample."""
    path = SHARED / "prices" / f"{ticker}.csv"
    frame = (
        pd.read_csv(path).rename(columns=str.lower).rename(columns={"adj close": "adj_close"})
        if path.is_file()
        else load_sample(ticker).prices
    )
    return frame.dropna().tail(n).reset_index(drop=True)


def write_csv(folder: Path, frame: pd.DataFrame, name: str = "AAPL.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    lines = [
        f"{pd.Timestamp(r.date).date()},{r.open!r},{r.high!r},{r.low!r},{r.close!r},"
        f"{r.adj_close!r},{int(r.volume)}\n"
        for r in frame.itertuples()
    ]
    path.write_text(HEADER + "".join(lines))
    return path


def ingest_csv(tmp_path: Path, frame: pd.DataFrame, **options) -> dict:
    folder = tmp_path / "csv"
    write_csv(folder, frame)
    return ingest_ticker(
        "AAPL", "csv", tmp_path / "data", csv_dir=str(folder), options=options or None
    )


# -- gaps ------------------------------------------------------------------------------------


def gapped_history(tmp_path: Path) -> pd.DataFrame:
    """A real history whose 100 consecutive zero closes were dropped at ingest."""
    frame = real_rows(700)
    frame.loc[300:399, "close"] = 0.0
    result = ingest_csv(tmp_path, frame)
    assert result["dropped_null_rows"] == 100
    return lake.read_partition(tmp_path / "data", "AAPL")


def settings(**changes) -> PreprocessSettings:
    base = dict(start=None, features=["close"], target="close", lookback=20, horizon=5)
    return PreprocessSettings(**{**base, **changes})


def test_windows_never_span_a_gap_unannounced(tmp_path: Path) -> None:
    prices = gapped_history(tmp_path)

    spec, _ = preprocess(prices, settings(), who="ticker AAPL")  # default: split
    assert spec.on_gap == "split" and len(spec.gaps) == 1
    row, before, after, missing = spec.gaps[0]
    assert missing >= 100 and pd.Timestamp(prices["date"].iloc[row + 1]) == pd.Timestamp(after)
    skipped = gap_windows(spec)
    assert sum(skipped.values()) == 20 + 5, "lookback + horizon windows hold the gap"
    built = anchors_for(spec)
    for anchors in built.values():
        assert not np.any((anchors - 20 <= row) & (row <= anchors + 5 - 1))
    total = spec.n_rows - 20 - 5 + 1  # every window that fits, before splitting
    assert sum(len(a) for a in built.values()) < total - 20

    bridged, _ = preprocess(prices, settings(on_gap="bridge"), who="ticker AAPL")
    assert gap_windows(bridged) == skipped
    assert sum(len(a) for a in anchors_for(bridged).values()) > sum(len(a) for a in built.values())

    with pytest.raises(GapError, match=r"ticker AAPL: 1 gap\(s\): .*on_gap=refuse"):
        preprocess(prices, settings(on_gap="refuse"), who="ticker AAPL")


def test_short_holiday_gaps_are_no_gaps(tmp_path: Path) -> None:
    prices = real_rows(2000)  # 2013-2020: weekends, holidays, Hurricane Sandy (2 days)
    spec, _ = preprocess(prices, settings(), who="ticker AAPL")
    assert spec.gaps == []


def test_a_split_left_without_windows_is_refused(tmp_path: Path) -> None:
    prices = gapped_history(tmp_path).iloc[:353]  # the test rows begin at the gap
    with pytest.raises(GapError, match="no test window left"):
        preprocess(prices, settings(lookback=50), who="ticker AAPL")


def test_the_tuning_search_skips_the_windows_retrain_skips(tmp_path: Path) -> None:
    """The search builds its own windows per trial lookback: the same gap rule as retrain
    (`windows.without_gap_windows`), so no trial trains across a gap retrain would skip."""
    from tickercast.modeling.windows import spans_gap
    from tickercast.tuning.data import search_anchors, search_data

    prices = gapped_history(tmp_path)
    arrays, meta = search_data(prices, settings(), who="ticker AAPL")
    assert meta["on_gap"] == "split" and len(meta["gap_rows"]) == 1
    for lookback in (10, 30):  # a trial's own lookback, not the section's
        spec, _ = preprocess(prices, settings(lookback=lookback), who="ticker AAPL")
        got = search_anchors(meta, lookback, arrays["y"])
        for split in ("train", "val"):
            np.testing.assert_array_equal(got[split], anchors_for(spec)[split])
            assert not spans_gap(got[split], np.array(meta["gap_rows"]), lookback, 5).any()
    bridged, bridged_meta = search_data(prices, settings(on_gap="bridge"), who="ticker AAPL")
    wide = search_anchors(bridged_meta, 10, bridged["y"])
    assert len(wide["train"]) == len(search_anchors(meta, 10, arrays["y"])["train"]) + 10 + 5


def test_features_that_read_earlier_rows_never_bridge_a_gap(tmp_path: Path) -> None:
    """A 20-day volatility reads 20 rows back: the windows after a gap start once their
    first input's features read only rows after it (the warm-up after a gap), so every
    built window's inputs equal those computed from the rows after the gap alone."""
    from tickercast.modeling.features import VOLATILITY_WINDOW, build_features

    prices = gapped_history(tmp_path)
    features = ["close", "log_return", "volatility"]
    spec, arrays = preprocess(prices, settings(features=features), who="ticker AAPL")
    assert spec.feature_memory == VOLATILITY_WINDOW
    row = spec.gaps[0][0]
    assert sum(gap_windows(spec).values()) == 20 + 5 - 1 + VOLATILITY_WINDOW
    after = prices[
        pd.to_datetime(prices["date"]) > pd.Timestamp(spec.gaps[0][2]) - pd.Timedelta(1, "D")
    ]
    alone = build_features(after.reset_index(drop=True), features)[features].to_numpy()
    first_alone = row + 1 + VOLATILITY_WINDOW  # feature row of alone's first row
    raw = spec.feature_scaler.inverse(arrays["x"])
    built = np.concatenate(list(anchors_for(spec).values()))
    later = built[built > row]
    assert later.min() - 20 + 1 == first_alone  # the first window after the gap
    for t in later[:50]:
        window = raw[t - 20 + 1 : t + 1]
        np.testing.assert_allclose(
            window, alone[t - 20 + 1 - first_alone : t + 1 - first_alone], rtol=1e-5
        )
    close_only, _ = preprocess(prices, settings(), who="ticker AAPL")
    assert close_only.feature_memory == 1  # as before: one row before the inputs counts


def test_the_gaps_are_on_record_in_the_evaluation_and_the_retrain_report(tmp_path: Path) -> None:
    from tickercast.delivery.report import retrain_report
    from tickercast.modeling.windows import gap_report

    spec, _ = preprocess(gapped_history(tmp_path), settings(), who="ticker AAPL")
    report = gap_report(spec)
    assert report["on_gap"] == "split" and sum(report["windows"].values()) == 25
    assert (
        report["text"].startswith("1 gap(s): ")
        and "25 window(s) span them: skipped" in report["text"]
    )
    metadata = {
        "data": {"first_day": "a", "last_day": "b", "rows": 600, "sha256": "0" * 64},
        "verdict": "v",
        "metrics": {"model": {"rmse": 1.0, "mae": 1.0}, "naive": {"rmse": 1.0, "mae": 1.0}},
        "evaluation": {"gaps": report},
    }
    assert f"- gaps: {report['text']}" in retrain_report("AAPL", "bundle", metadata)
    no_gap, _ = preprocess(real_rows(700), settings(), who="ticker AAPL")
    assert gap_report(no_gap) is None


@pytest.mark.slow  # TensorFlow is imported and a 4-unit LSTM fit for one epoch
def test_training_runs_on_windows_from_both_sides_of_a_gap(tmp_path: Path) -> None:
    from tickercast.modeling.train import train_model
    from tickercast.sections import FitSpec

    spec, arrays = preprocess(gapped_history(tmp_path), settings(), who="ticker AAPL")
    anchors = anchors_for(spec)
    row = spec.gaps[0][0]
    assert (anchors["train"] < row).any() and (anchors["train"] > row).any()
    fit = dict(
        model="lstm", units=[4], dropout=0.0, l2=0.0, learning_rate=1e-2, batch_size=64,
        epochs=1, clipvalue=1.0, patience=10, seed=7, recurrent_dropout=0.0,
        reduce_lr_patience=5, reduce_lr_factor=0.5, device="cpu", mixed_precision=False,
        tensorboard_dir=None,
    )  # fmt: skip
    summary = train_model(arrays, anchors, 20, FitSpec(**fit), tmp_path / "train")
    assert np.isfinite(summary["history"]["loss"]).all()
    assert (tmp_path / "train" / "model.keras").is_file()
