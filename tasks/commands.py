"""`tickercast models | predict | serve | backtest | tune`: the registry, forecasts, the
HTTP service, the rolling-origin backtest and the hyperparameter search.

Kept apart from tasks/cli.py (which wires them in) so that each command's options and
output live next to each other. Heavy imports happen only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def add_commands(sub: Any, add_flow_command: Callable) -> None:
    """Register the subcommands on the `tickercast` parser's subparsers
    (`add_flow_command`: tasks/cli.py's, for the commands that run a flow)."""
    from tasks.config import PredictConfig

    def debug(p: argparse.ArgumentParser) -> None:
        p.add_argument("--debug", action="store_true", help="show tracebacks on failure")

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", default="data", help="root of models/ and lake/ (data)")

    models = sub.add_parser(
        "models",
        help="the model registry: list | show | promote | rollback",
        description="Inspect the registry (<data-dir>/models/<name>/registry.json) and move "
        "the champion by hand.",
    )
    debug(models)
    actions = models.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", help="every model, its champion and version count")
    data_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = actions.add_parser("show", help="a model's versions, champion and history")
    p.add_argument("name", help="model name (the ticker)")
    data_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = actions.add_parser("promote", help="make a version the champion (no gate)")
    p.add_argument("name", help="model name (the ticker)")
    p.add_argument("version", type=int, help="version number")
    p.add_argument("--reason", default="manual", help="recorded in the history")
    data_dir(p)
    p = actions.add_parser("rollback", help="back to the previous champion")
    p.add_argument("name", help="model name (the ticker)")
    p.add_argument("--to", type=int, help="an earlier champion's version (default: previous)")
    data_dir(p)

    add_flow_command(
        sub,
        "predict",
        PredictConfig,
        config_file=False,
        help="forecast the next horizon with each ticker's champion",
        description="Run the predict flow: load each champion, read the latest lake rows, "
        "write the next-horizon forecast with its intervals to "
        "<data-dir>/forecasts/*.parquet. Every option is a PredictConfig field.",
    )

    from tasks.config import BacktestConfig

    add_flow_command(
        sub,
        "backtest",
        BacktestConfig,
        help="rolling-origin evaluation of networks and baselines on the same origins",
        description="Run the backtest flow: every --model (networks of the family and the "
        "baselines naive, drift, mean, moving_average, ridge) forecasts from the same rolling "
        "origins; prints RMSE, MAE, MAPE, MASE, direction, coverage, skill and the lag "
        "diagnostic per model (and per horizon step), writes them to "
        "<data-dir>/backtests/*/metrics.parquet. Every option is a BacktestConfig field.",
    )

    from tasks.tune import TuneConfig

    add_flow_command(
        sub,
        "tune",
        TuneConfig,
        help="hyperparameter search with Keras Tuner, then retrain the best configuration",
        description="Run the tune flow: Bayesian optimisation or Hyperband over model, units, "
        "layers, dropout, L2, learning rate, batch size and lookback, each trial scored on "
        "the validation split only; writes <data-dir>/tuning/<run>/best.json (a retrain "
        "--config file) and trials.csv, then retrains best.json once for the test report. "
        "Rerunning the same search resumes it. Every option is a TuneConfig field.",
    )

    serve = sub.add_parser(
        "serve",
        help="serve the champions over HTTP (FastAPI + uvicorn)",
        description="GET /health, GET /models, GET /forecast/{ticker}, POST /predict, "
        "POST /reload. Champions are reloaded when registry.json changes.",
    )
    debug(serve)
    data_dir(serve)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (8000)")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def run_models(args: argparse.Namespace) -> int:
    from tasks import registry

    if args.action == "list":
        rows = registry.list_models(args.data_dir)
        if args.json:
            _print_json(rows)
        elif not rows:
            print(f"no models under {args.data_dir}/models")
        for row in [] if args.json else rows:
            champion = f"v{row['champion']}" if row["champion"] is not None else "none"
            print(
                f"{row['name']}: champion {champion}, {row['versions']} version(s), "
                f"latest v{row['latest']}" + (f"  ({row['problem']})" if "problem" in row else "")
            )
        return 0
    if args.action == "show":
        info = registry.show(args.data_dir, args.name)
        if args.json:
            _print_json(info)
            return 0
        print(f"{info['name']}: champion {info['champion']}, lineage {info['lineage']}")
        for v in info["versions"]:
            flag = "*" if v["champion"] else " "
            state = "intact" if v["intact"] else f"DAMAGED: {v.get('problem')}"
            rmse = v.get("rmse")
            naive = v.get("naive_rmse")
            scores = (
                f"test RMSE {rmse:.4f} vs naive {naive:.4f}"
                if rmse is not None and naive is not None
                else "no metrics"
            )
            print(
                f" {flag} v{v['version']}: {v.get('created_at')}, data to {v.get('last_day')}, "
                f"{scores}, {state}"
            )
        for event in info["history"]:
            print(
                f"   {event['at']} {event['action']} v{event['version']}: {event.get('reason', '')}"
            )
        return 0
    if args.action == "promote":
        reg = registry.promote(args.data_dir, args.name, args.version, reason=args.reason)
        print(f"{args.name}: champion is now v{reg['champion']}")
        return 0
    reg = registry.rollback(args.data_dir, args.name, to=args.to)
    print(f"{args.name}: rolled back, champion is now v{reg['champion']}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tasks.cli import configure, run_state
    from tasks.config import PredictConfig

    config = configure(args, PredictConfig)
    from flows.predict import predict

    _, result = run_state(predict, config)
    for row in result["forecasts"]:
        band = ""
        if row.get("lo_80") is not None:
            band = f" [80%: {row['lo_80']:.4f} .. {row['hi_80']:.4f}]"
        print(
            f"{row['ticker']} v{row['version']} as of {row['as_of']}: {row['target']} "
            f"(horizon {row['horizon']}, output {row['output']}) = {row['forecast']:.4f}{band}"
        )
    for ticker, message in result["failed"].items():
        print(f"{ticker}: failed: {message}")
    if result["path"]:
        print(f"written to {result['path']}")
    if result["failed"]:
        print(
            f"tickercast predict: error: {len(result['failed'])} ticker(s) failed",
            file=sys.stderr,
        )
        return 1
    return 0


def run_backtest(args: argparse.Namespace) -> int:
    from tasks.cli import configure
    from tasks.config import BacktestConfig

    config = configure(args, BacktestConfig, "flows.backtest")
    from flows.backtest import backtest
    from tasks.backtest import format_table

    result = backtest(config)
    for ticker, res in result["tickers"].items():
        o = res["origins"]
        print(
            f"{ticker}: {o['origins']} origins {o['first_origin']}..{o['last_origin']}, "
            f"target {o['target']} horizon {o['horizon']}, {o['window']} window"
        )
        print(format_table(res["metrics"]))
        lagging = sorted({r["model"] for r in res["metrics"] if r["lagging"]} - {"naive"})
        if lagging:
            print(
                f"{ticker}: lagging (best match with the actual series >= 1 day late, no "
                f"skill over naive): {', '.join(lagging)}"
            )
    print(f"written to {result['paths']['folder']}")
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from tasks.cli import configure, print_retrain_result, run_state
    from tasks.tune import TuneConfig

    config = configure(args, TuneConfig, "flows.tune")
    from flows.tune import tune

    state, result = run_state(tune, config)
    if not isinstance(result, dict):
        print(f"tickercast tune: error: {state.message}", file=sys.stderr)
        return 1
    best = result["best"]
    stopped = f"; stopped: {result['stop_reason']}" if result["stop_reason"] else ""
    print(
        f"tune {result['run']}: {result['trials']} trial(s), {result['completed']} completed, "
        f"{len(result['ran'])} run now{stopped}"
    )
    print(
        f"best: trial {best['trial']}, val MSE {best['val_mse']:.6g} (validation split): "
        f"{best['model']} units {best['units']}, lookback {best['lookback']}, batch "
        f"{best['batch_size']}, learning rate {best['learning_rate']:.3g}, dropout "
        f"{best['dropout']:.3g}, l2 {best['l2']:.3g}"
    )
    print(f"best.json: {result['best_json']}  (tickercast retrain --config {result['best_json']})")
    print(f"trials: {result['trials_csv']}")
    for ticker, res in (result["test"] or {}).items():
        if ticker == "error" or not isinstance(res, dict):
            continue
        print_retrain_result(ticker, res)
    if not state.is_completed():
        print(f"tickercast tune: error: {state.message}", file=sys.stderr)
        return 1
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from tasks.serve import serve

    serve(args.data_dir, host=args.host, port=args.port)
    return 0


COMMANDS = {
    "models": run_models,
    "predict": run_predict,
    "serve": run_serve,
    "backtest": run_backtest,
    "tune": run_tune,
}
