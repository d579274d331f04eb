"""Progress bars for a person at a terminal: epochs of a fit, folds and refits of a backtest,
trials of a search, tickers of an ingest, each with elapsed and remaining time (rich).

Bars are off unless an entry point turns them on for its process with `session`; the CLI
does when its stderr is a terminal and not CI (`decide`), so deployment runs, workers and CI
keep exactly today's log lines and Prefect progress artifacts. Off, `track` hands back one
shared do-nothing bar and rich is never imported. On, every bar of the process is a line of
one shared rich Progress (one Live display), so branches running in parallel threads each
get their own line instead of fighting over the terminal. The display runs only while a bar
is open; meanwhile stdout/stderr and the logging handlers that write to the terminal
(Prefect's console handler included) are routed through it, so log lines scroll above the
bars instead of garbling them. Bars never replace a log line: they are an addition.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from tickercast.choices import PROGRESS_MODES

ENV = "TICKERCAST_PROGRESS"
"""Environment override: `on`, `off` or `auto` (terminal and not CI); a CLI flag wins."""

SPEED_WINDOW_S = 3600.0
"""Remaining time is estimated from the rate over this window: rich's default (30 s) is
shorter than one epoch of a real fit, which would leave the estimate blank for good."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def decide(
    flag: bool | None,
    env: Mapping[str, str],
    stderr_is_tty: bool,
    worker_processes: bool = False,
) -> bool:
    """Whether to show bars: an explicit flag wins, then `TICKERCAST_PROGRESS`; `auto` (the
    default) means only for a person: stderr is a terminal, not CI (`CI` set, as CI
    services do) and not a dumb terminal. Raises ValueError for an unknown setting.

    `worker_processes` (Dask workers started for the run) also turns `auto` off: they train
    out of the bars' reach and print to the same terminal, which would garble them."""
    if flag is not None:
        return bool(flag)
    raw = env.get(ENV, "")
    mode = raw.strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise ValueError(f"{ENV}={raw!r} is not one of {list(PROGRESS_MODES)}")
    if mode != "auto":
        return mode == "on"
    if _truthy(env.get("CI")) or env.get("TERM") == "dumb" or worker_processes:
        return False
    return bool(stderr_is_tty)


# --- bars ------------------------------------------------------------------------------


class _NullBar:
    """What `track` returns when bars are off: every call does nothing."""

    shown = False

    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, steps: float = 1, description: str | None = None) -> None:
        return None

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        return None


NULL_BAR = _NullBar()


class Bar:
    """One line of the shared display, open between `__enter__` and `__exit__`."""

    shown = True

    def __init__(self, display: _Display, description: str, total: float | None, completed: float):
        self._display, self._task = display, None
        self._args = (description, total, completed)

    def __enter__(self) -> Bar:
        self._task = self._display.add(*self._args)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._display.remove(self._task)
            self._task = None

    def advance(self, steps: float = 1, description: str | None = None) -> None:
        if self._task is not None:
            self._display.advance(self._task, steps, description)

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        if self._task is not None:
            self._display.update(self._task, completed, total, description)


_DISPLAY: _Display | None = None
_OWNER_PID: int | None = None


def _active() -> _Display | None:
    # A forked child (a Dask worker) inherits the globals but not the terminal's display.
    display = _DISPLAY
    if display is None or _OWNER_PID != os.getpid():
        return None
    return display


def enabled() -> bool:
    """Whether bars are on in this process now."""
    return _active() is not None


def track(description: str, total: float | None, completed: float = 0) -> Bar | _NullBar:
    """A bar for `with`: `with track("AAPL epochs", total=10) as bar: bar.advance()`.

    `completed` is where it starts (a resumed fit); the remaining time counts only what is
    done from now. The bar leaves the display when the block ends, normally or not.
    """
    display = _active()
    if display is None:
        return NULL_BAR
    return Bar(display, description, total, completed)


@contextlib.contextmanager
def tally(description: str) -> Iterator[None]:
    """Count one item of a process-wide shared bar named `description` (e.g. each ticker of
    an ingest, whose tasks run in threads). The total is the number of items begun so far;
    the bar leaves the display once every begun item is done."""
    display = _active()
    if display is None:
        yield
        return
    display.tally_begin(description)
    try:
        yield
    finally:
        display.tally_end(description)


@contextlib.contextmanager
def session(on: bool, console: Any = None) -> Iterator[None]:
    """Bars on (when `on`) for this process during the block: what an entry point wraps
    around a command. `console` is the rich Console to draw on (default: stderr); nested
    sessions share the outer one's display."""
    global _DISPLAY, _OWNER_PID
    if not on or _active() is not None:
        yield
        return
    display = _Display(console)
    _DISPLAY, _OWNER_PID = display, os.getpid()
    try:
        yield
    finally:
        _DISPLAY, _OWNER_PID = None, None
        display.close()


# --- the display -----------------------------------------------------------------------


class _Relay(io.TextIOBase):
    """A terminal stream's stand-in while the display runs: each whole line is printed
    above the bars by the display's console, colours kept, long lines soft-wrapped by the
    terminal as before (Prefect's handler prints with soft_wrap too)."""

    def __init__(self, console: Any, original: Any):
        super().__init__()
        self._console, self._original = console, original
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            if lines:
                self._emit(lines)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                self._emit([self._partial])
                self._partial = ""

    def _emit(self, lines: list[str]) -> None:
        from rich.ansi import AnsiDecoder
        from rich.text import Text

        decoder = AnsiDecoder()
        self._console.print(
            Text("\n").join(decoder.decode_line(line) for line in lines), soft_wrap=True
        )

    def isatty(self) -> bool:
        return bool(getattr(self._original, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", None) or "utf-8"


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        obj for obj in logging.Logger.manager.loggerDict.values() if isinstance(obj, logging.Logger)
    ]
    found: dict[int, logging.StreamHandler] = {}
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                found[id(handler)] = handler
    return list(found.values())


class _Display:
    """The process's one rich Progress; started with its first open bar, stopped with its
    last, so nothing is redirected while no bar is shown."""

    def __init__(self, console: Any = None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console if console is not None else Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            speed_estimate_period=SPEED_WINDOW_S,
            redirect_stdout=False,  # _start relays them itself (soft-wrapped)
            redirect_stderr=False,
            refresh_per_second=4,
        )
        self.lock = threading.RLock()
        self.open = 0
        self.closed = False
        self.tallies: dict[str, list] = {}  # description -> [task, begun, done]
        self._rerouted: list[tuple[logging.StreamHandler, Any, Any]] = []
        self._streams: list[tuple[str, Any, _Relay]] = []

    # -- bars
    def add(self, description: str, total: float | None, completed: float) -> Any:
        with self.lock:
            if self.closed:
                return None
            if self.open == 0:
                self._start()
            self.open += 1
            task = self.progress.add_task(description, total=total, completed=completed)
            self.progress.advance(task, 0)  # the first rate sample: time counts from here
            return task

    def remove(self, task: Any) -> None:
        with self.lock:
            if self.closed:
                return
            self.progress.refresh()  # its final state is drawn once before it goes
            self.progress.remove_task(task)
            self.open -= 1
            if self.open == 0:
                self._stop()

    def advance(self, task: Any, steps: float, description: str | None) -> None:
        with self.lock:
            if self.closed:
                return
            if description is not None:
                self.progress.update(task, description=description)
            self.progress.advance(task, steps)
            self.progress.refresh()  # a step is seconds of work: show it now

    def update(
        self, task: Any, completed: float | None, total: float | None, description: str | None
    ) -> None:
        with self.lock:
            if self.closed:
                return
            kwargs: dict[str, Any] = {}
            if completed is not None:
                kwargs["completed"] = completed
            if total is not None:
                kwargs["total"] = total
            if description is not None:
                kwargs["description"] = description
            self.progress.update(task, **kwargs)
            self.progress.refresh()

    def tally_begin(self, description: str) -> None:
        with self.lock:
            entry = self.tallies.get(description)
            if entry is None:
                task = self.add(description, total=1, completed=0)
                if task is not None:
                    self.tallies[description] = [task, 1, 0]
                return
            entry[1] += 1
            self.update(entry[0], None, entry[1], None)

    def tally_end(self, description: str) -> None:
        with self.lock:
            entry = self.tallies.get(description)
            if entry is None:
                return
            entry[2] += 1
            self.advance(entry[0], 1, None)
            if entry[2] >= entry[1]:
                del self.tallies[description]
                self.remove(entry[0])

    # -- the live display
    def _start(self) -> None:
        """Show the bars; route stderr, stdout when it is the terminal too (a piped stdout
        keeps its own output), and the log handlers writing to either, above them."""
        self.progress.start()
        names = ["stderr"]
        if getattr(sys.stdout, "isatty", lambda: False)():
            names.append("stdout")
        for name in names:
            original = getattr(sys, name)
            relay = _Relay(self.console, original)
            setattr(sys, name, relay)
            self._streams.append((name, original, relay))
            for handler in _stream_handlers():
                if handler.stream is not original:
                    continue
                # Prefect's console handler prints through its own rich Console; one bound
                # to no file follows sys.stderr/stdout, which are the relays by now
                rich_console = getattr(handler, "console", None)
                inner = getattr(rich_console, "file", None)
                handler.setStream(relay)
                if inner is original:
                    rich_console.file = relay
                self._rerouted.append((handler, original, inner))

    def _stop(self) -> None:
        for handler, original, inner in reversed(self._rerouted):
            handler.setStream(original)
            if inner is original:
                handler.console.file = original
        self._rerouted.clear()
        for name, original, relay in reversed(self._streams):
            relay.flush()
            if getattr(sys, name) is relay:
                setattr(sys, name, original)
        self._streams.clear()
        self.progress.stop()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.open:
                self._stop()
            self.open = 0
            self.tallies.clear()
