"""What every `tickercast` command shares: options generated from a config model,
configs read from them, one-line errors, a flow run's state, a retrain result printed."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tickercast.sections import Composite


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
    """`--tickers A B`, `--tickers A,B` and `--model a --model b` all give a list; an
    empty entry (`--tickers ''`, an unset shell variable) stays, to be refused by name."""
    return [item.strip() for value in values for item in value.split(",")]


def add_model_options(parser: argparse.ArgumentParser, model: type[Composite]) -> None:
    """One option per setting: --snake-case-name, with choices, nargs and help from the
    field that defines it (whichever section holds it)."""
    for name in model.leaves():
        field = model.leaf_field(name)
        inner, is_list = _unwrap(field.annotation)
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description} (default: {default})".replace("%", "%%")  # argparse
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if typing.get_origin(inner) is typing.Literal:
                kwargs["metavar"] = "{" + ",".join(map(str, typing.get_args(inner))) + "}"
            if is_list:  # --model a b, or --model a --model b: both give [a, b]
                kwargs["nargs"], kwargs["action"] = "+", "extend"
        parser.add_argument(flag, **kwargs)


class ConfigError(ValueError):
    """A config that cannot be used: one line naming the file, setting or value."""


def read_config_file(path: str | Path, model: type[Composite]) -> dict[str, Any]:
    """A `--config` JSON file's settings (flat names, or grouped by section); every
    problem is one line naming the file (and the line and column of a syntax error)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: expected a JSON object of {model.__name__} settings "
            f"(name: value), got {type(data).__name__ if data is not None else 'null'}"
        )
    return data


def _collect(args: argparse.Namespace, model: type[Composite]) -> dict[str, Any]:
    """The settings the command was given: its --config file, then its options over it."""
    given = read_config_file(args.config, model) if getattr(args, "config", None) else {}
    options: dict[str, Any] = {}
    for name in model.leaves():
        if name in vars(args):
            value = getattr(args, name)
            if _unwrap(model.leaf_field(name).annotation)[1]:
                value = _split_list(value)
            options[name] = value
    try:
        return model.nest(given, options)
    except ValueError as exc:
        raise ConfigError(_where(args, f"invalid config: {exc}")) from None


def _where(args: argparse.Namespace, message: str) -> str:
    config = getattr(args, "config", None)
    return f"{message} (config file {config})" if config else message


def format_validation(exc: ValidationError, model: type[Composite] | None = None) -> str:
    """A validation error as one line, each problem named by its setting's flat name
    (the option's name) rather than by the section holding it."""
    sections = model.sections() if model is not None else {}
    parts = []
    for err in exc.errors():
        loc = list(err["loc"])
        if len(loc) > 1 and loc[0] in sections:
            loc = loc[1:]
        where = ".".join(str(p) for p in loc) or "config"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":
            message = f"got {err['input']!r}; {message.lower()}"
        parts.append(f"{where}: {message}")
    return "invalid config: " + "; ".join(parts)


def add_flow_command(
    sub: Any,
    name: str,
    model: type[Composite],
    *,
    config_file: bool = True,
    **parser_kwargs: Any,
) -> argparse.ArgumentParser:
    """A subcommand that runs a flow: --config (a JSON file of `model` settings, which the
    options override), --debug, and one option per setting of `model`."""
    parser = sub.add_parser(name, **parser_kwargs)
    if config_file:
        parser.add_argument(
            "--config",
            help=f"JSON file of {model.__name__} settings, by their option names without "
            "the dashes (or grouped by section); options override it",
        )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    add_model_options(parser, model)
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


def configure(args: argparse.Namespace, model: type[Composite], flow_module: str):
    """The command's config from its options (over --config); then `flow_module`'s
    `preflight` refuses inputs that cannot exist before any work starts (the flow, and so
    Prefect, is imported only once the options are valid). Prefect's failure logs are then
    kept to one line unless --debug."""
    try:
        config = model.model_validate(_collect(args, model))
    except ValidationError as exc:
        raise ConfigError(_where(args, format_validation(exc, model))) from None
    importlib.import_module(flow_module).preflight(config)
    if not args.debug:
        _quiet_tracebacks()
    return config


def run_state(flow: Any, config: BaseModel) -> tuple[Any, Any]:
    """(final state, result) of a flow run; an exception the flow raised is raised here."""
    state = flow(config, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return state, result


def print_retrain_result(ticker: str, result: dict) -> None:
    """One ticker's retrain outcome: bundle, test RMSE vs baselines, verdict, promotion."""
    if "metrics" not in result:  # skipped (on_corrupt=skip) or failed: one line
        if "skipped" in result:
            print(f"{ticker}: skipped: {result['skipped']}")
        else:
            print(f"{ticker}: failed: {result.get('error')}")
        return
    metrics = result["metrics"]
    if result.get("kept_reason"):  # no version tonight: the champion's bundle and record
        print(
            f"{ticker}: {result['kept_reason']}\n"
            f"{ticker}: champion v{result['version']}'s test RMSE (when it was made) model "
            f"{metrics['model']['rmse']:.4f} | naive {metrics['naive']['rmse']:.4f} "
            f"({result['bundle']})"
        )
        print_mlflow(ticker, (result.get("promotion") or {}).get("mlflow"))
        return
    print(
        f"{ticker}: bundle {result['bundle']}\n"
        f"{ticker}: test RMSE model {metrics['model']['rmse']:.4f} | "
        f"naive {metrics['naive']['rmse']:.4f} | "
        f"moving average {metrics['moving_average']['rmse']:.4f}"
    )
    if result.get("verdict"):
        print(f"{ticker}: {result['verdict']}")
    if result.get("promotion"):
        event = result["promotion"]
        if event["action"] == "unchanged":
            print(f"{ticker}: {event['reason']}")
        else:
            verb = "promoted to champion" if event["action"] == "promote" else "not promoted"
            print(f"{ticker}: v{event['version']} {verb}: {event['reason']}")
        print_mlflow(ticker, event.get("mlflow"))


def print_mlflow(ticker: str, synced: dict | None) -> None:
    """What the MLflow mirror did (nothing without one); a failure goes to stderr."""
    if not synced:
        return
    if "error" in synced:
        print(f"{ticker}: MLflow not updated: {synced['error']}", file=sys.stderr)
        return
    from tickercast.tracking import describe_sync

    print(describe_sync(ticker, synced))
