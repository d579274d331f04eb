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
    from tickercast.modeling.windows import anchors_for

    anchors = anchors_for(pre.preprocessing)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "anchors.npz"
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **anchors)
    counts = {k: int(len(v)) for k, v in anchors.items()}
    get_run_logger().info("%s windows: %s", pre.ticker, counts)
    return Windows(ticker=pre.ticker, anchors=str(path), counts=counts, outputs=outputs(path))
