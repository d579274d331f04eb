"""The ingest flow: bring each ticker's lake partition up to date, one task per ticker,
`max_workers` tickers at a time.

Run it by hand with `tickercast ingest --help` (or `python -m tickercast.flows.ingest --help`), or
on a schedule. The retrain flow runs the same `ingest_step` task for its tickers.

One bad ticker never stops the others: every ticker gets a task run, the run publishes
a table artifact (`ingest-report`: ticker, status, rows added, first and last day, rows
dropped, quirks, warnings) and returns the same rows. `fail_on` decides the final state:
Failed when every ticker failed (`all`, the default), when any did (`any`), or never.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger
from prefect.states import Failed

from tickercast.config import IngestConfig
from tickercast.fanout import each_ticker
from tickercast.market.locate import csv_tickers, sample_tickers, source_fingerprints
from tickercast.market.report import artifact_table, outcome_rows, verdict
from tickercast.tasks.events import announce_run
from tickercast.tasks.ingest import ingest_step
from tickercast.tasks.ledger import watch_ledger
from tickercast.tasks.runners import make_task_runner, step_options, use_task_runner

REPORT_KEY = "ingest-report"


def resolve_tickers(config: IngestConfig) -> list[str]:
    """The configured tickers, or every CSV in csv_dir / every bundled sample ticker."""
    if config.tickers:
        return list(config.tickers)
    if config.data.source == "csv":
        return csv_tickers(config.data.csv_dir or ".")
    if config.data.source == "sample":
        return sample_tickers()
    raise ValueError(f"source {config.data.source!r} needs tickers")


def preflight(config: IngestConfig) -> list[str]:
    """Refuse a run that cannot start (no such csv_dir); returns the tickers it covers."""
    return resolve_tickers(config)


@flow(name="ingest", log_prints=True, persist_result=False)
def ingest(config: IngestConfig = IngestConfig()) -> dict:
    """Ingest every ticker into the lake; returns {"tickers": report rows, "results": ...}."""
    tickers = preflight(config)
    run, data = config.execution, config.data
    data_dir = run.resolved_dir()
    step = ingest_step.with_options(**step_options(data_dir, run.refresh))
    # a ticker whose input is not there is not cached (None): its task then fails for
    # this ticker alone, naming what is missing
    prints = source_fingerprints(data.source, tickers, data.csv_path(), strict=False)
    with use_task_runner(make_task_runner("threads", run.max_workers)):
        futures = {
            t: step.submit(
                t,
                data,
                config.ingest,
                config.window,
                prints[t],
                data_dir,
            )
            for t in tickers
        }
        outcomes = each_ticker(
            tickers, lambda t: (futures[t].result().report, futures[t].state.name == "Cached")
        )
    rows = outcome_rows(outcomes)
    ok = sum(r["status"] in ("ok", "cached") for r in rows)
    create_table_artifact(
        artifact_table(rows),
        key=REPORT_KEY,
        description=f"ingest from {data.source}: {ok} of {len(rows)} ticker(s) ingested",
    )
    logger = get_run_logger()
    for o in outcomes:
        if not o.ok:  # skipped (on_corrupt=skip) by choice, not a failure
            (logger.warning if o.skipped else logger.error)("%s: %s", o.ticker, o.error)
    live = {t: watch_ledger(t, data_dir) for t in outcomes.values()}  # the ledger, scored
    announce_run("ingest", outcomes, flagged=sum(bool(r["flag"]) for r in live.values()))
    summary = {"tickers": rows, "results": {t: r for t, (r, _) in outcomes.values().items()}}
    why = verdict(rows, run.fail_on)
    if why is not None:
        return Failed(message=f"{why} (fail_on={run.fail_on})", data=summary)
    return summary


if __name__ == "__main__":  # `python -m flows.ingest`: the CLI's `ingest`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["ingest", *sys.argv[1:]]))
