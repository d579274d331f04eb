"""Objects kept per key for reuse, each leased to one caller at a time.

What the pooled networks (`pool.py`) and the traced prediction twins (`inference.py`)
share: a process keeps the built objects of the last few keys (architectures), hands a
free one to one caller and takes it back when that caller is done; the least recently
used key goes when there are too many.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class FreeList(Generic[T]):
    """Free objects by key, at most `max_keys` keys (least recently used dropped)."""

    def __init__(self, max_keys: int):
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._free: OrderedDict[str, list[T]] = OrderedDict()

    def take(self, key: str) -> T | None:
        """A free object for `key`, now leased to the caller; None when there is none."""
        with self._lock:
            free = self._free.get(key)
            return free.pop() if free else None

    def give_back(self, key: str, item: T) -> None:
        """`item` free again for `key`, the most recently used key."""
        with self._lock:
            self._free.setdefault(key, []).append(item)
            self._free.move_to_end(key)
            while len(self._free) > self.max_keys:
                self._free.popitem(last=False)

    def count(self) -> int:
        """Free objects of every key."""
        with self._lock:
            return sum(len(v) for v in self._free.values())

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
