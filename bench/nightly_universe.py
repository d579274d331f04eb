"""The nightly universe: the retrain deployment over N tickers, as a schedule runs it.

What runs: `prefect server start` on a free loopback port with its own PREFECT_HOME,
`deployments/serve.py` in its own process (the user's way of serving the nightly
deployments; its crons are moved to 1 January so that none fires here; it keeps the
nightly's local Dask cluster, whose workers restart after each night), and a run of
`retrain/nightly-retrain` triggered through the API with the deployment's parameters
(deployments/nightly.json: its start date, the default preset and model) where only the
universe changes: `tickers`, `source=csv`, `csv_dir` and `data_dir` (and any `--set`).

The universe: N synthetic tickers with 10-year Yahoo-like histories (tests/synthetic.py:
GARCH returns, consistent OHLCV, Yahoo's quirks that ingest counts), plus the five sample
tickers (data/sample, as Yahoo exports), all as Yahoo-export CSVs.

Measured per night, from the Prefect API's task runs and the process tree:
- wall: trigger -> final state (what a schedule waits for), and the flow run's own wall;
- per stage (ingest, preprocess = preprocess (with the window anchors) + calendar, or
  ingest+preprocess = the per-ticker mode's prepare steps (both, 16 tickers a task), train,
  evaluate, export, promote = promote or keep): the time the stage was running (union of
  its task runs) and its task-seconds (sum); tasks of different tickers overlap, so
  stages overlap too;
- orchestration: the flow run's wall minus the time any task was running (union of all
  task runs: Prefect's own work, the flow's start and end, gaps between tasks);
- training windows/s: windows x epochs / fit seconds (history.json of each new version,
  validation and per-epoch checkpoints included);
- peak RSS of serve.py's child processes (sampled every 0.25 s: the flow run and the
  Dask workers; serve.py itself, which holds the kept cluster's scheduler and nannies, is
  reported apart), and the CPU seconds of serve.py and its children and of the Prefect
  server;
- per ticker against the tutorial's own fit of one ticker, timed in the same run before
  and after the nights, their mean the yardstick (`tutorial_fit`: LSTM(50) -> Dense(1),
  Adam, batch 32, 20 epochs on 60-day windows of one synthetic ticker's min-max scaled
  close; this machine's speed drifts within a run); target <= 1/3.
Then the second night: one new trading day appended to every CSV, the same run again
(the nightly config warm-starts each fit from the first night's champion: how many did is
counted from each version's history.json).

Several sizes (`--sizes 2,4,7`: synthetic tickers, the five samples added to each) give a
scaling curve; a least-squares line value = a + b x tickers projects 500 (said as
projected): the wall, peak RSS, orchestration's share of the night, and the second night
against the first; a size of 495 (500 tickers) is measured instead, and the line over
the smaller sizes is said beside it. A night not counted (the samples' first night, in
folders of their own) runs first on the fresh server (`--no-warm-up`: none).
Run: python bench/nightly_universe.py [--sizes 2,4,7] [--set epochs=5] [--json out.json]
(writes RESULTS.md rows `nightly_universe` and `nightly_universe_second`);
`--from-json out.json` writes the rows of an earlier run's measurements again;
`--kept-cluster 2` runs every night on one long-lived `dask scheduler` and two one-thread
`dask worker`s (started by the bench, pointed at with dask_address) instead of the local
cluster serve.py keeps (rows tagged `*_kept_cluster`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.dask_processes import cluster, stop  # noqa: E402

DEPLOYMENT = "retrain/nightly-retrain"
SAMPLES = ("AAPL", "AMZN", "GOOG", "MSFT", "NVDA")
NEVER = "0 0 1 1 *"  # the served crons: 1 January, midnight (nothing fires during a run)
STAGES = {
    "ingest": "ingest",
    "calendar": "preprocess",
    "preprocess": "preprocess",
    "prepare": "ingest+preprocess",  # per-ticker mode: both, 16 tickers to a task run
    "train": "train",
    "train-global": "train",
    "train-batch": "train",  # fits from champions (a second night's), 16 to a task run
    "evaluate": "evaluate",
    "backtest": "evaluate",
    "export": "export",
    "promote": "promote",
    "keep": "promote",  # a kept champion's one task in place of evaluate, export, promote
}
TARGET_TICKERS = 500


# --------------------------------------------------------------------------- the universe


def synthetic_names(n: int) -> list[str]:
    return [f"U{i:03d}" for i in range(1, n + 1)]


def sample_frame(ticker: str, extra_days: int):
    """A bundled sample ticker as a Yahoo export's columns, plus `extra_days` new trading
    days continuing from its last close (the sample ends in 2020)."""
    import pandas as pd

    from tickercast.market.locate import sample_path

    lake = pd.read_parquet(sample_path(ticker))
    frame = pd.DataFrame(
        {
            "Date": pd.to_datetime(lake["date"]).dt.strftime("%Y-%m-%d"),
            "Open": lake["open"],
            "High": lake["high"],
            "Low": lake["low"],
            "Close": lake["close"],
            "Adj Close": lake["adj_close"],
            "Volume": lake["volume"].astype(float),
        }
    )
    if extra_days:
        rng = np.random.default_rng(len(ticker) * 1000 + extra_days)
        last = frame.iloc[-1]
        days = pd.bdate_range(pd.Timestamp(last["Date"]) + pd.offsets.BDay(1), periods=extra_days)
        close = last["Close"] * np.exp(np.cumsum(rng.normal(0, 0.02, extra_days)))
        opens = np.r_[last["Close"], close[:-1]]
        new = pd.DataFrame(
            {
                "Date": days.strftime("%Y-%m-%d"),
                "Open": opens,
                "High": np.maximum(opens, close) * 1.005,
                "Low": np.minimum(opens, close) * 0.995,
                "Close": close,
                "Adj Close": close * last["Adj Close"] / last["Close"],
                "Volume": np.full(extra_days, float(last["Volume"])),
            }
        )
        frame = pd.concat([frame, new], ignore_index=True)
    return frame


def write_universe(csv_dir: Path, synthetic: list[str], extra_days: int = 0) -> None:
    """Every ticker's Yahoo-export CSV, `extra_days` past the first night's histories."""
    from tests.synthetic import UNIVERSE_YEARS, write_yahoo_universe, yahoo_csv

    write_yahoo_universe(csv_dir, synthetic, days=UNIVERSE_YEARS * 252 + extra_days)
    for ticker in SAMPLES:
        (csv_dir / f"{ticker}.csv").write_text(yahoo_csv(sample_frame(ticker, extra_days)))


# ------------------------------------------------------------------- server and serving


class Served(NamedTuple):
    api: str
    serve: subprocess.Popen  # deployments/serve.py: flow runs are its descendants
    server: subprocess.Popen  # `prefect server start`
    env: dict


@contextlib.contextmanager
def served(tmp: Path, serve_args: tuple[str, ...] = ()) -> Iterator[Served]:
    """A real Prefect server and `deployments/serve.py` against it (with `serve_args`)."""
    with prefect_server(tmp) as (server, env), serving(tmp, server, env, serve_args) as ctx:
        yield ctx


@contextlib.contextmanager
def prefect_server(tmp: Path) -> Iterator[tuple[subprocess.Popen, dict]]:
    """`prefect server start` with its own PREFECT_HOME under `tmp`; the process and the
    environment serve.py runs with (PREFECT_API_URL its API)."""
    from tickercast.deployments.serve import start_server

    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    server, api = start_server(timeout=240, env=env)
    env["PREFECT_API_URL"] = api
    try:
        os.environ["PREFECT_API_URL"] = api
        yield server, env
    finally:
        stop((server,), timeout=60)


@contextlib.contextmanager
def serving(
    tmp: Path, server: subprocess.Popen, env: dict, serve_args: tuple[str, ...] = ()
) -> Iterator[Served]:
    """`deployments/serve.py` (with `serve_args`) against `server`, once it polls for
    runs; stopped (SIGTERM: serve.py closes what it keeps) at the block's end."""
    log_path = tmp / f"serve-{time.monotonic_ns()}.log"
    log = log_path.open("w")
    command = [sys.executable, "deployments/serve.py", "--cron", NEVER, "--ingest-cron", NEVER]
    serve = subprocess.Popen(
        [*command, *serve_args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for_deployment(timeout=240)
        _wait_for_text(log_path, "being served and polling", serve, timeout=240)
        yield Served(env["PREFECT_API_URL"], serve, server, env)
    finally:
        stop((serve,), timeout=60)
        log.close()


def _wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"serve.py exited ({proc.returncode}); see {path}")
        time.sleep(0.2)
    raise TimeoutError(f"serve.py did not print {text!r} within {timeout:.0f} s ({path})")


def _wait_for_deployment(timeout: float) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                client.read_deployment_by_name(DEPLOYMENT)
                return
            except Exception:
                time.sleep(1)
    raise TimeoutError(f"{DEPLOYMENT} was not served within {timeout:.0f} s")


def process_tree(root) -> list:
    """A psutil process and its descendants ([] once it has ended)."""
    import psutil  # the dev extra (bench and tests)

    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(procs: list) -> dict[int, float]:
    """CPU seconds (user + system) of each process, by pid (one that has ended: none)."""
    import psutil

    seen = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            seen[proc.pid] = times.user + times.system
    return seen


class Sampler:
    """A daemon thread running `_run` for the `with` block; `_run` polls `self._stop`."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


IDLE_AFTER_S = 15.0
"""How long after a night `run_night(held=True)` reads what serve.py holds between nights
(only this benchmark reports it; the others' nights follow each other without the wait)."""


def rss_now(pid: int) -> tuple[float, float]:
    """Resident MB of a process, and of its descendants together (between nights: a kept
    cluster's idle workers)."""
    import psutil

    procs, children = process_tree(psutil.Process(pid)), 0
    for child in procs[1:]:
        with contextlib.suppress(psutil.Error):
            children += child.memory_info().rss
    return procs[0].memory_info().rss / 2**20, children / 2**20


class PeakRSS(Sampler):
    """Peak resident memory of a process's descendants (sampled), and of the process; and
    the CPU seconds the process and its descendants used meanwhile (each process's last
    sample: a process that ends loses at most its last `every` seconds)."""

    def __init__(self, pid: int, every: float = 0.25):
        import psutil  # the dev extra (bench and tests)

        self.root, self.every = psutil.Process(pid), every
        self.tree_mb = self.root_mb = 0.0
        self._cpu: dict[int, float] = {}
        self._cpu_before = cpu_seconds(process_tree(self.root))
        super().__init__()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            procs, total = process_tree(self.root), 0
            for child in procs[1:]:
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            with contextlib.suppress(psutil.Error):
                self.root_mb = max(self.root_mb, self.root.memory_info().rss / 2**20)
            self.tree_mb = max(self.tree_mb, total / 2**20)
            self._cpu.update(cpu_seconds(procs))
            self._stop.wait(self.every)

    @property
    def cpu_s(self) -> float:
        """CPU seconds used since this sampler was made."""
        return sum(v - self._cpu_before.get(pid, 0.0) for pid, v in self._cpu.items())


# ------------------------------------------------------------------------------ a night


def run_night(
    params: dict, ctx: Served, timeout: float, held: bool = False, every: float = 0.25
) -> dict:
    """Trigger the deployment, wait for its final state; wall, stages, memory, and the CPU
    seconds of the serve process tree (flow run, workers) and of the Prefect server; with
    `held`, also what serve.py and its children hold `IDLE_AFTER_S` after the night.
    `every`: seconds between the memory and CPU samples (a bench that reports no peak
    memory samples less: the sampling shares the cores it measures)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with PeakRSS(ctx.serve.pid, every) as rss, PeakRSS(ctx.server.pid, every) as api:
        started = time.perf_counter()
        flow_run = run_deployment(DEPLOYMENT, parameters={"config": params}, timeout=0)
        with get_client(sync_client=True) as client:
            while True:
                run = client.read_flow_run(flow_run.id)
                if run.state is not None and run.state.is_final():
                    break
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"the night did not finish within {timeout:.0f} s")
                time.sleep(max(0.5, every))  # each look is an API call the server serves
        wall = time.perf_counter() - started
    if not run.state.is_completed():
        raise RuntimeError(f"the nightly run ended {run.state.name}: {run.state.message}")
    idle = {}
    if held:
        time.sleep(IDLE_AFTER_S)  # the flow run gone, a kept cluster's workers restarted
        serve_mb, children_mb = rss_now(ctx.serve.pid)
        idle = {"idle_serve_rss_mb": serve_mb, "idle_children_rss_mb": children_mb}
    return {
        "wall_s": wall,
        **idle,
        "flow_run_s": (run.end_time - run.start_time).total_seconds(),
        "queued_s": wall - (run.end_time - run.start_time).total_seconds(),
        "peak_rss_mb": rss.tree_mb,
        "serve_rss_mb": rss.root_mb,
        "serve_tree_cpu_s": rss.cpu_s,
        "server_cpu_s": api.cpu_s,
        **stage_times(run),
    }


def task_runs(flow_run_id) -> list:
    """Every task run of a flow run, read page by page (a server answers at most its
    default limit, 200, a call)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs, page = [], 200
    with get_client(sync_client=True) as client:
        while True:
            batch = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                limit=page,
                offset=len(runs),
            )
            runs.extend(batch)
            if len(batch) < page:
                return runs


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end] intervals."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def stage_times(flow_run) -> dict:
    """Each stage's running time (union) and task-seconds (sum), the time any task ran,
    and orchestration = the flow run's wall minus that."""
    origin = flow_run.start_time
    by_stage: dict[str, list[tuple[float, float]]] = {}
    states: dict[str, int] = {}
    named: list[tuple[str, float, float]] = []  # each task run's span (where the gaps are)
    for run in task_runs(flow_run.id):
        states[run.state.name] = states.get(run.state.name, 0) + 1
        if run.start_time is None or run.end_time is None:
            continue
        stage = STAGES.get(run.name.rsplit("-", 1)[0], "other")  # name: "<task>-<suffix>"
        span = ((run.start_time - origin).total_seconds(), (run.end_time - origin).total_seconds())
        by_stage.setdefault(stage, []).append(span)
        named.append((run.name, *span))
    every = [span for spans in by_stage.values() for span in spans]
    busy = union_seconds(every)
    flow_wall = (flow_run.end_time - flow_run.start_time).total_seconds()
    return {
        "stages": {
            stage: {
                "running_s": union_seconds(spans),
                "task_s": sum(end - start for start, end in spans),
                "tasks": len(spans),
            }
            for stage, spans in sorted(by_stage.items())
        },
        "busy_s": busy,
        "orchestration_s": flow_wall - busy,
        "task_states": states,
        "spans": sorted(named, key=lambda span: span[1]),
    }


def fits_so_far(data_dir: Path) -> set[Path]:
    """Every fit's history.json (the train step's work folders): a fine-tune that kept the
    champion makes no version, but its fit counts."""
    return set((data_dir / "work" / "train").glob("*/history.json"))


def versions(data_dir: Path) -> set[Path]:
    return set((data_dir / "models").glob("*/versions/*/history.json"))


def training_stats(new: set[Path], new_fits: set[Path] = frozenset()) -> dict:
    """Windows/s and epochs over the fits this night made (`new_fits`, their work folders'
    history.json: `new` versions plus the fine-tunes that kept the champion), and each new
    version's fit curves by ticker (bench/universe_levers.py replays early stopping on
    them)."""
    kept = [
        h for h in map(json.loads, map(Path.read_text, sorted(new_fits))) if "kept_champion" in h
    ]
    windows = sum(h["train_windows"] * h["epochs_run"] for h in kept)
    seconds = sum(h["train_seconds"] for h in kept)
    fits = {}
    for history in sorted(new):
        h = json.loads(history.read_text())
        windows += h["train_windows"] * h["epochs_run"]
        seconds += h["train_seconds"]
        fits[history.parents[2].name] = {
            "epochs_run": h["epochs_run"],
            "best_epoch": h["best_epoch"],
            "train_windows": h["train_windows"],
            "train_seconds": h["train_seconds"],
            "alpha": (h.get("shrinkage") or {}).get("alpha"),
            "warm_start": (h.get("warm_start") or {}).get("mode"),
            **{k: h["history"].get(k) for k in ("loss", "val_loss", "learning_rate")},
        }
    epochs = [f["epochs_run"] for f in fits.values()] + [h["epochs_run"] for h in kept]
    return {
        "new_versions": len(fits),
        "kept_champion": len(kept),  # fine-tunes that beat nothing: no version made
        "windows_per_s": windows / seconds if seconds else None,
        "fit_s": seconds,
        "epochs_mean": float(np.mean(epochs)) if epochs else None,
        "epochs_max": int(max(epochs)) if epochs else None,
        # how the fits started (metadata training.warm_start; the nightly config's
        # warm_start="auto" fine-tunes the champion on the second night)
        "warm_fits": sum(1 for f in fits.values() if f["warm_start"] == "warm") + len(kept),
        "fits": fits,
    }


# --------------------------------------------------------------------- the tutorial's fit


def tutorial_fit() -> float:
    """Seconds of the tutorial's own fit of one ticker: one synthetic ticker's 10 years of
    closes min-max scaled, 60-day windows, 80% for training, LSTM(50) -> Dense(1), Adam,
    batch 32, 20 epochs (as the reference tutorial fits a stock)."""
    import keras

    from tests.synthetic import yahoo_history

    keras.utils.set_random_seed(0)
    close = yahoo_history("TUT", quirks=False)["Close"].to_numpy()
    started = time.perf_counter()
    scaled = (close - close.min()) / (close.max() - close.min())
    n_train = int(len(scaled) * 0.8)
    x = np.array([scaled[i - 60 : i] for i in range(60, n_train)])[:, :, None]
    y = scaled[60:n_train]
    model = keras.Sequential([keras.Input((60, 1)), keras.layers.LSTM(50), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, batch_size=32, epochs=20, verbose=0)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- the runs


def nightly(overrides: dict):
    """The deployment's own config (deployments/nightly.json) with `overrides` (flat names,
    placed in their sections)."""
    from tickercast.config import RetrainConfig
    from tickercast.deployments.nightly import nightly_config

    return nightly_config(RetrainConfig).model_copy(update=overrides)


def parameters(tickers: list[str], csv_dir: Path, data_dir: Path, overrides: dict) -> dict:
    """The deployment's own parameters (deployments/nightly.json) with this universe."""
    from tickercast.config import RetrainConfig

    config = nightly(
        dict(
            tickers=tickers, source="csv", csv_dir=str(csv_dir), data_dir=str(data_dir), **overrides
        )
    )
    return json.loads(RetrainConfig(**config.model_dump()).model_dump_json())


def fit_patience(overrides: dict) -> int:
    """The early-stopping patience the nights' fits run (the deployment's, or overridden)."""
    return nightly(overrides).training.patience


def one_size(
    n_synthetic: int, tmp: Path, ctx: Served, overrides: dict, nights: int, tag: str = ""
) -> dict:
    tickers = [*SAMPLES, *synthetic_names(n_synthetic)]
    name = tag or str(n_synthetic)
    csv_dir, data_dir = tmp / f"csv-{name}", tmp / f"data-{name}"
    result = {"tickers": len(tickers), "synthetic": n_synthetic, "nights": []}
    for night in range(nights):
        write_universe(csv_dir, synthetic_names(n_synthetic), extra_days=night)
        before, fits_before = versions(data_dir), fits_so_far(data_dir)
        params = parameters(tickers, csv_dir, data_dir, overrides)
        measured = run_night(params, ctx, timeout=6 * 3600, held=True)
        new_fits = fits_so_far(data_dir) - fits_before
        measured.update(training_stats(versions(data_dir) - before, new_fits))
        shown = {k: v for k, v in measured.items() if k != "fits"}
        print(json.dumps({"tickers": len(tickers), "night": night + 1, **shown}), flush=True)
        result["nights"].append(measured)
    return result


def warm_up(tmp: Path, ctx: Served, overrides: dict) -> float:
    """A night not counted, the samples' first night in folders of its own, before the
    sizes: a fresh server's first night ran 10-35 s longer than the next
    (bench/dask_quiet.py), and it fell on the smallest size, lowering the scaling line's
    slope and so the 500-ticker projection. Its wall, seconds."""
    night = one_size(0, tmp, ctx, overrides, nights=1, tag="warm-up")["nights"][0]
    print(f"a night not counted (warm-up): {night['wall_s']:.0f} s", flush=True)
    return night["wall_s"]


def projection(sizes: list[dict], night: int, key: str) -> dict:
    """Least squares key = a + b x tickers over the measured sizes, at 500 tickers."""
    n = np.array([s["tickers"] for s in sizes], float)
    v = np.array([s["nights"][night][key] for s in sizes], float)
    if len(n) < 2:  # one size: no curve to project from
        return {"per_ticker": None, "fixed": None, "at_500": None}
    b, a = np.polyfit(n, v, 1)
    return {"per_ticker": float(b), "fixed": float(a), "at_500": float(a + b * TARGET_TICKERS)}


def _projected(sizes: list[dict], night: int) -> str:
    target = [s for s in sizes if s["tickers"] == TARGET_TICKERS]
    if target:
        return _measured_target(sizes, target[0], night)
    wall = projection(sizes, night, "wall_s")
    if wall["at_500"] is None:
        return "500 tickers not projected (one size measured)"
    rss = projection(sizes, night, "peak_rss_mb")
    orchestration = projection(sizes, night, "orchestration_s")
    if orchestration["per_ticker"] > 0:
        share = orchestration["at_500"] / wall["at_500"]
        growth = f"{orchestration['at_500']:.0f} s = {share:.1%} of the night"
    else:  # a line falling with the universe projects nothing
        seen = [s["nights"][night]["orchestration_s"] for s in sizes]
        share = max(seen) / wall["at_500"]
        growth = (
            f"not growing with the universe ({min(seen):.1f}-{max(seen):.1f} s measured; the "
            f"larger is {share:.1%} of the projected night)"
        )
    text = (
        f"projected 500 tickers (line over the measured sizes, {wall['per_ticker']:.1f} "
        f"s/ticker + {wall['fixed']:.0f} s): {wall['at_500'] / 60:.1f} min "
        f"({wall['at_500']:.0f} s; target <= {30 if night == 0 else 5} min), peak RSS "
        f"{rss['at_500']:.0f} MB ({rss['per_ticker']:+.1f} MB/ticker), orchestration "
        f"{growth} (target <= 5%)"
    )
    if night == 1:
        first = projection(sizes, 0, "wall_s")["at_500"]
        text += f", {wall['at_500'] / first:.2f}x the first night (target <= 1/6)"
    return text


def _measured_target(sizes: list[dict], at_500: dict, night: int) -> str:
    """500 tickers measured: the targets against that night, and what the line over the
    smaller sizes projected for it (how far a projection is to be trusted)."""
    m = at_500["nights"][night]
    share = m["orchestration_s"] / m["wall_s"]
    text = (
        f"500 tickers measured: {m['wall_s'] / 60:.1f} min (target <= "
        f"{30 if night == 0 else 5} min), orchestration {m['orchestration_s']:.1f} s = "
        f"{share:.1%} of the night (target <= 5%)"
    )
    if night == 1:
        first = at_500["nights"][0]["wall_s"]
        text += f", {m['wall_s'] / first:.2f}x the first night (target <= 1/6)"
    smaller = [s for s in sizes if s["tickers"] < TARGET_TICKERS]
    line = projection(smaller, night, "wall_s")["at_500"]
    if line is not None:
        text += f"; the line over the smaller sizes projected {line / 60:.1f} min"
    return text


def summary_rows(
    sizes: list[dict], tutorial_runs: list[float], overrides: dict, warm_up_s: float | None = None
) -> dict[str, str]:
    """The RESULTS.md rows: first and second night at the largest measured size, and the
    projection to 500 tickers from the scaling curve (or the 500 measured)."""
    tutorial_s = sum(tutorial_runs) / len(tutorial_runs)
    timed = (
        f"mean of {' and '.join(f'{t:.1f}' for t in tutorial_runs)} s, before and after the nights"
        if len(tutorial_runs) > 1
        else "timed once, before the nights"
    )
    largest = max(sizes, key=lambda s: s["tickers"])
    counts = ", ".join(str(s["tickers"]) for s in sizes)
    setting = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the deployment's defaults"
    warm = (
        ""
        if warm_up_s is None
        else (f", after a night not counted (the 5 samples, {warm_up_s:.0f} s)")
    )
    rows = {}
    for night, tag in ((0, "nightly_universe"), (1, "nightly_universe_second")):
        if len(largest["nights"]) <= night:
            continue
        m = largest["nights"][night]
        stages = "; ".join(
            f"{k} {v['running_s']:.0f} s" for k, v in m["stages"].items() if k != "other"
        )
        per_ticker = m["wall_s"] / largest["tickers"]
        what = "first night" if night == 0 else "second night (one new day per ticker)"
        rows[tag] = (
            f"| nightly universe, {what}: `retrain/nightly-retrain` served by "
            f"deployments/serve.py on a real Prefect server, {setting}; measured at "
            f"{counts} tickers (5 samples + synthetic 10-year Yahoo-like CSVs){warm} "
            f"| tutorial's own one-ticker fit (LSTM(50), 20 epochs, batch 32) "
            f"{tutorial_s:.1f} s ({timed}) "
            f"| measured {largest['tickers']} tickers: wall {m['wall_s']:.0f} s "
            f"({per_ticker:.1f} s/ticker; flow run {m['flow_run_s']:.0f} s; stages running: "
            f"{stages}; orchestration {m['orchestration_s']:.1f} s = "
            f"{m['orchestration_s'] / m['flow_run_s']:.1%} of the flow run, plus "
            f"{m['queued_s']:.0f} s from trigger to start (serve's poll); "
            f"{m['windows_per_s'] or 0:.0f} training windows/s, epochs mean "
            f"{m['epochs_mean'] or 0:.1f} max {m['epochs_max'] or 0}, warm-started "
            f"{m.get('warm_fits', 0)} of {m['new_versions'] + m.get('kept_champion', 0)} fits, "
            f"{m.get('kept_champion', 0)} of them kept the champion (no version); peak RSS "
            f"{m['peak_rss_mb']:.0f} MB{_held(m)}{_cpu(m)}); {_projected(sizes, night)} "
            f"| per ticker {per_ticker / tutorial_s:.2f}x the tutorial's fit "
            f"({_spread(per_ticker, tutorial_runs) if night == 0 else ''}target <= 0.33x"
            f"{'' if night == 0 else '; second night <= 1/6 of the first'}) |"
        )
    return rows


def _spread(per_ticker: float, tutorial_runs: list[float]) -> str:
    """Against each timing of the yardstick, where they differ by more than 5%: the
    machine's speed drifts within a run, and the ratio moves with it."""
    lo, hi = min(tutorial_runs), max(tutorial_runs)
    if hi <= 1.05 * lo:
        return ""
    return f"{per_ticker / hi:.2f}-{per_ticker / lo:.2f}x against its two timings; "


def _held(m: dict) -> str:
    """serve.py's own peak (with a kept cluster: its scheduler and nannies), and what it
    and its children held after the night (runs measured before this was recorded:
    nothing)."""
    if "idle_serve_rss_mb" not in m:
        return ""
    return (
        f" (serve.py itself {m['serve_rss_mb']:.0f} MB); {IDLE_AFTER_S:.0f} s after the "
        f"night serve.py held {m['idle_serve_rss_mb']:.0f} MB and its child processes "
        f"{m['idle_children_rss_mb']:.0f} MB"
    )


def _cpu(m: dict) -> str:
    """Where the night's CPU went: the flow run's processes (serve.py, the flow, its
    workers) and the Prefect server (runs measured before this was recorded: nothing)."""
    if "server_cpu_s" not in m:
        return ""
    return (
        f"; CPU {m['serve_tree_cpu_s']:.0f} s in the flow run's processes, "
        f"{m['server_cpu_s']:.0f} s in the Prefect server"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="7", help="synthetic tickers per size, e.g. 2,4,7")
    parser.add_argument(
        "--set", action="append", default=[], help="a RetrainConfig field, e.g. epochs=5"
    )
    parser.add_argument("--nights", type=int, default=2, choices=(1, 2))
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument(
        "--no-warm-up", action="store_true", help="measure the first size on a fresh server"
    )
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    parser.add_argument("--from-json", type=Path, help="the rows of an earlier --json run")
    parser.add_argument(
        "--kept-cluster",
        type=int,
        default=0,
        metavar="N",
        help="run every night on one long-lived cluster of N one-thread `dask worker`s "
        "(dask_address, the README's commands) instead of the cluster serve.py keeps; "
        "rows tagged *_kept_cluster",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        out = json.loads(args.from_json.read_text())
        runs = out.get("tutorial_fit_runs_s") or [out["tutorial_fit_s"]]
        rows = summary_rows(out["sizes"], runs, out["overrides"], out.get("warm_up_s"))
        _publish(_tagged(rows, out.get("kept_cluster", 0)), args)
        return out
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    tutorial_runs = [tutorial_fit()]
    print(f"tutorial's one-ticker fit: {tutorial_runs[0]:.1f} s", flush=True)
    sizes, warm = [], None
    with (
        tempfile.TemporaryDirectory(prefix="universe-") as tmp,
        # a dask scheduler of the bench's own: serve.py keeps no cluster beside it
        served(Path(tmp), ("--cluster-per-run",) if args.kept_cluster else ()) as ctx,
        kept_cluster(args.kept_cluster, ctx, Path(tmp)) as extra,
    ):
        run_overrides = {**overrides, **extra}
        if not args.no_warm_up:
            warm = warm_up(Path(tmp), ctx, run_overrides)
        for n in sorted(int(s) for s in args.sizes.split(",")):
            sizes.append(one_size(n, Path(tmp), ctx, run_overrides, args.nights))
    if args.kept_cluster:  # the rows name the cluster, not its loopback port
        overrides = {
            **overrides,
            "dask_address": f"a kept cluster of {args.kept_cluster} one-thread dask workers "
            "(their memory is not in the peak RSS)",
        }
    tutorial_runs.append(tutorial_fit())
    print(f"tutorial's one-ticker fit, again: {tutorial_runs[1]:.1f} s", flush=True)
    out = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "overrides": overrides,
        "patience": fit_patience(overrides),  # what the fits ran (universe_levers reads it)
        "tutorial_fit_s": sum(tutorial_runs) / len(tutorial_runs),
        "tutorial_fit_runs_s": tutorial_runs,
        "warm_up_s": warm,
        "kept_cluster": args.kept_cluster,
        "sizes": sizes,
        "projected_500": {
            f"night_{i + 1}": {
                "wall_s": projection(sizes, i, "wall_s"),
                "peak_rss_mb": projection(sizes, i, "peak_rss_mb"),
            }
            for i in range(args.nights)
        },
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    _publish(_tagged(summary_rows(sizes, tutorial_runs, overrides, warm), args.kept_cluster), args)
    return out


@contextlib.contextmanager
def kept_cluster(workers: int, ctx: Served, tmp: Path) -> Iterator[dict]:
    """The run overrides of `--kept-cluster`: a `dask scheduler` and `workers` one-thread
    `dask worker`s (bench/dask_processes.py's `cluster`), started once for every night;
    none (the deployment's default: the local cluster serve.py keeps) when `workers` is 0."""
    if not workers:
        yield {}
        return
    with cluster(workers, ctx.env, tmp) as (address, _):
        yield {"task_runner": "dask", "dask_address": address}


def _tagged(rows: dict[str, str], kept: int) -> dict[str, str]:
    """A kept cluster's rows under tags of their own: the default's rows stay."""
    return {f"{tag}_kept_cluster" if kept else tag: row for tag, row in rows.items()}


def _publish(rows: dict[str, str], args: argparse.Namespace) -> None:
    from bench.results import publish

    for tag, row in rows.items():
        publish(tag, row, keep=not args.no_record)


if __name__ == "__main__":
    import signal

    # a SIGTERM (timeout, Ctrl-C in a parent) still stops the server and serve.py
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
