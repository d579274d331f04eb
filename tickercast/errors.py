"""Error kinds callers branch on, in one pandas-free module: source failures split by what
a caller should do next (retry later, or give up), lake files that cannot be read, and
which failures a later try may not meet (`transient`)."""

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


TRANSIENT = (TransientSourceError, ConnectionError, TimeoutError)
"""Failures worth another try: ours and the standard library's own. A source request is
retried on them (tickercast.market.retry); a scheduled night that failed with one is run
again (tickercast.flows.retries)."""

LOST_WORKER = frozenset({"KilledWorker", "CommClosedError"})
"""Dask's kinds for a task whose worker process died or whose connection dropped: the
task may well finish on a fresh worker. Named, not imported: this module stays free of
Dask."""


def transient_kinds() -> frozenset[str]:
    """The names of `TRANSIENT`'s kinds (and their subclasses: ConnectionResetError, ...)
    and of `LOST_WORKER`: what a one-line failure starts with when a later try may not
    meet it."""
    names: set[str] = set(LOST_WORKER)
    todo: list[type] = list(TRANSIENT)
    while todo:
        kind = todo.pop()
        names.add(kind.__name__)
        todo.extend(kind.__subclasses__())
    return frozenset(names)


def transient(failure: BaseException | str) -> bool:
    """Whether a later try may not meet this failure: an exception of a `TRANSIENT` or
    `LOST_WORKER` kind (or raised from one), or a ticker's one-line failure ("Kind:
    message", as tickercast.fanout writes it) naming such a kind. Anything else (bad
    data, an unknown ticker, a bug) would fail the same way again."""
    if isinstance(failure, str):
        return failure.split(":", 1)[0].strip() in transient_kinds()
    cause: BaseException | None = failure
    while cause is not None:
        if isinstance(cause, TRANSIENT) or type(cause).__name__ in LOST_WORKER:
            return True
        cause = cause.__cause__
    return False
