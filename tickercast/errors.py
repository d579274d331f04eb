"""Error kinds callers branch on, in one pandas-free module: source failures split by what
a caller should do next (retry later, or give up), and lake files that cannot be read."""

from __future__ import annotations


class SourceError(RuntimeError):
    """A price source failed; subclasses say whether retrying can help."""


class TransientSourceError(SourceError):
    """Worth retrying: network trouble, timeouts, HTTP 5xx, rate limiting."""


class PermanentSourceError(SourceError):
    """Retrying will not help: unknown or delisted ticker, no data, HTTP 4xx."""


class CorruptPartitionError(RuntimeError):
    """A lake file that cannot be read back; the message names the file."""


class CorruptSkippedError(CorruptPartitionError):
    """on_corrupt='skip': the ticker was left as it was; the message names the file."""


class HistoryShrinkError(ValueError):
    """A source that would remove days already stored for a ticker (a shorter CSV, a later
    start): refused with the counts unless a replacement is asked for; nothing changed."""
