"""Per-ticker branches: concurrent, independent, on threads or on a Dask cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_flow import task_states
from tickercast.config import RetrainConfig

TINY = {"start": "2019-06-01", "lookback": 15, "horizon": 3, "epochs": 1, "units": [4, 4]}


def test_one_bad_ticker_never_stops_the_others(prefect_server, tmp_path, shared_data):
    from tickercast.flows.retrain import retrain

    folder = tmp_path / "csv"
    folder.mkdir()
    shutil.copy(shared_data / "prices" / "GOOG.csv", folder / "GOOG.csv")
    lines = (shared_data / "prices" / "AMZN.csv").read_text().splitlines()
    (folder / "AMZN.csv").write_text("\n".join(lines[:1] + lines[-20:]) + "\n")  # too short
    config = RetrainConfig(
        tickers=["AMZN", "GOOG"],
        source="csv",
        csv_dir=str(folder),
        data_dir=str(tmp_path),
        **TINY,
    )
    state = retrain(config, return_state=True)
    assert state.is_failed()
    assert "AMZN: InsufficientHistoryError" in state.message and "GOOG" not in state.message
    assert (tmp_path / "models/GOOG/versions/1/model.keras").is_file()
    assert not (tmp_path / "models/AMZN/versions").exists()
    states = task_states(state)
    assert "Completed" in states.values()


def test_a_ticker_skipped_inside_a_prepare_batch_is_skipped_and_its_batch_trains(
    prefect_server, tmp_path, shared_data
):
    """on_corrupt=skip with an unreadable lake file: that ticker is reported skipped (not
    failed) and left as it was, the other ticker of its prepare step trains, and the run
    completes (skipping is a choice)."""
    from tests.test_reliability import corrupt
    from tickercast.flows.retrain import retrain
    from tickercast.market import lake
    from tickercast.market.ingest import ingest_ticker

    folder = tmp_path / "csv"
    folder.mkdir()
    for ticker in ("AMZN", "GOOG"):
        shutil.copy(shared_data / "prices" / f"{ticker}.csv", folder / f"{ticker}.csv")
    ingest_ticker("AMZN", "csv", tmp_path, csv_dir=str(folder))
    path = lake.partition_path(tmp_path, "AMZN")
    damaged = corrupt(path)
    config = RetrainConfig(
        tickers=["AMZN", "GOOG"],
        source="csv",
        csv_dir=str(folder),
        data_dir=str(tmp_path),
        on_corrupt="skip",
        max_workers=1,  # both tickers in one prepare step
        **TINY,
    )
    state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert set(result["AMZN"]) == {"ticker", "skipped"} and str(path) in result["AMZN"]["skipped"]
    assert path.read_bytes() == damaged, "left exactly as it was"
    assert (tmp_path / "models/GOOG/versions/1/model.keras").is_file()
    assert not (tmp_path / "models/AMZN/versions").exists()
    assert task_states(state)["prepare"] == "Completed"


@pytest.mark.slow
def test_dask_local_cluster_with_two_workers(prefect_server, tmp_path):
    from tickercast.flows.retrain import retrain

    config = RetrainConfig(
        tickers=["MSFT", "NVDA"],
        task_runner="dask",
        max_workers=2,
        data_dir=str(tmp_path),
        **TINY,
    )
    state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    for ticker in ("MSFT", "NVDA"):
        assert Path(result[ticker]["bundle"]).joinpath("model.keras").is_file()
    assert set(task_states(state).values()) == {"Completed"}


@pytest.mark.slow  # a child process running the flow on a one-worker local cluster, ~40 s
def test_a_flow_on_dask_workers_does_not_import_tensorflow_itself(prefect_server, tmp_path):
    """On Dask every step runs on a worker: the flow's own process (a deployment's) only
    orchestrates, and importing TensorFlow there cost each night 5 s and ~580 MB."""
    from prefect.settings import PREFECT_API_URL

    code = "\n".join(
        [
            "import sys",
            "from tickercast.config import RetrainConfig",
            "from tickercast.flows.retrain import retrain",
            f"config = RetrainConfig(tickers=['MSFT'], task_runner='dask', max_workers=1,"
            f" data_dir={str(tmp_path)!r}, **{TINY!r})",
            "state = retrain(config, return_state=True)",
            "assert state.is_completed(), state.message",
            "print('tensorflow in the flow process:', 'tensorflow' in sys.modules)",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tensorflow in the flow process: False" in proc.stdout, proc.stdout[-3000:]
    assert (tmp_path / "models/MSFT/versions/1/model.keras").is_file()


@pytest.mark.slow  # a temporary server and a two-worker local cluster, ~60 s
def test_local_dask_workers_report_to_the_runs_temporary_server(tmp_path):
    """A run without PREFECT_API_URL starts one temporary server; its local Dask workers
    report their task runs to it instead of each starting a temporary server of its own."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    flags = [f"--{k}={v}" for k, v in TINY.items() if k != "units"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tickercast.app.cli",
            "retrain",
            "--tickers",
            "MSFT",
            "NVDA",
            "--units",
            "4",
            "4",
            "--task-runner",
            "dask",
            "--max-workers",
            "2",
            "--data-dir",
            str(tmp_path),
            *flags,
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert output.count("Starting temporary server") == 1, output[-3000:]
    for ticker in ("MSFT", "NVDA"):
        assert (tmp_path / "models" / ticker / "versions/1/model.keras").is_file()


def fast_exit_registered() -> bool:
    from tickercast.fastexit import registered

    return registered()


@pytest.mark.slow  # two worker processes, ~15 s
def test_local_cluster_workers_get_the_api_and_quiet_dask(monkeypatch):
    """What the local cluster's processes see, started as the flow starts it (inside
    `quiet_dask`): the workers get the run's Prefect API, Dask's statistical profiler off
    (it samples their stacks every 10 ms), QUIET_DASK's slower tick and monitors, and the
    fast exit registered by the preload (tickercast.fastexit); the scheduler and nannies,
    in this process, run their tick and monitors at QUIET_DASK's intervals too."""
    import dask
    from distributed import Client, LocalCluster

    from tickercast.tasks.runners import (
        QUIET_DASK,
        local_cluster_kwargs,
        make_task_runner,
        quiet_dask,
    )

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    kwargs = local_cluster_kwargs(2)
    keys = sorted(QUIET_DASK)
    with (
        quiet_dask(make_task_runner("dask", 2)),
        LocalCluster(**kwargs) as cluster,
        Client(cluster) as client,
    ):
        seen = client.run(
            lambda: (
                tuple(str(dask.config.get(key)) for key in keys),
                os.environ.get("PREFECT_API_URL"),
                fast_exit_registered(),
            )
        )
        ttl = cluster.scheduler.worker_ttl
        here = [cluster.scheduler, *cluster.workers.values()]  # the nannies
        ticks = {server.periodic_callbacks["tick"].callback_time for server in here}
        monitors = {server.periodic_callbacks["monitor"].callback_time for server in here}
        memory = {nanny.memory_manager.memory_monitor_interval for nanny in here[1:]}
    assert len(seen) == kwargs["n_workers"]
    expected = tuple(str(QUIET_DASK[key]) for key in keys)
    assert set(seen.values()) == {(expected, "http://127.0.0.1:9/api", True)}
    assert "False" in expected  # the profiler among them
    assert ttl == 60  # tasks/runners.WORKER_TTL, not Dask's 5 minutes
    assert ticks == {1000} and monitors == {2000} and memory == {1.0}  # ms, ms, s


def test_quiet_dask_only_around_a_local_cluster():
    """QUIET_DASK is set in this process only while a local Dask cluster's runner is
    used (its scheduler and nannies start here), and put back after; threads and a
    cluster elsewhere leave Dask's config alone."""
    import dask
    import distributed  # noqa: F401 - its config defaults, as any Dask runner loads them

    from tickercast.tasks.runners import QUIET_DASK, make_task_runner, quiet_dask

    key = "distributed.admin.tick.interval"
    default = dask.config.get(key)
    assert default != QUIET_DASK[key]
    with quiet_dask(make_task_runner("dask", 2)):
        assert {k: dask.config.get(k) for k in QUIET_DASK} == QUIET_DASK
    assert dask.config.get(key) == default
    for runner in (make_task_runner("threads", 2), make_task_runner("dask", 2, "tcp://h:1")):
        with quiet_dask(runner):
            assert dask.config.get(key) == default


@pytest.mark.slow  # a worker stalled then restarted by its nanny, ~20 s
def test_local_cluster_restarts_a_worker_stalled_holding_the_gil(tmp_path):
    """A worker whose every thread waits on the GIL (as one did, in the garbage collector,
    freeing a TensorFlow graph) sends no heartbeat; the scheduler has its nanny restart it
    once the worker TTL passes, and its task runs again on the new worker. The TTL is cut
    here to Dask's floor (10 heartbeats, 5 s) to keep the test short."""
    from distributed import Client, LocalCluster

    from tickercast.tasks.runners import WORKER_TTL, local_cluster_kwargs

    marker = tmp_path / "stalled-pid"

    def stall_once(path: str) -> int:
        import ctypes

        if not os.path.exists(path):
            Path(path).write_text(str(os.getpid()))
            ctypes.PyDLL(None).sleep(300)  # libc's sleep, the GIL held: the worker stops
        return os.getpid()

    kwargs = local_cluster_kwargs(1)
    assert kwargs["scheduler_kwargs"] == {"worker_ttl": WORKER_TTL}
    kwargs["scheduler_kwargs"] = {"worker_ttl": "5s"}
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        pid = client.submit(stall_once, str(marker), pure=False).result(timeout=120)
        events = [event for _, event in client.get_events("scheduler")]
    assert pid != int(marker.read_text())  # the second attempt ran in a new process
    assert any(e.get("action") == "worker-ttl-timed-out" for e in events), events


def test_results_can_live_at_an_fsspec_url(prefect_server, tmp_path):
    """memory:// stands in for s3://: the same RemoteFileSystem path, no network."""
    import fsspec

    from tickercast.flows.retrain import retrain

    config = RetrainConfig(
        tickers=["MSFT"], data_dir=str(tmp_path), result_storage="memory://tc-results", **TINY
    )
    retrain(config)
    state = retrain(config, return_state=True)
    assert task_states(state)["train"] == "Cached"
    assert fsspec.filesystem("memory").ls("/tc-results")
    assert not (tmp_path / "results").exists()


# --- the helper itself (no Prefect) ------------------------------------------------------


class Step:
    """A submitted step: its value, or the error it failed with."""

    def __init__(self, value=None, error=None):
        self.value, self.error, self.asked = value, error, False

    def result(self):
        self.asked = True
        if self.error is not None:
            raise self.error
        return self.value


def test_a_failing_ticker_is_one_line_and_the_others_finish():
    from tickercast.errors import CorruptSkippedError
    from tickercast.fanout import each_ticker

    def work(ticker: str) -> int:
        if ticker == "BAD":
            raise ValueError("history too short\nsecond line of detail")
        if ticker == "SKIP":
            raise CorruptSkippedError("lake file x unreadable; left as it was")
        return len(ticker)

    outcomes = each_ticker(["AAPL", "BAD", "SKIP", "MSFTX"], work)
    assert outcomes.values() == {"AAPL": 4, "MSFTX": 5}
    assert outcomes.errors() == {"BAD": "ValueError: history too short"}
    assert [o.ticker for o in outcomes.skipped()] == ["SKIP"]
    assert outcomes.failure() == "1 of 4 ticker(s) failed: BAD: ValueError: history too short"
    assert outcomes.by_ticker()["SKIP"] == {
        "ticker": "SKIP",
        "skipped": "lake file x unreadable; left as it was",
    }
    assert each_ticker(["A"], work).failure() is None
    assert each_ticker(["SKIP"], work).failure() == "every ticker was skipped: ['SKIP']"


def test_a_branch_fails_with_its_first_failed_step_the_cause():
    from tickercast.fanout import settle

    cause, upstream = OSError("no such file"), RuntimeError("upstream task failed")
    steps = [Step(1), Step(error=cause), Step(error=upstream), None, Step(4)]
    with pytest.raises(OSError, match="no such file"):
        settle(steps)
    assert not steps[-1].asked  # nothing after the cause is waited for
    assert settle([Step(1), None, Step(3)]) == 3


def test_a_ticker_of_a_batched_step_settles_alone_with_its_own_one_line():
    """A step that ran several tickers (the keep step) returns `batch_result`; each
    ticker's `Share` is its value, or its failure raised for it alone with the step's
    one line (not wrapped in a second kind)."""
    from tickercast.fanout import BatchedFailure, Share, batch_result, each_ticker, settle

    def work(ticker: str) -> int:
        if ticker == "BAD":
            raise KeyError("verdict")
        return len(ticker)

    batch = Step(batch_result(each_ticker(["AAPL", "BAD", "MSFTX"], work)))
    assert Share(batch, "AAPL").result() == 4 and settle([Step(0), Share(batch, "MSFTX")]) == 5
    with pytest.raises(BatchedFailure) as failure:
        settle([Step(0), Share(batch, "BAD")])
    outcomes = each_ticker(["AAPL", "BAD"], lambda t: settle([Share(batch, t)]))
    assert outcomes.errors() == {"BAD": "KeyError: 'verdict'"} == {"BAD": str(failure.value)}
    assert outcomes.values() == {"AAPL": 4}


def test_a_skipped_ticker_of_a_batched_step_stays_skipped_and_a_share_names_its_part():
    """The prepare step batches ingest: a ticker skipped by choice (on_corrupt=skip) is
    reported skipped, not failed, through its share; a share may name one part of its
    ticker's value (the ingested or the preprocessed record)."""
    from tickercast.errors import CorruptSkippedError
    from tickercast.fanout import Share, batch_result, each_ticker, settle

    def work(ticker: str) -> dict:
        if ticker == "SKIP":
            raise CorruptSkippedError("ticker SKIP: lake/SKIP.parquet unreadable (on_corrupt=skip)")
        return {"ingested": f"{ticker}.parquet", "pre": len(ticker)}

    batch = Step(batch_result(each_ticker(["AAPL", "SKIP"], work)))
    assert Share(batch, "AAPL", "ingested").result() == "AAPL.parquet"
    assert Share(batch, "AAPL", "pre").result() == 4
    outcomes = each_ticker(["AAPL", "SKIP"], lambda t: settle([Share(batch, t, "pre")]))
    (skipped,) = outcomes.skipped()
    assert skipped.ticker == "SKIP" and "on_corrupt=skip" in skipped.error
    assert outcomes.failed() == [] and outcomes.failure() is None


def test_a_batched_steps_value_is_read_from_its_future_once_for_all_its_shares():
    """A future's `result()` costs ~0.24 ms a call in Prefect; a 500-ticker night asked each
    batch for every share at every step (~2,500 calls, much of it after its last task).
    Each batch is read once; a failed batch raises for every share that asks."""
    from tickercast.fanout import BatchedFailure, Share, batch_result, each_ticker, settle

    class Counted(Step):
        calls = 0

        def result(self):
            Counted.calls += 1
            return super().result()

    tickers = [f"T{i}" for i in range(16)]
    batch = Counted(batch_result(each_ticker(tickers, len)))
    outcomes = each_ticker(tickers, lambda t: settle([Share(batch, t), Share(batch, t)]))
    assert outcomes.values() == {t: len(t) for t in tickers} and Counted.calls == 1
    other = Counted(batch_result(each_ticker(["AAPL"], len)))  # another batch: its own value
    assert Share(other, "AAPL").result() == 4 and Counted.calls == 2
    failed = Counted(error=RuntimeError("batch crashed"))
    for _ in range(2):
        with pytest.raises(RuntimeError, match="batch crashed"):
            Share(failed, "AAPL").result()
    assert Counted.calls == 4
    with pytest.raises(BatchedFailure):  # a failed share of a read batch still raises alone
        Share(Counted(batch_result(each_ticker(["X"], lambda t: 1 / 0))), "X").result()


class _Done:
    """A finished step's future as Promotes reads it (completed, or failed)."""

    def __init__(self, value=None, ok: bool = True, done: bool = True):
        self.value, self.ok, self._done = value, ok, done
        self.wrapped_future = self
        self.state = self

    def done(self) -> bool:
        return self._done

    def wait(self) -> None:
        self._done = True

    def is_completed(self) -> bool:
        return self.ok

    def result(self):
        return self.value


class _Promote:
    """A promote step that records what each submit was handed."""

    def __init__(self):
        self.batches: list[list] = []

    def submit(self, exported, gate, data_dir, mlflow_uri, wait_for):
        self.batches.append(exported)
        return _Done({"values": {e: {"action": "promote"} for e in exported}, "errors": {}})


def test_promotions_are_batched_by_finished_exports_and_a_failed_export_skips_the_gate():
    """Sixteen finished exports make one promote step at once (one still running waits),
    the night's end flushes the rest, and a failed export is handed to no gate: its ticker
    fails with the export's error, the others of its batch are judged."""
    from tickercast.flows.retrain import PROMOTE_BATCH, Branch, Promotes

    promote = _Promote()
    promotes = Promotes(promote, gate=None, data_dir="d", mlflow_uri=None)
    branches = {}
    for i in range(PROMOTE_BATCH + 3):
        ticker = f"T{i}"
        running = i == 1  # finished only when the night's end waits for it
        failed = i == PROMOTE_BATCH + 1
        branches[ticker] = Branch(ingested=None)
        branches[ticker].exported = _Done(ticker, ok=not failed, done=not running)
        promotes.add(ticker, branches[ticker])
        if i == PROMOTE_BATCH:  # the 17th add: 16 exports finished
            assert promote.batches == [[f"T{j}" for j in range(PROMOTE_BATCH + 1) if j != 1]]
    assert len(promote.batches) == 1
    promotes.submit()
    assert promote.batches[1] == ["T1", f"T{PROMOTE_BATCH + 2}"]
    failed = branches[f"T{PROMOTE_BATCH + 1}"]
    assert failed.promotion is None
    assert branches["T1"].promotion.result() == {"action": "promote"}
    assert promotes.waiting == []


def test_one_failed_export_fails_its_ticker_and_one_promote_step_judges_the_others(
    prefect_server, tmp_path, monkeypatch
):
    """A real run of three tickers: NVDA's bundle cannot be written; MSFT and AMZN are
    judged by one promote task run and become champions, NVDA fails naming the export's
    error and gets no gate."""
    from prefect.states import State

    from tests.prefect_runs import task_runs
    from tickercast.delivery import servable
    from tickercast.delivery.registry import read_registry
    from tickercast.flows.retrain import retrain

    real = servable.build_bundle

    def refusing(data_dir, ticker, *args, **kwargs):
        if ticker == "NVDA":
            raise OSError("NVDA: disk full (test)")
        return real(data_dir, ticker, *args, **kwargs)

    monkeypatch.setattr(servable, "build_bundle", refusing)
    config = RetrainConfig(tickers=["MSFT", "NVDA", "AMZN"], data_dir=str(tmp_path), **TINY)
    state: State = retrain(config, return_state=True)
    assert state.is_failed()
    assert "1 of 3 ticker(s) failed: NVDA: OSError: NVDA: disk full (test)" in state.message
    promotes = [run for run in task_runs(state) if run.name.startswith("promote-")]
    assert len(promotes) == 1 and promotes[0].state.is_completed()
    for ticker in ("MSFT", "AMZN"):
        assert read_registry(str(tmp_path), ticker)["history"][0]["action"] == "promote"
    assert not (tmp_path / "models/NVDA/versions").exists()
