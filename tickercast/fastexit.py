"""A process holding TensorFlow exits in a tenth of the time.

Once TensorFlow and Keras are imported, the interpreter's exit takes ~0.9 s on this
machine (~0.04 s with `os._exit`): the garbage collections run while it tears down its
modules walk every object the two libraries keep tracked. Freezing the tracked objects
as the exit begins (`gc.freeze`, at `atexit`) leaves those walks nothing to visit: exit
took ~0.08 s. Everything else the exit does still runs: the other atexit handlers,
module teardown, and the freeing of every object by its reference count; only objects
caught in reference cycles are not collected, as the interpreter never promised they
would be at exit. Measured by bench/worker_exit.py (bench/RESULTS.md `worker_exit`): a
local Dask cluster's close, the last thing a nightly run waits for, went from ~1.1 s
to ~0.1 s.

A local cluster's workers run `dask_setup` (the cluster preloads this module,
tasks/runners.local_cluster_kwargs); processes that import TensorFlow through
`tickercast.quiet.quiet_tensorflow` (the CLI, flows run by hand or by a deployment's
process) call `skip_final_collections` themselves.
"""

from __future__ import annotations

import atexit
import functools
import gc
from typing import Any


@functools.cache
def skip_final_collections() -> None:
    """Freeze the garbage collector's tracked objects when this process exits (once per
    process, however often it is called)."""
    atexit.register(gc.freeze)


def registered() -> bool:
    """Whether this process will freeze its objects at exit."""
    return skip_final_collections.cache_info().currsize > 0


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: a worker started with `--preload tickercast.fastexit` (the
    local cluster's are) exits fast when its cluster closes."""
    skip_final_collections()
