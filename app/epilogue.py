"""How a run ends in the terminal: per ticker, the forecast and its band, the verdict, the
elapsed time and the next command to try, as the last thing printed.

In a terminal the summary waits for the process's exit (an `atexit` handler registered
before Prefect's, so it runs after Prefect's temporary server has said "Stopping"); in a
pipe it prints at once (stdout and stderr are separate streams there, order is moot).
Tables are drawn with `rich` in a terminal and as aligned plain text elsewhere.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable

from tickercast.delivery.words import forecast_words  # noqa: F401 (the CLI's name for it)
from tickercast.evaluation.formats import aligned

_pending: list[Callable[[], None]] = []
_registered = False
STARTED = time.monotonic()


def deferring() -> bool:
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def install() -> None:
    """Register the exit printer now (before Prefect registers its server's stop)."""
    global _registered
    if deferring() and not _registered:
        _registered = True
        atexit.register(flush)


def later(show: Callable[[], None]) -> None:
    """Run `show` as the run's last output (at exit in a terminal, now elsewhere)."""
    if _registered:
        _pending.append(show)
    else:
        show()


def flush() -> None:
    while _pending:
        _pending.pop(0)()
    sys.stdout.flush()


def elapsed() -> str:
    seconds = int(time.monotonic() - STARTED)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """A table on stdout: rich's in a terminal, aligned plain text in a pipe."""
    if not rows:
        return
    if deferring():
        from rich.console import Console
        from rich.table import Table

        grid = Table(title=title, title_justify="left", show_lines=False)
        for header in headers:
            grid.add_column(header, overflow="fold")
        for row in rows:
            grid.add_row(*map(str, row))
        Console().print(grid)
    else:
        print(title)
        print(aligned(headers, rows))
