"""A process holding TensorFlow exits without the interpreter's final garbage collections
walking TensorFlow's objects (tickercast.fastexit): checked in fresh processes, at the
very end of their exit, where the frozen objects are counted."""

from __future__ import annotations

import subprocess
import sys

# registered first, so it runs last among the exit handlers: what the exit's final
# collections will find frozen (ignored)
COUNT_AT_EXIT = """
import atexit, gc
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))
"""


def frozen_at_exit(code: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", COUNT_AT_EXIT + code],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    line = [x for x in out.splitlines() if x.startswith("frozen at exit:")]
    return int(line[-1].split(":")[1])


def test_a_process_that_loads_tensorflow_freezes_its_objects_at_exit():
    loaded = "from tickercast.quiet import quiet_tensorflow\nquiet_tensorflow()\n"
    assert frozen_at_exit(loaded) > 100_000  # TensorFlow's and Keras' objects


def test_without_it_nothing_is_frozen():
    assert frozen_at_exit("import json\n") == 0


def test_dask_preload_hook_registers_it():
    code = (
        "from tickercast.fastexit import dask_setup, registered\n"
        "assert not registered()\n"
        "dask_setup(None)\n"
        "assert registered()\n"
    )
    assert frozen_at_exit(code) > 0
