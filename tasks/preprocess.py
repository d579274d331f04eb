"""The preprocess steps: features, chronological split, train-only scalers and window
anchors; and global mode's shared calendar."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prefect import task
from prefect.logging import get_run_logger

from tickercast.records import Ingested, Preprocessed
from tickercast.sections import PreprocessSettings
from tickercast.splits import SplitDates
from tickercast.tasks.steps import step
from tickercast.tasks.workfiles import outputs

if TYPE_CHECKING:
    from logging import Logger, LoggerAdapter

    from tickercast.modeling.preprocess import Preprocessing


MODULES = ("tickercast.modeling.preprocess", "tickercast.modeling.windows")
"""The library code the preprocess step runs (its cache key follows it)."""


@step("preprocess", MODULES)
def preprocess_step(
    ingested: Ingested,
    section: PreprocessSettings,
    split: SplitDates | None,
    data_dir: str,
    *,
    work: Path,
) -> Preprocessed:
    """Features, chronological split and train-only scalers, saved as arrays + JSON; the
    split by the section's fractions, or by global mode's shared `split` dates. Then the
    window anchors per split (indices only; the data is never copied per window): one
    task, not two, as a Prefect task run costs ~0.15 s of a worker beside the work (a
    second night's ticker is about a second in all)."""
    from tickercast.modeling.preprocess import preprocess, save_preprocessed

    who = f"ticker {ingested.ticker}"
    spec, arrays = preprocess(ingested.prices(), section, who=who, split=split)
    npz, spec_path = save_preprocessed(work, spec, arrays)
    logger = get_run_logger()
    logger.info(
        "%s: %d rows %s..%s -> train %d / val %d / test %d (train ends %s)",
        ingested.ticker,
        spec.n_rows,
        spec.first_day,
        spec.last_day,
        spec.n_train,
        spec.n_val,
        spec.n_test,
        spec.train_end,
    )
    anchors, counts = _windows(ingested.ticker, spec, work, logger)
    return Preprocessed(
        ticker=ingested.ticker,
        arrays=str(npz),
        spec=str(spec_path),
        anchors=str(anchors),
        counts=counts,
        outputs=outputs(npz, spec_path, anchors),
    )


def _windows(
    ticker: str, spec: Preprocessing, work: Path, logger: Logger | LoggerAdapter
) -> tuple[Path, dict[str, int]]:
    """Window anchors per split saved in `work` (anchors.npz), and their counts; windows
    that span a gap in the data are said once (skipped or bridged, by `spec.on_gap`)."""
    from tickercast.atomic import atomic_path
    from tickercast.modeling.windows import anchors_for, describe_gaps, gap_windows

    anchors = anchors_for(spec)
    path = work / "anchors.npz"
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **anchors)
    counts = {k: int(len(v)) for k, v in anchors.items()}
    logger.info("%s windows: %s", ticker, counts)
    spanning = sum(gap_windows(spec).values())
    if spanning:
        split = spec.on_gap == "split"
        counts["gap_skipped" if split else "gap_bridged"] = spanning
        logger.warning(
            "%s: %d window(s) span %s: %s (on_gap=%s)",
            ticker,
            spanning,
            describe_gaps(spec.gaps),
            "skipped" if split else "built across it (bridged)",
            spec.on_gap,
        )
    return path, counts


@task(name="calendar")
def calendar_step(ingested: list[Ingested], section: PreprocessSettings) -> SplitDates:
    """Global mode: train/validation/test boundaries as dates shared by every ticker."""
    from tickercast.modeling.preprocess import shared_split_dates

    dates = shared_split_dates([i.prices() for i in ingested], section)
    get_run_logger().info(
        "global split over %d tickers: train to %s, validation to %s, test after",
        len(ingested),
        dates.train_end,
        dates.val_end,
    )
    return dates
