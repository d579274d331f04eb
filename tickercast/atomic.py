"""Atomic file and folder writes: readers see the old content or the new, never half of one."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside `target`; rename it over `target` on success.

    The temporary name starts with '.', which pyarrow's dataset discovery ignores, so a
    crash mid-write never exposes a half-written file and leaves the old one intact.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with tmp_path.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    except OSError as exc:
        wrapped = storage_error(exc, target)
        if wrapped is exc:
            raise
        raise wrapped from exc
    finally:
        tmp_path.unlink(missing_ok=True)


# Errors that say "the storage refused the write" (disk or quota full, file too large,
# read-only or failing device), as opposed to a bug in what was being written.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def storage_error(exc: OSError, target: str | Path, what: str = "") -> OSError:
    """`exc` reworded to name the file and say nothing was replaced, when it is a storage
    failure (disk full, ...); any other error is returned as it is."""
    if exc.errno not in STORAGE_ERRNOS:
        return exc
    reason = os.strerror(exc.errno)
    detail = str(exc.strerror or exc)
    if reason.lower() not in detail.lower():
        detail = f"{reason}: {detail}"
    return OSError(
        exc.errno,
        f"cannot write {what or target}: {detail}; nothing was replaced "
        "(the previous version, if any, is intact)",
    )


def write_json(target: str | Path, obj: object) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def file_lock(path: str | Path, on_wait: Callable[[Path], None] | None = None) -> Iterator[None]:
    """An exclusive advisory lock across processes (released when the holder dies).

    `on_wait(path)` is called once, before blocking, when another holder has it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(path)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
