"""`tickercast models | predict | serve | backtest | tune`: the registry, forecasts, the
HTTP service, the rolling-origin backtest and the hyperparameter search.

Kept apart from app/cli.py (which wires them in) so that each command's options and
output live next to each other. Heavy imports happen only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tickercast.app.epilogue import later
from tickercast.app.options import (
    add_flow_command,
    configure,
    print_retrain_result,
    run_state,
)

# Every route of `tickercast serve` (app/service.py); tests/test_cli.py checks the list
# against the service's own routes.
ROUTES = (
    ("GET", "/health", "liveness and how many champions are loaded"),
    ("GET", "/models", "every model: its champion, the version served, problems"),
    ("GET", "/forecast/{ticker}", "the champion's next-horizon forecast with its bands"),
    ("GET", "/ledger/{ticker}", "forecasts published, scored as the truth arrives; live record"),
    ("POST", "/predict", "a forecast from a window of raw prices you send"),
    ("POST", "/reload", "re-read every registry, reload changed champions"),
    ("GET", "/", "HTML: every champion, its forecast, verdict, figures and plots"),
    ("GET", "/tickers/{ticker}", "HTML: every version of one model and its history"),
    ("GET", "/models/{ticker}/plots/{plot}.png", "a plot of the champion (or ?version=N)"),
    ("GET", "/downloads/forecasts.{fmt}", "every champion's latest forecast (fmt: csv, json)"),
    ("GET", "/downloads/{ticker}/v{version}/test.{fmt}", "a version's test predictions"),
    ("GET", "/docs", "the API's documentation (self-contained, works offline)"),
    ("GET", "/openapi.json", "the API's schema"),
)


def add_commands(sub: Any) -> None:
    """Register every subcommand on the `tickercast` parser's subparsers."""
    _add_flows(sub)
    _add_cache(sub)
    _add_models(sub)
    _add_serve(sub)


def _debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks on failure")


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="data", help="root of models/ and lake/ (data)")


def _mlflow_uri(p: argparse.ArgumentParser) -> None:
    from tickercast.sections import Mirror

    p.add_argument("--mlflow-uri", default=None, help=Mirror.model_fields["mlflow_uri"].description)


def _add_flows(sub: Any) -> None:
    """The commands that run a flow, their options generated from its config."""
    from tickercast.choices import BASELINES
    from tickercast.config import BacktestConfig, IngestConfig, PredictConfig, RetrainConfig
    from tickercast.tuning.config import TuneConfig

    add_flow_command(
        sub,
        "retrain",
        RetrainConfig,
        help="run the retrain flow (ingest -> ... -> export)",
        description="Run the retrain flow. Every option is a RetrainConfig setting. Exits 1 "
        "when a ticker failed (each named with its cause); the others still finish.",
    )
    add_flow_command(
        sub,
        "ingest",
        IngestConfig,
        help="run the ingest flow alone (bring the lake up to date)",
        description="Run the ingest flow: fetch, validate and store prices in the lake, "
        "one report line per ticker. Every option is an IngestConfig setting. Exits 1 when "
        "the run ends Failed (see --fail-on).",
    )
    add_flow_command(
        sub,
        "predict",
        PredictConfig,
        config_file=False,
        help="forecast the next horizon with each ticker's champion",
        description="Run the predict flow: load each champion, read the latest lake rows, "
        "write the next-horizon forecast with its intervals to "
        "<data-dir>/forecasts/*.parquet. Every option is a PredictConfig setting. A ticker "
        "without a usable champion is one line naming why; exits 1 if any failed.",
    )
    add_flow_command(
        sub,
        "backtest",
        BacktestConfig,
        help="rolling-origin evaluation of networks and baselines on the same origins",
        description="Run the backtest flow: every --model (networks of the family and the "
        f"baselines {', '.join(BASELINES)}) forecasts from the same rolling "
        "origins; prints RMSE, MAE, MAPE, MASE, direction, coverage, skill and the lag "
        "diagnostic per model (and per horizon step), writes them to "
        "<data-dir>/backtests/*/metrics.parquet. Every option is a BacktestConfig setting. "
        "Exits 1 when a ticker failed; the others are still backtested and written.",
    )
    add_flow_command(
        sub,
        "tune",
        TuneConfig,
        help="hyperparameter search with Keras Tuner, then retrain the best configuration",
        description="Run the tune flow: Bayesian optimisation or Hyperband over model, units, "
        "layers, dropout, L2, learning rate, batch size and lookback, each trial scored on "
        "the validation split only; writes <data-dir>/tuning/<run>/best.json (a retrain "
        "--config file) and trials.csv, then retrains best.json once for the test report. "
        "Rerunning the same search resumes it. Every option is a TuneConfig setting.",
    )


def _add_cache(sub: Any) -> None:
    cache = sub.add_parser("cache", help="show or clear cached step results")
    cache.add_argument("action", choices=["show", "clear"])
    cache.add_argument("--data-dir", default="data", help="the data dir whose cache to use")
    _debug(cache)


def _add_models(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="the model registry: list | show | promote | rollback | sync-mlflow",
        description="Inspect the registry (<data-dir>/models/<name>/registry.json), move "
        "the champion by hand, mirror it to MLflow.",
    )
    _debug(models)
    actions = models.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", help="every model, its champion and version count")
    _data_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = actions.add_parser("show", help="a model's versions, champion and history")
    p.add_argument("name", help="model name (the ticker)")
    _data_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = actions.add_parser("promote", help="make a version the champion (no gate)")
    p.add_argument("name", help="model name (the ticker)")
    p.add_argument("version", type=int, help="version number")
    p.add_argument("--reason", default="manual", help="recorded in the history")
    _data_dir(p)
    _mlflow_uri(p)
    p = actions.add_parser("rollback", help="back to the previous champion")
    p.add_argument("name", help="model name (the ticker)")
    p.add_argument("--to", type=int, help="an earlier champion's version (default: previous)")
    _data_dir(p)
    _mlflow_uri(p)
    p = actions.add_parser(
        "sync-mlflow",
        help="mirror the registry to MLflow (runs, versions, the champion alias)",
        description="Log every version MLflow lacks (a run and a model version of "
        "tickercast-<name>) and set its 'champion' alias to the registry's champion: repairs "
        "a mirror that a run could not update. Exits 1 if any model failed.",
    )
    p.add_argument("names", nargs="*", help="model names (default: every model)")
    _data_dir(p)
    _mlflow_uri(p)


def _add_serve(sub: Any) -> None:
    routes = "; ".join(f"{verb} {path}: {what}" for verb, path, what in ROUTES)
    serve = sub.add_parser(
        "serve",
        help="serve the champions over HTTP (FastAPI + uvicorn)",
        description=f"Routes: {routes}. Champions are reloaded when registry.json changes.",
    )
    _debug(serve)
    _data_dir(serve)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (8000)")


def _status(command: str, state) -> int:
    """The command's exit status; a failed run ends in one line saying why (which
    tickers failed, each with its cause, or what failed the run as a whole)."""
    if state.is_completed():
        return 0
    print(f"tickercast {command}: error: {state.message}", file=sys.stderr)
    return 1


def run_retrain(args: argparse.Namespace) -> int:
    from tickercast.config import RetrainConfig

    config = configure(args, RetrainConfig, "tickercast.flows.retrain")
    from tickercast.flows.retrain import retrain

    state, results = run_state(retrain, config)
    data_dir = config.execution.data_dir
    ends = {t: _new_forecast(r, data_dir, t) for t, r in results.items() if "bundle" in r}

    def show() -> None:
        for ticker, result in results.items():
            print_retrain_result(ticker, result)
        _print_ending("retrain", ends, data_dir)

    later(show)
    return _status("retrain", state)


def _new_forecast(result: dict, data_dir: str, ticker: str) -> dict:
    """The just-exported version's next-horizon forecast and its verdict in words (or
    why there is no forecast): what the run's last lines say."""
    from tickercast.delivery.bundle import load_bundle
    from tickercast.delivery.predict import forecast_next
    from tickercast.delivery.words import verdict_words
    from tickercast.market import lake

    event = result.get("promotion") or {}
    try:
        bundle = load_bundle(result["bundle"])
        rows = forecast_next(bundle, lake.read_partition(data_dir, ticker), ticker)
        verdict = verdict_words(bundle.metadata)[1]
    except Exception as exc:  # the run succeeded: say why there is no forecast, go on
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    return {"rows": rows, "verdict": verdict, "champion": event.get("action") == "promote"}


def _print_ending(command: str, ends: dict[str, dict], data_dir: str) -> None:
    """Per ticker the forecast, its band and verdict; elapsed time; the next command."""
    from tickercast.app.epilogue import elapsed, forecast_words, table

    rows = []
    for ticker, end in ends.items():
        if "error" in end:
            rows.append([ticker, "–", f"no forecast: {end['error']}", "–"])
            continue
        for row in end["rows"]:
            version = f"v{row['version']}" + (" (champion)" if end.get("champion") else "")
            rows.append([ticker, version, f"as of {row['as_of']}: {forecast_words(row)}"])
            rows[-1].append(end["verdict"])
    table(f"tickercast {command}: forecasts", ["ticker", "version", "forecast", "verdict"], rows)
    where = "" if data_dir == "data" else f" --data-dir {data_dir}"
    print(
        f"done in {elapsed()}. Next: `tickercast serve{where}` (the page at "
        f"http://127.0.0.1:8000/) or `tickercast predict{where}` (every champion's forecast)"
    )


def run_cache(args: argparse.Namespace) -> int:
    from tickercast.tasks.caching import cache_info, clear_cache

    info = clear_cache(args.data_dir) if args.action == "clear" else cache_info(args.data_dir)
    verb = "cleared" if args.action == "clear" else "holds"
    for name, sizes in info.items():
        print(
            f"{Path(args.data_dir) / name}: {verb} {sizes['files']} files, "
            f"{sizes['bytes'] / 1e6:.1f} MB"
        )
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from tickercast.config import IngestConfig

    config = configure(args, IngestConfig, "tickercast.flows.ingest")
    from tickercast.flows.ingest import ingest
    from tickercast.market.report import quirks_text

    state, summary = run_state(ingest, config)
    for row in summary["tickers"]:
        if row["status"] in ("failed", "skipped"):
            print(f"{row['ticker']}: {row['status']}: {row['error']}")
            continue
        print(
            f"{row['ticker']}: {row['status']} ({row['mode']}), {row['rows_added']} rows added, "
            f"{row['rows']} stored {row['first_day']}..{row['last_day']}, "
            f"{row['rows_dropped']} rows dropped, {len(row['warnings'])} warning(s)"
        )
        if row["quirks"]:
            print(f"  quirks: {quirks_text(row['quirks'])}")
        for warning in row["warnings"]:
            print(f"  warning: {warning}")
    return _status("ingest", state)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def run_models(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _models_list(args)
    if args.action == "show":
        return _models_show(args)
    if args.action == "sync-mlflow":
        return _sync_mlflow(args.mlflow_uri, args.data_dir, args.names)
    return _models_move(args)


def _models_list(args: argparse.Namespace) -> int:
    from tickercast.delivery import registry

    rows = registry.list_models(args.data_dir)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print(f"no models under {args.data_dir}/models")
    for row in rows:
        champion = f"v{row['champion']}" if row["champion"] is not None else "none"
        print(
            f"{row['name']}: champion {champion}, {row['versions']} version(s), "
            f"latest v{row['latest']}" + (f"  ({row['problem']})" if "problem" in row else "")
        )
    return 0


def _models_show(args: argparse.Namespace) -> int:
    from tickercast.delivery import ledger, registry
    from tickercast.delivery.gate import compare_versions

    info = registry.show(args.data_dir, args.name)
    info["common"] = compare_versions(args.data_dir, args.name)
    info["live"] = ledger.champion_record(args.data_dir, info["name"], info["champion"])
    if args.json:
        _print_json(info)
        return 0
    print(f"{info['name']}: champion {info['champion']}, lineage {info['lineage']}")
    for v in info["versions"]:
        flag = "*" if v["champion"] else " "
        state = "intact" if v["intact"] else f"DAMAGED: {v.get('problem')}"
        rmse, naive = v.get("rmse"), v.get("naive_rmse")
        scores = (
            f"own test RMSE {rmse:.4f} vs naive {naive:.4f}"
            if rmse is not None and naive is not None
            else "no metrics"
        )
        print(
            f" {flag} v{v['version']}: {v.get('created_at')}, data to {v.get('last_day')}, "
            f"{scores}, {state}"
        )
        _print_distribution(v.get("distribution"))
    _print_common(info["common"])
    _print_live(info["live"])
    for event in info["history"]:
        print(f"   {event['at']} {event['action']} v{event['version']}: {event.get('reason', '')}")
    return 0


def _print_distribution(d: dict | None) -> None:
    """A version's band on its own test windows: CRPS, coverage and its verdicts."""
    if not d or d.get("crps") is None:
        return
    cov = [
        f"{k}% {d[f'coverage_{k}']:.1%}" for k in ("80", "95") if d.get(f"coverage_{k}") is not None
    ]
    band = d.get("band") or d.get("form")
    print(f"     bands ({band}): CRPS {d['crps']:.4f}, coverage {', '.join(cov)}")
    for line in d.get("verdicts") or []:
        print(f"       {line}")


def _print_live(live: dict) -> None:
    """The live track record: published forecasts scored against what happened."""
    if not live["n"]:
        print("live record: no published forecast has reached its horizon yet")
        return
    skill = f"{live['skill']:+.1%}" if live.get("skill") is not None else "n/a"
    p = f", DM p {live['dm_p']:.2g}" if live.get("dm_p") is not None else ""
    cov = ", ".join(
        f"{k}% band covered {live[f'coverage_{k}']:.0%}"
        for k in ("80", "95")
        if live.get(f"coverage_{k}") is not None
    )
    print(
        f"live record ({live['n']} forecasts, origins {live['first_origin']}.."
        f"{live['last_origin']}): MAE {live['mae']:.4f} vs naive {live['naive_mae']:.4f} "
        f"(skill {skill}{p}); {cov}"
    )
    promise = live.get("promised") or {}
    if promise:  # what the champion's test split promised, beside its live record
        print(f"   v{live['version']} promised on its test split: {ledger_promise(promise)}")
    if live.get("flag"):
        print(f"   FLAGGED: {live['flag']}")


def ledger_promise(promise: dict) -> str:
    def pct(v):
        return "n/a" if v is None else f"{v:+.1%}"

    covered = ", ".join(
        f"{k}% band covered {promise[f'coverage_{k}']:.0%}"
        for k in ("80", "95")
        if promise.get(f"coverage_{k}") is not None
    )
    return f"skill {pct(promise.get('skill'))}; {covered or 'no bands'}"


def _print_common(common: dict) -> None:
    """Every version scored on one common window (`models show`)."""
    if common["rows"]:
        w = common["window"]
        print(
            f"on one common window ({w['windows']} windows, anchors {w['first_anchor']}.."
            f"{w['last_anchor']}, every version out of sample):"
        )
        for row in common["rows"]:
            print(
                f"   v{row['version']}: RMSE {row['rmse']:.4f} vs naive "
                f"{row['naive_rmse']:.4f}, MAE {row['mae']:.4f}, {row['verdict']}"
            )
    for version, why in common["skipped"].items():
        print(f"   v{version}: not on the common window ({why})")


def _models_move(args: argparse.Namespace) -> int:
    """`models promote` / `models rollback`; the MLflow mirror follows when there is one."""
    from tickercast.delivery import registry
    from tickercast.tracking import resolve_uri

    if args.action == "promote":
        reg = registry.promote(args.data_dir, args.name, args.version, reason=args.reason)
        print(f"{args.name}: champion is now v{reg['champion']}")
    else:
        reg = registry.rollback(args.data_dir, args.name, to=args.to)
        print(f"{args.name}: rolled back, champion is now v{reg['champion']}")
    if resolve_uri(args.mlflow_uri):  # the registry changed: its MLflow mirror follows
        _sync_mlflow(args.mlflow_uri, args.data_dir, [args.name])
    return 0


def _sync_mlflow(uri: str | None, data_dir: str, names: list[str]) -> int:
    """Mirror each model's registry to MLflow; 1 if any failed (each failure on stderr,
    naming the command that retries it; the file registry is never changed here)."""
    from tickercast.delivery.registry import model_names
    from tickercast.tracking import TrackingError, describe_sync, retry_hint, sync_model
    from tickercast.tracking import resolve_uri as resolve

    resolved = resolve(uri)
    if resolved is None:
        raise ValueError("no MLflow tracking URI: give --mlflow-uri or set MLFLOW_TRACKING_URI")
    failed = 0
    for name in names or model_names(data_dir):
        try:
            print(describe_sync(name, sync_model(resolved, data_dir, name)))
        except TrackingError as exc:
            failed += 1
            print(
                f"{name}: MLflow not updated: {exc} (the registry is; retry: "
                f"{retry_hint(name, data_dir)})",
                file=sys.stderr,
            )
    return 1 if failed else 0


def run_predict(args: argparse.Namespace) -> int:
    from tickercast.config import PredictConfig

    config = configure(args, PredictConfig, "tickercast.flows.predict")
    from tickercast.app.epilogue import elapsed, forecast_words, table
    from tickercast.flows.predict import predict

    state, result = run_state(predict, config)

    def show() -> None:
        rows = [
            [r["ticker"], f"v{r['version']}", str(r["as_of"]), forecast_words(r)]
            for r in result["forecasts"]
        ]
        table("tickercast predict", ["ticker", "version", "as of", "forecast"], rows)
        for ticker, message in result["failed"].items():
            print(f"{ticker}: failed: {message}")
        if result["path"]:
            print(f"written to {result['path']} in {elapsed()}")

    later(show)
    return _status("predict", state)


def run_backtest(args: argparse.Namespace) -> int:
    from tickercast.config import BacktestConfig

    config = configure(args, BacktestConfig, "tickercast.flows.backtest")
    from tickercast.backtest.tables import format_distribution, format_table
    from tickercast.flows.backtest import backtest

    state, result = run_state(backtest, config)
    for ticker, res in result["tickers"].items():
        o = res["origins"]
        print(
            f"{ticker}: {o['origins']} origins {o['first_origin']}..{o['last_origin']}, "
            f"target {o['target']} horizon {o['horizon']}, {o['window']} window"
        )
        print(format_table(res["metrics"]))
        bands = format_distribution((res.get("distribution") or {}).get("rows") or [])
        if bands:
            print(f"{ticker}: distribution (DM p: the median's band vs each, per-origin CRPS)")
            print(bands)
        lagging = sorted({r["model"] for r in res["metrics"] if r["lagging"]} - {"naive"})
        if lagging:
            print(
                f"{ticker}: lagging (best match with the actual series >= 1 day late, not "
                f"significantly better than naive): {', '.join(lagging)}"
            )
    for ticker, message in result["failed"].items():
        print(f"{ticker}: failed: {message}")
    if result["paths"]:
        print(f"written to {result['paths']['folder']}")
    _print_logged("backtest", result.get("mlflow"))
    return _status("backtest", state)


def _print_logged(what: str, logged: dict | None) -> None:
    """Where a backtest or search was logged in MLflow; a failure goes to stderr."""
    if not logged:
        return
    if "error" in logged:
        print(f"{what} not logged to MLflow: {logged['error']}", file=sys.stderr)
    else:
        print(f"{what} logged to MLflow: run {logged['run_id']} ({logged['experiment']})")


def run_tune(args: argparse.Namespace) -> int:
    from tickercast.tuning.config import TuneConfig

    config = configure(args, TuneConfig, "tickercast.flows.tune")
    from tickercast.flows.tune import tune

    state, result = run_state(tune, config)
    for ticker, message in (result or {}).get("failed", {}).items():
        print(f"{ticker}: failed: {message}")
    if not isinstance(result, dict) or result.get("best") is None:
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
    _print_logged("search", result.get("mlflow"))
    for ticker, res in (result["test"] or {}).items():
        if ticker == "error" or not isinstance(res, dict):
            continue
        print_retrain_result(ticker, res)
    return _status("tune", state)


def run_serve(args: argparse.Namespace) -> int:
    from tickercast.app.service import serve

    serve(args.data_dir, host=args.host, port=args.port)
    return 0


COMMANDS = {
    "retrain": run_retrain,
    "ingest": run_ingest,
    "cache": run_cache,
    "models": run_models,
    "predict": run_predict,
    "serve": run_serve,
    "backtest": run_backtest,
    "tune": run_tune,
}
