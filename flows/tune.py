"""The tune flow: hyperparameter search with Keras Tuner, then one test evaluation.

ingest -> tune-data (per ticker: train + validation rows only) -> trials, each a Prefect
task on the configured task runner, proposed by a Keras Tuner oracle (Bayesian
optimisation or Hyperband) and reported back to it (tickercast.tuning.schedule) ->
trials.json / trials.csv and the table artifact `tune-trials` -> best.json -> the retrain
flow with best.json (a subflow): the only place the test split is read. Everything lives
in `<data_dir>/tuning/<run>/`; a rerun of the same search resumes it. A ticker whose data
cannot be prepared is named with its cause; the search runs on the others, and the run
then ends Failed.

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
from tickercast.config import RetrainConfig
from tickercast.fanout import each_ticker, settle
from tickercast.flows.common import preflight, submit_ingest
from tickercast.flows.retrain import retrain
from tickercast.quiet import quiet_tensorflow
from tickercast.tasks.ingest import ingest_step
from tickercast.tasks.runners import make_task_runner, step_options, use_task_runner
from tickercast.tasks.tune import track_tune_step, tune_data_step, tune_trial_step
from tickercast.tracking import resolve_uri
from tickercast.tuning.config import Choice, TuneConfig
from tickercast.tuning.report import flat_row, summary_lines, write_trials
from tickercast.tuning.schedule import run_trials
from tickercast.tuning.search import Search, open_run, run_lock
from tickercast.tuning.space import best_config

TRIALS_KEY, REPORT_KEY = "tune-trials", "tune-report"


@flow(name="tune", log_prints=True, persist_result=False)
def tune(config: TuneConfig = TuneConfig()) -> dict:
    """Search, write best.json and the trial table, then retrain best.json once."""
    quiet_tensorflow()  # before any step imports it (a deployment's own process)
    prints = preflight(config)
    run = config.execution
    data_dir = run.resolved_dir()
    options = step_options(data_dir, run.refresh, run.result_storage, run.cache_expiration_days)
    ingest, prepare = (s.with_options(**options) for s in (ingest_step, tune_data_step))
    with use_task_runner(make_task_runner(run.task_runner, run.max_workers, run.dask_address)):
        prepared = {}
        for ticker in config.tickers:
            ingested = submit_ingest(ingest, config, ticker, prints[ticker], data_dir)
            prepared[ticker] = (ingested, prepare.submit(ingested, config.data_spec(), data_dir))
        outcomes = each_ticker(config.tickers, lambda t: settle(prepared[t]))
        data = list(outcomes.values().values())
        if not data:
            return Failed(message=outcomes.failure() or "no ticker's search data")
        summary = _search(config, data_dir, data)
    summary["failed"] = outcomes.errors()
    why = outcomes.failure()
    if summary["best"] is None:
        return Failed(message=f"no trial completed; see {summary['trials_csv']}", data=summary)
    if config.budget.final_retrain:
        return _final_retrain(config, summary, why)
    return Failed(message=why, data=summary) if why else summary


def _search(config: TuneConfig, data_dir: str, data: list) -> dict:
    """Run the search's trials under its lock; write its table, report and best.json."""
    run_dir = open_run(config, data_dir, data)
    with run_lock(run_dir):
        search = Search(config, run_dir)
        settings = config.trial_settings()
        keep = config.search.algorithm == "hyperband"  # later rounds continue a trial

        def submit(proposal):
            folder = str(search.trial_dir(proposal.trial_id))
            return tune_trial_step.submit(
                proposal.trial_id, proposal.spec(), data, settings, keep, folder
            )

        try:
            with search.progress():
                run_trials(search, config.budget.parallel_trials, submit, _next_done)
        finally:  # even when the search stops on failures, the table says why
            rows = search.rows()
            paths = write_trials(run_dir, rows)
        best = next((row for row in rows if row["best"]), None)
        best_json = run_dir / "best.json"
        if best is not None:
            choice = Choice(**{k: best[k] for k in Choice.model_fields})
            write_json(best_json, best_config(config, choice))
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
        "best_json": str(best_json) if best else None,
        "trials_json": str(paths["json"]),
        "trials_csv": str(paths["csv"]),
        "best": {k: v for k, v in best.items() if k != "values"} if best else None,
        "trials": len(rows),
        "completed": sum(row["status"] == "completed" for row in rows),
        "ran": list(search.ran),
        "stop_reason": search.stop_reason,
        "test": None,
        "mlflow": None,
    }
    mlflow_uri = resolve_uri(config.mirror.mlflow_uri)
    if mlflow_uri:  # the search's table and best.json; the final retrain logs its own run
        summary["mlflow"] = track_tune_step(
            mlflow_uri, str(run_dir), config.flat(), rows, "\n".join(lines)
        )
    return summary


def _next_done(futures: list):
    return next(as_completed(futures))


def _final_retrain(config: TuneConfig, summary: dict, failure: str | None):
    """The chosen configuration, trained once more and evaluated on the test split."""
    best_json = summary["best_json"]
    trial = summary["best"]["trial"]
    print(f"evaluating trial {trial} on the test split: retrain --config {best_json}")
    final = RetrainConfig.model_validate_json(Path(best_json).read_text())
    final = final.model_copy(update={"mirror": config.mirror})
    state = retrain(final, return_state=True)
    result = state.result(raise_on_failure=False)
    if not state.is_completed():
        summary["test"] = {"error": state.message}
        return Failed(message=f"the final retrain failed: {state.message}", data=summary)
    summary["test"] = result
    return Failed(message=failure, data=summary) if failure else summary


if __name__ == "__main__":  # `python -m flows.tune`: the CLI's `tune`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["tune", *sys.argv[1:]]))
