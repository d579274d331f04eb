"""What a backtest writes: each file atomically (a reader never sees half of one), one
ticker's rolling-backtest files, and the run folder that gathers every ticker's."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path

import pandas as pd

from tickercast import layout
from tickercast.records import Backtested


def write_files(
    out_dir: Path, files: dict[str, tuple[str, dict | pd.DataFrame]]
) -> dict[str, Path]:
    """Write each `key: (file name, content)` into out_dir, in order and atomically (a
    reader never sees half a file): a frame as Parquet, anything else as JSON.
    Returns {key: path}."""
    from tickercast.atomic import atomic_path, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, (name, content) in files.items():
        path = paths[key] = out_dir / name
        if isinstance(content, pd.DataFrame):
            with atomic_path(path) as tmp:
                content.to_parquet(tmp, index=False)
        else:
            write_json(path, content)
    return paths


def without_table(result: dict) -> dict:
    """A result's JSON-ready part: all but its tables (written as Parquet)."""
    return {k: v for k, v in result.items() if not isinstance(v, pd.DataFrame)}


def metrics_frame(rows: list[dict], ticker: str) -> pd.DataFrame:
    """The metrics rows as metrics.parquet stores them: a ticker column, `lag` nullable."""
    frame = pd.DataFrame(rows)
    frame.insert(0, "ticker", ticker)
    for col in ("lag",):
        frame[col] = frame[col].astype("Int64")
    return frame


def write_rolling(out_dir: Path, result: dict, ticker: str) -> dict[str, Path]:
    """metrics.parquet, forecasts.parquet, distribution.parquet (per-origin band scores
    relative to the last close) and backtest.json of one ticker's backtest."""
    table = result["table"].copy()
    table.insert(0, "ticker", ticker)
    scores = result.get("distribution_scores", pd.DataFrame()).copy()
    if not scores.empty:
        scores.insert(0, "ticker", ticker)
    return write_files(
        out_dir,
        {
            "metrics_parquet": ("metrics.parquet", metrics_frame(result["metrics"], ticker)),
            "forecasts_parquet": ("forecasts.parquet", table),
            "distribution_parquet": ("distribution.parquet", scores),
            "summary_json": ("backtest.json", {"ticker": ticker, **without_table(result)}),
        },
    )


def write_run(data_dir: str | Path, per_ticker: list[Backtested], report: str) -> dict[str, Path]:
    """One folder per backtest run, <data_dir>/backtests/backtest-<UTC>-<id>/, holding every
    ticker's metrics.parquet and forecasts.parquet together and report.md. Assembled in a
    hidden folder and renamed into place, so a reader never sees half a run."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    root = layout.backtests_dir(data_dir)
    final = root / f"backtest-{stamp}-{uuid.uuid4().hex[:6]}"
    staging = root / f".tmp-{final.name}"
    staging.mkdir(parents=True)
    try:
        for key, files in (
            ("metrics", [t.metrics_parquet for t in per_ticker]),
            ("forecasts", [t.forecasts_parquet for t in per_ticker]),
            (
                "distribution",
                [t.distribution_parquet for t in per_ticker if t.distribution_parquet],
            ),
        ):
            frames = [pd.read_parquet(path) for path in files] or [pd.DataFrame()]
            pd.concat(frames, ignore_index=True).to_parquet(staging / f"{key}.parquet", index=False)
        (staging / "report.md").write_text(report)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "folder": final,
        "metrics": final / "metrics.parquet",
        "forecasts": final / "forecasts.parquet",
        "distribution": final / "distribution.parquet",
        "report": final / "report.md",
    }
