"""The retrain flow: ingest -> preprocess -> windows -> train -> evaluate
-> [walk-forward backtest] -> export -> promote (the registry's champion gate).

Run it by hand with `python -m flows.retrain --help`, from the `tickercast retrain` CLI,
or on a schedule (deployments/serve.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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
from tasks.ingest import CorruptSkippedError, fetch_window, source_fingerprint
from tasks.runners import make_task_runner, step_options, use_task_runner
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


def submit_ingest(ingest: Any, config: Any, ticker: str, data_dir: str) -> Any:
    """The ingest step for one ticker of a retrain-like config (retrain, tune): the ingest
    flow's own task and logic (flows/ingest.py). Offline sources are ingested whole
    (dates are applied in preprocess); a live fetch asks the source for the config's date
    range, and reruns only for the days missing from the lake."""
    csv_dir = str(Path(config.csv_dir).resolve()) if config.csv_dir else None
    return ingest.submit(
        ticker,
        config.source,
        data_dir,
        csv_dir,
        *fetch_window(config.source, config.start, config.end),
        source_fingerprint(config.source, ticker, csv_dir),
        options={"move_threshold": config.move_threshold, "on_corrupt": config.on_corrupt},
    )


@flow(name="retrain", log_prints=True, persist_result=False)
def retrain(config: RetrainConfig = RetrainConfig()) -> dict:
    """Train, evaluate and export one model per ticker; returns bundle paths and metrics."""
    preflight(config)
    data_dir = str(Path(config.data_dir).resolve())
    with ticker_locks(data_dir, config.tickers):
        return _retrain(config, data_dir)


def _retrain(config: RetrainConfig, data_dir: str) -> dict:
    """The flow's body, run under the tickers' locks: one concurrent branch per ticker."""
    options = step_options(
        data_dir, config.refresh, config.result_storage, config.cache_expiration_days
    )
    ingest, preprocess, windows, train, evaluate, export, backtest, promote = (
        step.with_options(**options)
        for step in (
            ingest_step,
            preprocess_step,
            windows_step,
            train_step,
            evaluate_step,
            export_step,
            backtest_step,
            promote_step,
        )
    )
    full = config.model_dump(mode="json")

    def finish(ingested, pre, trained, evaluated) -> list:
        """Walk-forward (when enabled), the bundle, then the registry's champion gate."""
        backtested = None
        if config.walk_forward_folds and config.mode == "global":
            print("walk-forward refits one ticker at a time; skipped in global mode")
        elif config.walk_forward_folds:
            backtested = backtest.submit(
                ingested,
                config.slice(*PREPROCESS_FIELDS, *TRAIN_FIELDS, *BACKTEST_FIELDS),
                data_dir,
            )
        exported = export.submit(ingested, pre, trained, evaluated, full, data_dir, backtested)
        promotion = promote.submit(exported, config.slice(*PROMOTION_FIELDS), data_dir)
        return [backtested, exported, promotion]

    runner = make_task_runner(config.task_runner, config.max_workers, config.dask_address)
    branches: dict[str, list] = {}
    with use_task_runner(runner):
        for ticker in config.tickers:
            ingested = submit_ingest(ingest, config, ticker, data_dir)
            pre = preprocess.submit(ingested, config.slice(*PREPROCESS_FIELDS), data_dir)
            win = windows.submit(pre, data_dir)
            branches[ticker] = [ingested, pre, win]
            if config.mode == "per_ticker":
                trained = train.submit(pre, win, config.slice(*TRAIN_FIELDS), data_dir)
                evaluated = evaluate.submit(pre, win, trained, data_dir)
                branches[ticker] += [trained, evaluated, *finish(ingested, pre, trained, evaluated)]
        if config.mode == "global":
            # one model over every ticker's windows, evaluated and exported per ticker
            ready = {t: b for t, b in branches.items() if _failure(b) is None}
            if ready:
                trained_all = train_global_step.with_options(**options).submit(
                    [b[1] for b in ready.values()],
                    [b[2] for b in ready.values()],
                    config.slice(*TRAIN_FIELDS),
                    data_dir,
                )
                trained_all.wait()
                all_models = trained_all.result(raise_on_failure=False)
                for ticker, branch in ready.items():
                    if not isinstance(all_models, dict):  # global training failed for all
                        branch.append(trained_all)
                        continue
                    trained = all_models["tickers"][ticker]
                    evaluated = evaluate.submit(branch[1], branch[2], trained, data_dir)
                    branch += [evaluated, *finish(branch[0], branch[1], trained, evaluated)]
        return _collect(branches)


def _failure(branch: list) -> BaseException | None:
    """The first failed step of a branch (the cause; later steps only say 'upstream')."""
    for future in branch:
        if future is None:
            continue
        future.wait()
        if future.state.is_failed() or future.state.is_crashed():
            error = future.state.result(raise_on_failure=False)
            return error if isinstance(error, BaseException) else RuntimeError(str(error))
    return None


def _collect(branches: dict[str, list]):
    """Per-ticker results; the run fails naming every ticker that failed, after the others
    finished (one bad ticker never stops the rest)."""
    results: dict[str, dict] = {}
    failed: list[str] = []
    for ticker, branch in branches.items():
        error = _failure(branch)
        if isinstance(error, CorruptSkippedError):  # on_corrupt=skip: the others go on
            print(str(error))
            results[ticker] = {"ticker": ticker, "skipped": str(error)}
        elif error is not None:
            message = f"{type(error).__name__}: {error}"
            results[ticker] = {"ticker": ticker, "error": message}
            failed.append(f"{ticker}: {message}")
        else:
            exported, promotion = branch[-2].result(), branch[-1].result()
            results[ticker] = {**exported, "promotion": promotion}
    if failed:
        return Failed(message="; ".join(failed), data=results)
    if all("skipped" in r for r in results.values()):
        return Failed(message=f"every ticker was skipped: {sorted(results)}", data=results)
    return results


# What the scheduled deployments run: the same flow, retried as a whole after a failure
# (a Yahoo outage at 17:30 is usually over by 17:45). Manual runs fail fast instead.
nightly_retrain = retrain.with_options(retries=2, retry_delay_seconds=900)


if __name__ == "__main__":
    from tasks.cli import main

    raise SystemExit(main(["retrain", *__import__("sys").argv[1:]]))
