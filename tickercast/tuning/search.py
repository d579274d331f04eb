"""The search driver: where a search lives, the Keras Tuner oracle and its use.

The flow asks the oracle (Bayesian optimisation or Hyperband) for trials, runs each as a
Prefect task and reports the result back. Everything a search knows lives in
`<data_dir>/tuning/<run>/`: the oracle's state (`oracle.json`, `trial_NNNN/trial.json`,
written atomically), each trial's training folder and `result.json`, so a rerun of the
same run reloads it and runs only what is missing.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tickercast import layout
from tickercast.atomic import atomic_path, write_json
from tickercast.hashing import json_sha256
from tickercast.progress import NULL_BAR, track
from tickercast.tuning.config import OBJECTIVE, Choice, TuneConfig
from tickercast.tuning.space import search_space, settings_from_values

# --- where a search lives ------------------------------------------------------------


def run_name(config: TuneConfig, data: list[dict]) -> str:
    """The explicit --run, else <algorithm>-<hash of identity and search data>."""
    if config.budget.run:
        return config.budget.run
    digest = json_sha256({"search": config.identity(), "data": [d.content for d in data]})
    return f"{config.search.algorithm}-{digest[:12]}"


def open_run(config: TuneConfig, data_dir: str | Path, data: list[dict]) -> Path:
    """`<data_dir>/tuning/<run>/`, created with search.json, or checked against it.

    Reusing a run for a different search (other space, epochs, algorithm or data) would
    mix incomparable trials, so it is refused naming what differs.
    """
    run = run_name(config, data)
    run_dir = layout.tuning_dir(data_dir) / run
    identity = {
        "search": config.identity(),
        "data": {d.ticker: d.content for d in data},
    }
    marker = run_dir / "search.json"
    if marker.is_file():
        stored = json.loads(marker.read_text())
        if stored != identity:
            before, now = stored.get("search", {}), identity["search"]
            differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if stored.get("data") != identity["data"]:
                differ.append("the search data (prices, dates or split)")
            raise ValueError(
                f"run {run!r} ({run_dir}) holds a different search: {', '.join(differ)} "
                "differ; choose another --run, or delete that folder to start over"
            )
    else:
        write_json(marker, identity)
    return run_dir


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One process at a time per search; a second waits, then resumes what is left."""
    from tickercast.atomic import file_lock

    def waiting(path: Path) -> None:
        print(f"another tune run holds {path}; waiting for it to finish")

    with file_lock(run_dir / ".tune.lock", on_wait=waiting):
        yield


# --- the oracle ----------------------------------------------------------------------


def _dump(path: str | Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(state))


class ResumableOracle:
    """What tickercast adds to a Keras Tuner oracle (mixed in before it, `_oracle_class`):
    its state saved atomically (a kill mid-save keeps the previous file) and, for
    Bayesian optimisation, with its random stream, so a resumed search proposes what the
    uninterrupted one would have.

    Keras Tuner internals: this class is the only place that touches them (the oracle's
    `_get_oracle_fname`, `_get_trial_dir`, `_save_trial`, `_random_state`,
    `_set_project_dir` and `_retry_queue`); everything else uses its public methods and
    `queued_retries` / `attach` below.
    """

    def save(self):
        _dump(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        _dump(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", trial.get_state())

    def get_state(self):
        state = super().get_state()
        stream = getattr(self, "_random_state", None)
        if stream is not None:
            name, keys, pos, has_gauss, cached = stream.get_state()
            state["tickercast_random_state"] = [
                name,
                keys.tolist(),
                int(pos),
                int(has_gauss),
                float(cached),
            ]
        return state

    def set_state(self, state):
        super().set_state(state)
        saved = state.get("tickercast_random_state")
        if saved and getattr(self, "_random_state", None) is not None:
            name, keys, pos, has_gauss, cached = saved
            self._random_state.set_state(
                (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
            )

    def end_trial(self, trial):
        super().end_trial(trial)
        # keras-tuner saves before it drops the trial from ongoing_trials: saved as it
        # is, a reload would take the last finished trial for an interrupted one
        self.save()

    def populate_space(self, trial_id):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's GP fitting chatter
            return super().populate_space(trial_id)

    def queued_retries(self) -> list[str]:
        """Trial ids waiting to run again (interrupted or failed once), next last."""
        return list(self._retry_queue)

    def attach(self, run_dir: Path) -> None:
        """Keep the state in `run_dir`; reload it when the search has state there."""
        self._set_project_dir(str(run_dir.parent), run_dir.name)
        if not (run_dir / "oracle.json").is_file():
            return
        self.reload()  # trials RUNNING when the last run stopped go to the retry queue
        self._retry_queue = [
            t for t in self._retry_queue if self.trials[t].status not in ("COMPLETED", "FAILED")
        ]
        queued = set(self._retry_queue)
        for trial_id, trial in sorted(self.trials.items()):
            # killed between saving a new trial and saving the oracle: run it again
            if trial.status == "RUNNING" and trial_id not in queued:
                self._retry_queue.insert(0, trial_id)


def _oracle_class(algorithm: str):
    """Keras Tuner's oracle for `algorithm` with `ResumableOracle` mixed in (Keras Tuner
    is imported only when a search runs)."""
    import keras_tuner as kt

    base = {
        "bayesian": kt.oracles.BayesianOptimizationOracle,
        "hyperband": kt.oracles.HyperbandOracle,
    }[algorithm]
    return type(f"Resumable{base.__name__}", (ResumableOracle, base), {})


def make_oracle(config: TuneConfig, run_dir: Path):
    """The oracle of `run_dir`, reloaded when the search has state there.

    The trial budget is counted by `Search` (the same way for both algorithms), so the
    oracle itself is unbounded and its trial ids keep one width (0000, 0001, ...).
    """
    import keras_tuner as kt

    space, budget = config.search, config.budget
    common = {
        "objective": kt.Objective(OBJECTIVE, direction="min"),
        "hyperparameters": search_space(space),
        "allow_new_entries": False,
        "tune_new_entries": False,
        "seed": config.training.seed + 1,  # keras-tuner replaces a seed of 0 with a random one
        "max_retries_per_trial": 1,
        "max_consecutive_failed_trials": 3,
    }
    cls = _oracle_class(space.algorithm)
    if space.algorithm == "bayesian":
        initial = space.initial_points or max(2, budget.max_trials // 3)
        oracle = cls(max_trials=None, num_initial_points=initial, **common)
    else:
        oracle = cls(
            max_epochs=space.epochs,
            factor=space.hyperband_factor,
            hyperband_iterations=None,  # until the trial or time budget ends
            **common,
        )
    oracle.verbose = 0  # the flow logs each trial itself
    oracle.attach(run_dir)
    return oracle


@dataclass
class Proposal:
    """A trial to run: what the flow submits as a task."""

    trial_id: str
    values: dict
    settings: Choice
    epochs: int
    resume_from: str | None = None
    retry: bool = False

    def spec(self) -> dict:
        return {
            "trial_id": self.trial_id,
            "settings": self.settings.model_dump(),
            "epochs": self.epochs,
            "resume_from": self.resume_from,
        }


@dataclass
class Search:
    """Drives the oracle from the flow's thread only (Keras Tuner's oracle is not meant
    to be shared between threads); trials report back through `record` / `fail`."""

    config: TuneConfig
    run_dir: Path
    oracle: Any = None
    deadline: float | None = None
    ran: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    bar: Any = NULL_BAR  # the trials bar while `progress()` shows one, in a terminal

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.oracle = make_oracle(self.config, self.run_dir)
        if self.config.budget.max_minutes:
            self.deadline = time.monotonic() + 60.0 * self.config.budget.max_minutes

    @contextlib.contextmanager
    def progress(self) -> Iterator[Search]:
        """In a terminal, the trials as a progress bar (tickercast.progress) during the
        block; a resumed search starts at the trials it already ended, which do not count
        toward the remaining time."""
        total, done = self.config.budget.max_trials, self.finished()
        with track(f"tune {self.run_dir.name} trials", total=total, completed=done) as bar:
            self.bar = bar
            try:
                if bar.shown:
                    self._show_best()
                yield self
            finally:
                self.bar = NULL_BAR

    def finished(self) -> int:
        """Trials ended for good (completed or failed; not those queued to run again)."""
        pending = set(self.oracle.queued_retries())
        return sum(
            t.status in ("COMPLETED", "FAILED", "INVALID") and trial_id not in pending
            for trial_id, t in self.oracle.trials.items()
        )

    def _show_best(self) -> None:
        best = self.best()
        note = f" · best {OBJECTIVE} {best.score:.4g} (trial {best.trial_id})" if best else ""
        self.bar.update(
            completed=self.finished(), description=f"tune {self.run_dir.name} trials{note}"
        )

    def trial_dir(self, trial_id: str) -> Path:
        return self.run_dir / f"trial_{trial_id}"

    def propose(self, slot: str) -> Proposal | Literal["idle", "stopped", "budget"]:
        """The next trial for a free slot; 'idle' = wait for a running trial first,
        'stopped' = the algorithm has nothing left, 'budget' = trials or time used up."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop_reason = f"time budget of {self.config.budget.max_minutes} minutes reached"
            return "budget"
        retry = bool(self.oracle.queued_retries())
        if not retry and len(self.oracle.trials) >= self.config.budget.max_trials:
            self.stop_reason = f"trial budget of {self.config.budget.max_trials} reached"
            return "budget"
        trial = self.oracle.create_trial(slot)
        if trial.status == "IDLE":
            return "idle"
        if trial.status == "STOPPED":
            self.stop_reason = "the algorithm has no trial left to propose"
            return "stopped"
        values = dict(trial.hyperparameters.values)
        past = values.get("tuner/trial_id")
        return Proposal(
            trial_id=trial.trial_id,
            values=values,
            settings=settings_from_values(values),
            epochs=int(values.get("tuner/epochs", self.config.search.epochs)),
            resume_from=str(self.trial_dir(past)) if past else None,
            retry=retry,
        )

    def record(self, trial_id: str, result: dict) -> None:
        from keras_tuner.engine.trial import TrialStatus

        trial = self.oracle.get_trial(trial_id)
        value = result[OBJECTIVE]
        self.oracle.update_trial(trial_id, {OBJECTIVE: value}, step=result["epochs_run"])
        trial.status = TrialStatus.COMPLETED if math.isfinite(value) else TrialStatus.INVALID
        self.oracle.end_trial(trial)
        self.ran.append(trial_id)
        if self.bar.shown:
            self._show_best()

    def fail(self, trial_id: str, error: BaseException) -> None:
        """A divergence is the configuration's result (FAILED, never retried); any other
        error is retried once. Three failed trials in a row stop the search."""
        from keras_tuner.engine.trial import TrialStatus

        from tickercast.modeling.train import TrainingDivergedError

        trial = self.oracle.get_trial(trial_id)
        diverged = isinstance(error, TrainingDivergedError)
        trial.status = TrialStatus.FAILED if diverged else TrialStatus.INVALID
        trial.message = f"{type(error).__name__}: {error}".splitlines()[0]
        self.ran.append(trial_id)
        try:
            self.oracle.end_trial(trial)
        except RuntimeError as exc:  # keras-tuner's consecutive-failure limit
            raise RuntimeError(
                f"search stopped: {self.oracle.max_consecutive_failed_trials} trials in a "
                f"row failed; the last: {trial.message}"
            ) from exc
        if self.bar.shown:
            self._show_best()

    def best(self):
        done = [t for t in self.oracle.trials.values() if t.status == "COMPLETED"]
        if not done:
            return None
        return min(done, key=lambda t: (t.score, int(t.trial_id)))

    def rows(self) -> list[dict]:
        """Every trial: its hyperparameters, validation MSE and loss, epochs and time."""
        best = self.best()
        pending = set(self.oracle.queued_retries())
        rows = []
        for trial_id in sorted(self.oracle.trials, key=int):
            trial = self.oracle.trials[trial_id]
            values = dict(trial.hyperparameters.values)
            result_path = self.trial_dir(trial_id) / "result.json"
            result = json.loads(result_path.read_text()) if result_path.is_file() else {}
            status = trial.status.lower()
            if trial.status == "RUNNING" or trial_id in pending:
                status = "interrupted"  # queued: the next run of this search runs it
            settings = settings_from_values(values)
            rows.append(
                {
                    "trial": trial_id,
                    "status": status,
                    "best": best is not None and trial_id == best.trial_id,
                    **settings.model_dump(),
                    "epochs": int(values.get("tuner/epochs", self.config.search.epochs)),
                    "epochs_run": result.get("epochs_run"),
                    "best_epoch": result.get("best_epoch"),
                    OBJECTIVE: trial.score if trial.status == "COMPLETED" else None,
                    "val_loss": result.get("val_loss"),
                    "seconds": result.get("seconds"),
                    "continues": values.get("tuner/trial_id"),
                    "message": trial.message,
                    "values": values,
                }
            )
        return rows
