"""The retrain flow: ingest -> preprocess -> windows -> train -> evaluate
-> [walk-forward backtest] -> export -> promote (the registry's champion gate).

Run it by hand with `python -m tickercast.flows.retrain --help`, from the `tickercast retrain` CLI,
or on a schedule (deployments/serve.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import Failed

from tickercast import layout
from tickercast.atomic import file_lock
from tickercast.config import (
    BACKTEST_FIELDS,
    MIRROR_FIELDS,
    PREPROCESS_FIELDS,
    PROMOTION_FIELDS,
    TRAIN_FIELDS,
    RetrainConfig,
)
from tickercast.errors import CorruptSkippedError
from tickercast.flows.common import preflight, submit_ingest
from tickercast.tasks.backtest import backtest_step
from tickercast.tasks.evaluate import evaluate_step
from tickercast.tasks.export import export_step
from tickercast.tasks.ingest import ingest_step
from tickercast.tasks.preprocess import calendar_step, preprocess_step
from tickercast.tasks.promote import promote_step
from tickercast.tasks.runners import make_task_runner, step_options, use_task_runner
from tickercast.tasks.train import train_global_step, train_step
from tickercast.tasks.windows import windows_step
from tickercast.tickers import validate_ticker
from tickercast.tracking import resolve_uri


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
            lock = layout.retrain_lock(data_dir, validate_ticker(ticker))
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
    # what the bundle's metadata records; where runs are mirrored is not part of a version
    full = config.model_dump(mode="json", exclude=set(MIRROR_FIELDS))
    mlflow_uri = resolve_uri(config.mlflow_uri)

    def finish(branch: Branch, trained: Any) -> None:
        """Evaluate, walk-forward (when enabled), the bundle, then the champion gate."""
        branch.trained = trained
        branch.evaluated = evaluate.submit(branch.pre, branch.win, trained, data_dir)
        if config.walk_forward_folds and config.mode == "global":
            print("walk-forward refits one ticker at a time; skipped in global mode")
        elif config.walk_forward_folds:
            branch.backtested = backtest.submit(
                branch.ingested,
                config.slice(*PREPROCESS_FIELDS, *TRAIN_FIELDS, *BACKTEST_FIELDS),
                data_dir,
            )
        branch.exported = export.submit(
            branch.ingested,
            branch.pre,
            trained,
            branch.evaluated,
            full,
            data_dir,
            branch.backtested,
        )
        branch.promotion = promote.submit(
            branch.exported, config.slice(*PROMOTION_FIELDS), data_dir, mlflow_uri
        )

    runner = make_task_runner(config.task_runner, config.max_workers, config.dask_address)
    branches: dict[str, Branch] = {}
    with use_task_runner(runner):
        ingested = {t: submit_ingest(ingest, config, t, data_dir) for t in config.tickers}
        pre_cfg = config.slice(*PREPROCESS_FIELDS)
        if config.mode == "global":  # one calendar: split dates shared by every ticker
            pre_cfg["split_dates"] = _shared_split_dates(ingested, pre_cfg)
        for ticker in config.tickers:
            pre = preprocess.submit(ingested[ticker], pre_cfg, data_dir)
            branch = branches[ticker] = Branch(ingested[ticker], pre, windows.submit(pre, data_dir))
            if config.mode == "per_ticker":
                finish(branch, train.submit(pre, branch.win, config.slice(*TRAIN_FIELDS), data_dir))
        if config.mode == "global":
            # one model over every ticker's windows, evaluated and exported per ticker
            ready = {t: b for t, b in branches.items() if _failure(b) is None}
            if ready:
                trained_all = train_global_step.with_options(**options).submit(
                    [b.pre for b in ready.values()],
                    [b.win for b in ready.values()],
                    config.slice(*TRAIN_FIELDS),
                    data_dir,
                )
                trained_all.wait()
                all_models = trained_all.result(raise_on_failure=False)
                for ticker, branch in ready.items():
                    if not isinstance(all_models, dict):  # global training failed for all
                        branch.trained = trained_all
                        continue
                    finish(branch, all_models["tickers"][ticker])
        return _collect(branches)


def _shared_split_dates(ingested: dict[str, Any], pre_cfg: dict) -> dict[str, str] | None:
    """Split dates over the tickers whose ingest succeeded (the failed ones fail their
    own branch with the ingest error)."""
    done = [f.result() for f in ingested.values() if _ok(f)]
    return calendar_step(done, pre_cfg) if done else None


def _ok(future: Any) -> bool:
    future.wait()
    return future.state.is_completed()


@dataclasses.dataclass
class Branch:
    """One ticker's step futures, named; steps not (yet) submitted stay None. `trained`
    is a future, or in global mode the ticker's slice of the global model's result."""

    ingested: Any
    pre: Any
    win: Any
    trained: Any = None
    evaluated: Any = None
    backtested: Any = None
    exported: Any = None
    promotion: Any = None

    def steps(self) -> list[Any]:
        """The submitted steps in pipeline order."""
        return [getattr(self, f.name) for f in dataclasses.fields(self)]


def _failure(branch: Branch) -> BaseException | None:
    """The first failed step of a branch (the cause; later steps only say 'upstream')."""
    for future in branch.steps():
        if future is None or not hasattr(future, "wait"):  # not submitted, or a plain result
            continue
        future.wait()
        if future.state.is_failed() or future.state.is_crashed():
            error = future.state.result(raise_on_failure=False)
            return error if isinstance(error, BaseException) else RuntimeError(str(error))
    return None


def _collect(branches: dict[str, Branch]):
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
            results[ticker] = {
                **branch.exported.result(),
                "promotion": branch.promotion.result(),
            }
    if failed:
        return Failed(message="; ".join(failed), data=results)
    if all("skipped" in r for r in results.values()):
        return Failed(message=f"every ticker was skipped: {sorted(results)}", data=results)
    return results


if __name__ == "__main__":  # `python -m flows.retrain`: the CLI's `retrain`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["retrain", *sys.argv[1:]]))
