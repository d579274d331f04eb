"""How an ingest plans, checks and retries its fetches: `IngestOptions`."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from tickercast.choices import ON_CORRUPT, ON_QUIRK


@dataclass(frozen=True)
class IngestOptions:
    """How a windowed fetch is planned, checked and retried (JSON-ready via `to_dict`)."""

    overlap_days: int = 5  # stored days re-fetched on a rerun (>= 1: an empty answer is an error)
    move_threshold: float = 0.5  # |close_t / close_t-1 - 1| above this, without a split: warn
    tolerance: float = 1e-4  # relative change of an overlapping price that counts as changed
    retries: int = 3  # further attempts after a transient failure
    retry_delay: float = 2.0  # seconds before the first retry; doubles with each one
    max_retry_delay: float = 60.0
    jitter: float = 0.5  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
    # An unreadable stored partition or events file: "reingest" reports it and fetches the
    # ticker again (replacing it), "skip" reports it and leaves the ticker untouched (the
    # run goes on with the others), "fail" fails the ticker and changes nothing.
    on_corrupt: str = "reingest"
    # A row with a valid close but zero, missing or inconsistent other prices (Yahoo's old
    # history): "repair" keeps it with those fields marked missing, "drop" drops it, "fail"
    # refuses the batch; each counted per quirk (market/validate.py, `screen_prices`).
    on_quirk: str = "repair"
    # Rows that would remove days already stored (a shorter CSV, a later start, a refetch
    # missing days) are refused unless this asks for a replacement; the removed days are
    # then counted in the result (`rows_removed`) and a warning.
    replace: bool = False

    def __post_init__(self) -> None:
        if self.on_quirk not in ON_QUIRK:
            raise ValueError(f"on_quirk must be one of {list(ON_QUIRK)}, got {self.on_quirk!r}")
        if self.on_corrupt not in ON_CORRUPT:
            raise ValueError(
                f"on_corrupt must be one of {list(ON_CORRUPT)}, got {self.on_corrupt!r}"
            )
        if self.overlap_days < 1:
            raise ValueError(f"overlap_days must be >= 1, got {self.overlap_days}")
        if self.retries < 0 or self.retry_delay < 0 or self.max_retry_delay < 0:
            raise ValueError("retries and retry delays must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within 0..1, got {self.jitter}")
        if self.move_threshold <= 0 or self.tolerance < 0:
            raise ValueError("move_threshold must be > 0 and tolerance >= 0")

    @classmethod
    def of(cls, value: IngestOptions | Mapping[str, Any] | None) -> IngestOptions:
        """Options from None (defaults), a mapping of some fields, or options themselves."""
        if value is None:
            return cls()
        if isinstance(value, IngestOptions):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown ingest options {unknown}; valid: {sorted(known)}")
        return cls(**dict(value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `retry` (1-based): base * 2**(retry-1), jittered."""
        base = min(self.max_retry_delay, self.retry_delay * 2 ** (retry - 1))
        return base * (1 - self.jitter + 2 * self.jitter * rng())
