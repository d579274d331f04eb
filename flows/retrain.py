"""The retrain flow: ingest -> preprocess -> windows -> train -> evaluate
-> [walk-forward backtest] -> export -> promote (the registry's champion gate).

Run it by hand with `python -m flows.retrain --help`, from the `tickercast retrain` CLI,
or on a schedule (deployments/serve.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from prefect import flow
from prefect.states import Failed

from tasks.atomic import file_lock
from tasks.config import (
    BACKTEST_FIELDS,
    PREPROCESS_FIELDS,
    PROMOTION_FIELDS,
    TRAIN_FIELDS,
    RetrainConfig,
)
from tasks.ingest import CorruptSkippedError, source_fingerprint
from tasks.steps import (
    backtest_step,
    evaluate_step,
    export_step,
    ingest_step,
    preprocess_step,
    promote_step,
    train_global_step,
    train_step,
    windows_step,
)
from tasks.tickers import validate_ticker


def preflight(config: RetrainConfig) -> None:
    """Refuse a run whose inputs cannot exist before any work starts (names the ticker)."""
    csv_dir = str(Path(config.csv_dir).resolve()) if config.csv_dir else None
    for ticker in config.tickers:
        source_fingerprint(config.source, ticker, csv_dir)


@contextlib.contextmanager
def ticker_locks(data_dir: str, tickers: Iterable[str]) -> Iterator[None]:
    """One exclusive lock per ticker (`models/<T>/.retrain.lock`), taken in sorted order.

    Two runs of the same ticker at once would otherwise train into the same
    content-keyed work folder (and its checkpoints) together; the second run waits here
    instead, then finds the first one's steps cached and exports the next version.
    """
    def waiting(path: Path) -> None:
        print(f"another retrain run holds {path}; waiting for it to finish")

    with contextlib.ExitStack() as stack:
        for ticker in sorted(set(tickers)):
            lock = Path(data_dir) / "models" / validate_ticker(ticker) / ".retrain.lock"
            stack.enter_context(file_lock(lock, on_wait=waiting))
        yield


@flow(name="retrain", log_prints=True, persist_result=False)
def retrain(config: RetrainConfig = RetrainConfig()) -> dict:
    """Train, evaluate and export one model per ticker; returns bundle paths and metrics."""
    preflight(config)
    data_dir = str(Path(config.data_dir).resolve())
    with ticker_locks(data_dir, config.tickers):
        return _retrain(config, data_dir)


def _retrain(config: RetrainConfig, data_dir: str) -> dict:
    """The flow's body, run under the tickers' locks."""
    options = {
        "persist_result": True,
        "result_storage": Path(data_dir) / "results",
        "result_serializer": "json",
        "refresh_cache": config.refresh,
    }
    ingest, preprocess, windows, train, evaluate, export = (
        step.with_options(**options)
        for step in (
            ingest_step,
            preprocess_step,
            windows_step,
            train_step,
            evaluate_step,
            export_step,
        )
    )
    full = config.model_dump(mode="json")
    csv_dir = str(Path(config.csv_dir).resolve()) if config.csv_dir else None
    # The ingest flow's own task and logic (flows/ingest.py): offline sources are ingested
    # whole (dates are applied in preprocess); a live fetch asks the source for a date
    # range, and reruns only for the days missing from the lake.
    live = config.source == "yfinance"
    results = {}
    staged: dict[str, tuple[dict, dict, dict]] = {}

    def finish(ingested: dict, pre: dict, trained: dict, evaluated: dict) -> dict:
        """Walk-forward (when enabled), the bundle, then the registry's champion gate."""
        backtested = None
        if config.walk_forward_folds and config.mode == "global":
            print("walk-forward refits one ticker at a time; skipped in global mode")
        elif config.walk_forward_folds:
            backtested = backtest_step.with_options(**options)(
                ingested,
                config.slice(*PREPROCESS_FIELDS, *TRAIN_FIELDS, *BACKTEST_FIELDS),
                data_dir,
            )
        exported = export(ingested, pre, trained, evaluated, full, data_dir, backtested)
        promotion = promote_step.with_options(**options)(
            exported, config.slice(*PROMOTION_FIELDS), data_dir
        )
        return {**exported, "promotion": promotion}

    for ticker in config.tickers:
        state = ingest(
            ticker,
            config.source,
            data_dir,
            csv_dir,
            full["start"] if live else None,
            full["end"] if live else None,
            source_fingerprint(config.source, ticker, csv_dir),
            options={"move_threshold": config.move_threshold, "on_corrupt": config.on_corrupt},
            return_state=True,
        )
        error = state.result(raise_on_failure=False) if state.is_failed() else None
        if isinstance(error, CorruptSkippedError):  # on_corrupt=skip: the others go on
            print(str(error))
            results[ticker] = {"ticker": ticker, "skipped": str(error)}
            continue
        ingested = state.result()
        pre = preprocess(ingested, config.slice(*PREPROCESS_FIELDS), data_dir)
        win = windows(pre, data_dir)
        if config.mode == "global":
            staged[ticker] = (ingested, pre, win)  # trained together below
            continue
        trained = train(pre, win, config.slice(*TRAIN_FIELDS), data_dir)
        evaluated = evaluate(pre, win, trained, data_dir)
        results[ticker] = finish(ingested, pre, trained, evaluated)
    if staged:
        # mode=global: one model over every ticker's windows, evaluated and exported per ticker
        trained_all = train_global_step.with_options(**options)(
            [pre for _, pre, _ in staged.values()],
            [win for _, _, win in staged.values()],
            config.slice(*TRAIN_FIELDS),
            data_dir,
        )
        for ticker, (ingested, pre, win) in staged.items():
            trained = trained_all["tickers"][ticker]
            evaluated = evaluate(pre, win, trained, data_dir)
            results[ticker] = finish(ingested, pre, trained, evaluated)
    if all("skipped" in r for r in results.values()):
        return Failed(message=f"every ticker was skipped: {sorted(results)}", data=results)
    return results


# What the scheduled deployments run: the same flow, retried as a whole after a failure
# (a Yahoo outage at 17:30 is usually over by 17:45). Manual runs fail fast instead.
nightly_retrain = retrain.with_options(retries=2, retry_delay_seconds=900)


if __name__ == "__main__":
    from tasks.cli import main

    raise SystemExit(main(["retrain", *__import__("sys").argv[1:]]))
