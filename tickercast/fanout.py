"""Per-ticker work where one failing ticker never stops the others.

Every flow that works ticker by ticker (retrain, ingest, predict, backtest, tune) settles
its tickers here: `each_ticker` runs (or waits for) each ticker's work and keeps what
happened as an `Outcome`: its value, or its error as one line naming ticker and cause,
or that it was skipped by choice (`on_corrupt=skip`). `Outcomes` then says what the run
as a whole did: the values of the tickers that finished, each failure's one line for
the report and the CLI, and why the run fails (`failure`), which decides its exit status.

Work is anything callable per ticker; a ticker's pipeline of submitted steps is settled
with `settle`, which waits for them in order and raises the first failure: the cause,
not a later step's "upstream failed". Nothing here knows Prefect: a step is anything
with `result()` returning its value or raising its error.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from tickercast.errors import CorruptSkippedError
from tickercast.runcontext import request_stop

T = TypeVar("T")


class Settles(Protocol):
    def result(self) -> Any: ...


class BatchedFailure(Exception):
    """A ticker's failure inside a step that ran several tickers at once (`Share`), raised
    again for that ticker alone; its message is the one line the step already said."""


def one_line(error: BaseException) -> str:
    """'TypeName: first line of the message' (the kind alone when there is none); a
    `BatchedFailure` is its one line as the batched step said it."""
    if isinstance(error, BatchedFailure):
        return str(error)
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def settle(steps: Iterable[Settles | None]) -> Any:
    """Wait for a ticker's steps in pipeline order; the first that failed raises its own
    error (the cause). Returns the last step's value (steps not submitted are None)."""
    value = None
    for step in steps:
        if step is not None:
            value = step.result()
    return value


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What happened to one ticker: its value, or why it failed or was skipped."""

    ticker: str
    value: T | None = None
    error: str | None = None  # one line: "Kind: message"
    skipped: bool = False  # by choice (on_corrupt=skip): reported, not a failure
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def failed(self) -> bool:
        return self.error is not None and not self.skipped


@dataclass(frozen=True)
class Outcomes(Generic[T]):
    """Every ticker's outcome, in the order the tickers were given."""

    items: tuple[Outcome[T], ...]

    def __iter__(self):
        return iter(self.items)

    def values(self) -> dict[str, T]:
        """The finished tickers' values."""
        return {o.ticker: o.value for o in self.items if o.ok}  # type: ignore[misc]

    def failed(self) -> list[Outcome[T]]:
        return [o for o in self.items if o.failed]

    def skipped(self) -> list[Outcome[T]]:
        return [o for o in self.items if o.skipped]

    def errors(self) -> dict[str, str]:
        """The failed tickers' one-line causes."""
        return {o.ticker: o.error for o in self.failed()}  # type: ignore[misc]

    def by_ticker(self) -> dict[str, Any]:
        """Every ticker's value, or {"ticker", "error"} / {"ticker", "skipped"} with its
        one line: a run's per-ticker results, failures included, in the order given."""
        return {
            o.ticker: o.value
            if o.ok
            else {"ticker": o.ticker, "skipped" if o.skipped else "error": o.error}
            for o in self.items
        }

    def failure(self) -> str | None:
        """Why the run fails, or None when it completes: tickers failed (each named with
        its cause), or every ticker was skipped (nothing was done). The ingest flow
        decides with its own `fail_on` instead."""
        failed = self.failed()
        if not failed:
            if self.items and len(self.skipped()) == len(self.items):
                return f"every ticker was skipped: {[o.ticker for o in self.items]}"
            return None
        named = "; ".join(f"{o.ticker}: {o.error}" for o in failed)
        return f"{len(failed)} of {len(self.items)} ticker(s) failed: {named}"


def failures_in(by_ticker: dict[str, Any]) -> dict[str, str]:
    """The failed tickers' one lines in a run's per-ticker results (`Outcomes.by_ticker`,
    the data of the Failed state a flow returns)."""
    return {
        ticker: value["error"]
        for ticker, value in by_ticker.items()
        if isinstance(value, dict) and set(value) == {"ticker", "error"}
    }


def outcome(ticker: str, work: Callable[[str], T]) -> Outcome[T]:
    """`work(ticker)`'s outcome: an exception fails this ticker alone."""
    try:
        return Outcome(ticker, value=work(ticker))
    except CorruptSkippedError as error:  # on_corrupt=skip: the others go on
        return Outcome(ticker, error=str(error).splitlines()[0], skipped=True, exception=error)
    except Exception as error:
        return Outcome(ticker, error=one_line(error), exception=error)
    except BaseException:
        # an interruption while waiting (Ctrl-C, or the SIGTERM Prefect turns into
        # TerminationSignal during a flow): the work in other threads stops too
        request_stop()
        raise


def batch_result(outcomes: Outcomes[T]) -> dict[str, dict[str, Any]]:
    """What a step that ran several tickers returns: `values` of those that finished,
    `errors` of the others (one line each), `skipped` of those skipped by choice;
    `Share` hands each ticker its own part."""
    errors = {o.ticker: o.error for o in outcomes if o.failed}
    skipped = {o.ticker: o.error for o in outcomes if o.skipped}
    return {"values": outcomes.values(), "errors": errors, "skipped": skipped}


_BATCH_VALUES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def batch_value(batch: Settles) -> Any:
    """A batched step's value, read from its future once: a future's `result()` takes
    ~0.24 ms on each call (Prefect reads the final state's result again), and a night of
    500 tickers asks each batch for every ticker's share at every step, ~2,500 times, much
    of it after the night's last task. A failed batch raises on each call (not kept)."""
    try:
        return _BATCH_VALUES[batch]
    except (KeyError, TypeError):  # not read yet, or a future that cannot be a weak key
        pass
    done = batch.result()
    with contextlib.suppress(TypeError):
        _BATCH_VALUES[batch] = done
    return done


@dataclass(frozen=True)
class Share:
    """One ticker's part of a step that ran several tickers (`batch_result`), settled like
    a step of its own: its value (`part` of it, when named), or its failure raised for it
    alone (a skip as `CorruptSkippedError`, so the ticker is reported skipped)."""

    batch: Settles
    ticker: str
    part: str | None = None

    def result(self) -> Any:
        done = batch_value(self.batch)
        if self.ticker in done.get("skipped", {}):
            raise CorruptSkippedError(done["skipped"][self.ticker])
        if self.ticker in done["errors"]:
            raise BatchedFailure(done["errors"][self.ticker])
        value = done["values"][self.ticker]
        return value if self.part is None else value[self.part]


def each_ticker(tickers: Sequence[str], work: Callable[[str], T]) -> Outcomes[T]:
    """Every ticker's outcome of `work`, one ticker's failure never stopping the next.
    Submit concurrent work for all tickers first; `work` then only waits for each."""
    return Outcomes(tuple(outcome(t, work) for t in tickers))
