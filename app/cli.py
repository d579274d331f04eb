"""`tickercast` command line: options generated from the config model, one line on failure.

Heavy imports (Prefect, TensorFlow) happen only once a command runs, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from tickercast import progress
from tickercast.app import epilogue
from tickercast.app.commands import COMMANDS, add_commands
from tickercast.app.options import ConfigError, format_validation
from tickercast.quiet import ENV as TF_LOGS_ENV
from tickercast.quiet import quiet_tensorflow
from tickercast.runcontext import clear_stop, request_stop

# Prefect's temporary server needs 10-25 s to start on a small machine; its default
# start-up timeout is 20 s. prefect.toml raises it when run from the repo root; this
# covers runs from any other folder.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The commands that load TensorFlow: it is imported once, quietly, before they run
# (tickercast.quiet); the others never pay for the import.
TENSORFLOW_COMMANDS = frozenset({"retrain", "backtest", "tune", "predict", "serve"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickercast", description="Train, evaluate and export LSTM price forecasters."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars for epochs, folds, trials and tickers (default: when stderr is "
        f"a terminal and not CI; env {progress.ENV}=on|off|auto); log lines stay either way",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    return parser


def _dask_workers(args: argparse.Namespace) -> bool:
    """Whether the command runs its tasks on Dask (the option, else its --config file,
    where the setting is flat or in the execution section)."""
    runner = getattr(args, "task_runner", None)
    if runner is None and getattr(args, "config", None):
        try:
            data = json.loads(Path(args.config).read_text())
            runner = data.get("task_runner") or (data.get("execution") or {}).get("task_runner")
        except (OSError, ValueError, AttributeError):
            return False  # the command itself reports a bad config file
    return runner == "dask"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the run unwinds and exits normally."""


def _terminated(signum: int, frame: object) -> None:
    request_stop()  # the fits running in tasks' threads give up at their next batch
    raise Terminated


def _interrupted(signum: int, frame: object) -> None:
    request_stop()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Python's default SIGTERM ends the process at once, skipping the exit handlers: the
    # temporary Prefect server (a child process, stopped by an atexit handler) would be
    # left running. Raised as an exception, the run unwinds (Prefect marks the flow run
    # Crashed and hands the signal back to this handler) and the server is stopped.
    clear_stop()
    previous = signal.signal(signal.SIGTERM, _terminated)
    epilogue.install()  # before Prefect's exit handlers: the summary prints after theirs
    previous_int = signal.signal(signal.SIGINT, _interrupted)
    try:
        tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        bars = progress.decide(args.progress, os.environ, tty, _dask_workers(args))
        if args.debug:  # every TensorFlow line too, in this process and the flows it runs
            os.environ[TF_LOGS_ENV] = "1"
        if args.command in TENSORFLOW_COMMANDS:
            quiet_tensorflow()
        with progress.session(bars):
            return COMMANDS[args.command](args)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"tickercast: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as exc:  # one clear line unless --debug
        if args.debug:
            raise
        if isinstance(exc, ValidationError):
            message = format_validation(exc)
        elif isinstance(exc, ConfigError):
            message = str(exc)
        else:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        print(f"tickercast {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


if __name__ == "__main__":
    raise SystemExit(main())
