"""`tickercast` command line: options generated from the config model, one line on failure.

Heavy imports (Prefect, TensorFlow) happen only once a command runs, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tasks.config import IngestConfig, RetrainConfig

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


def add_flow_command(
    sub: Any,
    name: str,
    model: type[BaseModel],
    *,
    config_file: bool = True,
    **parser_kwargs: Any,
) -> argparse.ArgumentParser:
    """A subcommand that runs a flow: --config (a JSON file of `model` fields, which the
    options override), --debug, and one option per field of `model`."""
    parser = sub.add_parser(name, **parser_kwargs)
    if config_file:
        parser.add_argument(
            "--config", help=f"JSON file of {model.__name__} fields; options override it"
        )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    add_model_options(parser, model)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickercast", description="Train, evaluate and export LSTM price forecasters."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    sub = parser.add_subparsers(dest="command", required=True)
    add_flow_command(
        sub,
        "retrain",
        RetrainConfig,
        help="run the retrain flow (ingest -> ... -> export)",
        description="Run the retrain flow. Every option is a RetrainConfig field.",
    )
    add_flow_command(
        sub,
        "ingest",
        IngestConfig,
        help="run the ingest flow alone (bring the lake up to date)",
        description="Run the ingest flow: fetch, validate and store prices in the lake, "
        "one report line per ticker. Every option is an IngestConfig field. Exits 1 when "
        "the run ends Failed (see --fail-on).",
    )
    cache = sub.add_parser("cache", help="show or clear cached step results")
    cache.add_argument("action", choices=["show", "clear"])
    cache.add_argument("--data-dir", default="data", help="the data dir whose cache to use")
    cache.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    from tasks.commands import add_commands  # models | predict | serve | backtest | tune

    add_commands(sub, add_flow_command)
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


def configure(args: argparse.Namespace, model: type[BaseModel], flows_module: str | None = None):
    """The command's config from its options (over --config); with `flows_module`, that
    flow's `preflight` refuses inputs that cannot exist before any work starts. Prefect's
    failure logs are then kept to one line unless --debug."""
    config = model(**_collect(args, model))
    if flows_module:
        importlib.import_module(flows_module).preflight(config)
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
    if "metrics" not in result:  # skipped (on_corrupt=skip) or failed
        print(f"{ticker}: {result.get('skipped') or result.get('error')}")
        return
    metrics = result["metrics"]
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
        verb = "promoted to champion" if event["action"] == "promote" else "not promoted"
        print(f"{ticker}: v{event['version']} {verb}: {event['reason']}")


def _run_retrain(args: argparse.Namespace) -> int:
    config = configure(args, RetrainConfig, "flows.retrain")
    from flows.retrain import retrain

    for ticker, result in retrain(config).items():
        if "skipped" in result:  # on_corrupt=skip
            print(f"{ticker}: skipped: {result['skipped']}")
        else:
            print_retrain_result(ticker, result)
    return 0


def _run_cache(args: argparse.Namespace) -> int:
    from tasks.caching import cache_info, clear_cache

    info = clear_cache(args.data_dir) if args.action == "clear" else cache_info(args.data_dir)
    verb = "cleared" if args.action == "clear" else "holds"
    for name, sizes in info.items():
        print(f"{Path(args.data_dir) / name}: {verb} {sizes['files']} files, "
              f"{sizes['bytes'] / 1e6:.1f} MB")
    return 0


def _run_ingest(args: argparse.Namespace) -> int:
    config = configure(args, IngestConfig, "flows.ingest")
    from flows.ingest import ingest

    state, summary = run_state(ingest, config)
    for row in summary["tickers"]:
        if row["status"] in ("failed", "skipped"):
            print(f"{row['ticker']}: {row['status']}: {row['error']}")
            continue
        print(
            f"{row['ticker']}: {row['status']} ({row['mode']}), {row['rows_added']} rows added, "
            f"{row['rows']} stored {row['first_day']}..{row['last_day']}, "
            f"{row['rows_dropped']} null rows dropped, {len(row['warnings'])} warning(s)"
        )
        for warning in row["warnings"]:
            print(f"  warning: {warning}")
    if not state.is_completed():
        print(f"tickercast ingest: error: {state.message}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"ingest": _run_ingest, "retrain": _run_retrain, "cache": _run_cache}
COMMANDS.update(__import__("tasks.commands", fromlist=["COMMANDS"]).COMMANDS)


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
