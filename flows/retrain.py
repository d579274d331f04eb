"""The retrain flow: ingest -> preprocess (and window anchors) -> train -> evaluate
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
from tickercast.config import RetrainConfig
from tickercast.delivery.warmstart import find_source
from tickercast.fanout import Share, each_ticker, settle
from tickercast.flows.common import fingerprints, ingest_window, preflight, submit_ingest
from tickercast.quiet import quiet_tensorflow
from tickercast.sections import Gate, WarmStart
from tickercast.splits import SplitDates
from tickercast.tasks.backtest import backtest_step
from tickercast.tasks.evaluate import evaluate_step
from tickercast.tasks.events import announce_run
from tickercast.tasks.export import export_step
from tickercast.tasks.ingest import ingest_step
from tickercast.tasks.prepare import prepare_step
from tickercast.tasks.preprocess import calendar_step, preprocess_step
from tickercast.tasks.promote import keep_step, promote_step
from tickercast.tasks.runners import make_task_runner, step_options, use_task_runner
from tickercast.tasks.train import train_batch_step, train_global_step, train_step
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
    """Train, evaluate and export one model per ticker; returns each ticker's bundle,
    metrics and promotion. A ticker that fails is named with its cause; the others
    finish, and the run then ends Failed."""
    # before any step imports it (a deployment's own process); on Dask the workers run
    # every step and this process never does: importing it here cost each night 5 s at
    # its start and ~580 MB (measured by hand on this machine)
    quiet_tensorflow(load=config.execution.task_runner != "dask")
    preflight(config)
    data_dir = config.execution.resolved_dir()
    with ticker_locks(data_dir, config.tickers):
        return _retrain(config, data_dir)


@dataclasses.dataclass
class Steps:
    """The flow's tasks with this run's result storage, cache refresh and expiry."""

    ingest: Any
    preprocess: Any
    prepare: Any
    train: Any
    train_batch: Any
    train_global: Any
    evaluate: Any
    backtest: Any
    export: Any
    promote: Any
    keep: Any

    @classmethod
    def of(cls, config: RetrainConfig, data_dir: str) -> Steps:
        run = config.execution
        options = step_options(data_dir, run.refresh, run.result_storage, run.cache_expiration_days)
        tasks = (
            ingest_step,
            preprocess_step,
            prepare_step,
            train_step,
            train_batch_step,
            train_global_step,
            evaluate_step,
            backtest_step,
            export_step,
            promote_step,
            keep_step,
        )
        return cls(*(task.with_options(**options) for task in tasks))


@dataclasses.dataclass
class Branch:
    """One ticker's submitted steps, named, each a future of its step's record; steps not
    submitted stay None. In per-ticker mode `ingested` and `pre` are the ticker's shares
    of a prepare step (`Share`); a fit from a champion or an earlier version is its share of
    a train-batch step (`WarmFits`); in global mode `trained` is the global model's future.
    `promotion` is its share of a promote step that judges a batch of bundles (`Promotes`).
    A fit that kept the champion is followed by `kept` alone (no evaluate, export,
    promote): its share of a keep step that keeps a batch of tickers (`Keeps`)."""

    ingested: Any
    pre: Any = None
    trained: Any = None
    kept: Any = None
    evaluated: Any = None
    backtested: Any = None
    exported: Any = None
    promotion: Any = None

    def steps(self) -> list[Any]:
        """The steps in pipeline order."""
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def prepared(self) -> Any:
        """Its preprocessed rows and windows, once ingest and preprocess succeeded (else
        their error)."""
        return settle([self.ingested, self.pre])

    def result(self) -> dict:
        """The exported bundle and the gate's decision (the first failed step raises)."""
        settle(self.steps())
        if self.kept is not None:  # the champion's bundle and the unchanged registry
            return self.kept.result()
        return {
            **self.exported.result().model_dump(mode="json"),
            "promotion": self.promotion.result(),
        }


def _retrain(config: RetrainConfig, data_dir: str) -> dict:
    """The flow's body, run under the tickers' locks: one concurrent branch per ticker,
    its ingest keyed by the content its source holds once the locks are held (a run that
    waited for another may find a CSV changed meanwhile)."""
    prints = fingerprints(config)
    steps = Steps.of(config, data_dir)
    runner = make_task_runner(
        config.execution.task_runner, config.execution.max_workers, config.execution.dask_address
    )
    with use_task_runner(runner):
        if config.scope.mode == "global":
            branches = _calendared(steps, config, data_dir, prints)
        else:
            branches = _prepared(steps, config, data_dir, prints)
        mlflow_uri = resolve_uri(config.mirror.mlflow_uri)
        keeps = Keeps(steps.keep, data_dir, mlflow_uri)
        promotes = Promotes(steps.promote, config.gate, data_dir, mlflow_uri)
        for ticker, branch in _trained(steps, config, branches, data_dir).items():
            _finish(steps, ticker, branch, config, data_dir, keeps, promotes)
        keeps.submit()
        promotes.submit()
        outcomes = each_ticker(config.tickers, lambda t: branches[t].result())
    announce_run("retrain", outcomes)
    # a failed ticker: its one-line cause; the run fails naming each, after the others
    why = outcomes.failure()
    return Failed(message=why, data=outcomes.by_ticker()) if why else outcomes.by_ticker()


PREPARE_BATCH = 16
"""Most tickers per prepare step (ingest and preprocess): a task run costs a worker
~0.1 s beside its work, about what one ticker's ingest or preprocess costs on a second
night; 16 leave ~10 ms a ticker."""


def prepare_batch(tickers: int, workers: int) -> int:
    """Tickers per prepare step: PREPARE_BATCH, or fewer where that leaves every worker
    (`max_workers`: threads, or Dask processes) a batch of a small universe to prepare
    at once, as the separate steps did."""
    return max(1, min(PREPARE_BATCH, -(-tickers // max(1, workers))))


def _prepared(
    steps: Steps, config: RetrainConfig, data_dir: str, prints: dict[str, str | None]
) -> dict[str, Branch]:
    """Per-ticker mode: each ticker's ingest and preprocess, `prepare_batch` tickers to a
    prepare step; each branch holds its ticker's shares of it."""
    window = ingest_window(config)
    size = prepare_batch(len(config.tickers), config.execution.max_workers)
    branches: dict[str, Branch] = {}
    for first in range(0, len(config.tickers), size):
        batch = config.tickers[first : first + size]
        prepared = steps.prepare.submit(
            batch,
            [prints[t] for t in batch],
            config.data,
            config.ingest,
            window,
            config.preprocessing,
            data_dir,
        )
        for ticker in batch:
            branches[ticker] = Branch(
                Share(prepared, ticker, "ingested"), Share(prepared, ticker, "pre")
            )
    return branches


def _calendared(
    steps: Steps, config: RetrainConfig, data_dir: str, prints: dict[str, str | None]
) -> dict[str, Branch]:
    """Global mode: every ticker's ingest, the split dates they share (`calendar_step`),
    then each ticker's preprocess by those dates."""
    branches = {
        t: Branch(submit_ingest(steps.ingest, config, t, prints[t], data_dir))
        for t in config.tickers
    }
    split = _shared_split(config, branches)
    for branch in branches.values():
        branch.pre = steps.preprocess.submit(branch.ingested, config.preprocessing, split, data_dir)
    return branches


def _value(step: Any) -> Any:
    """What a step's input receives of an earlier step: a future as it is (Prefect waits
    for it and links the runs), a share of a batched step as its value (Prefect would
    otherwise hand the task the share itself, its batch resolved inside)."""
    return step.result() if isinstance(step, Share) else step


def _after(step: Any) -> list:
    """`wait_for` of a step handed `_value(step)`: the batched step's future, so the run
    graph links the two task runs as it links a future passed as an input (the batch is
    already done when its value is known: nothing waits)."""
    return [step.batch] if isinstance(step, Share) else []


def _after_each(steps: Iterable[Any]) -> list:
    """`wait_for` of a step handed `_value` of each of `steps`: each batched step's future
    once (several tickers' shares of one batch name the same future)."""
    unique = {id(future): future for step in steps for future in _after(step)}
    return list(unique.values())


def _shared_split(config: RetrainConfig, branches: dict[str, Branch]) -> SplitDates | None:
    """Global mode's split dates, over the tickers whose ingest succeeded (the others
    fail their own branch with the ingest error)."""
    ingested = each_ticker(config.tickers, lambda t: branches[t].ingested.result()).values()
    return calendar_step(list(ingested.values()), config.preprocessing) if ingested else None


def _warm(config: RetrainConfig) -> WarmStart | None:
    """The warm-start settings when tonight's fits may start from (and keep) champions:
    per-ticker mode with warm_start on; None otherwise (global mode always refits)."""
    on = config.scope.mode == "per_ticker" and config.warm.warm_start != "off"
    return config.warm if on else None


def _trained(
    steps: Steps, config: RetrainConfig, branches: dict[str, Branch], data_dir: str
) -> dict[str, Branch]:
    """Submit training: one network per ticker, or one global network over the tickers
    whose windows are ready (a refused ticker fails alone, naming why). Returns the
    branches that train, by ticker."""
    spec = config.fit_spec()
    if config.scope.mode == "per_ticker":
        warm = _warm(config)
        size = prepare_batch(len(config.tickers), config.execution.max_workers)
        batched = WarmFits(steps.train_batch, spec, data_dir, warm, size)
        for ticker, branch in branches.items():
            try:  # one record, not its batch: each ticker's fit is keyed on its own inputs
                pre = _value(branch.pre)
            except Exception:  # noqa: BLE001 - the ticker's outcome raises it (Branch.result)
                continue
            # the champion as the night starts (its weights' hash keys the fit)
            champion = find_source(data_dir, ticker) if warm else None
            if champion is not None:  # most keep it after scoring it: batched
                batched.add(branch, pre, champion)
                continue
            branch.trained = steps.train.submit(
                pre, spec, data_dir, warm, champion, wait_for=_after(branch.pre)
            )
        batched.submit()
        return {t: b for t, b in branches.items() if b.trained is not None}
    prepared = each_ticker(config.tickers, lambda t: branches[t].prepared())
    ready = {t: branches[t] for t in prepared.values()}
    if not ready:
        return {}
    pres = [b.pre for b in ready.values()]
    trained = steps.train_global.submit(pres, spec, config.scope, data_dir)
    for branch in ready.values():
        branch.trained = trained
    return ready


@dataclasses.dataclass
class WarmFits:
    """The night's fits that start from a champion (or an earlier version), waiting to be
    trained `size` at a time in one train-batch step; each branch's `trained` is its share
    of that step. A first night has none: every fit is its own train step."""

    train_batch: Any
    spec: Any
    data_dir: str
    warm: WarmStart | None
    size: int
    waiting: list[tuple[Branch, Any, Any]] = dataclasses.field(default_factory=list)

    def add(self, branch: Branch, pre: Any, champion: Any) -> None:
        self.waiting.append((branch, pre, champion))
        if len(self.waiting) >= self.size:
            self.submit()

    def submit(self) -> None:
        """Submit the waiting fits' train-batch step (none waiting: nothing)."""
        if not self.waiting:
            return
        batch = self.train_batch.submit(
            [pre for _, pre, _ in self.waiting],
            self.spec,
            self.data_dir,
            self.warm,
            [champion for _, _, champion in self.waiting],
            wait_for=_after_each(branch.pre for branch, _, _ in self.waiting),
        )
        for branch, pre, _ in self.waiting:
            branch.trained = Share(batch, pre.ticker)
        self.waiting = []


KEEP_BATCH = 16
"""Tickers per keep step: a task run costs a worker ~0.15 s beside its work, about what
keeping one champion costs; 16 make that ~10 ms a ticker, and a batch starts as soon as
16 fits kept their champion, not at the night's end."""


@dataclasses.dataclass
class Keeps:
    """The night's fits that kept their champion, waiting to be kept KEEP_BATCH at a time
    in one keep step; each branch's `kept` is its share of that step."""

    keep: Any
    data_dir: str
    mlflow_uri: str | None
    waiting: list[Branch] = dataclasses.field(default_factory=list)

    def add(self, branch: Branch) -> None:
        self.waiting.append(branch)
        if len(self.waiting) >= KEEP_BATCH:
            self.submit()

    def submit(self) -> None:
        """Submit the waiting branches' keep step (none waiting: nothing)."""
        if not self.waiting:
            return
        batch = self.keep.submit(
            [_value(b.trained) for b in self.waiting],
            self.data_dir,
            self.mlflow_uri,
            wait_for=_after_each(b.trained for b in self.waiting),
        )
        for branch in self.waiting:
            branch.kept = Share(batch, branch.trained.result().ticker)
        self.waiting = []


PROMOTE_BATCH = 16
"""Tickers per promote step: a gate costs ~0.1 s of work, a task run ~0.2 s of a worker
and ~0.15 s of the server's and flow run's CPU beside it (on two workers that CPU is
taken from the fits: bench/RESULTS.md, `dask_cluster`); 16 make a night's promotions a
sixteenth of the task runs. A batch starts once 16 bundles are written, so a champion is
promoted some exports after its own, not at the night's end."""


@dataclasses.dataclass
class Promotes:
    """Tonight's new bundles waiting for the champion gate, PROMOTE_BATCH at a time in one
    promote step; each branch's `promotion` is its share of that step. A batch is handed
    finished exports' records (as `Keeps` is handed fits), so a failed export leaves its
    ticker without a gate (it fails with the export's error, `Branch.result`) and never
    its batch; the flow never waits for an export before the night's last batch."""

    promote: Any
    gate: Gate
    data_dir: str
    mlflow_uri: str | None
    waiting: list[tuple[str, Branch]] = dataclasses.field(default_factory=list)

    def add(self, ticker: str, branch: Branch) -> None:
        """Queue `branch` (its export submitted); submit a batch if PROMOTE_BATCH of the
        queued exports have finished."""
        self.waiting.append((ticker, branch))
        finished = [w[1].exported.wrapped_future.done() for w in self.waiting]
        if sum(finished) >= PROMOTE_BATCH:
            done = [w for w, f in zip(self.waiting, finished, strict=True) if f]
            self.waiting = [w for w, f in zip(self.waiting, finished, strict=True) if not f]
            self._submit(done)

    def submit(self) -> None:
        """The night's last batches: every queued export waited for, PROMOTE_BATCH at a
        time (none queued: nothing)."""
        waiting, self.waiting = self.waiting, []
        for first in range(0, len(waiting), PROMOTE_BATCH):
            self._submit(waiting[first : first + PROMOTE_BATCH])

    def _submit(self, branches: list[tuple[str, Branch]]) -> None:
        """One promote step for those of `branches` whose export completed."""
        exported = {t: b for t, b in branches if _completed(b.exported)}
        if not exported:
            return
        batch = self.promote.submit(
            [b.exported.result() for b in exported.values()],
            self.gate,
            self.data_dir,
            self.mlflow_uri,
            wait_for=[b.exported for b in exported.values()],
        )
        for ticker, branch in exported.items():
            branch.promotion = Share(batch, ticker)


def _completed(future: Any) -> bool:
    """Whether `future`'s step completed, once it finished (waits for it)."""
    future.wait()
    return future.state.is_completed()


def _finish(
    steps: Steps,
    ticker: str,
    branch: Branch,
    config: RetrainConfig,
    data_dir: str,
    keeps: Keeps,
    promotes: Promotes,
) -> None:
    """Evaluate, walk-forward (when enabled), the bundle, then the champion gate (a share
    of a promote step); or, when a ticker's fit kept its champion, only a share of a keep
    step (its live record, the mirror). Per ticker this waits for the fit (the ticker's
    fits queue ahead of what follows)."""
    if _warm(config) is not None:  # only a warm fit can keep the champion
        try:
            trained = branch.trained.result()
        except Exception:  # noqa: BLE001 - the ticker's outcome raises it (Branch.result)
            return
        if trained.kept_champion is not None:
            keeps.add(branch)
            return
    branch.evaluated = steps.evaluate.submit(
        _value(branch.pre),
        _value(branch.trained),
        config.evaluation,
        data_dir,
        wait_for=_after(branch.trained),
    )
    if config.walk_forward.walk_forward_folds and config.scope.mode == "global":
        print("walk-forward refits one ticker at a time; skipped in global mode")
    elif config.walk_forward.walk_forward_folds:
        branch.backtested = steps.backtest.submit(
            _value(branch.ingested),
            config.preprocessing,
            config.fit_spec(),
            config.walk_forward,
            config.evaluation,
            data_dir,
        )
    branch.exported = steps.export.submit(
        _value(branch.ingested),
        _value(branch.pre),
        _value(branch.trained),
        branch.evaluated,
        branch.backtested,
        config,
        data_dir,
    )
    promotes.add(ticker, branch)


if __name__ == "__main__":  # `python -m flows.retrain`: the CLI's `retrain`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["retrain", *sys.argv[1:]]))
