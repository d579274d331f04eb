"""TensorFlow's start-up lines (oneDNN banner, CUDA probing, cuInit errors) are not printed
unless asked for: checked in a fresh process, where they would appear."""

from __future__ import annotations

import os
import subprocess
import sys

FIT = """
from tickercast.quiet import quiet_tensorflow
quiet_tensorflow()
import keras, numpy as np
m = keras.Sequential([keras.Input((5, 2)), keras.layers.LSTM(4), keras.layers.Dense(1)])
m.compile("adam", "mse")
m.fit(np.zeros((32, 5, 2)), np.zeros((32, 1)), epochs=1, verbose=0)
print("fitted")
"""


def run(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    clean.pop("TICKERCAST_TF_LOGS", None)
    return subprocess.run(
        [sys.executable, "-c", FIT],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def test_a_fit_prints_nothing_from_tensorflow_by_default():
    quiet = run()
    assert quiet.stdout.strip() == "fitted"
    assert quiet.stderr == "", quiet.stderr


def test_the_lines_come_back_when_asked_for():
    loud = run(TICKERCAST_TF_LOGS="1")
    assert loud.stdout.strip() == "fitted" and loud.stderr  # absl's and TensorFlow's lines
