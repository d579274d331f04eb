"""The library's one door into a Prefect run: is there a run, hold a global concurrency
slot, publish a progress artifact. Everything else in `tickercast/` runs without Prefect,
and these helpers do nothing outside a run (Prefect is not even imported then: 2 s saved).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

from tickercast.tickers import slug

GPU_CONCURRENCY_LIMIT = "tickercast-gpu"
"""Name of the Prefect global concurrency limit taken around GPU training
(create it with `prefect gcl create tickercast-gpu --limit 1`; absent = no limit)."""


class RunStopped(RuntimeError):
    """Work given up because the process was asked to stop (SIGTERM or Ctrl-C)."""


_STOP = threading.Event()


def request_stop() -> None:
    """Ask every long-running piece of work in this process (a fit's batches) to stop: a
    signal reaches only the main thread, while training runs in a task's thread."""
    _STOP.set()


def clear_stop() -> None:
    """A new command in this process starts without an earlier command's stop request."""
    _STOP.clear()


def check_stop() -> None:
    """Raise RunStopped when a stop was requested (called between batches)."""
    if _STOP.is_set():
        raise RunStopped("stopped: the process was asked to stop")


def in_prefect_run() -> bool:
    if "prefect.context" not in sys.modules:  # never imported: no run (and no 2 s import)
        return False
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


@contextlib.contextmanager
def gpu_slot(
    device: str, logger: logging.Logger | logging.LoggerAdapter | None = None
) -> Iterator[str]:
    """Hold one slot of the `tickercast-gpu` global concurrency limit while training on a GPU.

    Nothing happens on CPU or outside a Prefect run. A limit that does not exist is skipped
    with a warning (Prefect's non-strict mode), so an unconfigured server never fails a run.
    Yields a sentence saying what was done, for the log.
    """
    logger = logger or logging.getLogger(__name__)
    if device != "gpu":
        yield "no GPU concurrency slot needed on CPU"
        return
    if not in_prefect_run():
        yield "not in a Prefect run: GPU concurrency limit not applied"
        return
    from prefect.concurrency.sync import concurrency

    logger.info("waiting for a slot of concurrency limit %r", GPU_CONCURRENCY_LIMIT)
    with concurrency(GPU_CONCURRENCY_LIMIT, occupy=1, strict=False):
        yield f"holding a slot of concurrency limit {GPU_CONCURRENCY_LIMIT!r} (if it exists)"


def progress(
    artifact: Any, value: float, key: str, description: str, logger: logging.Logger | Any
) -> Any:
    """Create (artifact None) or update a progress artifact at `value` percent; returns its
    id. Watching must never break the work: a failure is logged and the work goes on."""
    try:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if artifact is None:
            return create_progress_artifact(value, key=slug(key)[:100], description=description)
        update_progress_artifact(artifact, value, description=description)
    except Exception as exc:
        logger.warning("progress artifact not updated: %s", exc)
    return artifact
