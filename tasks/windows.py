"""The windows step: anchor indices per split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect.logging import get_run_logger

from tickercast.records import Preprocessed, Windows
from tickercast.tasks.steps import step
from tickercast.tasks.workfiles import outputs


@step("windows", ("tickercast.modeling.windows",))
def windows_step(pre: Preprocessed, data_dir: str, *, work: Path) -> Windows:
    """Window anchors per split (indices only; the data is never copied per window)."""
    from tickercast.atomic import atomic_path
    from tickercast.modeling.windows import anchors_for, describe_gaps, gap_windows

    spec = pre.preprocessing
    anchors = anchors_for(spec)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "anchors.npz"
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **anchors)
    counts = {k: int(len(v)) for k, v in anchors.items()}
    logger = get_run_logger()
    logger.info("%s windows: %s", pre.ticker, counts)
    spanning = sum(gap_windows(spec).values())
    if spanning:  # said once per run: how many windows a gap cost, or that they bridge it
        done = "skipped" if spec.on_gap == "split" else "built across it (bridged)"
        counts[f"gap_{'skipped' if spec.on_gap == 'split' else 'bridged'}"] = spanning
        logger.warning(
            "%s: %d window(s) span %s: %s (on_gap=%s)",
            pre.ticker,
            spanning,
            describe_gaps(spec.gaps),
            done,
            spec.on_gap,
        )
    return Windows(ticker=pre.ticker, anchors=str(path), counts=counts, outputs=outputs(path))
