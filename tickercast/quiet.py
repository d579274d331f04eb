"""A quiet terminal: TensorFlow's start-up chatter silenced before TensorFlow loads.

TensorFlow prints, on every process that imports it, a oneDNN banner, "Could not find
cuda drivers" (twice), a CPU-instruction notice and, on a machine without a GPU, an
`E0000 ... failed call to cuInit` error line. None of it is for users: `TF_CPP_MIN_LOG_LEVEL`
3 silences what TensorFlow's own logging prints, but the lines XLA writes through absl
before absl is initialised ignore it, so the first import of `tensorflow` (or `keras`)
runs with file descriptor 2 read through a filter that drops exactly those lines and
passes everything else on at once. Python-side, the `absl` and `tensorflow` loggers keep
their warnings and errors but lose their info chatter.

`install()` is called by the CLI (app/cli.py) and by the task modules (tasks/__init__.py,
so Dask worker and deployment processes are quiet too). `--debug` or
`TICKERCAST_TF_LOGS=1` leaves everything as TensorFlow prints it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import threading

ENV = "TICKERCAST_TF_LOGS"
# The lines TensorFlow/XLA print at start-up that say nothing a user can act on.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE]\d{4} [\d:. ]+\d+ (port\.cc|cudart_stub\.cc|cpu_feature_guard\.cc|"
    r"cuda_platform\.cc|cuda_executor\.cc|cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc|"
    r"cuda_diagnostics\.cc|computation_placer\.cc|gpu_device\.cc|dso_loader\.cc)"
    r"|To enable the following instructions: .*rebuild TensorFlow)"
)
PREFIXES = ("WARNING: All log", "I0", "W0", "E0", "To enable the following")
_installed = False


def wanted(debug: bool = False) -> bool:
    """Whether TensorFlow's logs are wanted (--debug, or TICKERCAST_TF_LOGS=1)."""
    return debug or os.environ.get(ENV, "").lower() in ("1", "true", "on", "yes")


def install(debug: bool = False) -> None:
    """Silence TensorFlow's start-up noise in this process and its children (unless
    `debug` or TICKERCAST_TF_LOGS=1, which is then set for the children too). Idempotent;
    a no-op once TensorFlow is already loaded."""
    global _installed
    if wanted(debug):
        os.environ[ENV] = "1"
        return
    if _installed:
        return
    _installed = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("absl", "tensorflow", "h5py._conv"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _FirstImport())


def is_noise(line: str) -> bool:
    return bool(NOISE.match(line))


class _Filter:
    """File descriptor 2 through a pipe while it is installed: complete lines that are
    noise are dropped, everything else (partial lines too, e.g. progress bars) goes on
    to the real stderr as soon as it is read."""

    def __init__(self) -> None:
        self.saved = os.dup(2)
        read, write = os.pipe()
        self.read = read
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._pump, name="tf-quiet", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        pending = b""
        while chunk := os.read(self.read, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = [line + b"\n" for line in lines if not is_noise(line.decode(errors="replace"))]
            text = pending.decode(errors="replace")
            if pending and not any(p.startswith(text[:16]) or text.startswith(p) for p in PREFIXES):
                out.append(pending)
                pending = b""
            if out:
                os.write(self.saved, b"".join(out))
        if pending and not is_noise(pending.decode(errors="replace")):
            os.write(self.saved, pending)

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's last write end: the pump drains and ends
        self.thread.join(timeout=5)
        os.close(self.read)
        os.close(self.saved)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        quiet = _Filter()
        try:
            self.inner.exec_module(module)
            import tensorflow as tf  # keras imports it; its devices load on first use

            tf.config.list_physical_devices()  # the cuInit probe, while filtered
        finally:
            quiet.close()
            module.__loader__ = module.__spec__.loader = self.inner

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _FirstImport(importlib.abc.MetaPathFinder):
    """Runs the first import of `tensorflow` or `keras` through `_Filter`, then leaves."""

    def find_spec(self, name, path, target=None):
        if name not in ("tensorflow", "keras"):
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec
