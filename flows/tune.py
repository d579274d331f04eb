"""The tune flow: hyperparameter search with Keras Tuner, then one test evaluation.

ingest -> tune-data (per ticker: train + validation rows only) -> trials, each a Prefect
task on the configured task runner, proposed by a Keras Tuner oracle (Bayesian
optimisation or Hyperband) and reported back to it -> trials.json / trials.csv and the
table artifact `tune-trials` -> best.json -> the retrain flow with best.json (a subflow):
the only place the test split is read. Everything lives in `<data_dir>/tuning/<run>/`; a
rerun of the same search resumes it (tasks/tune.py).

    tickercast tune --max-trials 20 --epochs 10
    python -m tickercast.flows.tune --help
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.states import Failed

from tickercast.atomic import write_json
from tickercast.config import MIRROR_FIELDS, RetrainConfig
from tickercast.flows.common import preflight, submit_ingest
from tickercast.flows.retrain import retrain
from tickercast.tasks.ingest import ingest_step
from tickercast.tasks.runners import make_task_runner, step_options, use_task_runner
from tickercast.tasks.tune import track_tune_step, tune_data_step, tune_trial_step
from tickercast.tracking import resolve_uri
from tickercast.tuning.config import OBJECTIVE, SEARCHED, TuneConfig
from tickercast.tuning.report import flat_row, summary_lines, write_trials
from tickercast.tuning.search import Search, open_run, run_lock
from tickercast.tuning.space import best_config

TRIALS_KEY, REPORT_KEY = "tune-trials", "tune-report"


def _describe(settings: dict) -> str:
    return (
        f"{settings['model']} units {settings['units']}, lookback {settings['lookback']}, "
        f"batch {settings['batch_size']}, lr {settings['learning_rate']:.3g}, "
        f"dropout {settings['dropout']:.3g}, l2 {settings['l2']:.3g}"
    )


@flow(name="tune", log_prints=True, persist_result=False)
def tune(config: TuneConfig = TuneConfig()) -> dict:
    """Search, write best.json and the trial table, then retrain best.json once."""
    preflight(config)
    data_dir = str(Path(config.data_dir).resolve())
    options = step_options(
        data_dir, config.refresh, config.result_storage, config.cache_expiration_days
    )
    ingest, prepare = (s.with_options(**options) for s in (ingest_step, tune_data_step))
    runner = make_task_runner(config.task_runner, config.max_workers, config.dask_address)
    with use_task_runner(runner):
        prepared = []
        for ticker in config.tickers:
            ingested = submit_ingest(ingest, config, ticker, data_dir)
            prepared.append(prepare.submit(ingested, config.data_cfg(), data_dir))
        data = [future.result() for future in prepared]
        run_dir = open_run(config, data_dir, data)
        with run_lock(run_dir):
            search = Search(config, run_dir)
            try:
                with search.progress():
                    _run_trials(search, config, data)
            finally:  # even when the search stops on failures, the table says why
                rows = search.rows()
                paths = write_trials(run_dir, rows)
            best = next((row for row in rows if row["best"]), None)
            if best is None:
                return Failed(message=f"no trial completed; see {paths['csv']}")
            best_json = run_dir / "best.json"
            write_json(best_json, best_config(config, {k: best[k] for k in SEARCHED}))
    lines = summary_lines(run_dir.name, run_dir, rows, best, search.ran, search.stop_reason)
    print("\n".join(lines[2:]))
    create_table_artifact(
        [flat_row(row, digits=6) for row in rows],
        key=TRIALS_KEY,
        description=f"tune {run_dir.name}: every trial, scored on the validation split",
    )
    create_markdown_artifact("\n".join(lines), key=REPORT_KEY, description="search summary")
    summary = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "best_json": str(best_json),
        "trials_json": str(paths["json"]),
        "trials_csv": str(paths["csv"]),
        "best": {k: v for k, v in best.items() if k != "values"},
        "trials": len(rows),
        "completed": sum(row["status"] == "completed" for row in rows),
        "ran": list(search.ran),
        "stop_reason": search.stop_reason,
        "test": None,
        "mlflow": None,
    }
    mlflow_uri = resolve_uri(config.mlflow_uri)
    if mlflow_uri:  # the search's table and best.json; the final retrain logs its own run
        summary["mlflow"] = track_tune_step(
            mlflow_uri, str(run_dir), config.model_dump(mode="json"), rows, "\n".join(lines)
        )
    if not config.final_retrain:
        return summary
    print(f"evaluating trial {best['trial']} on the test split: retrain --config {best_json}")
    final = RetrainConfig.model_validate_json(best_json.read_text())
    final = final.model_copy(update={k: getattr(config, k) for k in MIRROR_FIELDS})
    state = retrain(final, return_state=True)
    result = state.result(raise_on_failure=False)
    if not state.is_completed():
        summary["test"] = {"error": state.message}
        return Failed(message=f"the final retrain failed: {state.message}", data=summary)
    summary["test"] = result
    return summary


def _run_trials(search: Search, config: TuneConfig, data: list[dict]) -> None:
    """Keep `parallel_trials` trials in flight until the oracle or the budget stops; the
    oracle is asked and told only here, in the flow's thread."""
    cfg = {**config.train_fixed(), "keep_checkpoints": config.algorithm == "hyperband"}
    free = [f"slot-{i}" for i in reversed(range(config.parallel_trials))]
    running: dict = {}
    exhausted = False
    while True:
        while free and not exhausted:
            proposal = search.propose(free[-1])
            if proposal == "idle" and running:
                break  # the oracle waits for a running trial to end first
            if isinstance(proposal, str):
                exhausted = True
                break
            slot = free.pop()
            again = " (again: it did not finish last time)" if proposal.retry else ""
            print(
                f"trial {proposal.trial_id}{again}: {_describe(proposal.settings)}, "
                f"{proposal.epochs} epochs"
                + (
                    f" (continues trial {proposal.values['tuner/trial_id']})"
                    if proposal.resume_from
                    else ""
                )
            )
            future = tune_trial_step.submit(
                proposal.trial_id,
                proposal.spec(),
                data,
                cfg,
                str(search.trial_dir(proposal.trial_id)),
            )
            running[future] = (slot, proposal)
        if not running:
            return
        future = next(as_completed(list(running)))
        slot, proposal = running.pop(future)
        free.append(slot)
        future.wait()  # the final state, not the API's possibly older view of it
        state = future.state
        if state.is_completed():
            result = future.result()
            search.record(proposal.trial_id, result)
            print(
                f"trial {proposal.trial_id}: {OBJECTIVE} {result[OBJECTIVE]:.6g} after "
                f"{result['epochs_run']} epoch(s), {result['seconds']:.1f} s "
                f"[{len(search.oracle.trials)}/{config.max_trials}]"
            )
        else:
            error = state.result(raise_on_failure=False)
            if not isinstance(error, BaseException):
                error = RuntimeError(state.message or state.name)
            print(f"trial {proposal.trial_id} failed: {type(error).__name__}: {error}")
            search.fail(proposal.trial_id, error)


if __name__ == "__main__":  # `python -m flows.tune`: the CLI's `tune`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["tune", *sys.argv[1:]]))
