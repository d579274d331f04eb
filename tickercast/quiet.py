"""TensorFlow's start-up chatter is not for users: the oneDNN banner, "Could not find cuda
drivers", the `E0000 ... failed call to cuInit` line on a machine without a GPU.

Most of it is printed by TensorFlow's C++ code *before* absl's logging is initialised, so
no environment variable silences it (`TF_CPP_MIN_LOG_LEVEL` applies only afterwards). The
entry points therefore import TensorFlow once, early, with the process's stderr (file
descriptor 2) pointed at /dev/null for the import alone, and set `TF_CPP_MIN_LOG_LEVEL=3`
for what it logs later. `--debug` or `TICKERCAST_TF_LOGS=1` keeps every line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from tickercast.fastexit import skip_final_collections

ENV = "TICKERCAST_TF_LOGS"  # 1/on/true: TensorFlow's own log lines are shown


@contextlib.contextmanager
def _stderr_discarded() -> Iterator[None]:
    """File descriptor 2 to /dev/null (C++ writes there directly, past sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def tensorflow_logs_wanted(debug: bool = False) -> bool:
    return debug or os.environ.get(ENV, "").lower() in {"1", "on", "true", "yes"}


def quiet_tensorflow(debug: bool = False, *, load: bool = True) -> None:
    """Import TensorFlow now, silently (module doc); a no-op once it is imported, and
    nothing is hidden when its logs are wanted. `load=False` only sets the log level, for
    a process that will not run TensorFlow itself but starts processes that do (they
    inherit it): a flow whose tasks all run on Dask workers. A process that loads it
    exits without the final garbage collections (tickercast.fastexit)."""
    if load:
        skip_final_collections()
    if tensorflow_logs_wanted(debug):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not load or "tensorflow" in sys.modules:
        return
    with _stderr_discarded():
        import tensorflow  # noqa: F401
