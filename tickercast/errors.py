"""Source failures split by what a caller should do next: retry later, or give up."""

from __future__ import annotations


class SourceError(RuntimeError):
    """A price source failed; subclasses say whether retrying can help."""


class TransientSourceError(SourceError):
    """Worth retrying: network trouble, timeouts, HTTP 5xx, rate limiting."""


class PermanentSourceError(SourceError):
    """Retrying will not help: unknown or delisted ticker, no data, HTTP 4xx."""
