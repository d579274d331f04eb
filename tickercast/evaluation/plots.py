"""The evaluation's figures (loss, forecast vs actual, residuals, per-fold bars), drawn
headless and written atomically; one figure at a time, as pyplot is not thread-safe."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from tickercast.evaluation.names import MODEL, NAIVE


def _save(fig, path: Path) -> None:
    """PNG via a temporary file renamed into place; the figure is closed either way."""
    import matplotlib.pyplot as plt

    from tickercast.atomic import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


# Matplotlib's pyplot state (font cache, mathtext parser, figure manager) is not
# thread-safe, and tickers' evaluate steps run in parallel threads: one figure at a time.
_PLOT_LOCK = threading.RLock()


def _one_at_a_time(draw):
    @functools.wraps(draw)
    def locked(*args, **kwargs):
        with _PLOT_LOCK:
            return draw(*args, **kwargs)

    return locked


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the page shows a figure at about half its pixel width: text sized for that
    plt.rcParams.update({"font.size": 12, "legend.fontsize": 10, "axes.titlesize": 13})
    return plt


@_one_at_a_time
def plot_loss(history: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], label=label, marker=".")
    ax.set(title=title, xlabel="epoch", ylabel="MSE (scaled)")
    ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


@_one_at_a_time
def plot_forecast(table: pd.DataFrame, path: Path, title: str) -> None:
    """Forecast vs actual, with the conformal bands when the table has them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    dates = table["target_date"]
    for key, alpha in (("95", 0.15), ("80", 0.3)):
        if f"lo_{key}" in table and table[f"lo_{key}"].notna().all():
            ax.fill_between(
                dates,
                table[f"lo_{key}"],
                table[f"hi_{key}"],
                alpha=alpha,
                color="tab:blue",
                lw=0,
                label=f"{key}% conformal interval",
            )
    ax.plot(dates, table["actual"], label="actual", color="black", lw=1.2)
    ax.plot(dates, table[NAIVE], label="naive (last close)", color="tab:orange", lw=2.4, alpha=0.7)
    # on top and dashed: where the model is the last close (shrunk), both stay visible
    ax.plot(dates, table[MODEL], label="model", color="tab:blue", lw=1.4, ls="--", zorder=3)
    ax.set(title=title, xlabel="target day", ylabel="price")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    _save(fig, path)


@_one_at_a_time
def plot_residuals(table: pd.DataFrame, path: Path, title: str) -> None:
    """Histogram of test residuals (forecast - actual, prices): model against naive."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    model_res = table[MODEL] - table["actual"]
    naive_res = table[NAIVE] - table["actual"]
    bins = np.histogram_bin_edges(np.concatenate([model_res, naive_res]), bins=40)
    # naive filled, the model as an outline: two distributions stay two, even when equal
    ax.hist(naive_res, bins=bins, alpha=0.45, label="naive", color="tab:orange")
    ax.hist(model_res, bins=bins, histtype="step", lw=2, label="model", color="tab:blue")
    ax.axvline(0, color="black", lw=0.8)
    ax.set(title=title, xlabel="forecast - actual (price)", ylabel="windows")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


@_one_at_a_time
def plot_folds(folds: list[dict], path: Path, title: str, metric: str = "rmse") -> None:
    """Per-fold `metric` of every forecaster, grouped by fold."""
    plt = _pyplot()
    names = list(folds[0]["metrics"]) if folds else []
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(names), 1)
    xs = np.arange(len(folds))
    for i, name in enumerate(names):
        values = [f["metrics"][name].get(metric) or np.nan for f in folds]
        ax.bar(xs + i * width, values, width, label=name)
    ax.set_xticks(xs + width * (len(names) - 1) / 2)
    ax.set_xticklabels([f"fold {f['fold']}\n{f['test_first_target']}" for f in folds])
    ax.set(title=title, ylabel=f"{metric.upper()} (price)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)
