"""`tickercast` command line: options generated from the config model, one line on failure.

Heavy imports (Prefect, TensorFlow) happen only once a command runs, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tasks.config import RetrainConfig

# Prefect's temporary server needs 10-25 s to start on a small machine; its default
# start-up timeout is 20 s. prefect.toml raises it when run from the repo root; this
# covers runs from any other folder.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is not for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_list) with Optional stripped."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0])
    if origin is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _split_list(values: list[str]) -> list[str]:
    return [item for value in values for item in value.split(",") if item]


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One option per field: --snake-case-name, with choices, nargs and help from the schema."""
    for name, field in model.model_fields.items():
        inner, is_list = _unwrap(field.annotation)
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description} (default: {default})"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if typing.get_origin(inner) is typing.Literal:
                kwargs["metavar"] = "{" + ",".join(map(str, typing.get_args(inner))) + "}"
            if is_list:
                kwargs["nargs"] = "+"
        parser.add_argument(flag, **kwargs)


def _collect(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(json.loads(Path(args.config).read_text()))
    for name, field in model.model_fields.items():
        if name in vars(args):
            value = getattr(args, name)
            if _unwrap(field.annotation)[1]:
                value = _split_list(value)
            values[name] = value
    return values


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":
            message = f"got {err['input']!r}; {message.lower()}"
        parts.append(f"{where}: {message}")
    return "invalid config: " + "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickercast", description="Train, evaluate and export LSTM price forecasters."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    sub = parser.add_subparsers(dest="command", required=True)
    retrain = sub.add_parser(
        "retrain",
        help="run the retrain flow (ingest -> ... -> export)",
        description="Run the retrain flow. Every option is a RetrainConfig field.",
    )
    retrain.add_argument("--config", help="JSON file of RetrainConfig fields; options override it")
    retrain.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    add_model_options(retrain, RetrainConfig)
    return parser


class _NoTraceback(logging.Filter):
    """Keeps Prefect's failure logs to their one-line message unless --debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        if isinstance(record.msg, str) and "\nTraceback (most recent call last)" in record.msg:
            record.msg = record.msg.split("\nTraceback (most recent call last)")[0]
        return True


def _quiet_tracebacks() -> None:
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    quiet = _NoTraceback()
    for logger in loggers:
        for handler in logger.handlers:
            handler.addFilter(quiet)


def _run_retrain(args: argparse.Namespace) -> int:
    config = RetrainConfig(**_collect(args, RetrainConfig))
    from flows.retrain import preflight, retrain

    preflight(config)
    if not args.debug:
        _quiet_tracebacks()

    results = retrain(config)
    for ticker, result in results.items():
        metrics = result["metrics"]
        print(
            f"{ticker}: bundle {result['bundle']}\n"
            f"{ticker}: test RMSE model {metrics['model']['rmse']:.4f} | "
            f"naive {metrics['naive']['rmse']:.4f} | "
            f"moving average {metrics['moving_average']['rmse']:.4f}"
        )
    return 0


COMMANDS = {"retrain": _run_retrain}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("tickercast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line unless --debug
        if args.debug:
            raise
        if isinstance(exc, ValidationError):
            message = _format_validation(exc)
        else:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        print(f"tickercast {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
